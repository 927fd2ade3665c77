"""Typed settings: a TOML file plus the environment.

Where the file comes from: ``--config``, else ``MIGRATE_BOT_CONFIG``, else
``./migrate-bot.toml`` if it exists, else no file at all — then
``PROD_DATABASE_URL``, ``STAGING_DATABASE_URL`` and ``--migrations DIR`` are
enough to run. Unknown keys and values of the wrong type are refused with the
key's dotted name and what was expected, because a typo in a production
tool's config must never silently fall back to a default.

Database URLs in the file are secret *references* (see ``bot.secrets``); a
literal URL carrying a password is refused.
"""

from __future__ import annotations

import os
import tomllib
import typing
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from bot.errors import ConfigError
from bot.secrets import parse_ref, url_has_password

DEFAULT_FILE = "migrate-bot.toml"


@dataclass(frozen=True)
class Databases:
    prod: str = "env:PROD_DATABASE_URL"
    staging: str = "env:STAGING_DATABASE_URL"


@dataclass(frozen=True)
class Migrations:
    dir: str = "migrations"
    format: str = "auto"  # auto | plain | prisma | flyway | golang-migrate | dbmate
    repo: str = ""  # git URL or path; empty = use `dir` as is
    path: str = ""  # folder inside the repo
    branch: str = ""  # default ref; empty = the repo's default branch


@dataclass(frozen=True)
class Gate:
    required_extensions: list[str] = field(default_factory=lambda: ["pg_trgm", "citext", "uuid-ossp"])
    install_extensions: bool = False
    lock_timeout_s: float = 2.0  # the longest one lock attempt waits; attempts start at 0.1 s and double towards it
    lock_retries: int = 0  # at most this many lock retries per statement; 0 = as many as lock_wait_s allows
    lock_backoff_s: float = 0.5  # the longest pause between lock attempts (about 2x the attempt, jittered)
    lock_wait_s: float = 90.0  # how long one statement (or transactional file) keeps trying for its locks
    statement_timeout_s: float = 0.0  # 0 = no limit
    idle_in_transaction_minutes: int = 5
    connections_needed: int = 5  # headroom the run itself needs (pool during VALIDATE)
    lock_budget_s: float = 2.0  # longest a read/write-blocking lock may be held on staging
    transaction_budget_s: float = 15.0
    migration_budget_s: float = 180.0
    perf_regression_pct: float = 20.0
    perf_queries: int = 20  # prod's top N queries (pg_stat_statements) re-planned on staging; 0 = off
    perf_min_calls: int = 50  # a statement with fewer calls on prod is not hot
    perf_measure: bool = True  # also run the hot statements before/after on staging (A/B), not only plan them
    perf_samples: int = 7  # paired before/after executions per statement (twice as many when re-measured)
    perf_statement_timeout_s: float = 5.0  # one measured execution longer than this is cut off (and said)
    perf_workload: str = "perf/workload.sql"  # pinned statements, relative to the migrations folder; optional
    lint: bool = True


@dataclass(frozen=True)
class Deploy:
    cleanup_hold_days: int = 7
    require_env_flag: bool = True  # STAGING_VALIDATION_PASSED=true, as the runbook says
    validation_max_age_hours: float = 72.0  # an older pass proves little about today's data; 0 = no limit
    windows: list[str] = field(default_factory=list)  # "Tue-Thu 02:00-04:00 America/New_York"; empty = any time
    freezes: list[str] = field(default_factory=list)  # "2026-12-20 00:00 .. 2027-01-04 00:00 Europe/Berlin"
    timezone: str = "UTC"  # for window and freeze entries that name none
    on_window_close: str = "finish-current"  # or "abort": cancel the migration in progress at the window's end
    estimate_margin: float = 1.5  # the staging timings are multiplied by this (and scaled to prod's sizes)
    estimate_floor_s: float = 60.0  # the least time a deploy is planned for: connecting, preflight, spot checks
    max_active_sessions: int = 50  # prod is "quiet enough" at fire time with at most this many active sessions
    max_idle_in_transaction: int = 0  # … and at most this many idle-in-transaction sessions locking the set's tables
    quiet_wait_minutes: int = 15  # how long to wait inside the window for prod to be quiet before re-planning
    traffic_sample_minutes: int = 60  # pg_stat_database samples for `windows`; 0 = off


