"""Idle CPU: what a waiting bot costs, with ten scheduled deploys and the traffic sampler.

    .venv/bin/python bench/idle_cpu.py [--seconds 60] [--deploys 10]

A scheduler that polls (the database for due jobs, Slack for news) burns a
core's worth of wake-ups while nothing happens. Ours sleeps until the next
due job; the heartbeat (every few seconds: one state-store write, one
leadership check) is its only clock. This starts the real `migrate-bot serve`
process twice, against the Slack Web API emulator and a throwaway "prod"
cluster, and reads the process's own CPU time (utime + stime from
/proc/<pid>/stat) and its voluntary context switches over ``--seconds``:

* baseline: the same serve with nothing scheduled and the sampler off;
* loaded: ``--deploys`` approved deploys scheduled into windows days ahead
  (persisted jobs), and the traffic sampler every minute (so it samples prod
  during the measurement).

It prints; it asserts nothing. The machine is shared: compare within a run.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.* are not an installed package

from bot import devcluster  # noqa: E402
from bot.interrupts import sigterm_like_ctrl_c  # noqa: E402
from bot.runs import planning  # noqa: E402
from bot.runs.model import Kind, Run, State, new_run_id  # noqa: E402
from bot.runs.schedule import Scheduler  # noqa: E402
from bot.runs.store.sqlite import SqliteStore  # noqa: E402
from tests.fix_bot import bot_toml  # noqa: E402
from tests.fix_slack import BOT_TOKEN, REQUESTER, SIGNING_SECRET, default_workspace  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def note(text: str) -> None:
    print(f"· {text}", file=sys.stderr, flush=True)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime (fields 14 and 15 of stat)


def switches(pid: int) -> int:
    """Voluntary context switches of all the process's threads: roughly, how often it woke up."""
    total = 0
    for status in Path(f"/proc/{pid}/task").glob("*/status"):
        for line in status.read_text().splitlines():
            if line.startswith("voluntary_ctxt_switches:"):
                total += int(line.split()[1])
    return total


def schedule_deploys(state: Path, count: int) -> None:
    """``count`` approved deploys, each scheduled into a window days ahead, as a bot would have left them."""
    store = SqliteStore(state)
    scheduler = Scheduler(store, alive=lambda owner: False, owner="bench/0/setup")
    first = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=2)
    for n in range(count):
        when = first + timedelta(hours=6 * n)
        run = store.insert_run(Run(id=new_run_id(), kind=Kind.DEPLOY, state=State.SCHEDULED, requested_by=REQUESTER,
                                   channel="C_DEPLOYS", thread_ts=f"1700000000.{n:06d}", fingerprint="f" * 64,
                                   scheduled_for=when.isoformat(), data={"estimate_s": 60.0, "estimate": "about 1 min"}))
        job_id = f"deploy:{run.id}:{int(when.timestamp())}"
        scheduler.at(job_id, planning.DEPLOY_JOB, when, run.id)
        store.save_run(Run(**{**run.__dict__, "data": dict(run.data, job_id=job_id)}))
    scheduler.stop()


def measure(base: Path, name: str, emulator_url: str, prod_url: str, extra: str, seconds: float,
            deploys: int) -> tuple[float, int]:
    work = base / name
    (work / "migrations").mkdir(parents=True)
    config = work / "bot.toml"
    config.write_text(bot_toml(work / "migrations", extra), encoding="utf-8")
    if deploys:
        schedule_deploys(work / "state.db", deploys)
    env = {**os.environ, "SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SIGNING_SECRET,
           "SLACK_API_URL": emulator_url, "MIGRATE_BOT_STATE": str(work / "state.db"), "PYTHONUNBUFFERED": "1",
           "PROD_DATABASE_URL": prod_url, "STAGING_DATABASE_URL": prod_url}
    log = work / "serve.log"
    serve = subprocess.Popen([sys.executable, "-m", "bot.cli", "serve", "--config", str(config), "--host",
                              "127.0.0.1", "--port", "0"], stderr=log.open("w"), stdout=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + 60
        while "listening on" not in log.read_text():
            if serve.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"serve did not start: {log.read_text()}")
            time.sleep(0.1)
        time.sleep(5)  # start-up work (recovery, election, reconciling jobs) is not idling
        cpu0, sw0 = cpu_seconds(serve.pid), switches(serve.pid)
        time.sleep(seconds)
        used = cpu_seconds(serve.pid) - cpu0, switches(serve.pid) - sw0
        store = SqliteStore(work / "state.db")
        note(f"{name}: {len(store.jobs())} persisted job(s), {len(store.samples('traffic', 'prod'))} traffic sample(s)")
        return used
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(timeout=60)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--deploys", type=int, default=10)
    args = parser.parse_args()
    sigterm_like_ctrl_c()
    base = Path(tempfile.mkdtemp(prefix="migrate-bot-idle-"))
    clusters: list[devcluster.LocalCluster] = []
    try:
        note("starting a throwaway prod cluster and the Slack emulator")
        clusters.append(devcluster.create_cluster(base, "prod", "idle-bench-prod-" + os.urandom(4).hex()))
        prod_url = clusters[0].url("postgres")
        windows = [f"daily {h:02d}:00-{h:02d}:30 UTC" for h in range(0, 24, 6)]
        loaded = (f"[deploy]\nwindows = {windows!r}\ntraffic_sample_minutes = 1\n").replace("'", '"')
        with default_workspace() as emulator:
            note(f"baseline: serve with nothing scheduled, sampler off, {args.seconds:.0f} s")
            idle = measure(base, "baseline", emulator.base_url, prod_url, "[deploy]\ntraffic_sample_minutes = 0\n",
                           args.seconds, 0)
            note(f"loaded: {args.deploys} scheduled deploys and the sampler every minute, {args.seconds:.0f} s")
            busy = measure(base, "loaded", emulator.base_url, prod_url, loaded, args.seconds, args.deploys)
        print(f"idle CPU over {args.seconds:.0f} s (one `migrate-bot serve` process, utime+stime):")
        for label, (cpu, sw) in (("baseline (nothing scheduled)", idle),
                                 (f"{args.deploys} scheduled deploys + sampler", busy)):
            print(f"  {label:<36} {cpu:6.2f} s CPU = {100 * cpu / args.seconds:5.2f}% of a core, "
                  f"{sw / args.seconds:6.1f} wake-ups/s")
        print(f"  ratio loaded/baseline: {busy[0] / idle[0]:.2f}" if idle[0] else "  baseline used no measurable CPU")
        return 0
    finally:
        devcluster.remove(base, clusters)


if __name__ == "__main__":
    sys.exit(main())
