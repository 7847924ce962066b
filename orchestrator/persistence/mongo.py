"""The production :class:`HistoryStore` on MongoDB (``mongodb://host:port/db?replicaSet=rs0``).

It talks to MongoDB with PyMongo's native asyncio API (``AsyncMongoClient``,
PyMongo 4.9+, stable since 4.13). Motor is **not** used: MongoDB deprecated it
in favour of this API, which runs on the event loop itself instead of handing
every call to a thread pool.

How it is built, and why (``docs/mongodb.md`` has the collection layout):

* **One history write is one multi-document transaction** (snapshot read
  concern, majority write concern, primary reads): events, the execution's
  mutable state (compare-and-swap on ``db_version``), the current-run pointer,
  transfer and timer tasks and the visibility record commit together or not at
  all. Transactions need a replica set (a single node is fine);
  :meth:`MongoHistoryStore.open` refuses a standalone server.
* **Fencing by a write, not a read.** Under snapshot isolation two
  transactions conflict only when both *write* one document, so reading the
  shard's ``range_id`` inside the transaction is not enough: a paused owner
  could read the old ``range_id``, the new owner could then acquire the shard
  and commit, and the old owner's commit would still succeed (write skew).
  So each write also updates a *fence* document of its shard, and
  :meth:`MongoHistoryStore.acquire_shard` updates every fence document of the
  shard: the two always conflict, and the loser retries, re-reads and fails
  with :class:`ShardOwnershipLostError`. A shard has ``fence_stripes`` fence
  documents (chosen by a hash of the workflow id) so that writers of different
  workflows rarely contend on one document; writers of one stripe in this
  process queue on an in-process lock instead of conflicting on the server.
* **Errors.** A transaction that fails with the ``TransientTransactionError``
  label (a write conflict, a lost connection before the commit) applied
  nothing and is retried here, with tenacity, a few times; once the attempts
  are spent a write conflict (code 112) becomes :class:`ConditionFailedError`
  and anything else :class:`StoreUnavailableError`. A commit whose outcome is
  unknown (``UnknownTransactionCommitResult``, a network error or a write
  concern timeout during ``commitTransaction``) becomes
  :class:`AmbiguousWriteError`: the caller reloads and compares, never appends
  blindly again. A duplicate key (an event id or task id already stored) is
  :class:`ConditionFailedError`; an unreachable server is
  :class:`StoreUnavailableError`.
* **Stored text.** States, events, tasks and namespaces are stored as the same
  JSON text every backend stores (:mod:`orchestrator.persistence._codec`),
  next to the fields the indexes need. Events are version-checked before they
  are parsed.

>>> store = MongoHistoryStore("mongodb://127.0.0.1:27017/sagas?replicaSet=rs0")   # then: await store.open()
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import AsyncExitStack, contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

from bson.int64 import Int64
from pymongo import (
    ASCENDING,
    DESCENDING,
    AsyncMongoClient,
    IndexModel,
    ReadPreference,
    ReturnDocument,
    UpdateOne,
)
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import (
    BulkWriteError,
    ConnectionFailure,
    DuplicateKeyError,
    OperationFailure,
    PyMongoError,
    ServerSelectionTimeoutError,
    WTimeoutError,
)
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from orchestrator.api.events import HistoryEvent
from orchestrator.api.tasks import TimerTask, TransferTask
from orchestrator.history.state import ExecutionState
from orchestrator.persistence import _codec
from orchestrator.persistence._codec import RunKey, WorkflowKey
from orchestrator.persistence._visibility_query import (
    Condition,
    VisibilityQuery,
    check_page_size,
    datetime_millis,
    page_token,
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
    AmbiguousWriteError,
    ConditionFailedError,
    CurrentRun,
    ExecutionWrite,
    HistoryStore,
    MemberRecord,
    NamespaceRecord,
    ShardInfo,
    StoreError,
    StoreUnavailableError,
    VisibilityPage,
    VisibilityRecord,
    lease_held_error,
)

_log = logging.getLogger(__name__)

T = TypeVar("T")
Doc = dict[str, Any]

SCHEMA_VERSION = 1
"""Version of the collection layout below; a database of a newer version is refused."""

DEFAULT_DATABASE = "sagas"
"""The database used when the URL names none."""

WRITE_CONFLICT = 112
"""MongoDB's ``WriteConflict`` error code."""

SESSION_RECORD_REFRESH_SECONDS = 600.0
"""How often a process re-records a server session it keeps using (see ``_record_session``)."""

SESSION_RECORD_TTL_SECONDS = 24 * 3600
"""A ``sessions`` record not refreshed for this long is removed by a TTL index."""

_NOT_A_REPLICA_SET = (
    "transactions need a replica set; start mongod with --replSet rs0 and rs.initiate(), "
    "a single node is fine"
)

# The sort of the list API (see _visibility_query): newest first, then run id and workflow id.
_VISIBILITY_ORDER = [("start_time", DESCENDING), ("run_id", ASCENDING), ("workflow_id", ASCENDING)]


