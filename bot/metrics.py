"""Prometheus metrics: what an operator of the bot watches, served at /metrics.

Counters and histograms are bumped where things happen (a run ends in the
lifecycle, Slack fails in the outbox); everything that is a state (the
queue, the schedule, leadership, undelivered messages, how late the
scheduler is) is read from the runtime when Prometheus scrapes, so it can
never drift from the state store.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry(auto_describe=True)
RUNS = Counter("migrate_bot_runs", "Runs that ended, by kind and outcome.", ["kind", "outcome"], registry=REGISTRY)
RUN_SECONDS = Histogram("migrate_bot_run_duration_seconds", "From request to end of runs, by kind (the gate, a deploy…).",
                        ["kind"], buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200), registry=REGISTRY)
SLACK_ERRORS = Counter("migrate_bot_slack_errors", "Slack API calls that failed, by what was being sent and why.",
                       ["kind", "error"], registry=REGISTRY)
SLACK_RETRIES = Counter("migrate_bot_slack_retries", "Slack messages tried again later by the outbox.", ["kind"],
                        registry=REGISTRY)


def run_ended(kind: str, outcome: str, started_at: str, ended_at: str) -> None:
    RUNS.labels(kind, outcome).inc()
    if started_at and ended_at:
        seconds = (datetime.fromisoformat(ended_at) - datetime.fromisoformat(started_at)).total_seconds()
        RUN_SECONDS.labels(kind).observe(max(0.0, seconds))


class RuntimeState(Collector):
    """Gauges read from one runtime at scrape time."""

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[GaugeMetricFamily]:
        rt = self.runtime
        queue = GaugeMetricFamily("migrate_bot_queue_length", "Runs waiting for their environment.", labels=["env"])
        for env in ("staging", "prod"):
            queue.add_metric([env], len([r for r in rt.store.queue(env) if not r.data.get("opening")]))
        yield queue
        jobs = rt.store.jobs()
        yield GaugeMetricFamily("migrate_bot_scheduled_jobs", "Jobs in the persisted schedule (deploys, reminders, "
                                "samplers, digests).", value=len(jobs))
        now = datetime.now(timezone.utc).timestamp()
        overdue = [now - j.next_run_time for j in jobs if j.next_run_time is not None and j.next_run_time < now]
        yield GaugeMetricFamily("migrate_bot_scheduler_lag_seconds", "How late the most overdue job is (0 = none).",
                                value=max(overdue, default=0.0))
        yield GaugeMetricFamily("migrate_bot_scheduler_leader", "1 when this process runs the scheduler, 0 when it "
                                "stands by.", value=1.0 if rt.scheduler.leader else 0.0)
        yield GaugeMetricFamily("migrate_bot_outbox_pending", "Slack messages stored but not delivered yet.",
                                value=len(rt.store.deliveries()))


def exposition(*registries: CollectorRegistry) -> tuple[bytes, str]:
    """The text Prometheus scrapes: the process's counters, then each runtime's gauges."""
    return b"".join(generate_latest(r) for r in (REGISTRY, *registries)), CONTENT_TYPE_LATEST


def runtime_registry(runtime: Any) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(RuntimeState(runtime))
    return registry
