"""The one forwarding mechanism behind the decorator stores.

:class:`_DelegatingStore` implements every :class:`HistoryStore` method by
handing a zero-argument call of the inner store's method to :meth:`_around`.
A decorator (retry, metrics, fault injection) overrides ``_around`` once and so
wraps every method; a method added to :class:`HistoryStore` is forwarded by
adding it here, once, for all of them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from orchestrator.api.events import HistoryEvent
from orchestrator.api.tasks import TimerTask, TransferTask
from orchestrator.history.state import ExecutionState
from orchestrator.persistence.base import (
    CurrentRun,
    ExecutionWrite,
    HistoryStore,
    MemberRecord,
    NamespaceRecord,
    ShardInfo,
    VisibilityPage,
)

T = TypeVar("T")

STORE_METHODS = frozenset(HistoryStore.__abstractmethods__) - {"aclose"}
"""Names of the methods that go through :meth:`_DelegatingStore._around`."""


class _DelegatingStore(HistoryStore):
    """A :class:`HistoryStore` that forwards every call to ``inner`` through :meth:`_around`."""

    def __init__(self, inner: HistoryStore) -> None:
        self.inner = inner
        self.url = inner.url

    async def _around(self, method: str, call: Callable[[], Awaitable[T]]) -> T:
        """Run ``call`` (``method`` of the inner store, with its arguments bound)."""
        return await call()

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def acquire_shard(self, shard_id: int, owner: str, lease_seconds: float | None = None) -> int:
        return await self._around(
            "acquire_shard", lambda: self.inner.acquire_shard(shard_id, owner, lease_seconds)
        )

    async def renew_shard(self, shard_id: int, owner: str, range_id: int, lease_seconds: float) -> bool:
        return await self._around(
            "renew_shard", lambda: self.inner.renew_shard(shard_id, owner, range_id, lease_seconds)
        )

    async def release_shard(self, shard_id: int, owner: str, range_id: int) -> None:
        await self._around("release_shard", lambda: self.inner.release_shard(shard_id, owner, range_id))

    async def list_shards(self) -> list[ShardInfo]:
        return await self._around("list_shards", lambda: self.inner.list_shards())

    async def heartbeat_member(self, member_id: str, address: str, ttl: float) -> None:
        await self._around("heartbeat_member", lambda: self.inner.heartbeat_member(member_id, address, ttl))

    async def list_members(self) -> list[MemberRecord]:
        return await self._around("list_members", lambda: self.inner.list_members())

    async def remove_member(self, member_id: str) -> None:
        await self._around("remove_member", lambda: self.inner.remove_member(member_id))

    async def write(self, shard_id: int, range_id: int, writes: list[ExecutionWrite]) -> None:
        await self._around("write", lambda: self.inner.write(shard_id, range_id, writes))

    async def get_execution(self, namespace: str, workflow_id: str, run_id: str) -> ExecutionState | None:
        return await self._around(
            "get_execution", lambda: self.inner.get_execution(namespace, workflow_id, run_id)
        )

    async def get_current_run(self, namespace: str, workflow_id: str) -> CurrentRun | None:
        return await self._around(
            "get_current_run", lambda: self.inner.get_current_run(namespace, workflow_id)
        )

    async def read_events(
        self,
        namespace: str,
        workflow_id: str,
        run_id: str,
        first_event_id: int = 1,
        max_events: int | None = None,
    ) -> list[HistoryEvent]:
        return await self._around(
            "read_events",
            lambda: self.inner.read_events(namespace, workflow_id, run_id, first_event_id, max_events),
        )

    async def delete_execution(self, namespace: str, workflow_id: str, run_id: str) -> None:
        await self._around(
            "delete_execution", lambda: self.inner.delete_execution(namespace, workflow_id, run_id)
        )

    async def get_transfer_tasks(self, shard_id: int, limit: int = 100) -> list[TransferTask]:
        return await self._around(
            "get_transfer_tasks", lambda: self.inner.get_transfer_tasks(shard_id, limit)
        )

    async def delete_transfer_tasks(self, shard_id: int, task_ids: list[str]) -> None:
        await self._around(
            "delete_transfer_tasks", lambda: self.inner.delete_transfer_tasks(shard_id, task_ids)
        )

    async def get_timer_tasks(self, shard_id: int, fire_before: float, limit: int = 100) -> list[TimerTask]:
        return await self._around(
            "get_timer_tasks", lambda: self.inner.get_timer_tasks(shard_id, fire_before, limit)
        )

    async def next_timer_time(self, shard_id: int) -> float | None:
        return await self._around("next_timer_time", lambda: self.inner.next_timer_time(shard_id))

    async def delete_timer_tasks(self, shard_id: int, task_ids: list[str]) -> None:
        await self._around("delete_timer_tasks", lambda: self.inner.delete_timer_tasks(shard_id, task_ids))

    async def list_visibility(
        self,
        namespace: str,
        *,
        filters: dict[str, Any] | None = None,
        page_size: int = 100,
        next_page_token: str | None = None,
    ) -> VisibilityPage:
        return await self._around(
            "list_visibility",
            lambda: self.inner.list_visibility(
                namespace, filters=filters, page_size=page_size, next_page_token=next_page_token
            ),
        )

    async def count_visibility(self, namespace: str, *, filters: dict[str, Any] | None = None) -> int:
        return await self._around(
            "count_visibility", lambda: self.inner.count_visibility(namespace, filters=filters)
        )

    async def upsert_namespace(self, record: NamespaceRecord) -> None:
        await self._around("upsert_namespace", lambda: self.inner.upsert_namespace(record))

    async def get_namespace(self, name: str) -> NamespaceRecord | None:
        return await self._around("get_namespace", lambda: self.inner.get_namespace(name))

    async def list_namespaces(self) -> list[NamespaceRecord]:
        return await self._around("list_namespaces", lambda: self.inner.list_namespaces())
