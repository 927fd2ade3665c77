"""The daily pg_stat_statements digest: pure arithmetic over snapshots.

``compute(previous, current)`` turns two snapshots (``bot.workflow.statements``)
into a ``Digest``: what the database spent its time on in the period, what is
new, what got slower than the period before, and — during the hold-back after
a deploy — each hot statement's mean before and after that deploy.

pg_stat_statements only ever grows its counters, except when someone resets
them or the view runs out of room, and the digest must be right across all of
it without ever resetting anything itself:

- a full reset (``pg_stat_statements_info.stats_reset`` moved on): the
  period's figures are the current cumulative ones, since that reset;
- one entry reset (``pg_stat_statements_reset(userid, dbid, queryid)``), an
  entry evicted and re-added, or any counter that went down (PostgreSQL 17's
  ``stats_since`` moving says so too): that entry's current counters are its
  delta — never a negative one;
- deallocation (``dealloc`` grew): entries were evicted because more
  statements ran than ``pg_stat_statements.max`` holds, and the digest says by
  how much to raise it;
- a previous snapshot from another server or database (a failover to a new
  cluster, a restored copy), or none at all: cumulative figures since the last
  reset, and the digest says so.

Statements match by (userid, dbid, queryid). Everything here is plain data in,
plain data out: no I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from operator import attrgetter
from typing import Callable

from bot.workflow.statements import COUNTERS, Entry, Snapshot

HOLD_BACK_DAYS = 7
_EVICT_PCT = 5  # pg_stat_statements evicts max(10, 5% of its entries) per deallocation
_EVICT_MIN = 10

Key = tuple[int, int, int]


# -- what the renderers get ----------------------------------------------------------------------------

@dataclass(frozen=True)
class DeployMark:
    """The deploy whose hold-back is running: what it applied and where it was discussed."""

    run_id: str
    deployed_at: datetime
    migrations: list[str]
    thread_url: str


@dataclass(frozen=True)
class Period:
    """What the figures cover.

    ``basis``: "delta" (since the previous snapshot), "reset" (a full reset
    happened in the period: since that reset), "first" (no previous snapshot:
    cumulative since the last reset) or "other-server" (the previous snapshot
    is from another server or database: cumulative since the last reset).
    """

    start: datetime | None  # None: cumulative since a reset whose time is unknown (PostgreSQL 13)
    end: datetime
    basis: str
    stats_reset: bool  # pg_stat_statements was fully reset during the period
    reset_at: datetime | None  # when (only with stats_reset)
    previous_at: datetime | None  # the previous snapshot, when there is a comparable one

    @property
    def cumulative(self) -> bool:
        return self.basis != "delta"


@dataclass(frozen=True)
class StatementRow:
    """One statement's figures over the period."""

    queryid: int
    userid: int
    dbid: int
    name: str  # short label: verb, first table, fingerprint — never a value
    query: str  # normalised text (no literal), shortened
    calls: int
    total_ms: float
    mean_ms: float
    share: float  # of the period's total time over all statements, 0..1
    rows: int
    rows_per_call: float
    shared_blks_hit: int
    shared_blks_read: int
    hit_ratio: float | None  # shared-buffer hits / (hits + reads); None without block access
    shared_blks_per_call: float
    temp_blks: int  # read + written
    new: bool  # not in the previous snapshot
    restarted: bool  # its counters restarted in the period (single-entry reset, eviction, went down)


@dataclass(frozen=True)
class Regression:
    """A statement slower, or touching more shared blocks per call, than in the period before."""

    row: StatementRow  # this period
    before_calls: int
    before_mean_ms: float
    mean_change_pct: float
    before_blks_per_call: float
    blks_change_pct: float | None  # None when it touched no blocks before
    reasons: tuple[str, ...]  # "mean", "blocks"
    extra_ms: float  # what the slowdown cost in this period: (mean now - mean before) x calls


