"""The HTTP front decides what to read before reading it (pure)."""

from __future__ import annotations

import pytest

from bot.chat.http_server import MAX_BODY, body_length


@pytest.mark.parametrize(("length", "encoding", "expected"), [
    ("123", None, (123, 0)),
    ("0", None, (0, 0)),
    (str(MAX_BODY), None, (MAX_BODY, 0)),
    (str(MAX_BODY + 1), None, (0, 413)),
    ("-1", None, (0, 400)),
    ("+5", None, (0, 400)),
    ("1e3", None, (0, 400)),
    ("abc", None, (0, 400)),
    (None, None, (0, 411)),
    ("", None, (0, 411)),
    ("10", "chunked", (0, 411)),
    (None, "chunked", (0, 411)),
    ("10", "identity", (10, 0)),
])
def test_body_length(length: str | None, encoding: str | None, expected: tuple[int, int]) -> None:
    assert body_length(length, encoding) == expected