class MongoHistoryStore(HistoryStore):
    """:class:`HistoryStore` on a MongoDB replica set (see module docstring).

    ``url`` is a MongoDB connection string; the database is its path
    (default ``sagas``) and every option in it (TLS, auth, timeouts, ...) goes
    to the driver, as do ``client_options``. Call :meth:`open` before use, or
    get an opened store from ``open_store``::

        async with await open_store("mongodb://db1,db2,db3/sagas?replicaSet=rs0") as store:
            ...

    ``transaction_attempts`` bounds the retries of a transaction that failed
    with a transient error. ``fence_stripes`` is the number of fence documents
    per shard; the first :meth:`open` of a database records it and later opens
    use the recorded value, so every process agrees.
    """

    def __init__(
        self,
        url: str,
        *,
        transaction_attempts: int = 5,
        fence_stripes: int = 16,
        client_options: Mapping[str, Any] | None = None,
    ) -> None:
        if transaction_attempts < 1:
            raise ValueError(f"transaction_attempts must be at least 1, not {transaction_attempts}")
        if fence_stripes < 1:
            raise ValueError(f"fence_stripes must be at least 1, not {fence_stripes}")
        self.url = _redacted(url)
        self.transaction_attempts = transaction_attempts
        self.fence_stripes = fence_stripes
        self.transaction_retries = 0
        """Transactions retried after a transient error, so far."""
        self._raw_url = url
        self._client_options = dict(client_options or {})
        self._client: AsyncMongoClient[Doc] | None = None
        self._db: AsyncDatabase[Doc] | None = None
        self._stripe_locks: dict[tuple[int, int], asyncio.Lock] = {}
        self._last_seq = 0
        self._closed = False
        self._owner: str | None = None
        """The member id this store acquires shards with a lease for (None: no lease, one process)."""
        self._instance = uuid.uuid4().hex
        self._recorded_sessions: dict[bytes, float] = {}
        """Server session id -> when it was last recorded in ``sessions``."""

    # lifecycle --------------------------------------------------------------
    async def open(self) -> None:
        """Connect, check the server can run transactions, create indexes and the schema record."""
        if self._closed:
            raise StoreError(f"{self.url}: this store was closed; create a new one")
        if self._client is not None:
            return
        try:
            client: AsyncMongoClient[Doc] = AsyncMongoClient(
                self._raw_url, **{"appname": "sagas", **self._client_options}
            )
        except PyMongoError as exc:  # a malformed URL or option
            raise StoreError(f"{self.url}: invalid MongoDB URL or option ({exc})") from exc
        self._client = client
        # The database named by the URL's path. Reads outside transactions use majority read
        # concern: they never see a write that a failover could still roll back.
        self._db = client.get_default_database(
            DEFAULT_DATABASE,
            read_concern=ReadConcern("majority"),
            write_concern=WriteConcern("majority"),
            read_preference=ReadPreference.PRIMARY,
        )
        try:
            await self._check_replica_set()
            await self._create_indexes()
            await self._check_schema()
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        """Close the connections. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._client is not None:
            await self._client.close()

    async def _check_replica_set(self) -> None:
        with self._errors("cannot reach the server"):
            hello = await self._database.client.admin.command("hello")
        # A replica set member names its set; a mongos (sharded cluster) runs transactions too.
        if not hello.get("setName") and hello.get("msg") != "isdbgrid":
            raise StoreError(f"{self.url} is a standalone MongoDB server: {_NOT_A_REPLICA_SET}.")

    async def _create_indexes(self) -> None:
        unique = {"unique": True}
        indexes: dict[str, list[IndexModel]] = {
            "history_events": [
                IndexModel(
                    [("namespace", 1), ("workflow_id", 1), ("run_id", 1), ("event_id", 1)],
                    name="event_unique",
                    **unique,
                )
            ],
            "transfer_tasks": [
                IndexModel([("shard_id", 1), ("task_id", 1)], name="task_unique", **unique),
                IndexModel([("shard_id", 1), ("range_id", 1), ("seq", 1)], name="shard_order"),
            ],
            "timer_tasks": [
                IndexModel([("shard_id", 1), ("task_id", 1)], name="task_unique", **unique),
                IndexModel([("shard_id", 1), ("fire_time", 1), ("seq", 1)], name="shard_fire_time"),
            ],
            "sessions": [
                IndexModel([("owner", 1)], name="by_owner"),
                IndexModel([("recorded_at", 1)], name="expiry", expireAfterSeconds=SESSION_RECORD_TTL_SECONDS),
            ],
            "visibility": [
                IndexModel([("namespace", 1), *_VISIBILITY_ORDER], name="by_start_time"),
                IndexModel([("namespace", 1), ("status", 1), *_VISIBILITY_ORDER], name="by_status"),
                IndexModel([("namespace", 1), ("workflow_type", 1), *_VISIBILITY_ORDER], name="by_type"),
                IndexModel([("namespace", 1), ("workflow_id", 1), *_VISIBILITY_ORDER], name="by_workflow_id"),
                IndexModel([("namespace", 1), ("task_queue", 1), *_VISIBILITY_ORDER], name="by_task_queue"),
            ],
        }
        db = self._database
        with self._errors("cannot create the indexes"):
            # Creating an index that exists with the same options is a no-op, so this is idempotent.
            for name, models in indexes.items():
                await db[name].create_indexes(models)
            # Transactions may not create collections on every server version: create them all now.
            existing = set(await db.list_collection_names())
            for name in ("executions", "current_executions", "shards", "shard_fences", "namespaces"):
                if name not in existing:
                    try:
                        await db.create_collection(name)
                    except OperationFailure as exc:
                        if exc.code != 48:  # NamespaceExists: another process created it meanwhile
                            raise

    async def _check_schema(self) -> None:
        with self._errors("cannot read the schema version"):
            record = await self._database.schema_version.find_one_and_update(
                {"_id": "history"},
                {"$setOnInsert": {"version": SCHEMA_VERSION, "fence_stripes": self.fence_stripes}},
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
        if record is None:  # cannot happen: an upsert returning the document after the update
            raise StoreError(f"{self.url}: the schema_version record could not be created")
        version = int(record["version"])
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.url} has schema version {version} but this server knows up to {SCHEMA_VERSION}: "
                "it was written by a newer server. Upgrade this server to open it."
            )
        self.fence_stripes = int(record["fence_stripes"])

    @property
    def _database(self) -> AsyncDatabase[Doc]:
        if self._db is None or self._closed:
            raise StoreError(
                f"{self.url} is not open: call `await store.open()` first (and not after aclose)"
            )
        return self._db

    def _coll(self, name: str) -> AsyncCollection[Doc]:
        return self._database[name]

    # transactions -----------------------------------------------------------
    async def _transaction(self, what: str, body: Callable[[AsyncClientSession], Awaitable[T]]) -> T:
        """Run ``body`` in a transaction; retried on transient errors, errors mapped to StoreError."""
        retrying = AsyncRetrying(
            retry=retry_if_exception(_is_transient),
            stop=stop_after_attempt(self.transaction_attempts),
            wait=wait_random_exponential(multiplier=0.005, max=0.25),
            before_sleep=self._note_retry,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._transaction_once(body)
        except _CommitOutcomeUnknown as unknown:
            raise AmbiguousWriteError(
                f"{self.url}: the commit of {what} failed ({unknown.cause}); it may or may not be stored. "
                "Reload and compare before trying again."
            ) from unknown.cause
        except PyMongoError as exc:
            raise self._store_error(exc, f"{what} was not applied") from exc
        raise AssertionError("unreachable: tenacity either returns or re-raises")

    async def _transaction_once(self, body: Callable[[AsyncClientSession], Awaitable[T]]) -> T:
        async with self._database.client.start_session() as session:
            await self._record_session(session)
            async with await session.start_transaction(
                read_concern=ReadConcern("snapshot"),
                write_concern=WriteConcern("majority"),
                read_preference=ReadPreference.PRIMARY,
            ):
                result = await body(session)
                # Committed here rather than by the context manager, to tell a failed commit apart.
                try:
                    await session.commit_transaction()
                except (ConnectionFailure, WTimeoutError) as exc:
                    raise _CommitOutcomeUnknown(exc) from exc
                except PyMongoError as exc:
                    if exc.has_error_label("UnknownTransactionCommitResult"):
                        raise _CommitOutcomeUnknown(exc) from exc
                    raise
            return result

    def _note_retry(self, state: RetryCallState) -> None:
        self.transaction_retries += 1
        error = state.outcome.exception() if state.outcome is not None else None
        _log.info(
            "MongoDB transaction failed transiently (attempt %d), retrying: %s", state.attempt_number, error
        )

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Map driver errors of a single operation (not a transaction) to store errors."""
        try:
            yield
        except PyMongoError as exc:
            raise self._store_error(exc, what) from exc

    def _store_error(self, exc: PyMongoError, what: str) -> StoreError:
        if isinstance(exc, DuplicateKeyError) or (
            isinstance(exc, OperationFailure) and exc.code == WRITE_CONFLICT
        ):
            return ConditionFailedError(
                f"{self.url}: another writer changed the same records concurrently ({exc}); {what}. "
                "Reload and apply the change again."
            )
        if isinstance(exc, ServerSelectionTimeoutError):
            return StoreUnavailableError(
                f"{self.url}: no MongoDB primary reachable ({exc}); {what}. Check that the server runs "
                "and that the replicaSet name in the URL is the one rs.initiate() used. Retry later."
            )
        if isinstance(exc, ConnectionFailure) or exc.has_error_label("TransientTransactionError"):
            return StoreUnavailableError(f"{self.url}: MongoDB unavailable ({exc}); {what}. Retry later.")
        return StoreError(f"{self.url}: MongoDB error ({exc}); {what}")

    # dead owners' transactions -----------------------------------------------
    # A process killed inside a transaction leaves it open on the server, with its write locks on
    # the fence documents, until transactionLifetimeLimitSeconds (60 s by default) runs out: every
    # acquisition of the shard conflicts with it until then. So each process with a shard lease
    # records the server sessions its transactions run in (before the transaction starts), and the
    # next owner of a shard whose lease expired kills that owner's sessions (``killSessions``),
    # which aborts their open transactions at once. A live owner whose lease expired loses nothing
    # it still had a right to: its transaction fails with a transient error, is retried, and is
    # fenced out by the new range_id.
    async def _record_session(self, session: AsyncClientSession) -> None:
        """Record ``session``'s server session id under this store's owner (only with shard leases)."""
        if self._owner is None:
            return
        lsid = session.session_id["id"]
        key, now = bytes(lsid), time.monotonic()
        if now - self._recorded_sessions.get(key, -math.inf) < SESSION_RECORD_REFRESH_SECONDS:
            return
        with self._errors("the server session was not recorded"):
            await self._coll("sessions").replace_one(
                {"_id": lsid},
                {"owner": self._owner, "instance": self._instance, "recorded_at": datetime.now(UTC)},
                upsert=True,
            )
        self._recorded_sessions[key] = now

    async def _kill_sessions_of_previous_owner(self, shard_id: int, owner: str) -> None:
        """Abort the open transactions of the shard's previous owner if it is gone (see above).

        Gone: its lease ran out without a release (a release sets ``lease_until`` to 0), or it
        had this very member id (a restarted process; this store's own sessions are spared).
        """
        with self._errors(f"cannot read shard {shard_id}"):
            held = await self._coll("shards").find_one({"_id": shard_id})
        if held is None:
            return
        previous, lease_until = str(held.get("owner", "")), float(held.get("lease_until", 0.0))
        if previous != owner and not 0.0 < lease_until <= time.time():
            return
        with self._errors("cannot read the previous owner's sessions"):
            docs = await self._coll("sessions").find(
                {"owner": previous, "instance": {"$ne": self._instance}}, {"_id": 1}
            ).to_list()
        if not docs:
            return
        try:
            await self._database.client.admin.command({"killSessions": [{"id": d["_id"]} for d in docs]})
        except OperationFailure as exc:  # e.g. not authorized: the takeover waits for the server instead
            _log.warning(
                "could not kill the %d server sessions of %s, the previous owner of shard %d (%s); its open "
                "transactions block the takeover until the server aborts them (transactionLifetimeLimitSeconds)",
                len(docs), previous, shard_id, exc,
            )
            return
        except PyMongoError as exc:
            what = f"the sessions of the previous owner of shard {shard_id} were not killed"
            raise self._store_error(exc, what) from exc
        _log.info("killed %d server sessions of %s, the previous owner of shard %d", len(docs), previous, shard_id)

    # shards -----------------------------------------------------------------
    async def acquire_shard(self, shard_id: int, owner: str, lease_seconds: float | None = None) -> int:
        if lease_seconds is not None:
            self._owner = owner
            await self._kill_sessions_of_previous_owner(shard_id, owner)

        async def acquire(session: AsyncClientSession) -> int:
            now = time.time()
            if lease_seconds is not None:
                # Read in the transaction: a concurrent acquirer or renewer writes this document
                # too, so one of the two transactions conflicts and re-reads.
                held = await self._coll("shards").find_one({"_id": shard_id}, session=session)
                if held is not None and held.get("owner") != owner and float(held.get("lease_until", 0.0)) > now:
                    raise lease_held_error(shard_id, str(held["owner"]), float(held["lease_until"]))
            lease_until = 0.0 if lease_seconds is None else now + lease_seconds
            shard = await self._coll("shards").find_one_and_update(
                {"_id": shard_id},
                {"$inc": {"range_id": 1}, "$set": {"owner": owner, "acquired_at": now, "lease_until": lease_until}},
                upsert=True,
                return_document=ReturnDocument.AFTER,
                session=session,
            )
            if shard is None:  # cannot happen: an upsert returning the document after the update
                raise StoreError(f"{self.url}: shard {shard_id} could not be created")
            range_id = int(shard["range_id"])
            # Writing every fence document is what makes a writer of the old range_id conflict.
            await self._coll("shard_fences").bulk_write(
                [
                    UpdateOne(
                        {"_id": _fence_id(shard_id, stripe)},
                        {"$set": {"range_id": range_id}, "$setOnInsert": {"writes": Int64(0)}},
                        upsert=True,
                    )
                    for stripe in range(self.fence_stripes)
                ],
                session=session,
            )
            return range_id

        return await self._transaction(f"the acquisition of shard {shard_id}", acquire)

    async def renew_shard(self, shard_id: int, owner: str, range_id: int, lease_seconds: float) -> bool:
        with self._errors(f"the lease of shard {shard_id} was not renewed"):
            result = await self._coll("shards").update_one(
                {"_id": shard_id, "owner": owner, "range_id": range_id},
                {"$set": {"lease_until": time.time() + lease_seconds}},
            )
        return result.matched_count == 1

    async def release_shard(self, shard_id: int, owner: str, range_id: int) -> None:
        with self._errors(f"the lease of shard {shard_id} was not released"):
            await self._coll("shards").update_one(
                {"_id": shard_id, "owner": owner, "range_id": range_id}, {"$set": {"lease_until": 0.0}}
            )

    async def list_shards(self) -> list[ShardInfo]:
        with self._errors("read failed"):
            docs = await self._coll("shards").find({}, sort=[("_id", ASCENDING)]).to_list()
        return [
            ShardInfo(int(d["_id"]), str(d.get("owner", "")), int(d["range_id"]), float(d.get("lease_until", 0.0)))
            for d in docs
        ]

    # membership -------------------------------------------------------------
    async def heartbeat_member(self, member_id: str, address: str, ttl: float) -> None:
        with self._errors(f"the heartbeat of member {member_id} was not recorded"):
            await self._coll("members").replace_one(
                {"_id": member_id}, {"address": address, "expires_at": time.time() + ttl}, upsert=True
            )

    async def list_members(self) -> list[MemberRecord]:
        with self._errors("read failed"):
            docs = await self._coll("members").find(
                {"expires_at": {"$gt": time.time()}}, sort=[("_id", ASCENDING)]
            ).to_list()
        return [MemberRecord(str(d["_id"]), str(d["address"]), float(d["expires_at"])) for d in docs]

    async def remove_member(self, member_id: str) -> None:
        with self._errors(f"member {member_id} was not removed"):
            await self._coll("members").delete_one({"_id": member_id})

    # executions -------------------------------------------------------------
    async def write(self, shard_id: int, range_id: int, writes: list[ExecutionWrite]) -> None:
        async def write(session: AsyncClientSession) -> None:
            view = await self._read_view(session, shard_id, stripes, writes)
            plan = plan_write(shard_id, range_id, writes, view)
            await self._apply(session, range_id, plan, view)

        stripes = sorted({self._stripe(w.state.namespace, w.state.workflow_id) for w in writes} or {0})
        async with AsyncExitStack() as held:
            # Writers of one stripe in this process would only conflict on the server: queue them
            # here. Always in stripe order, so two writes that need two stripes cannot deadlock.
            for stripe in stripes:
                await held.enter_async_context(
                    self._stripe_locks.setdefault((shard_id, stripe), asyncio.Lock())
                )
            await self._transaction(f"the write to shard {shard_id}", write)

    def _stripe(self, namespace: str, workflow_id: str) -> int:
        # Not crc32: the shard is crc32 % num_shards, and the stripe must not correlate with it.
        digest = hashlib.blake2b(f"{namespace}/{workflow_id}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") % self.fence_stripes

    async def _read_view(
        self, session: AsyncClientSession, shard_id: int, stripes: list[int], writes: list[ExecutionWrite]
    ) -> StoredView:
        """Read what :func:`plan_write` needs, in the transaction, ending with the fence."""
        runs, workflows = keys_to_read(writes)
        versions: dict[RunKey, int] = {}
        if runs:
            cursor = self._coll("executions").find(
                {"_id": {"$in": [_run_id(k) for k in runs]}}, {"db_version": 1}, session=session
            )
            async for doc in cursor:
                versions[_run_key(doc["_id"])] = int(doc["db_version"])
        current: dict[WorkflowKey, CurrentRun] = {}
        if workflows:
            cursor = self._coll("current_executions").find(
                {"_id": {"$in": [_workflow_id(k) for k in workflows]}}, session=session
            )
            async for doc in cursor:
                current[(doc["_id"]["namespace"], doc["_id"]["workflow_id"])] = CurrentRun(
                    doc["run_id"], doc["status"], doc["start_request_id"]
                )
        return StoredView(await self._fence(session, shard_id, stripes), versions, current)

    async def _fence(self, session: AsyncClientSession, shard_id: int, stripes: list[int]) -> int:
        """Write the fence documents of ``stripes`` and return the shard's ``range_id`` (0: never acquired)."""
        range_ids = []
        for stripe in stripes:
            fence = await self._coll("shard_fences").find_one_and_update(
                {"_id": _fence_id(shard_id, stripe)},
                {"$inc": {"writes": Int64(1)}},  # a real change: a no-op update would not conflict
                projection={"range_id": 1},
                session=session,
            )
            range_ids.append(0 if fence is None else int(fence["range_id"]))
        return min(range_ids)

    async def _apply(self, session: AsyncClientSession, range_id: int, plan: WritePlan, view: StoredView) -> None:
        executions = self._coll("executions")
        for key, row in plan.executions.items():
            fields = {"db_version": row.state.db_version, "state": _codec.encode_state(row.state)}
            if row.stored_version is None:
                try:
                    await executions.insert_one({"_id": _run_id(key), **fields}, session=session)
                except DuplicateKeyError:
                    raise ConditionFailedError(
                        f"cannot create run {'/'.join(key)}: another writer created it meanwhile. "
                        "Reload it instead of creating it again."
                    ) from None
            else:
                result = await executions.update_one(
                    {"_id": _run_id(key), "db_version": row.stored_version}, {"$set": fields}, session=session
                )
                if result.matched_count != 1:  # cannot happen: the version was read in this transaction
                    raise ConditionFailedError(f"run {'/'.join(key)} changed during the write")
        for wf_key, pointer in plan.current.items():
            if view.current.get(wf_key) == pointer:
                # Unchanged (a write in the middle of a run): one round trip less. The fence
                # document already makes a concurrent writer of this workflow id conflict.
                continue
            await self._coll("current_executions").replace_one(
                {"_id": _workflow_id(wf_key)},
                {
                    "run_id": pointer.run_id,
                    "status": pointer.status,
                    "start_request_id": pointer.start_request_id,
                },
                upsert=True,
                session=session,
            )
        if plan.events:
            docs = [
                {
                    "namespace": key[0],
                    "workflow_id": key[1],
                    "run_id": key[2],
                    "event_id": event.event_id,
                    "data": _codec.encode_event(event),
                }
                for key, event in plan.events
            ]
            index = await _insert_all(self._coll("history_events"), docs, session)
            if index is not None:
                key, event = plan.events[index]
                raise duplicate_event_error(key, event.event_id)
        if plan.transfer_tasks:
            docs = [
                {
                    "shard_id": task.shard_id,
                    "task_id": task.task_id,
                    "range_id": range_id,
                    "seq": self._next_seq(),
                    "data": _codec.encode_transfer_task(task),
                }
                for task in plan.transfer_tasks
            ]
            index = await _insert_all(self._coll("transfer_tasks"), docs, session)
            if index is not None:
                task = plan.transfer_tasks[index]
                raise duplicate_task_error("transfer", task.shard_id, task.task_id)
        if plan.timer_tasks:
            docs = [
                {
                    "shard_id": timer.shard_id,
                    "task_id": timer.task_id,
                    "fire_time": float(timer.fire_time),
                    "seq": self._next_seq(),
                    "data": _codec.encode_timer_task(timer),
                }
                for timer in plan.timer_tasks
            ]
            index = await _insert_all(self._coll("timer_tasks"), docs, session)
            if index is not None:
                timer = plan.timer_tasks[index]
                raise duplicate_task_error("timer", timer.shard_id, timer.task_id)
        for key, record in plan.visibility.items():
            await self._coll("visibility").replace_one(
                {"_id": _run_id(key)}, _visibility_doc(record), upsert=True, session=session
            )

    def _next_seq(self) -> Int64:
        # Insertion order of the outbox. Within one range_id a single process writes the shard,
        # and a later range_id sorts after it, so (range_id, seq) is the order tasks were written.
        self._last_seq = max(time.time_ns(), self._last_seq + 1)
        return Int64(self._last_seq)

    async def get_execution(self, namespace: str, workflow_id: str, run_id: str) -> ExecutionState | None:
        with self._errors("read failed"):
            doc = await self._coll("executions").find_one({"_id": _run_id((namespace, workflow_id, run_id))})
        return None if doc is None else _codec.decode_state(doc["state"])

    async def get_current_run(self, namespace: str, workflow_id: str) -> CurrentRun | None:
        with self._errors("read failed"):
            doc = await self._coll("current_executions").find_one(
                {"_id": _workflow_id((namespace, workflow_id))}
            )
        return None if doc is None else CurrentRun(doc["run_id"], doc["status"], doc["start_request_id"])

    async def read_events(
        self,
        namespace: str,
        workflow_id: str,
        run_id: str,
        first_event_id: int = 1,
        max_events: int | None = None,
    ) -> list[HistoryEvent]:
        key = (namespace, workflow_id, run_id)
        if max_events is not None and max_events <= 0:
            return []  # MongoDB reads limit(0) as "no limit"
        cursor = self._coll("history_events").find(
            {
                "namespace": namespace,
                "workflow_id": workflow_id,
                "run_id": run_id,
                "event_id": {"$gte": first_event_id},
            },
            {"data": 1, "_id": 0},
            sort=[("event_id", ASCENDING)],
            limit=max_events or 0,
        )
        with self._errors("read failed"):
            docs = await cursor.to_list()
        return [_codec.decode_event(doc["data"], key) for doc in docs]

    async def delete_execution(self, namespace: str, workflow_id: str, run_id: str) -> None:
        key = (namespace, workflow_id, run_id)
        # The events first and outside the transaction: a long history is more than a transaction
        # should carry, and deleting them again after a failure is harmless. The run itself (and so
        # the visibility record retention finds it by) goes last, atomically.
        with self._errors("the events were not all deleted"):
            await self._coll("history_events").delete_many(
                {"namespace": namespace, "workflow_id": workflow_id, "run_id": run_id}
            )

        async def delete(session: AsyncClientSession) -> None:
            await self._coll("executions").delete_one({"_id": _run_id(key)}, session=session)
            await self._coll("visibility").delete_one({"_id": _run_id(key)}, session=session)
            await self._coll("current_executions").delete_one(
                {"_id": _workflow_id((namespace, workflow_id)), "run_id": run_id}, session=session
            )

        await self._transaction(f"the deletion of {'/'.join(key)}", delete)

    # outbox -----------------------------------------------------------------
    async def get_transfer_tasks(self, shard_id: int, limit: int = 100) -> list[TransferTask]:
        if limit <= 0:
            return []
        cursor = self._coll("transfer_tasks").find(
            {"shard_id": shard_id},
            {"data": 1, "_id": 0},
            sort=[("range_id", ASCENDING), ("seq", ASCENDING)],
            limit=limit,
        )
        with self._errors("read failed"):
            docs = await cursor.to_list()
        return [_codec.decode_transfer_task(doc["data"]) for doc in docs]

    async def delete_transfer_tasks(self, shard_id: int, task_ids: list[str]) -> None:
        await self._delete_tasks("transfer_tasks", shard_id, task_ids)

    async def get_timer_tasks(self, shard_id: int, fire_before: float, limit: int = 100) -> list[TimerTask]:
        if limit <= 0:
            return []
        # fire_time <= fire_before, written as "< the next double up": the same set for BSON doubles
        # (fire times are always stored as doubles). The SecantusDB stand-in (0.7.0b3) loses the
        # equal keys of $lte on a non-last field of a compound index; this form is plain MongoDB
        # on every server, and keeps the (shard_id, fire_time, seq) index usable for the sort.
        cursor = self._coll("timer_tasks").find(
            {"shard_id": shard_id, "fire_time": {"$lt": math.nextafter(fire_before, math.inf)}},
            {"data": 1, "_id": 0},
            sort=[("fire_time", ASCENDING), ("seq", ASCENDING)],
            limit=limit,
        )
        with self._errors("read failed"):
            docs = await cursor.to_list()
        return [_codec.decode_timer_task(doc["data"]) for doc in docs]

    async def next_timer_time(self, shard_id: int) -> float | None:
        with self._errors("read failed"):
            doc = await self._coll("timer_tasks").find_one(
                {"shard_id": shard_id}, {"fire_time": 1, "_id": 0}, sort=[("fire_time", ASCENDING)]
            )
        return None if doc is None else float(doc["fire_time"])

    async def delete_timer_tasks(self, shard_id: int, task_ids: list[str]) -> None:
        await self._delete_tasks("timer_tasks", shard_id, task_ids)

    async def _delete_tasks(self, collection: str, shard_id: int, task_ids: list[str]) -> None:
        if not task_ids:
            return
        # Idempotent, so a failure (even one after the server applied it) is safe to retry.
        with self._errors("the tasks were not deleted"):
            await self._coll(collection).delete_many({"shard_id": shard_id, "task_id": {"$in": task_ids}})

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
        cursor = self._coll("visibility").find(
            _visibility_filter(query), sort=_VISIBILITY_ORDER, limit=page_size + 1
        )
        with self._errors("read failed"):
            docs = await cursor.to_list()
        records = [_visibility_record(doc) for doc in docs[:page_size]]
        more = len(docs) > page_size
        return VisibilityPage(records, page_token(records[-1]) if more else None)

    async def count_visibility(self, namespace: str, *, filters: dict[str, Any] | None = None) -> int:
        query = VisibilityQuery.parse(namespace, filters)
        with self._errors("read failed"):
            return await self._coll("visibility").count_documents(_visibility_filter(query))

    # namespaces -------------------------------------------------------------
    async def upsert_namespace(self, record: NamespaceRecord) -> None:
        data = _codec.encode_namespace(record)
        with self._errors("the namespace was not stored"):  # a replace: safe to retry
            await self._coll("namespaces").replace_one({"_id": record.name}, {"data": data}, upsert=True)

    async def get_namespace(self, name: str) -> NamespaceRecord | None:
        with self._errors("read failed"):
            doc = await self._coll("namespaces").find_one({"_id": name})
        return None if doc is None else _codec.decode_namespace(doc["data"])

    async def list_namespaces(self) -> list[NamespaceRecord]:
        with self._errors("read failed"):
            docs = await self._coll("namespaces").find({}, sort=[("_id", ASCENDING)]).to_list()
        return [_codec.decode_namespace(doc["data"]) for doc in docs]


