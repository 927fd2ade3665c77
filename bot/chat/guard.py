"""Credential guard: does a chat message look like it carries a secret? (pure)

Returns what kind of secret it looks like, never the secret itself, so the
reply can tell the author to rotate it without repeating it.
"""

from __future__ import annotations

import re

from bot.redact import contains_secret

PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("database URL with a password", re.compile(r"\b(?:postgres(?:ql)?|mysql|mongodb(?:\+srv)?|redis)://[^\s:/@]+:[^\s@/]+@", re.I)),
    ("private key", re.compile(r"-----BEGIN (?:RSA |EC |OPENSSH |DSA )?PRIVATE KEY-----")),
    ("AWS access key", re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")),
    ("Slack token", re.compile(r"\bxox[abposr]-[0-9A-Za-z-]{10,}")),
    ("GitHub token", re.compile(r"\bgh[pousr]_[0-9A-Za-z]{30,}")),
    ("password", re.compile(r"\b(?:password|passwd|pwd|PGPASSWORD)\s*[=:]\s*\S{6,}", re.I)),
]


def looks_like_secret(text: str | None) -> str | None:
    """The kind of secret the text seems to contain, or None.

    Besides the shapes of common secrets, any value the bot itself holds (a
    database password, the signing secret) counts, pasted bare or not.
    """
    if not text:
        return None
    if contains_secret(text):
        return "credential this bot uses"
    for kind, pattern in PATTERNS:
        if pattern.search(text):
            return kind
    return None
