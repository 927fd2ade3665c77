"""Digest -> plain text, Markdown, JSON: small pure functions, redaction last.

The sentences (``headline``, ``notes``, ``deploy_line``) are shared by every
face, so the Block Kit renderer can use the same words. Query texts are
already free of literals (``statements.normalise``); here they are only
shortened. Times read as ms, s, min or h; shares as %.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any

from bot.redact import redact
from bot.workflow.digest import DeployRow, Digest, Period, Regression, SinceDeploy, StatementRow
from bot.workflow.statements import shorten

TEXT_QUERY = 100  # characters of a statement in text and Markdown
UTC = timezone.utc


# -- small formatters ----------------------------------------------------------------------------------

def ms(value: float) -> str:
    """12.3 ms, 4.56 s, 12.5 min, 3.2 h."""
    if value < 1:
        return f"{value:.3f} ms"
    if value < 100:
        return f"{value:.2f} ms"
    if value < 1000:
        return f"{value:.0f} ms"
    seconds = value / 1000
    if seconds < 60:
        return f"{seconds:.2f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def pct(fraction: float | None) -> str:
    return "–" if fraction is None else f"{fraction * 100:.1f}%"


def change(value: float | None) -> str:
    return "new" if value is None else f"{value:+.0f}%"


def when(moment: datetime | None, tz: tzinfo = UTC) -> str:
    return "unknown" if moment is None else moment.astimezone(tz).strftime("%Y-%m-%d %H:%M %Z")


def span(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours * 60:.0f} min" if hours < 1 else f"{hours:.0f} h" if hours < 48 else f"{hours / 24:.1f} days"


def count(n: int) -> str:
    return f"{n:,}"


def blocks(value: float | None) -> str:
    return "–" if value is None else f"{value:,.1f}"


# -- sentences every face shares -----------------------------------------------------------------------

def headline(d: Digest) -> str:
    major, minor = divmod(d.server_version, 10000)
    version = f"{major}.{minor}" if major >= 10 else str(d.server_version)
    return f"pg_stat_statements digest: {d.source}, database {d.database} (PostgreSQL {version})"


def period_line(d: Digest, tz: tzinfo = UTC) -> str:
    p, t = d.period, d.totals
    spent = f"{count(t.calls)} calls, {ms(t.total_ms)} in {count(t.statements)} statements"
    if p.basis == "delta":
        return f"From {when(p.start, tz)} to {when(p.end, tz)} ({span(p.end - p.start)}): {spent}."
    return f"Up to {when(p.end, tz)}, {_cumulative_from(p, tz)}: {spent}."


def _cumulative_from(p: Period, tz: tzinfo) -> str:
    since = f"since {when(p.start, tz)}" if p.start else "since a reset whose time PostgreSQL 13 does not record"
    return f"cumulative {since}"


def notes(d: Digest, tz: tzinfo = UTC) -> list[str]:
    """The digest's caveats, each a sentence with what it means or what to do."""
    p, out = d.period, []
    if p.basis == "reset":
        out.append(f"pg_stat_statements was reset at {when(p.reset_at, tz)} (by another tool or a person; this bot "
                   "never resets it), so the figures count from that reset, not from the previous snapshot.")
    elif p.basis == "first":
        out.append("This is the first snapshot, so the figures are cumulative since pg_stat_statements was last "
                   "reset; tomorrow's digest covers one day.")
    elif p.basis == "other-server":
        out.append("The previous snapshot is from another server or database (a failover, a restore or a refresh), "
                   "so the figures are cumulative since pg_stat_statements was last reset here.")
    if d.dealloc:
        a = d.dealloc
        since = "since the last reset" if a.since_reset else "since the previous snapshot"
        held = f"it holds at most {count(a.max_entries)} statements" if a.max_entries else "it is full"
        out.append(f"pg_stat_statements evicted about {count(a.evicted)} entries ({count(a.deallocations)} "
                   f"deallocations) {since}: {held} and more distinct statements ran. Raise pg_stat_statements.max "
                   f"above the {count(a.statements_seen)} statements seen (e.g. {count(a.suggested_max)}; it needs a "
                   "restart); until then rarely run statements come and go and their figures undercount.")
    if d.restarted:
        out.append(f"{count(d.restarted)} statements' counters restarted in the period (reset one by one, or evicted "
                   "and tracked again), so their figures count from that restart.")
    if d.hidden:
        out.append(f"{count(d.hidden)} statements of other roles are hidden from the bot's role; grant it "
                   "pg_read_all_stats to include them.")
    return out


