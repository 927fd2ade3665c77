"""Report/Run -> Block Kit and terminal text. Pure functions; Slack's limits respected.

Limits (Slack's, and the undocumented cumulative one): 50 blocks per
message, 3,000 characters per section text, 150 per header, 10 context
elements, and about 12,000 characters of text across all blocks. Long
content is summarised here and the full log goes in the uploaded file, so a
post never fails for size.
"""

from __future__ import annotations

import re
from typing import Any

from bot.redact import redact
from bot.runs.model import Kind, Run, State
from bot.workflow.digest import Digest
from bot.workflow.report import Check, Report, Status
from bot.workflow.triage import Finding

MAX_BLOCKS = 50
MAX_SECTION = 3000
MAX_HEADER = 150
MAX_TOTAL_TEXT = 11000  # below Slack's ~12k cumulative limit, with room for the fallback text
MAX_BUTTON = 75

STATE_ICON = {
    State.REQUESTED: ":hourglass_flowing_sand:", State.RUNNING: ":gear:", State.PASSED: ":white_check_mark:",
    State.FAILED: ":x:", State.ERROR: ":warning:", State.AWAITING_APPROVAL: ":raised_hand:",
    State.SCHEDULED: ":calendar:", State.DEPLOYED: ":rocket:", State.INTERRUPTED: ":double_vertical_bar:",
    State.CANCELLED: ":no_entry_sign:", State.REJECTED: ":no_entry:",
}
STATUS_ICON = {Status.PASSED: ":white_check_mark:", Status.FAILED: ":x:", Status.BLOCKER: ":no_entry:",
               Status.WARNING: ":warning:", Status.HELD: ":pause_button:"}


_CLI_COMMAND = re.compile(r"`migrate-bot (validate|refresh|status|triage|deploy|digest|windows)\b")


def chat_commands(text: str) -> str:
    """In chat, "run `migrate-bot validate`" means `/migrate validate`: the workflow's sentences name the CLI."""
    return _CLI_COMMAND.sub(r"`/migrate \1", text)


def clip(text: str, limit: int) -> str:
    text = chat_commands(redact(text))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": clip(text, MAX_SECTION)}}


def header(text: str) -> dict[str, Any]:
    return {"type": "header", "text": {"type": "plain_text", "text": clip(text, MAX_HEADER)}}


