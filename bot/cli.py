"""`migrate-bot`: one subcommand per workflow step, each a few lines of glue.

Load settings -> call one library function -> print the Report's lines ->
exit with its code (0 pass, 1 gate failed, 2 could not run). Every error is a
sentence with a next step; tracebacks only with MIGRATE_BOT_DEBUG=1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, NoReturn, Sequence

from bot import config as config_mod
from bot import logs, messages
from bot.errors import EXIT_COULD_NOT_RUN, EXIT_FAILED, MigrateBotError
from bot.interrupts import second_stop_leaves_at_once, sigterm_like_ctrl_c
from bot.migrations.source import FORMATS
from bot.redact import redact
from bot.workflow.report import Report

COMMANDS: dict[str, tuple[str, str]] = {}  # name -> (summary, example), for --help and tests


class Parser(argparse.ArgumentParser):
    """argparse with errors as one sentence plus a next step, exit 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"error: {message}. Run `{self.prog} --help` for usage and an example.\n")
        raise SystemExit(EXIT_COULD_NOT_RUN)


def _write(path: str | None, text: str) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(redact(text) + "\n", encoding="utf-8")


def emit(report: Report, args: argparse.Namespace, head: str | None = None) -> int:
    """Print the report's lines (after ``head``, the run line, when there is one); write --log/--json; return the
    exit code."""
    lines = ([head] if head else []) + report.lines()
    for line in lines:
        print(line)
    _write(getattr(args, "log", None), "\n".join(lines))
    _write(getattr(args, "json", None), report.to_json())
    return report.exit_code


def _settings(args: argparse.Namespace) -> config_mod.Settings:
    return config_mod.load(args.config, migrations_dir=getattr(args, "migrations", None), state_path=args.state)


def _store(settings: config_mod.Settings):
    from bot.runs.store import open_state

    return open_state(settings)


def applied_by() -> str:
    """Who runs this command, for the history rows: $MIGRATE_BOT_USER, else the OS user."""
    import getpass

    named = os.environ.get("MIGRATE_BOT_USER", "").strip()
    if named:
        return named
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry (a bare container uid)
        return f"uid {os.getuid()}" if hasattr(os, "getuid") else "unknown"


def new_run(step: str) -> tuple[str, str, str]:
    """(run id, who, the first line of output): the CLI's runs are recorded like the bot's."""
    from bot.runs.model import new_run_id

    run_id, who = new_run_id(), applied_by()
    return run_id, who, f"RUN {run_id}: {step} by {who}"


def cmd_validate(args: argparse.Namespace) -> int:
    from bot.pg import run_context
    from bot.workflow import validate

    settings = _settings(args)
    run_id, who, head = new_run("validate")
    options = validate.GateOptions(install_extensions=True if args.install_extensions else None, run_id=run_id,
                                   requested_by=who)
    with run_context(run_id):
        return emit(validate.run(settings, _store(settings), options), args, head)


def cmd_deploy(args: argparse.Namespace) -> int:
    from bot.pg import run_context
    from bot.runs import windows
    from bot.workflow import deploy

    settings = _settings(args)
    d = settings.deploy
    cal = windows.parse_calendar(d.windows, d.freezes, d.timezone)
    run_id, who, head = new_run("deploy")
    gate = _window_gate(cal, args)
    if gate is not None and not gate.open:
        return emit(_outside_window(gate), args, head)
    options = deploy.DeployOptions(env_flag=os.environ.get("STAGING_VALIDATION_PASSED", "").lower() == "true",
                                   deadline=gate.deadline if gate else None, on_deadline=d.on_window_close,
                                   run_id=run_id, requested_by=who, resume=args.resume)
    with run_context(run_id):
        report = deploy.run(settings, _store(settings), options)
    if gate is None and not (cal.always_open and not cal.freezes):
        report.warning("deploy-window", messages.CLI_OVERRIDE)
    return emit(report, args, head)


