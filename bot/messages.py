"""Every sentence the bot says to a person, each with its next step.

Kept in one module (bolt's ``logger/messages.py`` idea) so wording is
consistent across Slack, the terminal and the CLI, and tests can assert
exact sentences without copying them.
"""

from __future__ import annotations


def who(users: list[str]) -> str:
    """Mentions: each user and group named here is notified (use for people who acted or must act now)."""
    return ", ".join(f"<@{u}>" if u.startswith(("U", "W")) else f"<!subteam^{u}>" if u.startswith("S") else u
                     for u in users) or "nobody"


def quietly(users: list[str]) -> str:
    """The same list without notifying anyone: a "doesn't count" reply must not ping the whole approver group."""
    return ", ".join(f"`{u}`" for u in users) or "nobody"


NO_APPROVERS = ("No approvers are configured, so nobody can approve or deploy. "
                "Add user ids or a user group to `policy.approvers` in the bot's config.")
SELF_APPROVAL = "Your own approval doesn't count: another approver must approve it (`policy.approvers`: {approvers})."
NOT_APPROVER = ("<@{user}>'s approval doesn't count: only the configured approvers can approve deploys "
                "(`policy.approvers`: {approvers}).")
APPROVAL_COUNTED = "Approval from <@{user}> counted ({count}/{required})."
APPROVALS_MET = ("Approved ({count}/{required}) by {approvers}. <@{requester}> or an approver can deploy with "
                 "`/migrate deploy {run_id}`.")
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
INTERRUPTED = ("The bot stopped while {run_id} was running, so it was interrupted and its database sessions were "
               "ended. Ask for it again; a migration that runs without a transaction may have left statements on "
               "staging, which `/migrate refresh` clears.")
DEPLOY_INTERRUPTED = (":warning: The process deploying {run_id} stopped before it finished, and its sessions on prod "
                      "were ended. "
                      "What is on prod now, read from prod:\n{lines}")
DEPLOY_INTERRUPTED_UNREAD = (":warning: The bot stopped while {run_id} was deploying, and prod could not be read to "
                             "say what it holds ({error}). `/migrate deploy {run_id}` reads it again and says what "
                             "a re-deploy would do.")
DEPLOY_RESUME = ("A migration stopped part-way: its committed statements stay applied and prod records them. An "
                 "approver continues it at its next statement with `/migrate deploy {run_id} resume`; or undo them "
                 "by hand and delete its row in migrate_bot.partial_migrations. A plain deploy refuses until then.")
DEPLOY_REDEPLOY = ("Nothing is half-applied: a migration running in one transaction rolled back entirely. "
                   "`/migrate deploy {run_id}` deploys the rest of the approved set as is: no new validation or "
                   "approval.")
REDEPLOY_NEEDS_RESUME = ("{run_id} left a migration part-applied on prod:\n{lines}\nAn approver continues it with "
                         "`/migrate deploy {run_id} resume`.")
REDEPLOY_REFUSED = "{run_id} cannot be taken up again: {why}"
REDEPLOY_SET_CHANGED = ("prod's remaining migrations are no longer what was approved (something else was applied, "
                        "or the files changed). Validate again with `/migrate validate`.")
RESUME_NOT_APPROVER = "Only an approver ({approvers}) can resume {run_id}: it continues a half-applied migration."
REDEPLOYING = "<@{user}> takes {run_id} up again{how}: {left}."
NOTHING_TO_DEPLOY = "Validation passed with nothing pending: prod is already up to date."
DEPLOY_AWAITING = ("Deploy {run_id} is waiting for {required} approval(s) from {approvers}: react with "
                   ":{reaction}: on this message or press Approve.")
NOTHING_TO_TRIAGE = "{run_id} has no failures to triage."
NO_IDLE_SESSIONS = "No session on prod has been idle in transaction for more than {minutes} minutes. Nothing to unblock."
CREDENTIAL_WARNING = ("<@{user}>, that message looks like it contains a {what}. Rotate it now and keep it in the "
                      "secret store — the bot never needs credentials in chat.")
UNEXPECTED = ("Something unexpected went wrong ({error}); nothing was deployed by this command. "
              "Check `/migrate status`, try again, or ask the bot's owners.")

# -- the queue -------------------------------------------------------------------------------------------
STARTED = "Started {run_id}: {kind} on {env}."
QUEUED = ("Queued {run_id}: {kind} on {env}, number {position} in line; {env} is busy with {holder}. It starts by "
          "itself when {env} is free; `/migrate cancel {run_id}` takes it out of the queue.")
QUEUED_THREAD = "Waiting for {env}: number {position} in line, behind {holder}. This run starts by itself when it is free."

# -- deploys in windows ------------------------------------------------------------------------------------
APPROVALS_MET_PLANNING = "Approved ({count}/{required}) by {approvers}. Finding the next deploy window that fits…"
DEPLOY_SCHEDULED = (":calendar: {run_id} is scheduled for {when}; the window stays open until {until}. "
                    "Estimated duration: {estimate}. Right before it starts, the bot checks again that the migration "
                    "set, the approvals and the validation still stand and that prod is quiet. "
                    "`/migrate cancel {run_id}` calls it off.")
NO_WINDOW_FITS = ("{run_id} is approved, but no deploy window is long enough for it: it needs {estimate}, and the "
                  "longest opening ahead is {longest}. Widen `deploy.windows`, split the migration set, or deploy "
                  "outside the windows with `/migrate deploy {run_id} now` (that needs a second approver).")
DEPLOY_WAITS_FOR_WINDOW = ("{run_id} is scheduled for {when}: deploys wait for their window. To deploy now anyway: "
                           "`/migrate deploy {run_id} now` (that needs a second approver).")
