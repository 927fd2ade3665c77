"""Redaction: registered secrets and URL passwords never survive into text."""

from __future__ import annotations

import logging

import pytest

from bot.errors import ConnectionFailed
from bot.redact import RedactingFilter, mask_url, redact, register


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgres://app:s3cr3t@db:5432/app", "postgres://app:***@db:5432/app"),
        ("postgresql://app:p%40ss@db/app", "postgresql://app:***@db/app"),
        ("postgres://app@db/app", "postgres://app@db/app"),
        ("see postgres://u:pw1234@h/d and mysql://a:b9999@c/d", "see postgres://u:***@h/d and mysql://a:***@c/d"),
    ],
)
def test_url_passwords_are_masked(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_registered_secret_is_removed_anywhere() -> None:
    register("tok-abcdef-123456")
    assert redact("token tok-abcdef-123456 leaked") == "token *** leaked"


def test_dsn_password_is_masked() -> None:
    assert redact("host=db password=hunter22 user=x") == "host=db password=*** user=x"


def test_exception_text_is_redacted() -> None:
    register("zz-very-secret-zz")
    assert "zz-very-secret-zz" not in str(ConnectionFailed("failed with zz-very-secret-zz", "retry"))


def test_logging_filter_redacts_messages_and_exceptions(caplog: pytest.LogCaptureFixture) -> None:
    register("log-secret-99x")
    logger = logging.getLogger("test.redact")
    record = logger.makeRecord("t", logging.ERROR, __file__, 1, "connect %s", ("postgres://u:log-secret-99x@h/d",), None)
    RedactingFilter().filter(record)
    assert "log-secret-99x" not in record.getMessage()


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=300, deadline=None)
@given(tail=st.text(min_size=3, max_size=30).filter(lambda s: "://" not in s),
       before=st.text(max_size=40), after=st.text(max_size=40))
def test_a_registered_secret_never_survives(tail: str, before: str, after: str) -> None:
    # The registry is process-wide: the snowman keeps these secrets from masking other tests' output.
    secret = "\u2603" + tail
    register(secret)
    assert secret not in redact(before + secret + after + secret)


@settings(max_examples=200, deadline=None)
@given(password=st.text(alphabet=st.characters(blacklist_characters="@/",
                                              blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp")),
                        min_size=1, max_size=30))
def test_a_url_password_never_survives_even_unregistered(password: str) -> None:
    """Any password a URL can carry (no '@', '/', whitespace or control characters) is masked."""
    text = redact(f"could not connect to postgres://app:{password}@db.internal:5432/app")
    assert f":{password}@" not in text


def test_a_long_run_of_letters_is_redacted_in_linear_time() -> None:
    """120 KB of letters once froze the bot for 15 s (the URL pattern rescanned from every position).
    Counted work, not time: the pattern may only start a scheme where a run of scheme characters starts."""
    from bot.redact import _URL_PASSWORD

    text = "a" * 200_000 + " postgres://app:pw-9@db/x"
    starts = [m.start() for m in _URL_PASSWORD.finditer(text)]
    assert starts == [200_001] and redact(text).endswith("postgres://app:***@db/x")


def test_the_paste_guard_knows_the_bots_own_secrets_pasted_bare() -> None:
    from bot.chat.guard import looks_like_secret
    from bot.redact import register

    register("bare-Secret-value-9xq")
    assert looks_like_secret("try this: bare-Secret-value-9xq") == "credential this bot uses"
    assert looks_like_secret("nothing secret here") is None


def test_chat_faces_name_slash_commands_not_the_cli() -> None:
    from bot.chat.render import chat_commands

    assert chat_commands("run `migrate-bot validate` first") == "run `/migrate validate` first"
    assert chat_commands("`migrate-bot lint db/`") == "`migrate-bot lint db/`"  # no slash command for it
