"""``HistoryService.resolve_run_id``: the current run from memory when this process owns the shard.

Signals, queries and results name no run; while a process owns a workflow's shard, only its own
commits move the workflow's current-run pointer, so it answers from memory. A read fills the
memory; losing the shard, a failed commit or retention drops it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from orchestrator.api import commands as C
from orchestrator.errors import UnavailableError, WorkflowNotFoundError
from orchestrator.history.engine import StartRequest
from orchestrator.history.service import HistoryService
from orchestrator.persistence._faults import FaultInjectingHistoryStore
from orchestrator.persistence._instrumented import InstrumentedHistoryStore
from orchestrator.persistence.memory import MemoryHistoryStore

NS = "default"


class Rig:
    def __init__(self) -> None:
        self.memory = MemoryHistoryStore()
        self.faults = FaultInjectingHistoryStore(self.memory, seed=1)
        self.store = InstrumentedHistoryStore(self.faults)
        self.history = HistoryService(self.store, num_shards=4)

    def reads(self) -> int:
        stats = self.store.stats.get("get_current_run")
        return 0 if stats is None else stats.calls

    async def start(self, wid: str, history: HistoryService | None = None) -> str:
        h = history or self.history
        run_id, started = await h.start(StartRequest(namespace=NS, workflow_id=wid, workflow_type="W", task_queue="q"))
        assert started
        return run_id

    async def close(self, wid: str, run_id: str, command: C.Command) -> None:
        engine = self.history.engine
        state = await self.history.get_state(NS, wid, run_id)
        assert state.workflow_task is not None
        wft = state.workflow_task.scheduled_event_id
        await self.history.update(NS, wid, run_id, lambda s, now: engine.complete_workflow_task(s, wft, 1, [command], now=now))

    async def stored_current(self, wid: str) -> str:
        current = await self.memory.get_current_run(NS, wid)
        assert current is not None
        return current.run_id


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    r = Rig()
    await r.history.acquire_shards()
    yield r
    await r.store.aclose()


async def test_the_current_run_of_a_started_workflow_is_resolved_without_a_read(rig: Rig) -> None:
    run_id = await rig.start("wf")
    reads = rig.reads()
    for _ in range(3):
        assert await rig.history.resolve_run_id(NS, "wf") == run_id
    assert rig.reads() == reads
    assert await rig.history.resolve_run_id(NS, "wf", "explicit") == "explicit"


async def test_continue_as_new_and_a_new_start_move_the_cached_pointer(rig: Rig) -> None:
    first = await rig.start("wf")
    await rig.close("wf", first, C.ContinueAsNewWorkflowExecution())
    second = await rig.stored_current("wf")
    assert second != first
    reads = rig.reads()
    assert await rig.history.resolve_run_id(NS, "wf") == second
    await rig.close("wf", second, C.CompleteWorkflowExecution(result=1))
    assert await rig.history.resolve_run_id(NS, "wf") == second  # closed, still current
    third = await rig.start("wf")
    assert await rig.history.resolve_run_id(NS, "wf") == third == await rig.stored_current("wf")
    assert rig.reads() - reads == 1  # the id-reuse check of the start, not the resolves


async def test_a_read_fills_the_cache_after_a_restart(rig: Rig) -> None:
    run_id = await rig.start("wf")
    restarted = HistoryService(rig.store, num_shards=4)
    await restarted.acquire_shards()
    reads = rig.reads()
    assert await restarted.resolve_run_id(NS, "wf") == run_id
    assert await restarted.resolve_run_id(NS, "wf") == run_id
    assert rig.reads() - reads == 1


async def test_a_shard_not_owned_is_always_read_from_the_store(rig: Rig) -> None:
    run_id = await rig.start("wf")
    shard = rig.history.shard_of(NS, "wf")
    rig.history.drop_shard(shard)
    reads = rig.reads()
    assert await rig.history.resolve_run_id(NS, "wf") == run_id
    assert await rig.history.resolve_run_id(NS, "wf") == run_id
    assert rig.reads() - reads == 2
    # Owned again (at a new range_id): read once, then from memory.
    rig.history.add_shard(shard, await rig.store.acquire_shard(shard, rig.history.owner))
    assert await rig.history.resolve_run_id(NS, "wf") == run_id
    assert await rig.history.resolve_run_id(NS, "wf") == run_id
    assert rig.reads() - reads == 3


async def test_a_pointer_moved_by_the_shards_next_owner_is_seen_after_a_handover(rig: Rig) -> None:
    first = await rig.start("wf")
    await rig.close("wf", first, C.CompleteWorkflowExecution(result=1))
    shard = rig.history.shard_of(NS, "wf")
    other = HistoryService(rig.store, num_shards=4, owner="other")
    rig.history.drop_shard(shard)
    other.range_ids[shard] = await rig.store.acquire_shard(shard, "other")
    second = await rig.start("wf", other)
    rig.history.add_shard(shard, await rig.store.acquire_shard(shard, rig.history.owner))
    assert await rig.history.resolve_run_id(NS, "wf") == second


async def test_a_failed_start_drops_the_cached_pointer(rig: Rig) -> None:
    first = await rig.start("wf")
    await rig.close("wf", first, C.CompleteWorkflowExecution(result=1))
    rig.faults.commit_then_timeout("write")  # the new run is stored, but the reply is lost
    with pytest.raises(UnavailableError, match="reply was lost"):
        await rig.start("wf")
    second = await rig.stored_current("wf")
    assert second != first
    assert await rig.history.resolve_run_id(NS, "wf") == second


async def test_retention_forgets_the_pointer_of_a_deleted_run(rig: Rig) -> None:
    run_id = await rig.start("wf")
    await rig.close("wf", run_id, C.CompleteWorkflowExecution(result=1))
    await rig.store.delete_execution(NS, "wf", run_id)
    rig.history.forget(NS, "wf", run_id)
    with pytest.raises(WorkflowNotFoundError):
        await rig.history.resolve_run_id(NS, "wf")
