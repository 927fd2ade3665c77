"""What the workflow needs from the bot's state: a ledger of validations and deploys.

A Protocol, so the workflow layer stays below ``bot.runs`` (whose Store
implements it) and never imports upwards. A validation is recorded with the
gate settings it ran under (``gate_settings``), so a deploy under a stricter
config can refuse it.
"""

from __future__ import annotations

from typing import Any, Protocol


class Ledger(Protocol):
    def record_validation(self, *, fingerprint: str, passed: bool, report_json: str, migrations: list[str],
                          run_id: str | None = None, commit: str | None = None,
                          gate_settings: dict[str, Any] | None = None) -> int: ...

    def passing_validation(self, fingerprint: str) -> dict[str, Any] | None:
        """The newest passing validation of ``fingerprint`` (id, created_at, run_id, …, and ``gate_settings``:
        the dict it was recorded with, ``bot.workflow.gatesettings.record``, or None), or None."""
        ...

    def record_deploy(self, *, fingerprint: str, ok: bool, applied: list[str], held: list[str], report_json: str,
                      run_id: str | None = None) -> int: ...
