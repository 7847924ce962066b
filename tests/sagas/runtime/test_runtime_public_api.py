"""Pins the public names, so a refactor cannot silently break users."""

from __future__ import annotations

import sagas
import sagas.common
import sagas.converter
import sagas.exceptions
import sagas.saga
import sagas.workflow


def test_workflow_public_names() -> None:
    assert set(sagas.workflow.__all__) == {
        "ActivityCancellationType",
        "ActivityHandle",
        "ChildWorkflowHandle",
        "ContinueAsNewError",
        "ExternalWorkflowHandle",
        "Info",
        "NondeterminismError",
        "ParentClosePolicy",
        "ParentInfo",
        "SessionFailedError",
        "SessionInfo",
        "SessionOptions",
        "SessionState",
        "UpdateMethod",
        "complete_session",
        "continue_as_new",
        "create_session",
        "defn",
        "deprecate_patch",
        "execute_activity",
        "execute_activity_method",
        "execute_child_workflow",
        "execute_local_activity",
        "get_external_workflow_handle",
        "get_session_info",
        "in_workflow",
        "info",
        "init",
        "instance",
        "logger",
        "memo",
        "now",
        "patched",
        "query",
        "random",
        "run",
        "session",
        "set_dynamic_signal_handler",
        "set_query_handler",
        "set_signal_handler",
        "signal",
        "sleep",
        "start_activity",
        "start_activity_method",
        "start_child_workflow",
        "start_local_activity",
        "time",
        "unsafe",
        "update",
        "upsert_search_attributes",
        "uuid4",
        "wait_condition",
    }


def test_exceptions_public_names() -> None:
    assert set(sagas.exceptions.__all__) >= {
        "ActivityError",
        "ApplicationError",
        "CancelledError",
        "ChildWorkflowError",
        "FailureError",
        "NondeterminismError",
        "PayloadSizeError",
        "RPCError",
        "SagaCompensationError",
        "SagasError",
        "ServerError",
        "SessionFailedError",
        "TerminatedError",
        "TimeoutError",
        "WorkflowAlreadyStartedError",
        "WorkflowFailureError",
        "WorkflowNotFoundError",
        "WorkflowQueryFailedError",
        "WorkflowUpdateFailedError",
        "error_to_failure",
        "failure_to_error",
        "is_cancelled_error",
    }


def test_other_public_names() -> None:
    assert set(sagas.common.__all__) == {
        "RetryPolicy",
        "SearchAttributeKey",
        "SearchAttributeUpdate",
        "WorkflowIDReusePolicy",
    }
    assert set(sagas.converter.__all__) >= {"DataConverter", "PayloadCodec", "default"}
    assert set(sagas.saga.__all__) == {"SAGA_MARKER", "Saga"}
    assert set(sagas.__all__) == {
        "Saga",
        "__version__",
        "activity",
        "client",
        "common",
        "converter",
        "exceptions",
        "testing",
        "worker",
        "workflow",
    }
    for name in sagas.__all__:
        assert getattr(sagas, name) is not None
    for module in (sagas.workflow, sagas.exceptions, sagas.common, sagas.converter, sagas.saga):
        for name in module.__all__:
            assert getattr(module, name).__doc__ or name.isupper() or name == "logger", name


def test_replayer_is_importable_from_its_module() -> None:
    from sagas.worker._replayer import Replayer, WorkflowHistory

    assert Replayer and WorkflowHistory
