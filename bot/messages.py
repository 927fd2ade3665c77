"""Every sentence the bot says to a person, each with its next step.

Kept in one module (bolt's ``logger/messages.py`` idea) so wording is
consistent across Slack, the terminal and the CLI, and tests can assert
exact sentences without copying them.
"""

from __future__ import annotations


def who(users: list[str]) -> str:
    return ", ".join(f"<@{u}>" if u.startswith(("U", "W")) else f"<!subteam^{u}>" if u.startswith("S") else u
                     for u in users) or "nobody"


NO_APPROVERS = ("No approvers are configured, so nobody can approve or deploy. "
                "Add user ids or a user group to `policy.approvers` in the bot's config.")
SELF_APPROVAL = "Your own approval doesn't count — ask someone in {approvers}."
NOT_APPROVER = "<@{user}>'s reaction doesn't count: only {approvers} can approve deploys (`policy.approvers`)."
APPROVAL_COUNTED = "Approval from <@{user}> counted ({count}/{required})."
APPROVALS_MET = "Approved ({count}/{required}). <@{requester}> or an approver can deploy with `/migrate deploy {run_id}`."
UNBLOCK_APPROVED = "Approved by <@{user}>: terminating the listed sessions now."
APPROVAL_REVOKED = "<@{user}> withdrew their approval ({count}/{required})."
REVOKE_TOO_LATE = "The deploy {run_id} has already started; removing the reaction no longer changes anything."
REJECTED = "<@{user}> rejected {run_id}. Fix what they asked for and validate again with `/migrate validate`."
APPROVE_WRONG_STATE = "{run_id} is {state}, so there is nothing to approve."
NOT_VALIDATOR = "Only {validators} may start validations and refreshes here (`policy.validators`)."
NOT_DEPLOYER = "Only the requester <@{requester}> or {deployers} may deploy {run_id}."
WRONG_CHANNEL = "I only run migrations in {channels}. Ask there, or add this channel to `slack.channels`."
ENV_BUSY = "{env} is busy with {holder} ({kind}, {state}, asked by <@{by}>){link}. Wait for it to finish, or cancel it with `/migrate cancel {holder}`."
NO_SUCH_RUN = "I can't find a run called {run_id}. `/migrate history` lists recent runs."
NO_RUNS = "No runs yet. Start one with `/migrate validate`."
NOT_APPROVED = "{run_id} is {state}: it needs {required} approval(s) from {approvers} before it can deploy."
CANNOT_CANCEL = "{run_id} is {state}; only runs that have not started can be cancelled."
CANCELLED = "<@{user}> cancelled {run_id}."
NOT_ALLOWED_CANCEL = "Only the requester <@{requester}> or an approver can cancel {run_id}."
INTERRUPTED = ("The bot restarted while {run_id} was running, so it was interrupted. Nothing is lost: "
               "transactional migrations rolled back. Check `/migrate status {run_id}` and run it again.")
NOTHING_TO_DEPLOY = "Validation passed with nothing pending: prod is already up to date."
DEPLOY_AWAITING = ("Deploy {run_id} is waiting for {required} approval(s) from {approvers}: react with "
                   ":{reaction}: on this message or press Approve.")
NOTHING_TO_TRIAGE = "{run_id} has no failures to triage."
NO_IDLE_SESSIONS = "No session on prod has been idle in transaction for more than {minutes} minutes. Nothing to unblock."
CREDENTIAL_WARNING = ("<@{user}>, that message looks like it contains a {what}. Rotate it now and keep it in the "
                      "secret store — the bot never needs credentials in chat.")
UNEXPECTED = ("Something unexpected went wrong ({error}); nothing was deployed by this command. "
              "Check `/migrate status`, try again, or ask the bot's owners.")
