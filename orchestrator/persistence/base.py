"""The store contract (DESIGN §3): one abstract interface, every backend.

One history write is :meth:`HistoryStore.write` with a list of
:class:`ExecutionWrite`: events + mutable state (compare-and-swap on
``db_version``) + transfer and timer tasks + visibility, all in **one
transaction**, and fenced by the shard's ``range_id`` so that an owner that
lost its shard can never write.

Choose a backend by URL with :func:`open_store`::

    store = await open_store("sqlite:///tmp/sagas.db")
    ...
    await store.aclose()
"""

from __future__ import annotations

import abc
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

from orchestrator.api.events import HistoryEvent
from orchestrator.api.tasks import TimerTask, TransferTask
from orchestrator.history.state import ExecutionState


class StoreError(Exception):
    """Base of store errors."""


class ConditionFailedError(StoreError):
    """A compare-and-swap failed: someone else wrote this execution first. Reload and retry."""


class CurrentRunConflictError(StoreError):
    """The current-run pointer of a workflow id is not what the writer expected."""

    def __init__(self, message: str, current_run_id: str | None) -> None:
        super().__init__(message)
        self.current_run_id = current_run_id


class ShardOwnershipLostError(StoreError):
    """The shard's ``range_id`` moved on: this process no longer owns the shard."""


class ShardLeaseHeldError(StoreError):
    """Another owner holds a live lease on the shard: wait for it to expire or be released."""

    def __init__(self, message: str, owner: str, lease_until: float) -> None:
        super().__init__(message)
        self.owner = owner
        self.lease_until = lease_until


class UnsupportedEventVersionError(StoreError):
    """A stored event was written by a newer version of the server."""


class StoreUnavailableError(StoreError):
    """A transient infrastructure error that applied nothing (so the ``_retrying`` wrapper may retry it)."""


class AmbiguousWriteError(StoreError):
    """The write may or may not have committed (e.g. a timeout). Reload and compare."""


def lease_held_error(shard_id: int, owner: str, lease_until: float) -> ShardLeaseHeldError:
    """The error every backend raises when another owner's lease on ``shard_id`` is live."""
    return ShardLeaseHeldError(
        f"shard {shard_id} is leased by {owner!r} for {max(0.0, lease_until - time.time()):.1f} s more; "
        "it can be acquired once that lease expires or is released",
        owner,
        lease_until,
    )


def shard_for(namespace: str, workflow_id: str, num_shards: int) -> int:
    """``hash(namespace, workflow_id) % num_shards`` with a stable hash (crc32)."""
    return zlib.crc32(f"{namespace}/{workflow_id}".encode()) % num_shards


@dataclass
class CurrentRun:
    """The pointer from a workflow id to its latest run."""

    run_id: str
    status: str
    start_request_id: str = ""


@dataclass
class VisibilityRecord:
    """One row of the list API: a run's summary."""

    namespace: str
    workflow_id: str
    run_id: str
    workflow_type: str
    task_queue: str
    status: str
    start_time: float
    execution_time: float
    close_time: float | None = None
    history_length: int = 0
    search_attributes: dict[str, Any] = field(default_factory=dict)
    memo: dict[str, Any] = field(default_factory=dict)
    parent_workflow_id: str | None = None


@dataclass
class ShardInfo:
    """A shard's lease row: who owns it, its fencing ``range_id``, and until when the lease holds.

    ``lease_until`` 0 means no lease (released, or acquired without one): anyone may take it.
    """

    shard_id: int
    owner: str
    range_id: int
    lease_until: float = 0.0


@dataclass
class MemberRecord:
    """A live orchestrator process: its id, the address of its frontend, and when its heartbeat expires."""

    member_id: str
    address: str
    expires_at: float


@dataclass
class NamespaceRecord:
    name: str
    retention_days: float = 3.0
    description: str = ""
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class ExecutionWrite:
    """One execution's part of an atomic write.

    ``expected_version`` is the ``db_version`` the writer read (None to create
    the execution). ``state.db_version`` must be ``expected_version + 1``
    (or 1 on create). ``set_current`` moves the workflow id's current-run
    pointer to this run, expecting it to be ``expected_current_run_id``
    (None: no run yet).
    """

    state: ExecutionState
    expected_version: int | None
    events: list[HistoryEvent] = field(default_factory=list)
    transfer_tasks: list[TransferTask] = field(default_factory=list)
    timer_tasks: list[TimerTask] = field(default_factory=list)
    visibility: VisibilityRecord | None = None
    set_current: bool = False
    expected_current_run_id: str | None = None


@dataclass
class VisibilityPage:
    records: list[VisibilityRecord]
    next_page_token: str | None = None


