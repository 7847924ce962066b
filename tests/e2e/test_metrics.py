"""``/metrics`` after a small demo run: a saga that books everything and one that compensates.

Scrapes the server over HTTP before and after, and checks the counters moved by what the run did
(the registry is process-wide, so every check is on the difference).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sagas import Saga, activity, workflow
from sagas.exceptions import ApplicationError, WorkflowFailureError
from sagas.testing import WorkflowEnvironment
from sagas.worker import Worker

T = timedelta(seconds=10)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@activity.defn
async def metrics_book(item: str) -> str:
    if item == "sold-out flight":
        raise ApplicationError("no flight left", non_retryable=True)
    return f"booked {item}"


@activity.defn
async def metrics_unbook(item: str) -> None:
    return None


@workflow.defn
class MetricsTrip:
    @workflow.run
    async def run(self, flight: str) -> str:
        async with Saga() as saga:
            for item in ("car", "hotel", flight):
                saga.add_compensation(metrics_unbook, item, start_to_close_timeout=T)
                await workflow.execute_activity(metrics_book, item, start_to_close_timeout=T)
        return "booked"


@pytest.fixture
async def env() -> AsyncIterator[WorkflowEnvironment]:
    environment = await WorkflowEnvironment.start_local()
    try:
        yield environment
    finally:
        await environment.shutdown()


async def scrape(env: WorkflowEnvironment) -> Samples:
    assert env.server is not None
    async with httpx.AsyncClient() as http:
        resp = await http.get(f"{env.server.url}/metrics")
    assert resp.status_code == 200
    out: Samples = {}
    for family in text_string_to_metric_families(resp.text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


async def test_metrics_move_with_a_demo_run(env: WorkflowEnvironment) -> None:
    tq = f"tq-{uuid.uuid4().hex[:8]}"
    before = await scrape(env)
    async with Worker(env.client, task_queue=tq, workflows=[MetricsTrip], activities=[metrics_book, metrics_unbook]):
        assert await env.client.execute_workflow(MetricsTrip.run, "flight", id=f"ok-{tq}", task_queue=tq) == "booked"
        with pytest.raises(WorkflowFailureError):
            await env.client.execute_workflow(MetricsTrip.run, "sold-out flight", id=f"comp-{tq}", task_queue=tq)
    after = await scrape(env)

    # workflows by type, counted when the run's state changed (start, close)
    assert moved(before, after, "sagas_workflows_started_total", workflow_type="MetricsTrip") == 2
    assert moved(before, after, "sagas_workflows_closed_total", workflow_type="MetricsTrip", status="completed") == 1
    assert moved(before, after, "sagas_workflows_closed_total", workflow_type="MetricsTrip", status="failed") == 1
    assert moved(before, after, "sagas_workflows_closed_total", workflow_type="MetricsTrip", status="canceled") == 0

    # 3 bookings done + 2 bookings and 1 failure in the compensated run; 3 undos there
    s2c = "sagas_activity_schedule_to_close_seconds_count"
    assert moved(before, after, s2c, activity_type="metrics_book", outcome="completed") == 5
    assert moved(before, after, s2c, activity_type="metrics_book", outcome="failed") == 1
    assert moved(before, after, s2c, activity_type="metrics_unbook", outcome="completed") == 3
    assert moved(before, after, "sagas_activity_schedule_to_close_seconds_sum", activity_type="metrics_book") > 0
    # SDK workers report the start of each attempt, so both halves are known for every activity
    assert moved(before, after, "sagas_activity_schedule_to_start_seconds_count", activity_type="metrics_book") == 6
    assert moved(before, after, "sagas_activity_start_to_close_seconds_count", activity_type="metrics_unbook") == 3
    assert moved(before, after, "sagas_tasks_dispatched_total", kind="activity") == 9
    assert moved(before, after, "sagas_tasks_dispatched_total", kind="workflow") >= 2 + 9
    assert moved(before, after, "sagas_completions_applied_total", kind="activity_result") == 9
    assert moved(before, after, "sagas_history_conflicts_total") == 0
    assert value(after, "sagas_shards_owned") >= 1
    # broker latency: every dispatch was a publish, every applied reply an ack (built-in broker)
    published = sum(
        moved(before, after, "sagas_broker_operation_seconds_count", broker="memory", op=op, outcome="ok")
        for op in ("publish", "publish_sticky")  # a workflow task goes to its worker's sticky queue
    )
    assert published >= 9 + 2 + 9
    assert moved(before, after, "sagas_broker_operation_seconds_sum", broker="memory", op="publish", outcome="ok") > 0
    assert moved(before, after, "sagas_broker_operation_seconds_count", broker="memory", op="ack", outcome="ok") >= 9


async def test_backlog_gauge_and_dead_letters(env: WorkflowEnvironment) -> None:
    assert env.server is not None
    orc = env.server.orchestrator
    queue = f"sagas.default.nobody-{uuid.uuid4().hex[:8]}.act"
    for _ in range(3):
        await orc.broker.publish(queue, b"{}")
    samples = await scrape(env)
    assert value(samples, "sagas_task_queue_backlog", queue=queue) == 3

    # a forged reply on the completions queue is dead-lettered (and counted once)
    completions = orc.matching.completions_queue
    before = await scrape(env)
    await orc.broker.publish(completions, b"not json")
    for _ in range(100):
        after = await scrape(env)
        if moved(before, after, "sagas_dead_letters_total", queue=completions):
            break
        await asyncio.sleep(0.05)
    assert moved(before, after, "sagas_dead_letters_total", queue=completions) == 1
    assert moved(before, after, "sagas_completions_rejected_total", reason="malformed_json") == 1
