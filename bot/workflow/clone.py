"""The copy without pg_dump: ``refresh.method = "template"`` and ``"command"``.

Both end where a dump ends — a new database ``<staging>__refresh_<stamp>`` on
the staging server, nobody connected to it — so ``refresh.py`` runs the same
checks on it and swaps it in by the same rename:

- **template**: ``CREATE DATABASE <new> TEMPLATE <prod copy>``, where the prod
  copy (``refresh.template``) is a database *on the staging server* that the
  team keeps current (a restored backup, a promoted replica's database, a
  clone engine's snapshot). Never prod itself: a template must be on the
  staging server, and staging is never prod's server (``refresh-safety``), so
  a template URL that leads to prod is refused twice over — by name and by
  server identity.
- **command**: the team's script (``clonecmd``) makes the copy on the staging
  server and prints where; the bot checks it is on the staging server, that
  the script made it during this run, and renames it to the ``__refresh_``
  name (from then on an interrupted refresh's cleanup knows it). A database
  on another server is refused: the swap, staging's own grants, the gate, the
  deploy estimate and ``/migrate unblock`` all work on ``databases.staging``,
  which the bot reads from the team's secret store and never rewrites.

Failures raise ``CloneFailed`` with the sentence for the FAILED line; what the
method made is dropped before it is raised.
"""

from __future__ import annotations

import os
import shlex
import time
from dataclasses import dataclass, field
from typing import Callable
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
from psycopg import errors as pgerrors
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from bot.config import Settings
from bot.errors import ConfigError, CouldNotRun, MigrateBotError
from bot.pg import application_name, connection, rows, run_of, same_database, scalar
from bot.redact import mask_url, redact
from bot.secrets import parse_ref, resolve
from bot.workflow import clonecmd
from bot.workflow import refreshdb as db

FILE_COPY_FROM_BYTES = 1 << 30  # a larger template is copied file by file (no WAL for the whole copy)
SESSIONS_GONE_S = 10.0  # how long a killed script's terminated sessions get to leave
SECRET_NAMES = ("PASSWORD", "SECRET", "TOKEN", "PASSWD")  # environment variables never handed to the script
SESSIONS_SQL = """
SELECT pid, coalesce(nullif(application_name, ''), backend_type) AS app, usename AS who,
       coalesce(host(client_addr), 'local') AS client, state, backend_start
FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid() ORDER BY backend_start
"""


class CloneFailed(Exception):
    """The copy could not be made; ``str()`` is the sentence for the report (redacted)."""

    def __init__(self, message: str, output: str = "") -> None:
        super().__init__(redact(message))
        self.output = output


@dataclass(frozen=True)
class Server:
    """The staging server as the clone steps need it: its identity, how to reach a database on it."""

    identity: db.ServerIdentity
    prod_identity: db.ServerIdentity
    url_for: Callable[[str], str]
    staging_url: str
    staging_db: str
    maintenance_db: str


def where(url: str) -> str:
    """host:port/db for sentences; never the user or password."""
    params = conninfo_to_dict(url)
    return f"{params.get('host') or 'localhost'}:{params.get('port') or 5432}/{params.get('dbname') or ''}"


def _sessions_text(found: list[dict]) -> str:
    return ", ".join(f"pid {s['pid']} {s['app']} ({s['who']}, {s['client']}, {s['state'] or 'no state'}, "
                     f"connected since {s['backend_start']:%Y-%m-%d %H:%M:%S})" for s in found[:5]) + (
        f" and {len(found) - 5} more" if len(found) > 5 else "")


def _refuse_reserved(name: str, server: Server, what: str) -> None:
    """Names a copy may never come from or be: staging, the maintenance database, the refresh's own names."""
    if name == server.staging_db or name.startswith(server.staging_db + "__"):
        raise ConfigError(f"{what} names {name}, the staging database (or one of the refresh's own working "
                          "copies) — a refresh replaces and drops those.", "Name the prod copy instead.")
    if name == server.maintenance_db:
        raise ConfigError(f"{what} names {name}, the maintenance database the refresh works from.",
                          "Name the prod copy instead.")


