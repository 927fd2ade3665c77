"""People's commands -> policy -> lifecycle -> a Reply. No Slack here, and no transitions written directly.

Chat faces (Slack, the terminal) parse text into a command and call one
function here; what comes back is the immediate answer (ephemeral in
Slack). Thread news goes out through the announcer as the lifecycle moves
runs. Decisions about *who* live in ``policy``, about *when* in
``planning``; this module only strings them together.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timezone

from bot import messages
from bot.runs import execution, planning, policy, traffic, windows
from bot.runs.announcer import Reply
from bot.runs.lifecycle import StaleRun
from bot.runs.model import Approval, Kind, Run, State, can_move, new_run_id
from bot.runs.runtime import Runtime
from bot.runs.store import Lease, StateStore
from bot.workflow import triage as triage_mod
from bot.workflow.report import Report, Status

log = logging.getLogger(__name__)


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


@dataclass
class Commands:
    rt: Runtime

    # -- starting runs ---------------------------------------------------------------------------
    def start(self, kind: Kind, user: str, channel: str, ref: str | None = None) -> Reply:
        """validate / refresh (queued for their environment) and unblock (lists at once)."""
        rt = self.rt
        for decision in (policy.in_channel(rt.settings.slack, channel),
                         policy.may_start(rt.settings.policy, user, rt.groups)):
            if not decision.allowed:
                return Reply(False, decision.reason)
        if ref and not rt.settings.migrations.repo:
            return Reply(False, messages.REF_WITHOUT_REPO.format(folder=f"`{rt.settings.migrations.dir}`", ref=ref))
        run = rt.lifecycle.create(Run(id=new_run_id(), kind=kind, state=State.REQUESTED, requested_by=user,
                                      channel=channel, ref=ref or ""), opening=True)
        run = rt.lifecycle.open_thread(run)
        if kind is Kind.UNBLOCK:
            rt.executor.submit(run.id, lambda: execution.list_idle(rt, run.id))
            return Reply(True, messages.STARTED.format(run_id=run.id, kind=kind.value, env=run.env), run)
        started = execution.dispatch(rt, run.env)
        if started is not None and started.id == run.id:
            return Reply(True, messages.STARTED.format(run_id=run.id, kind=kind.value, env=run.env), run)
        return self._queued(run)

    def _queued(self, run: Run) -> Reply:
        rt = self.rt
        fresh = rt.store.get_run(run.id) or run
        if fresh.state is not State.REQUESTED:  # it started meanwhile (the holder finished)
            return Reply(True, messages.STARTED.format(run_id=run.id, kind=run.kind.value, env=run.env), fresh)
        holder_id = rt.lifecycle.holder(run.env) or "another run"
        position = execution.position(rt, run)
        holder = self._holder_text(run.env, holder_id)
        rt.announcer.say(run, messages.QUEUED_THREAD.format(env=run.env, position=position, holder=holder))
        return Reply(True, messages.QUEUED.format(run_id=run.id, kind=run.kind.value, env=run.env, position=position,
                                                  holder=holder), run)

    def _holder_text(self, env: str, holder_id: str) -> str:
        holder = self.rt.store.get_run(holder_id)
        if holder is None:
            return holder_id
        url = self.rt.announcer.thread_link(holder) if holder.thread_ts else ""
        where = f" — <{url}|its thread>" if url else ""
        return f"{holder.id} ({holder.kind.value}, asked by <@{holder.requested_by}>){where}"

    def busy_text(self, env: str, holder_id: str) -> str:
        holder = self.rt.store.get_run(holder_id)
        if holder is None:
            return messages.ENV_BUSY.format(env=env, holder=holder_id, kind="run", state="unknown", by="?", link="")
        url = self.rt.announcer.thread_link(holder) if holder.thread_ts else ""
        link = (f" — <{url}|its thread>" if url else f" — its thread is in <#{holder.channel}>" if holder.channel
                else "")
        return messages.ENV_BUSY.format(env=env, holder=holder.id, kind=holder.kind.value, state=holder.state.value,
                                        by=holder.requested_by, link=link)

    # -- approvals -------------------------------------------------------------------------------
    def react(self, channel: str, ts: str, user: str, reaction: str, added: bool) -> Reply | None:
        """A reaction on a run's message; None when it is not ours to count."""
        run = self.rt.store.run_by_message(channel, ts)
        if run is None or run.kind not in (Kind.DEPLOY, Kind.UNBLOCK):
            return None
        if run.state not in (State.AWAITING_APPROVAL, State.SCHEDULED):
            return None  # a reaction on an old run's thread is just a reaction: nothing to say, nobody to ping
        slack = self.rt.settings.slack
        if reaction == slack.approve_reaction:
            return self.approve(run.id, user) if added else self.revoke(run.id, user)
        if reaction == slack.reject_reaction and added:
            return self.reject(run.id, user)
        return None

    def _approvable(self, run_id: str, too_late: str) -> Run | Reply:
        """The run an approval or a revocation is about, or the reply saying why there is none."""
        run = self.rt.store.get_run(run_id)
        if run is None:
            return Reply(False, messages.NO_SUCH_RUN.format(run_id=run_id))
        if run.state not in (State.AWAITING_APPROVAL, State.SCHEDULED):
            return self._tell(run, too_late.format(run_id=run.id, state=run.state.value), False)
        return run

    def approve(self, run_id: str, user: str) -> Reply:
        rt = self.rt
        run = self._approvable(run_id, messages.APPROVE_WRONG_STATE)
        if isinstance(run, Reply):
            return run
        decision = policy.may_approve(rt.settings.policy, user, run, rt.groups)
        if not decision.allowed:
            return self._tell(run, decision.reason, False)
        rt.store.put_approval(Approval(run.id, user, "approve", run.fingerprint, _now_iso()))
        return self._recount(run, user)

    def _recount(self, run: Run, user: str) -> Reply:
        rt = self.rt
        p = rt.settings.policy
        approvers = planning.counted_approvals(rt, run)
        count = len(approvers)
        if count < p.approvals_required:
            return self._tell(run, messages.APPROVAL_COUNTED.format(user=user, count=count,
                                                                    required=p.approvals_required), True)
        if run.kind is Kind.UNBLOCK:
            run = rt.lifecycle.move(run, State.SCHEDULED) if run.state is State.AWAITING_APPROVAL else run
            self._tell(run, messages.UNBLOCK_APPROVED.format(user=user), True)
            rt.executor.submit(run.id, lambda: execution.terminate(rt, run.id))
            return Reply(True, messages.UNBLOCK_APPROVED.format(user=user), run)
        if run.state is State.SCHEDULED:  # already approved: this approval may complete an override
            if run.data.get("override_asked") and count >= p.approvals_required + 1:
                return self._override(run, run.data["override_asked"])
            return self._tell(run, messages.APPROVAL_COUNTED.format(user=user, count=count,
                                                                    required=p.approvals_required), True)
        run = rt.lifecycle.move(run, State.SCHEDULED)
        if rt.calendar.always_open:
            return self._tell(run, messages.APPROVALS_MET.format(count=count, required=p.approvals_required,
                                                                 approvers=messages.who(approvers),
                                                                 requester=run.requested_by, run_id=run.id), True)
        text = messages.APPROVALS_MET_PLANNING.format(count=count, required=p.approvals_required,
                                                      approvers=messages.who(approvers))
        self._tell(run, text, True)
        rt.executor.submit(run.id, lambda: planning.plan(rt, run.id))
        return Reply(True, text, run)

    def revoke(self, run_id: str, user: str) -> Reply:
        rt = self.rt
        run = self._approvable(run_id, messages.REVOKE_TOO_LATE)
        if isinstance(run, Reply):
            return run
        if not rt.store.revoke_approval(run.id, user):
            return Reply(False, "", run)  # a reaction that never counted: nothing to say
        p = rt.settings.policy
        count = len(planning.counted_approvals(rt, run))
        if run.state is State.SCHEDULED and count < p.approvals_required:
            planning.unschedule(rt, run)
            run = rt.lifecycle.move(run, State.AWAITING_APPROVAL, scheduled_for="",
                                    data={k: v for k, v in run.data.items() if k not in ("job_id", "waiting_since")})
        return self._tell(run, messages.APPROVAL_REVOKED.format(user=user, count=count,
                                                                required=p.approvals_required), True)

    def reject(self, run_id: str, user: str) -> Reply:
        rt = self.rt
        run = rt.store.get_run(run_id)
        if run is None:
            return Reply(False, messages.NO_SUCH_RUN.format(run_id=run_id))
        decision = policy.may_approve(rt.settings.policy, user, run, rt.groups)
        if not decision.allowed or run.state not in (State.AWAITING_APPROVAL, State.SCHEDULED):
            reason = decision.reason or messages.APPROVE_WRONG_STATE.format(run_id=run.id, state=run.state.value)
            return self._tell(run, reason, False)
        rt.store.put_approval(Approval(run.id, user, "reject", run.fingerprint, _now_iso()))
        planning.unschedule(rt, run)
        run = rt.lifecycle.move(run, State.REJECTED, summary=f"rejected by {user}")
        return self._tell(run, messages.REJECTED.format(user=user, run_id=run.id), True)

    def _tell(self, run: Run, text: str, ok: bool) -> Reply:
        self.rt.announcer.say(run, text)
        return Reply(ok, text, run)

    # -- deploying -------------------------------------------------------------------------------
    def deploy(self, run_id: str | None, user: str, *, now: bool = False, resume: bool = False) -> Reply:
        rt = self.rt
        run = rt.store.get_run(run_id) if run_id else rt.store.latest_run(Kind.DEPLOY)
        if run is None:
            return Reply(False, messages.NO_SUCH_RUN.format(run_id=run_id or "(latest deploy)"))
        if run.kind is not Kind.DEPLOY:
            return Reply(False, self._not_a_deploy(run), run)
        decision = policy.may_deploy(rt.settings.policy, user, run, rt.groups)
        if not decision.allowed:
            return Reply(False, decision.reason, run)
        if run.state is State.INTERRUPTED:
            taken_up = self._take_up(run, user, resume)
            if not isinstance(taken_up, Run):
                return taken_up
            run = taken_up
        refusal = self._deploy_state_refusal(run)
        if refusal:
            return Reply(False, refusal, run)
        if run.data.get("deployed_by") != user:  # who pressed go is who applied it (history's applied_by)
            run = rt.lifecycle.update(run, data=dict(run.data, deployed_by=user))
        if now:
            return self._ask_override(run, user)
        cal, moment = rt.calendar, rt.now()
        if cal.always_open:
            freeze = windows.active_freeze(cal, moment)
            if freeze is not None:
                return Reply(False, messages.DEPLOY_FROZEN.format(until=windows.slack_date(freeze.end),
                                                                  freeze=freeze.text, run_id=run.id), run)
            return self._start_deploy(run)
        if run.data.get("unschedulable"):
            return Reply(False, messages.DEPLOY_NO_WINDOW_FITS.format(run_id=run.id), run)
        fired = planning.fire(rt, run.id, manual=True)
        if fired is not None and fired.action == "go":
            return Reply(True, messages.DEPLOYING.format(run_id=run.id), rt.store.get_run(run.id))
        fresh = rt.store.get_run(run.id) or run
        if fresh.scheduled_for and fresh.state is State.SCHEDULED:
            when = windows.slack_date(datetime.fromisoformat(fresh.scheduled_for))
            return Reply(False, messages.DEPLOY_WAITS_FOR_WINDOW.format(run_id=run.id, when=when), fresh)
        return Reply(False, fired.text if fired else messages.DEPLOY_OVER.format(run_id=run.id,
                                                                                 state=fresh.state.value), fresh)

    def _take_up(self, run: Run, user: str, resume: bool) -> Run | Reply:
        """An interrupted deploy goes back to ``scheduled`` when prod's remaining set is still the approved one.

        No new validation or approval: the approval bound a set, and what is left of it is checked against
        prod's history right now (``resume.remaining``). Continuing a half-applied migration takes an approver.
        """
        rt = self.rt
        found = rt.workflow.interrupted(rt.settings, run)
        if found.exit_code == 2:
            return Reply(False, messages.REDEPLOY_REFUSED.format(run_id=run.id, why=found.error), run)
        partial = found.facts.get("partial") or []
        if not found.facts.get("expect_pending"):
            return Reply(False, messages.REDEPLOY_REFUSED.format(run_id=run.id, why=messages.REDEPLOY_SET_CHANGED), run)
        if partial and not resume:
            lines = "\n".join(c.line() for c in found.checks if c.status is Status.FAILED)
            return Reply(False, messages.REDEPLOY_NEEDS_RESUME.format(run_id=run.id, lines=lines), run)
        if partial:
            decision = policy.may_resume(rt.settings.policy, user, run, rt.groups)
            if not decision.allowed:
                return Reply(False, decision.reason, run)
            stuck = [p for p in partial if not p["resumable"]]
            if stuck:
                lines = "\n".join(c.message for c in found.checks if c.status is Status.FAILED)
                return Reply(False, messages.REDEPLOY_REFUSED.format(run_id=run.id, why=lines), run)
        data = dict(run.data, resume=bool(partial), expect_pending=found.facts["expect_pending"], deployed_by=user)
        for stale in ("estimate_s", "job_id", "waiting_since", "window_end", "unschedulable"):
            data.pop(stale, None)  # the rest is re-estimated and re-planned
        left = [p["migration"] for p in partial] + list(found.facts.get("pending", []))
        run = rt.lifecycle.move(run, State.SCHEDULED, owner="", scheduled_for="", data=data,
                                summary=f"taken up again: {len(left)} migration(s) left")
        how = " from where it stopped" if partial else ""
        rt.announcer.say(run, messages.REDEPLOYING.format(user=user, run_id=run.id, how=how, left=", ".join(left)))
        if not rt.calendar.always_open:  # into the next window that fits, as an approval does
            run = planning.plan(rt, run.id) or run
        return run

    def _not_a_deploy(self, run: Run) -> str:
        offered = [r for r in self.rt.store.runs(kinds=[Kind.DEPLOY], limit=200) if r.parent == run.id]
        what = (messages.NOT_A_DEPLOY_OFFERED.format(deploy=offered[0].id) if offered
                else messages.NOT_A_DEPLOY_NONE)
        return messages.NOT_A_DEPLOY.format(run_id=run.id, kind=run.kind.value, what=what)

    def _deploy_state_refusal(self, run: Run) -> str:
        p = self.rt.settings.policy
        if run.state is State.SCHEDULED:
            return ""
        if run.state is State.AWAITING_APPROVAL:
            return messages.NOT_APPROVED.format(run_id=run.id, state=run.state.value, required=p.approvals_required,
                                                approvers=messages.who(p.approvers))
        if run.state is State.DEPLOYED:
            return messages.DEPLOY_DONE_ALREADY.format(run_id=run.id)
        if run.state is State.RUNNING:
            return messages.DEPLOY_IN_PROGRESS.format(run_id=run.id)
        return messages.DEPLOY_OVER.format(run_id=run.id, state=run.state.value)

    def _start_deploy(self, run: Run) -> Reply:
        started = execution.start_deploy(self.rt, run)
        if isinstance(started, Lease):
            return Reply(False, self.busy_text("prod", started.run_id), run)
        return Reply(True, messages.DEPLOYING.format(run_id=run.id), started)

    def _ask_override(self, run: Run, user: str) -> Reply:
        """`deploy <run> now`: outside the windows, with one approver more than a normal deploy."""
        rt = self.rt
        cal = rt.calendar
        if cal.always_open and windows.active_freeze(cal, rt.now()) is None:
            return Reply(False, messages.OVERRIDE_NOT_NEEDED.format(run_id=run.id), run)
        p = rt.settings.policy
        count = len(planning.counted_approvals(rt, run))
        if count >= p.approvals_required + 1:
            return self._override(run, user)
        run = rt.lifecycle.update(run, data=dict(run.data, override_asked=user))
        text = messages.OVERRIDE_ASKED.format(user=user, run_id=run.id, needed=p.approvals_required + 1, count=count,
                                              approvers=messages.who(p.approvers),
                                              reaction=rt.settings.slack.approve_reaction)
        rt.announcer.say(run, text, remember="override_prompt_ts")  # a second approver reacts on it
        return Reply(True, text, run)

    def _override(self, run: Run, asked_by: str) -> Reply:
        rt = self.rt
        approvers = planning.counted_approvals(rt, run)
        record = {"asked_by": asked_by, "approved_by": approvers, "at": _now_iso()}
        run = rt.lifecycle.update(run, data=dict(run.data, override=record))
        planning.unschedule(rt, run)
        started = execution.start_deploy(rt, run)
        if isinstance(started, Lease):
            return Reply(False, self.busy_text("prod", started.run_id), run)
        text = messages.FIRE_GO_OVERRIDE.format(approvers=messages.who(approvers))
        log.warning("deploy %s overrides the deploy windows: asked by %s, approved by %s", run.id, asked_by,
                    ", ".join(approvers))
        self._tell(started, text, True)
        return Reply(True, text, started)

    # -- reading ---------------------------------------------------------------------------------
    def status(self, run_id: str | None) -> Reply:
        rt = self.rt
        if run_id:
            run = rt.store.get_run(run_id)
            if run is None:
                return Reply(False, messages.NO_SUCH_RUN.format(run_id=run_id))
            return Reply(True, self._detail(run), run)
        latest = (rt.store.runs(limit=1) or [None])[0]
        if latest is None:
            return Reply(True, messages.NO_RUNS)
        lines = [self._detail(latest)] + self._queue_lines() + self._schedule_lines()
        return Reply(True, "\n".join(lines), latest)

    def _detail(self, run: Run) -> str:
        """`/migrate status`: the run's line, then when, how long, who approved and what it is doing."""
        now = self.rt.now()
        lines = [describe(run), f"asked {_ago(run.created_at, now)}, last change {_ago(run.updated_at, now)}"]
        if run.state is State.RUNNING:
            lines[-1] += f"; running for {_span(run.updated_at, now)}"
        if run.kind in (Kind.DEPLOY, Kind.UNBLOCK):
            approvers = planning.counted_approvals(self.rt, run)
            lines.append(f"approved by {messages.who(approvers)}" if approvers else "no approval yet")
            if run.data.get("deployed_by"):
                lines.append(f"deployed by <@{run.data['deployed_by']}>")
        return "\n".join(lines)

    def _queue_lines(self) -> list[str]:
        lines = []
        for env in ("staging", "prod"):
            waiting = self.rt.store.queue(env)
            if waiting:
                holder = self.rt.lifecycle.holder(env)
                lines.append(f"Queue for {env} (busy with {holder or 'nobody'}): "
                             + ", ".join(f"{i}. {r.id} {r.kind.value} by <@{r.requested_by}>"
                                         for i, r in enumerate(waiting, 1)))
        return lines

    def _schedule_lines(self) -> list[str]:
        scheduled = self.rt.store.runs(states=[State.SCHEDULED], kinds=[Kind.DEPLOY], limit=50)
        return (["Scheduled: " + "; ".join(f"{r.id} {planning.describe_schedule(r)}" for r in
                                           sorted(scheduled, key=lambda r: r.scheduled_for or "~"))]
                if scheduled else [])

    def history(self, limit: int = 10) -> Reply:
        runs = self.rt.store.runs(limit=limit)
        if not runs:
            return Reply(True, messages.NO_RUNS)
        return Reply(True, "\n".join(f"{_when(r.created_at)} · {describe(r)}" for r in runs))

    def triage(self, run_id: str) -> Reply:
        run = self.rt.store.get_run(run_id)
        if run is None:
            return Reply(False, messages.NO_SUCH_RUN.format(run_id=run_id))
        checks = Report.from_json(run.report).checks if run.report else []
        findings = triage_mod.triage(checks)
        if not findings:
            return Reply(True, messages.NOTHING_TO_TRIAGE.format(run_id=run.id), run)
        return Reply(True, triage_mod.render_text(findings), run)

    def windows(self) -> Reply:
        """The next openings, and (after a week of samples) whether they are really the quiet hours."""
        return Reply(True, "\n".join(windows_lines(self.rt.calendar, self.rt.store, self.rt.now())))

    def digest(self, env: str | None, user: str, channel: str) -> Reply:
        """Post the digest of ``env`` (default: the configured databases) in the channel it was asked in."""
        rt = self.rt
        decision = policy.in_channel(rt.settings.slack, channel)
        if not decision.allowed:
            return Reply(False, decision.reason)
        envs = [env] if env else list(rt.settings.digest.databases)
        rt.executor.submit(f"digest-{channel}", lambda: execution.post_digests(rt, channel, envs))
        return Reply(True, messages.DIGEST_POSTING.format(env=", ".join(envs)))

    def cancel(self, run_id: str, user: str) -> Reply:
        rt = self.rt
        run = rt.store.get_run(run_id)
        if run is None:
            return Reply(False, messages.NO_SUCH_RUN.format(run_id=run_id))
        decision = policy.may_cancel(rt.settings.policy, user, run, rt.groups)
        if not decision.allowed:
            return Reply(False, decision.reason, run)
        if not can_move(run.state, State.CANCELLED, run.kind):
            return Reply(False, messages.CANNOT_CANCEL.format(run_id=run.id, state=run.state.value), run)
        planning.unschedule(rt, run)
        try:
            run = rt.lifecycle.move(run, State.CANCELLED, summary=f"cancelled by {user}", scheduled_for="")
        except StaleRun:
            fresh = rt.store.get_run(run.id) or run
            return Reply(False, messages.CANNOT_CANCEL.format(run_id=run.id, state=fresh.state.value), fresh)
        return self._tell(run, messages.CANCELLED.format(user=user, run_id=run.id), True)


