"""The rules of :meth:`HistoryStore.write`, written once for every backend.

A backend reads, inside its own transaction, what the rules need
(:func:`keys_to_read` says what): the shard's ``range_id``, the ``db_version``
of each run the write touches and the current-run pointer of each workflow id.
:func:`plan_write` checks the rules against that :class:`StoredView` and
returns the rows to store, or raises before anything was changed. The backend
then applies the :class:`WritePlan`; the only error left to it is a unique-key
violation on an event or task id (that *is* the optimistic-concurrency signal,
and it must roll back the whole write).

The writes of one call are applied in order, as if one after the other: a
continue-as-new that closes run A (moving the pointer's status) and creates run
B (moving the pointer from A to B) in one call works.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeVar

from orchestrator.api.events import HistoryEvent
from orchestrator.api.tasks import TimerTask, TransferTask
from orchestrator.history.state import ExecutionState
from orchestrator.persistence._codec import RunKey, WorkflowKey, run_key
from orchestrator.persistence.base import (
    ConditionFailedError,
    CurrentRun,
    CurrentRunConflictError,
    ExecutionWrite,
    ShardOwnershipLostError,
    VisibilityRecord,
)

_TaskT = TypeVar("_TaskT", TransferTask, TimerTask)


@dataclass
class StoredView:
    """What the backend read, in its transaction, before applying a write."""

    range_id: int
    versions: dict[RunKey, int] = field(default_factory=dict)
    """``db_version`` of each run in :func:`keys_to_read` that exists."""
    current: dict[WorkflowKey, CurrentRun] = field(default_factory=dict)
    """The current-run pointer of each workflow id in :func:`keys_to_read` that has one."""


@dataclass
class ExecutionRow:
    """The final state of one run after the write."""

    state: ExecutionState
    stored_version: int | None
    """The ``db_version`` stored before the write (None: insert a new row)."""


@dataclass
class WritePlan:
    """The rows one write stores; the backend applies all of them or none."""

    executions: dict[RunKey, ExecutionRow] = field(default_factory=dict)
    current: dict[WorkflowKey, CurrentRun] = field(default_factory=dict)
    """Current-run pointers to insert or replace."""
    events: list[tuple[RunKey, HistoryEvent]] = field(default_factory=list)
    transfer_tasks: list[TransferTask] = field(default_factory=list)
    timer_tasks: list[TimerTask] = field(default_factory=list)
    visibility: dict[RunKey, VisibilityRecord] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        """Events plus tasks: the rows that make a write big."""
        return len(self.events) + len(self.transfer_tasks) + len(self.timer_tasks)


def keys_to_read(writes: list[ExecutionWrite]) -> tuple[set[RunKey], set[WorkflowKey]]:
    """The runs and workflow ids whose stored version and pointer :func:`plan_write` needs."""
    runs = {run_key(w.state) for w in writes}
    return runs, {(ns, wf) for ns, wf, _ in runs}


def plan_write(shard_id: int, range_id: int, writes: list[ExecutionWrite], view: StoredView) -> WritePlan:
    """Check ``writes`` against ``view`` and return what to store.

    Raises :class:`ShardOwnershipLostError`, :class:`ConditionFailedError`,
    :class:`CurrentRunConflictError`, or :class:`ValueError` for a write that
    breaks the contract whatever is stored (a programming error).
    """
    if view.range_id != range_id:
        raise ShardOwnershipLostError(
            f"shard {shard_id} is at range_id {view.range_id} but this write carries range_id {range_id}: "
            "another process acquired the shard since. Stop writing for this shard and release it."
        )
    versions = dict(view.versions)
    current = dict(view.current)
    plan = WritePlan()
    for write in writes:
        state = write.state
        key = run_key(state)
        _check_versions(write, key)
        stored = versions.get(key)
        if write.expected_version is None and stored is not None:
            raise ConditionFailedError(
                f"cannot create run {_name(key)}: it already exists (db_version {stored}). "
                "Reload it instead of creating it again."
            )
        if write.expected_version is not None and stored != write.expected_version:
            found = "it does not exist" if stored is None else f"it is at db_version {stored}"
            raise ConditionFailedError(
                f"run {_name(key)} changed since it was read: expected db_version "
                f"{write.expected_version}, but {found}. Reload it and apply the change again."
            )
        versions[key] = state.db_version
        previous = plan.executions.get(key)
        plan.executions[key] = ExecutionRow(state, previous.stored_version if previous else stored)

        wf_key = (state.namespace, state.workflow_id)
        pointer = current.get(wf_key)
        if write.set_current:
            pointer_run = pointer.run_id if pointer else None
            if pointer_run != write.expected_current_run_id:
                raise CurrentRunConflictError(
                    f"workflow {state.namespace}/{state.workflow_id}: expected current run "
                    f"{write.expected_current_run_id!r} but it is {pointer_run!r}. "
                    "Reload the current run and decide again (e.g. apply the id-reuse policy).",
                    pointer_run,
                )
            current[wf_key] = plan.current[wf_key] = CurrentRun(
                state.run_id, state.status.value, state.start_request_id
            )
        elif pointer is not None and pointer.run_id == state.run_id:
            current[wf_key] = plan.current[wf_key] = CurrentRun(
                pointer.run_id, state.status.value, pointer.start_request_id
            )

        plan.events.extend((key, event) for event in write.events)
        plan.transfer_tasks.extend(_on_shard(task, shard_id) for task in write.transfer_tasks)
        plan.timer_tasks.extend(_on_shard(task, shard_id) for task in write.timer_tasks)
        if write.visibility is not None:
            record = write.visibility
            if (record.namespace, record.workflow_id, record.run_id) != key:
                raise ValueError(
                    f"the visibility record of {record.namespace}/{record.workflow_id}/{record.run_id} "
                    f"was written with the state of {_name(key)}; they must name the same run"
                )
            plan.visibility[key] = record
    return plan


def _check_versions(write: ExecutionWrite, key: RunKey) -> None:
    wanted = 1 if write.expected_version is None else write.expected_version + 1
    if write.state.db_version != wanted:
        raise ValueError(
            f"run {_name(key)}: state.db_version is {write.state.db_version} but must be {wanted} "
            f"(expected_version {write.expected_version} + 1, or 1 to create)"
        )


def _on_shard(task: _TaskT, shard_id: int) -> _TaskT:
    # Tasks live on the shard the write is fenced by. A task built without a
    # shard (0, the default) is stamped with it; one built for another shard
    # is a bug that would hand the task to the wrong owner.
    if task.shard_id == shard_id:
        return task
    if task.shard_id != 0:
        raise ValueError(
            f"task {task.task_id} names shard {task.shard_id} but is written to shard {shard_id}"
        )
    return task.model_copy(update={"shard_id": shard_id})


def _name(key: RunKey) -> str:
    return "/".join(key)


def duplicate_event_error(key: RunKey, event_id: int) -> ConditionFailedError:
    """The error for an event id that is already in the history (the unique key)."""
    return ConditionFailedError(
        f"event {event_id} of {_name(key)} already exists: another writer appended to this history. "
        "Reload the run and apply the change again."
    )


def duplicate_task_error(kind: str, shard_id: int, task_id: str) -> ConditionFailedError:
    """The error for a task id that is already in the shard's outbox."""
    return ConditionFailedError(
        f"{kind} task {task_id} already exists on shard {shard_id}; task ids must be unique"
    )
