"""The runbook's "Automated Workflow" in one call: refresh, validate, then deploy or triage.

Deploy happens only when asked (``deploy=True``) and only after a pass, with
the runbook's STAGING_VALIDATION_PASSED flag set for that deploy alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from bot.config import Settings
from bot.workflow.ledger import Ledger
from bot.workflow import deploy as deploy_step
from bot.workflow import refresh as refresh_step
from bot.workflow import validate as validate_step
from bot.workflow.report import Report


@dataclass
class RunbookOptions:
    deploy: bool = False
    install_extensions: bool | None = None
    skip_refresh: bool = False
    on_event: Callable[[str, dict], None] = field(default=lambda kind, data: None)
    run_id: str | None = None  # recorded with the validation and the deploy, like the bot's runs
    requested_by: str | None = None


def run(settings: Settings, store: Ledger, options: RunbookOptions) -> list[Report]:
    """The reports of the steps that ran, in order; the caller renders and triages."""
    reports: list[Report] = []
    if not options.skip_refresh:
        refreshed = refresh_step.run(settings, refresh_step.RefreshOptions(on_event=options.on_event))
        reports.append(refreshed)
        if not refreshed.ok:
            return reports
    gate = validate_step.run(settings, store, validate_step.GateOptions(
        install_extensions=options.install_extensions, on_event=options.on_event, run_id=options.run_id,
        requested_by=options.requested_by))
    reports.append(gate)
    if gate.ok and options.deploy and gate.facts.get("pending"):
        reports.append(deploy_step.run(settings, store, deploy_step.DeployOptions(
            env_flag=True, on_event=options.on_event, run_id=options.run_id, requested_by=options.requested_by)))
    return reports


def exit_code(reports: list[Report]) -> int:
    return max((r.exit_code for r in reports), default=0)
