"""The history service: loads executions, runs the engine, writes the result atomically.

It keeps a cache of mutable states (one lock per execution, so writes to one
run are serialised in this process while different runs proceed in
parallel), hands the transfer and timer tasks of each commit to matching and
the timer queue in memory (the outbox rows are the safety net), and wakes
whoever waits on a run (result long-polls, updates).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from orchestrator.api.enums import EventType as ET
from orchestrator.api.events import HistoryEvent
from orchestrator.api.tasks import TimerTask, TransferTask
from orchestrator.errors import (
    NamespaceNotFoundError,
    OrchestratorError,
    ShardNotOwnedError,
    UnavailableError,
    WorkflowAlreadyStartedError,
    WorkflowNotFoundError,
    WorkflowNotRunningError,
)
from orchestrator.errors import UnsupportedEventVersionError as ApiUnsupportedEventVersion
from orchestrator.history.engine import HistoryEngine, Mutation, StartRequest, check_id_reuse
from orchestrator.history.state import ExecutionState
from orchestrator.logging import reset_log_context, set_log_context
from orchestrator.metrics import METRICS
from orchestrator.persistence.base import (
    ConditionFailedError,
    CurrentRunConflictError,
    ExecutionWrite,
    HistoryStore,
    ShardOwnershipLostError,
    StoreError,
    UnsupportedEventVersionError,
    shard_for,
)

log = logging.getLogger("sagas.history")

_CLOSE_STATUS = {
    ET.WORKFLOW_EXECUTION_COMPLETED: "completed",
    ET.WORKFLOW_EXECUTION_FAILED: "failed",
    ET.WORKFLOW_EXECUTION_CANCELED: "canceled",
    ET.WORKFLOW_EXECUTION_TERMINATED: "terminated",
    ET.WORKFLOW_EXECUTION_TIMED_OUT: "timed_out",
    ET.WORKFLOW_EXECUTION_CONTINUED_AS_NEW: "continued_as_new",
}
_ACTIVITY_OUTCOME = {
    ET.ACTIVITY_TASK_COMPLETED: "completed",
    ET.ACTIVITY_TASK_FAILED: "failed",
    ET.ACTIVITY_TASK_CANCELED: "canceled",
    ET.ACTIVITY_TASK_TIMED_OUT: "timed_out",
}


def _observe_activities(before: ExecutionState, events: list[HistoryEvent], now: float) -> None:
    """Latency histograms of the activities this commit closed (from the state before the op,
    whose cached ``started_time`` the write may not carry)."""
    for ev in events:
        outcome = _ACTIVITY_OUTCOME.get(ev.event_type)
        if outcome is None:
            continue
        info = before.activities.get(ev.scheduled_event_id)  # type: ignore[union-attr]
        if info is None:
            continue
        kind = info.activity_type
        METRICS.activity_schedule_to_close.labels(activity_type=kind, outcome=outcome).observe(max(0.0, now - info.scheduled_time))
        if info.started_time is not None:
            METRICS.activity_start_to_close.labels(activity_type=kind).observe(max(0.0, now - info.started_time))
            if info.dispatch_time is not None:
                METRICS.activity_schedule_to_start.labels(activity_type=kind).observe(
                    max(0.0, info.started_time - info.dispatch_time)
                )


def _count_workflows(m: Mutation) -> None:
    for ev in m.events:
        if ev.event_type == ET.WORKFLOW_EXECUTION_STARTED:
            METRICS.workflows_started.labels(workflow_type=m.state.workflow_type).inc()
        else:
            status = _CLOSE_STATUS.get(ev.event_type)
            if status is not None:
                METRICS.workflows_closed.labels(workflow_type=m.state.workflow_type, status=status).inc()

Key = tuple[str, str, str]


class Clock(Protocol):
    def now(self) -> float: ...


class SystemClock:
    """Wall-clock time; ``offset`` lets the time-skipping test server jump ahead."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return time.time() + self.offset


class TaskSink(Protocol):
    def submit_transfer(self, tasks: list[TransferTask]) -> None: ...


class TimerSink(Protocol):
    def submit_timers(self, tasks: list[TimerTask]) -> None: ...


class HistorySink(Protocol):
    """Gets each commit's events after the commit (the history stream); must not block or raise."""

    def submit_events(self, namespace: str, workflow_id: str, run_id: str, events: list[HistoryEvent]) -> None: ...


class _Entry:
    __slots__ = ("lock", "state", "changed")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.state: ExecutionState | None = None
        self.changed = asyncio.Condition()


