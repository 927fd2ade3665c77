"""The runbook in Slack, end to end: the real bolt app over HTTP, signed requests, real PostgreSQL.

Validate fails (an FK over orphaned rows) -> failed parent, triage, log file;
validate passes -> a deploy awaiting approval -> approvals by reaction and
button (who counts, who does not, revoking) -> ``/migrate deploy`` -> prod.
Every sentence is asserted exactly as ``bot.messages`` words it.
"""

from __future__ import annotations


from bot import messages
from bot.chat import render
from bot.runs.model import Kind, State
from tests.fix_bot import APPROVE, FK_SET, ORPHANED_ORDERS, USERS_AND_ORDERS, BotDriver
from tests.fix_slack import APPROVER1, APPROVER2, DBA_GROUP, DEPLOYS, OTHER, REQUESTER

APPROVERS = messages.who([DBA_GROUP])  # asked to act: mentioned
QUIETLY = messages.quietly([DBA_GROUP])  # told someone else's approval does not count: not pinged


def failed_validation(bot: BotDriver):
    bot.dbs.both(USERS_AND_ORDERS + ORPHANED_ORDERS)
    bot.write_migrations(FK_SET)
    run = bot.validate()
    assert run.state is State.FAILED, run.summary
    return run


def block_texts(blocks: list[dict]) -> str:
    """Every text in a message's blocks (sections, headers, context elements, buttons)."""
    out = []
    for block in blocks:
        if isinstance(block.get("text"), dict):
            out.append(block["text"]["text"])
        for element in block.get("elements", []):
            text = element.get("text")
            out.append(text["text"] if isinstance(text, dict) else text or "")
    return "\n".join(out)


def thread_blocks(bot: BotDriver, ts: str) -> list[str]:
    return [block_texts(m.blocks) for m in bot.emulator.thread(DEPLOYS, ts)]


# -- validation fails ------------------------------------------------------------------------


def test_failing_validation_edits_the_parent_message_to_failed(slack_bot: BotDriver) -> None:
    run = failed_validation(slack_bot)
    parent = slack_bot.emulator.message(DEPLOYS, run.thread_ts)
    assert parent.text == render.run_title(run)
    assert parent.text.endswith(f"validate {run.id} — failed")
    states_shown = list(dict.fromkeys(h["text"] for h in parent.history))  # progress edits repeat "running"
    # the parent shows the run as it is when Slack takes it: "requested" may already be over by then, and the
    # final state may be shown by more than one edit; what it showed went forward only, through "running"
    order = [f":hourglass_flowing_sand: validate {run.id} — requested", f":gear: validate {run.id} — running",
             f":x: validate {run.id} — failed"]
    assert f":gear: validate {run.id} — running" in states_shown
    assert [order.index(s) for s in states_shown] == sorted(order.index(s) for s in states_shown)
    # progress lines show while it runs (a burst of them is one edit: the latest when Slack takes it)
    assert any("now: " in block_texts(h["blocks"]) for h in parent.history if h.get("blocks"))
    assert "RESULT validate: FAIL" in block_texts(parent.blocks)


def test_failing_validation_triage_in_thread_names_the_table_and_constraint(slack_bot: BotDriver) -> None:
    run = failed_validation(slack_bot)
    triage = [m for m in slack_bot.emulator.thread(DEPLOYS, run.thread_ts) if m.text.startswith("Triage: ")]
    assert len(triage) == 1
    text = block_texts(triage[0].blocks)
    assert "*Invalid foreign key (orphaned rows)*" in text
    assert "ALTER TABLE orders VALIDATE CONSTRAINT orders_user_fk;" in text


def test_failing_validation_uploads_the_log_into_the_thread(slack_bot: BotDriver) -> None:
    run = failed_validation(slack_bot)
    (log,) = slack_bot.emulator.files()
    assert (log.filename, log.channel, log.thread_ts) == (f"{run.id}-validate.log", DEPLOYS, run.thread_ts)
    lines = log.text.splitlines()
    assert any(line.startswith("FAILED migration.0003_orders_user_fk_validate: ") and "sqlstate=23503" in line
               for line in lines)
    assert "RESULT validate: FAIL" in log.text and "orders_user_fk" in log.text


def test_failing_validation_offers_no_deploy(slack_bot: BotDriver) -> None:
    failed_validation(slack_bot)
    assert slack_bot.store.latest_run(Kind.DEPLOY) is None


# -- validation passes: a deploy awaits approval ---------------------------------------------


def test_passing_validation_asks_the_approvers_in_the_thread(slack_bot: BotDriver) -> None:
    validation, deploy = slack_bot.deploy_awaiting_approval()
    assert slack_bot.thread_texts(validation.thread_ts)[-1] == messages.DEPLOY_AWAITING.format(
        run_id=deploy.id, required=1, approvers=APPROVERS, reaction=APPROVE)