class _CommitOutcomeUnknown(Exception):
    """``commitTransaction`` failed in a way that leaves its outcome unknown (never retried)."""

    def __init__(self, cause: PyMongoError) -> None:
        super().__init__(str(cause))
        self.cause = cause


def _is_transient(exc: BaseException) -> bool:
    # Not after a server-selection timeout: that already waited serverSelectionTimeoutMS, and the
    # caller (the _retrying store) is the one to decide whether to wait more.
    return (
        isinstance(exc, PyMongoError)
        and not isinstance(exc, ServerSelectionTimeoutError)
        and exc.has_error_label("TransientTransactionError")
    )


async def _insert_all(
    collection: AsyncCollection[Doc], docs: list[Doc], session: AsyncClientSession
) -> int | None:
    """Insert ``docs`` in order; the index of the first one whose unique key is taken, or None."""
    try:
        await collection.insert_many(docs, ordered=True, session=session)
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        if errors and errors[0].get("code") == 11000:
            return int(errors[0]["index"])
        raise
    return None


# document ids --------------------------------------------------------------------
# Compound ids are embedded documents. MongoDB compares them field by field in order, so they are
# built only here, always with the same field order.
def _run_id(key: RunKey) -> Doc:
    namespace, workflow_id, run_id = key
    return {"namespace": namespace, "workflow_id": workflow_id, "run_id": run_id}


