"""``RetryingHistoryStore`` enters tenacity only after a failure: the first try costs nothing extra."""

from __future__ import annotations

from typing import Any

import pytest
from tenacity import AsyncRetrying

from orchestrator.persistence import _retrying
from orchestrator.persistence._faults import FaultInjectingHistoryStore
from orchestrator.persistence._retrying import RetryingHistoryStore
from orchestrator.persistence.base import StoreUnavailableError
from orchestrator.persistence.memory import MemoryHistoryStore

from .conftest import NS, create, make_state


class CountingRetrying(AsyncRetrying):
    built = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        CountingRetrying.built += 1
        super().__init__(*args, **kwargs)


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> type[CountingRetrying]:
    CountingRetrying.built = 0
    monkeypatch.setattr(_retrying, "AsyncRetrying", CountingRetrying)
    return CountingRetrying


async def test_a_call_that_succeeds_at_once_never_builds_a_retry_policy(counted: type[CountingRetrying]) -> None:
    store = RetryingHistoryStore(MemoryHistoryStore(), attempts=3, initial_backoff=0)
    range_id = await store.acquire_shard(0, "me")
    await store.write(0, range_id, [create(make_state())])
    assert await store.get_execution(NS, "wf-1", "run-1") == make_state()
    assert counted.built == 0 and store.retries == 0


async def test_a_failed_first_try_is_retried_by_tenacity_with_the_same_attempts(counted: type[CountingRetrying]) -> None:
    faults = FaultInjectingHistoryStore(MemoryHistoryStore(), seed=1)
    store = RetryingHistoryStore(faults, attempts=3, initial_backoff=0)
    faults.fail_next("get_current_run", times=2)
    assert await store.get_current_run(NS, "nothing") is None
    assert counted.built == 1 and store.retries == 2 and faults.injected["get_current_run"] == 2

    faults.fail_next("get_current_run", times=3)  # attempts=3 counts the first try
    with pytest.raises(StoreUnavailableError):
        await store.get_current_run(NS, "nothing")
    assert store.retries == 4 and faults.injected["get_current_run"] == 5

    single = RetryingHistoryStore(faults, attempts=1, initial_backoff=0)
    faults.fail_next("get_current_run")
    with pytest.raises(StoreUnavailableError):
        await single.get_current_run(NS, "nothing")
    assert single.retries == 0