@dataclass(frozen=True)
class DeployRow:
    """A hot statement's mean before and after the deploy."""

    name: str
    query: str
    queryid: int
    before_calls: int
    before_mean_ms: float | None  # None: it did not run before the deploy
    after_calls: int
    after_mean_ms: float
    after_total_ms: float
    change_pct: float | None
    before_blks_per_call: float | None
    after_blks_per_call: float
    regressed: bool  # mean up more than regression_pct with min_calls on both sides


@dataclass(frozen=True)
class SinceDeploy:
    run_id: str
    deployed_at: datetime
    migrations: tuple[str, ...]
    thread_url: str
    day: int  # day N of the hold-back, from 1
    hold_days: int
    before_start: datetime | None  # the "before" figures: before_deploy's period (None start: since a reset)
    before_end: datetime | None
    after_start: datetime | None  # the last snapshot before the deploy (or a later full reset)
    after_end: datetime
    rows: tuple[DeployRow, ...]
    missing: str = ""  # why there is no comparison: "no-snapshot-before", "other-server"; "" = compared


@dataclass(frozen=True)
class Dealloc:
    """pg_stat_statements ran out of room: more statements than pg_stat_statements.max."""

    deallocations: int
    evicted: int  # estimated entries evicted: max(10, 5% of max) per deallocation
    max_entries: int | None
    statements_seen: int  # entries held now + those evicted
    suggested_max: int
    since_reset: bool  # counted since the last reset, not since the previous snapshot


@dataclass(frozen=True)
class Totals:
    total_ms: float
    calls: int
    statements: int  # statements that ran in the period


@dataclass(frozen=True)
class Thresholds:
    top: int
    regression_pct: float
    min_calls: int


@dataclass(frozen=True)
class Digest:
    source: str
    database: str
    server_version: int
    period: Period
    totals: Totals
    top: tuple[StatementRow, ...]
    new: tuple[StatementRow, ...]  # the top new statements by total time
    new_count: int
    regressions: tuple[Regression, ...]  # worst first (extra time), at most ``top``
    regressions_count: int
    regression_baseline: str  # "period" (the one before), "cumulative" (all before the previous snapshot), "none"
    since_deploy: SinceDeploy | None
    dealloc: Dealloc | None
    restarted: int  # entries whose counters restarted in the period
    gone: int  # entries of the previous snapshot no longer tracked (evicted or reset, not run since)
    hidden: int  # entries this role may not see (pg_read_all_stats)
    thresholds: Thresholds


# -- deltas --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Deltas:
    """Each statement's counters over a period, and how that period was measured."""

    entries: dict[Key, Entry]
    restarted: frozenset[Key]
    new: frozenset[Key]
    gone: int
    period: Period


def comparable(base: Snapshot | None, current: Snapshot) -> bool:
    """Whether ``base`` is an earlier look at the same server and database."""
    return (base is not None and base.server_id == current.server_id and base.dbid == current.dbid
            and base.taken_at <= current.taken_at)


def full_reset(base: Snapshot, current: Snapshot) -> bool:
    return base.stats_reset is not None and current.stats_reset is not None and current.stats_reset != base.stats_reset


def deltas(base: Snapshot | None, current: Snapshot) -> Deltas:
    """The counters between ``base`` and ``current``, right across resets, evictions and server changes."""
    if not comparable(base, current):
        basis = "first" if base is None else "other-server"
        period = Period(current.stats_reset, current.taken_at, basis, False, None, None)
        return Deltas({e.key: e for e in current.entries}, frozenset(), frozenset(), 0, period)
    assert base is not None
    before = base.by_key()
    if full_reset(base, current):
        period = Period(current.stats_reset, current.taken_at, "reset", True, current.stats_reset, base.taken_at)
        found = {e.key: e for e in current.entries}
        return Deltas(found, frozenset(), frozenset(k for k in found if k not in before),
                      sum(1 for k in before if k not in found), period)
    found, restarted = {}, set()
    for entry in current.entries:
        old = before.get(entry.key)
        if old is None:
            found[entry.key] = entry
            continue
        delta = _minus(entry, old)
        if delta is None:
            restarted.add(entry.key)
        found[entry.key] = entry if delta is None else delta
    period = Period(base.taken_at, current.taken_at, "delta", False, None, base.taken_at)
    return Deltas(found, frozenset(restarted), frozenset(k for k in found if k not in before),
                  sum(1 for k in before if k not in found), period)