def regressions_title(d: Digest) -> str:
    t = d.thresholds
    against = ("the period before" if d.regression_baseline == "period"
               else "everything before the previous snapshot (no snapshot before it)")
    return (f"Regressions against {against}: mean time or shared blocks per call up more than "
            f"{t.regression_pct:g}%, with at least {count(t.min_calls)} calls in both")


def regression_line(r: Regression) -> str:
    parts = []
    if "mean" in r.reasons:
        parts.append(f"mean {ms(r.before_mean_ms)} → {ms(r.row.mean_ms)} ({change(r.mean_change_pct)})")
    if "blocks" in r.reasons:
        parts.append(f"shared blocks/call {blocks(r.before_blks_per_call)} → {blocks(r.row.shared_blks_per_call)} "
                     f"({change(r.blks_change_pct)})")
    cost = f", {'+' if r.extra_ms >= 0 else '−'}{ms(abs(r.extra_ms))} this period" if "mean" in r.reasons else ""
    return f"{r.row.name}: {'; '.join(parts)}; {count(r.before_calls)} → {count(r.row.calls)} calls{cost}"


def deploy_line(s: SinceDeploy, tz: tzinfo = UTC) -> str:
    migrations = ", ".join(s.migrations) or "no migrations"
    return (f"Since deploy {s.run_id} ({when(s.deployed_at, tz)}, day {s.day} of the {s.hold_days}-day hold-back; "
            f"applied {migrations}){': ' + s.thread_url if s.thread_url else ''}")


def deploy_missing(s: SinceDeploy) -> str:
    if s.missing == "no-snapshot-before":
        return ("There is no pg_stat_statements snapshot from before this deploy, so before and after cannot be "
                "compared; snapshots are taken every digest.snapshot_minutes.")
    return ("The snapshot before this deploy is from another server or database, so before and after cannot be "
            "compared.")


def deploy_row_line(r: DeployRow) -> str:
    if r.before_mean_ms is None:
        return f"{r.name}: not run before the deploy; mean {ms(r.after_mean_ms)} after, {count(r.after_calls)} calls"
    flag = " — slower" if r.regressed else ""
    return (f"{r.name}: mean {ms(r.before_mean_ms)} before → {ms(r.after_mean_ms)} after ({change(r.change_pct)})"
            f"{flag}; {count(r.before_calls)} → {count(r.after_calls)} calls")


# -- text ----------------------------------------------------------------------------------------------

_COLUMNS = ("#", "share", "total", "calls", "mean", "rows/call", "hit", "temp blks", "statement")


def text(d: Digest, *, tz: tzinfo = UTC) -> str:
    lines = [headline(d), period_line(d, tz), *notes(d, tz), ""]
    if d.top:
        lines.append(f"Top {len(d.top)} statements by total time:")
        table = [_COLUMNS] + [_cells(i, r) for i, r in enumerate(d.top, 1)]
        widths = [max(len(row[c]) for row in table) for c in range(len(_COLUMNS) - 1)]
        for row in table:
            lines.append("  " + "  ".join(cell.rjust(w) for cell, w in zip(row, widths)) + "  " + row[-1])
    else:
        lines.append("No statement ran in this database in the period.")
    if d.new:
        more = f" (top {len(d.new)} shown)" if d.new_count > len(d.new) else ""
        lines += ["", f"New since the previous snapshot: {count(d.new_count)}{more}"]
        lines += [f"- {r.name}: {count(r.calls)} calls, {ms(r.total_ms)} total, {ms(r.mean_ms)} mean: "
                  f"{shorten(r.query, TEXT_QUERY)}" for r in d.new]
    if d.regressions:
        lines += ["", regressions_title(d) + f": {count(d.regressions_count)}"]
        lines += [f"- {regression_line(r)}: {shorten(r.row.query, TEXT_QUERY)}" for r in d.regressions]
    if d.since_deploy:
        s = d.since_deploy
        lines += ["", deploy_line(s, tz)]
        if s.missing:
            lines.append(f"- {deploy_missing(s)}")
        else:
            lines += [f"- {deploy_row_line(r)}: {shorten(r.query, TEXT_QUERY)}" for r in s.rows]
            lines += [] if s.rows else ["- No statement ran since the deploy."]
    return redact("\n".join(lines).rstrip() + "\n")


