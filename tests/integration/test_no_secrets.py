"""Whole workflows with known passwords: none of them appears in anything the program emitted."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from bot.cli import main
from tests.fix_pg import PROD_PASSWORD, STAGING_PASSWORD, Databases

SEED = "CREATE TABLE users (id bigserial PRIMARY KEY, email text); INSERT INTO users (email) VALUES ('a@x'), (NULL);"


def everything_written(root: Path) -> bytes:
    return b"\n".join(p.read_bytes() for p in root.rglob("*") if p.is_file())


@pytest.fixture
def secret_store_config(bot_env: Databases, aws_sm, vault, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> Databases:
    """prod's URL in AWS Secrets Manager, staging's in Vault; nothing in the environment."""
    aws_sm.create_secret(Name="prod/db", SecretString=json.dumps({"url": bot_env.prod_url}))
    vault["secret/apps/migrate-bot"] = {"staging_url": bot_env.staging_url}
    monkeypatch.delenv("PROD_DATABASE_URL")
    monkeypatch.delenv("STAGING_DATABASE_URL")
    (workdir / "migrate-bot.toml").write_text(
        '[databases]\nprod = "aws-sm:prod/db#url"\nstaging = "vault:apps/migrate-bot#staging_url"\n'
        '[state]\npath = "state/state.db"\n'
    )
    monkeypatch.delenv("MIGRATE_BOT_STATE")
    return bot_env


def test_no_password_in_any_output_log_or_file(secret_store_config: Databases, make_migrations, workdir: Path,
                                                capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.DEBUG)
    secret_store_config.both(SEED)
    root = make_migrations({"0001_email_required.sql": "ALTER TABLE users ALTER COLUMN email SET NOT NULL;"})
    assert main(["-v", "validate", "--log", "out/fail.log", "--json", "out/fail.json"]) == 1
    assert main(["triage", "out/fail.json"]) == 1
    (root / "0001_email_required.sql").unlink()
    (root / "0002_orders.sql").write_text("CREATE TABLE orders (id bigserial PRIMARY KEY);")
    assert main(["-v", "validate", "--log", "out/pass.log", "--json", "out/pass.json"]) == 0
    monkeypatch.setenv("STAGING_VALIDATION_PASSED", "true")
    assert main(["-v", "deploy", "--log", "out/deploy.log", "--json", "out/deploy.json"]) == 0
    # a connection failure echoes the URL it was given: still masked
    monkeypatch.setenv("PROD_DATABASE_URL", secret_store_config.prod_url.replace("127.0.0.1", "127.0.0.2"))
    main(["validate", "--config", "/dev/null"])
    captured = capsys.readouterr()
    emitted = (captured.out + captured.err + caplog.text).encode() + everything_written(workdir)
    assert b"RESULT deploy: PASS" in emitted  # the search covers real output
    for password in (PROD_PASSWORD, STAGING_PASSWORD):
        assert password.encode() not in emitted