def context(*texts: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": clip(t, 2000)} for t in texts[:10]]}


def _button(text: str, action_id: str, value: str, style: str) -> dict[str, Any]:
    return {"type": "button", "text": {"type": "plain_text", "text": clip(text, MAX_BUTTON)},
            "action_id": action_id, "value": value, "style": style}


def _text_size(blocks: list[dict[str, Any]]) -> int:
    total = 0
    for block in blocks:
        if "text" in block:
            total += len(block["text"]["text"])
        total += sum(len(e.get("text", "")) for e in block.get("elements", []) if isinstance(e.get("text"), str))
    return total


def fit(blocks: list[dict[str, Any]], overflow_note: str) -> list[dict[str, Any]]:
    """Drop trailing blocks until the message is within Slack's limits; say what was left out."""
    kept: list[dict[str, Any]] = []
    note = context(overflow_note)
    budget = MAX_TOTAL_TEXT - _text_size([note])
    for i, block in enumerate(blocks):
        if len(kept) >= MAX_BLOCKS - 1 or _text_size(kept + [block]) > budget:
            return kept + [context(f"{len(blocks) - i} more item(s) not shown. {overflow_note}")]
        kept.append(block)
    return kept


def run_title(run: Run) -> str:
    return f"{STATE_ICON.get(run.state, '')} {run.kind.value} {run.id} — {run.state.value.replace('_', ' ')}"


def run_message(run: Run, deploy: Run | None = None) -> tuple[str, list[dict[str, Any]]]:
    """The parent message of a run's thread (edited in place as it advances)."""
    facts = run.facts()
    blocks = [header(f"migrate-bot · {run.kind.value} {run.id}"),
              section(f"*{run_title(run)}*\n{run.summary}" if run.summary else f"*{run_title(run)}*"),
              context(*facts)]
    if deploy is not None:
        blocks.append(section(f"*{run_title(deploy)}*\n{deploy.summary}"))
        if deploy.state in (State.AWAITING_APPROVAL, State.SCHEDULED):
            blocks.append(_approval_actions(deploy))
    elif run.kind in (Kind.DEPLOY, Kind.UNBLOCK) and run.state is State.AWAITING_APPROVAL:
        blocks.append(_approval_actions(run))
    return redact(run_title(run)), blocks


def _approval_actions(run: Run) -> dict[str, Any]:
    return {"type": "actions", "block_id": f"approval:{run.id}",
            "elements": [_button("Approve", "approve", run.id, "primary"), _button("Reject", "reject", run.id, "danger")]}


def check_line(check: Check) -> str:
    return f"{STATUS_ICON[check.status]} `{check.name}` {check.message}"


def report_blocks(report: Report) -> tuple[str, list[dict[str, Any]]]:
    """Per-check details grouped per migration: failures first, then the rest."""
    text = report.summary()
    blocks: list[dict[str, Any]] = [section(f"*{text}*")]
    if report.error:
        blocks.append(section(f":warning: {report.error}"))
    failing = [c for c in report.checks if c.status.fails_gate]
    others = [c for c in report.checks if not c.status.fails_gate]
    for group in _grouped(failing) + _grouped(others):
        blocks.append(section("\n".join(group)))
    return redact(text), fit(blocks, "The full log is attached to this thread.")


def _grouped(checks: list[Check]) -> list[list[str]]:
    """Lines grouped per migration (general checks first), each group within a section's limit."""
    groups: dict[str, list[str]] = {}
    for check in checks:
        groups.setdefault(check.migration or "", []).append(check_line(check))
    out: list[list[str]] = []
    for migration, lines in groups.items():
        chunk: list[str] = [f"*{migration}*"] if migration else []
        for line in lines:
            if sum(len(x) + 1 for x in chunk) + len(line) > MAX_SECTION - 10:
                out.append(chunk)
                chunk = []
            chunk.append(clip(line, MAX_SECTION - 10))
        if chunk:
            out.append(chunk)
    return out


def triage_blocks(findings: list[Finding]) -> tuple[str, list[dict[str, Any]]]:
    text = f"Triage: {len(findings)} failure(s) to fix before deploying"
    blocks = [section(f"*{text}*")]
    for f in findings:
        fix = clip(f.fix, MAX_SECTION - 200)
        blocks.append(section(f"*{f.title}* — `{'`, `'.join(f.checks)}`\n{clip(f.why, 150)}\n```{fix}```"))
    return redact(text), fit(blocks, "See the attached log for the rest.")


def text_blocks(text: str) -> list[dict[str, Any]]:
    return [section(text)]


def home_view(runs: list[Run]) -> dict[str, Any]:
    """The App Home tab: what the bot is doing and the recent runs, newest first."""
    blocks = [header("migrate-bot"),
              section("Type `/migrate validate` in a channel with the bot to run the pending migrations on staging; "
                      "`/migrate help` lists every command.")]
    if not runs:
        blocks.append(context("No runs yet."))
    for run in runs[:20]:
        blocks.append(section(f"*{run_title(run)}*\n{run.summary}" if run.summary else f"*{run_title(run)}*"))
        blocks.append(context(*run.facts()))
    return {"type": "home", "blocks": fit(blocks, "`/migrate history` lists more.")}


# -- digests ----------------------------------------------------------------------
def digest_blocks(d: Digest) -> tuple[str, list[dict[str, Any]]]:
    """A digest as Block Kit: the period and caveats, the top statements, new ones, regressions, since the deploy.

    Sentences come from ``workflow.digestrender`` so the terminal, the CLI and
    Slack say the same; only the layout is Slack's. Long content is cut by
    ``fit``; the full text is in the CLI (`migrate-bot digest`).
    """
    from bot.workflow import digestrender as dr

    blocks: list[dict[str, Any]] = [header(dr.headline(d)[:MAX_HEADER]), context(dr.period_line(d))]
    blocks += [section(f":warning: {note}") for note in dr.notes(d)]
    if d.top:
        lines = [f"{i}. *{r.name}*{' _(new)_' if r.new else ''} — {dr.pct(r.share)} · {dr.ms(r.total_ms)} total · "
                 f"{dr.count(r.calls)} calls · mean {dr.ms(r.mean_ms)} · {r.rows_per_call:,.1f} rows/call · "
                 f"hit {dr.pct(r.hit_ratio)} · temp {dr.count(r.temp_blks)}\n`{dr.shorten(r.query, 160)}`"
                 for i, r in enumerate(d.top, 1)]
        blocks += [section(f"*Top {len(d.top)} statements by total time*")] + _chunks(lines)
    else:
        blocks.append(section("No statement ran in this database in the period."))
    if d.regressions:
        blocks.append(section(f"*{dr.regressions_title(d)}: {dr.count(d.regressions_count)}*"))
        blocks += _chunks([f":small_red_triangle: {dr.regression_line(r)}\n`{dr.shorten(r.row.query, 160)}`"
                           for r in d.regressions])
    if d.new:
        blocks.append(section(f"*New since the previous snapshot: {dr.count(d.new_count)}*"))
        blocks += _chunks([f"• *{r.name}* — {dr.count(r.calls)} calls, {dr.ms(r.total_ms)} total, mean "
                           f"{dr.ms(r.mean_ms)}" for r in d.new])
    if d.since_deploy:
        s = d.since_deploy
        link = f" — <{s.thread_url}|its thread>" if s.thread_url else ""
        title = dr.deploy_line(replace_url(s)) + link
        rows = [dr.deploy_missing(s)] if s.missing else [dr.deploy_row_line(r) for r in s.rows] or [
            "No statement ran since the deploy."]
        blocks += [section(f"*{title}*")] + _chunks([f"• {line}" for line in rows])
    return redact(dr.headline(d)), fit(blocks, "`migrate-bot digest` prints all of it.")


def replace_url(s: Any) -> Any:
    """The since-deploy section without its URL in the title (Slack shows it as a link instead)."""
    from dataclasses import replace as dc_replace

    return dc_replace(s, thread_url="")


def _chunks(lines: list[str]) -> list[dict[str, Any]]:
    """Lines packed into sections within Slack's per-section limit."""
    out, chunk = [], ""
    for line in lines:
        if chunk and len(chunk) + len(line) + 1 > MAX_SECTION - 10:
            out.append(section(chunk))
            chunk = ""
        chunk = f"{chunk}\n{line}" if chunk else line
    return out + ([section(chunk)] if chunk else [])


# -- terminal ---------------------------------------------------------------------
_SLACK_DATE = re.compile(r"<!date\^[^|>]*\|([^>]*)>")


def terminal_text(text: str) -> str:
    """Slack's date tokens (``<!date^…|fallback>``) read as their fallback in a terminal."""
    return _SLACK_DATE.sub(r"\1", text)


def terminal_run(run: Run) -> str:
    line = f"[{run.id}] {run.kind.value}: {run.state.value.replace('_', ' ')}"
    return redact(line + (f" — {run.summary}" if run.summary else ""))


def terminal_report(report: Report) -> str:
    return "\n".join(report.lines())