REFRESH_METHODS = ("dump", "template", "command")


@dataclass(frozen=True)
class Refresh:
    method: str = "dump"  # dump (pg_dump | pg_restore) | template (CREATE DATABASE … TEMPLATE) | command (your script)
    mask: list[str] = field(default_factory=list)  # "table.column" (or "schema.table.column")
    jobs: int = 0  # dump only: 0 = choose from the catalog
    staging_maintenance_db: str = "postgres"
    template: str = ""  # template only: the prod copy on the staging server — a database name or a secret reference
    command: str = ""  # command only: the script that makes the copy on the staging server (split like a shell)
    timeout_s: float = 3600.0  # command only: the script's whole process group is killed after this long
    target: str = ""  # command only: a secret reference to the copy's URL; empty = the script's last stdout line
    stale_after_hours: float = 24.0  # the gate warns when staging's copy is older than this


@dataclass(frozen=True)
class Digest:
    channel: str = ""  # where the daily pg_stat_statements digest goes; empty = no scheduled digest
    at: str = "09:00"  # local time of day (HH:MM)
    timezone: str = "UTC"
    databases: list[str] = field(default_factory=lambda: ["prod"])  # environments: prod, staging
    top: int = 10  # statements listed by total time
    regression_pct: float = 20.0  # mean time up more than this (with enough calls) is a regression
    min_calls: int = 50  # calls in the period for a statement's mean to count
    snapshot_minutes: int = 60  # pg_stat_statements snapshots into the state store; 0 = only when a digest is made
    keep_days: int = 35  # snapshots older than this are pruned


@dataclass(frozen=True)
class State:
    path: str = ".migrate-bot/state.db"  # the sqlite file (one process); $MIGRATE_BOT_STATE overrides
    url: str = ""  # a secret reference (env:STATE_DATABASE_URL, …) to a PostgreSQL database shared by replicas


RUN_WORKERS = ("processes", "threads")


@dataclass(frozen=True)
class Runs:
    workers: str = "processes"  # validate, refresh and deploy in a child process each; "threads" = in the bot's own


@dataclass(frozen=True)
class Slack:
    bot_token: str = "env:SLACK_BOT_TOKEN"
    signing_secret: str = "env:SLACK_SIGNING_SECRET"
    app_token: str = ""  # set (e.g. env:SLACK_APP_TOKEN) for Socket Mode
    api_url: str = ""  # SLACK_API_URL overrides
    channels: list[str] = field(default_factory=list)  # empty = any channel the bot is in
    approve_reaction: str = "white_check_mark"
    reject_reaction: str = "x"


@dataclass(frozen=True)
class Policy:
    approvers: list[str] = field(default_factory=list)  # user ids (U…) or user groups (S…)
    approvals_required: int = 1
    validators: list[str] = field(default_factory=list)  # empty = anyone in an allowed channel
    deployers: list[str] = field(default_factory=list)  # empty = approvers and the requester


@dataclass(frozen=True)
class Settings:
    databases: Databases = field(default_factory=Databases)
    migrations: Migrations = field(default_factory=Migrations)
    gate: Gate = field(default_factory=Gate)
    deploy: Deploy = field(default_factory=Deploy)
    refresh: Refresh = field(default_factory=Refresh)
    digest: Digest = field(default_factory=Digest)
    state: State = field(default_factory=State)
    runs: Runs = field(default_factory=Runs)
    slack: Slack = field(default_factory=Slack)
    policy: Policy = field(default_factory=Policy)
    source: str = "defaults"  # where these settings came from, for messages