def test_passing_validation_shows_approve_and_reject_buttons_on_the_parent(slack_bot: BotDriver) -> None:
    validation, deploy = slack_bot.deploy_awaiting_approval()
    parent = slack_bot.emulator.message(DEPLOYS, validation.thread_ts)
    (actions,) = [b for b in parent.blocks if b["type"] == "actions"]
    buttons = [(e["action_id"], e["value"]) for e in actions["elements"]]
    assert buttons == [("approve", deploy.id), ("reject", deploy.id)]
    assert render.run_title(deploy) in block_texts(parent.blocks)


def test_requesters_own_approval_is_ignored(slack_bot: BotDriver) -> None:
    validation, deploy = slack_bot.deploy_awaiting_approval()
    slack_bot.react(validation.thread_ts, APPROVE, REQUESTER)
    slack_bot.wait_idle()
    assert slack_bot.thread_texts(validation.thread_ts)[-1] == messages.SELF_APPROVAL.format(approvers=QUIETLY)
    assert slack_bot.store.get_run(deploy.id).state is State.AWAITING_APPROVAL


def test_non_approvers_reaction_is_ignored(slack_bot: BotDriver) -> None:
    validation, deploy = slack_bot.deploy_awaiting_approval()
    slack_bot.react(validation.thread_ts, APPROVE, OTHER)
    slack_bot.wait_idle()
    assert slack_bot.thread_texts(validation.thread_ts)[-1] == messages.NOT_APPROVER.format(user=OTHER,
                                                                                            approvers=QUIETLY)
    assert slack_bot.store.get_run(deploy.id).state is State.AWAITING_APPROVAL


def test_approver_from_the_user_group_is_counted(slack_bot: BotDriver) -> None:
    validation, deploy = slack_bot.deploy_awaiting_approval()
    slack_bot.react(validation.thread_ts, APPROVE, APPROVER1)
    slack_bot.wait_idle()
    assert slack_bot.thread_texts(validation.thread_ts)[-1] == messages.APPROVALS_MET.format(count=1, required=1, approvers=f"<@{APPROVER1}>", requester=REQUESTER,
        run_id=deploy.id)
    assert slack_bot.store.get_run(deploy.id).state is State.SCHEDULED
    assert [c.args["usergroup"] for c in slack_bot.emulator.calls("usergroups.users.list")][:1] == [DBA_GROUP]


def test_removing_the_reaction_before_the_deploy_revokes_the_approval(slack_bot: BotDriver) -> None:
    validation, deploy = slack_bot.deploy_awaiting_approval()
    slack_bot.react(validation.thread_ts, APPROVE, APPROVER1)
    slack_bot.wait_idle()
    slack_bot.react(validation.thread_ts, APPROVE, APPROVER1, added=False)
    slack_bot.wait_idle()
    assert slack_bot.thread_texts(validation.thread_ts)[-1] == messages.APPROVAL_REVOKED.format(
        user=APPROVER1, count=0, required=1)
    assert slack_bot.store.get_run(deploy.id).state is State.AWAITING_APPROVAL
    sent = slack_bot.command(f"deploy {deploy.id}")
    assert slack_bot.reply(sent) == messages.NOT_APPROVED.format(run_id=deploy.id, state="awaiting_approval",
                                                                 required=1, approvers=APPROVERS)


def test_approve_revoke_approve_then_the_requester_deploys_to_prod(slack_bot: BotDriver) -> None:
    validation, deploy = slack_bot.deploy_awaiting_approval()
    for added in (True, False, True):
        slack_bot.react(validation.thread_ts, APPROVE, APPROVER2, added=added)
        slack_bot.wait_idle()
    assert slack_bot.store.get_run(deploy.id).state is State.SCHEDULED
    sent = slack_bot.command(f"deploy {deploy.id}", user=REQUESTER)
    assert slack_bot.reply(sent) == f"Deploying {deploy.id} to prod."
    slack_bot.wait_idle()
    done = slack_bot.store.get_run(deploy.id)
    assert done.state is State.DEPLOYED, done.summary
    assert slack_bot.dbs.sql("prod", "SELECT version FROM migrate_bot.schema_migrations ORDER BY 1") == [
        ("0001",), ("0002",), ("0003",)]
    assert slack_bot.dbs.sql("prod", "SELECT convalidated FROM pg_constraint WHERE conname = 'orders_user_fk'") == [
        (True,)]
    parent = slack_bot.emulator.message(DEPLOYS, validation.thread_ts)
    assert render.run_title(done) in block_texts(parent.blocks)
    assert not [b for b in parent.blocks if b["type"] == "actions"]


def test_deploy_log_is_uploaded_into_the_same_thread(slack_bot: BotDriver) -> None:
    validation, deploy = slack_bot.deploy_awaiting_approval()
    slack_bot.react(validation.thread_ts, APPROVE, APPROVER1)
    slack_bot.wait_idle()
    slack_bot.command(f"deploy {deploy.id}")
    slack_bot.wait_idle()
    logs = {f.filename: f for f in slack_bot.emulator.files()}
    assert logs[f"{deploy.id}-deploy.log"].thread_ts == validation.thread_ts
    assert "RESULT deploy: PASS" in logs[f"{deploy.id}-deploy.log"].text