def _window_gate(cal, args: argparse.Namespace):
    """None with --now; otherwise the gate, after sleeping until the next window with --wait."""
    from bot.runs import windows

    if args.now:
        if not (cal.always_open and not cal.freezes):
            print("deploying outside the deploy windows (--now): this override is logged", file=sys.stderr)
        return None
    gate = windows.gate(cal, datetime.now(timezone.utc))
    if not gate.open and args.wait and gate.next is not None:
        print(f"waiting for the deploy window {windows.describe(gate.next)} (Ctrl-C stops waiting)", file=sys.stderr)
        while datetime.now(timezone.utc) < gate.next.start:
            time.sleep(min(30.0, max(0.05, (gate.next.start - datetime.now(timezone.utc)).total_seconds())))
        gate = windows.gate(cal, datetime.now(timezone.utc))
    return gate


def _outside_window(gate) -> Report:
    from bot.runs import windows

    report = Report(step="deploy")
    if gate.next is None:
        report.blocker("deploy-window", messages.CLI_NO_WINDOW_AHEAD)
    else:
        frozen = f" (frozen: {gate.freeze.text})" if gate.freeze else ""
        report.blocker("deploy-window", messages.CLI_OUTSIDE_WINDOW.format(
            frozen=frozen, next=f"{windows.describe(gate.next)} ({_in(gate.next.start)})"))
    return report.finish()


def _in(moment: datetime) -> str:
    seconds = (moment - datetime.now(timezone.utc)).total_seconds()
    return f"in {seconds / 3600:.1f} h" if seconds >= 5400 else f"in {max(seconds, 0) / 60:.0f} min"


def cmd_digest(args: argparse.Namespace) -> int:
    from zoneinfo import ZoneInfo

    from bot.runs import digests
    from bot.workflow import digestrender

    settings = _settings(args)
    try:
        since = digests.parse_since(args.since)
    except ValueError as exc:
        raise MigrateBotError(f"--since {exc}.", "For example: --since 24h") from None
    store, tz = _store(settings), ZoneInfo(settings.digest.timezone)
    for env in [args.database] if args.database else settings.digest.databases:
        made = digests.make(settings, store, env, since=since).digest
        if args.format == "json":
            print(json.dumps(digestrender.json_dict(made), indent=2))
        elif args.format == "markdown":
            print(digestrender.markdown(made, tz=tz))
        else:
            print(digestrender.text(made, tz=tz))
    return 0


def cmd_windows(args: argparse.Namespace) -> int:
    from bot.chat.render import terminal_text
    from bot.runs import windows
    from bot.runs.commands import windows_lines

    settings = _settings(args)
    d = settings.deploy
    cal = windows.parse_calendar(d.windows, d.freezes, d.timezone)
    now = datetime.now(timezone.utc)
    if args.format == "json":
        current = windows.current_opening(cal, now)
        found = ([current] if current else []) + windows.next_openings(cal, now, 3 - (1 if current else 0))
        print(json.dumps([{"start": o.start.isoformat(), "end": o.end.isoformat()} for o in found], indent=2))
        return 0
    for line in windows_lines(cal, _store(settings), now):
        print(terminal_text(line))
    return 0


def cmd_triage(args: argparse.Namespace) -> int:
    from bot.workflow import triage

    path = Path(args.file)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise MigrateBotError(f"Could not read {path}: {exc.strerror}.", "Pass the log written with --log or --json.")
    if text.lstrip().startswith("{"):
        try:
            checks = Report.from_json(text).checks
        except (ValueError, KeyError) as exc:
            raise MigrateBotError(f"{path} is not a migrate-bot JSON report ({type(exc).__name__}).", "") from None
    else:
        checks = triage.checks_from_log(text)
    findings = triage.triage(checks)
    if args.format == "json":
        print(json.dumps([f.__dict__ for f in findings], indent=2))
    else:
        print(redact(triage.render_text(findings)))
    return EXIT_FAILED if findings else 0


