"""Replay every recorded history in ``histories/`` against today's workflow code."""

from __future__ import annotations

import json

import pytest

from orchestrator.api import events as ev
from sagas.exceptions import NondeterminismError
from sagas.testing.replay import assert_replays, parametrize_histories
from sagas.worker._replayer import Replayer, WorkflowHistory
from tests.replay.record_histories import HISTORIES, REPLAY_WORKFLOWS, SHAPES, record
from tests.sagas.runtime import workflows as w

FILES = sorted(HISTORIES.glob("*.json"))


def test_there_is_a_history_per_shape() -> None:
    assert {f.stem for f in FILES} == {s.name for s in SHAPES}


@parametrize_histories(HISTORIES)
async def test_recorded_history_replays(history: WorkflowHistory) -> None:
    assert isinstance(history.events[-1], tuple(_close_types()))
    await assert_replays(history, workflows=REPLAY_WORKFLOWS)


async def test_recorded_folder_replays() -> None:
    assert await assert_replays(HISTORIES, workflows=REPLAY_WORKFLOWS) == len(FILES)


@pytest.mark.parametrize("shape", SHAPES, ids=[s.name for s in SHAPES])
async def test_fresh_recording_replays(shape: object) -> None:
    history = await record(shape)  # type: ignore[arg-type]
    await Replayer(workflows=REPLAY_WORKFLOWS).replay_workflow(history)


async def test_replay_all_collects_failures() -> None:
    histories = [WorkflowHistory.from_json(f.read_text()) for f in FILES]
    results = await Replayer(workflows=REPLAY_WORKFLOWS).replay_workflows(histories)
    assert results.replay_failures == {} and results.replayed == len(FILES)
    # With the v1 patched workflow registered instead of v2, the new-path history diverges.
    others = [c for c in REPLAY_WORKFLOWS if c is not w.PatchedWorkflowV2]
    results = await Replayer(workflows=[*others, w.PatchedWorkflowV1]).replay_workflows(
        histories, raise_on_replay_failure=False
    )
    assert list(results.replay_failures) == ["replay-patched_new/run-patched_new"]
    assert isinstance(results.replay_failures["replay-patched_new/run-patched_new"], NondeterminismError)


def test_history_accepts_a_bare_event_list() -> None:
    data = json.loads((HISTORIES / "one_activity.json").read_text())
    history = WorkflowHistory.from_json(data["events"], workflow_id="x")
    assert history.workflow_id == "x" and len(history.events) == len(data["events"])
    assert WorkflowHistory.from_json(json.dumps(data)).run_id == "run-one_activity"


def _close_types() -> list[type]:
    return [
        ev.WorkflowExecutionCompleted,
        ev.WorkflowExecutionFailed,
        ev.WorkflowExecutionCanceled,
        ev.WorkflowExecutionContinuedAsNew,
    ]