_counters = attrgetter(*COUNTERS)


def _minus(new: Entry, old: Entry) -> Entry | None:
    """``new - old``, or None when the entry restarted in between (stats_since moved, or any counter went down)."""
    if old.stats_since is not None and new.stats_since is not None and new.stats_since != old.stats_since:
        return None
    differences = [n - o for n, o in zip(_counters(new), _counters(old))]
    if any(d < 0 for d in differences):
        return None
    return Entry(userid=new.userid, dbid=new.dbid, queryid=new.queryid, query=new.query,
                 stats_since=new.stats_since, **dict(zip(COUNTERS, differences)))


# -- the digest ----------------------------------------------------------------------------------------

def compute(previous: Snapshot | None, current: Snapshot, *, top: int = 10, regression_pct: float = 20.0,
            min_calls: int = 50, deploy: DeployMark | None = None, before_deploy: Snapshot | None = None,
            earlier: Snapshot | None = None, before_deploy_base: Snapshot | None = None,
            hold_days: int = HOLD_BACK_DAYS) -> Digest:
    """The digest of ``current`` against ``previous``.

    ``earlier`` (the snapshot before ``previous``) gives the period before, for
    regressions; without it the baseline is everything ``previous`` had
    accumulated. ``deploy`` adds the since-the-deploy section while
    ``current`` is within ``hold_days`` of it: ``before_deploy`` is the last
    snapshot taken before the deploy, ``before_deploy_base`` optionally the
    one before that (else the "before" means are cumulative).
    """
    now = deltas(previous, current)
    thresholds = Thresholds(top, regression_pct, min_calls)
    ran = sorted(_ran(now), key=lambda e: (-e.total_exec_ms, e.queryid))
    total_ms = sum(e.total_exec_ms for e in ran)
    rows: dict[Key, StatementRow] = {}  # rows (and their names) only for statements the digest shows

    def row(e: Entry) -> StatementRow:
        if e.key not in rows:
            rows[e.key] = _row(e, now, total_ms)
        return rows[e.key]

    new = [e for e in ran if e.key in now.new]
    regressions, baseline = _regressions(previous, earlier, now, ran, thresholds, row)
    return Digest(
        source=current.source, database=current.database, server_version=current.server_version,
        period=now.period, totals=Totals(total_ms, sum(e.calls for e in ran), len(ran)),
        top=tuple(row(e) for e in ran[:top]), new=tuple(row(e) for e in new[:top]), new_count=len(new),
        regressions=tuple(regressions[:top]), regressions_count=len(regressions), regression_baseline=baseline,
        since_deploy=_since_deploy(deploy, before_deploy, before_deploy_base, current, thresholds, hold_days),
        dealloc=_dealloc(previous, current, now.period), restarted=len(now.restarted), gone=now.gone,
        hidden=current.hidden, thresholds=thresholds)


def _ran(d: Deltas) -> list[Entry]:
    return [e for e in d.entries.values() if e.calls > 0]


def _row(e: Entry, d: Deltas, total_ms: float) -> StatementRow:
    blocks = e.shared_blks_hit + e.shared_blks_read
    return StatementRow(
        queryid=e.queryid, userid=e.userid, dbid=e.dbid, name=statement_name(e.query, e.queryid), query=e.query,
        calls=e.calls, total_ms=e.total_exec_ms, mean_ms=e.total_exec_ms / e.calls,
        share=e.total_exec_ms / total_ms if total_ms > 0 else 0.0, rows=e.rows, rows_per_call=e.rows / e.calls,
        shared_blks_hit=e.shared_blks_hit, shared_blks_read=e.shared_blks_read,
        hit_ratio=e.shared_blks_hit / blocks if blocks else None, shared_blks_per_call=blocks / e.calls,
        temp_blks=e.temp_blks_read + e.temp_blks_written, new=e.key in d.new, restarted=e.key in d.restarted)