# --- template --------------------------------------------------------------------

@dataclass(frozen=True)
class Template:
    name: str  # a database on the staging server
    shown: str  # how sentences name it


def _is_url(value: str) -> bool:
    return "://" in value or "=" in value


def template_source(settings: Settings, maint: psycopg.Connection, prod_url: str, server: Server) -> Template:
    """``refresh.template`` resolved and checked: on the staging server, not prod, copyable by the staging user.

    A bare name is a database on the staging server; a reference (``env:…``)
    or URL is connected to once, to compare its server with staging's, and
    closed before the copy (a template must have no sessions).
    """
    ref = settings.refresh.template
    literal = parse_ref(ref).scheme == "literal"
    value = ref if literal and not _is_url(ref) else resolve(ref, what="refresh.template URL")
    if _is_url(value):
        name, shown = _template_by_url(value, prod_url, server)
    else:
        name, shown = value.strip(), value.strip()
    _refuse_reserved(name, server, "refresh.template")
    found = rows(maint, """SELECT datistemplate OR pg_has_role(datdba, 'MEMBER')
                                  OR (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AS may_copy
                           FROM pg_database WHERE datname = %s""", (name,))
    if not found:
        raise ConfigError(f"refresh.template names {shown}, which does not exist on the staging server "
                          f"({where(server.staging_url).rsplit('/', 1)[0]}).",
                          "Restore (or clone) the prod copy there first, or fix refresh.template.")
    if not found[0]["may_copy"]:
        user = scalar(maint, "SELECT current_user")
        raise CouldNotRun(f"The staging user {user} may not copy {name}: CREATE DATABASE … TEMPLATE needs the "
                          "template's owner, a superuser, or a database marked as a template.",
                          f"Ask the DBA: ALTER DATABASE {name} IS_TEMPLATE true; (or OWNER TO {user}).")
    return Template(name=name, shown=shown)


def _template_by_url(url: str, prod_url: str, server: Server) -> tuple[str, str]:
    shown = where(url)
    if same_database(url, prod_url):
        raise CouldNotRun(f"Refusing to refresh: refresh.template leads to the prod database itself ({shown}). "
                          "The template method copies a prod copy that lives on the staging server (a restored "
                          "backup, a promoted replica), never prod under load.",
                          "Point refresh.template at that copy, or use refresh.method = \"dump\".")
    with connection(url, env="the refresh.template database", app_suffix="-refresh") as conn:
        theirs, name = db.server_identity(conn), conn.info.dbname
    if theirs.same_server(server.prod_identity):
        raise CouldNotRun(f"Refusing to refresh: refresh.template ({shown}) is on prod's PostgreSQL server "
                          f"({theirs.describe()}). The template method copies a prod copy that lives on the "
                          "staging server, never prod under load.",
                          "Point refresh.template at that copy, or use refresh.method = \"dump\".")
    if not theirs.same_server(server.identity):
        raise CouldNotRun(f"refresh.template ({shown}) is not on the staging server "
                          f"({where(server.staging_url).rsplit('/', 1)[0]}): CREATE DATABASE … TEMPLATE copies "
                          "only within one server.",
                          "Restore the prod copy onto the staging server, or use refresh.method = \"command\" "
                          "or \"dump\".")
    return name, shown


def copy_template(maint: psycopg.Connection, template: Template, new: str) -> tuple[float, int]:
    """``CREATE DATABASE new TEMPLATE t``; (seconds, bytes). CloneFailed names whoever blocks it.

    PostgreSQL copies a template only while nobody else is connected to it
    (it waits 5 s for sessions on their way out). The bot does not disconnect
    them: the template is the team's, and whoever is on it may be the restore
    that keeps it current.
    """
    size = int(scalar(maint, "SELECT pg_database_size(%s)", (template.name,)) or 0)
    create = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(new), sql.Identifier(template.name))
    if maint.info.server_version >= 150000 and size > FILE_COPY_FROM_BYTES:
        create += sql.SQL(" STRATEGY FILE_COPY")
    began = time.perf_counter()
    try:
        maint.execute(create)
    except pgerrors.ObjectInUse:
        found = rows(maint, SESSIONS_SQL, (template.name,))
        who = _sessions_text(found) if found else "a session that has left since"
        raise CloneFailed(
            f"could not copy {template.shown}: CREATE DATABASE … TEMPLATE needs the template to itself, and "
            f"{len(found) or 'another'} other session{'s are' if len(found) != 1 else ' is'} connected to it: {who}. "
            f"Have them disconnect (keep the prod copy free of sessions while refreshes run; "
            f"ALTER DATABASE {template.name} ALLOW_CONNECTIONS false keeps new ones out), then refresh again") from None
    except pgerrors.InsufficientPrivilege as exc:
        raise CloneFailed(f"could not copy {template.shown}: {exc.diag.message_primary} — make the staging user its "
                          f"owner, or ALTER DATABASE {template.name} IS_TEMPLATE true") from None
    return time.perf_counter() - began, size


