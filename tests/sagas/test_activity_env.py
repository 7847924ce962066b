"""sagas.activity and sagas.testing.ActivityEnvironment, without a server."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time

import pytest

from sagas import activity
from sagas.activity import ActivityDefinition
from sagas.testing import ActivityEnvironment


@activity.defn
async def count_up(n: int) -> int:
    start = activity.info().heartbeat_details[0] if activity.info().heartbeat_details else 0
    for i in range(start, n):
        activity.heartbeat(i)
    return n


@activity.defn(name="sync-count")
def sync_count(n: int) -> list[int]:
    seen = []
    for i in range(n):
        activity.heartbeat(i, "step")
        seen.append(i)
    return seen


async def test_heartbeats_are_recorded() -> None:
    env = ActivityEnvironment()
    assert await env.run(count_up, 3) == 3
    assert env.heartbeats == [(0,), (1,), (2,)]


def test_sync_activity_heartbeats_and_on_heartbeat() -> None:
    env = ActivityEnvironment()
    calls = []
    env.on_heartbeat = lambda *details: calls.append(details)
    assert env.run(sync_count, 2) == [0, 1]
    assert env.heartbeats == [(0, "step"), (1, "step")]
    assert calls == env.heartbeats


async def test_info_is_overridable_and_resumes_from_heartbeat_details() -> None:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, attempt=3, activity_type="count_up", heartbeat_details=[2])

    @activity.defn
    async def check() -> tuple[int, str, str | None]:
        info = activity.info()
        return info.attempt, info.activity_type, info.workflow_id

    assert await env.run(check) == (3, "count_up", "test")
    assert await env.run(count_up, 4) == 4
    assert env.heartbeats == [(2,), (3,)]


async def test_cancel_delivers_cancelled_error_to_async_activity() -> None:
    env = ActivityEnvironment()
    started = asyncio.Event()

    @activity.defn
    async def waits_forever() -> None:
        started.set()
        await asyncio.sleep(60)

    task = asyncio.ensure_future(env.run(waits_forever))
    await started.wait()
    env.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_activity_may_catch_cancellation_and_clean_up() -> None:
    env = ActivityEnvironment()
    started = asyncio.Event()

    @activity.defn
    async def cleans_up() -> str:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            await activity.wait_for_cancelled()  # already set: returns at once
            details = activity.cancellation_details()
            return f"cleaned up (requested={details is not None and details.cancel_requested})"
        return "finished"

    task = asyncio.ensure_future(env.run(cleans_up))
    await started.wait()
    env.cancel()
    assert await task == "cleaned up (requested=True)"

    # An activity run after cancel() is cancelled from the start.
    with pytest.raises(asyncio.CancelledError):
        await env.run(cleans_up)


def test_sync_activity_sees_is_cancelled_from_another_thread() -> None:
    env = ActivityEnvironment()

    @activity.defn
    def polls() -> int:
        checks = 0
        while not activity.is_cancelled():
            checks += 1
            time.sleep(0.005)
        return checks

    threading.Timer(0.05, env.cancel).start()
    assert env.run(polls) > 0


def test_outside_an_activity_the_functions_raise() -> None:
    assert not activity.in_activity()
    with pytest.raises(RuntimeError, match="not in an activity"):
        activity.info()
    with pytest.raises(RuntimeError):
        activity.heartbeat(1)


def test_raise_complete_async_is_not_an_exception() -> None:
    env = ActivityEnvironment()

    @activity.defn
    def later() -> None:
        try:
            activity.raise_complete_async()
        except Exception:  # must not catch it
            pytest.fail("CompleteAsyncError was caught by 'except Exception'")

    with pytest.raises(activity.CompleteAsyncError):
        env.run(later)


def test_defn_records_name_and_types() -> None:
    defn = ActivityDefinition.must_from_callable(sync_count)
    assert defn.name == "sync-count"
    assert not defn.is_async
    assert defn.arg_types == [int]
    assert defn.ret_type == list[int]
    assert ActivityDefinition.must_from_callable(count_up).is_async

    class Svc:
        @activity.defn
        async def method(self, x: str) -> str:
            return x

    bound = ActivityDefinition.must_from_callable(Svc().method)
    assert bound.arg_types == [str] and bound.name == "method"


def test_defn_refuses_keyword_only_and_undecorated() -> None:
    with pytest.raises(TypeError, match="keyword-only"):

        @activity.defn
        async def bad(*, x: int) -> None: ...

    async def plain() -> None: ...

    with pytest.raises(TypeError, match="not decorated with @activity.defn"):
        ActivityDefinition.must_from_callable(plain)


def test_logger_adds_activity_details(caplog: pytest.LogCaptureFixture) -> None:
    env = ActivityEnvironment()

    @activity.defn
    def logs() -> None:
        activity.logger.warning("hello")

    with caplog.at_level("WARNING"):
        env.run(logs)
    assert "hello" in caplog.text and "'activity_id': 'test'" in caplog.text
