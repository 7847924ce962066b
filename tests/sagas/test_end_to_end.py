"""SDK against a real in-process orchestrator: client, worker, activities, workflows."""

from __future__ import annotations

import asyncio
import concurrent.futures
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from brokers.base import queue_name
from brokers.local import LocalBrokerClient
from orchestrator.api.enums import EventType, WorkflowExecutionStatus
from sagas import activity, workflow
from sagas.client import Client, WorkflowHandle
from sagas.common import RetryPolicy
from sagas.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    WorkflowFailureError,
    WorkflowNotFoundError,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
)
from sagas.testing import WorkflowEnvironment
from sagas.worker import Worker

pytestmark = pytest.mark.e2e

T = timedelta(seconds=10)


def new_queue() -> str:
    return f"tq-{uuid.uuid4().hex[:8]}"


# -- activities ---------------------------------------------------------------------


@dataclass
class Greeting:
    name: str
    times: int = 1


@activity.defn
async def greet(req: Greeting) -> str:
    return " ".join([f"hello {req.name}"] * req.times)


ATTEMPTS: Counter[str] = Counter()


@activity.defn
async def flaky(key: str) -> int:
    ATTEMPTS[key] += 1
    if ATTEMPTS[key] < 3:
        raise RuntimeError(f"attempt {ATTEMPTS[key]} failed")
    return ATTEMPTS[key]


@activity.defn
def sync_double(n: int) -> int:
    activity.heartbeat(n)
    return n * 2


TOKENS: asyncio.Queue[bytes] | None = None


@activity.defn
async def wait_for_human(question: str) -> str:
    assert TOKENS is not None
    await TOKENS.put(activity.info().task_token)
    activity.raise_complete_async()


@activity.defn
async def heartbeat_until_cancelled() -> str:
    try:
        while True:
            activity.heartbeat("working")
            await asyncio.sleep(0.05)
    except asyncio.CancelledError:
        return "cancelled-and-cleaned-up"


# -- workflows ---------------------------------------------------------------------


@workflow.defn
class GreetWorkflow:
    @workflow.run
    async def run(self, name: str) -> str:
        return await workflow.execute_activity(greet, Greeting(name, 2), start_to_close_timeout=T)


@workflow.defn
class RetryWorkflow:
    @workflow.run
    async def run(self, key: str) -> int:
        return await workflow.execute_activity(
            flaky,
            key,
            start_to_close_timeout=T,
            retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=50), maximum_attempts=5),
        )


@workflow.defn
class SyncActivityWorkflow:
    @workflow.run
    async def run(self, n: int) -> int:
        return await workflow.execute_activity(sync_double, n, start_to_close_timeout=T)


@workflow.defn
class InteractiveWorkflow:
    def __init__(self) -> None:
        self.items: list[str] = []
        self.done = False
        self.limit = 10

    @workflow.run
    async def run(self) -> list[str]:
        await workflow.wait_condition(lambda: self.done)
        return self.items

    @workflow.signal
    def add(self, item: str) -> None:
        self.items.append(item)

    @workflow.signal
    def finish(self) -> None:
        self.done = True

    @workflow.query
    def count(self) -> int:
        return len(self.items)

    @workflow.update
    async def set_limit(self, limit: int) -> int:
        old, self.limit = self.limit, limit
        return old

    @set_limit.validator
    def check_limit(self, limit: int) -> None:
        if limit < 0:
            raise ValueError("limit must be >= 0")


@workflow.defn
class SleepWorkflow:
    @workflow.run
    async def run(self, seconds: float) -> str:
        await workflow.sleep(seconds)
        return "woke up"


@workflow.defn
class AsyncCompletionWorkflow:
    @workflow.run
    async def run(self, question: str) -> str:
        return await workflow.execute_activity(wait_for_human, question, start_to_close_timeout=T)


@workflow.defn
class CancellableActivityWorkflow:
    @workflow.run
    async def run(self) -> str:
        return await workflow.execute_activity(
            heartbeat_until_cancelled,
            start_to_close_timeout=T,
            heartbeat_timeout=timedelta(seconds=2),
        )


