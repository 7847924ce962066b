"""The history stream ``{prefix}.history``: every committed event, after the commit, best-effort.

A workflow driven through the SDK is read back from the stream, rebuilt per
run and compared with ``fetch_history()`` event for event, then replayed. The
stream never blocks or fails a history write: overflow and broker errors are
counted and logged, and ``republish`` closes the gaps from the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY
from typer.testing import CliRunner

from brokers.base import BrokerError, open_broker
from brokers.memory import MemoryBroker
from brokers.rabbitmq import RabbitMQBroker
from orchestrator.api.events import HistoryEvent, parse_event
from orchestrator.api.history_stream import HistoryEventMessage, history_stream_name
from orchestrator.history.stream import HistoryStreamPublisher
from sagas import activity, workflow
from sagas.cli.main import app
from sagas.client import Client
from sagas.testing import WorkflowEnvironment
from sagas.worker import Replayer, Worker, WorkflowHistory
from sagas.worker._history_stream import histories_from_stream, read_history_stream
from tests.services import kafka_server, rabbitmq_server  # noqa: F401 - the session fixtures

T = timedelta(seconds=10)
TOPIC = history_stream_name("sagas")


@activity.defn
async def shout(text: str) -> str:
    return text.upper()


@workflow.defn
class StreamedWorkflow:
    """An activity, a durable timer, a signal, and one continue-as-new: two runs on the stream."""

    def __init__(self) -> None:
        self.approved = False

    @workflow.signal
    def approve(self) -> None:
        self.approved = True

    @workflow.run
    async def run(self, name: str, round_: int) -> str:
        loud = await workflow.execute_activity(shout, name, start_to_close_timeout=T)
        await workflow.sleep(0.05)
        if round_ == 0:
            workflow.continue_as_new(name, 1)
        await workflow.wait_condition(lambda: self.approved)
        return f"{loud} approved"


@workflow.defn(name="StreamedWorkflow")
class StreamedWorkflowChanged:
    """Sleeps before the activity: history recorded the activity first."""

    @workflow.run
    async def run(self, name: str, round_: int) -> str:
        await workflow.sleep(0.05)
        return str(await workflow.execute_activity(shout, name, start_to_close_timeout=T))


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


def event(event_id: int, event_type: str = "TimerFired", **fields: Any) -> HistoryEvent:
    if event_type == "TimerFired":
        fields = {"timer_id": "1", "started_event_id": 1, **fields}
    return parse_event(
        {"event_id": event_id, "event_time": datetime(2026, 1, 1, tzinfo=UTC).isoformat(), "event_type": event_type, **fields}
    )


async def drive(client: Client, task_queue: str) -> tuple[str, list[WorkflowHistory]]:
    """Run StreamedWorkflow to completion; its two runs' histories as the server has them."""
    workflow_id = f"streamed-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=task_queue, workflows=[StreamedWorkflow], activities=[shout]):
        handle = await client.start_workflow(StreamedWorkflow.run, args=["ana", 0], id=workflow_id, task_queue=task_queue)
        first_run = handle.result_run_id
        latest = client.get_workflow_handle(workflow_id)
        while (await latest.describe()).run_id == first_run:
            await asyncio.sleep(0.02)
        await latest.signal(StreamedWorkflow.approve)
        assert await latest.result() == "ANA approved"
    assert first_run is not None
    first = await client.get_workflow_handle(workflow_id, run_id=first_run).fetch_history()
    second = await latest.fetch_history()
    return workflow_id, [first, second]


def assert_same_runs(found: list[WorkflowHistory], expected: list[WorkflowHistory]) -> None:
    by_run = {h.run_id: h for h in found}
    assert set(by_run) == {h.run_id for h in expected}
    for h in expected:
        got = by_run[h.run_id]
        assert (got.namespace, got.workflow_id) == (h.namespace, h.workflow_id)
        assert got.events == h.events  # event for event, every field


@pytest.fixture
async def streamed_env() -> AsyncIterator[WorkflowEnvironment]:
    async with await WorkflowEnvironment.start_local(history_stream_url="memory://") as env:
        yield env


def publisher_of(env: WorkflowEnvironment) -> HistoryStreamPublisher:
    assert env.server is not None and env.server.orchestrator.history_stream is not None
    return env.server.orchestrator.history_stream


# -- end to end ---------------------------------------------------------------------------------


