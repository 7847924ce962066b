"""What only the SQLite backend promises: group commit, error mapping, files and schema."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from orchestrator.persistence.base import (
    ConditionFailedError,
    StoreError,
    StoreUnavailableError,
    open_store,
)
from orchestrator.persistence.sqlite import SCHEMA_VERSION, SqliteHistoryStore

from .conftest import NS, create, make_state, marker, transfer_task, update

SHARD = 1


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SqliteHistoryStore]:
    store = SqliteHistoryStore(str(tmp_path / "history.db"), busy_timeout=0.05)
    await store.open()
    try:
        yield store
    finally:
        await store.aclose()


async def test_concurrent_writes_share_commits(sqlite_store: SqliteHistoryStore) -> None:
    range_id = await sqlite_store.acquire_shard(SHARD, "me")
    before = sqlite_store.commits
    states = [make_state(f"wf-{i}") for i in range(50)]
    await asyncio.gather(
        *(sqlite_store.write(SHARD, range_id, [create(s, transfer_tasks=[transfer_task(s)])]) for s in states)
    )
    commits = sqlite_store.commits - before
    assert 1 <= commits < 50, f"50 writes took {commits} commits: group commit is not grouping"
    for s in states:
        assert await sqlite_store.get_execution(NS, s.workflow_id, s.run_id) == s


async def test_one_failing_write_does_not_undo_the_others_of_its_group(
    sqlite_store: SqliteHistoryStore,
) -> None:
    range_id = await sqlite_store.acquire_shard(SHARD, "me")
    contested = make_state("contested")
    await sqlite_store.write(SHARD, range_id, [create(contested)])
    _, stale = update(contested.model_copy(update={"db_version": 5}), [marker(3)])
    good = [make_state(f"wf-{i}") for i in range(20)]
    calls = [sqlite_store.write(SHARD, range_id, [create(s)]) for s in good[:10]]
    calls.append(sqlite_store.write(SHARD, range_id, [stale]))
    calls += [sqlite_store.write(SHARD, range_id, [create(s)]) for s in good[10:]]
    before = sqlite_store.commits

    results = await asyncio.gather(*calls, return_exceptions=True)

    assert isinstance(results[10], ConditionFailedError)
    assert results[:10] + results[11:] == [None] * 20
    assert sqlite_store.commits - before < 21
    for s in good:
        assert await sqlite_store.get_execution(NS, s.workflow_id, s.run_id) == s
    assert await sqlite_store.read_events(NS, "contested", "run-1", first_event_id=3) == []


async def test_a_locked_database_is_unavailable_and_nothing_is_written(
    sqlite_store: SqliteHistoryStore,
) -> None:
    range_id = await sqlite_store.acquire_shard(SHARD, "me")
    other = sqlite3.connect(sqlite_store.path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        with pytest.raises(StoreUnavailableError, match="locked"):
            await sqlite_store.write(SHARD, range_id, [create(make_state())])
        assert await sqlite_store.get_execution(NS, "wf-1", "run-1") is None  # reads still work
        other.execute("ROLLBACK")
    finally:
        other.close()
    await sqlite_store.write(SHARD, range_id, [create(make_state())])
    assert await sqlite_store.get_execution(NS, "wf-1", "run-1") is not None


async def test_open_store_by_url(tmp_path: Path) -> None:
    path = tmp_path / "by-url.db"
    store = await open_store(f"sqlite:///{path}")
    try:
        assert isinstance(store, SqliteHistoryStore) and store.path == str(path)
        await store.write(SHARD, 0, [create(make_state())])
    finally:
        await store.aclose()
    assert path.exists()


async def test_sqlite_memory_url_uses_a_private_file_removed_on_close() -> None:
    store = await open_store("sqlite://")
    assert isinstance(store, SqliteHistoryStore)
    tempdir = store._tempdir
    assert tempdir is not None and os.path.isdir(tempdir)
    await store.write(SHARD, 0, [create(make_state())])
    assert await store.get_execution(NS, "wf-1", "run-1") is not None
    await store.aclose()
    assert not os.path.exists(tempdir)


async def test_a_file_of_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    store = SqliteHistoryStore(str(path))
    await store.open()
    await store.aclose()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    conn.close()

    newer = SqliteHistoryStore(str(path))
    with pytest.raises(StoreError, match="newer server"):
        await newer.open()
    with pytest.raises(StoreError, match="not open"):
        await newer.get_execution(NS, "wf-1", "run-1")


async def test_a_closed_store_refuses_calls(sqlite_store: SqliteHistoryStore) -> None:
    await sqlite_store.aclose()
    with pytest.raises(StoreError, match="not open"):
        await sqlite_store.write(SHARD, 0, [])
    with pytest.raises(StoreError, match="not open"):
        await sqlite_store.list_namespaces()
    with pytest.raises(StoreError, match="closed"):
        await sqlite_store.open()


async def test_unopened_store_refuses_calls(tmp_path: Path) -> None:
    store = SqliteHistoryStore(str(tmp_path / "history.db"))
    with pytest.raises(StoreError, match="open"):
        await store.acquire_shard(SHARD, "me")