def cmd_lint(args: argparse.Namespace) -> int:
    from bot.migrations.lint import LintSyntaxError, lint_paths

    try:
        findings = lint_paths(args.paths, fmt=args.layout, same_set=args.one_set)
    except LintSyntaxError as exc:
        raise MigrateBotError(f"{str(exc).rstrip('.')}.", "Fix the SQL; lint needs a parsable file.") from None
    except FileNotFoundError as exc:
        raise MigrateBotError(f"No such file or directory: {exc.filename}.", "Check the path.") from None
    blockers = [f for f in findings if f.severity == "blocker" and f.allowed_reason is None]
    if args.format == "json":
        print(json.dumps([f.to_dict() for f in findings], indent=2))
    else:
        for f in findings:
            tag = "allowed" if f.allowed_reason is not None else f.severity.upper()
            print(f"{f.path}:{f.line}: {tag} {f.rule}: {f.message}")
            if f.allowed_reason is None:
                print("    fix: " + "\n         ".join(f.fix.splitlines()))
        print(f"{len(findings)} finding(s), {len(blockers)} blocker(s)")
    return EXIT_FAILED if blockers else 0


def cmd_baseline(args: argparse.Namespace) -> int:
    from bot.workflow import baseline

    settings = _settings(args)
    options = baseline.BaselineOptions(yes=args.yes, baseline=args.baseline, tool=args.tool)
    return emit(baseline.run(settings, options), args)


def cmd_refresh(args: argparse.Namespace) -> int:
    from bot.workflow import refresh

    settings = _settings(args)
    return emit(refresh.run(settings, refresh.RefreshOptions(on_event=_progress_printer(args))), args)


def _progress_printer(args: argparse.Namespace) -> Callable[[str, dict], None]:
    """Progress on stderr for long steps, so stdout stays the log-line contract."""

    def show(kind: str, data: dict) -> None:
        if kind == "refresh_progress" or (args.verbose and kind in ("step", "lock_retry", "migration_finished")):
            print(redact(f"... {kind}: " + ", ".join(f"{k}={v}" for k, v in data.items())), file=sys.stderr)

    return show


def cmd_run(args: argparse.Namespace) -> int:
    from bot.pg import run_context
    from bot.workflow import runbook, triage

    settings = _settings(args)
    run_id, who, head = new_run("run")
    options = runbook.RunbookOptions(deploy=args.deploy, install_extensions=True if args.install_extensions else None,
                                     skip_refresh=args.skip_refresh, on_event=_progress_printer(args),
                                     run_id=run_id, requested_by=who)
    with run_context(run_id):
        reports = runbook.run(settings, _store(settings), options)
    lines: list[str] = [head]
    for report in reports:
        lines += report.lines()
        findings = triage.triage(report.checks)
        if findings and report.step == "validate":
            lines += ["", triage.render_text(findings)]
    print("\n".join(lines))
    _write(args.log, "\n".join(lines))
    return runbook.exit_code(reports)


def cmd_serve(args: argparse.Namespace) -> int:
    from bot.app import create_slack_bot
    from bot.runs.model import State

    settings = _settings(args)
    bot = create_slack_bot(settings)
    bot.runtime.start()  # recovery of dead runs, the queue, the heartbeat and the scheduler (if elected)
    try:  # SIGTERM (Kubernetes, systemd) already leaves like Ctrl-C, set in main() before the ready line
        if bot.app_token:
            bot.connect_socket_mode()
            probes = ""
            if args.port is not None:  # no Slack endpoint, but /healthz, /readyz and /metrics for the orchestrator
                probes = f"; health and metrics on http://{args.host}:{bot.serve_http(args.host, args.port).server_port}"
            print(f"migrate-bot connected to Slack in Socket Mode{probes} (Ctrl-C stops it)", file=sys.stderr)
        else:
            server = bot.serve_http(args.host, 3000 if args.port is None else args.port)
            print(f"migrate-bot listening on http://{args.host}:{server.server_port}/slack/events (Ctrl-C stops it)",
                  file=sys.stderr)
        threading.Event().wait()  # the server runs in its own threads until Ctrl-C
    except KeyboardInterrupt:
        # the second-stop handler goes in before the line that invites a second stop
        second_stop_leaves_at_once("migrate-bot stopped without waiting: the next start marks what was running "
                                   "as interrupted")
        running = len(bot.runtime.store.runs(states=[State.RUNNING]))
        print(f"migrate-bot stopping: no new commands; waiting for {running} running run(s) to finish "
              "(Ctrl-C again stops at once; a run cut short is marked interrupted at the next start)",
              file=sys.stderr)
    finally:
        bot.stop()
    print("migrate-bot stopped", file=sys.stderr)
    return 0


