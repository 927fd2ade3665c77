"""The ``/migrate`` command grammar: text in, a ``Command`` out, never an exception.

Slack hands us whatever a person typed after ``/migrate`` — with stray
spaces, ``<@U123>`` mentions, HTML-escaped ``&amp;``, typos and control
characters. Parsing is kept pure (no Slack, no database) so that every face
(Slack, CLI docs, tests) shares one grammar, and so that a bad command can be
answered with one sentence saying exactly what was wrong instead of a crash.

    /migrate help
    /migrate validate [ref]       ref: branch, tag or commit
    /migrate refresh
    /migrate deploy [run-id] [now] [resume]   no run id = the latest deploy run; now = outside the windows;
                                  resume = continue a migration an interrupted deploy left part-applied
    /migrate status [run-id]      no run id = the latest run
    /migrate approve <run-id>
    /migrate reject <run-id>
    /migrate cancel <run-id>
    /migrate triage <run-id>
    /migrate history
    /migrate windows
    /migrate digest [prod|staging]
    /migrate unblock

Run ids look like ``r-3f9a1c02`` (``r-`` + 8 to 64 lowercase hex digits); the
``r-`` may be omitted and case is ignored, and ids are normalised to the
``r-`` form so that downstream code compares one spelling.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, replace
from typing import Final

__all__ = ["Command", "HELP", "COMMANDS", "EXAMPLE_RUN_ID", "parse", "help_text", "normalise_run_id", "ref_problem"]

EXAMPLE_RUN_ID: Final = "r-3f9a1c02"
MAX_REF_LEN: Final = 200
_MAX_ECHO: Final = 40  # how much of the user's own text an error sentence repeats back

# (usage, what it does, example) — one row per command, in the order people need them.
HELP: list[tuple[str, str, str]] = [
    ("/migrate help", "Show this list of commands.", "/migrate help"),
    (
        "/migrate validate [ref]",
        "Run the pending migrations at a git ref (default: the configured branch) against staging and report every check.",
        "/migrate validate feature/add-orders-index",
    ),
    (
        "/migrate refresh",
        "Refresh staging from production (masking the configured columns) so the next validation sees real data.",
        "/migrate refresh",
    ),
    (
        "/migrate deploy [run-id] [now] [resume]",
        "Deploy an approved run to production (default: the latest deploy run); with deploy windows it runs in "
        "the next one, and `now` asks for an override outside them, which needs a second approver. An interrupted "
        "deploy is taken up again the same way; `resume` (an approver) continues a migration it left part-applied.",
        f"/migrate deploy {EXAMPLE_RUN_ID}",
    ),
    (
        "/migrate status [run-id]",
        "Show where a run is and what it has done so far (default: the latest run).",
        f"/migrate status {EXAMPLE_RUN_ID}",
    ),
    ("/migrate approve <run-id>", "Approve a deploy (like reacting on its thread or pressing Approve).",
     f"/migrate approve {EXAMPLE_RUN_ID}"),
    ("/migrate reject <run-id>", "Reject a deploy (like reacting :x: or pressing Reject).",
     f"/migrate reject {EXAMPLE_RUN_ID}"),
    ("/migrate cancel <run-id>", "Cancel a run that has not started yet (queued, awaiting approval or scheduled).", f"/migrate cancel {EXAMPLE_RUN_ID}"),
    (
        "/migrate triage <run-id>",
        "Explain why a run failed and what to change before trying again.",
        f"/migrate triage {EXAMPLE_RUN_ID}",
    ),
    ("/migrate history", "List recent runs with their ids, results and who started them.", "/migrate history"),
    (
        "/migrate digest [prod|staging]",
        "Post the pg_stat_statements digest here: top statements, new ones, regressions, and since the last deploy.",
        "/migrate digest",
    ),
    (
        "/migrate windows",
        "Show the next deploy windows and, after a week of samples, prod's quietest hours beside them.",
        "/migrate windows",
    ),
    (
        "/migrate unblock",
        "List sessions idle in transaction on prod for more than {idle_minutes} minutes; an approver's approval "
        "terminates them.",
        "/migrate unblock",
    ),
]

COMMANDS: tuple[str, ...] = tuple(usage.split()[1] for usage, _, _ in HELP)


@dataclass(frozen=True)
class _Arity:
    """What a verb accepts after it: at most ``max_args`` of ``kind`` ("ref" or "run id")."""

    min_args: int = 0
    max_args: int = 0
    kind: str | None = None


_ARITY: dict[str, _Arity] = {
    "help": _Arity(),
    "validate": _Arity(0, 1, "ref"),
    "refresh": _Arity(),
    "deploy": _Arity(0, 1, "run id"),
    "status": _Arity(0, 1, "run id"),
    "cancel": _Arity(1, 1, "run id"),
    "approve": _Arity(1, 1, "run id"),
    "reject": _Arity(1, 1, "run id"),
    "triage": _Arity(1, 1, "run id"),
    "history": _Arity(),
    "windows": _Arity(),
    "digest": _Arity(0, 1, "database"),
    "unblock": _Arity(),
}
assert set(_ARITY) == set(COMMANDS), "every command in HELP needs an arity, and vice versa"

# <@U123> and <@U123|name>: people address the bot or a colleague; neither is an argument.
_USER_MENTION = re.compile(r"<@[UW][A-Z0-9]*(?:\|[^>]*)?>")
_RUN_ID = re.compile(r"(?:r-)?([0-9a-f]{8,64})")
# What git itself refuses in a ref name (see git-check-ref-format), minus whitespace (we split on it).
_REF_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f~^:?*\[\\]")


@dataclass(frozen=True)
class Command:
    """A parsed ``/migrate`` invocation.

    ``name`` is the verb, or ``"invalid"`` when the text did not parse — then
    ``error`` holds the sentence to show and ``suggestion`` the verb the person
    probably meant. ``args`` are the words after the verb with mentions removed
    and run ids normalised, so two spellings of one command compare equal.
    """

    name: str
    args: tuple[str, ...] = ()
    ref: str | None = None
    run_id: str | None = None
    now: bool = False  # `deploy … now`: outside the deploy windows (an override)
    resume: bool = False  # `deploy … resume`: continue a part-applied migration at its next statement
    database: str | None = None  # `digest [prod|staging]`
    error: str | None = None
    suggestion: str | None = None

    @property
    def ok(self) -> bool:
        """Whether this is a command to execute (rather than an error to show)."""
        return self.name != "invalid"

    def to_text(self) -> str:
        """The text after ``/migrate`` that parses back to this command (for valid commands)."""
        return " ".join((self.name, *self.args))


def parse(text: str | None) -> Command:
    """Parse the text Slack sent after ``/migrate``; never raises, whatever the input."""
    try:
        return _parse(text)
    except Exception as exc:  # pragma: no cover - defence in depth: a parser bug must not crash the bot
        return _invalid(f"That command could not be read ({type(exc).__name__}); `/migrate help` lists the commands.")


def _parse(text: str | None) -> Command:
    words = _words(text)
    if not words:
        return Command("help")
    verb, args = _verb(words[0]), tuple(words[1:])
    if verb not in _ARITY:
        return _unknown_verb(words[0], args)
    if verb == "deploy" and args and args[-1].lower() in DEPLOY_FLAGS:
        return _with_flag(_parse(" ".join((verb, *args[:-1]))), args[-1].lower())
    arity = _ARITY[verb]
    if len(args) > arity.max_args:
        return _invalid(_too_many(verb, arity, args), args=args)
    if len(args) < arity.min_args:
        return _invalid(_needs_run_id(verb), args=args)
    if not args:
        return Command(verb)
    if arity.kind == "ref":
        return _with_ref(verb, args[0])
    if arity.kind == "database":
        return _with_database(verb, args[0])
    return _with_run_id(verb, args[0])


def _words(text: str | None) -> list[str]:
    """Split into words, dropping user mentions and undoing Slack's HTML escaping."""
    if not isinstance(text, str):
        return []
    text = _USER_MENTION.sub(" ", text)
    text = text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    return text.split()