@dataclass
class Order:
    quantity: int


@workflow.defn
class OrderWorkflow:
    @workflow.run
    async def run(self, order: Order) -> int:
        return order.quantity


@activity.defn
async def takes_order(order: Order) -> int:
    return order.quantity


@workflow.defn
class BadActivityInputWorkflow:
    @workflow.run
    async def run(self) -> int:
        return await workflow.execute_activity(
            "takes_order",
            {"quantity": "lots"},
            start_to_close_timeout=T,
            retry_policy=RetryPolicy(maximum_attempts=1),
        )


async def history_types(handle: WorkflowHandle[Any]) -> list[str]:
    return [str(e.event_type) for e in (await handle.fetch_history()).events]


async def wait_for_event(handle: WorkflowHandle[Any], event_type: EventType, timeout: float = 10.0) -> None:
    async def poll() -> None:
        while event_type not in await history_types(handle):
            await asyncio.sleep(0.05)

    await asyncio.wait_for(poll(), timeout)


# -- tests -----------------------------------------------------------------------------


async def test_one_activity_workflow(env: WorkflowEnvironment) -> None:
    tq = new_queue()
    async with Worker(env.client, task_queue=tq, workflows=[GreetWorkflow], activities=[greet]):
        result = await env.client.execute_workflow(GreetWorkflow.run, "Ada", id=f"greet-{tq}", task_queue=tq)
    assert result == "hello Ada hello Ada"
    handle = env.client.get_workflow_handle(f"greet-{tq}")
    desc = await handle.describe()
    assert desc.status == WorkflowExecutionStatus.COMPLETED
    assert desc.workflow_type == "GreetWorkflow"
    types = await history_types(handle)
    assert types[0] == EventType.WORKFLOW_EXECUTION_STARTED
    assert types[-1] == EventType.WORKFLOW_EXECUTION_COMPLETED
    assert EventType.ACTIVITY_TASK_COMPLETED in types
    assert (await env.client.count_workflows()).count >= 1
    listed = [wf.id async for wf in env.client.list_workflows()]
    assert f"greet-{tq}" in listed


async def test_activity_is_retried_until_it_succeeds(env: WorkflowEnvironment) -> None:
    tq = new_queue()
    async with Worker(env.client, task_queue=tq, workflows=[RetryWorkflow], activities=[flaky]):
        assert await env.client.execute_workflow(RetryWorkflow.run, tq, id=f"retry-{tq}", task_queue=tq) == 3
    assert ATTEMPTS[tq] == 3
    types = await history_types(env.client.get_workflow_handle(f"retry-{tq}"))
    assert types.count(EventType.ACTIVITY_TASK_FAILED) == 0  # retries do not bloat history


async def test_sync_activity_needs_an_executor_and_runs_in_it(env: WorkflowEnvironment) -> None:
    tq = new_queue()
    with pytest.raises(TypeError, match="activity_executor"):
        Worker(env.client, task_queue=tq, activities=[sync_double])
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        async with Worker(
            env.client, task_queue=tq, workflows=[SyncActivityWorkflow], activities=[sync_double], activity_executor=pool
        ):
            assert await env.client.execute_workflow(SyncActivityWorkflow.run, 21, id=f"sync-{tq}", task_queue=tq) == 42


async def test_signal_query_and_update(env: WorkflowEnvironment) -> None:
    tq = new_queue()
    async with Worker(env.client, task_queue=tq, workflows=[InteractiveWorkflow]):
        handle = await env.client.start_workflow(InteractiveWorkflow.run, id=f"inter-{tq}", task_queue=tq)
        await handle.signal(InteractiveWorkflow.add, "a")
        await handle.signal("add", "b")

        async def count_is(n: int) -> None:
            while await handle.query(InteractiveWorkflow.count) != n:
                await asyncio.sleep(0.05)

        await asyncio.wait_for(count_is(2), 10)
        assert await handle.execute_update(InteractiveWorkflow.set_limit, 5) == 10
        assert await handle.execute_update("set_limit", 7) == 5
        with pytest.raises(WorkflowUpdateFailedError):
            await handle.execute_update(InteractiveWorkflow.set_limit, -1)
        with pytest.raises(WorkflowQueryFailedError):
            await handle.query("no_such_query")
        await handle.signal(InteractiveWorkflow.finish)
        assert await handle.result() == ["a", "b"]


