"""Production deploy (runbook step 5A): only after a pass, then spot checks and hold-backs.

A deploy is bound to the exact migration set that passed: the fingerprint of
prod's pending set must match a passing validation in the state store. The
advisory lock is taken before anything is read, so two deploys can never
interleave. Cleanup (contract-phase) migrations wait ``cleanup_hold_days``
after the previous deploy; migrations are applied strictly in order, so a
held one also holds everything after it.

A deploy scheduled into a low-traffic window carries the window's end as a
deadline: no migration starts after it, and with ``on_deadline="abort"`` the
one running when it passes is cancelled (a transactional one rolls back with
its history row). What the window left is reported as ``HELD`` and stays
pending; the runs layer plans it into a later window.

A statement-by-statement file that an interruption left part-applied (prod
records each committed statement: ``bot.migrations.partial``) stops every
deploy with a BLOCKER naming what committed, until one runs with
``DeployOptions.resume`` — then it continues at the next statement, provided
the file is exactly the one that ran (same checksum). A lost connection ends
the deploy at once, with the failed migration's line saying what of it is on
prod, and exit 2.
"""

from __future__ import annotations

import threading
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Callable, Protocol

import psycopg

from bot.config import Settings
from bot.migrations import adopt, apply as applier_mod
from bot.migrations.source import Migration, discover, set_fingerprint
from bot.pg import connection, database_error
from bot.workflow.ledger import Ledger
from bot.workflow import checks, gatesettings, resume as resume_mod
from bot.workflow.applying import drift_checks, record_outcome
from bot.workflow.report import Check, Report, Status, now_utc, run_step
from bot.workflow.targets import database_url

FINISH_CURRENT = "finish-current"  # at the deadline, start nothing new; the running migration finishes
ABORT = "abort"  # at the deadline, also cancel the running migration's statement
ON_DEADLINE = (FINISH_CURRENT, ABORT)
QUERY_CANCELED = "57014"  # what our cancel raises; any other failure is the migration's own
DEADLINE_POLL_S = 0.2  # how often the abort watcher reads the clock (an injected clock need not follow real time)


@dataclass
class DeployOptions:
    env_flag: bool = False  # STAGING_VALIDATION_PASSED=true (the runbook's belt and braces)
    run_id: str | None = None
    requested_by: str | None = None
    migrations: list[Migration] | None = None
    now: datetime | None = None  # for hold-back and validation-age arithmetic; None = the real clock (not `clock`)
    expected_fingerprint: str | None = None  # the run service binds a deploy run to what was approved
    # The set whose passing validation is required; differs from prod's pending set only for the rest of a
    # validated set that a closing window left: that rest was validated, applied after what is on prod now.
    validated_fingerprint: str | None = None
    on_event: applier_mod.EventSink = field(default=applier_mod._ignore)
    deadline: datetime | None = None  # the deploy window's end (timezone-aware); None = no window
    on_deadline: str = FINISH_CURRENT  # FINISH_CURRENT | ABORT
    clock: Callable[[], datetime] = field(default=now_utc)  # read against the deadline; tests inject one
    # Continue a statement-by-statement file an interrupted deploy left part-applied, at its next statement
    # (only when the file's checksum is the one that ran); without it such a file is a BLOCKER.
    resume: bool = False

    def __post_init__(self) -> None:
        if self.on_deadline not in ON_DEADLINE:
            raise ValueError(f"on_deadline must be one of {', '.join(ON_DEADLINE)}, not {self.on_deadline!r}")
        if self.deadline is not None and self.deadline.tzinfo is None:
            raise ValueError("deadline must be timezone-aware (UTC), or the clock cannot be compared with it")


@dataclass(frozen=True)
class HoldBack:
    """A pending set split by the cleanup hold-back (plain data)."""

    to_apply: list[Migration]
    held: list[tuple[Migration, str]]  # with the reason, in order
    held_until: datetime | None  # UTC; when the first held (cleanup) migration becomes eligible; None = none held


def held_back(pending: list[Migration], history: dict[str, applier_mod.HistoryRow], hold: timedelta,
              now: datetime) -> HoldBack:
    """Split pending by the runbook's cleanup hold-back. Pure.

    The previous deploy is the newest ``applied_at`` on prod; non-cleanup
    migrations earlier in this same set count as a deploy happening now.
    """
    last = max((row.applied_at for row in history.values()), default=None)
    to_apply: list[Migration] = []
    held: list[tuple[Migration, str]] = []
    until: datetime | None = None
    for m in pending:
        if held:
            held.append((m, f"waits behind held {held[0][0].label} (migrations apply in order)"))
            continue
        eligible = cleanup_eligible_at(now if to_apply else last, hold) if m.cleanup else None
        if eligible is not None and now < eligible:
            until = eligible
            held.append((m, f"cleanup migration held until {eligible:%Y-%m-%d %H:%M UTC} "
                            f"({hold.days} days after the previous deploy)"))
            continue
        to_apply.append(m)
    return HoldBack(to_apply, held, until)