def _run_key(doc_id: Doc) -> RunKey:
    return (doc_id["namespace"], doc_id["workflow_id"], doc_id["run_id"])


def _workflow_id(key: WorkflowKey) -> Doc:
    namespace, workflow_id = key
    return {"namespace": namespace, "workflow_id": workflow_id}


def _fence_id(shard_id: int, stripe: int) -> Doc:
    return {"shard_id": shard_id, "stripe": stripe}


def _redacted(url: str) -> str:
    """``url`` without its password, for messages."""
    scheme, sep, rest = url.partition("://")
    credentials, at, hosts = rest.rpartition("@")
    if not sep or not at or ":" not in credentials:
        return url
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{hosts}"


# visibility documents ------------------------------------------------------------
_INT64 = range(-(2**63), 2**63)

# How a condition's op reads in MongoDB (starts_with, != are built apart).
_MONGO_OPS = {"=": "$eq", ">": "$gt", ">=": "$gte", "<": "$lt", "<=": "$lte"}


def _visibility_filter(query: VisibilityQuery) -> Doc:
    conditions: list[Doc] = [{"namespace": query.namespace}, *({k: v} for k, v in query.equals.items())]
    if query.start_time_after is not None:
        conditions.append({"start_time": {"$gte": query.start_time_after}})
    if query.start_time_before is not None:
        conditions.append({"start_time": {"$lt": query.start_time_before}})
    # Always $and, never one dict: a column named twice must hold twice.
    conditions += [_column_condition(cond) for cond in query.conditions]
    conditions += [_attribute_condition(cond) for cond in query.search_attributes]
    if query.after is not None:
        neg_start, run_id, workflow_id = query.after
        start = -neg_start
        conditions.append(
            {
                "$or": [
                    {"start_time": {"$lt": start}},
                    {"start_time": start, "run_id": {"$gt": run_id}},
                    {"start_time": start, "run_id": run_id, "workflow_id": {"$gt": workflow_id}},
                ]
            }
        )
    return {"$and": conditions}


