"""An in-process :class:`HistoryStore` for tests (``memory://``).

Nothing survives the process. Everything is stored as the same JSON text the
durable backends store (see :mod:`orchestrator.persistence._codec`), so callers
can never mutate stored state through an object they passed in or got back.

>>> store = MemoryHistoryStore()
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import itertools
import time
from typing import Any

from orchestrator.api.events import HistoryEvent
from orchestrator.api.tasks import TimerTask, TransferTask
from orchestrator.history.state import ExecutionState
from orchestrator.persistence import _codec
from orchestrator.persistence._codec import RunKey, WorkflowKey
from orchestrator.persistence._visibility_query import (
    VisibilityQuery,
    check_page_size,
    page_token,
    sort_key,
)
from orchestrator.persistence._write_plan import (
    StoredView,
    WritePlan,
    duplicate_event_error,
    duplicate_task_error,
    keys_to_read,
    plan_write,
)
from orchestrator.persistence.base import (
    CurrentRun,
    ExecutionWrite,
    HistoryStore,
    MemberRecord,
    NamespaceRecord,
    ShardInfo,
    VisibilityPage,
    VisibilityRecord,
    lease_held_error,
)


@dataclasses.dataclass
class _Timer:
    fire_time: float
    seq: int
    data: str


class MemoryHistoryStore(HistoryStore):
    """Dict-backed store; one :class:`asyncio.Lock` makes every write atomic."""

    def __init__(self) -> None:
        self.url = "memory://"
        self._lock = asyncio.Lock()
        self._shards: dict[int, tuple[str, int]] = {}
        self._leases: dict[int, float] = {}
        self._members: dict[str, MemberRecord] = {}
        self._executions: dict[RunKey, tuple[int, str]] = {}
        self._current: dict[WorkflowKey, CurrentRun] = {}
        self._events: dict[RunKey, dict[int, str]] = {}
        self._transfer: dict[int, dict[str, str]] = {}  # shard -> task id -> task, in insertion order
        self._timers: dict[int, dict[str, _Timer]] = {}
        self._visibility: dict[RunKey, VisibilityRecord] = {}  # normalised through JSON; copied on return
        self._namespaces: dict[str, str] = {}
        self._seq = itertools.count(1)

    async def aclose(self) -> None:
        return None

    # shards -----------------------------------------------------------------
    async def acquire_shard(self, shard_id: int, owner: str, lease_seconds: float | None = None) -> int:
        async with self._lock:
            held_by, range_id = self._shards.get(shard_id, ("", 0))
            now = time.time()
            lease_until = self._leases.get(shard_id, 0.0)
            if lease_seconds is not None and held_by != owner and lease_until > now:
                raise lease_held_error(shard_id, held_by, lease_until)
            self._shards[shard_id] = (owner, range_id + 1)
            self._leases[shard_id] = 0.0 if lease_seconds is None else now + lease_seconds
            return range_id + 1

    async def renew_shard(self, shard_id: int, owner: str, range_id: int, lease_seconds: float) -> bool:
        async with self._lock:
            if self._shards.get(shard_id) != (owner, range_id):
                return False
            self._leases[shard_id] = time.time() + lease_seconds
            return True

    async def release_shard(self, shard_id: int, owner: str, range_id: int) -> None:
        async with self._lock:
            if self._shards.get(shard_id) == (owner, range_id):
                self._leases[shard_id] = 0.0

    async def list_shards(self) -> list[ShardInfo]:
        return [
            ShardInfo(shard_id, owner, range_id, self._leases.get(shard_id, 0.0))
            for shard_id, (owner, range_id) in sorted(self._shards.items())
        ]

    # membership -------------------------------------------------------------
    async def heartbeat_member(self, member_id: str, address: str, ttl: float) -> None:
        self._members[member_id] = MemberRecord(member_id, address, time.time() + ttl)

    async def list_members(self) -> list[MemberRecord]:
        now = time.time()
        return [dataclasses.replace(m) for _, m in sorted(self._members.items()) if m.expires_at > now]

    async def remove_member(self, member_id: str) -> None:
        self._members.pop(member_id, None)

    # executions -------------------------------------------------------------
    async def write(self, shard_id: int, range_id: int, writes: list[ExecutionWrite]) -> None:
        async with self._lock:
            runs, workflows = keys_to_read(writes)
            view = StoredView(
                range_id=self._shards.get(shard_id, ("", 0))[1],
                versions={k: self._executions[k][0] for k in runs if k in self._executions},
                current={k: self._current[k] for k in workflows if k in self._current},
            )
            plan = plan_write(shard_id, range_id, writes, view)
            self._check_unique(plan)
            self._apply(plan)

    def _check_unique(self, plan: WritePlan) -> None:
        # Everything that can fail is checked before the first change: all or nothing.
        seen_events: set[tuple[RunKey, int]] = set()
        for key, event in plan.events:
            if (key, event.event_id) in seen_events or event.event_id in self._events.get(key, {}):
                raise duplicate_event_error(key, event.event_id)
            seen_events.add((key, event.event_id))
        tasks: list[TransferTask | TimerTask] = [*plan.transfer_tasks, *plan.timer_tasks]
        seen_tasks: set[tuple[str, int, str]] = set()
        for task in tasks:
            kind = "transfer" if isinstance(task, TransferTask) else "timer"
            stored = self._transfer if kind == "transfer" else self._timers
            if (kind, task.shard_id, task.task_id) in seen_tasks or task.task_id in stored.get(
                task.shard_id, {}
            ):
                raise duplicate_task_error(kind, task.shard_id, task.task_id)
            seen_tasks.add((kind, task.shard_id, task.task_id))

    def _apply(self, plan: WritePlan) -> None:
        # Encode first: a value that is not JSON fails here, as it would in SQLite, before any change.
        encoded = [
            (key, row.state.db_version, _codec.encode_state(row.state))
            for key, row in plan.executions.items()
        ]
        events = [(key, event.event_id, _codec.encode_event(event)) for key, event in plan.events]
        transfer = [(t.shard_id, t.task_id, _codec.encode_transfer_task(t)) for t in plan.transfer_tasks]
        timers = [(t.shard_id, t.task_id, t.fire_time, _codec.encode_timer_task(t)) for t in plan.timer_tasks]
        records = [
            (k, _codec.decode_visibility(_codec.encode_visibility(v))) for k, v in plan.visibility.items()
        ]
        # From here on nothing raises.
        for key, version, text in encoded:
            self._executions[key] = (version, text)
        self._current.update((k, dataclasses.replace(v)) for k, v in plan.current.items())
        for key, event_id, text in events:
            self._events.setdefault(key, {})[event_id] = text
        for shard_id, task_id, text in transfer:
            self._transfer.setdefault(shard_id, {})[task_id] = text
        for shard_id, task_id, fire_time, text in timers:
            self._timers.setdefault(shard_id, {})[task_id] = _Timer(fire_time, next(self._seq), text)
        self._visibility.update(records)

    async def get_execution(self, namespace: str, workflow_id: str, run_id: str) -> ExecutionState | None:
        stored = self._executions.get((namespace, workflow_id, run_id))
        return None if stored is None else _codec.decode_state(stored[1])

    async def get_current_run(self, namespace: str, workflow_id: str) -> CurrentRun | None:
        current = self._current.get((namespace, workflow_id))
        return None if current is None else dataclasses.replace(current)

    async def read_events(
        self,
        namespace: str,
        workflow_id: str,
        run_id: str,
        first_event_id: int = 1,
        max_events: int | None = None,
    ) -> list[HistoryEvent]:
        key = (namespace, workflow_id, run_id)
        stored = self._events.get(key, {})
        ids = sorted(i for i in stored if i >= first_event_id)
        if max_events is not None:
            ids = ids[:max_events]
        return [_codec.decode_event(stored[i], key) for i in ids]

    async def delete_execution(self, namespace: str, workflow_id: str, run_id: str) -> None:
        key = (namespace, workflow_id, run_id)
        async with self._lock:
            self._executions.pop(key, None)
            self._events.pop(key, None)
            self._visibility.pop(key, None)
            current = self._current.get((namespace, workflow_id))
            if current is not None and current.run_id == run_id:
                del self._current[(namespace, workflow_id)]

    # outbox -----------------------------------------------------------------
    async def get_transfer_tasks(self, shard_id: int, limit: int = 100) -> list[TransferTask]:
        stored = self._transfer.get(shard_id, {})
        return [_codec.decode_transfer_task(text) for text in itertools.islice(stored.values(), limit)]

    async def delete_transfer_tasks(self, shard_id: int, task_ids: list[str]) -> None:
        async with self._lock:
            stored = self._transfer.get(shard_id, {})
            for task_id in task_ids:
                stored.pop(task_id, None)

    async def get_timer_tasks(self, shard_id: int, fire_before: float, limit: int = 100) -> list[TimerTask]:
        due = sorted(
            (t for t in self._timers.get(shard_id, {}).values() if t.fire_time <= fire_before),
            key=lambda t: (t.fire_time, t.seq),
        )
        return [_codec.decode_timer_task(t.data) for t in due[:limit]]

    async def next_timer_time(self, shard_id: int) -> float | None:
        return min((t.fire_time for t in self._timers.get(shard_id, {}).values()), default=None)

    async def delete_timer_tasks(self, shard_id: int, task_ids: list[str]) -> None:
        async with self._lock:
            stored = self._timers.get(shard_id, {})
            for task_id in task_ids:
                stored.pop(task_id, None)

    # visibility -------------------------------------------------------------
    async def list_visibility(
        self,
        namespace: str,
        *,
        filters: dict[str, Any] | None = None,
        page_size: int = 100,
        next_page_token: str | None = None,
    ) -> VisibilityPage:
        check_page_size(page_size)
        query = VisibilityQuery.parse(namespace, filters, next_page_token)
        records = sorted((r for r in self._visibility.values() if query.matches(r)), key=sort_key)
        if query.after is not None:
            after = query.after
            records = [r for r in records if sort_key(r) > after]
        page = [copy.deepcopy(r) for r in records[:page_size]]
        more = len(records) > page_size
        return VisibilityPage(page, page_token(page[-1]) if more else None)

    async def count_visibility(self, namespace: str, *, filters: dict[str, Any] | None = None) -> int:
        query = VisibilityQuery.parse(namespace, filters)
        return sum(1 for r in self._visibility.values() if query.matches(r))

    # namespaces -------------------------------------------------------------
    async def upsert_namespace(self, record: NamespaceRecord) -> None:
        async with self._lock:
            self._namespaces[record.name] = _codec.encode_namespace(record)

    async def get_namespace(self, name: str) -> NamespaceRecord | None:
        stored = self._namespaces.get(name)
        return None if stored is None else _codec.decode_namespace(stored)

    async def list_namespaces(self) -> list[NamespaceRecord]:
        return [_codec.decode_namespace(self._namespaces[name]) for name in sorted(self._namespaces)]
