"""Ending approved idle-in-transaction sessions on prod (`/migrate unblock`), one verdict per session.

The runbook's "kill idle-in-transaction sessions", after an approver said
yes: each listed session is ended only if it is still idle in transaction
past ``gate.idle_in_transaction_minutes``, and each gets its own line —
terminated, already gone, moved on (left alone), or not permitted with why
(a superuser's session when the bot's role is not one) — so a person knows
exactly which were killed and which still need a DBA. One that may not be
ended never stops the others.
"""

from __future__ import annotations

from bot.config import Settings
from bot.pg import connection
from bot.workflow import checks
from bot.workflow.checks import FAILED, GONE, NOT_IDLE, NOT_PERMITTED, TERMINATED, Termination
from bot.workflow.report import Check, Report, Status, run_step
from bot.workflow.targets import database_url


def run(settings: Settings, pids: list[int]) -> Report:
    """Terminate the approved ``pids`` on prod; the Report has one ``unblock.pid-<pid>`` line each (step "unblock").

    Exit 0 when every session is ended or already gone, 1 when one may not be
    ended (or failed), 2 when prod cannot be reached.
    """
    return run_step("unblock", lambda report: _unblock(settings, pids, report))


def _unblock(settings: Settings, pids: list[int], report: Report) -> None:
    minutes = settings.gate.idle_in_transaction_minutes
    with connection(database_url(settings, "prod"), env="prod") as prod:
        done = checks.terminate_idle(prod, minutes, pids)
    fill(report, done)


def fill(report: Report, done: list[Termination]) -> None:
    """One line per session, then the counts in ``facts`` (pure)."""
    report.extend([line(t) for t in done])
    by = {kind: [t.pid for t in done if t.outcome == kind] for kind in (TERMINATED, GONE, NOT_IDLE, NOT_PERMITTED,
                                                                          FAILED)}
    report.facts.update(terminated=by[TERMINATED], gone=by[GONE], not_idle=by[NOT_IDLE],
                        not_permitted=by[NOT_PERMITTED] + by[FAILED])
    if not done:
        report.passed("unblock", "no session was listed, so none was terminated")


def line(t: Termination) -> Check:
    """The verdict on one session (pure)."""
    who = f"pid {t.pid}" + (f" ({t.application or t.user}, idle {t.idle_seconds}s)" if t.user or t.application else "")
    name = f"unblock.pid-{t.pid}"
    details = {"category": "lock", "pid": t.pid, "outcome": t.outcome, "user": t.user, "application": t.application}
    if t.outcome == TERMINATED:
        return Check(name, Status.PASSED, f"terminated {who}: its transaction rolled back", details=details)
    if t.outcome == GONE:
        return Check(name, Status.PASSED, f"{who} had already ended" + (f" ({t.why})" if t.why else ""),
                     details=details)
    if t.outcome == NOT_IDLE:
        return Check(name, Status.PASSED, f"left {who} alone: {t.why}, no longer idle in transaction",
                     details=details)
    verb = "may not terminate" if t.outcome == NOT_PERMITTED else "could not terminate"
    return Check(name, Status.FAILED, f"{verb} {who}: {t.why}", details=details)
