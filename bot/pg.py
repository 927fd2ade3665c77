"""Connecting to PostgreSQL with timeouts and a recognisable application_name.

Connection failures become ``ConnectionFailed`` with a sentence that names the
environment (prod/staging) and the masked URL, never the password. Query
helpers are deliberately tiny: the workflow's SQL lives next to the step that
needs it.
"""

from __future__ import annotations

import re
import weakref
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import Any, Iterator
from urllib.parse import urlsplit

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from bot import errors
from bot.errors import ConnectionFailed, DatabaseFailed
from bot.redact import mask_url, register

APP_NAME = "migrate-bot"
CONNECT_TIMEOUT_S = 10
# The run a thread works for: its connections say so in application_name (migrate-bot/r-3f9a1c02), so the
# sessions of a run whose process died can be found and ended, and a lock holder can be named.
_run: ContextVar[str] = ContextVar("migrate_bot_run", default="")
_RUN_APP = re.compile(rf"^{APP_NAME}/(r-[0-9a-f]{{8,64}})")


@contextmanager
def run_context(run_id: str) -> Iterator[None]:
    token = _run.set(run_id)
    try:
        yield
    finally:
        _run.reset(token)


def current_run() -> str:
    """The run this thread works for ("" outside a run): log lines carry it."""
    return _run.get()


def application_name(suffix: str = "") -> str:
    run_id = _run.get()
    return f"{APP_NAME}/{run_id}{suffix}" if run_id else f"{APP_NAME}{suffix}"


def run_of(application: str | None) -> str:
    """The run id a session's application_name carries ("" for none): the inverse of ``application_name``."""
    found = _RUN_APP.match(application or "")
    return found.group(1) if found else ""


def _why(message: str) -> tuple[str, str]:
    """Turn libpq's connection message into (reason, next step).

    libpq reports connection failures without a SQLSTATE, so this is the one
    place that reads message text.
    """
    text = message.lower()
    if "password authentication failed" in text or "no password supplied" in text:
        return "the password was rejected", "Check the credential in the secret store (it may have been rotated)."
    if "does not exist" in text and "database" in text:
        return "the database does not exist", "Check the database name in the URL."
    if "does not exist" in text and "role" in text:
        return "the user does not exist", "Check the user name in the URL."
    if "timeout expired" in text or "timed out" in text:
        return "the connection timed out", "Check the host, port and firewall."
    if "connection refused" in text or "could not connect" in text or "no such file" in text:
        return "nothing is listening there", "Check that the server is up and the host and port are right."
    if "could not translate host name" in text or "name or service not known" in text:
        return "the host name does not resolve", "Check the host name in the URL."
    if "too many connections" in text or "remaining connection slots" in text:
        return "the server has no free connection slots", "Wait for connections to drop or raise max_connections."
    if "pg_hba.conf" in text:
        return "the server's pg_hba.conf does not allow this connection", "Ask the DBA to allow the bot's host/user."
    return "the connection failed", "Check the URL, network and credentials."


def describe_url(url: str) -> str:
    """host:port/db for messages — no user, no password."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "localhost"
        port = f":{parts.port}" if parts.port else ""
        return f"{host}{port}{parts.path or ''}"
    except ValueError:
        return mask_url(url)


def connect(url: str, *, env: str, autocommit: bool = True, app_suffix: str = "", **kwargs: Any) -> psycopg.Connection:
    """Open a connection to ``env`` ("prod"/"staging"), or raise ConnectionFailed."""
    register(urlsplit(url).password if "://" in url else None)
    try:
        conn = psycopg.connect(
            url,
            autocommit=autocommit,
            connect_timeout=CONNECT_TIMEOUT_S,
            application_name=application_name(app_suffix),
            **kwargs,
        )
        _WHERE[conn] = Where(env, conn.info.user, conn.info.dbname)
        return conn
    except psycopg.OperationalError as exc:
        reason, next_step = _why(str(exc))
        raise ConnectionFailed(f"Could not connect to {env} ({describe_url(url)}): {reason}.", next_step) from None
    except psycopg.ProgrammingError as exc:  # a malformed conninfo string
        raise ConnectionFailed(
            f"The {env} database URL is malformed ({type(exc).__name__}).",
            "Expected postgres://user@host:5432/dbname.",
        ) from None


@contextmanager
def connection(url: str, *, env: str, **kwargs: Any) -> Iterator[psycopg.Connection]:
    conn = connect(url, env=env, **kwargs)
    try:
        yield conn
    except psycopg.Error as exc:
        _mark(exc, conn)
        raise
    finally:
        conn.close()


# -- which database an error came from (for ``bot.errors.database_error``) -----------------------------

@dataclass(frozen=True)
class Where:
    """What a connection was opened as: its environment, role and database."""

    env: str
    role: str
    database: str
    sure: bool = True  # False: only the innermost open connection when the error passed by, not its source


_WHERE: "weakref.WeakKeyDictionary[psycopg.Connection, Where]" = weakref.WeakKeyDictionary()
_ERROR_WHERE = "_migrate_bot_where"


def where_of(conn: psycopg.Connection) -> Where | None:
    """The env, role and database ``conn`` was opened for by ``connect`` (None for other connections)."""
    return _WHERE.get(conn)


def error_where(exc: BaseException) -> Where | None:
    """Where a psycopg error passing out of ``connection()`` came from, as well as can be told."""
    return getattr(exc, _ERROR_WHERE, None)


def _mark(exc: psycopg.Error, conn: psycopg.Connection) -> None:
    """Tag an error leaving ``connection()`` with that connection's env.

    psycopg errors do not carry their connection, so: the connection the
    error broke is surely its source; otherwise the innermost open
    connection it passed is the best guess, and an outer one it broke wins.
    """
    found = _WHERE.get(conn)
    if found is None:
        return
    known = error_where(exc)
    if known is None or (not known.sure and conn.broken):
        setattr(exc, _ERROR_WHERE, replace(found, sure=conn.broken))


def database_error(exc: BaseException, *, step: str = "", conn: psycopg.Connection | None = None,
                   **hints: str) -> DatabaseFailed:
    """``bot.errors.database_error`` with the env, role and database filled in from ``conn`` or the error's tag."""
    found = (where_of(conn) if conn is not None else None) or error_where(exc)
    if found is not None:
        hints = {"env": found.env, "role": found.role, **hints}
    return errors.database_error(exc, step=step, **hints)


def rows(conn: psycopg.Connection, query: str | sql.Composable, params: Any = None) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, params)
        return cur.fetchall() if cur.description else []


def scalar(conn: psycopg.Connection, query: str | sql.Composable, params: Any = None) -> Any:
    with conn.cursor() as cur:
        cur.execute(query, params)
        row = cur.fetchone()
        return row[0] if row else None


def with_dbname(url: str, dbname: str) -> str:
    """The same server and credentials, another database (psycopg's conninfo tools)."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(url)
    params["dbname"] = dbname
    return make_conninfo(**params)


def same_database(url_a: str, url_b: str) -> bool:
    """Whether two URLs name the same server and database (for refresh safety)."""
    from psycopg.conninfo import conninfo_to_dict

    def key(url: str) -> tuple[str, str, str]:
        params = conninfo_to_dict(url)
        host = str(params.get("host") or "localhost").lower()
        if host in ("127.0.0.1", "::1", "localhost"):
            host = "localhost"
        return host, str(params.get("port") or "5432"), str(params.get("dbname") or params.get("user") or "")

    return key(url_a) == key(url_b)
