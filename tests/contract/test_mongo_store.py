"""What only the MongoDB store has to get right, beyond the shared contract.

Runs against the same server as the contract suite (``SAGAS_TEST_MONGODB_URL``
or the SecantusDB stand-in, see ``conftest.py``). Faults the server cannot be
asked for are injected by monkeypatching the driver at one seam each.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

pytest.importorskip("pymongo")

from pymongo.asynchronous.client_session import AsyncClientSession  # noqa: E402
from pymongo.asynchronous.database import AsyncDatabase  # noqa: E402
from pymongo.errors import ConnectionFailure  # noqa: E402

from orchestrator.persistence.base import (  # noqa: E402
    AmbiguousWriteError,
    ConditionFailedError,
    ShardOwnershipLostError,
    StoreError,
    StoreUnavailableError,
    open_store,
)
from orchestrator.persistence.mongo import MongoHistoryStore  # noqa: E402

from .conftest import NS, create, make_state, marker, mongo_server_url, update  # noqa: E402

SHARD = 2


@pytest.fixture
def database() -> str:
    return f"sagas_mongo_{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def store(database: str) -> AsyncIterator[MongoHistoryStore]:
    opened = MongoHistoryStore(mongo_server_url(database))
    await opened.open()
    try:
        yield opened
    finally:
        await opened.aclose()


@pytest.fixture
async def second_store(database: str) -> AsyncIterator[MongoHistoryStore]:
    """Another store on the same database: what a second orchestrator process would hold."""
    opened = MongoHistoryStore(mongo_server_url(database))
    await opened.open()
    try:
        yield opened
    finally:
        await opened.aclose()


def _before_first_fence(
    store: MongoHistoryStore, monkeypatch: pytest.MonkeyPatch, action: Callable[[], Awaitable[None]]
) -> None:
    """Run ``action`` once, inside ``store``'s first write transaction, after its snapshot reads."""
    fence = store._fence
    done = False

    async def fence_after_action(session: AsyncClientSession, shard_id: int, stripes: list[int]) -> int:
        nonlocal done
        if not done:
            done = True
            await action()
        return await fence(session, shard_id, stripes)

    monkeypatch.setattr(store, "_fence", fence_after_action)


