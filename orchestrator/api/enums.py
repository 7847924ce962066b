"""Enumerations shared by the server, the brokers and the SDK.

Names follow Temporal's vocabulary so that people who know it feel at home.
"""

from __future__ import annotations

from enum import StrEnum


class EventType(StrEnum):
    """Type of a history event (Temporal's names)."""

    WORKFLOW_EXECUTION_STARTED = "WorkflowExecutionStarted"
    WORKFLOW_EXECUTION_COMPLETED = "WorkflowExecutionCompleted"
    WORKFLOW_EXECUTION_FAILED = "WorkflowExecutionFailed"
    WORKFLOW_EXECUTION_CANCELED = "WorkflowExecutionCanceled"
    WORKFLOW_EXECUTION_TERMINATED = "WorkflowExecutionTerminated"
    WORKFLOW_EXECUTION_TIMED_OUT = "WorkflowExecutionTimedOut"
    WORKFLOW_EXECUTION_CONTINUED_AS_NEW = "WorkflowExecutionContinuedAsNew"
    WORKFLOW_TASK_SCHEDULED = "WorkflowTaskScheduled"
    WORKFLOW_TASK_STARTED = "WorkflowTaskStarted"
    WORKFLOW_TASK_COMPLETED = "WorkflowTaskCompleted"
    WORKFLOW_TASK_FAILED = "WorkflowTaskFailed"
    WORKFLOW_TASK_TIMED_OUT = "WorkflowTaskTimedOut"
    ACTIVITY_TASK_SCHEDULED = "ActivityTaskScheduled"
    ACTIVITY_TASK_STARTED = "ActivityTaskStarted"
    ACTIVITY_TASK_COMPLETED = "ActivityTaskCompleted"
    ACTIVITY_TASK_FAILED = "ActivityTaskFailed"
    ACTIVITY_TASK_TIMED_OUT = "ActivityTaskTimedOut"
    ACTIVITY_TASK_CANCEL_REQUESTED = "ActivityTaskCancelRequested"
    ACTIVITY_TASK_CANCELED = "ActivityTaskCanceled"
    TIMER_STARTED = "TimerStarted"
    TIMER_FIRED = "TimerFired"
    TIMER_CANCELED = "TimerCanceled"
    WORKFLOW_EXECUTION_SIGNALED = "WorkflowExecutionSignaled"
    WORKFLOW_EXECUTION_CANCEL_REQUESTED = "WorkflowExecutionCancelRequested"
    MARKER_RECORDED = "MarkerRecorded"
    START_CHILD_WORKFLOW_EXECUTION_INITIATED = "StartChildWorkflowExecutionInitiated"
    START_CHILD_WORKFLOW_EXECUTION_FAILED = "StartChildWorkflowExecutionFailed"
    CHILD_WORKFLOW_EXECUTION_STARTED = "ChildWorkflowExecutionStarted"
    CHILD_WORKFLOW_EXECUTION_COMPLETED = "ChildWorkflowExecutionCompleted"
    CHILD_WORKFLOW_EXECUTION_FAILED = "ChildWorkflowExecutionFailed"
    CHILD_WORKFLOW_EXECUTION_CANCELED = "ChildWorkflowExecutionCanceled"
    CHILD_WORKFLOW_EXECUTION_TERMINATED = "ChildWorkflowExecutionTerminated"
    CHILD_WORKFLOW_EXECUTION_TIMED_OUT = "ChildWorkflowExecutionTimedOut"
    SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED = "SignalExternalWorkflowExecutionInitiated"
    SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_FAILED = "SignalExternalWorkflowExecutionFailed"
    EXTERNAL_WORKFLOW_EXECUTION_SIGNALED = "ExternalWorkflowExecutionSignaled"
    REQUEST_CANCEL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED = (
        "RequestCancelExternalWorkflowExecutionInitiated"
    )
    REQUEST_CANCEL_EXTERNAL_WORKFLOW_EXECUTION_FAILED = (
        "RequestCancelExternalWorkflowExecutionFailed"
    )
    EXTERNAL_WORKFLOW_EXECUTION_CANCEL_REQUESTED = "ExternalWorkflowExecutionCancelRequested"
    WORKFLOW_EXECUTION_UPDATE_ACCEPTED = "WorkflowExecutionUpdateAccepted"
    WORKFLOW_EXECUTION_UPDATE_COMPLETED = "WorkflowExecutionUpdateCompleted"
    UPSERT_WORKFLOW_SEARCH_ATTRIBUTES = "UpsertWorkflowSearchAttributes"