async def test_stream_rebuilds_fetch_history_event_for_event_and_replays(streamed_env: WorkflowEnvironment) -> None:
    published_before = sample("sagas_history_stream_published_total")
    workflow_id, expected = await drive(streamed_env.client, "tq-stream")
    publisher = publisher_of(streamed_env)
    assert await publisher.flush(5)
    assert publisher.broker is not None
    deliveries = await publisher.broker.receive(TOPIC, max_messages=1)
    assert deliveries[0].headers["key"] == json.loads(deliveries[0].body)["workflow_id"]
    await publisher.broker.nack(deliveries[0])  # back on the queue for the reader below
    bodies = await read_history_stream(publisher.broker, TOPIC, first_wait=1, idle=0.2)

    messages = [json.loads(b) for b in bodies]
    assert all(set(m) == {"v", "kind", "namespace", "workflow_id", "run_id", "event"} for m in messages)
    assert all(m["v"] == 1 and m["kind"] == "history_event" for m in messages)
    ours = [m for m in messages if m["workflow_id"] == workflow_id]
    assert len(ours) == sum(len(h.events) for h in expected)
    for run in expected:  # in commit order per run
        ids = [m["event"]["event_id"] for m in ours if m["run_id"] == run.run_id]
        assert ids == list(range(1, len(run.events) + 1))

    found = histories_from_stream(bodies, workflow_ids={workflow_id})
    assert found.incomplete == {} and found.duplicates == 0 and found.malformed == 0
    assert_same_runs(found.histories, expected)
    results = await Replayer(workflows=[StreamedWorkflow]).replay_workflows(found.histories)
    assert results.replay_failures == {} and results.replayed == 2
    assert sample("sagas_history_stream_published_total") - published_before >= len(ours)
    assert publisher.lag_seconds() == 0.0


async def test_message_key_is_the_workflow_id(streamed_env: WorkflowEnvironment) -> None:
    workflow_id, _ = await drive(streamed_env.client, "tq-key")
    publisher = publisher_of(streamed_env)
    assert await publisher.flush(5) and publisher.broker is not None
    deliveries = await publisher.broker.receive(TOPIC, max_messages=1000, wait=0.5)
    ours = [d for d in deliveries if HistoryEventMessage.decode(d.body).workflow_id == workflow_id]
    assert ours and all(d.headers == {"key": workflow_id} for d in ours)


async def test_republish_closes_gaps_and_duplicates_are_dropped(streamed_env: WorkflowEnvironment) -> None:
    workflow_id, expected = await drive(streamed_env.client, "tq-republish")
    publisher = publisher_of(streamed_env)
    assert await publisher.flush(5) and publisher.broker is not None
    bodies = await read_history_stream(publisher.broker, TOPIC, first_wait=1, idle=0.2)
    # Lose an event in the middle of the first run: the reader reports the gap instead of replaying.
    lossy = [b for b in bodies if not _is(b, workflow_id, expected[0].run_id, 4)]
    found = histories_from_stream(lossy, workflow_ids={workflow_id})
    assert [h.run_id for h in found.histories] == [expected[1].run_id]
    assert "events 4 are missing" in found.incomplete[f"default/{workflow_id}/{expected[0].run_id}"]

    total = sum(len(h.events) for h in expected)
    assert await publisher.republish("default", workflow_id) == total
    assert await publisher.republish("default", workflow_id, expected[1].run_id) == len(expected[1].events)
    again = await read_history_stream(publisher.broker, TOPIC, first_wait=1, idle=0.2)
    healed = histories_from_stream([*lossy, *again], workflow_ids={workflow_id})
    assert healed.incomplete == {}
    assert healed.duplicates == len(lossy) - _count_other(lossy, workflow_id) + len(expected[1].events)
    assert_same_runs(healed.histories, expected)


def _is(body: bytes, workflow_id: str, run_id: str, event_id: int) -> bool:
    m = HistoryEventMessage.decode(body)
    return (m.workflow_id, m.run_id, m.event_id) == (workflow_id, run_id, event_id)


def _count_other(bodies: list[bytes], workflow_id: str) -> int:
    return sum(1 for b in bodies if HistoryEventMessage.decode(b).workflow_id != workflow_id)


async def test_republish_refuses_what_it_cannot_do(streamed_env: WorkflowEnvironment) -> None:
    publisher = publisher_of(streamed_env)
    with pytest.raises(ValueError, match="not found"):
        await publisher.republish("default", "no-such-workflow")
    with pytest.raises(ValueError, match="needs the history store"):
        await HistoryStreamPublisher(broker=MemoryBroker()).republish("default", "x")
    with pytest.raises(ValueError, match="allow-list"):
        await HistoryStreamPublisher(broker=MemoryBroker(), store=publisher.store, namespaces=["a"]).republish("b", "x")