def cleanup_eligible_at(previous_deploy: datetime | None, hold: timedelta) -> datetime | None:
    """When a cleanup migration may follow a deploy (UTC): the one place the hold-back's date is computed.

    None when there was no previous deploy: nothing to bake, nothing to wait for.
    """
    return None if previous_deploy is None else (previous_deploy + hold).astimezone(timezone.utc)


def run(settings: Settings, store: Ledger, options: DeployOptions | None = None) -> Report:
    options = options or DeployOptions()
    return run_step("deploy", lambda report: _deploy(settings, store, options, report))


def _deploy(settings: Settings, store: Ledger, options: DeployOptions, report: Report) -> None:
    migrations = options.migrations if options.migrations is not None else discover(
        settings.migrations.dir, settings.migrations.format)
    prod_url = database_url(settings, "prod")
    with connection(prod_url, env="prod") as prod, applier_mod.environment_lock(prod, "prod"):
        history = applier_mod.read_history(prod)
        unadopted = adopt.unadopted_check(prod, migrations, history)
        if unadopted:
            report.add(unadopted)
            return
        plan = applier_mod.plan(migrations, history, applier_mod.read_partial(prod))
        report.extend(drift_checks(plan, "prod"))
        report.extend(resume_mod.checks(plan, "prod", options.resume))
        report.facts["partial"] = [p.to_dict() for p in resume_mod.progress(plan)]
        report.fingerprint = set_fingerprint(plan.pending)
        if not plan.pending:
            report.passed("pending", "nothing to deploy: prod is up to date")
            return
        if not _allowed(settings, store, options, report) or report.failures:
            return
        _preflight(prod, settings, report)
        if report.failures:
            return
        now, hold = _now(options), timedelta(days=settings.deploy.cleanup_hold_days)
        to_apply = held_back(plan.pending, history, hold, now).to_apply
        not_valid_before = {checks.constraint_key(r) for r in checks.unvalidated(prod)}
        report.facts.update(left=[], window_closed=False)
        applied = _apply(prod, settings, options, to_apply, report, plan.resume_at() if options.resume else {})
        report.facts["applied"] = [m.label for m in applied]
        done = {m.version for m in applied}
        remaining = [m for m in plan.pending if m.version not in done]
        report.facts["remaining_fingerprint"] = set_fingerprint(remaining)
        _report_held(prod, remaining, hold, now, report)
        report.add(checks.unvalidated_constraints(prod, "prod", not_valid_before))
        report.add(checks.invalid_indexes(prod, "prod"))
    _orm_reminder(settings, migrations, report)
    store.record_deploy(fingerprint=report.fingerprint, ok=report.ok, applied=report.facts["applied"],
                        held=report.facts["held"], report_json=report.to_json(), run_id=options.run_id)


def _allowed(settings: Settings, store: Ledger, options: DeployOptions, report: Report) -> bool:
    fingerprint = report.fingerprint or ""
    if options.expected_fingerprint and options.expected_fingerprint != fingerprint:
        report.blocker("fingerprint", f"prod's pending set ({fingerprint[:12]}) is not the set that was validated and "
                       f"approved ({options.expected_fingerprint[:12]}); validate again and get a fresh approval",
                       details={"category": "staging-stale"})
        return False
    if settings.deploy.require_env_flag and not options.env_flag:
        report.blocker("validation-flag", "STAGING_VALIDATION_PASSED is not true: the runbook deploys only after a "
                       "pass. Run `migrate-bot validate`, then export STAGING_VALIDATION_PASSED=true",
                       details={"category": "staging-stale"})
        return False
    found = store.passing_validation(options.validated_fingerprint or fingerprint)
    if not found:
        report.blocker("validation", f"no passing validation for this exact migration set (fingerprint "
                       f"{fingerprint[:12]}); run `migrate-bot validate` first — a deploy only applies what passed",
                       details={"category": "staging-stale"})
        return False
    limit_h = settings.deploy.validation_max_age_hours
    age_h = (_now(options) - datetime.fromisoformat(found["created_at"])).total_seconds() / 3600
    if limit_h and age_h > limit_h:
        report.blocker("validation", f"the passing validation of this set is {age_h:.0f} hours old (limit {limit_h:g}); "
                       "prod's data has moved on since — refresh staging and validate again",
                       details={"category": "staging-stale"})
        return False
    looser = gatesettings.refusal(found.get("gate_settings"), settings.gate)
    if looser:
        report.blocker("validation-settings", looser, details={"category": "gate-settings"})
        return False
    report.passed("validation", f"passed on staging at {found['created_at'][:19]} for fingerprint {fingerprint[:12]}")
    return True