def _verb(word: str) -> str:
    """Lower-case ASCII only: Unicode case folding would let look-alikes (``ſtatus``) pass as verbs."""
    return word.lower() if word.isascii() else word


DEPLOY_FLAGS: Final = ("now", "resume")


def _with_flag(command: Command, flag: str) -> Command:
    """``deploy [run-id] now`` (outside the windows) / ``… resume`` (continue a part-applied migration)."""
    if not command.ok or flag in command.args:
        return command
    return replace(command, args=(*command.args, flag), now=command.now or flag == "now",
                   resume=command.resume or flag == "resume")


DATABASES: Final = ("prod", "staging")


def _with_database(verb: str, word: str) -> Command:
    name = _verb(word)
    if name not in DATABASES:
        return _invalid(f"`{_echo(word)}` is not a database I know; say `prod` or `staging`.", args=(word,))
    return Command(verb, args=(name,), database=name)


def _with_ref(verb: str, ref: str) -> Command:
    problem = ref_problem(ref)
    if problem:
        return _invalid(problem, args=(ref,))
    return Command(verb, args=(ref,), ref=ref)


def _with_run_id(verb: str, word: str) -> Command:
    run_id = normalise_run_id(word)
    if run_id is None:
        return _invalid(
            f"`{_echo(word)}` is not a run id; run ids look like `{EXAMPLE_RUN_ID}`. Find them with `/migrate history`.",
            args=(word,),
        )
    return Command(verb, args=(run_id,), run_id=run_id)