async def test_cli_replays_from_the_built_in_broker_and_reports_a_divergence() -> None:
    async with await WorkflowEnvironment.start_local(history_stream_url="local://") as env:
        workflow_id, expected = await drive(env.client, "tq-cli")
        publisher = publisher_of(env)
        assert await publisher.flush(5)
        assert env.server is not None
        url = f"local://{env.server.target}"
        args = ["workflow", "replay", "--broker-log", url, "--topic", TOPIC, "-w", workflow_id, "--wait", "2", "--idle", "0.3"]
        ok = await asyncio.to_thread(
            CliRunner().invoke, app, [*args, "--workflows", f"{__name__}:StreamedWorkflow"]
        )
        assert ok.exit_code == 0, ok.output
        assert ok.output.count("OK ") == 2 and "2 replayed: 2 OK, 0 failed" in ok.output
        assert f"default/{workflow_id} (run {expected[0].run_id})" in ok.output

        # Reading the built-in broker took the messages: republish them, then replay changed code.
        await publisher.republish("default", workflow_id, expected[0].run_id)
        bad = await asyncio.to_thread(
            CliRunner().invoke, app, [*args, "--workflows", f"{__name__}:StreamedWorkflowChanged"]
        )
        assert bad.exit_code == 1, bad.output
        assert "nondeterminism at event 5" in bad.output
        assert "history recorded:      ActivityTaskScheduled(activity_id='1', activity_type='shout')" in bad.output
        assert "the workflow produced: StartTimer(timer_id='1')" in bad.output
        assert "test_history_stream.py:" in bad.output


async def test_namespace_allow_list() -> None:
    async with await WorkflowEnvironment.start_local(
        history_stream_url="memory://", history_stream_namespaces=["billing"]
    ) as env:
        await drive(env.client, "tq-allow")
        publisher = publisher_of(env)
        assert await publisher.flush(5)
        assert publisher.queued == 0
        assert publisher.broker is None or await publisher.broker.receive(TOPIC, wait=0.1) == []
        assert publisher.enabled_for("billing") and not publisher.enabled_for("default")


# -- best-effort: never blocks or fails a write ---------------------------------------------------


class BlockingBroker(MemoryBroker):
    """Publishes only once ``release`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()

    async def publish(self, queue: str, body: bytes, headers: dict[str, str] | None = None) -> str:
        await self.release.wait()
        return await super().publish(queue, body, headers)


class FailingBroker(MemoryBroker):
    def __init__(self) -> None:
        super().__init__()
        self.attempts = 0

    async def publish(self, queue: str, body: bytes, headers: dict[str, str] | None = None) -> str:
        self.attempts += 1
        raise BrokerError("broker is down")


@contextlib.asynccontextmanager
async def installed(env: WorkflowEnvironment, publisher: HistoryStreamPublisher) -> AsyncIterator[None]:
    """Feed the running server's commits to ``publisher`` instead of its own stream."""
    assert env.server is not None
    history = env.server.orchestrator.history
    await publisher.start()
    history.history_sink = publisher
    try:
        yield
    finally:
        history.history_sink = publisher_of(env)
        await publisher.stop()


async def test_a_stuck_broker_does_not_block_workflows_overflow_is_counted_and_lag_exported(
    streamed_env: WorkflowEnvironment,
) -> None:
    broker = BlockingBroker()
    stuck = HistoryStreamPublisher(broker=broker, max_queue=8, batch_size=2)
    overflow_before = sample("sagas_history_stream_dropped_total", {"reason": "overflow"})
    async with installed(streamed_env, stuck):
        _, expected = await asyncio.wait_for(drive(streamed_env.client, "tq-stuck"), 30)
        total = sum(len(h.events) for h in expected)
        assert stuck.queued <= 8
        dropped = sample("sagas_history_stream_dropped_total", {"reason": "overflow"}) - overflow_before
        assert dropped == total - stuck.queued
        await asyncio.sleep(0.05)
        assert stuck.lag_seconds() >= 0.05
        assert sample("sagas_history_stream_lag_seconds") >= 0.05
        broker.release.set()
        assert await stuck.flush(5)
        assert stuck.lag_seconds() == 0.0
        found = histories_from_stream(await read_history_stream(broker, TOPIC, first_wait=0.5, idle=0.1))
        # The first 8 events got in; the rest of the first run and all of the second were dropped.
        # A dropped tail looks like a run still open: its prefix is a valid history to replay.
        [prefix] = found.histories
        assert prefix.run_id == expected[0].run_id and prefix.events == expected[0].events[:8]


