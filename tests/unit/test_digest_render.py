"""Digest renderers (text, Markdown, JSON) and the PNG chart, from hand-built snapshots."""

from __future__ import annotations

import json
import struct
from dataclasses import replace
from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest

from bot import redact
from bot.workflow import digest, digestchart, digestrender
from bot.workflow.digest import DeployMark
from bot.workflow.statements import normalise
from tests.unit.test_digest import DAY, EVENTS, ORDERS, RESET, T0, USERS, entry, snap, three_days

MARK = DeployMark(run_id="r-42", deployed_at=T0 + timedelta(hours=1), migrations=["0007_drop_idx", "0008_note"],
                  thread_url="https://example.slack.com/archives/C1/p1")


def full_digest() -> digest.Digest:
    """A period with a regression, a new statement, evictions, a restarted entry and a hold-back."""
    earlier, previous, current = three_days([entry(1, 100, 100.0), entry(2, 100, 100.0, USERS)],
                                            [entry(1, 100, 400.0, temp_blks_written=30), entry(2, 100, 110.0, USERS),
                                             entry(3, 60, 30.0, EVENTS)])
    previous = replace(previous, dealloc=1, max_entries=100, entries_total=100)
    current = replace(current, dealloc=3, max_entries=100, entries_total=100, hidden=4)
    return digest.compute(previous, current, earlier=earlier, deploy=MARK, before_deploy=previous,
                          before_deploy_base=earlier)


def test_text_reads_like_a_report() -> None:
    out = digestrender.text(full_digest())
    assert out.startswith("pg_stat_statements digest: prod, database app (PostgreSQL 15.4)\n")
    assert "From 2026-05-01 09:00 UTC to 2026-05-02 09:00 UTC (24 h): 260 calls, 540 ms in 3 statements." in out
    table = [" ".join(line.split()) for line in out.splitlines()]
    assert "# share total calls mean rows/call hit temp blks statement" in table
    assert "1 74.1% 400 ms 100 4.00 ms 1.0 100.0% 30 SELECT orders #0001: " + ORDERS in table
    assert "3 5.6% 30.00 ms 60 0.500 ms 1.0 100.0% 0 INSERT events #0003 (new): " + EVENTS in table
    assert "New since the previous snapshot: 1\n- INSERT events #0003: 60 calls, 30.00 ms total" in out
    assert "- SELECT orders #0001: mean 1.00 ms → 4.00 ms (+300%); 100 → 100 calls, +300 ms this period" in out
    assert ("Since deploy r-42 (2026-05-01 10:00 UTC, day 1 of the 7-day hold-back; applied 0007_drop_idx, "
            "0008_note): https://example.slack.com/archives/C1/p1") in out
    assert "- SELECT orders #0001: mean 1.00 ms before → 4.00 ms after (+300%) — slower; 100 → 100 calls" in out
    assert "- INSERT events #0003: not run before the deploy; mean 0.500 ms after, 60 calls: " + EVENTS in out


def test_notes_say_what_to_do_about_evictions_and_hidden_statements() -> None:
    said = digestrender.notes(full_digest())
    assert said == [
        "pg_stat_statements evicted about 20 entries (2 deallocations) since the previous snapshot: it holds at most "
        "100 statements and more distinct statements ran. Raise pg_stat_statements.max above the 120 statements seen "
        "(e.g. 200; it needs a restart); until then rarely run statements come and go and their figures undercount.",
        "4 statements of other roles are hidden from the bot's role; grant it pg_read_all_stats to include them.",
    ]


def test_a_full_reset_is_said_with_its_time() -> None:
    d = digest.compute(snap(entry(1, 100, 5.0)), snap(entry(1, 5, 1.0), at=T0 + DAY, reset=T0 + timedelta(hours=5)))
    out = digestrender.text(d)
    assert ("pg_stat_statements was reset at 2026-05-01 14:00 UTC (by another tool or a person; this bot never "
            "resets it), so the figures count from that reset, not from the previous snapshot.") in out
    assert "Up to 2026-05-02 09:00 UTC, cumulative since 2026-05-01 14:00 UTC: 5 calls" in out


def test_the_first_digest_says_its_figures_are_cumulative() -> None:
    out = digestrender.text(digest.compute(None, snap(entry(1, 5, 1.0))))
    assert "This is the first snapshot, so the figures are cumulative since pg_stat_statements was last reset" in out
    assert f"cumulative since {RESET:%Y-%m-%d %H:%M} UTC" in out


def test_times_are_shown_in_the_digest_time_zone() -> None:
    out = digestrender.text(digest.compute(None, snap(entry(1, 5, 1.0))), tz=ZoneInfo("Europe/Berlin"))
    assert "Up to 2026-05-01 11:00 CEST" in out


@pytest.mark.parametrize(("value", "shown"), [(0.0421, "0.042 ms"), (12.345, "12.35 ms"), (456.7, "457 ms"),
                                               (4567.0, "4.57 s"), (754_000.0, "12.6 min"), (7_560_000.0, "2.1 h")])
def test_times_read_as_ms_s_min_h(value: float, shown: str) -> None:
    assert digestrender.ms(value) == shown


