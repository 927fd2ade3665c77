"""Run news into Slack through the outbox: ``SlackAnnouncer`` stores messages, ``SlackDeliverer`` sends them.

A run never waits on Slack and never loses a message to it: announcing is
writing a row (``runs/outbox.py`` delivers it, in order per thread, with
retries). What a message says is decided when it is announced — except the
parent message, which always shows the run's state *when it is delivered*,
so a burst of updates is one edit and a late parent is up to date.
"""

from __future__ import annotations

import logging
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.chat import render
from bot.redact import redact
from bot.runs.model import Run
from bot.runs.outbox import DeliveryFailed, Outbox
from bot.runs.store import Delivery, StateStore
from bot.workflow import triage as triage_mod
from bot.workflow.digest import Digest
from bot.workflow.report import Report

log = logging.getLogger(__name__)
# Slack errors a retry cannot fix; anything else (rate limits, 5xx, timeouts) is tried again.
PERMANENT = {"channel_not_found", "not_in_channel", "is_archived", "msg_too_long", "invalid_blocks",
             "invalid_blocks_format", "no_text", "cant_update_message", "message_not_found", "invalid_auth",
             "account_inactive", "token_revoked", "missing_scope", "restricted_action"}


def thread_of(run: Run) -> str:
    """The run whose thread a run's messages go to: a deploy lives in its validation's thread."""
    return run.parent or run.id


class SlackAnnouncer:
    """The runs layer's voice in Slack: every message is stored in the outbox first."""

    def __init__(self, client: WebClient, store: StateStore) -> None:
        self.client = client
        self.store = store
        self.outbox: Outbox | None = None  # set by the composition root; kicked after each message

    def _queue(self, kind: str, payload: dict[str, Any], *, thread: str = "", key: str = "") -> None:
        self.store.enqueue(kind, payload, thread=thread, key=key)
        if self.outbox is not None:
            self.outbox.kick()

    def run_started(self, run: Run) -> str:
        self._queue("parent", {"run": run.id}, thread=run.id, key=f"parent:{run.id}")
        return ""  # the thread's ts arrives when the parent is delivered (lifecycle.sent)

    def run_updated(self, run: Run) -> None:
        """The parent is rendered from the store when delivered; a progress line (shown, never stored) rides along."""
        owner = thread_of(run)
        stored = self.store.get_run(run.id)
        progress = ({"run": run.id, "state": run.state.value, "summary": run.summary}
                    if stored is not None and stored.summary != run.summary else None)
        self._queue("update", {"run": owner, "progress": progress}, thread=owner, key=f"update:{owner}")

    def say(self, run: Run, text: str, *, remember: str = "") -> str | None:
        if text:
            self._queue("reply", {"text": render.chat_commands(redact(text)), "remember": {"run": run.id, "key": remember} if remember
                                  else None}, thread=thread_of(run))
        return None

    def report(self, run: Run, report: Report) -> None:
        text, blocks = render.report_blocks(report)
        self._queue("reply", {"text": text, "blocks": blocks}, thread=thread_of(run))
        findings = triage_mod.triage(report.checks)
        if findings:
            text, blocks = render.triage_blocks(findings)
            self._queue("reply", {"text": text, "blocks": blocks}, thread=thread_of(run))
        log_text = render.terminal_report(report)
        if findings:
            log_text += "\n\n" + triage_mod.render_text(findings)
        self._queue("upload", {"content": redact(log_text), "filename": f"{run.id}-{run.kind.value}.log",
                               "title": f"{run.kind.value} {run.id} log"}, thread=thread_of(run))
        perf_md = report.facts.get("perf_report_md")
        if perf_md:
            self._queue("upload", {"content": redact(str(perf_md)), "filename": f"{run.id}-perf_report.md",
                                   "title": f"perf report {run.id}: before/after plans"}, thread=thread_of(run))

    def thread_link(self, run: Run) -> str:
        if not run.thread_ts:
            return ""
        try:
            return str(self.client.chat_getPermalink(channel=run.channel, message_ts=run.thread_ts)["permalink"])
        except (SlackApiError, OSError) as exc:
            log.warning("chat.getPermalink for %s failed: %s", run.id, _error(exc))
            return ""

    # -- not about a run: sent at once (the SDK's own retries), nothing waits on them --------------
    def post(self, channel: str, text: str) -> str | None:
        try:
            return str(self.client.chat_postMessage(channel=channel, text=redact(text),
                                                    blocks=render.text_blocks(text))["ts"])
        except (SlackApiError, OSError) as exc:
            log.error("posting to %s failed: %s", channel, _error(exc))
            return None

    def digest(self, channel: str, digest: Digest, chart: bytes | None) -> None:
        text, blocks = render.digest_blocks(digest)
        try:
            ts = self.client.chat_postMessage(channel=channel, text=text, blocks=blocks)["ts"]
            if chart:
                self.client.files_upload_v2(channel=channel, thread_ts=ts, file=chart,
                                            filename=f"digest-{digest.source}.png",
                                            title=f"pg_stat_statements digest of {digest.source}: where the time went")
        except (SlackApiError, OSError) as exc:
            log.error("posting the digest of %s to %s failed: %s", digest.source, channel, _error(exc))


