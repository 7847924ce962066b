"""Pin the public names of the SDK modules (a refactor must not drop one silently)."""

from __future__ import annotations

import importlib

import pytest

PUBLIC = {
    "sagas.activity": {
        "ActivityCancellationDetails", "ActivityDefinition", "CompleteAsyncError", "Info", "LoggerAdapter",
        "cancellation_details", "client", "defn", "heartbeat", "in_activity", "info", "is_cancelled",
        "is_worker_shutdown", "logger", "raise_complete_async", "wait_for_cancelled", "wait_for_cancelled_sync",
        "wait_for_worker_shutdown", "wait_for_worker_shutdown_sync",
    },
    "sagas.client": {
        "AsyncActivityCancelledError", "AsyncActivityHandle", "Client", "RPCError", "TLSConfig", "WorkflowAlreadyStartedError",
        "WorkflowContinuedAsNewError", "WorkflowExecution", "WorkflowExecutionAsyncIterator",
        "WorkflowExecutionCount", "WorkflowExecutionDescription", "WorkflowExecutionStatus",
        "WorkflowFailureError", "WorkflowHandle", "WorkflowHistory", "WorkflowIDReusePolicy",
        "WorkflowNotFoundError", "WorkflowQueryFailedError", "WorkflowUpdateFailedError", "WorkflowUpdateHandle",
        "WorkflowUpdateStage",
        # schedules
        "InvalidScheduleError", "Schedule", "ScheduleAction", "ScheduleActionExecutionStartWorkflow",
        "ScheduleActionResult", "ScheduleActionStartWorkflow", "ScheduleAlreadyRunningError", "ScheduleBackfill",
        "ScheduleCalendarSpec", "ScheduleDescription", "ScheduleHandle", "ScheduleInfo", "ScheduleIntervalSpec",
        "ScheduleListActionStartWorkflow", "ScheduleListDescription", "ScheduleListInfo", "ScheduleListSchedule",
        "ScheduleListState", "ScheduleNotFoundError", "ScheduleOverlapPolicy", "SchedulePolicy", "ScheduleRange",
        "ScheduleSpec", "ScheduleState", "ScheduleUpdate", "ScheduleUpdateInput",
        # batch operations
        "BatchCancel", "BatchOperation", "BatchOperationFailure", "BatchOperationHandle", "BatchOperationProgress",
        "BatchReset", "BatchSignal", "BatchTerminate",
    },
    "sagas.worker": {"ReplayResult", "ReplayResults", "Replayer", "Worker", "WorkflowHistory"},
    "sagas.testing": {"ActivityEnvironment", "WorkflowEnvironment"},
    "sagas.testing.replay": {
        "LabeledHistory", "ReplayFailure", "assert_replays", "describe_replay_failure", "load_histories",
        "parametrize_histories", "replay_histories",
    },
}


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_public_names(module: str) -> None:
    mod = importlib.import_module(module)
    assert set(mod.__all__) == PUBLIC[module]
    for name in mod.__all__:
        assert getattr(mod, name) is not None


def test_client_history_is_the_replayers() -> None:
    from sagas.client import WorkflowHistory
    from sagas.worker import WorkflowHistory as ReplayerHistory

    assert WorkflowHistory is ReplayerHistory