async def test_query_after_the_worker_restarted_replays_history(env: WorkflowEnvironment) -> None:
    tq = new_queue()
    async with Worker(env.client, task_queue=tq, workflows=[InteractiveWorkflow]):
        handle = await env.client.start_workflow(InteractiveWorkflow.run, id=f"replay-{tq}", task_queue=tq)
        await handle.signal(InteractiveWorkflow.add, "x")
        await wait_for_event(handle, EventType.WORKFLOW_TASK_COMPLETED)
    # A new worker has an empty cache: it replays the history to answer.
    async with Worker(env.client, task_queue=tq, workflows=[InteractiveWorkflow]):
        async def count_is(n: int) -> None:
            while await handle.query(InteractiveWorkflow.count) != n:
                await asyncio.sleep(0.05)

        await asyncio.wait_for(count_is(1), 10)
        await handle.signal(InteractiveWorkflow.finish)
        assert await handle.result() == ["x"]


async def test_cancel_a_waiting_workflow(env: WorkflowEnvironment) -> None:
    tq = new_queue()
    async with Worker(env.client, task_queue=tq, workflows=[SleepWorkflow]):
        handle = await env.client.start_workflow(SleepWorkflow.run, 3600.0, id=f"cancel-{tq}", task_queue=tq)
        await wait_for_event(handle, EventType.TIMER_STARTED)
        await handle.cancel()
        with pytest.raises(WorkflowFailureError) as info:
            await handle.result()
    assert isinstance(info.value.cause, CancelledError)
    assert (await handle.describe()).status == WorkflowExecutionStatus.CANCELED


async def test_cancelling_a_workflow_cancels_its_heartbeating_activity(env: WorkflowEnvironment) -> None:
    tq = new_queue()
    async with Worker(
        env.client, task_queue=tq, workflows=[CancellableActivityWorkflow], activities=[heartbeat_until_cancelled]
    ):
        handle = await env.client.start_workflow(CancellableActivityWorkflow.run, id=f"actcancel-{tq}", task_queue=tq)
        await wait_for_event(handle, EventType.ACTIVITY_TASK_SCHEDULED)
        await asyncio.sleep(0.3)
        await handle.cancel()
        with pytest.raises(WorkflowFailureError) as info:
            await asyncio.wait_for(handle.result(), 15)
    assert isinstance(info.value.cause, CancelledError)


async def test_durable_timer(env: WorkflowEnvironment) -> None:
    tq = new_queue()
    async with Worker(env.client, task_queue=tq, workflows=[SleepWorkflow]):
        started = asyncio.get_running_loop().time()
        assert await env.client.execute_workflow(SleepWorkflow.run, 0.5, id=f"sleep-{tq}", task_queue=tq) == "woke up"
        assert asyncio.get_running_loop().time() - started >= 0.45
    types = await history_types(env.client.get_workflow_handle(f"sleep-{tq}"))
    assert EventType.TIMER_STARTED in types and EventType.TIMER_FIRED in types


async def test_time_skipping_jumps_a_long_timer(time_skipping_env: WorkflowEnvironment) -> None:
    env = time_skipping_env
    tq = new_queue()
    async with Worker(env.client, task_queue=tq, workflows=[SleepWorkflow]):
        result = await asyncio.wait_for(
            env.client.execute_workflow(SleepWorkflow.run, 24 * 3600.0, id=f"skip-{tq}", task_queue=tq), 20
        )
    assert result == "woke up"