class SlackDeliverer:
    """Sends one stored message; raises DeliveryFailed so the outbox retries (or gives up on a permanent error)."""

    def __init__(self, client: WebClient, store: StateStore) -> None:
        self.client = client
        self.store = store

    def deliver(self, d: Delivery, thread_ts: str) -> str | None:
        try:
            return self._send(d, thread_ts)
        except SlackApiError as exc:
            error = exc.response.get("error", "unknown") if exc.response else "unknown"
            retry = exc.response.headers.get("Retry-After") if exc.response is not None else None
            if error in ("invalid_blocks", "invalid_blocks_format") and d.payload.get("blocks"):
                return self._send(d, thread_ts, blocks=False)  # our layout failed Slack's checks: the words still go
            raise DeliveryFailed(error, float(retry) if retry else None,
                                 permanent=error in PERMANENT and d.kind != "parent") from None
        except OSError as exc:  # URLError, timeouts, refused connections
            raise DeliveryFailed(type(exc).__name__) from None

    def _send(self, d: Delivery, thread_ts: str, *, blocks: bool = True) -> str | None:
        p = d.payload
        if d.kind in ("parent", "update"):
            return self._parent(d, thread_ts)
        if d.kind == "dm":
            return str(self.client.chat_postMessage(channel=p["user"], text=p["text"])["ts"])
        run = self.store.get_run(d.thread)
        channel = run.channel if run else ""
        if d.kind == "upload":
            self.client.files_upload_v2(channel=channel, thread_ts=thread_ts or None, content=p["content"],
                                        filename=p["filename"], title=p["title"])
            return None
        extra = {"blocks": p.get("blocks") or render.text_blocks(p["text"])} if blocks else {}
        return str(self.client.chat_postMessage(channel=channel, thread_ts=thread_ts or None, text=p["text"],
                                                **extra)["ts"])

    def _parent(self, d: Delivery, thread_ts: str) -> str | None:
        """The parent message as the run stands now (post it, or edit it in place)."""
        run = self.store.get_run(d.payload["run"])
        if run is None:
            return None
        child = next((r for r in self.store.runs(limit=50) if r.parent == run.id), None)
        run, child = (_with_progress(r, d.payload.get("progress")) if r else r for r in (run, child))
        text, blocks = render.run_message(run, child)
        if d.kind == "parent":
            return str(self.client.chat_postMessage(channel=run.channel, text=text, blocks=blocks)["ts"])
        if run.thread_ts:
            self.client.chat_update(channel=run.channel, ts=run.thread_ts, text=text, blocks=blocks)
        return None


def _with_progress(run: Run, progress: dict[str, Any] | None) -> Run:
    """The progress line the update was for, while the run is still in the state it was shown in."""
    from dataclasses import replace

    if progress and progress["run"] == run.id and progress["state"] == run.state.value:
        return replace(run, summary=progress["summary"])
    return run


def on_sent(lifecycle: Any) -> Any:
    """What a delivered message means for the runs: a parent's ts is its thread; a prompt's ts is remembered."""

    def sent(d: Delivery, ts: str | None) -> None:
        if d.kind == "parent" and ts:
            lifecycle.sent(d.payload["run"], thread_ts=ts)
        remember = d.payload.get("remember") if isinstance(d.payload, dict) else None
        if remember and ts:
            lifecycle.sent(remember["run"], remember=remember["key"], ts=ts)

    return sent


def _error(exc: Exception) -> str:
    if isinstance(exc, SlackApiError) and exc.response:
        return str(exc.response.get("error", "unknown"))
    return type(exc).__name__