DEPLOY_NO_WINDOW_FITS = ("{run_id} fits no deploy window (see its thread). To deploy it anyway: "
                         "`/migrate deploy {run_id} now` (that needs a second approver).")
DEPLOY_FROZEN = ("Deploys are frozen until {until} ({freeze}). To deploy {run_id} anyway: "
                 "`/migrate deploy {run_id} now` (that needs a second approver).")
OVERRIDE_ASKED = ("<@{user}> asks to deploy {run_id} now, outside the deploy windows. An override needs {needed} "
                  "approvals ({count} so far): one more approver from {approvers} reacts :{reaction}: on this "
                  "message or presses Approve.")
OVERRIDE_NOT_NEEDED = "No deploy window or freeze stands in {run_id}'s way: `/migrate deploy {run_id}` deploys it."
DEPLOYING = "Deploying {run_id} to prod."
DEPLOY_DONE_ALREADY = "{run_id} is deployed already; `/migrate status {run_id}` shows what it applied."
DEPLOY_IN_PROGRESS = "{run_id} is deploying now; `/migrate status {run_id}` shows how far it got."
DEPLOY_OVER = ("{run_id} is {state}, so it cannot deploy. Validate again with `/migrate validate`; a pass offers a "
               "new deploy.")
NOT_A_DEPLOY = "{run_id} is a {kind} run, not a deploy. {what}"
NOT_A_DEPLOY_OFFERED = "The deploy it offered is {deploy}: `/migrate deploy {deploy}`."
NOT_A_DEPLOY_NONE = "It offered no deploy; a passing validation does."
FIRE_APPROVALS_GONE = ("Not deploying: the approvals no longer stand ({count}/{required}). The deploy waits for an "
                       "approver to approve it again.")
FIRE_NO_VALIDATION = ("Not deploying: no passing validation of this exact migration set is on record any more. "
                      "Validate again with `/migrate validate`.")
FIRE_VALIDATION_OLD = ("Not deploying: its validation is {age:.1f} hours old (limit {limit:g}, "
                       "`deploy.validation_max_age_hours`), and prod's data has moved on since. Refresh and validate "
                       "again: `/migrate refresh`, then `/migrate validate`.")
FIRE_FROZEN = "A deploy freeze began ({freeze}), so the deploy did not start."
FIRE_MISSED = "The bot was not running at the scheduled time ({scheduled}), and the window has closed since."
FIRE_NO_WINDOW = "No deploy window is open now."
FIRE_TOO_LITTLE_LEFT = "Only {left} of the window is left, and the deploy needs about {estimate}."
FIRE_BUSY = ("Not deploying yet: {busy}. Looking again every {retry} until {until}; if prod is still busy then, the "
             "deploy moves to the next window.")
FIRE_STILL_BUSY = "Prod did not become quiet enough inside the window ({busy})."
FIRE_PROD_HELD = "prod is busy with {holder}"
FIRE_GO = ("Deploying now; the window is open until {until}. The migration set, the approvals, the validation and "
           "prod's load all checked out.")
FIRE_GO_LATE = ("The bot was not running at the scheduled time ({scheduled}), but the window is still open until "
                "{until}: deploying now.")
FIRE_GO_OVERRIDE = "Deploying now, outside the deploy windows: an override approved by {approvers}."
WINDOW_CLOSED = "The deploy window closed during the deploy. Applied: {applied}. Not started: {left}."
CLEANUP_ELIGIBLE = ("The cleanup migration(s) {migrations} that {run_id} held back are eligible now: {days} days have "
                    "passed since that deploy. Validate them with `/migrate validate`; a pass offers their deploy "
                    "for approval.")
FIRE_SET_CHANGED = ("Not deploying: prod's pending migrations are no longer the set that was validated and approved "
                    "(now {now}, approved {approved}); someone changed or applied migrations since. Validate again "
                    "with `/migrate validate` and get a fresh approval.")
FIRE_PROD_UNREACHABLE = "the bot could not check prod ({error})"
CLI_OUTSIDE_WINDOW = ("outside the deploy windows{frozen}: the next opens {next}. Deploy then, add --wait to sleep until "
                      "it opens, or --now to deploy anyway (logged)")
CLI_NO_WINDOW_AHEAD = ("no deploy window opens in the next 400 days (`deploy.windows`, `deploy.freezes`); fix the "
                       "config, or add --now to deploy anyway (logged)")
CLI_OVERRIDE = "deployed outside the deploy windows with --now (an override, logged)"
SCHEDULE_AT = "deploys at {when}"
SCHEDULE_ON_COMMAND = "deploys on command"
SCHEDULE_NONE_FITS = "no window is long enough"
ESTIMATE_UNKNOWN = ("about {seconds:.0f} s (the floor times the margin: the bot could not measure this deploy's size "
                    "({error}), so check the window is long enough)")
RUN_MOVED_ON = ("{run_id} changed while your command was being handled (someone else moved it at the same "
                "moment). `/migrate status {run_id}` shows where it is now.")
DIGEST_POSTING = "Making the pg_stat_statements digest of {env}; it will be posted here in a moment."
DIGEST_FAILED = "No digest of {env} today: {error}"
THREAD_NOT_POSTED = ("Slack would not take the first message of your {kind} {run_id}, so its thread does not exist "
                     "yet. The bot keeps trying and the run goes on; `/migrate status {run_id}` shows where it is.")
RUN_ENDED = "<@{requester}>: {kind} {run_id} is {state}."
REF_WITHOUT_REPO = ("This bot reads migrations from the folder {folder}, not from a git repository, so `{ref}` cannot "
                    "be checked out. `/migrate validate` validates the folder as it is; set `migrations.repo` to "
                    "validate branches and tags.")
COMMAND_UNREADABLE = "I could not read that command. `/migrate help` lists the commands."