def test_markdown_has_tables_with_escaped_cells() -> None:
    d = digest.compute(None, snap(entry(1, 5, 1.0, "SELECT a || b FROM `odd` WHERE x = $1")))
    out = digestrender.markdown(d)
    assert "| # | statement | share | total | calls | mean | rows/call | hit | temp blks |" in out
    assert "`SELECT a \\|\\| b FROM 'odd' WHERE x = $1`" in out


def test_markdown_since_deploy_table() -> None:
    out = digestrender.markdown(full_digest())
    assert "### Since deploy r-42" in out
    assert "| 1.00 ms | 4.00 ms | +300% ⚠ | 100 | 100 |" in out


def test_json_shape() -> None:
    data = digestrender.json_dict(full_digest())
    json.dumps(data)  # JSON-safe
    assert data["period"] == {"from": "2026-05-01T09:00:00+00:00", "to": "2026-05-02T09:00:00+00:00",
                              "basis": "delta", "cumulative": False, "previous_at": "2026-05-01T09:00:00+00:00"}
    assert (data["stats_reset"], data["reset_at"]) == (False, None)
    first = data["statements"][0]
    assert {"query", "calls", "total_ms", "mean_ms", "share_pct", "rows_per_call", "hit_ratio_pct", "temp_blks",
            "shared_blks_per_call", "new", "name", "queryid"} <= set(first)
    assert (first["query"], first["calls"], first["total_ms"], first["mean_ms"], first["queryid"]) == (
        ORDERS, 100, 400.0, 4.0, "1")
    assert [r["name"] for r in data["new_statements"]] == ["INSERT events #0003"]
    assert data["regressions"][0]["reasons"] == ["mean"] and data["regressions"][0]["mean_change_pct"] == 300.0
    assert data["since_deploy"]["migrations"] == ["0007_drop_idx", "0008_note"]
    assert data["since_deploy"]["statements"][0]["change_pct"] == 300.0
    assert data["dealloc"]["suggested_max"] == 200 and data["hidden"] == 4


def test_json_of_a_reset_carries_when() -> None:
    d = digest.compute(snap(entry(1, 100, 5.0)), snap(entry(1, 5, 1.0), at=T0 + DAY, reset=T0 + timedelta(hours=5)))
    data = digestrender.json_dict(d)
    assert (data["stats_reset"], data["reset_at"], data["period"]["basis"]) == (
        True, "2026-05-01T14:00:00+00:00", "reset")


def test_json_queryids_are_strings_so_javascript_keeps_them_exact() -> None:
    data = digestrender.json_dict(digest.compute(None, snap(entry(-9_000_000_000_000_000_001, 5, 1.0))))
    assert data["statements"][0]["queryid"] == "-9000000000000000001"


def test_every_output_is_redacted() -> None:
    redact.register("s3cr3t-host-name")
    d = digest.compute(None, snap(entry(1, 5, 1.0, "SELECT * FROM s3cr3t-host-name")))
    assert "s3cr3t-host-name" not in digestrender.text(d) + digestrender.markdown(d)
    assert "s3cr3t-host-name" not in json.dumps(digestrender.json_dict(d))


# -- the chart -------------------------------------------------------------------------------------------------

def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_the_chart_is_a_small_png() -> None:
    d = digest.compute(None, snap(*(entry(i, 10 * i, 3.0 * i, f"SELECT * FROM table_{chr(96 + i)}")
                                    for i in range(1, 13))))
    data = digestchart.png(d)
    assert png_size(data) == (digestchart.WIDTH_PX, digestchart.HEIGHT_PX) and len(data) < 150_000


def test_a_hold_back_adds_a_before_after_panel() -> None:
    assert png_size(digestchart.png(full_digest())) == (digestchart.WIDTH_PX, digestchart.HEIGHT_DEPLOY_PX)


def test_an_empty_period_still_charts() -> None:
    before = snap(entry(1, 5, 1.0))
    assert png_size(digestchart.png(digest.compute(before, snap(entry(1, 5, 1.0), at=T0 + DAY))))[0] == 900


def test_chart_labels_are_names_never_values(monkeypatch: pytest.MonkeyPatch) -> None:
    query = "SET application_name = 'Zq-secret-value'"  # as if pg_stat_statements had kept the literal
    d = digest.compute(None, snap(entry(1, 5, 1.0, normalise(query)), entry(2, 5, 2.0, "SELECT $1")))
    labels = chart_texts(d, monkeypatch)
    assert "SET application_name #0001" in labels and "SELECT #0002" in labels
    assert not any("Zq" in t for t in labels)


def chart_texts(d: digest.Digest, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every text the chart draws, captured from the figure as it is saved."""
    from matplotlib.figure import Figure
    seen: list[str] = []
    original = Figure.savefig

    def capture(self, *args, **kwargs):
        seen.extend(t.get_text() for t in self.findobj(lambda a: hasattr(a, "get_text")))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", capture)
    digestchart.png(d)
    return seen


def test_chart_text_has_no_mathtext_surprises() -> None:
    d = digest.compute(None, snap(entry(1, 5, 1.0, 'SELECT * FROM "pay$out$table"')))
    assert png_size(digestchart.png(d))[0] == 900
