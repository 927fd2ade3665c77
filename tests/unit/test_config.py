"""Config: unknown keys and bad values are refused by name; inline passwords never accepted."""

from __future__ import annotations

import pytest

from bot import config
from bot.errors import ConfigError


def test_defaults_need_no_file() -> None:
    s = config.parse_settings("")
    assert s.databases.prod == "env:PROD_DATABASE_URL"
    assert s.gate.required_extensions == ["pg_trgm", "citext", "uuid-ossp"]
    assert s.deploy.cleanup_hold_days == 7


@pytest.mark.parametrize(
    ("text", "sentence"),
    [
        ("[gate]\nlock_timeout = 2", "Unknown config key 'gate.lock_timeout'."),
        ("[gatee]\nx = 1", "Unknown config key 'gatee'."),
        ("[gate]\nlock_retries = 'five'", "Config key 'gate.lock_retries' must be a whole number, not 'five'."),
        ("[gate]\ninstall_extensions = 1", "Config key 'gate.install_extensions' must be true or false, not 1."),
        ("[gate]\nrequired_extensions = 'citext'", "Config key 'gate.required_extensions' must be a list of strs, not 'citext'."),
        ("[migrations]\nformat = 'liquibase'", "Config key 'migrations.format' must be one of"),
        ("gate = 3", "Config key 'gate' must be a table ([gate])."),
        ("[gate\n", "is not valid TOML"),
    ],
)
def test_bad_config_is_refused_with_the_key(text: str, sentence: str) -> None:
    with pytest.raises(ConfigError) as err:
        config.parse_settings(text, "migrate-bot.toml")
    assert sentence in str(err.value)


def test_inline_password_is_refused_and_not_repeated() -> None:
    with pytest.raises(ConfigError) as err:
        config.parse_settings('[databases]\nprod = "postgres://app:hunter2-xyz@db:5432/app"')
    assert "password written into the config file" in str(err.value)
    assert "hunter2-xyz" not in str(err.value)


def test_url_without_password_is_allowed() -> None:
    s = config.parse_settings('[databases]\nstaging = "postgres://app@staging-db:5432/app"')
    assert s.databases.staging == "postgres://app@staging-db:5432/app"


def test_float_accepts_integers() -> None:
    assert config.parse_settings("[gate]\nlock_timeout_s = 3").gate.lock_timeout_s == 3.0


def test_missing_explicit_file(tmp_path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        config.load(str(tmp_path / "nope.toml"))


def test_env_points_at_file(tmp_path, monkeypatch) -> None:
    path = tmp_path / "bot.toml"
    path.write_text("[gate]\nlock_retries = 9\n")
    monkeypatch.setenv("MIGRATE_BOT_CONFIG", str(path))
    assert config.load(None).gate.lock_retries == 9


def test_migrations_flag_overrides_file(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MIGRATE_BOT_CONFIG", raising=False)
    (tmp_path / "migrate-bot.toml").write_text("[migrations]\ndir = 'db'\n")
    assert config.load(None, migrations_dir="other").migrations.dir == "other"
    assert config.load(None).migrations.dir == "db"


@pytest.mark.parametrize(
    ("text", "sentence"),
    [
        ('[deploy]\nwindows = ["Tue-Thx 02:00-04:00"]',
         'deploy.windows entry "Tue-Thx 02:00-04:00" is not understood'),
        ('[deploy]\nfreezes = ["2026-12-20 .. 2026-12-01"]', 'deploy.freezes entry "2026-12-20 .. 2026-12-01"'),
        ('[deploy]\ntimezone = "Mars/Olympus"', "deploy.timezone"),
        ('[deploy]\non_window_close = "stop"', "Config key 'deploy.on_window_close' must be"),
        ("[deploy]\nestimate_margin = 0.5", "Config key 'deploy.estimate_margin' must be at least 1."),
        ("[deploy]\nquiet_wait_minutes = -1", "Config key 'deploy.quiet_wait_minutes' must not be negative."),
    ],
)
def test_bad_deploy_windows_are_refused_at_start_up(text: str, sentence: str) -> None:
    with pytest.raises(ConfigError) as err:
        config.parse_settings(text, "migrate-bot.toml")
    assert sentence in str(err.value)


def test_the_issue_example_windows_are_accepted() -> None:
    s = config.parse_settings('[deploy]\nwindows = ["Tue-Thu 02:00-04:00 America/New_York", "Sat 01:00-05:00"]\n'
                              'freezes = ["2026-12-20 00:00 .. 2027-01-04 00:00 Europe/Berlin"]\ntimezone = "UTC"\n')
    assert s.deploy.windows[0] == "Tue-Thu 02:00-04:00 America/New_York" and s.deploy.on_window_close == "finish-current"
