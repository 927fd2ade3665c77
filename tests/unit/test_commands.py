"""The /migrate grammar: every command, every error sentence, and properties over arbitrary text."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from bot.chat.commands import COMMANDS, EXAMPLE_RUN_ID, HELP, MAX_REF_LEN, Command, help_text, parse

RUN_ID = EXAMPLE_RUN_ID


# --- valid commands -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("help", Command("help")),
        ("validate", Command("validate")),
        ("validate main", Command("validate", args=("main",), ref="main")),
        ("validate feature/add-orders-index", Command("validate", ("feature/add-orders-index",), ref="feature/add-orders-index")),
        ("validate v1.2.3", Command("validate", ("v1.2.3",), ref="v1.2.3")),
        ("validate 3f9a1c02deadbeef", Command("validate", ("3f9a1c02deadbeef",), ref="3f9a1c02deadbeef")),
        ("refresh", Command("refresh")),
        ("deploy", Command("deploy")),
        (f"deploy {RUN_ID}", Command("deploy", (RUN_ID,), run_id=RUN_ID)),
        ("status", Command("status")),
        (f"status {RUN_ID}", Command("status", (RUN_ID,), run_id=RUN_ID)),
        (f"cancel {RUN_ID}", Command("cancel", (RUN_ID,), run_id=RUN_ID)),
        (f"triage {RUN_ID}", Command("triage", (RUN_ID,), run_id=RUN_ID)),
        ("history", Command("history")),
        ("unblock", Command("unblock")),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_each_command_parses(text: str, expected: Command) -> None:
    assert parse(text) == expected


@pytest.mark.parametrize("text", ["", "   ", "\n\t", "<@U0BOT>", " <@U0BOT|migrate-bot>  "])
def test_empty_text_means_help(text: str) -> None:
    assert parse(text) == Command("help")


@pytest.mark.parametrize("text", [None, 42, b"deploy"])
def test_non_string_input_means_help(text: object) -> None:
    assert parse(text) == Command("help")  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["HISTORY", "History", "hIsToRy"])
def test_verbs_are_case_insensitive(text: str) -> None:
    assert parse(text) == Command("history")


@pytest.mark.parametrize(
    "text",
    [
        f"  status   {RUN_ID}  ",
        f"status\t{RUN_ID}\n",
        f"<@U0BOT> status {RUN_ID}",
        f"status <@U0BOT> {RUN_ID}",
        f"status {RUN_ID} <@W123ABC|someone>",
        f"<@U1><@U2>status {RUN_ID}",
    ],
)
def test_whitespace_and_user_mentions_are_ignored(text: str) -> None:
    assert parse(text) == Command("status", (RUN_ID,), run_id=RUN_ID)


@pytest.mark.parametrize("word", ["r-3f9a1c02", "3f9a1c02", "R-3F9A1C02", "3F9A1C02"])
def test_run_ids_are_normalised_to_the_r_prefix(word: str) -> None:
    assert parse(f"cancel {word}").run_id == "r-3f9a1c02"


def test_long_run_ids_are_accepted() -> None:
    run_id = "r-" + "0123456789abcdef" * 4
    assert parse(f"triage {run_id}").run_id == run_id


def test_slack_html_escaping_is_undone_in_refs() -> None:
    assert parse("validate feature/a&amp;b").ref == "feature/a&b"


def test_ref_at_the_length_limit_is_accepted() -> None:
    ref = "a" * MAX_REF_LEN
    assert parse(f"validate {ref}").ref == ref


# --- error sentences, exactly --------------------------------------------------------------------


@pytest.mark.parametrize("verb", ["cancel", "triage"])
def test_run_id_required(verb: str) -> None:
    assert parse(verb) == Command(
        "invalid",
        error=f"`/migrate {verb}` needs a run id, e.g. `/migrate {verb} r-3f9a1c02`. Find it with `/migrate history`.",
    )


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("help me", "`/migrate help` takes no arguments, but got 1: `me`."),
        ("refresh now please", "`/migrate refresh` takes no arguments, but got 2: `now please`."),
        ("history 10", "`/migrate history` takes no arguments, but got 1: `10`."),
        ("unblock staging", "`/migrate unblock` takes no arguments, but got 1: `staging`."),
        ("validate main dev", "`/migrate validate` takes at most one git ref, but got 2: `main dev`."),
        (f"deploy {RUN_ID} later", f"`/migrate deploy` takes at most one run id, but got 2: `{RUN_ID} later`."),
        (f"deploy {RUN_ID} {RUN_ID} now", f"`/migrate deploy` takes at most one run id, but got 2: `{RUN_ID} {RUN_ID}`."),
        (f"status {RUN_ID} {RUN_ID}", f"`/migrate status` takes at most one run id, but got 2: `{RUN_ID} {RUN_ID}`."),
        (f"cancel {RUN_ID} x", f"`/migrate cancel` takes exactly one run id, but got 2: `{RUN_ID} x`."),
        (f"triage {RUN_ID} x y", f"`/migrate triage` takes exactly one run id, but got 3: `{RUN_ID} x y`."),
    ],
)
def test_too_many_arguments(text: str, error: str) -> None:
    command = parse(text)
    assert (command.name, command.error, command.suggestion) == ("invalid", error, None)


@pytest.mark.parametrize("verb", ["deploy", "status", "cancel", "triage"])
@pytest.mark.parametrize("word", ["latest", "r-3f9a1c0", "r-3f9a1c0g", "r_3f9a1c02", "-r-3f9a1c02", "r-" + "a" * 65])
def test_bad_run_id(verb: str, word: str) -> None:
    command = parse(f"{verb} {word}")
    shown = word if len(word) <= 40 else word[:39] + "…"
    assert command.error == (
        f"`{shown}` is not a run id; run ids look like `r-3f9a1c02`. Find them with `/migrate history`."
    )
    assert (command.name, command.run_id) == ("invalid", None)


@pytest.mark.parametrize(
    ("ref", "error"),
    [
        ("-rf", "The ref `-rf` starts with `-`; give a branch, tag or commit, not an option."),
        ("--upload-pack=evil", "The ref `--upload-pack=evil` starts with `-`; give a branch, tag or commit, not an option."),
        ("main..dev", "The ref `main..dev` contains `..`; give one branch, tag or commit, not a range."),
        ("HEAD~1", "The ref `HEAD~1` contains `~`, which git does not allow in a ref."),
        ("main^", "The ref `main^` contains `^`, which git does not allow in a ref."),
        ("a:b", "The ref `a:b` contains `:`, which git does not allow in a ref."),
        ("feat*", "The ref `feat*` contains `*`, which git does not allow in a ref."),
        ("a\\b", "The ref `a\\b` contains `\\`, which git does not allow in a ref."),
        ("a\x07b", "The ref `a?b` contains a control character (U+0007), which git does not allow in a ref."),
        ("a" * (MAX_REF_LEN + 1), f"That ref is {MAX_REF_LEN + 1} characters long; a ref can be at most {MAX_REF_LEN}."),
    ],
)
def test_bad_ref(ref: str, error: str) -> None:
    command = parse(f"validate {ref}")
    assert (command.name, command.ref, command.error) == ("invalid", None, error)


@pytest.mark.parametrize(
    ("verb", "suggestion"),
    [
        ("valdate", "validate"),
        ("Validat", "validate"),
        ("deplyo", "deploy"),
        ("stauts", "status"),
        ("cancle", "cancel"),
        ("traige", "triage"),
        ("histroy", "history"),
        ("refesh", "refresh"),
        ("unblok", "unblock"),
        ("hlep", "help"),
    ],
)
def test_misspelled_verb_suggests_the_closest_command(verb: str, suggestion: str) -> None:
    command = parse(f"{verb} main")
    assert command == Command(
        "invalid",
        args=("main",),
        error=f"`{verb}` is not a /migrate command; did you mean `/migrate {suggestion}`?",
        suggestion=suggestion,
    )


@pytest.mark.parametrize("verb", ["xyzzy", "drop", "🚀"])
def test_unknown_verb_without_a_close_match_points_at_help(verb: str) -> None:
    assert parse(verb) == Command(
        "invalid", error=f"`{verb}` is not a /migrate command; `/migrate help` lists them all."
    )


def test_error_sentences_do_not_echo_backticks_or_unbounded_text() -> None:
    command = parse("`" * 500)
    assert command.error is not None
    assert command.error.count("`") == 4  # only our own code spans
    assert len(command.error) < 200


# --- help ----------------------------------------------------------------------------------------


def test_help_table_covers_every_command_once() -> None:
    assert sorted(COMMANDS) == sorted(
        ["help", "validate", "refresh", "deploy", "status", "approve", "reject", "cancel", "triage", "history",
         "digest", "windows", "unblock"]
    )
    assert len(HELP) == len(set(COMMANDS))


@pytest.mark.parametrize(("usage", "what", "example"), HELP, ids=[row[0] for row in HELP])
def test_every_help_example_parses_to_its_command(usage: str, what: str, example: str) -> None:
    command = parse(example.removeprefix("/migrate"))
    assert command.name == usage.split()[1]
    assert what.endswith(".")


def test_help_text_lists_every_usage() -> None:
    text = help_text()
    assert all(f"`{usage}`" in text for usage, _, _ in HELP)
    assert "Did you mean" not in text


def test_help_text_starts_with_the_suggestion() -> None:
    assert help_text("validate").startswith("Did you mean `/migrate validate`?")


# --- properties ----------------------------------------------------------------------------------

_WORDS = st.sampled_from([*COMMANDS, RUN_ID, "3f9a1c02", "main", "..", "-x", "<@U1>", "<@", "&amp;", "`", "\x00"])


def _assert_well_formed(command: Command) -> None:
    assert isinstance(command, Command)
    if command.name == "invalid":
        assert command.error and "\n" not in command.error
    else:
        assert command.name in COMMANDS and command.error is None


@given(st.text())
@example("\x00" * 10)
@example("validate " + "a" * 100_000)
def test_parse_never_raises_on_any_text(text: str) -> None:
    _assert_well_formed(parse(text))


@given(st.text(alphabet=st.characters(categories=["L", "N", "P", "S", "Zs"])))
def test_parse_never_raises_on_printable_text(text: str) -> None:
    _assert_well_formed(parse(text))


@given(st.lists(st.one_of(_WORDS, st.text(max_size=12)), max_size=6), st.sampled_from([" ", "  ", "\t", "\n"]))
def test_parse_never_raises_on_command_words_mixed_with_noise(words: list[str], sep: str) -> None:
    _assert_well_formed(parse(sep.join(words)))


_REF_CHARS = st.characters(
    categories=["L", "N"], include_characters="/._-@+&#", exclude_characters="~^:?*[\\"
).filter(lambda ch: not ch.isspace())
_refs = st.text(_REF_CHARS, min_size=1, max_size=MAX_REF_LEN).filter(
    lambda ref: not ref.startswith("-") and ".." not in ref
)
_hex = st.text("0123456789abcdef", min_size=8, max_size=64)


@st.composite
def valid_commands(draw: st.DrawFn) -> tuple[str, Command]:
    """A command text as a person might type it, and the Command it must parse to."""
    verb = draw(st.sampled_from(COMMANDS))
    spelled = draw(st.sampled_from([verb, verb.upper(), verb.capitalize()]))
    if verb == "validate" and draw(st.booleans()):
        ref = draw(_refs)
        return f"{spelled} {ref}", Command(verb, (ref,), ref=ref)
    needs_run = ("cancel", "triage", "approve", "reject")
    if verb in ("deploy", "status", *needs_run) and (verb in needs_run or draw(st.booleans())):
        digits = draw(_hex)
        word = draw(st.sampled_from([f"r-{digits}", digits, f"R-{digits.upper()}"]))
        return f"{spelled} {word}", Command(verb, (f"r-{digits}",), run_id=f"r-{digits}")
    if verb == "digest" and draw(st.booleans()):
        database = draw(st.sampled_from(["prod", "staging"]))
        return f"{spelled} {database}", Command(verb, (database,), database=database)
    return spelled, Command(verb)


@given(valid_commands(), st.sampled_from(["", " ", "  <@U0BOT> ", "\t"]))
def test_valid_commands_parse_to_what_was_meant(case: tuple[str, Command], padding: str) -> None:
    text, expected = case
    assert parse(f"{padding}{text}{padding}") == expected


@given(valid_commands())
def test_to_text_roundtrips(case: tuple[str, Command]) -> None:
    command = parse(case[0])
    assert parse(command.to_text()) == command


@pytest.mark.parametrize(("text", "run_id"), [("deploy now", None), (f"deploy {RUN_ID} now", RUN_ID),
                                              (f"deploy {RUN_ID.upper()} NOW", RUN_ID)])
def test_deploy_now_asks_for_an_override(text: str, run_id: str | None) -> None:
    command = parse(text)
    assert (command.name, command.run_id, command.now) == ("deploy", run_id, True)
    assert parse(command.to_text()) == command


def test_deploy_without_now_is_not_an_override() -> None:
    assert parse(f"deploy {RUN_ID}").now is False


@pytest.mark.parametrize(("text", "now"), [(f"deploy {RUN_ID} resume", False), (f"deploy {RUN_ID} RESUME now", True),
                                           (f"deploy {RUN_ID} now resume", True)])
def test_deploy_resume_continues_a_part_applied_migration(text: str, now: bool) -> None:
    command = parse(text)
    assert (command.name, command.run_id, command.resume, command.now) == ("deploy", RUN_ID, True, now)
    assert parse(command.to_text()) == command


def test_resume_is_no_run_id_of_another_verb() -> None:
    assert parse(f"status {RUN_ID} resume").error is not None


def test_windows_takes_no_arguments() -> None:
    assert parse("windows").name == "windows"
    assert parse("windows next").error == "`/migrate windows` takes no arguments, but got 1: `next`."


@pytest.mark.parametrize(("text", "database"), [("digest", None), ("digest prod", "prod"), ("digest STAGING", "staging")])
def test_digest_names_an_optional_database(text: str, database: str | None) -> None:
    command = parse(text)
    assert (command.name, command.database) == ("digest", database)


def test_digest_of_an_unknown_database_says_which_exist() -> None:
    assert parse("digest reporting").error == "`reporting` is not a database I know; say `prod` or `staging`."


def test_digest_takes_at_most_one_database() -> None:
    assert parse("digest prod staging").error == ("`/migrate digest` takes at most one database, but got 2: "
                                                  "`prod staging`.")


@pytest.mark.parametrize("verb", ["approve", "reject"])
def test_approve_and_reject_take_a_run_id(verb: str) -> None:
    assert (parse(f"{verb} {RUN_ID}").name, parse(f"{verb} {RUN_ID}").run_id) == (verb, RUN_ID)
    assert parse(verb).error == (f"`/migrate {verb}` needs a run id, e.g. `/migrate {verb} {RUN_ID}`. "
                                 "Find it with `/migrate history`.")


def test_help_names_the_configured_idle_minutes() -> None:
    assert "for more than 12 minutes" in help_text(idle_minutes=12)
