"""Prometheus metrics of the orchestrator (served at ``/metrics`` by the frontend)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import Counter, Gauge, Histogram


@dataclass(frozen=True)
class _Metrics:
    tasks_dispatched: Counter
    completions_applied: Counter
    completions_rejected: Counter
    broker_errors: Counter
    timers_fired: Counter
    timer_lag: Histogram
    workflows_started: Counter
    history_stream_published: Counter
    history_stream_dropped: Counter
    history_stream_lag: Gauge
    shards_owned: Gauge
    requests_forwarded: Counter


METRICS = _Metrics(
    tasks_dispatched=Counter("sagas_tasks_dispatched_total", "Tasks published to broker queues", ["kind"]),
    completions_applied=Counter("sagas_completions_applied_total", "Worker/service replies applied", ["kind"]),
    completions_rejected=Counter(
        "sagas_completions_rejected_total", "Replies dropped (stale, duplicate, forged, malformed)", ["reason"]
    ),
    broker_errors=Counter("sagas_broker_errors_total", "Failed broker publishes"),
    timers_fired=Counter("sagas_timers_fired_total", "Durable timer tasks fired", ["kind"]),
    timer_lag=Histogram(
        "sagas_timer_lag_seconds", "Delay between a timer's fire time and its firing",
        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    ),
    workflows_started=Counter("sagas_workflows_started_total", "Workflow runs started"),
    history_stream_published=Counter(
        "sagas_history_stream_published_total", "History events published to the {prefix}.history stream"
    ),
    history_stream_dropped=Counter(
        "sagas_history_stream_dropped_total",
        "History events not published to the best-effort history stream (republish them from the store)",
        ["reason"],
    ),
    history_stream_lag=Gauge(
        "sagas_history_stream_lag_seconds", "Age of the oldest committed event not yet published to the history stream"
    ),
    shards_owned=Gauge("sagas_shards_owned", "History shards this process holds a lease on"),
    requests_forwarded=Counter(
        "sagas_requests_forwarded_total", "Requests and replies forwarded to the process that owns their shard"
    ),
)