async def test_broker_errors_are_counted_and_never_reach_the_write(streamed_env: WorkflowEnvironment) -> None:
    broker = FailingBroker()
    failing = HistoryStreamPublisher(broker=broker, retries=1, retry_delay=0.001)
    before = sample("sagas_history_stream_dropped_total", {"reason": "broker_error"})
    async with installed(streamed_env, failing):
        _, expected = await drive(streamed_env.client, "tq-failing")  # completes although every publish fails
        assert await failing.flush(5)
        dropped = sample("sagas_history_stream_dropped_total", {"reason": "broker_error"}) - before
        assert dropped == sum(len(h.events) for h in expected)
        assert broker.attempts >= 2  # retried before dropping


async def test_unreachable_stream_broker_queues_then_drops_on_stop() -> None:
    publisher = HistoryStreamPublisher("local://127.0.0.1:1", reconnect_delay=0.05, publish_timeout=1, retries=0)
    await publisher.start()
    before = sample("sagas_history_stream_dropped_total", {"reason": "broker_error"}) + sample(
        "sagas_history_stream_dropped_total", {"reason": "shutdown"}
    )
    publisher.submit_events("default", "w", "r", [event(1, "WorkflowTaskScheduled", task_queue="q", start_to_close_timeout=10.0)])
    await publisher.stop(timeout=2)
    after = sample("sagas_history_stream_dropped_total", {"reason": "broker_error"}) + sample(
        "sagas_history_stream_dropped_total", {"reason": "shutdown"}
    )
    assert after - before == 1 and publisher.queued == 0


def test_configuration_errors_are_refused_up_front() -> None:
    with pytest.raises(ValueError, match="unknown scheme 'nats'"):
        HistoryStreamPublisher("nats://x")
    with pytest.raises(ValueError, match="not both or neither"):
        HistoryStreamPublisher()
    with pytest.raises(ValueError, match="not both or neither"):
        HistoryStreamPublisher("memory://", broker=MemoryBroker())


def test_submit_outside_the_allow_list_is_ignored() -> None:
    publisher = HistoryStreamPublisher(broker=MemoryBroker(), namespaces=["a"])
    publisher.submit_events("b", "w", "r", [event(1)])
    assert publisher.queued == 0
    publisher.submit_events("a", "w", "r", [event(1)])
    assert publisher.queued == 1


# -- rebuilding histories from messages -------------------------------------------------------------


def body(event_id: int, *, workflow_id: str = "w", run_id: str = "r", namespace: str = "default", **kw: Any) -> bytes:
    if event_id == 1:
        e = event(1, "WorkflowExecutionStarted", workflow_type="X", task_queue="q", workflow_task_timeout=10.0, **kw)
    else:  # an input event: valid after any event of an open run
        e = event(event_id, "WorkflowExecutionSignaled", signal_name="s", **kw)
    return HistoryEventMessage.of(namespace, workflow_id, run_id, e).encode()


def test_grouping_deduplicates_and_orders_by_event_id() -> None:
    found = histories_from_stream([body(2), body(1), body(2), body(3), body(1, run_id="r2"), body(3)])
    assert found.duplicates == 2 and found.messages == 6
    [r, r2] = found.histories
    assert [e.event_id for e in r.events] == [1, 2, 3] and (r.workflow_id, r.run_id) == ("w", "r")
    assert [e.event_id for e in r2.events] == [1]


def test_incomplete_runs_say_what_is_missing() -> None:
    found = histories_from_stream([body(3), body(4), body(1, run_id="b"), body(2, run_id="b"), body(5, run_id="b")])
    assert found.histories == []
    assert found.incomplete["default/w/r"].startswith("events 1-2 are missing: the stream has none of its first")
    assert found.incomplete["default/w/b"].startswith("events 3-4 are missing: they were dropped")
    assert "republish" in found.incomplete["default/w/b"]


