"""Worker sessions (issue 14): a group of activities pinned to one worker process.

Every test runs a real orchestrator in-process (``time_skipping_env``); the
crash test also runs the session's worker as a subprocess and SIGKILLs it.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from sagas import workflow
from sagas.client import Client
from sagas.exceptions import ApplicationError, SessionFailedError
from sagas.testing import WorkflowEnvironment
from sagas.worker import Replayer, Worker
from sagas.workflow import SessionOptions, SessionState
from tests.sagas.session_worker_main import make_activities

ROOT = Path(__file__).resolve().parents[2]
STEP = timedelta(seconds=30)
POLL = 0.2


@workflow.defn
class PinnedWorkflow:
    """Runs one activity, then ``n`` in parallel (in child tasks), all inside one session."""

    @workflow.run
    async def run(self, n: int) -> dict[str, Any]:
        async with workflow.create_session(execution_timeout=timedelta(minutes=5)) as session:
            assert workflow.get_session_info() is session
            first = await workflow.execute_activity("where", "first", start_to_close_timeout=STEP)
            rest = await asyncio.gather(
                *(workflow.execute_activity("where", f"p{i}", start_to_close_timeout=STEP) for i in range(n))
            )
            # an explicit task queue leaves the session
            outside = await workflow.execute_activity(
                "where", "outside", task_queue=workflow.info().task_queue, start_to_close_timeout=STEP
            )
        assert workflow.get_session_info() is None
        return {
            "worker": session.worker_identity,
            "queue": session.task_queue,
            "state": session.state.value,
            "results": [first, *rest],
            "outside": outside,
        }


@workflow.defn
class RedoWorkflow:
    """The file-processing pattern: redo the whole session when its worker is lost."""

    @workflow.run
    async def run(self) -> list[dict[str, Any]]:
        attempts: list[dict[str, Any]] = []
        for _ in range(3):
            worker = ""
            try:
                async with workflow.create_session(
                    heartbeat_timeout=timedelta(seconds=1), execution_timeout=timedelta(minutes=5)
                ) as session:
                    worker = session.worker_identity
                    download = await workflow.execute_activity("where", "download", start_to_close_timeout=STEP)
                    if not attempts:
                        await workflow.execute_activity("hold", "process", start_to_close_timeout=STEP)
                    process = await workflow.execute_activity("where", "process", start_to_close_timeout=STEP)
                    attempts.append({"worker": worker, "steps": [download, process]})
                    return attempts
            except SessionFailedError as err:
                attempts.append({"worker": worker, "failed": err.message, "session_id": err.session_id})
        raise ApplicationError("no session survived", non_retryable=True)


@workflow.defn
class LimitWorkflow:
    """Two workers with one session slot each: a third session waits for a free slot."""

    @workflow.run
    async def run(self) -> dict[str, Any]:
        s1 = await workflow.create_session()
        s2 = await workflow.create_session()
        refused = ""
        try:
            await workflow.create_session(creation_timeout=timedelta(seconds=1))
        except SessionFailedError as err:
            refused = err.message
        workflow.complete_session(s1)
        s4 = await workflow.create_session(SessionOptions(creation_timeout=timedelta(seconds=30)))
        ran = await workflow.execute_activity("where", "s4", task_queue=s4.task_queue, start_to_close_timeout=STEP)
        for s in (s2, s4):
            workflow.complete_session(s)
        return {
            "s1": s1.worker_identity,
            "s2": s2.worker_identity,
            "s4": s4.worker_identity,
            "refused": refused,
            "ran": ran,
            "states": [s.state.value for s in (s1, s2, s4)],
        }


@workflow.defn
class MisuseWorkflow:
    """Every way to misuse a session, caught where the workflow code sees it."""

    @workflow.run
    async def run(self) -> dict[str, str]:
        errors: dict[str, str] = {}
        async with workflow.create_session() as session:
            try:
                async with workflow.create_session():
                    pass
            except RuntimeError as err:
                errors["nested"] = str(err)
        try:
            await workflow.execute_activity("where", "late", task_queue=session.task_queue, start_to_close_timeout=STEP)
        except RuntimeError as err:
            errors["completed"] = str(err)
        workflow.complete_session(session)  # again: nothing happens
        try:
            workflow.complete_session("not a session")  # type: ignore[arg-type]
        except TypeError as err:
            errors["type"] = str(err)
        try:
            await workflow.create_session(task_queue="nobody-hosts-sessions", creation_timeout=timedelta(seconds=2))
        except SessionFailedError as err:
            errors["no_worker"] = err.message
        return errors


def session_worker(client: Client, task_queue: str, label: str, *, slots: int = 2, workflows: bool = True) -> Worker:
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[PinnedWorkflow, RedoWorkflow, LimitWorkflow, MisuseWorkflow] if workflows else [],
        activities=make_activities(label),
        identity=label,
        max_concurrent_sessions=slots,
        poll_wait=POLL,
    )


async def test_session_keeps_its_activities_on_one_worker(time_skipping_env: WorkflowEnvironment) -> None:
    client = time_skipping_env.client
    async with session_worker(client, "pin", "w1"), session_worker(client, "pin", "w2"):
        handles = [
            await client.start_workflow(PinnedWorkflow.run, 5, id=f"pinned-{i}", task_queue="pin") for i in range(4)
        ]
        results = await asyncio.gather(*(h.result() for h in handles))
    for result in results:
        assert result["worker"] in ("w1", "w2")
        assert result["queue"].startswith("pin.__session.")
        assert result["state"] == "completed"
        assert len(result["results"]) == 6
        for step in result["results"]:
            assert step["worker"] == result["worker"], result
            assert step["task_queue"] == result["queue"], result
        assert result["outside"]["task_queue"] == "pin"
    # each worker polls its own session queue
    assert len({r["queue"] for r in results}) == len({r["worker"] for r in results})
    # the session's signal, creation activity and its cancellation replay deterministically
    await Replayer(workflows=[PinnedWorkflow]).replay_workflow(await handles[0].fetch_history())


async def test_killed_session_worker_fails_the_session_and_the_workflow_redoes_it(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    env = time_skipping_env
    assert env.server is not None
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.sagas.session_worker_main",
        "--target", env.server.target, "--identity", "worker-A", "--task-queue", "redo",
        cwd=ROOT, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        assert (await asyncio.wait_for(proc.stdout.readline(), 60)).strip() == b"ready"
        async with Worker(env.client, task_queue="redo", workflows=[RedoWorkflow], poll_wait=POLL):
            handle = await env.client.start_workflow(RedoWorkflow.run, id="redo-1", task_queue="redo")
            # worker-A opened the session, ran "download" and now runs "hold": kill it there
            assert (await asyncio.wait_for(proc.stdout.readline(), 60)).strip() == b"holding process"
            proc.kill()
            await proc.wait()
            async with session_worker(env.client, "redo", "worker-B", slots=1, workflows=False):
                attempts = await asyncio.wait_for(handle.result(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert len(attempts) == 2, attempts
    failed, redone = attempts
    assert failed["worker"] == "worker-A"
    assert "heartbeat" in failed["failed"], failed
    assert failed["session_id"]
    assert redone["worker"] == "worker-B"
    assert [s["worker"] for s in redone["steps"]] == ["worker-B", "worker-B"]
    # the first session's creation activity timed out on its heartbeat: that is what failed it
    history = await handle.fetch_history()
    timed_out = [e for e in history.events if e.event_type.value == "ActivityTaskTimedOut"]
    assert [e.failure.timeout_type for e in timed_out] == ["Heartbeat"]
    await Replayer(workflows=[RedoWorkflow]).replay_workflow(history)


async def test_worker_shutdown_fails_its_sessions_at_once(time_skipping_env: WorkflowEnvironment) -> None:
    client = time_skipping_env.client
    holding = asyncio.Event()
    worker_a = Worker(
        client,
        task_queue="drain",
        activities=make_activities("worker-A", on_hold=holding.set),
        identity="worker-A",
        max_concurrent_sessions=1,
        graceful_shutdown_timeout=timedelta(seconds=1),
        poll_wait=POLL,
    )
    async with Worker(client, task_queue="drain", workflows=[RedoWorkflow], poll_wait=POLL):
        await worker_a.__aenter__()
        handle = await client.start_workflow(RedoWorkflow.run, id="drain-1", task_queue="drain")
        await asyncio.wait_for(holding.wait(), 30)
        assert worker_a.open_sessions == 1
        stopping = asyncio.create_task(worker_a.__aexit__(None, None, None))
        async with session_worker(client, "drain", "worker-B", slots=1, workflows=False):
            attempts = await asyncio.wait_for(handle.result(), 60)
        await stopping
    failed, redone = attempts
    assert failed["worker"] == "worker-A" and "worker-A is shutting down" in failed["failed"], failed
    assert redone["worker"] == "worker-B"
    history = await handle.fetch_history()
    assert not [e for e in history.events if e.event_type.value == "ActivityTaskTimedOut"]


async def test_max_concurrent_sessions_is_a_limit(time_skipping_env: WorkflowEnvironment) -> None:
    client = time_skipping_env.client
    async with session_worker(client, "limit", "w1", slots=1), session_worker(client, "limit", "w2", slots=1):
        handle = await client.start_workflow(LimitWorkflow.run, id="limit-1", task_queue="limit")
        result = await handle.result()
    await Replayer(workflows=[LimitWorkflow]).replay_workflow(await handle.fetch_history())
    assert {result["s1"], result["s2"]} == {"w1", "w2"}  # one session per worker
    assert "could not create session" in result["refused"] and "max_concurrent_sessions" in result["refused"]
    assert result["s4"] == result["s1"]  # the only worker with a free slot
    assert result["ran"]["worker"] == result["s4"]
    assert result["states"] == ["completed", "completed", "completed"]


async def test_session_misuse_is_reported(time_skipping_env: WorkflowEnvironment) -> None:
    client = time_skipping_env.client
    async with session_worker(client, "misuse", "w1", slots=2):
        errors = await client.execute_workflow(MisuseWorkflow.run, id="misuse-1", task_queue="misuse")
    assert "sessions do not nest" in errors["nested"]
    assert "is completed" in errors["completed"]
    assert "SessionInfo" in errors["type"]
    assert "nobody-hosts-sessions" in errors["no_worker"]


async def test_session_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="execution_timeout"):
        SessionOptions(execution_timeout=timedelta(0))
    with pytest.raises(ValueError, match="heartbeat_timeout"):
        workflow.create_session(heartbeat_timeout=timedelta(seconds=-1))
    with pytest.raises(RuntimeError, match="not in a workflow"):
        await workflow.create_session()
    with pytest.raises(RuntimeError, match="not in a workflow"):
        workflow.get_session_info()
    assert SessionState("failed") is SessionState.FAILED
    client = Client.__new__(Client)  # never connects: the constructor checks come first
    with pytest.raises(ValueError, match="max_concurrent_sessions"):
        Worker(client, task_queue="q", activities=make_activities("x"), max_concurrent_sessions=-1)
    with pytest.raises(ValueError, match="needs activities"):
        Worker(client, task_queue="q", workflows=[PinnedWorkflow], max_concurrent_sessions=1)
