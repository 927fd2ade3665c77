"""Secret references resolved against real stores: env, file, AWS Secrets Manager (moto server), Vault KV v2."""

from __future__ import annotations

import json

import pytest

from bot.errors import SecretError
from bot.redact import redact
from bot.secrets import parse_ref, resolve


def test_env_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOME_DB_URL", "postgres://app:env-secret-1@db/app")
    assert resolve("env:SOME_DB_URL", what="prod database URL") == "postgres://app:env-secret-1@db/app"
    assert "env-secret-1" not in redact("dsn postgres://app:env-secret-1@db/app and env-secret-1 again")


def test_missing_env_var_is_one_sentence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROD_DATABASE_URL", raising=False)
    with pytest.raises(SecretError) as err:
        resolve("env:PROD_DATABASE_URL", what="prod database URL")
    assert str(err.value).startswith("The environment variable PROD_DATABASE_URL is not set, so there is no prod database URL.")


def test_file_reference(tmp_path) -> None:
    (tmp_path / "db").write_text("postgres://app:file-secret-2@db/app\n")
    assert resolve(f"file:{tmp_path / 'db'}", what="staging database URL") == "postgres://app:file-secret-2@db/app"


def test_unreadable_file_reference(tmp_path) -> None:
    with pytest.raises(SecretError, match="Could not read the staging database URL"):
        resolve(f"file:{tmp_path / 'missing'}", what="staging database URL")


def test_aws_secret_json_key(aws_sm) -> None:
    aws_sm.create_secret(Name="prod/db", SecretString=json.dumps({"url": "postgres://app:aws-secret-3@db/app"}))
    value = resolve("aws-sm:prod/db#url", what="prod database URL")
    assert value == "postgres://app:aws-secret-3@db/app"
    assert "aws-secret-3" not in redact(f"oops {value}")


def test_aws_plain_secret(aws_sm) -> None:
    aws_sm.create_secret(Name="staging/db-url", SecretString="postgres://app:aws-secret-4@db/app")
    assert resolve("aws-sm:staging/db-url", what="staging database URL").endswith("@db/app")


def test_aws_unknown_secret_names_the_reference_not_a_value(aws_sm) -> None:
    with pytest.raises(SecretError) as err:
        resolve("aws-sm:nope/db", what="prod database URL")
    assert "AWS Secrets Manager refused aws-sm:nope/db for the prod database URL (ResourceNotFoundException)." in str(err.value)


def test_aws_missing_json_key(aws_sm) -> None:
    aws_sm.create_secret(Name="prod/other", SecretString=json.dumps({"dsn": "x"}))
    with pytest.raises(SecretError, match="has no field 'url'"):
        resolve("aws-sm:prod/other#url", what="prod database URL")


def test_vault_kv2(vault) -> None:
    vault["secret/apps/migrate-bot"] = {"prod_url": "postgres://app:vault-secret-5@db/app"}
    value = resolve("vault:apps/migrate-bot#prod_url", what="prod database URL")
    assert value == "postgres://app:vault-secret-5@db/app"
    assert "vault-secret-5" not in redact(value)


def test_vault_denied(vault, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAULT_TOKEN", "wrong-token")
    with pytest.raises(SecretError, match="Vault refused vault:apps/x#url for the prod database URL"):
        resolve("vault:apps/x#url", what="prod database URL")


def test_vault_reference_needs_a_field() -> None:
    with pytest.raises(SecretError, match="names no field"):
        resolve("vault:apps/x", what="prod database URL")


@pytest.mark.parametrize(
    ("text", "scheme", "target", "key"),
    [
        ("env:PROD_DATABASE_URL", "env", "PROD_DATABASE_URL", None),
        ("file:/run/secrets/db", "file", "/run/secrets/db", None),
        ("aws-sm:prod/db#url", "aws-sm", "prod/db", "url"),
        ("vault:apps/bot#prod", "vault", "apps/bot", "prod"),
        ("postgres://app@db/app", "literal", "postgres://app@db/app", None),
    ],
)
def test_parse_ref(text: str, scheme: str, target: str, key: str | None) -> None:
    ref = parse_ref(text)
    assert (ref.scheme, ref.target, ref.key) == (scheme, target, key)