def normalise_run_id(word: str) -> str | None:
    """``3F9A1C02`` / ``r-3f9a1c02`` -> ``r-3f9a1c02``; anything else -> None."""
    match = _RUN_ID.fullmatch(word.casefold()) if word.isascii() else None
    return f"r-{match.group(1)}" if match else None


def ref_problem(ref: str) -> str | None:
    """The sentence explaining why ``ref`` is not an acceptable git ref, or None if it is.

    The checks are the ones that matter for safety and clarity: a leading ``-``
    would be read by git as an option, ``..`` names a range rather than one
    commit, and characters git refuses would only fail later, less clearly.
    """
    if len(ref) > MAX_REF_LEN:
        return f"That ref is {len(ref)} characters long; a ref can be at most {MAX_REF_LEN}."
    if any(ch.isspace() for ch in ref):
        return f"The ref `{_echo(ref)}` contains whitespace; give one branch, tag or commit."
    if ref.startswith("-"):
        return f"The ref `{_echo(ref)}` starts with `-`; give a branch, tag or commit, not an option."
    if ".." in ref:
        return f"The ref `{_echo(ref)}` contains `..`; give one branch, tag or commit, not a range."
    bad = _REF_FORBIDDEN.search(ref)
    if bad:
        return f"The ref `{_echo(ref)}` contains {_describe_char(bad.group())}, which git does not allow in a ref."
    return None


def _unknown_verb(word: str, args: tuple[str, ...]) -> Command:
    matches = difflib.get_close_matches(_verb(word), COMMANDS, n=1, cutoff=0.6)
    if matches:
        return _invalid(
            f"`{_echo(word)}` is not a /migrate command; did you mean `/migrate {matches[0]}`?",
            args=args,
            suggestion=matches[0],
        )
    return _invalid(f"`{_echo(word)}` is not a /migrate command; `/migrate help` lists them all.", args=args)


def _too_many(verb: str, arity: _Arity, args: tuple[str, ...]) -> str:
    got = f"got {len(args)}: `{_echo(' '.join(args))}`"
    if arity.max_args == 0:
        return f"`/migrate {verb}` takes no arguments, but {got}."
    what = {"ref": "git ref", "database": "database"}.get(arity.kind or "", "run id")
    if arity.min_args == arity.max_args:
        return f"`/migrate {verb}` takes exactly one {what}, but {got}."
    return f"`/migrate {verb}` takes at most one {what}, but {got}."


def _needs_run_id(verb: str) -> str:
    return (
        f"`/migrate {verb}` needs a run id, e.g. `/migrate {verb} {EXAMPLE_RUN_ID}`. "
        "Find it with `/migrate history`."
    )


def _invalid(error: str, *, args: tuple[str, ...] = (), suggestion: str | None = None) -> Command:
    return Command("invalid", args=args, error=error, suggestion=suggestion)


def _echo(text: str) -> str:
    """The user's own words, made safe to quote inside a code span in one short sentence."""
    cleaned = "".join(ch if ch.isprintable() else "?" for ch in text).replace("`", "'")
    return cleaned if len(cleaned) <= _MAX_ECHO else cleaned[: _MAX_ECHO - 1] + "…"


def _describe_char(ch: str) -> str:
    return f"`{ch}`" if ch.isprintable() else f"a control character (U+{ord(ch):04X})"


def help_text(suggestion: str | None = None, *, idle_minutes: int = 5) -> str:
    """Plain-text help, one command per line; renderers turn it into Block Kit.

    With a ``suggestion`` (from a misspelled verb) the first line asks about it,
    because that is the question the person actually has.
    """
    lines: list[str] = []
    if suggestion:
        lines += [f"Did you mean `/migrate {suggestion}`?", ""]
    lines.append("Commands:")
    for usage, what, example in HELP:
        lines.append(f"`{usage}` — {what.format(idle_minutes=idle_minutes)} Example: `{example}`")
    return "\n".join(lines)