async def test_a_standalone_server_is_refused_with_how_to_fix_it(
    database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    command = AsyncDatabase.command

    async def standalone_hello(self: AsyncDatabase[Any], cmd: Any, *args: Any, **kwargs: Any) -> Any:
        if cmd == "hello":  # what a mongod started without --replSet answers
            return {"isWritablePrimary": True, "maxWireVersion": 21, "ok": 1.0}
        return await command(self, cmd, *args, **kwargs)

    monkeypatch.setattr(AsyncDatabase, "command", standalone_hello)
    with pytest.raises(StoreError) as raised:
        await open_store(mongo_server_url(database))
    message = str(raised.value)
    assert "transactions need a replica set" in message
    assert "--replSet rs0" in message and "rs.initiate()" in message and "single node is fine" in message


async def test_an_unreachable_server_is_unavailable_not_a_crash() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"mongodb://127.0.0.1:{port}/x?replicaSet=rs0&serverSelectionTimeoutMS=200&connectTimeoutMS=200"
    store = MongoHistoryStore(url)
    with warnings.catch_warnings():
        # PyMongo's server monitor keeps reconnecting to the dead port, and a connect attempt that
        # close() cancels leaks its socket (a driver bug: it closes the socket on OSError only).
        # Collect it here, where it is expected, not in whichever test the collector runs next.
        warnings.simplefilter("ignore", ResourceWarning)
        with pytest.raises(StoreUnavailableError, match="replicaSet name"):
            await store.open()
        await store.aclose()
        del store
        gc.collect()


async def test_a_commit_with_an_unknown_outcome_is_ambiguous(
    store: MongoHistoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    range_id = await store.acquire_shard(SHARD, "me")
    commit = AsyncClientSession.commit_transaction

    async def commit_then_lose_the_reply(self: AsyncClientSession) -> None:
        await commit(self)  # the server applied it...
        raise ConnectionFailure("connection closed while reading the commit reply")  # ...we never heard

    monkeypatch.setattr(AsyncClientSession, "commit_transaction", commit_then_lose_the_reply)
    state = make_state()
    with pytest.raises(AmbiguousWriteError, match="may or may not be stored"):
        await store.write(SHARD, range_id, [create(state)])
    monkeypatch.undo()

    # Reload and compare: the write is there. Appending it again would be refused, never doubled.
    assert await store.get_execution(NS, "wf-1", "run-1") == state
    assert store.transaction_retries == 0
    with pytest.raises(ConditionFailedError):
        await store.write(SHARD, range_id, [create(state)])
    assert len(await store.read_events(NS, "wf-1", "run-1")) == 2


async def test_a_transient_write_conflict_is_retried_and_then_succeeds(
    store: MongoHistoryStore, second_store: MongoHistoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    range_id = await store.acquire_shard(SHARD, "me")
    state = make_state()
    await store.write(SHARD, range_id, [create(state)])

    async def touch_the_execution() -> None:
        # Another client changes the document after this transaction took its snapshot (but not
        # its version): the transaction's update meets a WriteConflict, labelled transient.
        await second_store._coll("executions").update_one(
            {"_id": {"namespace": NS, "workflow_id": "wf-1", "run_id": "run-1"}}, {"$set": {"touched": True}}
        )

    _before_first_fence(store, monkeypatch, touch_the_execution)
    new_state, write = update(state, [marker(3)])
    await store.write(SHARD, range_id, [write])

    assert store.transaction_retries == 1
    assert await store.get_execution(NS, "wf-1", "run-1") == new_state
    assert [e.event_id for e in await store.read_events(NS, "wf-1", "run-1")] == [1, 2, 3]


async def test_a_write_conflict_that_outlasts_the_retries_is_a_condition_failure(
    database: str, second_store: MongoHistoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = MongoHistoryStore(mongo_server_url(database), transaction_attempts=1)
    await store.open()
    try:
        range_id = await store.acquire_shard(SHARD, "me")
        state = make_state()
        await store.write(SHARD, range_id, [create(state)])

        async def touch_the_execution() -> None:
            await second_store._coll("executions").update_one(
                {"_id": {"namespace": NS, "workflow_id": "wf-1", "run_id": "run-1"}}, {"$set": {"touched": 1}}
            )

        _before_first_fence(store, monkeypatch, touch_the_execution)
        _, write = update(state, [marker(3)])
        with pytest.raises(ConditionFailedError, match="concurrently"):
            await store.write(SHARD, range_id, [write])
        assert await store.read_events(NS, "wf-1", "run-1", first_event_id=3) == []
    finally:
        await store.aclose()


async def test_two_processes_writing_one_execution_make_one_winner(
    store: MongoHistoryStore, second_store: MongoHistoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    range_id = await store.acquire_shard(SHARD, "me")
    state = make_state()
    await store.write(SHARD, range_id, [create(state)])

    # Both transactions read db_version 1 in their snapshots before either writes: a true race,
    # which only the server can settle (the in-process locks of one store do not span two).
    both_read = asyncio.Barrier(2)

    async def wait_for_the_other() -> None:
        await asyncio.wait_for(both_read.wait(), 10)

    _before_first_fence(store, monkeypatch, wait_for_the_other)
    _before_first_fence(second_store, monkeypatch, wait_for_the_other)
    writes = [update(state, [marker(3, writer=i)])[1] for i in range(2)]
    results = await asyncio.gather(
        store.write(SHARD, range_id, [writes[0]]),
        second_store.write(SHARD, range_id, [writes[1]]),
        return_exceptions=True,
    )

    assert sum(r is None for r in results) == 1, results
    [loser] = [r for r in results if r is not None]
    assert isinstance(loser, ConditionFailedError), repr(loser)
    winner = results.index(None)
    stored = await store.get_execution(NS, "wf-1", "run-1")
    assert stored is not None and stored.db_version == 2
    assert await store.read_events(NS, "wf-1", "run-1", first_event_id=3) == [marker(3, writer=winner)]


async def test_a_write_that_read_the_old_range_id_cannot_commit_after_a_takeover(
    store: MongoHistoryStore, second_store: MongoHistoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    old_range = await store.acquire_shard(SHARD, "old-owner")
    state = make_state()
    await store.write(SHARD, old_range, [create(state)])

    async def take_the_shard_over() -> None:
        # The old owner's transaction has already read (its snapshot still says old_range).
        assert await second_store.acquire_shard(SHARD, "new-owner") == old_range + 1

    _before_first_fence(store, monkeypatch, take_the_shard_over)
    _, write = update(state, [marker(3)])
    with pytest.raises(ShardOwnershipLostError):
        await store.write(SHARD, old_range, [write])
    assert await store.read_events(NS, "wf-1", "run-1", first_event_id=3) == []


async def test_a_database_of_a_newer_schema_is_refused(store: MongoHistoryStore, database: str) -> None:
    await store._coll("schema_version").update_one({"_id": "history"}, {"$set": {"version": 99}})
    with pytest.raises(StoreError, match="newer server"):
        await open_store(mongo_server_url(database))


async def test_open_is_idempotent_and_the_url_hides_the_password(database: str) -> None:
    first = await open_store(mongo_server_url(database))
    second = await open_store(mongo_server_url(database))  # indexes and schema record exist: no error
    await first.aclose()
    await second.aclose()
    assert "s3cret" not in MongoHistoryStore("mongodb://sagas:s3cret@db1,db2/sagas?replicaSet=rs0").url


async def test_a_takeover_from_an_owner_that_died_inside_a_transaction_is_prompt(
    store: MongoHistoryStore, second_store: MongoHistoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The old owner dies (here: hangs forever) inside a write transaction that has written a fence
    # document. The server keeps that transaction, and its write lock on the fence, until
    # transactionLifetimeLimitSeconds (60 s); the new owner must not have to wait for it.
    lease = 0.3
    old_range = await store.acquire_shard(SHARD, "dead-owner", lease)
    state = make_state()
    await store.write(SHARD, old_range, [create(state)])

    fenced, never = asyncio.Event(), asyncio.Event()
    fence = store._fence
    hung = False

    async def fence_then_hang(session: AsyncClientSession, shard_id: int, stripes: list[int]) -> int:
        nonlocal hung
        range_id = await fence(session, shard_id, stripes)
        if not hung:
            hung = True
            fenced.set()
            await never.wait()
        return range_id

    monkeypatch.setattr(store, "_fence", fence_then_hang)
    _, write = update(state, [marker(3, owner="dead")])
    dead_write = asyncio.create_task(store.write(SHARD, old_range, [write]))
    try:
        await _take_over_from_the_hung_owner(second_store, state, old_range, fenced, never, dead_write)
    finally:
        never.set()
        if not dead_write.done():
            dead_write.cancel()
        await asyncio.gather(dead_write, return_exceptions=True)


async def _take_over_from_the_hung_owner(
    second_store: MongoHistoryStore,
    state: Any,
    old_range: int,
    fenced: asyncio.Event,
    never: asyncio.Event,
    dead_write: asyncio.Task[None],
) -> None:
    await asyncio.wait_for(fenced.wait(), 10)
    [shard] = [s for s in await second_store.list_shards() if s.shard_id == SHARD]
    while time.time() <= shard.lease_until:  # until the dead owner's lease has expired
        await asyncio.sleep(0.02)

    started = time.monotonic()
    new_range = await asyncio.wait_for(second_store.acquire_shard(SHARD, "new-owner", 10.0), 10)
    took = time.monotonic() - started
    assert new_range == old_range + 1
    assert took < 5.0, f"the takeover waited {took:.1f} s for the dead owner's transaction"
    # The new owner writes the workflow the dead transaction was writing.
    _, write = update(state, [marker(3, owner="new")])
    await second_store.write(SHARD, new_range, [write])

    # Should the old owner wake up after all, its transaction is gone and it is fenced out.
    never.set()
    with pytest.raises((ShardOwnershipLostError, ConditionFailedError)):
        await asyncio.wait_for(dead_write, 30)
    assert await second_store.read_events(NS, "wf-1", "run-1", first_event_id=3) == [marker(3, owner="new")]
