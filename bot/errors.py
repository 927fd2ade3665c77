"""The error tree, written down once.

Every error the bot raises on purpose is a ``MigrateBotError``: it carries a
sentence a person can act on (``message``) and what to do next
(``next_step``). Faces (CLI, Slack, shell) print ``str(error)`` and exit with
``error.exit_code`` — never a traceback.

    MigrateBotError                      exit 2 unless said otherwise
    └── CouldNotRun                      exit 2: the gate never ran
        ├── ConfigError                  bad/unknown key, bad value, missing setting
        ├── SecretError                  a secret reference could not be resolved
        ├── ConnectionFailed             host unreachable, wrong password, timeout
        ├── MigrationSourceError         missing directory, unreadable or unparsable layout
        ├── EnvironmentBusy              another run/deploy holds the environment (advisory lock)
        ├── ToolMissing                  pg_dump/pg_restore/git not installed
        └── DatabaseFailed               a database error mid-step, by SQLSTATE (``database_error``)
            ├── ConnectionLost           class 08, or the connection closed under the step
            ├── ServerUnavailable        57P01 terminated, 57P02 crashed, 57P03 cannot connect now
            ├── ServerResources          class 53: disk full, out of memory, too many connections
            ├── PrivilegeMissing         42501: with the GRANT to run
            └── LockUnavailable          55P03 outside the applier's own lock retries

``database_error`` is the one mapping from a psycopg error to a sentence:
by SQLSTATE and diag fields, never by message text. ``run_step`` (the
boundary every workflow step runs in) uses it, so a database error anywhere in
a step is exit 2 with a sentence, and the step's Report (``--log``/``--json``)
is still written.

Exit codes are the gate's contract: 0 = pass, 1 = gate failed, 2 = could not run.
A gate that ran and said no is not an error: it is a Report whose FAILED or
BLOCKER lines make the exit code 1 (a deploy without a passing validation
included), so nothing here carries exit 1.
"""

from __future__ import annotations

from typing import Any

EXIT_PASS = 0
EXIT_FAILED = 1
EXIT_COULD_NOT_RUN = 2