async def test_async_activity_completion(env: WorkflowEnvironment) -> None:
    global TOKENS
    TOKENS = asyncio.Queue()
    tq = new_queue()
    async with Worker(env.client, task_queue=tq, workflows=[AsyncCompletionWorkflow], activities=[wait_for_human]):
        handle = await env.client.start_workflow(AsyncCompletionWorkflow.run, "ok?", id=f"async-{tq}", task_queue=tq)
        token = await asyncio.wait_for(TOKENS.get(), 10)
        activity_handle = env.client.get_async_activity_handle(task_token=token)
        await activity_handle.heartbeat("still thinking")
        await activity_handle.complete("approved")
        assert await handle.result() == "approved"


async def test_unknown_workflow_type_does_not_wedge_the_worker(env: WorkflowEnvironment) -> None:
    tq = new_queue()
    async with Worker(env.client, task_queue=tq, workflows=[GreetWorkflow], activities=[greet]):
        unknown = await env.client.start_workflow("NoSuchWorkflow", id=f"unknown-{tq}", task_queue=tq)
        await wait_for_event(unknown, EventType.WORKFLOW_TASK_FAILED)
        history = await unknown.fetch_history()
        failed = [e for e in history.events if e.event_type == EventType.WORKFLOW_TASK_FAILED][0]
        assert failed.failure is not None  # type: ignore[union-attr]
        assert "NoSuchWorkflow" in failed.failure.message and "GreetWorkflow" in failed.failure.message  # type: ignore[union-attr]
        # The same worker still runs other workflows.
        assert await env.client.execute_workflow(GreetWorkflow.run, "Bo", id=f"after-{tq}", task_queue=tq) == "hello Bo hello Bo"
        await unknown.terminate(reason="test over")


async def test_unknown_activity_type_is_reported(env: WorkflowEnvironment) -> None:
    tq = new_queue()
    async with Worker(env.client, task_queue=tq, workflows=[BadActivityInputWorkflow], activities=[greet]):
        with pytest.raises(WorkflowFailureError) as info:
            await env.client.execute_workflow(BadActivityInputWorkflow.run, id=f"noact-{tq}", task_queue=tq)
    cause = info.value.cause
    assert isinstance(cause, ActivityError)
    assert isinstance(cause.cause, ApplicationError)
    assert cause.cause.type == "ActivityTypeNotRegistered"
    assert "takes_order" in cause.cause.message and "greet" in cause.cause.message


async def test_activity_payload_that_does_not_deserialize(env: WorkflowEnvironment) -> None:
    tq = new_queue()
    async with Worker(
        env.client, task_queue=tq, workflows=[BadActivityInputWorkflow], activities=[takes_order]
    ):
        with pytest.raises(WorkflowFailureError) as info:
            await env.client.execute_workflow(BadActivityInputWorkflow.run, id=f"badact-{tq}", task_queue=tq)
    cause = info.value.cause
    assert isinstance(cause, ActivityError) and isinstance(cause.cause, ApplicationError)
    assert cause.cause.type == "PayloadConversionError"
    assert "quantity" in cause.cause.message


async def test_workflow_input_that_does_not_deserialize(env: WorkflowEnvironment) -> None:
    # Like temporalio, bad workflow input fails the workflow *task* (retried, so a fixed
    # worker can still run it), with a message naming the field; the worker goes on.
    tq = new_queue()
    async with Worker(env.client, task_queue=tq, workflows=[OrderWorkflow], activities=[greet]):
        handle = await env.client.start_workflow("OrderWorkflow", {"quantity": "many"}, id=f"badwf-{tq}", task_queue=tq)
        await wait_for_event(handle, EventType.WORKFLOW_TASK_FAILED)
        failed = [e for e in (await handle.fetch_history()).events if e.event_type == EventType.WORKFLOW_TASK_FAILED]
        assert failed[0].failure is not None  # type: ignore[union-attr]
        assert failed[0].failure.type == "PayloadConversionError"  # type: ignore[union-attr]
        assert "quantity" in failed[0].failure.message  # type: ignore[union-attr]
        assert await env.client.execute_workflow(OrderWorkflow.run, Order(3), id=f"goodwf-{tq}", task_queue=tq) == 3
        await handle.terminate(reason="test over")