# --- command ---------------------------------------------------------------------

@dataclass
class Made:
    """What the script made, now renamed to the refresh's name."""

    name: str  # where the script put it (before the rename)
    result: clonecmd.ScriptResult
    notes: list[str] = field(default_factory=list)  # WARNING sentences


def script_argv(command: str) -> list[str]:
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise ConfigError(f"refresh.command cannot be split into a command line ({exc}).",
                          "Quote it as you would in a shell.") from None
    if not argv:
        raise ConfigError("refresh.command is empty.", "Set it to your clone script's path.")
    return argv


def script_env(server: Server, prod_url: str, new: str, settings: Settings) -> dict[str, str]:
    """The bot's environment minus anything holding a secret, plus what the script needs to know (no password)."""
    env = {key: value for key, value in os.environ.items() if _may_pass(key, value)}
    staging, prod = conninfo_to_dict(server.staging_url), conninfo_to_dict(prod_url)
    app = application_name("-clone")
    env.update({
        "MIGRATE_BOT_RUN_ID": run_of(app) or f"refresh-{new.rsplit('_', 1)[-1]}",
        "MIGRATE_BOT_PROD_DB": str(prod.get("dbname") or ""),
        "MIGRATE_BOT_PROD_HOST": str(prod.get("host") or ""),
        "MIGRATE_BOT_PROD_PORT": str(prod.get("port") or "5432"),
        "MIGRATE_BOT_STAGING_DB": server.staging_db,
        "MIGRATE_BOT_STAGING_HOST": str(staging.get("host") or ""),
        "MIGRATE_BOT_STAGING_PORT": str(staging.get("port") or "5432"),
        "MIGRATE_BOT_STAGING_USER": str(staging.get("user") or ""),
        "MIGRATE_BOT_MAINTENANCE_DB": server.maintenance_db,
        "MIGRATE_BOT_TARGET_DB": new,
        "MIGRATE_BOT_TIMEOUT_S": f"{settings.refresh.timeout_s:g}",
        "PGAPPNAME": app,
    })
    return env


def _may_pass(key: str, value: str) -> bool:
    """Not a value the bot knows to be secret (its database URLs), not a variable named like a secret.

    ``…_FILE`` variables are paths (AWS_WEB_IDENTITY_TOKEN_FILE, PGPASSFILE): they pass.
    """
    if redact(value) != value:
        return False
    upper = key.upper()
    return upper.endswith("_FILE") or not any(word in upper for word in SECRET_NAMES)


def _databases(maint: psycopg.Connection) -> dict[str, int]:
    return {r["datname"]: int(r["oid"]) for r in rows(maint, "SELECT oid, datname FROM pg_database")}


def _end_script_sessions(maint: psycopg.Connection, app: str, wait_s: float = SESSIONS_GONE_S) -> None:
    """The script's libpq sessions (PGAPPNAME) a killed script left behind — a CREATE DATABASE, say — ended,
    and waited for: a terminated CREATE DATABASE removes its half-made copy on its way out."""
    query = "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND pid <> pg_backend_pid()"
    rows(maint, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s "
                "AND pid <> pg_backend_pid()", (app,))
    deadline = time.monotonic() + wait_s
    while scalar(maint, query, (app,)) and time.monotonic() < deadline:
        time.sleep(0.05)