def cmd_shell(args: argparse.Namespace) -> int:
    from bot.app import create_runtime
    from bot.chat.shell import Shell, ShellAnnouncer

    settings = _settings(args)
    runtime = create_runtime(settings, ShellAnnouncer())
    runtime.start()
    try:
        Shell(runtime, user=args.user).loop()
    finally:
        runtime.stop(wait=True)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from bot import demo

    return demo.main()


def _add(sub: argparse._SubParsersAction, name: str, func: Callable[[argparse.Namespace], int], summary: str,
         example: str) -> argparse.ArgumentParser:
    COMMANDS[name] = (summary, example)
    parser = sub.add_parser(name, help=summary, description=summary, epilog=f"Example:\n  {example}",
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.set_defaults(func=func)
    return parser


def _common(parser: argparse.ArgumentParser, migrations: bool = True) -> None:
    parser.add_argument("--config", help="TOML config file (default: $MIGRATE_BOT_CONFIG or ./migrate-bot.toml)")
    parser.add_argument("--state", help="state store path (default: state.path, ./.migrate-bot/state.db)")
    if migrations:
        parser.add_argument("--migrations", metavar="DIR", help="migrations directory (overrides migrations.dir)")
    parser.add_argument("--log", metavar="FILE", help="also write the PASSED/FAILED/BLOCKER lines here")
    parser.add_argument("--json", metavar="FILE", help="also write the full report as JSON here")


def build_parser() -> Parser:
    parser = Parser(prog="migrate-bot", description="Safe PostgreSQL migrations: refresh, validate, deploy, triage.",
                    epilog="Example:\n  migrate-bot validate --migrations db/migrations --log staging_validation.log",
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    parser.add_argument("--log-format", choices=["text", "json"], default=os.environ.get("MIGRATE_BOT_LOG_FORMAT",
                                                                                           "text"),
                        help="log lines as text or as JSON objects with the run id (default: $MIGRATE_BOT_LOG_FORMAT)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    p = _add(sub, "validate", cmd_validate, "Run the validation gate on staging (exit 0 = pass).",
             "migrate-bot validate --migrations db/migrations --log staging_validation.log")
    _common(p)
    p.add_argument("--install-extensions", action="store_true", help="create missing required extensions on staging")
    p = _add(sub, "deploy", cmd_deploy, "Deploy the validated migration set to production (inside a deploy window).",
             "STAGING_VALIDATION_PASSED=true migrate-bot deploy --migrations db/migrations --log prod_deploy.log")
    _common(p)
    when = p.add_mutually_exclusive_group()
    when.add_argument("--wait", action="store_true", help="outside the deploy windows, sleep until the next opens")
    when.add_argument("--now", action="store_true", help="deploy outside the deploy windows anyway (logged)")
    p.add_argument("--resume", action="store_true",
                   help="continue a no-transaction migration an interrupted deploy left part-applied, at its next statement")
    p = _add(sub, "digest", cmd_digest, "A pg_stat_statements digest: top, new and regressed statements (no reset).",
             "migrate-bot digest --since 24h --format markdown")
    p.add_argument("--config", help="TOML config file (default: $MIGRATE_BOT_CONFIG or ./migrate-bot.toml)")
    p.add_argument("--state", help="state store path (snapshots are kept there)")
    p.add_argument("--since", default="24h", help="the period: compare with the snapshot this long ago (24h, 90m, 7d)")
    p.add_argument("--database", choices=["prod", "staging"], help="one database (default: digest.databases)")
    p.add_argument("--format", choices=["text", "markdown", "json"], default="text")
    p = _add(sub, "windows", cmd_windows, "Show the next deploy windows and prod's quietest hours.",
             "migrate-bot windows --format json")
    p.add_argument("--config", help="TOML config file (default: $MIGRATE_BOT_CONFIG or ./migrate-bot.toml)")
    p.add_argument("--state", help="state store path (traffic samples)")
    p.add_argument("--format", choices=["text", "json"], default="text")
    p = _add(sub, "triage", cmd_triage, "Group a gate log's failures by cause, with the typical fix.",
             "migrate-bot triage staging_validation.log")
    p.add_argument("file", help="a log written with --log, or a report written with --json")
    p.add_argument("--format", choices=["text", "json"], default="text")
    p = _add(sub, "lint", cmd_lint, "Static safety rules only, no database (exit 1 on a blocker).",
             "migrate-bot lint db/migrations/0042_add_orders_index.sql")
    p.add_argument("paths", nargs="+", help="migration files or directories")
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.add_argument("--layout", choices=FORMATS,
                   default="auto", help="how a directory's migrations are laid out (default: detected)")
    p.add_argument("--one-set", action="store_true",
                   help="lint a directory as one pending set (as the gate does), not as a history of deploys")
    p = _add(sub, "baseline", cmd_baseline,
             "Adopt prod's migration history from Prisma, golang-migrate, Flyway or dbmate (a dry run without --yes).",
             "migrate-bot baseline --migrations prisma/migrations --yes")
    _common(p)
    p.add_argument("--yes", action="store_true", help="record them in migrate_bot.schema_migrations (default: show)")
    p.add_argument("--baseline", metavar="VERSION",
                   help="no tool's history on prod: record every migration up to and including VERSION")
    p.add_argument("--from", dest="tool", choices=["prisma", "golang-migrate", "flyway", "dbmate"],
                   help="which tool's history to adopt, when prod has several")
    p = _add(sub, "refresh", cmd_refresh, "Refresh staging from prod into a new database, then swap it in.",
             "migrate-bot refresh --log refresh.log")
    _common(p, migrations=False)
    p = _add(sub, "run", cmd_run, "The whole runbook: refresh, validate, then deploy (--deploy) or triage.",
             "migrate-bot run --migrations db/migrations --deploy")
    _common(p)
    p.add_argument("--deploy", action="store_true", help="deploy to prod when the gate passes")
    p.add_argument("--install-extensions", action="store_true", help="create missing required extensions on staging")
    p.add_argument("--skip-refresh", action="store_true", help="validate against staging as it is")
    p = _add(sub, "serve", cmd_serve, "Run the Slack bot (Socket Mode if slack.app_token is set, else HTTP).",
             "migrate-bot serve --port 3000")
    p.add_argument("--config", help="TOML config file")
    p.add_argument("--state", help="state store path")
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=None,
                   help="HTTP port (default 3000): Slack's endpoint, /healthz, /readyz, /metrics; in Socket Mode "
                        "only the probes and metrics, and only when given")
    p = _add(sub, "shell", cmd_shell, "The terminal chat adapter: /migrate commands and reactions as any user.",
             "migrate-bot shell --user U_ME")
    p.add_argument("--config", help="TOML config file")
    p.add_argument("--state", help="state store path")
    p.add_argument("--migrations", metavar="DIR", help="migrations directory")
    p.add_argument("--user", default="U_ME", help="who you are in the shell (default U_ME)")
    _add(sub, "demo", cmd_demo, "Throwaway prod + staging clusters and the whole workflow in the shell.",
         "migrate-bot demo")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logs.configure(verbose=args.verbose, json_lines=args.log_format == "json")
    sigterm_like_ctrl_c()  # before any work starts, so every stop runs the cleanup below and in the commands
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_COULD_NOT_RUN
    try:
        return args.func(args)
    except MigrateBotError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted. Nothing was left half-applied: transactional migrations roll back.", file=sys.stderr)
        return 130
    except Exception as exc:  # the last line of defence: a sentence, never a traceback
        if os.environ.get("MIGRATE_BOT_DEBUG"):
            raise
        print(f"error: unexpected {type(exc).__name__}: {redact(str(exc))}. This is a bug in migrate-bot; "
              "rerun with MIGRATE_BOT_DEBUG=1 and report it.", file=sys.stderr)
        return EXIT_COULD_NOT_RUN


if __name__ == "__main__":
    sys.exit(main())
