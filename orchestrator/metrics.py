"""Prometheus metrics of the orchestrator (served at ``/metrics`` by the frontend)."""

from __future__ import annotations

import contextvars
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)


@dataclass(frozen=True)
class _Metrics:
    tasks_dispatched: Counter
    completions_applied: Counter
    completions_rejected: Counter
    broker_errors: Counter
    timers_fired: Counter
    timer_lag: Histogram
    workflows_started: Counter
    workflows_closed: Counter
    activity_schedule_to_start: Histogram
    activity_start_to_close: Histogram
    activity_schedule_to_close: Histogram
    history_conflicts: Counter
    dead_letters: Counter
    history_stream_published: Counter
    history_stream_dropped: Counter
    history_stream_lag: Gauge
    shards_owned: Gauge
    requests_forwarded: Counter
    archival: Counter
    broker_operation: Histogram


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
    workflows_started=Counter(
        "sagas_workflows_started_total",
        "Workflow runs started (client starts, children, continue-as-new, cron and retries)",
        ["workflow_type"],
    ),
    workflows_closed=Counter(
        "sagas_workflows_closed_total", "Workflow runs closed, by final status", ["workflow_type", "status"]
    ),
    activity_schedule_to_start=Histogram(
        "sagas_activity_schedule_to_start_seconds",
        "From handing an activity attempt to matching until a worker reported it started (when it did)",
        ["activity_type"],
        buckets=_LATENCY_BUCKETS,
    ),
    activity_start_to_close=Histogram(
        "sagas_activity_start_to_close_seconds",
        "From the reported start of the last attempt until the activity's final outcome (when started was reported)",
        ["activity_type"],
        buckets=_LATENCY_BUCKETS,
    ),
    activity_schedule_to_close=Histogram(
        "sagas_activity_schedule_to_close_seconds",
        "From scheduling an activity until its final outcome (all attempts), by outcome",
        ["activity_type", "outcome"],
        buckets=_LATENCY_BUCKETS,
    ),
    history_conflicts=Counter(
        "sagas_history_conflicts_total", "History writes that lost an optimistic-concurrency check (retried)"
    ),
    dead_letters=Counter(
        "sagas_dead_letters_total", "Messages moved to the dead-letter queue", ["queue"]
    ),
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
    archival=Counter(
        "sagas_archival_total",
        "Archival writes of closed runs before retention deletes them (failed ones are retried later)",
        ["kind", "outcome"],
    ),
    broker_operation=Histogram(
        "sagas_broker_operation_seconds",
        "Broker calls made by the orchestrator: publish (until confirmed), ack and nack (until settled), "
        "by broker (memory for the built-in one, amqp, kafka, sqs) and outcome (ok, error)",
        ["broker", "op", "outcome"],
        buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    ),
)

BROKER_OPERATIONS = ("publish", "publish_sticky", "ack", "nack")
_TIMING: contextvars.ContextVar[bool] = contextvars.ContextVar("sagas_broker_timing", default=False)
"""Set inside a timed broker call: a nested one (publish_sticky falling back to publish) is not counted twice."""


def instrument_broker(broker: Any, scheme: str) -> None:
    """Time ``broker``'s publish, publish_sticky, ack and nack in ``sagas_broker_operation_seconds``.

    The broker is wrapped in place (its bound methods are replaced), so it keeps its class and
    everything that checks it (the built-in broker's backlog gauge, the dev server's idle check)
    still sees the same object. Calling it twice is harmless: a timed method is not timed again.

    Example::

        broker = await open_broker("amqp://guest:guest@127.0.0.1/")
        instrument_broker(broker, "amqp")
        await broker.publish("sagas.default.trips.act", b"{}")  # observed with op="publish"
    """
    for op in BROKER_OPERATIONS:
        inner = getattr(broker, op)
        if getattr(inner, "_sagas_timed", False):
            continue

        async def timed(*args: Any, _inner: Any = inner, _op: str = op, **kwargs: Any) -> Any:
            if _TIMING.get():
                return await _inner(*args, **kwargs)
            token = _TIMING.set(True)
            began = time.perf_counter()
            outcome = "error"
            try:
                result = await _inner(*args, **kwargs)
                outcome = "ok"
                return result
            finally:
                _TIMING.reset(token)
                METRICS.broker_operation.labels(scheme, _op, outcome).observe(time.perf_counter() - began)

        timed._sagas_timed = True  # type: ignore[attr-defined]
        setattr(broker, op, timed)


class _BacklogCollector(Collector):
    """``sagas_task_queue_backlog``: ready messages per queue of the built-in broker(s), read on scrape."""

    def __init__(self) -> None:
        self.brokers: weakref.WeakSet[Any] = weakref.WeakSet()

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield self._family()

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "sagas_task_queue_backlog",
            "Messages waiting (not leased) per queue of the built-in broker",
            labels=["queue"],
        )

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = self._family()
        totals: dict[str, int] = {}
        for broker in list(self.brokers):
            for queue in broker.queue_names():
                totals[queue] = totals.get(queue, 0) + broker.depth(queue)
        for queue, depth in sorted(totals.items()):
            family.add_metric([queue], depth)
        yield family


BACKLOG = _BacklogCollector()
REGISTRY.register(BACKLOG)


def watch_backlog(broker: Any) -> None:
    """Export the queue depths of an in-process broker (``queue_names()`` and ``depth(queue)``)."""
    BACKLOG.brokers.add(broker)


def unwatch_backlog(broker: Any) -> None:
    BACKLOG.brokers.discard(broker)