def _forget(maint: psycopg.Connection, new: str, app: str, before: dict[str, int]) -> str:
    """After a failed script: end its sessions, drop ``new``; name (never drop) other databases it left."""
    _end_script_sessions(maint, app)
    db.drop_database(maint, new)
    left = sorted(name for name, oid in _databases(maint).items() if before.get(name) != oid)
    if not left:
        return ""
    return (f"; databases that appeared on the staging server while it ran are still there: {', '.join(left)} — "
            f"the bot drops only {new} ($MIGRATE_BOT_TARGET_DB), so remove them if the script made them")


def run_command(settings: Settings, maint: psycopg.Connection, prod_url: str, server: Server, new: str,
                on_line: clonecmd.LineSink | None = None) -> Made:
    """Run the script; on success the database it made is ``new``. CloneFailed (with its output) otherwise."""
    argv = script_argv(settings.refresh.command)
    env = script_env(server, prod_url, new, settings)
    before = _databases(maint)
    try:
        result = clonecmd.run_script(argv, env, settings.refresh.timeout_s, on_line)
    except OSError as exc:
        raise ConfigError(f"refresh.command could not be started: {argv[0]}: {exc.strerror or exc}.",
                          "Check the path and that the file is executable (chmod +x).") from None
    except BaseException:
        _forget_quietly(maint, new, env["PGAPPNAME"], before)
        raise
    shown = result.shown()
    if not result.ok:
        extra = _forget(maint, new, env["PGAPPNAME"], before)
        timeout = (f" (refresh.timeout_s = {settings.refresh.timeout_s:g})" if result.timed_out else "")
        raise CloneFailed(f"{_script(argv)} {result.how()}{timeout}; nothing was swapped in, and "
                          f"{new} was dropped if it had been made{extra}", shown)
    try:
        name = _accept(settings, maint, server, result, before, new)
    except CloneFailed as exc:
        extra = _forget(maint, new, env["PGAPPNAME"], before)
        raise CloneFailed(f"{exc}{extra}", shown) from None
    except BaseException:  # refresh.target unresolvable, Ctrl-C…: still nothing left behind
        _forget_quietly(maint, new, env["PGAPPNAME"], before)
        raise
    notes = []
    if result.secrets_masked:
        notes.append(f"{_script(argv)} printed a password or another secret; it is masked (***) in this report "
                     "and the logs. Print the URL without the password: the bot connects to the copy with "
                     "staging's own credentials — and rotate that password if the output went anywhere else")
    return Made(name=name, result=result, notes=notes)


def _forget_quietly(maint: psycopg.Connection, new: str, app: str, before: dict[str, int]) -> None:
    try:
        _forget(maint, new, app, before)
    except (psycopg.Error, MigrateBotError):
        pass  # the next refresh drops the __refresh_ leftover


def _script(argv: list[str]) -> str:
    return f"the clone script {argv[0]}"


def _where_it_is(settings: Settings, result: clonecmd.ScriptResult) -> str:
    if settings.refresh.target:
        ref = settings.refresh.target
        literal = parse_ref(ref).scheme == "literal"
        return ref if literal and not _is_url(ref) else resolve(ref, what="refresh.target URL")
    return result.last_stdout