def _pct(before: float, after: float) -> float:
    return (after - before) / before * 100.0


def _blocks_per_call(e: Entry) -> float:
    return (e.shared_blks_hit + e.shared_blks_read) / e.calls


def _regressions(previous: Snapshot | None, earlier: Snapshot | None, now: Deltas, ran: list[Entry],
                 t: Thresholds, row: Callable[[Entry], StatementRow]) -> tuple[list[Regression], str]:
    if now.period.basis in ("first", "other-server") or previous is None:
        return [], "none"
    before = deltas(earlier, previous)
    baseline = "period" if before.period.basis in ("delta", "reset") else "cumulative"
    least = max(t.min_calls, 1)
    found = []
    for e in ran:
        old = before.entries.get(e.key)
        if old is None or old.calls < least or e.calls < least:
            continue
        old_mean, mean = old.total_exec_ms / old.calls, e.total_exec_ms / e.calls
        old_blocks, blocks = _blocks_per_call(old), _blocks_per_call(e)
        mean_pct = _pct(old_mean, mean) if old_mean > 0 else 0.0
        blks_pct = _pct(old_blocks, blocks) if old_blocks > 0 else None
        reasons = tuple(r for r, hit in (("mean", mean_pct > t.regression_pct),
                                         ("blocks", blks_pct is not None and blks_pct > t.regression_pct)) if hit)
        if reasons:
            found.append(Regression(row(e), old.calls, old_mean, mean_pct, old_blocks, blks_pct, reasons,
                                    (mean - old_mean) * e.calls))
    found.sort(key=lambda r: (-r.extra_ms, -(r.blks_change_pct or 0.0), r.row.queryid))
    return found, baseline


def _since_deploy(mark: DeployMark | None, before_deploy: Snapshot | None, base: Snapshot | None,
                  current: Snapshot, t: Thresholds, hold_days: int) -> SinceDeploy | None:
    if mark is None:
        return None
    age = current.taken_at - mark.deployed_at
    if age < timedelta(0) or age > timedelta(days=hold_days):
        return None
    section = SinceDeploy(mark.run_id, mark.deployed_at, tuple(mark.migrations), mark.thread_url,
                          day=int(age / timedelta(days=1)) + 1, hold_days=hold_days, before_start=None,
                          before_end=None, after_start=None, after_end=current.taken_at, rows=())
    if before_deploy is None:
        return replace(section, missing="no-snapshot-before")
    if not comparable(before_deploy, current):
        return replace(section, missing="other-server")
    before, after = deltas(base, before_deploy), deltas(before_deploy, current)
    hot = sorted(_ran(after), key=lambda e: (-e.total_exec_ms, e.queryid))[:t.top]
    rows = tuple(_deploy_row(e, before.entries.get(e.key), t) for e in hot)
    return replace(section, before_start=before.period.start, before_end=before_deploy.taken_at,
                   after_start=after.period.start, rows=rows)


def _deploy_row(after: Entry, before: Entry | None, t: Thresholds) -> DeployRow:
    after_mean = after.total_exec_ms / after.calls
    ran_before = before is not None and before.calls > 0
    before_mean = before.total_exec_ms / before.calls if ran_before else None
    change = _pct(before_mean, after_mean) if before_mean else None
    enough = ran_before and before.calls >= t.min_calls and after.calls >= t.min_calls
    return DeployRow(
        name=statement_name(after.query, after.queryid), query=after.query, queryid=after.queryid,
        before_calls=before.calls if before else 0, before_mean_ms=before_mean, after_calls=after.calls,
        after_mean_ms=after_mean, after_total_ms=after.total_exec_ms, change_pct=change,
        before_blks_per_call=_blocks_per_call(before) if ran_before else None,
        after_blks_per_call=_blocks_per_call(after),
        regressed=bool(enough and change is not None and change > t.regression_pct))