class HistoryStore(abc.ABC):
    """Abstract history store. Every method may raise :class:`StoreError`."""

    url: str = ""

    async def __aenter__(self) -> HistoryStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @abc.abstractmethod
    async def aclose(self) -> None: ...

    # shards -----------------------------------------------------------------
    @abc.abstractmethod
    async def acquire_shard(self, shard_id: int, owner: str, lease_seconds: float | None = None) -> int:
        """Take ownership of a shard: increments and returns its ``range_id``.

        Without ``lease_seconds`` the shard is taken unconditionally (one process owns every shard)
        and holds no lease. With it, the shard is taken only when no *other* owner holds a live
        lease (``lease_until > now``), else :class:`ShardLeaseHeldError`; the new lease lasts
        ``lease_seconds``. The ``range_id`` increment fences every write of the previous owner.
        """

    @abc.abstractmethod
    async def renew_shard(self, shard_id: int, owner: str, range_id: int, lease_seconds: float) -> bool:
        """Extend ``owner``'s lease to ``now + lease_seconds`` if it still holds ``range_id``.

        False: someone acquired the shard since (this process lost it).
        """

    @abc.abstractmethod
    async def release_shard(self, shard_id: int, owner: str, range_id: int) -> None:
        """End ``owner``'s lease now (graceful hand-off); a no-op if it no longer holds ``range_id``."""

    @abc.abstractmethod
    async def list_shards(self) -> list[ShardInfo]:
        """Every shard row ever acquired, by shard id."""

    # membership -------------------------------------------------------------
    @abc.abstractmethod
    async def heartbeat_member(self, member_id: str, address: str, ttl: float) -> None:
        """Record that ``member_id`` (frontend at ``address``) is alive for the next ``ttl`` seconds."""

    @abc.abstractmethod
    async def list_members(self) -> list[MemberRecord]:
        """Members whose heartbeat has not expired, by member id."""

    @abc.abstractmethod
    async def remove_member(self, member_id: str) -> None:
        """Forget a member (graceful shutdown); a no-op for an unknown one."""

    # executions -------------------------------------------------------------
    @abc.abstractmethod
    async def write(self, shard_id: int, range_id: int, writes: list[ExecutionWrite]) -> None:
        """Apply all ``writes`` in one transaction, or none of them.

        Raises :class:`ConditionFailedError` (version CAS),
        :class:`CurrentRunConflictError` (current pointer CAS),
        :class:`ShardOwnershipLostError` (fencing).
        """

    @abc.abstractmethod
    async def get_execution(self, namespace: str, workflow_id: str, run_id: str) -> ExecutionState | None: ...

    @abc.abstractmethod
    async def get_current_run(self, namespace: str, workflow_id: str) -> CurrentRun | None: ...

    @abc.abstractmethod
    async def read_events(
        self,
        namespace: str,
        workflow_id: str,
        run_id: str,
        first_event_id: int = 1,
        max_events: int | None = None,
    ) -> list[HistoryEvent]:
        """Events with ``event_id >= first_event_id`` in order (at most ``max_events``).

        Raises :class:`UnsupportedEventVersionError` for an event of a newer format.
        """

    @abc.abstractmethod
    async def delete_execution(self, namespace: str, workflow_id: str, run_id: str) -> None:
        """Remove a closed run, its events and visibility row (retention)."""

    # outbox -----------------------------------------------------------------
    @abc.abstractmethod
    async def get_transfer_tasks(self, shard_id: int, limit: int = 100) -> list[TransferTask]:
        """Oldest transfer tasks of a shard first."""

    @abc.abstractmethod
    async def delete_transfer_tasks(self, shard_id: int, task_ids: list[str]) -> None: ...

    @abc.abstractmethod
    async def get_timer_tasks(self, shard_id: int, fire_before: float, limit: int = 100) -> list[TimerTask]:
        """Timer tasks with ``fire_time <= fire_before``, earliest first."""

    @abc.abstractmethod
    async def next_timer_time(self, shard_id: int) -> float | None:
        """Fire time of the earliest timer task of the shard, if any."""

    @abc.abstractmethod
    async def delete_timer_tasks(self, shard_id: int, task_ids: list[str]) -> None: ...

    # visibility -------------------------------------------------------------
    @abc.abstractmethod
    async def list_visibility(
        self,
        namespace: str,
        *,
        filters: dict[str, Any] | None = None,
        page_size: int = 100,
        next_page_token: str | None = None,
    ) -> VisibilityPage:
        """Runs newest first. ``filters`` keys: ``workflow_type``, ``status``,
        ``workflow_id``, ``task_queue``, ``start_time_after``, ``start_time_before``."""

    @abc.abstractmethod
    async def count_visibility(self, namespace: str, *, filters: dict[str, Any] | None = None) -> int: ...

    # namespaces -------------------------------------------------------------
    @abc.abstractmethod
    async def upsert_namespace(self, record: NamespaceRecord) -> None: ...

    @abc.abstractmethod
    async def get_namespace(self, name: str) -> NamespaceRecord | None: ...

    @abc.abstractmethod
    async def list_namespaces(self) -> list[NamespaceRecord]: ...


async def open_store(url: str) -> HistoryStore:
    """Open a store by URL: ``memory://``, ``sqlite:///path/file.db``, ``mongodb://`` or ``mongodb+srv://``."""
    if url.startswith("memory://"):
        from orchestrator.persistence.memory import MemoryHistoryStore

        return MemoryHistoryStore()
    if url.startswith("sqlite://"):
        from orchestrator.persistence.sqlite import SqliteHistoryStore

        # SQLAlchemy's convention: sqlite:///relative.db, sqlite:////absolute/path.db
        path = url[len("sqlite:///") :] if url.startswith("sqlite:///") else url[len("sqlite://") :]
        store = SqliteHistoryStore(path or ":memory:")
        await store.open()
        return store
    if url.startswith(("mongodb://", "mongodb+srv://")):
        try:
            from orchestrator.persistence.mongo import MongoHistoryStore
        except ImportError as exc:
            raise StoreError(
                f"the MongoDB store needs PyMongo ({exc}); install it with `pip install 'saga-orchestrator[mongo]'`"
            ) from exc

        mongo = MongoHistoryStore(url)
        await mongo.open()
        return mongo
    raise StoreError(
        f"unknown store URL {url!r}; use memory://, sqlite:///path/to/file.db, "
        "mongodb://host/db?replicaSet=rs0 or mongodb+srv://..."
    )