def _accept(settings: Settings, maint: psycopg.Connection, server: Server, result: clonecmd.ScriptResult,
            before: dict[str, int], new: str) -> str:
    """The script's database: on the staging server, made during this run, owned by the staging user; renamed."""
    said = _where_it_is(settings, result).strip()
    if not said:
        raise CloneFailed(f"{_script(result.argv)} exited 0 but printed nothing on stdout: its last line must be "
                          "the URL (or name) of the database it made, or set refresh.target")
    if said.startswith(clonecmd.DATA_AS_OF):
        raise CloneFailed(f"{_script(result.argv)} printed {clonecmd.DATA_AS_OF}… as its last line; the last line "
                          "must be the URL (or name) of the database it made")
    name = _database_on_staging(said, server)
    _refuse_reserved_made(name, server, result, new)
    current = _databases(maint)
    if name not in current:
        raise CloneFailed(f"{_script(result.argv)} said it made {name}, but there is no such database on the "
                          "staging server")
    if before.get(name) == current[name]:
        raise CloneFailed(f"{_script(result.argv)} named {name}, which existed before it ran: the bot swaps in only "
                          "a database the script made for this refresh (the previous staging is dropped after the "
                          "swap, and so is this one if a check fails) — have it create $MIGRATE_BOT_TARGET_DB")
    if not db.owns_database(maint, name):
        user = scalar(maint, "SELECT current_user")
        raise CloneFailed(f"the staging user {user} does not own {name}, which the script made, so it cannot swap it "
                          f"in — have the script create it as {user}, or run ALTER DATABASE {name} OWNER TO {user}")
    if name != new:
        db.terminate_sessions(maint, name)
        db.rename_database(maint, name, new)
    else:
        db.terminate_sessions(maint, new)
    return name


def _refuse_reserved_made(name: str, server: Server, result: clonecmd.ScriptResult, new: str) -> None:
    """Staging, the maintenance and built-in databases, the refresh's other working copies: never the new staging."""
    ours = name.startswith(server.staging_db + "__") and name != new
    if ours or name in (server.staging_db, server.maintenance_db, "template0", "template1"):
        raise CloneFailed(f"{_script(result.argv)} named {name} as the database it made; the bot swaps in only a new "
                          "database — have it create $MIGRATE_BOT_TARGET_DB")


def _staging_credentials_at(server: Server, host: str, port: str) -> str:
    """Staging's user and password, another host and port, the maintenance database — a URL when staging's is one,
    so a connection error names host:port."""
    if "://" not in server.staging_url:
        params = dict(conninfo_to_dict(server.staging_url), host=host, port=port, dbname=server.maintenance_db)
        params.pop("hostaddr", None)
        return make_conninfo(**params)
    parts = urlsplit(server.staging_url)
    userinfo = parts.netloc.rpartition("@")[0]
    shown_host = f"[{host}]" if ":" in host else host
    netloc = f"{userinfo}@{shown_host}:{port}" if userinfo else f"{shown_host}:{port}"
    return urlunsplit(parts._replace(netloc=netloc, path="/" + quote(server.maintenance_db, safe=""), query=""))


def _database_on_staging(said: str, server: Server) -> str:
    """The database name, once the printed URL is known to lead to the staging server."""
    if not _is_url(said):
        if len(said.encode()) > db.MAX_DBNAME_BYTES or any(c.isspace() for c in said):
            raise CloneFailed(f"the clone script's last stdout line is not a database URL or name: "
                              f"{redact(said)[:200]!r}")
        return said
    try:
        params = conninfo_to_dict(said)
    except psycopg.ProgrammingError:
        raise CloneFailed(f"the clone script's last stdout line is not a database URL or name: "
                          f"{mask_url(redact(said))[:200]!r}") from None
    name = str(params.get("dbname") or "")
    if not name:
        raise CloneFailed(f"the URL the clone script printed ({where(said)}) names no database")
    if not params.get("host") and not params.get("hostaddr"):
        return name  # no host: the staging server, as the contract allows
    probe = _staging_credentials_at(server, str(params.get("host") or ""), str(params.get("port") or "5432"))
    try:
        with connection(probe, env="the clone script's server", app_suffix="-refresh") as conn:
            theirs = db.server_identity(conn)
    except MigrateBotError as exc:
        raise CloneFailed(f"the database the clone script made ({where(said)}) is not reachable with staging's "
                          f"credentials ({exc.message.rstrip('.')}); the bot swaps in only a database on the staging server") from None
    if not theirs.same_server(server.identity):
        raise CloneFailed(
            f"the clone script made its database at {where(said)}, which is not the staging server "
            f"({where(server.staging_url).rsplit('/', 1)[0]}): migrate-bot swaps in only a database on the staging "
            "server, by rename, because the gate, the deploy estimate and the Slack commands all use "
            "databases.staging, which it never rewrites. It was left where it is — have the script make the copy on "
            "the staging server (see \"Refresh through your clone engine\" in the README)")
    return name