def windows_lines(cal: windows.Calendar, store: StateStore, now: datetime) -> list[str]:
    """What `/migrate windows` and `migrate-bot windows` show: the next openings, then the quiet hours."""
    lines: list[str] = []
    freeze = windows.active_freeze(cal, now)
    if freeze is not None:
        lines.append(f"Frozen now: {freeze.text} (until {windows.slack_date(freeze.end)}).")
    current = windows.current_opening(cal, now)
    if cal.always_open and not cal.freezes:
        lines.append("No deploy windows are configured (`deploy.windows`): approved deploys run on command.")
    else:
        if current is not None:
            lines.append(f"Open now, until {windows.slack_date(current.end)}.")
        lines.append("Next deploy windows:")
        lines += [f"• {windows.describe(o)}" for o in windows.next_openings(cal, now, 3)]
    samples = traffic_samples(store)
    if traffic.has_a_week(samples):
        lines += traffic.render(traffic.quietest_hours(samples, cal.tz), traffic.window_traffic(samples, cal),
                                tz=cal.tz, span=traffic.sampled_span(samples))
    else:
        days = traffic.sampled_span(samples).total_seconds() / 86400
        lines.append(f"Quiet hours: shown after a week of hourly traffic samples ({days:.1f} days so far).")
    return lines


def traffic_samples(store: StateStore) -> list[traffic.Sample]:
    return [traffic.Sample(datetime.fromisoformat(s.taken_at), int(s.data.get("xact", 0)), int(s.data.get("active", 0)))
            for s in store.samples(traffic.SERIES, "prod")]


def describe(run: Run) -> str:
    parts = [f"{run.id} {run.kind.value} — {run.state.value}", *run.facts()]
    if run.state is State.SCHEDULED and run.kind is Kind.DEPLOY:
        parts.append(planning.describe_schedule(run))
    if run.summary:
        parts.append(run.summary)
    return " · ".join(parts)


def _when(iso: str) -> str:
    return datetime.fromisoformat(iso).astimezone(timezone.utc).strftime("%m-%d %H:%M UTC") if iso else "?"


def _span(iso: str, now: datetime) -> str:
    seconds = max(0.0, (now - datetime.fromisoformat(iso)).total_seconds()) if iso else 0.0
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def _ago(iso: str, now: datetime) -> str:
    return f"{_span(iso, now)} ago ({_when(iso)})" if iso else "at an unknown time"