def test_filters_by_namespace_workflow_and_time() -> None:
    late = datetime(2026, 3, 1, tzinfo=UTC).isoformat()
    bodies = [
        body(1, workflow_id="a"),
        body(1, workflow_id="b", namespace="other"),
        body(1, workflow_id="c"),
        body(2, workflow_id="c", event_time=late),
    ]
    assert [h.workflow_id for h in histories_from_stream(bodies, namespace="other").histories] == ["b"]
    assert [h.workflow_id for h in histories_from_stream(bodies, workflow_ids={"a"}).histories] == ["a"]
    selected = histories_from_stream(bodies, since=datetime(2026, 2, 1))  # naive: UTC
    assert [(h.workflow_id, len(h.events)) for h in selected.histories] == [("c", 2)]  # the whole run
    early = histories_from_stream(bodies, until=datetime(2026, 2, 1, tzinfo=UTC))
    assert sorted(h.workflow_id for h in early.histories) == ["a", "b", "c"]


def test_malformed_and_newer_messages_are_counted_not_fatal() -> None:
    newer = json.dumps({"v": 2, "kind": "history_event", "namespace": "d", "workflow_id": "w", "run_id": "r", "event": {}})
    found = histories_from_stream([b"not json", newer.encode(), body(1)])
    assert found.malformed == 2 and found.malformed_example
    assert len(found.histories) == 1


# -- Kafka: a topic keyed by workflow id, read back with a fresh consumer group ------------------------


async def test_kafka_stream_rebuilds_fetch_history(kafka_server: Any) -> None:  # noqa: F811 - fixture
    url = f"kafka://{kafka_server.bootstrap}?partitions=3&session_timeout_ms=2000&heartbeat_interval_ms=100&fetch_max_wait_ms=100"
    async with await WorkflowEnvironment.start_local(history_stream_url=url) as env:
        workflow_id, expected = await drive(env.client, "tq-kafka")
        publisher = publisher_of(env)
        assert await publisher.flush(10)
        bodies = await read_history_stream(url, TOPIC, first_wait=30, idle=2)
        found = histories_from_stream(bodies, workflow_ids={workflow_id})
        assert found.incomplete == {}
        assert_same_runs(found.histories, expected)
        # Reading a log is not destructive: a second reader (its own group) sees it all again.
        again = histories_from_stream(await read_history_stream(url, TOPIC, first_wait=30, idle=2), workflow_ids={workflow_id})
        assert_same_runs(again.histories, expected)
        result = await asyncio.to_thread(
            CliRunner().invoke,
            app,
            ["workflow", "replay", "--broker-log", url, "-w", workflow_id, "--workflows", f"{__name__}:StreamedWorkflow",
             "--wait", "30"],
        )
        assert result.exit_code == 0, result.output
        assert "2 replayed: 2 OK, 0 failed" in result.output


# -- RabbitMQ: a stream queue (x-queue-type=stream), read from its first offset as often as wanted ------


async def test_rabbitmq_stream_is_a_stream_read_again_and_replayed(rabbitmq_server: Any) -> None:  # noqa: F811
    prefix = f"rs{uuid.uuid4().hex[:8]}"
    topic = history_stream_name(prefix)
    url = rabbitmq_server.url
    async with await WorkflowEnvironment.start_local(history_stream_url=url, prefix=prefix, system_worker=False) as env:
        workflow_id, expected = await drive(env.client, "tq-rabbit")
        publisher = publisher_of(env)
        assert await publisher.flush(10)
    broker = await open_broker(url)
    try:
        assert isinstance(broker, RabbitMQBroker)
        # The queue is a stream: declaring it as a plain queue is refused (its type is stream).
        with pytest.raises(BrokerError, match="x-queue-type"):
            await broker.declare_queue(topic)
        first = await broker.read_stream(topic, first_wait=10, idle=0.5)
        second = await broker.read_stream(topic, first_wait=10, idle=0.5)  # reading removed nothing
    finally:
        await broker.aclose()
    assert [o for o, _ in first] == list(range(len(first)))  # stream offsets, from the first
    assert first == second
    found = histories_from_stream([b for _, b in first], workflow_ids={workflow_id})
    assert found.incomplete == {} and found.invalid == {}
    assert_same_runs(found.histories, expected)
    for _ in range(2):  # the CLI reads the stream from its start each time
        result = await asyncio.to_thread(
            CliRunner().invoke,
            app,
            ["workflow", "replay", "--broker-log", url, "--topic", topic, "-w", workflow_id,
             "--workflows", f"{__name__}:StreamedWorkflow", "--wait", "10", "--idle", "0.5"],
        )
        assert result.exit_code == 0, result.output
        assert "2 replayed: 2 OK, 0 failed" in result.output