class HistoryService:
    """Owns the history shards of this process and applies engine calls to them."""

    MAX_CAS_RETRIES = 5

    def __init__(
        self,
        store: HistoryStore,
        *,
        engine: HistoryEngine | None = None,
        clock: Clock | None = None,
        num_shards: int = 4,
        owner: str = "dev",
        cache_size: int = 10_000,
    ) -> None:
        self.store = store
        self.num_shards = num_shards
        self.engine = engine or HistoryEngine(shard_of=self.shard_of)
        self.clock: Clock = clock or SystemClock()
        self.owner = owner
        self.range_ids: dict[int, int] = {}
        self.owned_shards_only = False
        """Refuse to touch a workflow of a shard not in ``range_ids`` (:class:`ShardNotOwnedError`)
        instead of writing with range_id 0: set when shards are shared by many processes."""
        self._cache: OrderedDict[Key, _Entry] = OrderedDict()
        self._cache_size = cache_size
        self._current_runs: dict[tuple[str, str], str] = {}
        """``(namespace, workflow_id) -> current run id`` of workflows on owned shards: set by this
        process's commits (which alone move the pointer while it owns the shard) and by reads."""
        self._current_drops = 0
        """Entries of ``_current_runs`` dropped so far: a store read during which one was dropped
        does not fill the map (its answer may be older than the dropped entry)."""
        self.transfer_sink: TaskSink | None = None
        self.timer_sink: TimerSink | None = None
        self.history_sink: HistorySink | None = None
        self.known_namespaces: set[str] = {"default"}
        self.history_limits: Callable[[str], tuple[int | None, int | None]] | None = None
        """``namespace -> (hard limit, warning threshold)`` on a run's history length in events."""

    def shard_of(self, namespace: str, workflow_id: str) -> int:
        return shard_for(namespace, workflow_id, self.num_shards)

    async def acquire_shards(self) -> None:
        for shard in range(self.num_shards):
            self.range_ids[shard] = await self.store.acquire_shard(shard, self.owner)
        METRICS.shards_owned.set(len(self.range_ids))

    def add_shard(self, shard: int, range_id: int) -> None:
        """Own ``shard`` at ``range_id`` (acquired by the membership controller)."""
        self._drop_cached(shard)  # written by another owner since: never trust an older cache
        self.range_ids[shard] = range_id

    def drop_shard(self, shard: int) -> None:
        """Stop owning ``shard``: no more writes to it from here, and its cached states are gone
        (another process may write them from now on)."""
        if self.range_ids.pop(shard, None) is not None:
            log.info("dropped shard %d", shard)
        self._drop_cached(shard)

    def forget(self, namespace: str, workflow_id: str, run_id: str) -> None:
        """Drop a run's cached state (retention deleted it from the store)."""
        entry = self._cache.pop((namespace, workflow_id, run_id), None)
        if entry is not None:
            entry.state = None
        if self._current_runs.get((namespace, workflow_id)) == run_id:
            self._drop_current(namespace, workflow_id)

    def _drop_cached(self, shard: int) -> None:
        for key in [k for k in self._cache if self.shard_of(k[0], k[1]) == shard]:
            entry = self._cache.pop(key)
            entry.state = None
        for ns, wid in [k for k in self._current_runs if self.shard_of(*k) == shard]:
            self._drop_current(ns, wid)

    # current runs ------------------------------------------------------------------------
    def _set_current(self, namespace: str, workflow_id: str, run_id: str) -> None:
        runs = self._current_runs
        runs.pop((namespace, workflow_id), None)
        runs[(namespace, workflow_id)] = run_id
        if len(runs) > self._cache_size:
            del runs[next(iter(runs))]  # the oldest
            self._current_drops += 1

    def _drop_current(self, namespace: str, workflow_id: str) -> None:
        if self._current_runs.pop((namespace, workflow_id), None) is not None:
            self._current_drops += 1

    def owns(self, namespace: str, workflow_id: str) -> bool:
        return not self.owned_shards_only or self.shard_of(namespace, workflow_id) in self.range_ids

    def _require_owner(self, namespace: str, workflow_id: str) -> None:
        if not self.owns(namespace, workflow_id):
            raise ShardNotOwnedError(self.shard_of(namespace, workflow_id))

    # cache ------------------------------------------------------------------------------
    def _entry(self, key: Key) -> _Entry:
        entry = self._cache.get(key)
        if entry is None:
            entry = self._cache[key] = _Entry()
            if len(self._cache) > self._cache_size:
                for old_key, old in list(self._cache.items())[: len(self._cache) - self._cache_size]:
                    if not old.lock.locked():
                        del self._cache[old_key]
        else:
            self._cache.move_to_end(key)
        return entry

    async def _load(self, entry: _Entry, key: Key) -> ExecutionState:
        if entry.state is None:
            state = await self._store_call(self.store.get_execution(*key))
            if state is None:
                raise WorkflowNotFoundError(f"workflow {key[1]!r} run {key[2]!r} not found in namespace {key[0]!r}")
            now = self.clock.now()
            for info in state.activities.values():
                # Cache-only start reports were lost with the previous process:
                # assume the attempt started now (a safe bound for its deadline).
                if info.dispatch_time is not None and info.started_time is None:
                    info.started_time = max(now, info.dispatch_time)
            entry.state = state
        return entry.state

    async def _store_call(self, awaitable: Awaitable[Any]) -> Any:
        try:
            return await awaitable
        except UnsupportedEventVersionError as exc:
            raise ApiUnsupportedEventVersion(str(exc)) from exc
        except (ConditionFailedError, CurrentRunConflictError, ShardOwnershipLostError):
            raise
        except StoreError as exc:
            raise UnavailableError(f"history store error: {exc}") from exc

    async def resolve_run_id(self, namespace: str, workflow_id: str, run_id: str = "") -> str:
        """``run_id``, or the workflow's current run: from memory when this process owns its shard."""
        if run_id:
            return run_id
        owned = self.shard_of(namespace, workflow_id) in self.range_ids
        if owned:
            cached = self._current_runs.get((namespace, workflow_id))
            if cached is not None:
                return cached
        drops = self._current_drops
        current = await self._store_call(self.store.get_current_run(namespace, workflow_id))
        if current is None:
            raise WorkflowNotFoundError(f"workflow {workflow_id!r} not found in namespace {namespace!r}")
        # Not when a commit set the pointer meanwhile (it is newer than this read), nor when an
        # entry was dropped meanwhile (perhaps the one a commit set), nor for a shard not owned.
        if (
            owned
            and drops == self._current_drops
            and (namespace, workflow_id) not in self._current_runs
            and self.shard_of(namespace, workflow_id) in self.range_ids
        ):
            self._set_current(namespace, workflow_id, current.run_id)
        return str(current.run_id)

    async def get_state(self, namespace: str, workflow_id: str, run_id: str = "") -> ExecutionState:
        self._require_owner(namespace, workflow_id)
        run_id = await self.resolve_run_id(namespace, workflow_id, run_id)
        key = (namespace, workflow_id, run_id)
        entry = self._entry(key)
        async with entry.lock:
            return await self._load(entry, key)

    # writes -----------------------------------------------------------------------------
    async def update(
        self,
        namespace: str,
        workflow_id: str,
        run_id: str,
        op: Callable[[ExecutionState, float], Mutation],
    ) -> Mutation:
        """Run ``op(state, now)`` on the run and commit its mutation (CAS, retried on conflict)."""
        self._require_owner(namespace, workflow_id)
        run_id = await self.resolve_run_id(namespace, workflow_id, run_id)
        key = (namespace, workflow_id, run_id)
        entry = self._entry(key)
        token = set_log_context(
            namespace=namespace, workflow_id=workflow_id, run_id=run_id, shard=self.shard_of(namespace, workflow_id)
        )
        try:
            for _ in range(self.MAX_CAS_RETRIES):
                async with entry.lock:
                    state = await self._load(entry, key)
                    now = self.clock.now()
                    mutation = self._within_history_limit(state, op(state, now), now)
                    if mutation.noop:
                        return mutation
                    if mutation.cache_only:
                        entry.state = mutation.state
                        return mutation
                    try:
                        await self._commit(mutation)
                    except ConditionFailedError:
                        METRICS.history_conflicts.inc()
                        entry.state = None  # someone else wrote: reload and run again
                        continue
                    except BaseException:
                        entry.state = None  # unknown outcome: never trust the cache after it
                        raise
                    entry.state = mutation.state
                if state.activities:
                    _observe_activities(state, mutation.events, now)
                await self._after_commit(mutation, entry)
                return mutation
            raise UnavailableError(f"workflow {workflow_id!r} is being written concurrently; retry")
        finally:
            reset_log_context(token)

    def _within_history_limit(self, state: ExecutionState, mutation: Mutation, now: float) -> Mutation:
        """The mutation, or a termination of the run when it would grow the history past the
        namespace's hard limit (a history that large is slow to load and replay)."""
        if self.history_limits is None or not mutation.needs_write or not mutation.state.is_open:
            return mutation
        hard, warn = self.history_limits(state.namespace)
        before, after = state.next_event_id - 1, mutation.state.next_event_id - 1
        if warn is not None and before < warn <= after:
            log.warning(
                "workflow %s/%s has %d history events (warning threshold %s, limit %s): it should continue-as-new",
                state.namespace, state.workflow_id, after, warn, hard,
            )
        if hard is None or after <= hard:
            return mutation
        return self.engine.terminate(
            state,
            now=now,
            reason=(
                f"history size limit exceeded: {after} events would be over namespace {state.namespace!r}'s "
                f"limit of {hard}; use continue-as-new to start a fresh history before the limit"
            ),
            identity="history-size-limit",
        )

    async def _commit(self, mutation: Mutation) -> None:
        writes = [self._write_of(mutation)]
        if mutation.follow_up is not None:
            writes.append(self._write_of(mutation.follow_up))
        shard = self.shard_of(mutation.state.namespace, mutation.state.workflow_id)
        if self.owned_shards_only and shard not in self.range_ids:
            raise ShardNotOwnedError(shard)  # dropped while this write was being prepared
        try:
            await self._store_call(self.store.write(shard, self.range_ids.get(shard, 0), writes))
        except ShardOwnershipLostError as exc:
            # Another process acquired the shard: nothing was written. Stop owning it here.
            self.drop_shard(shard)
            raise ShardNotOwnedError(shard) from exc
        except BaseException:
            for w in writes:  # the pointer may have moved (unknown outcome) or moved elsewhere (conflict)
                if w.set_current:
                    self._drop_current(w.state.namespace, w.state.workflow_id)
            raise
        if shard in self.range_ids:
            for w in writes:
                if w.set_current:
                    self._set_current(w.state.namespace, w.state.workflow_id, w.state.run_id)

    @staticmethod
    def _write_of(m: Mutation) -> ExecutionWrite:
        return ExecutionWrite(
            state=m.state,
            expected_version=m.expected_version,
            events=m.events,
            transfer_tasks=m.transfer_tasks,
            timer_tasks=m.timer_tasks,
            visibility=m.visibility,
            set_current=m.set_current,
            expected_current_run_id=m.expected_current_run_id,
        )

    async def _after_commit(self, mutation: Mutation, entry: _Entry | None) -> None:
        follow_up = mutation.follow_up
        if follow_up is not None:
            self._entry((follow_up.state.namespace, follow_up.state.workflow_id, follow_up.state.run_id)).state = (
                follow_up.state
            )
        for m in (mutation, follow_up):
            if m is None:
                continue
            if self.transfer_sink and m.transfer_tasks:
                self.transfer_sink.submit_transfer(m.transfer_tasks)
            if self.timer_sink and m.timer_tasks:
                self.timer_sink.submit_timers(m.timer_tasks)
            _count_workflows(m)
            if self.history_sink and m.events:
                self.history_sink.submit_events(m.state.namespace, m.state.workflow_id, m.state.run_id, m.events)
        if entry is not None:
            async with entry.changed:
                entry.changed.notify_all()

    # start -------------------------------------------------------------------------------
    async def check_namespace(self, namespace: str) -> None:
        if namespace in self.known_namespaces:
            return
        if await self._store_call(self.store.get_namespace(namespace)) is None:
            raise NamespaceNotFoundError(f"namespace {namespace!r} is not registered")
        self.known_namespaces.add(namespace)

    async def start(self, req: StartRequest) -> tuple[str, bool]:
        """Start a run per the id reuse policy. Returns (run_id, started)."""
        self._require_owner(req.namespace, req.workflow_id)
        await self.check_namespace(req.namespace)
        for _ in range(self.MAX_CAS_RETRIES):
            current = await self._store_call(self.store.get_current_run(req.namespace, req.workflow_id))
            decision = check_id_reuse(req.id_reuse_policy, current, req.request_id)
            if decision == "reuse":
                return current.run_id, False
            if decision == "terminate":
                await self.update(
                    req.namespace,
                    req.workflow_id,
                    current.run_id,
                    lambda s, now: self.engine.terminate(s, now=now, reason="terminated by a new start (TerminateIfRunning)"),
                )
                continue
            mutation = self.engine.start(req, now=self.clock.now())
            mutation.expected_current_run_id = current.run_id if current else None
            try:
                await self._commit(mutation)
            except (CurrentRunConflictError, ConditionFailedError):
                METRICS.history_conflicts.inc()
                continue
            key = (req.namespace, req.workflow_id, mutation.state.run_id)
            entry = self._entry(key)
            entry.state = mutation.state
            await self._after_commit(mutation, entry)
            return mutation.state.run_id, True
        raise WorkflowAlreadyStartedError(f"workflow {req.workflow_id!r} is being started concurrently")

    async def signal_with_start(self, req: StartRequest) -> tuple[str, bool]:
        self._require_owner(req.namespace, req.workflow_id)
        current = await self._store_call(self.store.get_current_run(req.namespace, req.workflow_id))
        if current is not None and current.status == "Running":
            try:
                name, payloads = req.signal_name or "", list(req.signal_input)
                await self.update(
                    req.namespace,
                    req.workflow_id,
                    current.run_id,
                    lambda s, now: self.engine.signal(s, name, payloads, now=now, identity=req.identity),
                )
                return current.run_id, False
            except OrchestratorError as exc:
                if exc.code != "workflow_not_running":
                    raise
        return await self.start(req)

    # reset -------------------------------------------------------------------------------
    async def reset(
        self,
        namespace: str,
        workflow_id: str,
        run_id: str = "",
        *,
        event_id: int | None = None,
        reset_type: str | None = None,
        reason: str = "",
        identity: str = "",
        reapply_signals: bool = True,
    ) -> str:
        """Start a new run from a workflow task of ``run_id`` (the current run when empty); returns its
        run id. The current run, if still running, is terminated in the same write
        (see :mod:`orchestrator.history.reset`)."""
        from orchestrator.history.reset import (
            build_reset_run,  # reset folds histories: rebuild imports the engine
        )

        self._require_owner(namespace, workflow_id)
        base_run_id = await self.resolve_run_id(namespace, workflow_id, run_id)
        await self.get_state(namespace, workflow_id, base_run_id)  # not found: a clear 404
        events = await self._store_call(self.store.read_events(namespace, workflow_id, base_run_id))
        shard = self.shard_of(namespace, workflow_id)
        new_run_id = uuid.uuid4().hex
        for _ in range(self.MAX_CAS_RETRIES):
            now = self.clock.now()
            created = build_reset_run(
                events, namespace=namespace, workflow_id=workflow_id, new_run_id=new_run_id, now=now,
                shard_id=shard, event_id=event_id, reset_type=reset_type, reason=reason, identity=identity,
                reapply_signals=reapply_signals, base_run_id=base_run_id,
                retention_days=self.engine.retention_days_of(namespace),
            )  # fmt: skip
            current = await self._store_call(self.store.get_current_run(namespace, workflow_id))
            created.expected_current_run_id = current.run_id if current else None
            if current is not None and current.status == "Running":
                why = f"reset to run {new_run_id}" + (f": {reason}" if reason else "")

                def terminate_then_create(
                    state: ExecutionState, now: float, why: str = why, created: Mutation = created
                ) -> Mutation:
                    m = self.engine.terminate(state, now=now, reason=why, identity=identity)
                    m.follow_up = created
                    return m

                try:
                    await self.update(namespace, workflow_id, current.run_id, terminate_then_create)
                except (CurrentRunConflictError, WorkflowNotRunningError):
                    METRICS.history_conflicts.inc()
                    continue
                return new_run_id
            try:
                await self._commit(created)
            except (CurrentRunConflictError, ConditionFailedError):
                METRICS.history_conflicts.inc()
                continue
            entry = self._entry((namespace, workflow_id, new_run_id))
            entry.state = created.state
            await self._after_commit(created, entry)
            return new_run_id
        raise UnavailableError(f"workflow {workflow_id!r} is being written concurrently; retry the reset")

    # waiting -----------------------------------------------------------------------------
    async def wait_for(
        self,
        namespace: str,
        workflow_id: str,
        run_id: str,
        predicate: Callable[[ExecutionState], bool],
        timeout: float,
    ) -> ExecutionState:
        """Wait until ``predicate(state)`` holds or ``timeout`` passes; returns the latest state."""
        self._require_owner(namespace, workflow_id)
        run_id = await self.resolve_run_id(namespace, workflow_id, run_id)
        key = (namespace, workflow_id, run_id)
        entry = self._entry(key)
        async with entry.lock:
            state = await self._load(entry, key)
        if predicate(state) or timeout <= 0:
            return state
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with entry.changed:
            while True:
                state = entry.state or state
                if predicate(state):
                    return state
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return state
                try:
                    await asyncio.wait_for(entry.changed.wait(), remaining)
                except TimeoutError:
                    return entry.state or state
