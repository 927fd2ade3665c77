"""How fresh staging's copy of prod is: written by every refresh, read by every gate.

A refresh records, on the new database just before it is swapped in, when the
copy was taken, by which method (dump, template, command), from what, and
whether ANALYZE covered every table. It is kept as the database's comment
(``COMMENT ON DATABASE``), not in a table:

- a rename keeps it, so it arrives with the swap, and a DROP removes it with the copy;
- the copy's schema stays exactly prod's (a ``migrate_bot.refreshed`` table
  would be one object staging has and prod has not: every schema diff, the
  next refresh's sanity counts and the gate's own catalog reads would see it);
- any role that may connect can read it, with no grant to carry over.

Read it by hand with ``\\l+`` in psql, or::

    SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = current_database();

``check`` turns it into the gate's ``staging-freshness`` line: PASSED when the
copy is younger than ``refresh.stale_after_hours`` and ANALYZE ran, else a
WARNING (never a failure: an old copy is still a copy, but the verdict should
say so).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone

import psycopg
from psycopg import sql

from bot.config import Settings
from bot.errors import MigrateBotError
from bot.pg import connection, scalar
from bot.redact import redact
from bot.workflow.report import Check, Status

MARK = "migrate-bot refresh "
NAME = "staging-freshness"
READ_SQL = "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = current_database()"
REFRESH_HINT = "refresh it first: migrate-bot refresh (/migrate refresh)"


@dataclass(frozen=True)
class Freshness:
    """One refresh, as recorded on the database it made."""

    at: datetime  # when the copy was taken (the copy started): its data is at best this old
    method: str  # dump | template | command
    analyzed: bool  # ANALYZE ran on every table of the copy
    source: str = ""  # "prod", "template prod_snapshot", "command /opt/clone-staging.sh"
    run_id: str = ""
    data_as_of: datetime | None = None  # when the clone engine's snapshot was taken, if the script said

    def to_comment(self) -> str:
        data = {"at": _iso(self.at), "method": self.method, "analyzed": self.analyzed, "source": self.source,
                "run_id": self.run_id}
        if self.data_as_of is not None:
            data["data_as_of"] = _iso(self.data_as_of)
        return MARK + json.dumps(data, sort_keys=True)

    @classmethod
    def from_comment(cls, text: str | None) -> "Freshness | None":
        """None for no comment, somebody else's comment, or one this version cannot read."""
        if not text or not text.startswith(MARK):
            return None
        try:
            data = json.loads(text[len(MARK):])
            return cls(at=_parse(data["at"]), method=str(data["method"]), analyzed=bool(data["analyzed"]),
                       source=str(data.get("source") or ""), run_id=str(data.get("run_id") or ""),
                       data_as_of=_parse(data["data_as_of"]) if data.get("data_as_of") else None)
        except (ValueError, KeyError, TypeError, AttributeError):
            return None


def _iso(when: datetime) -> str:
    return when.astimezone(timezone.utc).isoformat(timespec="seconds")


def _parse(text: str) -> datetime:
    when = datetime.fromisoformat(text)
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def record(maint: psycopg.Connection, dbname: str, fresh: Freshness) -> None:
    """``COMMENT ON DATABASE``: the owner may set it; a rename keeps it."""
    maint.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(dbname),
                                                                 sql.Literal(fresh.to_comment())))


def read(conn: psycopg.Connection) -> Freshness | None:
    return Freshness.from_comment(scalar(conn, READ_SQL))


# --- the gate's line ---------------------------------------------------------------

def ago(seconds: float) -> str:
    """ "just now", "12 min", "3 h", "2 days" — the unit a person would say."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return "just now"
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    if seconds < 48 * 3600:
        return f"{int(seconds // 3600)} h ago"
    return f"{int(seconds // 86400)} days ago"


def verdict(fresh: Freshness | None, stale_after_hours: float, now: datetime | None = None) -> Check:
    """The ``staging-freshness`` line for what was recorded (pure)."""
    if fresh is None:
        return Check(NAME, Status.WARNING,
                     "no refresh by migrate-bot is recorded on staging (never refreshed by the bot, or replaced "
                     f"another way), so how old its copy of prod is is unknown — {REFRESH_HINT}",
                     details={"refreshed_at": None})
    now = now or datetime.now(timezone.utc)
    age = (now - fresh.at).total_seconds()
    data_age = (now - fresh.data_as_of).total_seconds() if fresh.data_as_of is not None else age
    text = f"staging was refreshed {ago(age)} by {fresh.method}"
    if fresh.data_as_of is not None and data_age >= 60:
        text += f" (its data is from {ago(data_age)})"
    text += ", ANALYZE ran" if fresh.analyzed else ", ANALYZE did not run on every table"
    problems = []
    if max(age, data_age) > stale_after_hours * 3600:
        problems.append(f"older than refresh.stale_after_hours ({stale_after_hours:g} h): prod may have moved on "
                        f"since — {REFRESH_HINT}")
    if not fresh.analyzed:
        problems.append("the planner may lack statistics, so plans and timings on staging can mislead — "
                        "run ANALYZE on staging, or refresh it")
    details = {"refreshed_at": _iso(fresh.at), "method": fresh.method, "analyzed": fresh.analyzed,
               "age_hours": round(max(age, data_age) / 3600, 2), "source": fresh.source, "run_id": fresh.run_id}
    if problems:
        return Check(NAME, Status.WARNING, f"{text} — {'; '.join(problems)}", details=details)
    return Check(NAME, Status.PASSED, text, details=details)


def check(settings: Settings, staging_url: str) -> Check:
    """Read staging's record and judge it; a staging that cannot be read is a WARNING here (the gate says why)."""
    try:
        with connection(staging_url, env="staging") as conn:
            fresh = read(conn)
    except (MigrateBotError, psycopg.Error) as exc:
        return Check(NAME, Status.WARNING, redact(f"could not read when staging was refreshed: {exc}"),
                     details={"refreshed_at": None})
    return verdict(fresh, settings.refresh.stale_after_hours)