def _now(options: DeployOptions) -> datetime:
    return options.now or datetime.now(timezone.utc)


def _preflight(prod: psycopg.Connection, settings: Settings, report: Report) -> None:
    report.add(checks.extensions(prod, "prod", settings.gate.required_extensions, missing_status=Status.BLOCKER))
    report.add(checks.idle_in_transaction(prod, "prod", settings.gate.idle_in_transaction_minutes))
    report.add(checks.connection_headroom(prod, "prod", settings.gate.connections_needed))


def _apply(prod: psycopg.Connection, settings: Settings, options: DeployOptions, to_apply: list[Migration],
           report: Report, starts: dict[str, int]) -> list[Migration]:
    if not to_apply:
        return []
    applier_mod.ensure_history(prod)
    gate = settings.gate
    applier = applier_mod.Applier(
        conn=prod, env="prod", lock_timeout_s=gate.lock_timeout_s, lock_retries=gate.lock_retries, backoff_s=gate.lock_backoff_s,
        lock_wait_s=gate.lock_wait_s, statement_timeout_s=gate.statement_timeout_s, run_id=options.run_id,
        applied_by=options.requested_by, on_event=options.on_event,
    )
    options.on_event("step", {"step": "apply", "env": "prod", "count": len(to_apply)})
    window = _Window(options.deadline, options.on_deadline == ABORT, options.clock)
    report.facts["resumed"] = {m.label: starts[m.version] for m in to_apply if starts.get(m.version)}
    return _apply_in_window(applier, to_apply, report, window, options.on_event, starts)


def _report_held(prod: psycopg.Connection, remaining: list[Migration], hold: timedelta, now: datetime,
                 report: Report) -> None:
    """HELD lines and ``held_until``, dated from prod's history as it is after this deploy.

    What to hold was decided before applying; the date is read afterwards
    because the migrations applied just now are the previous deploy the next
    one measures from, and their ``applied_at`` is later than this deploy's
    start — a reminder dated from the start would come before the hold ends.
    """
    dated = held_back(remaining, applier_mod.read_history(prod), hold, now)
    for m, why in dated.held:
        report.held(f"hold-back.{m.label}", why, migration=m.label)
    report.facts["held"] = [m.label for m, _ in dated.held]
    if dated.held_until is not None:
        report.facts["held_until"] = dated.held_until.isoformat()


class _Watch(Protocol):
    fired: bool
    error: str | None


class _Unwatched:
    """No deadline, or a deadline that lets the running migration finish: nothing to cancel."""

    fired = False
    error = None


class _CancelAtDeadline:
    """A timer thread that cancels the running statement once, when the window closes.

    It polls the clock instead of sleeping until the deadline, so an injected
    clock works as well as the real one. The cancel is sent under a lock that
    disarming takes too: once the migration has returned, no late cancel can
    reach whatever the connection runs next.
    """

    def __init__(self, conn: psycopg.Connection, deadline: datetime, clock: Callable[[], datetime]) -> None:
        self.fired = False
        self.error: str | None = None
        self._conn, self._deadline, self._clock = conn, deadline, clock
        self._armed = True
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="deploy-window-deadline", daemon=True)

    def __enter__(self) -> "_CancelAtDeadline":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._armed = False
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._pause_s()):
            if self._clock() >= self._deadline:
                self._cancel()
                return

    def _pause_s(self) -> float:
        return min(DEADLINE_POLL_S, max((self._deadline - self._clock()).total_seconds(), 0.0))

    def _cancel(self) -> None:
        with self._lock:
            if not self._armed:
                return
            try:
                self._conn.cancel_safe()
                self.fired = True
            except psycopg.Error as exc:
                self.error = str(exc) or type(exc).__name__


@dataclass(frozen=True)
class _Window:
    deadline: datetime | None
    abort: bool
    clock: Callable[[], datetime]

    def closed(self) -> bool:
        return self.deadline is not None and self.clock() >= self.deadline

    def watch(self, conn: psycopg.Connection) -> AbstractContextManager[_Watch]:
        if self.deadline is None or not self.abort:
            return nullcontext(_Unwatched())
        return _CancelAtDeadline(conn, self.deadline, self.clock)

    def closed_at(self) -> str:
        assert self.deadline is not None
        return f"{self.deadline.astimezone(timezone.utc):%Y-%m-%d %H:%M} UTC"