class MigrateBotError(Exception):
    """Base class: a sentence, a next step and an exit code."""

    exit_code = EXIT_COULD_NOT_RUN

    def __init__(self, message: str, next_step: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.next_step = next_step

    def __str__(self) -> str:
        from bot.redact import redact  # late import: redact has no deps, but keep errors leaf-level

        text = self.message if not self.next_step else f"{self.message} {self.next_step}"
        return redact(text)


class CouldNotRun(MigrateBotError):
    exit_code = EXIT_COULD_NOT_RUN


class ConfigError(CouldNotRun):
    pass


class SecretError(CouldNotRun):
    pass


class ConnectionFailed(CouldNotRun):
    pass


class MigrationSourceError(CouldNotRun):
    pass


class EnvironmentBusy(CouldNotRun):
    pass


class ToolMissing(CouldNotRun):
    pass


class DatabaseFailed(CouldNotRun):
    """A database error a step could not go on from; ``sqlstate`` and ``env`` say which and where."""

    def __init__(self, message: str, next_step: str = "", *, sqlstate: str = "", env: str = "", step: str = "",
                 source: BaseException | None = None, hints: dict[str, str] | None = None) -> None:
        super().__init__(message, next_step)
        self.sqlstate = sqlstate
        self.env = env
        self.step = step
        self.source = source  # the psycopg error, so ``in_step`` can say it again naming the step
        self.hints = dict(hints or {})

    def in_step(self, step: str) -> "DatabaseFailed":
        """The same error, its sentence naming ``step`` (raised deep down, where the step is not known)."""
        if self.step or self.source is None:
            return self
        return database_error(self.source, step=step, **self.hints)


class ConnectionLost(DatabaseFailed):
    pass


class ServerUnavailable(DatabaseFailed):
    pass


class ServerResources(DatabaseFailed):
    pass


class PrivilegeMissing(DatabaseFailed):
    pass


class LockUnavailable(DatabaseFailed):
    pass


BOT_SCHEMA = "migrate_bot"  # the bot's own history tables on every database it migrates

# SQLSTATEs that mean the session is gone (or never came): whatever ran on it was rolled back by the server.
SESSION_GONE = frozenset({"57P01", "57P02", "57P03"})
_RESOURCES = {
    "53100": ("is out of disk space", "Free disk space on the server (or grow the volume)"),
    "53200": ("ran out of memory", "Lower work_mem / maintenance_work_mem for the bot's role, or give the server "
                                   "more memory"),
    "53300": ("has no free connection slots (too many connections)",
              "Wait for connections to drop, or raise max_connections or put a pooler in front"),
    "53400": ("hit a configured limit (configuration_limit_exceeded)",
              "Check the server log for the limit and raise it"),
}
_UNAVAILABLE = {
    "57P01": "ended the bot's session (SQLSTATE 57P01: an administrator terminated it, or the server is shutting down)",
    "57P02": "crashed or restarted (SQLSTATE 57P02)",
    "57P03": "is not accepting connections now (SQLSTATE 57P03: starting up, shutting down or in recovery)",
}


def session_gone(exc: BaseException) -> bool:
    """The error took the session with it: class 08, 57P01-57P03, or a connection psycopg found closed."""
    import psycopg  # late: the error tree itself stays free of drivers

    code = getattr(exc, "sqlstate", None) or ""
    if code.startswith("08") or code in SESSION_GONE:
        return True
    return not code and isinstance(exc, psycopg.OperationalError)


def database_error(exc: BaseException, *, env: str = "", step: str = "", role: str = "", database: str = "",
                   schema: str = "", table: str = "") -> DatabaseFailed:
    """The one mapping: a psycopg error -> an error with a sentence and the next step (pure).

    Keyed on ``exc.sqlstate`` (its class, then the code) and ``exc.diag``'s
    schema/table; the server's own words are quoted, never matched. ``env``,
    ``step`` and ``role`` say where and as whom; ``schema``/``table``/
    ``database`` name what a caller knows it was touching when the server
    leaves the diag fields empty (42501 usually does).
    """
    code = getattr(exc, "sqlstate", None) or ""
    diag = getattr(exc, "diag", None)
    text = str(exc).strip()
    said = getattr(diag, "message_primary", None) or (text.splitlines()[0] if text else "")
    where = env or "the database"
    during = f" during {step}" if step else " mid-step"
    again = f"run {step} again" if step else "run it again"
    kw: dict[str, Any] = {"sqlstate": code, "env": env, "step": step, "source": exc,
                          "hints": {"env": env, "role": role, "database": database, "schema": schema, "table": table}}
    if session_gone(exc) and code not in SESSION_GONE:
        return ConnectionLost(
            f"The connection to {where} was lost{during}" + (f" ({said})" if said else "") + ".",
            f"Nothing more was done there. Check that {where} is up and reachable, then {again}: a migration that "
            "runs in one transaction rolled back with its history row, and one that runs statement by statement "
            "is recorded statement by statement (the next deploy says what committed).", **kw)
    if code in _UNAVAILABLE:
        wait = ("If someone ended it on purpose, ask them first; otherwise" if code == "57P01" else
                "Wait until it accepts connections again (pg_isready), then")
        return ServerUnavailable(
            f"{_cap(where)} {_UNAVAILABLE[code]}{during}.",
            f"{wait} {again}: a migration that runs in one transaction rolled back with its history row, and the "
            "next deploy says what of a statement-by-statement one committed.", **kw)
    if code.startswith("53"):
        what, fix = _RESOURCES.get(code, (f"ran out of a resource (SQLSTATE {code}: {said})",
                                          "Check the server log for which resource"))
        return ServerResources(f"{_cap(where)} {what}{during}.", f"{fix}, then {again}.", **kw)
    if code == "42501":
        return _privilege(said, where, during, again, role, database,
                          schema or (getattr(diag, "schema_name", None) or ""),
                          table or (getattr(diag, "table_name", None) or ""), kw)
    if code == "55P03":
        return LockUnavailable(
            f"A lock on {where} was not available within lock_timeout{during} (SQLSTATE 55P03), outside the "
            "migrations' own lock retries.",
            "Another session holds a lock on a table this step reads (a long transaction, or DDL): find it with "
            "`SELECT pid, application_name, state, now() - xact_start FROM pg_stat_activity ORDER BY xact_start`, "
            f"let it finish (`/migrate unblock` ends idle ones), then {again}.", **kw)
    if code == "57014":
        return DatabaseFailed(
            f"A query on {where} was cancelled{during} (SQLSTATE 57014: statement_timeout, or pg_cancel_backend).",
            f"If the bot's role has a statement_timeout too short for this step, raise it; then {again}.", **kw)
    if code == "25006":
        return DatabaseFailed(
            f"{_cap(where)} is read-only{during} (SQLSTATE 25006): the URL may lead to a standby.",
            f"Point databases.{env or '<env>'} at the primary, then {again}.", **kw)
    if code in ("40001", "40P01"):
        return DatabaseFailed(
            f"{_cap(where)} aborted a query{during} to resolve a conflict with another session (SQLSTATE {code}).",
            f"Nothing of that query stayed: {again}.", **kw)
    return DatabaseFailed(
        f"{_cap(where)} refused a query{during}: {said or type(exc).__name__}"
        + (f" (SQLSTATE {code})." if code else "."),
        "This is unexpected: rerun with MIGRATE_BOT_DEBUG=1 and report it to the bot's owners.", **kw)


def _privilege(said: str, where: str, during: str, again: str, role: str, database: str, schema: str,
               table: str, kw: dict) -> PrivilegeMissing:
    """42501 with the GRANT that fixes it, when the object is known (diag fields, or the caller's hint)."""
    who = role or "<the bot's role>"
    if schema == BOT_SCHEMA and not table:
        grant = (f"GRANT USAGE, CREATE ON SCHEMA {BOT_SCHEMA} TO {who}; GRANT SELECT, INSERT, UPDATE, DELETE ON ALL "
                 f"TABLES IN SCHEMA {BOT_SCHEMA} TO {who};")
    elif table:
        qualified = f"{schema}.{table}" if schema else table
        grant = (f"GRANT USAGE ON SCHEMA {schema} TO {who}; " if schema else "") + \
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON {qualified} TO {who};"
    elif schema:
        grant = f"GRANT USAGE ON SCHEMA {schema} TO {who};"
    elif database:
        grant = (f"GRANT CREATE ON DATABASE {database} TO {who}; (or, as its owner: CREATE SCHEMA {BOT_SCHEMA} "
                 f"AUTHORIZATION {who};)")
    else:
        grant = ""
    role_part = f"The {role} role" if role else "The bot's role"
    head = f"{role_part} lacks a privilege on {where}{during} (SQLSTATE 42501: {said})."
    if grant:
        return PrivilegeMissing(head, f"Ask the DBA to run, on {where}: {grant} Then {again}.", **kw)
    return PrivilegeMissing(head, f"Ask the DBA to grant it (the server log names the object), then {again}.", **kw)


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]