def _expected(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is list:
        return f"a list of {typing.get_args(tp)[0].__name__}s"
    return {str: "a string", int: "a whole number", float: "a number", bool: "true or false"}.get(tp, str(tp))


def _check_value(key: str, tp: Any, value: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin is list:
        (item,) = typing.get_args(tp)
        if isinstance(value, list) and all(isinstance(v, item) for v in value):
            return list(value)
    elif tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    elif tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    elif isinstance(value, tp):
        return value
    raise ConfigError(
        f"Config key '{key}' must be {_expected(tp)}, not {value!r}.",
        "Fix the value in the config file.",
    )


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    for key in data:
        if key not in known:
            raise ConfigError(
                f"Unknown config key '{prefix}{key}'.",
                f"Known keys in [{prefix.rstrip('.') or 'top level'}]: {', '.join(sorted(known))}.",
            )
    values = {}
    for key, value in data.items():
        tp = hints[key]
        if isinstance(tp, type) and hasattr(tp, "__dataclass_fields__"):
            if not isinstance(value, dict):
                raise ConfigError(f"Config key '{prefix}{key}' must be a table ([{prefix}{key}]).", "")
            values[key] = _build(tp, value, f"{prefix}{key}.")
        else:
            values[key] = _check_value(f"{prefix}{key}", tp, value)
    return cls(**values)


def _refuse_inline_passwords(settings: Settings) -> None:
    urls = [(f"databases.{name}", getattr(settings.databases, name), f"{name.upper()}_DATABASE_URL")
            for name in ("prod", "staging")]
    for key, value, variable in [*urls, ("state.url", settings.state.url, "STATE_DATABASE_URL")]:
        ref = parse_ref(value)
        if ref.scheme == "literal" and url_has_password(ref.target):
            raise ConfigError(
                f"{key} contains a password written into the config file.",
                f"Credentials belong in a secret store: use env:{variable}, file:, aws-sm: or vault: "
                "instead, and rotate that password, since it has been on disk.",
            )


def _validate(settings: Settings) -> None:
    _refuse_inline_passwords(settings)
    from bot.migrations.source import FORMATS  # the one list of layouts the source reads

    if settings.migrations.format not in FORMATS:
        raise ConfigError(
            f"Config key 'migrations.format' must be one of {', '.join(FORMATS)}, not {settings.migrations.format!r}.",
            "",
        )
    if settings.gate.lock_wait_s < 0:
        raise ConfigError("Config key 'gate.lock_wait_s' must not be negative.", "Try 90.")
    if settings.gate.lock_retries < 0:
        raise ConfigError("Config key 'gate.lock_retries' must not be negative.", "0 = no count limit (lock_wait_s decides).")
    if settings.gate.lock_backoff_s < 0:
        raise ConfigError("Config key 'gate.lock_backoff_s' must not be negative.", "Try 0.5.")
    if settings.gate.lock_timeout_s <= 0:
        raise ConfigError("Config key 'gate.lock_timeout_s' must be greater than 0.", "Try 2.")
    if settings.policy.approvals_required < 1:
        raise ConfigError("Config key 'policy.approvals_required' must be at least 1.", "")
    _validate_deploy(settings.deploy)
    _validate_digest(settings.digest)
    _validate_refresh(settings.refresh)
    if settings.runs.workers not in RUN_WORKERS:
        raise ConfigError(f"Config key 'runs.workers' must be \"processes\" or \"threads\", not {settings.runs.workers!r}.",
                          "processes (the default) keeps the bot's answers fast while runs work; threads runs them "
                          "inside the bot's own process.")


def _validate_deploy(deploy: Deploy) -> None:
    from bot.runs.windows import parse_calendar  # the one parser of windows; refuses bad entries at start-up

    parse_calendar(deploy.windows, deploy.freezes, deploy.timezone)
    if deploy.on_window_close not in ("finish-current", "abort"):
        raise ConfigError(f"Config key 'deploy.on_window_close' must be \"finish-current\" or \"abort\", "
                          f"not {deploy.on_window_close!r}.",
                          "finish-current lets the migration in progress finish; abort cancels it at the window's end.")
    if deploy.estimate_margin < 1:
        raise ConfigError("Config key 'deploy.estimate_margin' must be at least 1.", "Try 1.5.")
    for key in ("max_active_sessions", "max_idle_in_transaction", "quiet_wait_minutes", "traffic_sample_minutes",
                "estimate_floor_s"):
        if getattr(deploy, key) < 0:
            raise ConfigError(f"Config key 'deploy.{key}' must not be negative.", "")


def _validate_refresh(refresh: Refresh) -> None:
    for column in refresh.mask:
        if column.count(".") not in (1, 2):
            raise ConfigError(
                f"refresh.mask entry {column!r} must be table.column or schema.table.column.", ""
            )
    if refresh.method not in REFRESH_METHODS:
        raise ConfigError(f"Config key 'refresh.method' must be one of {', '.join(REFRESH_METHODS)}, "
                          f"not {refresh.method!r}.",
                          "dump copies prod with pg_dump | pg_restore; template and command copy a prod copy that "
                          "already lives on the staging server.")
    needed = {"template": "template", "command": "command"}.get(refresh.method)
    if needed and not getattr(refresh, needed).strip():
        raise ConfigError(f"refresh.method = \"{refresh.method}\" needs refresh.{needed}.",
                          "Set it (see \"Refresh through your clone engine\" in the README).")
    for key, method, default in (("template", "template", ""), ("command", "command", ""), ("target", "command", ""),
                                 ("jobs", "dump", 0)):
        if getattr(refresh, key) != default and refresh.method != method:
            raise ConfigError(f"refresh.{key} is set, but it is used only with refresh.method = \"{method}\" "
                              f"(the method is \"{refresh.method}\").",
                              f"Set refresh.method = \"{method}\" or remove refresh.{key}.")
    for key in ("template", "target"):
        ref = parse_ref(getattr(refresh, key))
        if ref.scheme == "literal" and url_has_password(ref.target):
            raise ConfigError(f"refresh.{key} contains a password written into the config file.",
                              "Credentials belong in a secret store: use env:, file:, aws-sm: or vault: instead, "
                              "and rotate that password, since it has been on disk.")
    if refresh.timeout_s <= 0:
        raise ConfigError("Config key 'refresh.timeout_s' must be greater than 0.", "Try 3600 (an hour).")
    if refresh.stale_after_hours <= 0:
        raise ConfigError("Config key 'refresh.stale_after_hours' must be greater than 0.", "Try 24.")


def _validate_digest(digest: Digest) -> None:
    import re
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    if not re.fullmatch(r"([01]?\d|2[0-3]):[0-5]\d", digest.at):
        raise ConfigError(f"Config key 'digest.at' must be a time of day as HH:MM, not {digest.at!r}.", "Try \"09:00\".")
    try:
        ZoneInfo(digest.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"Config key 'digest.timezone' must be an IANA time zone, not {digest.timezone!r}.",
                          'e.g. "Europe/Berlin" or "UTC".') from None
    unknown = [d for d in digest.databases if d not in ("prod", "staging")]
    if unknown or not digest.databases:
        raise ConfigError(f"Config key 'digest.databases' must list prod and/or staging, not {digest.databases!r}.",
                          "")
    for key in ("top", "min_calls", "snapshot_minutes", "keep_days"):
        if getattr(digest, key) < 0:
            raise ConfigError(f"Config key 'digest.{key}' must not be negative.", "")


def find_config_file(explicit: str | None) -> Path | None:
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"The config file {path} does not exist.", "Check the --config path.")
        return path
    env = os.environ.get("MIGRATE_BOT_CONFIG")
    if env:
        path = Path(env)
        if not path.is_file():
            raise ConfigError(f"MIGRATE_BOT_CONFIG points at {path}, which does not exist.", "Fix or unset it.")
        return path
    default = Path(DEFAULT_FILE)
    return default if default.is_file() else None


def parse_settings(text: str, source: str = "<string>") -> Settings:
    """Parse TOML text into Settings (pure; used by tests and `load`)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"The config file {source} is not valid TOML: {exc}.", "Fix the syntax.") from None
    settings = _build(Settings, data, "")
    settings = replace(settings, source=source)
    _validate(settings)
    return settings


def load(config_path: str | None = None, *, migrations_dir: str | None = None, state_path: str | None = None) -> Settings:
    """Settings from the file (if any) with command-line and environment overrides applied."""
    path = find_config_file(config_path)
    if path is None:
        settings = Settings(source="environment")
    else:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"Could not read the config file {path}: {exc.strerror}.", "") from None
        settings = parse_settings(text, str(path))
    if migrations_dir:
        settings = replace(settings, migrations=replace(settings.migrations, dir=migrations_dir))
    if state_path or os.environ.get("MIGRATE_BOT_STATE"):
        path = state_path or os.environ["MIGRATE_BOT_STATE"]
        settings = replace(settings, state=replace(settings.state, path=path))  # state.url, when set, still wins
    api_url = os.environ.get("SLACK_API_URL")
    if api_url:
        settings = replace(settings, slack=replace(settings.slack, api_url=api_url))
    return settings