def _apply_in_window(applier: applier_mod.Applier, to_apply: list[Migration], report: Report, window: _Window,
                     on_event: applier_mod.EventSink, starts: dict[str, int] | None = None) -> list[Migration]:
    """Apply in order until a failure or the window's end; returns the migrations applied.

    The window is checked before each migration, never in the middle of one
    (finish-current): a migration that started finishes, with its history row.
    In abort mode the watcher cancels it instead; if it completed anyway
    (the cancel arrived as it committed) it counts as applied, and if it
    failed of its own accord it is reported like any failure. A lost
    connection (the session terminated, the server gone) ends the deploy with
    that migration's line and the could-not-run sentence (exit 2).
    """
    applied: list[Migration] = []
    for position, migration in enumerate(to_apply):
        if window.closed():
            _left_by_window(to_apply[position:], window, report, on_event)
            break
        with window.watch(applier.conn) as watch:
            outcome = applier.apply(migration, (starts or {}).get(migration.version, 0))
        if watch.error:
            report.warning(f"window-cancel.{migration.label}",
                           f"could not cancel it at the end of the deploy window ({watch.error}), so it ran on to "
                           "its end; check the connection to prod before the next window", migration=migration.label)
        if watch.fired and outcome.failure is not None and outcome.failure.sqlstate == QUERY_CANCELED:
            report.extend(outcome.checks)
            report.add(_cancelled_check(outcome, window))
            report.facts["cancelled"] = migration.label
            _left_by_window(to_apply[position + 1:], window, report, on_event)
            break
        if not record_outcome(report, outcome, to_apply[position + 1:], "prod"):
            if outcome.failure is not None and outcome.failure.connection_lost:
                raise database_error(_as_error(outcome.failure), conn=applier.conn, step="deploy")
            break
        applied.append(migration)
    return applied


def _as_error(failure: applier_mod.PgFailure) -> psycopg.Error:
    """The failure as the psycopg error it was, for the one mapping to a sentence (``bot.errors.database_error``)."""
    try:
        cls = psycopg.errors.lookup(failure.sqlstate) if failure.sqlstate else psycopg.OperationalError
    except KeyError:  # a SQLSTATE psycopg has no class for
        cls = psycopg.OperationalError
    return cls(failure.message)


def _left_by_window(left: list[Migration], window: _Window, report: Report, on_event: applier_mod.EventSink) -> None:
    for m in left:
        report.held(f"window-closed.{m.label}",
                    f"the deploy window closed at {window.closed_at()}, so it was not started; it stays pending "
                    "for the next window", migration=m.label, details={"category": "window-closed"})
    report.facts.update(left=[m.label for m in left], window_closed=True)
    on_event("window_closed", {"deadline": window.closed_at(), "left": [m.label for m in left],
                               "cancelled": report.facts.get("cancelled")})


def _cancelled_check(outcome: applier_mod.MigrationOutcome, window: _Window) -> Check:
    """FAILED, saying exactly what of the cancelled migration is on prod now and what to do before retrying it."""
    m = outcome.migration
    committed = outcome.applied_before_failure
    head = f"cancelled at the end of the deploy window ({window.closed_at()}) after {outcome.seconds:.1f} s"
    if committed:
        what = (f"{committed} of its {len(m.statements)} statements had already committed and stay applied, but it "
                "has no history row — make the file re-runnable (IF NOT EXISTS …) or finish it by hand before the "
                "next window")
    elif m.no_transaction:
        what = "none of its statements had committed, so nothing of it is on prod; it stays pending for the next window"
    else:
        what = "rolled back with its history row, so nothing of it is on prod; it stays pending for the next window"
    details = dict(outcome.failure.to_details() if outcome.failure else {}, category="window-closed",
                   path=m.path, committed_statements=committed, deadline=window.closed_at())
    return Check(f"window-closed.{m.label}", Status.FAILED, f"{head}; {what}", migration=m.label, details=details)


def _orm_reminder(settings: Settings, migrations: list[Migration], report: Report) -> None:
    """The runbook's third pitfall: the ORM client must be regenerated after schema changes."""
    if report.facts.get("applied") and any("/" in m.path and m.path.endswith("migration.sql") for m in migrations):
        report.warning("orm-client", "Prisma schema changed: regenerate the client and run the integration tests "
                       "(npx prisma generate && npm test -- tests/integration/)")
