"""The PostgreSQL state store's own schema: numbered steps, applied on start, once, by whichever replica comes first.

Every table lives in the ``migrate_bot_state`` schema, beside a version table
that says which steps have been applied. A step is applied in its own
transaction together with its version row (alembic's rule), under
``pg_advisory_xact_lock(LOCK_KEY)``: replicas starting at once queue on the
lock, and each re-reads the version after taking it, so no step is ever
applied twice. A database whose version is newer than the last step here was
set up by a newer migrate-bot; this one refuses it rather than guess.

New steps are appended, never edited: a deployed database has already run
the old ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from bot.errors import ConfigError

SCHEMA = "migrate_bot_state"
VERSIONS = f"{SCHEMA}.schema_version"
LOCK_KEY = 0x6D62_5354_4154_4501  # "mbSTATE" + 1: pg_advisory_xact_lock's key for schema changes


@dataclass(frozen=True)
class Step:
    version: int
    what: str
    sql: str


STEPS: tuple[Step, ...] = (
    Step(1, "runs, approvals, ledger, leases, processes, events, jobs, outbox, samples", f"""
CREATE TABLE {SCHEMA}.validations (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    fingerprint text NOT NULL,
    passed boolean NOT NULL,
    env text NOT NULL,
    run_id text NOT NULL DEFAULT '',
    "commit" text NOT NULL DEFAULT '',
    migrations jsonb NOT NULL,
    report text NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE INDEX validations_passing ON {SCHEMA}.validations (fingerprint, id) WHERE passed;

CREATE TABLE {SCHEMA}.deploys (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    fingerprint text NOT NULL,
    ok boolean NOT NULL,
    run_id text NOT NULL DEFAULT '',
    applied jsonb NOT NULL,
    held jsonb NOT NULL,
    report text NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE INDEX deploys_created_at ON {SCHEMA}.deploys (created_at);

CREATE TABLE {SCHEMA}.runs (
    id text PRIMARY KEY,
    seq bigint GENERATED ALWAYS AS IDENTITY,
    kind text NOT NULL,
    state text NOT NULL,
    requested_by text NOT NULL,
    channel text NOT NULL DEFAULT '',
    thread_ts text NOT NULL DEFAULT '',
    fingerprint text NOT NULL DEFAULT '',
    "commit" text NOT NULL DEFAULT '',
    ref text NOT NULL DEFAULT '',
    parent text NOT NULL DEFAULT '',
    summary text NOT NULL DEFAULT '',
    report text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    scheduled_for timestamptz,
    owner text NOT NULL DEFAULT '',
    data jsonb NOT NULL DEFAULT '{{}}'
);
CREATE INDEX runs_newest ON {SCHEMA}.runs (created_at DESC, seq DESC);
CREATE INDEX runs_state ON {SCHEMA}.runs (state, created_at, seq);
CREATE INDEX runs_thread ON {SCHEMA}.runs (channel, thread_ts);

CREATE TABLE {SCHEMA}.approvals (
    run_id text NOT NULL,
    "user" text NOT NULL,
    seq bigint GENERATED ALWAYS AS IDENTITY,
    verdict text NOT NULL,
    fingerprint text NOT NULL,
    created_at timestamptz NOT NULL,
    revoked_at timestamptz,
    PRIMARY KEY (run_id, "user")
);

CREATE TABLE {SCHEMA}.leases (
    name text COLLATE "C" PRIMARY KEY,
    owner text NOT NULL,
    run_id text NOT NULL DEFAULT '',
    acquired_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX leases_owner ON {SCHEMA}.leases (owner);

CREATE TABLE {SCHEMA}.processes (
    owner text PRIMARY KEY,
    host text NOT NULL,
    pid integer NOT NULL,
    started_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL
);

CREATE TABLE {SCHEMA}.seen_events (
    id text PRIMARY KEY,
    seen_at timestamptz NOT NULL
);
CREATE INDEX seen_events_seen_at ON {SCHEMA}.seen_events (seen_at);

CREATE TABLE {SCHEMA}.jobs (
    id text COLLATE "C" PRIMARY KEY,
    next_run_time double precision,
    state bytea NOT NULL
);
CREATE INDEX jobs_due ON {SCHEMA}.jobs (next_run_time, id);

CREATE TABLE {SCHEMA}.outbox (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind text NOT NULL,
    thread text NOT NULL DEFAULT '',
    key text NOT NULL DEFAULT '',
    payload jsonb NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    next_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL,
    last_error text NOT NULL DEFAULT '',
    claimed_by text NOT NULL DEFAULT '',
    claim_expires timestamptz
);
CREATE INDEX outbox_key ON {SCHEMA}.outbox (key) WHERE key <> '';

CREATE TABLE {SCHEMA}.samples (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    series text NOT NULL,
    source text NOT NULL,
    taken_at timestamptz NOT NULL,
    data jsonb NOT NULL
);
CREATE INDEX samples_series ON {SCHEMA}.samples (series, source, taken_at, id);
"""),
    Step(2, "the gate settings a validation ran under", f"""
ALTER TABLE {SCHEMA}.validations ADD COLUMN gate_settings jsonb;
"""),
)

LATEST = STEPS[-1].version


def version(conn: psycopg.Connection) -> int:
    """The schema version the database is at (0: no migrate-bot state here yet)."""
    found = conn.execute("SELECT to_regclass(%s) IS NOT NULL", [VERSIONS]).fetchone()
    if not found or not found[0]:
        return 0
    row = conn.execute(f"SELECT coalesce(max(version), 0) FROM {VERSIONS}").fetchone()
    return int(row[0]) if row else 0


def migrate(conn: psycopg.Connection, where: str) -> list[int]:
    """Bring the state schema up to ``LATEST`` (an autocommit connection); returns the versions this call applied.

    Each pass takes the advisory lock in a new transaction, reads the version
    under it, and applies the one step that follows (or nothing): a replica
    that waited on the lock finds the steps the first one applied and skips them.
    """
    if _refuse_newer(version(conn), where) == LATEST:
        return []  # the usual start: up to date, no lock taken
    applied: list[int] = []
    while True:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", [LOCK_KEY])
            _create_schema(conn, where)
            current = _refuse_newer(version(conn), where)
            if current == LATEST:
                return applied
            step = next(s for s in STEPS if s.version > current)
            conn.execute(step.sql)
            conn.execute(f"INSERT INTO {VERSIONS} (version, what) VALUES (%s, %s)", [step.version, step.what])
        applied.append(step.version)


def _refuse_newer(current: int, where: str) -> int:
    if current > LATEST:
        raise ConfigError(
            f"The state database ({where}) was set up by a newer migrate-bot (state schema version {current}; "
            f"this one knows up to {LATEST}): upgrade migrate-bot.",
            "Every replica sharing state.url must run that version or newer.",
        )
    return current


def _create_schema(conn: psycopg.Connection, where: str) -> None:
    """The schema and the version table (under the lock, so two first starts cannot both create them)."""
    exists = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", [SCHEMA]).fetchone()
    try:
        if not exists:  # … IF NOT EXISTS would still want the CREATE privilege, even with nothing to create
            conn.execute(f"CREATE SCHEMA {SCHEMA}")
        if not conn.execute("SELECT to_regclass(%s) IS NOT NULL", [VERSIONS]).fetchone()[0]:
            conn.execute(f"CREATE TABLE {VERSIONS} (version integer PRIMARY KEY, what text NOT NULL, "
                         "applied_at timestamptz NOT NULL DEFAULT now())")
    except psycopg.errors.InsufficientPrivilege:
        raise ConfigError(
            f"The state database user may not create the schema {SCHEMA} in {where}.",
            f"Grant it CREATE on that database, or create the schema {SCHEMA} owned by that user.",
        ) from None