async def test_unreadable_task_is_dead_lettered_and_the_worker_goes_on(env: WorkflowEnvironment) -> None:
    tq = new_queue()
    info = await env.client.cluster_info()
    broker = LocalBrokerClient(env.client.transport.base_url)
    await broker.connect()
    try:
        async with Worker(env.client, task_queue=tq, workflows=[GreetWorkflow], activities=[greet]):
            await broker.publish(queue_name(info.queue_prefix, "default", tq, "wf"), b"this is not json")
            await broker.publish(queue_name(info.queue_prefix, "default", tq, "act"), b'{"v": 99, "kind": "activity_task"}')
            assert await env.client.execute_workflow(GreetWorkflow.run, "Cy", id=f"dlq-{tq}", task_queue=tq) == "hello Cy hello Cy"

            async def dead() -> list[str]:
                while True:
                    reasons = [d.reason for d in await broker.dead_letters() if tq in d.queue]
                    if len(reasons) >= 2:
                        return reasons
                    await asyncio.sleep(0.05)

            reasons = await asyncio.wait_for(dead(), 10)
        assert any("malformed_json" in r for r in reasons)
        assert any("unknown_version" in r for r in reasons)
    finally:
        await broker.aclose()


async def test_handles_for_missing_workflows_raise_not_found(env: WorkflowEnvironment) -> None:
    handle = env.client.get_workflow_handle("does-not-exist")
    with pytest.raises(WorkflowNotFoundError):
        await handle.describe()
    with pytest.raises(WorkflowNotFoundError):
        await handle.signal("x")


async def test_fetch_history_replays(env: WorkflowEnvironment) -> None:
    from sagas.worker._replayer import Replayer, WorkflowHistory

    tq = new_queue()
    async with Worker(env.client, task_queue=tq, workflows=[GreetWorkflow], activities=[greet]):
        await env.client.execute_workflow(GreetWorkflow.run, "Di", id=f"hist-{tq}", task_queue=tq)
    history = await env.client.get_workflow_handle(f"hist-{tq}").fetch_history()
    restored = WorkflowHistory.from_json(history.to_json())
    assert restored.run_id == history.run_id
    await Replayer(workflows=[GreetWorkflow]).replay_workflow(restored)


async def test_worker_shutdown_is_prompt(env: WorkflowEnvironment) -> None:
    tq = new_queue()
    worker = Worker(env.client, task_queue=tq, workflows=[GreetWorkflow], activities=[greet])
    run = asyncio.create_task(worker.run())
    await asyncio.sleep(0.2)
    started = asyncio.get_running_loop().time()
    await worker.shutdown()
    await run
    assert asyncio.get_running_loop().time() - started < 3
    assert worker.is_shutdown


async def test_client_connect_to_the_environment(env: WorkflowEnvironment, env_broker_url: str) -> None:
    client = await Client.connect(env.client.target_host)
    try:
        scheme = env_broker_url.split("://", 1)[0]  # the broker workers are told to use: the server's
        assert (await client.cluster_info()).worker_broker_url.startswith(f"{scheme}://")
    finally:
        await client.close()


LOCAL_CANCELS: list[str] = []


@activity.defn
async def too_slow(key: str) -> str:
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        LOCAL_CANCELS.append(key)  # the worker enforced the deadline locally
        raise
    return "late"


@workflow.defn
class DeadlineWorkflow:
    @workflow.run
    async def run(self, key: str) -> str:
        return await workflow.execute_activity(
            too_slow,
            key,
            start_to_close_timeout=timedelta(milliseconds=500),
            retry_policy=RetryPolicy(maximum_attempts=1),
        )


