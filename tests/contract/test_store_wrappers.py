"""The decorator stores: retrying, instrumented, fault-injecting."""

from __future__ import annotations

import time

import pytest
from prometheus_client import REGISTRY

from orchestrator.persistence._delegating import STORE_METHODS
from orchestrator.persistence._faults import FaultInjectingHistoryStore
from orchestrator.persistence._instrumented import InstrumentedHistoryStore
from orchestrator.persistence._retrying import RetryingHistoryStore
from orchestrator.persistence.base import (
    AmbiguousWriteError,
    ConditionFailedError,
    HistoryStore,
    NamespaceRecord,
    StoreError,
    StoreUnavailableError,
    open_store,
)
from orchestrator.persistence.memory import MemoryHistoryStore

from .conftest import NS, create, make_state, marker, timer_task, transfer_task, update

SHARD = 0


def _stack() -> tuple[RetryingHistoryStore, FaultInjectingHistoryStore, InstrumentedHistoryStore]:
    """retrying -> faults -> instrumented -> memory: the instrumented store sees what reaches the backend."""
    counted = InstrumentedHistoryStore(MemoryHistoryStore())
    faults = FaultInjectingHistoryStore(counted, seed=1)
    return RetryingHistoryStore(faults, attempts=3, initial_backoff=0), faults, counted


async def test_transient_errors_are_retried_on_writes_and_reads() -> None:
    store, faults, counted = _stack()
    faults.fail_next("write", times=2)
    await store.write(SHARD, 0, [create(make_state())])
    assert store.retries == 2 and faults.injected["write"] == 2
    assert counted.stats["write"].calls == 1  # the failures never reached the backend

    faults.fail_next("get_execution", StoreUnavailableError("connection reset"))
    assert await store.get_execution(NS, "wf-1", "run-1") == make_state()
    assert store.retries == 3


async def test_retrying_gives_up_after_its_attempts() -> None:
    store, faults, counted = _stack()
    faults.fail_next("write", times=3)
    with pytest.raises(StoreUnavailableError, match="injected"):
        await store.write(SHARD, 0, [create(make_state())])
    assert "write" not in counted.stats
    assert await store.get_execution(NS, "wf-1", "run-1") is None


async def test_an_ambiguous_write_is_not_retried_and_reloading_tells_the_truth() -> None:
    store, faults, counted = _stack()
    faults.commit_then_timeout("write")
    state = make_state()
    with pytest.raises(AmbiguousWriteError):
        await store.write(SHARD, 0, [create(state)])
    assert store.retries == 0 and counted.stats["write"].calls == 1
    assert await store.get_execution(NS, "wf-1", "run-1") == state  # it did commit


@pytest.mark.parametrize("error", [ConditionFailedError("cas"), ValueError("bug"), StoreError("other")])
async def test_answers_are_not_retried(error: Exception) -> None:
    store, faults, _ = _stack()
    faults.fail_next("acquire_shard", error)
    with pytest.raises(type(error)):
        await store.acquire_shard(SHARD, "me")
    assert store.retries == 0


async def test_instrumented_counts_every_method_transactions_and_rows() -> None:
    store = InstrumentedHistoryStore(MemoryHistoryStore())
    transactions_before = _sample("sagas_store_transactions_total", backend="memory")
    events_before = _sample("sagas_store_rows_total", backend="memory", kind="events")
    state = make_state()
    range_id = await _call_every_method(store)
    _, write = update(state, [marker(3)], timer_tasks=[timer_task(state, 1.0)])
    await store.write(SHARD, range_id, [write])
    with pytest.raises(ConditionFailedError):
        await store.write(SHARD, range_id, [write])

    assert set(store.stats) == STORE_METHODS
    assert store.stats["write"].calls == 3 and store.stats["write"].errors == 1
    assert store.transactions == 2
    assert store.rows == (2 + 1) + (1 + 1)  # events + tasks of the two successful writes
    assert _sample("sagas_store_transactions_total", backend="memory") == transactions_before + 2
    assert _sample("sagas_store_rows_total", backend="memory", kind="events") == events_before + 3
    assert (
        _sample("sagas_store_calls_total", backend="memory", method="write", outcome="ConditionFailedError")
        >= 1
    )
    assert _sample("sagas_store_latency_seconds_count", backend="memory", method="list_namespaces") >= 1
    InstrumentedHistoryStore(MemoryHistoryStore())  # a second instance registers nothing twice


async def test_error_rate_and_latency() -> None:
    always = FaultInjectingHistoryStore(MemoryHistoryStore(), error_rate=1.0)
    with pytest.raises(StoreUnavailableError):
        await always.list_namespaces()
    always.set_error_rate("list_namespaces", 0.0)
    assert await always.list_namespaces() == []
    with pytest.raises(StoreUnavailableError):
        await always.get_namespace("default")

    with pytest.raises(ValueError, match="unknown store method"):
        always.fail_next("wirte")

    slow = FaultInjectingHistoryStore(MemoryHistoryStore(), latency=0.02)
    start = time.perf_counter()
    await slow.list_namespaces()
    assert time.perf_counter() - start >= 0.02


async def test_ambiguous_rate_applies_then_raises() -> None:
    store = FaultInjectingHistoryStore(MemoryHistoryStore())
    store.set_ambiguous_rate("upsert_namespace", 1.0)
    with pytest.raises(AmbiguousWriteError):
        await store.upsert_namespace(NamespaceRecord("default"))
    assert await store.get_namespace("default") == NamespaceRecord("default")


async def test_wrappers_forward_url_and_close() -> None:
    inner = MemoryHistoryStore()
    async with RetryingHistoryStore(InstrumentedHistoryStore(inner)) as store:
        assert store.url == "memory://"


async def test_open_store_urls() -> None:
    assert isinstance(await open_store("memory://"), MemoryHistoryStore)
    with pytest.raises(StoreError, match="unknown store URL"):
        await open_store("postgres://nope")


async def _call_every_method(store: HistoryStore) -> int:
    """Call each store method once (creating wf-1/run-1); returns the shard's range_id."""
    state = make_state()
    range_id = await store.acquire_shard(SHARD, "me")
    await store.write(SHARD, range_id, [create(state, transfer_tasks=[transfer_task(state)])])
    await store.get_execution(NS, "wf-1", "run-1")
    await store.get_current_run(NS, "wf-1")
    await store.read_events(NS, "wf-1", "run-1")
    await store.get_transfer_tasks(SHARD)
    await store.delete_transfer_tasks(SHARD, [])
    await store.get_timer_tasks(SHARD, 0.0)
    await store.next_timer_time(SHARD)
    await store.delete_timer_tasks(SHARD, [])
    await store.list_visibility(NS)
    await store.count_visibility(NS)
    await store.upsert_namespace(NamespaceRecord("default"))
    await store.get_namespace("default")
    await store.list_namespaces()
    await store.delete_execution(NS, "wf-x", "run-x")
    await store.renew_shard(SHARD, "me", range_id, 10.0)
    await store.list_shards()
    await store.release_shard(SHARD + 1, "me", 0)
    await store.heartbeat_member("me", "http://me", 10.0)
    await store.list_members()
    await store.remove_member("me")
    return range_id


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0
