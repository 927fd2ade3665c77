"""Redaction: the last step every output passes through.

Secret values are registered the moment they are fetched (``register``); from
then on ``redact`` replaces them anywhere in a string. Independently of the
registry, any ``scheme://user:password@`` in text is masked, so a URL that
slipped past registration (a libpq error echoing a DSN, say) still leaks
nothing. Kept separate from ``secrets.py`` so that every layer — errors,
logging, renderers — can import it without pulling in boto3 or hvac.
"""

from __future__ import annotations

import logging
import re
import threading
from urllib.parse import quote, unquote

MASK = "***"
_MIN_SECRET_LEN = 4  # shorter values would mask ordinary words

_lock = threading.Lock()
_secrets: set[str] = set()

# user:password@ inside a URL; the password may not contain '@' or whitespace. The lookbehind makes a scheme
# start only where a run of scheme characters starts: without it a long run of letters (a 100 KB request
# body) is rescanned from every position, which is quadratic and froze the bot for seconds.
_URL_PASSWORD = re.compile(r"(?P<head>(?<![a-zA-Z0-9+.-])[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)(?P<pw>[^@\s/]+)(?P<at>@)")
# key=value DSN style (libpq conninfo): password=...
_DSN_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)(?P<pw>'[^']*'|\S+)", re.IGNORECASE)


def register(value: str | None) -> None:
    """Remember a secret value (and its URL-encoded forms) for redaction."""
    if not value or len(value) < _MIN_SECRET_LEN:
        return
    forms = {value, quote(value, safe=""), unquote(value)}
    with _lock:
        _secrets.update(f for f in forms if len(f) >= _MIN_SECRET_LEN)
    for part in _url_passwords(value):
        register(part)


def _url_passwords(text: str) -> list[str]:
    return [m.group("pw") for m in _URL_PASSWORD.finditer(text) if m.group("pw") != MASK]


def mask_url(url: str) -> str:
    """``postgres://user:secret@host/db`` -> ``postgres://user:***@host/db``."""
    return _URL_PASSWORD.sub(lambda m: f"{m.group('head')}{MASK}{m.group('at')}", url)


def contains_secret(text: str) -> bool:
    """Whether ``text`` carries a value the bot fetched from its secret store (a password pasted bare)."""
    if not text:
        return False
    with _lock:
        secrets = list(_secrets)
    return any(secret in text for secret in secrets)


def redact(text: str) -> str:
    """Remove every registered secret and every URL/DSN password from ``text``."""
    if not text:
        return text
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        while secret in text:  # a replacement can splice a new occurrence; each pass shrinks the text
            text = text.replace(secret, MASK)
    text = mask_url(text)
    return _DSN_PASSWORD.sub(lambda m: f"{m.group('head')}{MASK}", text)


class RedactingFilter(logging.Filter):
    """A logging filter that renders the message, redacts it and freezes it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            # Tracebacks are for developers' logs; keep the type and the redacted text only.
            message = f"{message} ({type(record.exc_info[1]).__name__}: {redact(str(record.exc_info[1]))})"
            record.exc_info = None
            record.exc_text = None
        record.msg = redact(message)
        record.args = None
        return True


def install_logging_redaction(logger: logging.Logger | None = None) -> None:
    """Attach the redacting filter to every handler of ``logger`` (root by default)."""
    target = logger or logging.getLogger()
    for handler in target.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