async def test_activity_deadline_is_enforced_on_the_worker(env: WorkflowEnvironment) -> None:
    from sagas.exceptions import TimeoutError as SagasTimeoutError

    tq = new_queue()
    async with Worker(env.client, task_queue=tq, workflows=[DeadlineWorkflow], activities=[too_slow]):
        with pytest.raises(WorkflowFailureError) as info:
            await asyncio.wait_for(
                env.client.execute_workflow(DeadlineWorkflow.run, tq, id=f"deadline-{tq}", task_queue=tq), 15
            )
    cause = info.value.cause
    assert isinstance(cause, ActivityError) and isinstance(cause.cause, SagasTimeoutError)
    assert [k for k in LOCAL_CANCELS if k == tq] == [tq]  # this run only (the module runs per store)


@activity.defn
async def book(item: str) -> str:
    return f"booked {item}"


@activity.defn
async def unbook(item: str) -> None:
    return None


@activity.defn
async def fail_booking(item: str) -> str:
    raise ApplicationError(f"no {item} left", non_retryable=True)


@workflow.defn
class TripSagaWorkflow:
    @workflow.run
    async def run(self) -> str:
        from sagas import Saga

        async with Saga() as saga:
            await workflow.execute_activity(book, "car", start_to_close_timeout=T)
            saga.add_compensation(unbook, "car", start_to_close_timeout=T)
            await workflow.execute_activity(book, "hotel", start_to_close_timeout=T)
            saga.add_compensation(unbook, "hotel", start_to_close_timeout=T)
            await workflow.execute_activity(fail_booking, "flight", start_to_close_timeout=T)
        return "booked"


async def test_cli_show_draws_the_saga_and_writes_a_replayable_history(env: WorkflowEnvironment) -> None:
    from typer.testing import CliRunner

    from sagas.cli.main import app
    from sagas.worker import Replayer, WorkflowHistory

    tq = new_queue()
    async with Worker(env.client, task_queue=tq, workflows=[TripSagaWorkflow], activities=[book, unbook, fail_booking]):
        with pytest.raises(WorkflowFailureError):
            await env.client.execute_workflow(TripSagaWorkflow.run, id=f"trip-{tq}", task_queue=tq)
    address = ["--address", env.client.target_host]
    runner = CliRunner()
    shown = await asyncio.to_thread(runner.invoke, app, ["workflow", "show", "-w", f"trip-{tq}", *address])
    assert shown.exit_code == 0, shown.output
    assert "Saga" in shown.output and "compensated" in shown.output and "unbook" in shown.output
    dumped = await asyncio.to_thread(runner.invoke, app, ["workflow", "show", "-w", f"trip-{tq}", "-o", "json", *address])
    assert dumped.exit_code == 0, dumped.output
    history = WorkflowHistory.from_json(dumped.stdout)
    assert history.workflow_id == f"trip-{tq}"
    await Replayer(workflows=[TripSagaWorkflow]).replay_workflow(history)
    described = await asyncio.to_thread(runner.invoke, app, ["workflow", "describe", "-w", f"trip-{tq}", *address])
    assert described.exit_code == 0 and "Failed" in described.output


@workflow.defn
class TwoStepWorkflow:
    @workflow.run
    async def run(self, name: str) -> str:
        first = await workflow.execute_activity(greet, Greeting(name), start_to_close_timeout=T)
        await workflow.sleep(0.05)
        second = await workflow.execute_activity(greet, Greeting(name.upper()), start_to_close_timeout=T)
        return f"{first} / {second}"


async def test_many_workflows_across_two_workers(env: WorkflowEnvironment) -> None:
    tq = new_queue()
    kwargs: dict[str, Any] = {"task_queue": tq, "workflows": [TwoStepWorkflow], "activities": [greet]}
    async with Worker(env.client, **kwargs), Worker(env.client, max_cached_workflows=2, **kwargs):
        results = await asyncio.wait_for(
            asyncio.gather(
                *(
                    env.client.execute_workflow(TwoStepWorkflow.run, f"w{i}", id=f"many-{tq}-{i}", task_queue=tq)
                    for i in range(30)
                )
            ),
            60,
        )
    assert results == [f"hello w{i} / hello W{i}" for i in range(30)]