def _column_condition(cond: Condition) -> Doc:
    """A condition on a record column; a NULL column (``close_time`` of an open run) matches nothing."""
    if cond.op == "!=":
        return {cond.field: {"$nin": [cond.operand, None]}}
    return {cond.field: _comparison(cond)}


def _attribute_condition(cond: Condition) -> Doc:
    """A search-attribute condition with the semantics of ``Condition.holds``.

    It reads the queryable copies :func:`_visibility_doc` writes: ``sa`` (scalar
    values) and ``sa_ms`` (ISO-8601 strings as epoch milliseconds). MongoDB's
    comparison operators only match values of the operand's type bracket (a
    string never equals a number, a bool is not a number), which is the rule.
    """
    kind = cond.kind
    field = f"{'sa_ms' if kind == 'datetime' else 'sa'}.{cond.field}"  # the name is validated: [A-Za-z0-9_]
    if cond.op != "!=":
        return {field: _comparison(cond)}
    if kind == "bool":
        return {field: not cond.operand}  # a bool that is not this one: the other one
    bracket = "string" if kind == "string" else "number"  # datetimes are stored as numbers in sa_ms
    return {field: {"$type": bracket, "$ne": cond.operand}}


def _comparison(cond: Condition) -> Doc:
    if cond.op == "starts_with":
        return {"$regex": "^" + re.escape(str(cond.operand))}  # an anchored prefix: it can use an index
    return {_MONGO_OPS[cond.op]: cond.operand}