def _cells(i: int, r: StatementRow) -> tuple[str, ...]:
    label = r.name + (" (new)" if r.new else "")
    return (str(i), pct(r.share), ms(r.total_ms), count(r.calls), ms(r.mean_ms), f"{r.rows_per_call:,.1f}",
            pct(r.hit_ratio), count(r.temp_blks), f"{label}: {shorten(r.query, TEXT_QUERY)}")


# -- Markdown ------------------------------------------------------------------------------------------

def _md(value: str) -> str:
    """Table-cell safe: pipes escaped, code spans without backticks."""
    return value.replace("|", "\\|").replace("`", "'")


def markdown(d: Digest, *, tz: tzinfo = UTC) -> str:
    lines = [f"## {headline(d)}", "", period_line(d, tz), ""]
    said = notes(d, tz)
    lines += ["\n>\n".join(f"> {n}" for n in said), ""] if said else []
    if d.top:
        lines += [f"### Top {len(d.top)} statements by total time", "",
                  "| # | statement | share | total | calls | mean | rows/call | hit | temp blks |",
                  "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
        lines += [f"| {i} | **{_md(r.name)}**{' (new)' if r.new else ''}<br>`{_md(shorten(r.query, TEXT_QUERY))}` "
                  f"| {pct(r.share)} | {ms(r.total_ms)} | {count(r.calls)} | {ms(r.mean_ms)} "
                  f"| {r.rows_per_call:,.1f} | {pct(r.hit_ratio)} | {count(r.temp_blks)} |"
                  for i, r in enumerate(d.top, 1)]
    else:
        lines.append("No statement ran in this database in the period.")
    if d.new:
        lines += ["", f"### New since the previous snapshot ({count(d.new_count)})", ""]
        lines += [f"- **{_md(r.name)}**: {count(r.calls)} calls, {ms(r.total_ms)} total — "
                  f"`{_md(shorten(r.query, TEXT_QUERY))}`" for r in d.new]
    if d.regressions:
        lines += ["", f"### Regressions ({count(d.regressions_count)})", "", regressions_title(d) + ".", ""]
        lines += [f"- {_md(regression_line(r))} — `{_md(shorten(r.row.query, TEXT_QUERY))}`" for r in d.regressions]
    if d.since_deploy:
        s = d.since_deploy
        lines += ["", f"### {_md(deploy_line(s, tz))}", ""]
        if s.missing:
            lines.append(deploy_missing(s))
        elif s.rows:
            lines += ["| statement | mean before | mean after | change | calls before | calls after |",
                      "|---|---:|---:|---:|---:|---:|"]
            lines += [f"| **{_md(r.name)}**<br>`{_md(shorten(r.query, TEXT_QUERY))}` "
                      f"| {ms(r.before_mean_ms) if r.before_mean_ms is not None else '–'} | {ms(r.after_mean_ms)} "
                      f"| {change(r.change_pct)}{' ⚠' if r.regressed else ''} | {count(r.before_calls)} "
                      f"| {count(r.after_calls)} |" for r in s.rows]
        else:
            lines.append("No statement ran since the deploy.")
    return redact("\n".join(lines).rstrip() + "\n")


# -- JSON ----------------------------------------------------------------------------------------------

def json_dict(d: Digest) -> dict[str, Any]:
    """One JSON-safe object: period, stats_reset/reset_at, statements, new, regressions, since_deploy, dealloc."""
    p = d.period
    data = {
        "source": d.source, "database": d.database, "server_version": d.server_version,
        "period": {"from": _iso(p.start), "to": _iso(p.end), "basis": p.basis, "cumulative": p.cumulative,
                   "previous_at": _iso(p.previous_at)},
        "stats_reset": p.stats_reset, "reset_at": _iso(p.reset_at),
        "totals": {"total_ms": _num(d.totals.total_ms), "calls": d.totals.calls, "statements": d.totals.statements},
        "statements": [_statement(r) for r in d.top],
        "new_statements": [_statement(r) for r in d.new], "new_count": d.new_count,
        "regressions": [_regression(r) for r in d.regressions], "regressions_count": d.regressions_count,
        "regression_baseline": d.regression_baseline,
        "since_deploy": _since_deploy(d.since_deploy) if d.since_deploy else None,
        "dealloc": _dealloc(d), "restarted": d.restarted, "gone": d.gone, "hidden": d.hidden,
        "thresholds": {"top": d.thresholds.top, "regression_pct": d.thresholds.regression_pct,
                       "min_calls": d.thresholds.min_calls},
        "notes": notes(d),
    }
    return _redacted(data)


def _statement(r: StatementRow) -> dict[str, Any]:
    return {"query": r.query, "name": r.name, "queryid": str(r.queryid), "userid": r.userid, "calls": r.calls,
            "total_ms": _num(r.total_ms), "mean_ms": _num(r.mean_ms), "share_pct": _num(r.share * 100),
            "rows": r.rows, "rows_per_call": _num(r.rows_per_call), "shared_blks_hit": r.shared_blks_hit,
            "shared_blks_read": r.shared_blks_read,
            "hit_ratio_pct": None if r.hit_ratio is None else _num(r.hit_ratio * 100),
            "shared_blks_per_call": _num(r.shared_blks_per_call), "temp_blks": r.temp_blks, "new": r.new,
            "restarted": r.restarted}


def _regression(r: Regression) -> dict[str, Any]:
    return {**_statement(r.row), "reasons": list(r.reasons), "before_calls": r.before_calls,
            "before_mean_ms": _num(r.before_mean_ms), "mean_change_pct": _num(r.mean_change_pct),
            "before_shared_blks_per_call": _num(r.before_blks_per_call),
            "shared_blks_change_pct": None if r.blks_change_pct is None else _num(r.blks_change_pct),
            "extra_ms": _num(r.extra_ms)}


def _since_deploy(s: SinceDeploy) -> dict[str, Any]:
    return {"run_id": s.run_id, "deployed_at": _iso(s.deployed_at), "migrations": list(s.migrations),
            "thread_url": s.thread_url, "day": s.day, "hold_days": s.hold_days, "missing": s.missing or None,
            "before": {"from": _iso(s.before_start), "to": _iso(s.before_end)},
            "after": {"from": _iso(s.after_start), "to": _iso(s.after_end)},
            "statements": [{"query": r.query, "name": r.name, "queryid": str(r.queryid),
                            "before_calls": r.before_calls, "before_mean_ms": _num(r.before_mean_ms),
                            "after_calls": r.after_calls, "after_mean_ms": _num(r.after_mean_ms),
                            "after_total_ms": _num(r.after_total_ms), "change_pct": _num(r.change_pct),
                            "before_shared_blks_per_call": _num(r.before_blks_per_call),
                            "after_shared_blks_per_call": _num(r.after_blks_per_call), "regressed": r.regressed}
                           for r in s.rows]}


def _dealloc(d: Digest) -> dict[str, Any] | None:
    a = d.dealloc
    return None if a is None else {
        "deallocations": a.deallocations, "evicted_estimate": a.evicted, "max": a.max_entries,
        "statements_seen": a.statements_seen, "suggested_max": a.suggested_max, "since_reset": a.since_reset}


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _num(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _redacted(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _redacted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redacted(v) for v in value]
    return value
