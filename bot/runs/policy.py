"""Who may do what: pure decisions with reasons; adapters render them.

With no policy configured, anyone in an allowed channel may validate, refresh
and read status/history/triage; deploys and approvals need configured
approvers, and the refusal names the setting to add.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

from bot import messages
from bot.config import Policy, Slack
from bot.runs.model import Approval, Run

GroupMembers = Callable[[str], set[str]]  # user group id (S…) -> member user ids


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""


ALLOW = Decision(True)


def expand(entries: Iterable[str], groups: GroupMembers) -> set[str]:
    users: set[str] = set()
    for entry in entries:
        users |= groups(entry) if entry.startswith("S") else {entry}
    return users


def in_channel(slack: Slack, channel: str) -> Decision:
    if not slack.channels or not channel or channel in slack.channels:
        return ALLOW
    return Decision(False, messages.WRONG_CHANNEL.format(channels=", ".join(f"<#{c}>" for c in slack.channels)))


def may_start(policy: Policy, user: str, groups: GroupMembers) -> Decision:
    """validate / refresh / unblock requests."""
    if not policy.validators or user in expand(policy.validators, groups):
        return ALLOW
    return Decision(False, messages.NOT_VALIDATOR.format(validators=messages.who(policy.validators)))


def may_approve(policy: Policy, user: str, run: Run, groups: GroupMembers) -> Decision:
    if not policy.approvers:
        return Decision(False, messages.NO_APPROVERS)
    approvers = messages.quietly(policy.approvers)
    if user == run.requested_by:
        return Decision(False, messages.SELF_APPROVAL.format(approvers=approvers))
    if user not in expand(policy.approvers, groups):
        return Decision(False, messages.NOT_APPROVER.format(user=user, approvers=approvers))
    return ALLOW


def may_deploy(policy: Policy, user: str, run: Run, groups: GroupMembers) -> Decision:
    if not policy.approvers:
        return Decision(False, messages.NO_APPROVERS)
    allowed = {run.requested_by} | expand(policy.approvers, groups) | expand(policy.deployers, groups)
    if user in allowed:
        return ALLOW
    deployers = messages.who(policy.deployers or policy.approvers)
    return Decision(False, messages.NOT_DEPLOYER.format(requester=run.requested_by, deployers=deployers, run_id=run.id))


def may_resume(policy: Policy, user: str, run: Run, groups: GroupMembers) -> Decision:
    """Continuing a half-applied migration on prod is an approver's call, not only the requester's."""
    if user in expand(policy.approvers, groups):
        return ALLOW
    return Decision(False, messages.RESUME_NOT_APPROVER.format(approvers=messages.who(policy.approvers),
                                                                run_id=run.id))


def may_cancel(policy: Policy, user: str, run: Run, groups: GroupMembers) -> Decision:
    if user == run.requested_by or user in expand(policy.approvers, groups):
        return ALLOW
    return Decision(False, messages.NOT_ALLOWED_CANCEL.format(requester=run.requested_by, run_id=run.id))


def counted(policy: Policy, run: Run, approvals: list[Approval], groups: GroupMembers) -> list[Approval]:
    """Approvals that count: approvers only, never the requester, bound to this fingerprint."""
    approvers = expand(policy.approvers, groups)
    return [a for a in approvals
            if a.verdict == "approve" and a.user in approvers and a.user != run.requested_by
            and a.fingerprint == run.fingerprint and not a.revoked_at]
