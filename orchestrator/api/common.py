"""Value types shared by events, commands and tasks: retry policies and failures.

Payloads are plain JSON values (``list[Any]`` for argument lists, ``Any`` for a
single result) so that a service that never imports the SDK can read and write
them; the SDK's data converter turns them into typed Python values.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

Payloads = list[Any]
"""Arguments of a workflow, activity, signal or update: a JSON array."""


class Frozen(BaseModel):
    """Base of every immutable API model (hashable, extra keys refused)."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class RetryPolicySpec(Frozen):
    """How an activity (or workflow) is retried; durations in seconds.

    ``maximum_attempts = 0`` means unlimited. ``maximum_interval`` defaults to
    100 x ``initial_interval`` as in Temporal.

    >>> RetryPolicySpec(initial_interval=1.0).backoff(3)
    4.0
    """

    initial_interval: float = 1.0
    backoff_coefficient: float = 2.0
    maximum_interval: float | None = None
    maximum_attempts: int = 0
    non_retryable_error_types: tuple[str, ...] = ()

    def backoff(self, attempt: int) -> float:
        """Delay before attempt ``attempt + 1`` after attempt ``attempt`` failed."""
        delay = self.initial_interval * (self.backoff_coefficient ** (attempt - 1))
        cap = self.maximum_interval if self.maximum_interval is not None else 100 * self.initial_interval
        return float(min(delay, cap))

    def allows_retry(self, attempt: int, error_type: str | None, non_retryable: bool) -> bool:
        """True when attempt ``attempt`` failed with this error and may be retried."""
        if non_retryable:
            return False
        if error_type is not None and error_type in self.non_retryable_error_types:
            return False
        return self.maximum_attempts == 0 or attempt < self.maximum_attempts


class Failure(Frozen):
    """A failure as it travels in history and over the wire (like Temporal's Failure).

    ``kind`` says which failure it is: ``application`` (raised by user code),
    ``activity`` / ``child_workflow`` (wrappers whose ``cause`` is the real
    error), ``timeout``, ``canceled``, ``terminated`` or ``server``.
    """

    message: str
    kind: str = "application"
    type: str | None = None
    non_retryable: bool = False
    details: Payloads = Field(default_factory=list)
    stack_trace: str = ""
    cause: Failure | None = None
    timeout_type: str | None = None
    retry_state: str | None = None
    activity_id: str | None = None
    activity_type: str | None = None
    scheduled_event_id: int | None = None
    workflow_id: str | None = None
    workflow_type: str | None = None
    last_heartbeat_details: Payloads | None = None


class WorkflowRef(Frozen):
    """Identifies one run (or, with ``run_id`` empty, the latest run) of a workflow."""

    namespace: str
    workflow_id: str
    run_id: str = ""