def _queryable_attributes(attributes: dict[str, Any]) -> tuple[Doc, Doc]:
    """The ``sa`` and ``sa_ms`` copies of ``attributes`` (see :func:`_attribute_condition`).

    Only what a condition can match: names a condition can name, scalar values
    (lists and objects match nothing), finite numbers, and strings BSON can hold.
    """
    scalars: Doc = {}
    millis: Doc = {}
    for name, value in attributes.items():
        if not isinstance(name, str) or not name.isidentifier() or not name.isascii():
            continue
        if isinstance(value, bool):
            scalars[name] = value
        elif isinstance(value, int):
            scalars[name] = value if value in _INT64 else float(value)
        elif isinstance(value, float):
            if math.isfinite(value):
                scalars[name] = value
        elif isinstance(value, str):
            try:
                value.encode()
            except UnicodeEncodeError:  # a lone surrogate: not valid UTF-8, so not storable in BSON
                continue
            scalars[name] = value
            ms = datetime_millis(value)
            if ms is not None:
                millis[name] = ms
    return scalars, millis


def _visibility_doc(record: VisibilityRecord) -> Doc:
    scalars, millis = _queryable_attributes(record.search_attributes)
    return {
        "namespace": record.namespace,
        "workflow_id": record.workflow_id,
        "run_id": record.run_id,
        "workflow_type": record.workflow_type,
        "task_queue": record.task_queue,
        "status": record.status,
        "start_time": record.start_time,
        "execution_time": record.execution_time,
        "close_time": record.close_time,
        "history_length": record.history_length,
        # JSON text, like the other backends: any JSON round-trips (keys with '.' or '$' too).
        "search_attributes": json.dumps(record.search_attributes),
        "sa": scalars,
        "sa_ms": millis,
        "memo": json.dumps(record.memo),
        "parent_workflow_id": record.parent_workflow_id,
    }


def _visibility_record(doc: Doc) -> VisibilityRecord:
    return VisibilityRecord(
        namespace=doc["namespace"],
        workflow_id=doc["workflow_id"],
        run_id=doc["run_id"],
        workflow_type=doc["workflow_type"],
        task_queue=doc["task_queue"],
        status=doc["status"],
        start_time=doc["start_time"],
        execution_time=doc["execution_time"],
        close_time=doc["close_time"],
        history_length=doc["history_length"],
        search_attributes=json.loads(doc["search_attributes"]),
        memo=json.loads(doc["memo"]),
        parent_workflow_id=doc["parent_workflow_id"],
    )
