"""Where a step's databases are: secret references resolved at the last moment."""

from __future__ import annotations

from bot.config import Settings
from bot.secrets import resolve


def database_url(settings: Settings, env: str) -> str:
    """The URL for "prod" or "staging", fetched now and registered for redaction."""
    return resolve(getattr(settings.databases, env), what=f"{env} database URL")
