"""patched() in old vs new histories; local activities recorded as markers and replayed."""

from __future__ import annotations

import pytest

from orchestrator.api import commands as cmd
from orchestrator.api import events as ev
from sagas.exceptions import NondeterminismError
from sagas.workflow._instance import WorkflowRunner
from tests.sagas.runtime import workflows
from tests.sagas.runtime.fakeserver import FakeServer
from tests.sagas.runtime.workflows import (
    LocalActivityWorkflow,
    PatchedWorkflowV1,
    PatchedWorkflowV2,
    PatchedWorkflowV3,
    lookup_rate,
)

ACTIVITIES = {"greet": lambda s: s, "book_car": lambda r: {"ref": "C", "city": r["city"]}}


async def replay(workflow: type, server: FakeServer) -> list[cmd.Command]:
    instance = WorkflowRunner([workflow]).create_instance(
        namespace="default",
        workflow_id=server.workflow_id,
        run_id=server.run_id,
        workflow_type=server.workflow_type,
        task_queue=server.task_queue,
    )
    return await instance.activate(server.history)


async def test_patched_is_true_for_new_runs_and_records_a_marker() -> None:
    server = FakeServer([PatchedWorkflowV2], activities=ACTIVITIES)
    server.start("PatchedWorkflow")
    await server.run()
    assert server.result == "v2-new"
    markers = server.events_of(ev.MarkerRecorded)
    assert [(m.marker_name, m.details) for m in markers] == [("core_patch", {"patch_id": "new-greeting"})]
    assert await replay(PatchedWorkflowV2, server) == []


async def test_patched_is_false_when_replaying_an_old_history() -> None:
    old = FakeServer([PatchedWorkflowV1], activities=ACTIVITIES)
    old.start("PatchedWorkflow")
    await old.run()
    assert old.result == "v1"
    # Finished v1 history replays under v2: patched() is False, the old path matches.
    assert await replay(PatchedWorkflowV2, old) == []


async def test_patched_switches_to_the_new_path_in_a_running_old_workflow() -> None:
    # Started under v1 (first activity scheduled), then the worker is upgraded to v2.
    server = FakeServer([PatchedWorkflowV1], activities=ACTIVITIES)
    server.start("PatchedWorkflow")
    await server.run_task()
    server.resolve_outstanding()
    server.runner = WorkflowRunner([PatchedWorkflowV2])
    server.instance = None  # the new worker has an empty cache
    await server.run()
    assert server.result == "v2-new"
    assert await replay(PatchedWorkflowV2, server) == []


async def test_deprecated_patch_replays_histories_with_the_marker() -> None:
    server = FakeServer([PatchedWorkflowV2], activities=ACTIVITIES)
    server.start("PatchedWorkflow")
    await server.run()
    # v3 no longer asks for the marker; the recorded one is skipped.
    assert await replay(PatchedWorkflowV3, server) == []
    fresh = FakeServer([PatchedWorkflowV3], activities=ACTIVITIES)
    fresh.start("PatchedWorkflow")
    await fresh.run()
    assert not fresh.events_of(ev.MarkerRecorded)


async def test_unpatched_change_is_nondeterministic() -> None:
    old = FakeServer([PatchedWorkflowV1], activities=ACTIVITIES)
    old.start("PatchedWorkflow")
    await old.run()
    with pytest.raises(NondeterminismError, match="greet.*book_car|book_car.*greet"):
        await replay(PatchedWorkflowV3, old)


@pytest.mark.parametrize("cached", [True, False], ids=["cached", "replay-every-task"])
async def test_local_activity_marker_and_replay_without_calling(cached: bool) -> None:
    workflows.LOCAL_CALLS.clear()
    server = FakeServer([LocalActivityWorkflow], local_activities={"lookup_rate": lookup_rate}, cached=cached)
    server.start("LocalActivityWorkflow", "EUR")
    marker, timer = await server.run_task()
    assert isinstance(marker, cmd.RecordMarker)
    assert marker.marker_name == "local_activity"
    assert marker.details == {
        "activity_type": "lookup_rate",
        "activity_id": "local-1",
        "seq": 1,
        "result": 1.1,
    }
    assert timer == cmd.StartTimer(timer_id="1", start_to_fire_timeout=1.0)
    await server.run()
    assert server.result == 2.2
    assert workflows.LOCAL_CALLS == ["EUR"]  # replays (uncached) used the marker
    assert await replay(LocalActivityWorkflow, server) == []
    assert workflows.LOCAL_CALLS == ["EUR"]


async def test_local_activity_failure_is_recorded_and_raised() -> None:
    server = FakeServer([LocalActivityWorkflow], local_activities={"lookup_rate": lookup_rate})
    server.start("LocalActivityWorkflow", "XXX")
    marker, fail = await server.run_task()
    assert isinstance(marker, cmd.RecordMarker) and marker.failure is not None
    assert marker.failure.type == "UnknownCurrency"
    assert "result" not in marker.details
    assert isinstance(fail, cmd.FailWorkflowExecution)
    assert fail.failure.kind == "activity"
    assert fail.failure.cause is not None and fail.failure.cause.type == "UnknownCurrency"
    assert await replay(LocalActivityWorkflow, server) == []


async def test_local_activity_missing_marker_on_replay_is_nondeterministic() -> None:
    server = FakeServer([LocalActivityWorkflow], local_activities={"lookup_rate": lookup_rate})
    server.start("LocalActivityWorkflow", "GBP")
    await server.run()
    server.history = [e for e in server.history if not isinstance(e, ev.MarkerRecorded)]
    for i, e in enumerate(server.history):  # renumber
        server.history[i] = e.model_copy(update={"event_id": i + 1})
    with pytest.raises(NondeterminismError, match="local activity 'lookup_rate'"):
        await replay(LocalActivityWorkflow, server)


async def test_local_activity_is_retried_in_process() -> None:
    from datetime import timedelta

    from sagas import workflow
    from sagas.common import RetryPolicy

    attempts: list[int] = []

    def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise RuntimeError("flaky")
        return "ok"

    @workflow.defn
    class Flaky:
        @workflow.run
        async def run(self) -> str:
            return str(
                await workflow.execute_local_activity(
                    "flaky",
                    start_to_close_timeout=timedelta(seconds=1),
                    retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=1)),
                )
            )

    server = FakeServer([Flaky], local_activities={"flaky": flaky})
    server.start("Flaky")
    await server.run()
    assert server.result == "ok"
    assert len(attempts) == 3