def _dealloc(previous: Snapshot | None, current: Snapshot, period: Period) -> Dealloc | None:
    if current.dealloc is None:
        return None
    since_reset = period.basis != "delta" or previous is None or previous.dealloc is None
    count = current.dealloc if since_reset else current.dealloc - previous.dealloc
    if count <= 0:
        return None
    held = current.entries_total if current.entries_total is not None else len(current.entries)
    per = max(_EVICT_MIN, (current.max_entries or held) * _EVICT_PCT // 100)
    evicted = count * per
    seen = held + evicted
    return Dealloc(count, evicted, current.max_entries, seen, _round_up(seen * 5 // 4), since_reset)


def _round_up(n: int) -> int:
    step = 1000 if n >= 1000 else 100
    return -(-n // step) * step


# -- short statement names -----------------------------------------------------------------------------

_TABLE_AFTER = frozenset({"FROM", "INTO", "UPDATE", "JOIN", "TABLE", "ONLY"})
_MAIN_VERBS = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE", "MERGE"})
_NAME_MAX = 40


def statement_name(query: str, queryid: int) -> str:
    """``SELECT orders #3fa2``: the verb, the first table and a fingerprint of the queryid.

    Built from keywords and identifiers only (pglast's scanner), so it can
    never carry a parameter value; the fingerprint tells apart statements
    that share verb and table.
    """
    fingerprint = f"{queryid & 0xFFFFFFFFFFFFFFFF:016x}"[-4:]
    try:
        verb, table = _verb_and_table(query)
    except Exception:  # noqa: BLE001 - an unscannable text still gets a name
        verb, table = "", ""
    words = " ".join(w for w in (verb or "statement", table) if w)
    if len(words) > _NAME_MAX - 6:
        words = words[:_NAME_MAX - 7] + "…"
    return f"{words} #{fingerprint}"


def _verb_and_table(query: str) -> tuple[str, str]:
    from pglast import parser

    tokens = [t for t in parser.scan(query) if t.name not in ("C_COMMENT", "SQL_COMMENT")]
    if not tokens:
        return "", ""
    words = [query[t.start:t.end + 1] for t in tokens]
    verb = words[0].upper() if tokens[0].kind != "NO_KEYWORD" else ""
    depth, main_at = 0, 0
    if verb == "WITH":
        for i, t in enumerate(tokens):
            depth += (t.name == "ASCII_40") - (t.name == "ASCII_41")
            if depth == 0 and i and words[i].upper() in _MAIN_VERBS:
                verb, main_at = words[i].upper(), i
                break
    return verb, _first_table(tokens, words, main_at, verb)


def _identifier(token) -> bool:
    return token.name == "IDENT" or token.kind in ("UNRESERVED_KEYWORD", "COL_NAME_KEYWORD")


def _first_table(tokens: list, words: list[str], start: int, verb: str) -> str:
    if verb not in _MAIN_VERBS:  # CREATE INDEX CONCURRENTLY idx…, ALTER TABLE IF EXISTS t…: the first identifier
        found = next((j for j in range(start + 1, len(tokens)) if tokens[j].name == "IDENT"), None)
        return "" if found is None else _qualified(tokens, words, found)
    for i in range(start, len(tokens) - 1):
        if words[i].upper() not in _TABLE_AFTER:
            continue
        j = i + 1 if words[i + 1].upper() != "ONLY" or i + 2 >= len(tokens) else i + 2
        if _identifier(tokens[j]):
            return _qualified(tokens, words, j)
    return ""


def _qualified(tokens: list, words: list[str], j: int) -> str:
    name = [words[j]]
    while j + 2 < len(tokens) and tokens[j + 1].name == "ASCII_46" and _identifier(tokens[j + 2]):
        j += 2
        name.append(words[j])
    return ".".join(n.strip('"') for n in name)
