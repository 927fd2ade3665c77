"""The error tree, written down once.

Every error the bot raises on purpose is a ``MigrateBotError``: it carries a
sentence a person can act on (``message``) and what to do next
(``next_step``). Faces (CLI, Slack, shell) print ``str(error)`` and exit with
``error.exit_code`` — never a traceback.

    MigrateBotError                      exit 2 unless said otherwise
    └── CouldNotRun                      exit 2: the gate never ran
        ├── ConfigError                  bad/unknown key, bad value, missing setting
        ├── SecretError                  a secret reference could not be resolved
        ├── ConnectionFailed             host unreachable, wrong password, timeout
        ├── MigrationSourceError         missing directory, unreadable or unparsable layout
        ├── EnvironmentBusy              another run/deploy holds the environment (advisory lock)
        └── ToolMissing                  pg_dump/pg_restore/git not installed

Exit codes are the gate's contract: 0 = pass, 1 = gate failed, 2 = could not run.
A gate that ran and said no is not an error: it is a Report whose FAILED or
BLOCKER lines make the exit code 1 (a deploy without a passing validation
included), so nothing here carries exit 1.
"""

from __future__ import annotations

EXIT_PASS = 0
EXIT_FAILED = 1
EXIT_COULD_NOT_RUN = 2


class MigrateBotError(Exception):
    """Base class: a sentence, a next step and an exit code."""

    exit_code = EXIT_COULD_NOT_RUN

    def __init__(self, message: str, next_step: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.next_step = next_step

    def __str__(self) -> str:
        from bot.redact import redact  # late import: redact has no deps, but keep errors leaf-level

        text = self.message if not self.next_step else f"{self.message} {self.next_step}"
        return redact(text)


class CouldNotRun(MigrateBotError):
    exit_code = EXIT_COULD_NOT_RUN


class ConfigError(CouldNotRun):
    pass


class SecretError(CouldNotRun):
    pass


class ConnectionFailed(CouldNotRun):
    pass


class MigrationSourceError(CouldNotRun):
    pass


class EnvironmentBusy(CouldNotRun):
    pass


class ToolMissing(CouldNotRun):
    pass
