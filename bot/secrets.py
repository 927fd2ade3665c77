"""Secret references -> values, fetched when a run starts, held in memory only.

Config never holds a credential, only a reference to one:

    env:NAME                   an environment variable (injected by a secret store, or `read -s`)
    file:/path                 a file (Kubernetes/Docker secrets mount)
    aws-sm:secret-id[#key]     AWS Secrets Manager; `#key` picks a field of a JSON secret
    vault:path#key             HashiCorp Vault KV v2 (VAULT_ADDR, VAULT_TOKEN, VAULT_KV_MOUNT=secret)

Every value fetched is registered for redaction before it is returned, so no
later log line, message or file can carry it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from bot.errors import SecretError
from bot.redact import register

SCHEMES = ("env", "file", "aws-sm", "vault")


@dataclass(frozen=True)
class SecretRef:
    scheme: str  # one of SCHEMES, or "literal" for a plain value without credentials
    target: str
    key: str | None = None

    def describe(self) -> str:
        """A safe description for messages: never the value, only where it lives."""
        if self.scheme == "literal":
            return "the value written in the config"
        suffix = f"#{self.key}" if self.key else ""
        return f"{self.scheme}:{self.target}{suffix}"


def parse_ref(text: str) -> SecretRef:
    """Split ``scheme:target#key``; anything without a known scheme is a literal."""
    scheme, sep, rest = text.partition(":")
    if not sep or scheme not in SCHEMES:
        return SecretRef("literal", text)
    target, _, key = rest.partition("#")
    if scheme in ("env", "file"):
        return SecretRef(scheme, rest)
    return SecretRef(scheme, target, key or None)


def url_has_password(url: str) -> bool:
    try:
        return bool(urlsplit(url).password)
    except ValueError:
        return False


def resolve(ref_text: str, *, what: str) -> str:
    """Fetch the value behind a reference; ``what`` names it in error messages."""
    ref = parse_ref(ref_text)
    fetch = {
        "env": _from_env,
        "file": _from_file,
        "aws-sm": _from_aws,
        "vault": _from_vault,
        "literal": lambda r, w: r.target,
    }[ref.scheme]
    value = fetch(ref, what)
    register(value)
    return value


def _from_env(ref: SecretRef, what: str) -> str:
    value = os.environ.get(ref.target)
    if not value:
        raise SecretError(
            f"The environment variable {ref.target} is not set, so there is no {what}.",
            f"Export it (e.g. `read -s {ref.target}; export {ref.target}`) or point the config at your secret store.",
        )
    return value


def _from_file(ref: SecretRef, what: str) -> str:
    path = Path(ref.target)
    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise SecretError(
            f"Could not read the {what} from {path}: {exc.strerror or exc}.",
            "Check that the secret file is mounted and readable by the bot.",
        ) from None
    if not value:
        raise SecretError(f"The secret file {path} for the {what} is empty.", "Write the value into it.")
    return value


def _pick_key(raw: str, ref: SecretRef, what: str) -> str:
    if not ref.key:
        return raw
    try:
        data = json.loads(raw)
        value = data[ref.key]
    except (ValueError, TypeError, KeyError):
        raise SecretError(
            f"The secret {ref.describe()} has no field '{ref.key}' for the {what}.",
            "Store the secret as JSON with that field, or drop '#key' from the reference.",
        ) from None
    return str(value)


def _from_aws(ref: SecretRef, what: str) -> str:
    import boto3  # imported here: only deployments that use AWS pay for it
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        client = boto3.client("secretsmanager")
        raw = client.get_secret_value(SecretId=ref.target)["SecretString"]
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "error")
        raise SecretError(
            f"AWS Secrets Manager refused {ref.describe()} for the {what} ({code}).",
            "Check the secret id, the region (AWS_REGION) and the bot's IAM permissions.",
        ) from None
    except (BotoCoreError, KeyError) as exc:
        raise SecretError(
            f"Could not reach AWS Secrets Manager for the {what}: {type(exc).__name__}.",
            "Check AWS_REGION, credentials and network access.",
        ) from None
    return _pick_key(raw, ref, what)


def _from_vault(ref: SecretRef, what: str) -> str:
    import hvac  # imported here: only deployments that use Vault pay for it
    from hvac import exceptions as vault_errors
    from requests.exceptions import RequestException

    if not ref.key:
        raise SecretError(
            f"The Vault reference {ref.describe()} for the {what} names no field.",
            "Write it as vault:path#field.",
        )
    addr = os.environ.get("VAULT_ADDR")
    if not addr:
        raise SecretError(f"VAULT_ADDR is not set, so the {what} cannot be read from Vault.", "Export VAULT_ADDR and VAULT_TOKEN.")
    client = hvac.Client(url=addr, token=os.environ.get("VAULT_TOKEN"), timeout=10)
    mount = os.environ.get("VAULT_KV_MOUNT", "secret")
    try:
        data = client.secrets.kv.v2.read_secret_version(path=ref.target, mount_point=mount, raise_on_deleted_version=True)
        return str(data["data"]["data"][ref.key])
    except KeyError:
        raise SecretError(f"The Vault secret {ref.describe()} has no field '{ref.key}'.", "Check the field name.") from None
    except (vault_errors.VaultError, RequestException) as exc:
        raise SecretError(
            f"Vault refused {ref.describe()} for the {what} ({type(exc).__name__}).",
            "Check VAULT_ADDR, VAULT_TOKEN and the policy for that path.",
        ) from None