class WorkflowExecutionStatus(StrEnum):
    """Status of a workflow run, as shown by describe and list.

    Example::

        desc = await client.get_workflow_handle("trip-1").describe()
        if desc.status == WorkflowExecutionStatus.FAILED:
            print("failed:", desc.failure)
    """

    RUNNING = "Running"
    COMPLETED = "Completed"
    FAILED = "Failed"
    CANCELED = "Canceled"
    TERMINATED = "Terminated"
    CONTINUED_AS_NEW = "ContinuedAsNew"
    TIMED_OUT = "TimedOut"


class CommandType(StrEnum):
    """Type of a command a workflow task completes with."""

    SCHEDULE_ACTIVITY_TASK = "ScheduleActivityTask"
    REQUEST_CANCEL_ACTIVITY_TASK = "RequestCancelActivityTask"
    START_TIMER = "StartTimer"
    CANCEL_TIMER = "CancelTimer"
    COMPLETE_WORKFLOW_EXECUTION = "CompleteWorkflowExecution"
    FAIL_WORKFLOW_EXECUTION = "FailWorkflowExecution"
    CANCEL_WORKFLOW_EXECUTION = "CancelWorkflowExecution"
    CONTINUE_AS_NEW_WORKFLOW_EXECUTION = "ContinueAsNewWorkflowExecution"
    RECORD_MARKER = "RecordMarker"
    START_CHILD_WORKFLOW_EXECUTION = "StartChildWorkflowExecution"
    SIGNAL_EXTERNAL_WORKFLOW_EXECUTION = "SignalExternalWorkflowExecution"
    REQUEST_CANCEL_EXTERNAL_WORKFLOW_EXECUTION = "RequestCancelExternalWorkflowExecution"
    UPSERT_WORKFLOW_SEARCH_ATTRIBUTES = "UpsertWorkflowSearchAttributes"
    ACCEPT_UPDATE = "AcceptUpdate"
    COMPLETE_UPDATE = "CompleteUpdate"
    REJECT_UPDATE = "RejectUpdate"


class TimeoutType(StrEnum):
    """Which timeout fired."""

    SCHEDULE_TO_START = "ScheduleToStart"
    SCHEDULE_TO_CLOSE = "ScheduleToClose"
    START_TO_CLOSE = "StartToClose"
    HEARTBEAT = "Heartbeat"


class RetryState(StrEnum):
    """Why an activity or workflow stopped being retried."""

    IN_PROGRESS = "InProgress"
    NON_RETRYABLE_FAILURE = "NonRetryableFailure"
    TIMEOUT = "Timeout"
    MAXIMUM_ATTEMPTS_REACHED = "MaximumAttemptsReached"
    RETRY_POLICY_NOT_SET = "RetryPolicyNotSet"
    CANCEL_REQUESTED = "CancelRequested"


class WorkflowIDReusePolicy(StrEnum):
    """What a start does when a run with the same workflow id exists (closed).

    Example::

        await client.start_workflow(
            BookTrip.run, trip, id=f"trip-{trip.id}", task_queue="trips",
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,   # retry only a failed trip
        )
    """

    ALLOW_DUPLICATE = "AllowDuplicate"
    ALLOW_DUPLICATE_FAILED_ONLY = "AllowDuplicateFailedOnly"
    REJECT_DUPLICATE = "RejectDuplicate"
    TERMINATE_IF_RUNNING = "TerminateIfRunning"


class ParentClosePolicy(StrEnum):
    """What happens to a child workflow when its parent closes.

    Example (inside a workflow)::

        await workflow.start_child_workflow(
            AuditWorkflow.run, order, id=f"audit-{order.id}",
            parent_close_policy=ParentClosePolicy.ABANDON,     # the audit outlives this workflow
        )
    """

    TERMINATE = "Terminate"
    ABANDON = "Abandon"
    REQUEST_CANCEL = "RequestCancel"


class ActivityCancellationType(StrEnum):
    """How a workflow waits for an activity it cancelled.

    Example (inside a workflow)::

        handle = workflow.start_activity(
            hold_seat, seat, start_to_close_timeout=timedelta(hours=1), heartbeat_timeout=timedelta(seconds=30),
            cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
        )
        handle.cancel()          # awaiting the handle now waits until the activity released the seat
    """

    TRY_CANCEL = "TryCancel"
    WAIT_CANCELLATION_COMPLETED = "WaitCancellationCompleted"
    ABANDON = "Abandon"


class TaskKind(StrEnum):
    """Kind of a task on a broker queue."""

    WORKFLOW = "wf"
    ACTIVITY = "act"
