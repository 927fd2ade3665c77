"""`make demo`: the whole workflow on throwaway clusters, through the terminal chat adapter.

Two local clusters (prod, staging) on 127.0.0.1, a small app schema with
data, then the runbook as a team would live it in chat: refresh staging, a
migration set that fails the gate for a real reason (an FK over orphaned
rows) with its triage, the fixed set passing, a self-approval that does not
count, an approval by a second person that schedules the deploy into a
deploy window a few seconds ahead, the deploy when it opens, and its spot
checks.
Everything is removed at the end, also on error or Ctrl-C.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from dataclasses import replace
from pathlib import Path

import psycopg

from bot import config, devcluster
from bot.app import create_runtime
from bot.chat.shell import Shell, ShellAnnouncer
from bot.runs.model import Kind, State

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
REQUESTER, APPROVER = "U_RITA", "U_ADA"


def banner(text: str) -> None:
    print(f"\n\033[1m── {text}\033[0m" if sys.stdout.isatty() else f"\n── {text}", flush=True)


def seed(cluster: devcluster.LocalCluster) -> None:
    with psycopg.connect(cluster.url("postgres"), autocommit=True) as conn:
        conn.execute("CREATE DATABASE shop")
    with psycopg.connect(cluster.url("shop"), autocommit=True) as conn:
        conn.execute((EXAMPLES / "seed.sql").read_text())
        for user_id in range(1, 200):  # the app's hot path, as prod's pg_stat_statements will see it
            conn.execute("SELECT id, total FROM orders WHERE user_id = %s ORDER BY created_at DESC", (user_id,))


def demo_settings(base: Path, prod: devcluster.LocalCluster, staging: devcluster.LocalCluster) -> config.Settings:
    os.environ["PROD_DATABASE_URL"] = prod.url("shop")
    os.environ["STAGING_DATABASE_URL"] = staging.url("shop")
    settings = config.Settings(source="demo")
    return replace(
        settings,
        migrations=replace(settings.migrations, dir=str(EXAMPLES / "01-orphaned-fk")),
        state=config.State(path=str(base / "state.db")),
        policy=replace(settings.policy, approvers=[APPROVER]),
        refresh=replace(settings.refresh, mask=["users.email"]),
    )


def demo_window(opens_in_s: float = 8.0, minutes: int = 10) -> str:
    """A deploy window that opens a few seconds from now (the demo cannot wait for tonight's)."""
    opens = datetime.now(timezone.utc) + timedelta(seconds=opens_in_s)
    return f"daily {opens:%H:%M:%S}-{opens + timedelta(minutes=minutes):%H:%M:%S} UTC"


def wait_for_deploy(runtime, run_id: str, timeout_s: float = 120.0) -> None:
    """The scheduler fires the deploy when the window opens; the demo waits for it like a person would."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        run = runtime.store.get_run(run_id)
        if run is not None and run.state not in (State.SCHEDULED, State.RUNNING):
            break
        time.sleep(0.2)
    runtime.executor.wait(timeout=timeout_s)


def script(shell: Shell, fixed_dir: str) -> int:
    runtime = shell.runtime
    banner("1. Refresh staging from prod (users.email masked on the way)")
    shell.handle("/migrate refresh")
    banner("2. Validate examples/01-orphaned-fk: an FK added over orphaned rows; the triage lands in the thread")
    shell.handle("/migrate validate")
    banner("3. The team writes the runbook's fix (examples/02-fixed) and validates again")
    runtime.settings = replace(runtime.settings, migrations=replace(runtime.settings.migrations, dir=fixed_dir))
    shell.handle("/migrate validate")
    deploy = runtime.store.latest_run(Kind.DEPLOY)
    if deploy is None:
        print("The fixed set did not pass, so there is nothing to deploy. See the lines above.")
        return 1
    window = demo_window()
    runtime.settings = replace(runtime.settings, deploy=replace(runtime.settings.deploy, windows=[window]))
    banner(f"4. Approvals: the requester's own reaction does not count; an approver's does, and the deploy is "
           f"scheduled into the next low-traffic window (deploy.windows = [\"{window}\"])")
    shell.handle(f"react :white_check_mark: {deploy.id} as {REQUESTER}")
    shell.handle(f"react :white_check_mark: {deploy.id} as {APPROVER}")
    banner("5. Deploy to prod in the window: asking early gets its time; at the opening the bot re-checks, then "
           "deploys (preflight, apply, spot checks, hold-backs)")
    shell.handle("/migrate windows")
    shell.handle(f"/migrate deploy {deploy.id}")
    wait_for_deploy(runtime, deploy.id)
    banner("6. History")
    shell.handle("/migrate history")
    final = runtime.store.get_run(deploy.id)
    return 0 if final and final.state is State.DEPLOYED else 1


def main() -> int:
    started = time.monotonic()
    base = Path(tempfile.mkdtemp(prefix="migrate-bot-demo-"))
    clusters: list[devcluster.LocalCluster] = []
    try:
        banner("Starting two throwaway PostgreSQL clusters (prod, staging) on 127.0.0.1")
        for name in ("prod", "staging"):
            clusters.append(devcluster.create_cluster(base, name, f"demo-{name}-" + os.urandom(6).hex()))
        seed(clusters[0])
        with psycopg.connect(clusters[1].url("postgres"), autocommit=True) as conn:
            conn.execute("CREATE DATABASE shop")
        print(f"prod on port {clusters[0].port} (users, orders: 20,003 rows), staging on port {clusters[1].port} (empty)")
        settings = demo_settings(base, clusters[0], clusters[1])
        runtime = create_runtime(settings, ShellAnnouncer())
        runtime.start()  # the scheduler fires the deploy at its window
        shell = Shell(runtime, user=REQUESTER)
        code = script(shell, str(EXAMPLES / "02-fixed"))
        runtime.stop(wait=True)
        banner(f"Done in {time.monotonic() - started:.0f}s: " + ("the fixed set is deployed." if code == 0 else "see above."))
        return code
    finally:
        devcluster.remove(base, clusters)
        print("Clusters stopped and removed.")