# -- buttons -------------------------------------------------------------------------------


def test_approve_button_counts_like_the_reaction(slack_bot: BotDriver) -> None:
    validation, deploy = slack_bot.deploy_awaiting_approval()
    sent = slack_bot.click("approve", deploy.id, APPROVER1, validation.thread_ts)
    assert sent.status == 200
    slack_bot.wait_idle()
    assert slack_bot.thread_texts(validation.thread_ts)[-1] == messages.APPROVALS_MET.format(count=1, required=1, approvers=f"<@{APPROVER1}>", requester=REQUESTER,
        run_id=deploy.id)
    assert slack_bot.store.get_run(deploy.id).state is State.SCHEDULED


def test_reject_button_rejects_the_deploy(slack_bot: BotDriver) -> None:
    validation, deploy = slack_bot.deploy_awaiting_approval()
    slack_bot.click("reject", deploy.id, APPROVER2, validation.thread_ts)
    slack_bot.wait_idle()
    assert slack_bot.thread_texts(validation.thread_ts)[-1] == messages.REJECTED.format(user=APPROVER2,
                                                                                        run_id=deploy.id)
    rejected = slack_bot.store.get_run(deploy.id)
    assert rejected.state is State.REJECTED
    parent = slack_bot.emulator.message(DEPLOYS, validation.thread_ts)
    assert render.run_title(rejected) in block_texts(parent.blocks)
    assert not [b for b in parent.blocks if b["type"] == "actions"]


def test_approve_button_from_the_requester_is_ignored(slack_bot: BotDriver) -> None:
    validation, deploy = slack_bot.deploy_awaiting_approval()
    slack_bot.click("approve", deploy.id, REQUESTER, validation.thread_ts)
    slack_bot.wait_idle()
    assert slack_bot.thread_texts(validation.thread_ts)[-1] == messages.SELF_APPROVAL.format(approvers=QUIETLY)
    assert slack_bot.store.get_run(deploy.id).state is State.AWAITING_APPROVAL


# -- commands ------------------------------------------------------------------------------


def test_unknown_command_gets_ephemeral_help_with_the_closest_command(slack_bot: BotDriver) -> None:
    sent = slack_bot.command("stauts")
    assert sent.status == 200
    (call,) = slack_bot.emulator.wait_for("response_url", where=lambda c: c.args["response_id"] == sent.response_id)
    assert call.args["text"] == "`stauts` is not a /migrate command; did you mean `/migrate status`?"
    assert call.args["response_type"] == "ephemeral"  # one sentence, not the whole help again


def test_report_beyond_slacks_limits_still_posts_and_the_rest_is_in_the_file(slack_bot: BotDriver) -> None:
    slack_bot.dbs.both(USERS_AND_ORDERS)
    many = {f"{i:04d}_table_{i}.sql": f"CREATE TABLE table_{i} (id bigint PRIMARY KEY, note text);\n"
            for i in range(1, 56)}
    slack_bot.write_migrations(many)
    run = slack_bot.validate()
    assert run.state is State.PASSED, run.summary
    (report,) = [m for m in slack_bot.emulator.thread(DEPLOYS, run.thread_ts) if m.text.startswith("RESULT validate")]
    checks_in_log = [line for line in slack_bot.emulator.files()[0].text.splitlines()
                     if line.split(" ", 1)[0] in ("PASSED", "FAILED", "BLOCKER", "WARNING", "HELD")]
    assert len(checks_in_log) > 60
    assert len(report.blocks) <= 50
    assert [c.method for c in slack_bot.emulator.calls() if not c.ok] == []  # nothing refused for its size
    assert block_texts(report.blocks[-1:]).endswith("The full log is attached to this thread.")
    assert "migration.0055_table_55" not in block_texts(report.blocks)
    assert any(line.startswith("PASSED migration.0055_table_55: ") for line in checks_in_log)


def test_approval_on_the_message_that_asks_for_it_counts(slack_bot: BotDriver) -> None:
    """DEPLOY_AWAITING says "react … on this message": the approver does exactly that, on that reply."""
    validation, deploy = slack_bot.deploy_awaiting_approval()
    asking = slack_bot.emulator.thread(DEPLOYS, validation.thread_ts)[-1]
    assert "on this message" in asking.text
    slack_bot.react(asking.ts, APPROVE, APPROVER1)
    slack_bot.wait_idle()
    assert slack_bot.store.get_run(deploy.id).state is State.SCHEDULED


def test_app_home_lists_recent_runs(slack_bot: BotDriver) -> None:
    validation, deploy = slack_bot.deploy_awaiting_approval()
    slack_bot.event({"type": "app_home_opened", "user": APPROVER1, "channel": "D_HOME", "tab": "home"})
    slack_bot.wait_idle()
    view = slack_bot.emulator.home_view(APPROVER1)
    assert view is not None and view["type"] == "home"
    text = block_texts(view["blocks"])
    assert f"deploy {deploy.id} — awaiting approval" in text and f"validate {validation.id} — passed" in text
