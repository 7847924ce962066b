"""Shard assignment (pure) and the membership controller on the memory store."""

from __future__ import annotations

import asyncio
import collections

from orchestrator.history.service import HistoryService
from orchestrator.membership import ShardController, assign_shards, owner_addresses, shards_of
from orchestrator.persistence.base import MemberRecord, ShardInfo
from orchestrator.persistence.memory import MemoryHistoryStore


def test_assignment_is_the_same_for_every_member_in_any_order() -> None:
    a = assign_shards(64, ["m1", "m2", "m3"])
    assert a == assign_shards(64, ["m3", "m1", "m2", "m1"])
    assert set(a) == set(range(64)) and set(a.values()) == {"m1", "m2", "m3"}
    assert all(12 <= n <= 30 for n in collections.Counter(a.values()).values())
    assert assign_shards(4, []) == {}


def test_a_join_or_leave_moves_only_the_shards_concerned() -> None:
    before = assign_shards(256, ["m1", "m2", "m3"])
    joined = assign_shards(256, ["m1", "m2", "m3", "m4"])
    moved = {s for s in before if before[s] != joined[s]}
    assert moved and all(joined[s] == "m4" for s in moved)
    left = assign_shards(256, ["m1", "m3"])
    assert all(left[s] == before[s] for s in before if before[s] != "m2")
    assert shards_of("m2", 256, ["m1", "m2", "m3"]) == {s for s, m in before.items() if m == "m2"}


def test_owner_addresses_only_for_live_leases_of_live_members() -> None:
    shards = [ShardInfo(0, "a", 1, 100.0), ShardInfo(1, "b", 1, 100.0), ShardInfo(2, "a", 1, 5.0), ShardInfo(3, "c", 1, 100.0)]
    members = [MemberRecord("a", "http://a", 100.0), MemberRecord("b", "http://b", 5.0)]
    assert owner_addresses(shards, members, now=10.0) == {0: "http://a"}


async def test_controllers_split_the_shards_hand_over_on_stop_and_fence_the_old_owner() -> None:
    store = MemoryHistoryStore()
    one, two = HistoryService(store, num_shards=8), HistoryService(store, num_shards=8)
    acquired: list[set[int]] = []
    c1 = ShardController(one, member_id="m1", address="http://one", lease_seconds=0.6, on_acquired=acquired.append)
    c2 = ShardController(two, member_id="m2", address="http://two", lease_seconds=0.6)
    await c1.start()
    assert set(one.range_ids) == set(range(8)) and acquired == [set(range(8))]
    await c2.start()  # m1's leases are live: m2 waits for m1 to give its shards away
    assert two.range_ids == {}
    await c1.tick()  # m1 sees m2 and releases what is m2's
    await c2.tick()
    expected = assign_shards(8, ["m1", "m2"])
    assert set(one.range_ids) == {s for s, m in expected.items() if m == "m1"}
    assert set(two.range_ids) == {s for s, m in expected.items() if m == "m2"}
    assert one.owned_shards_only and not one.owns("default", next(
        f"wf-{i}" for i in range(100) if one.shard_of("default", f"wf-{i}") in two.range_ids
    ))
    await c2.stop()  # graceful: released at once, so m1 takes them on its next tick
    await c1.tick()
    assert set(one.range_ids) == set(range(8))
    await c1.stop()
    assert await store.list_members() == []


async def test_a_dead_members_shards_move_after_its_lease() -> None:
    store = MemoryHistoryStore()
    one, two = HistoryService(store, num_shards=4), HistoryService(store, num_shards=4)
    c1 = ShardController(one, member_id="m1", address="http://one", lease_seconds=0.3)
    c2 = ShardController(two, member_id="m2", address="http://two", lease_seconds=0.3)
    await c1.start()
    await c2.start()
    await c1.tick()
    await c2.tick()
    assert one.range_ids and two.range_ids
    lost = dict(two.range_ids)
    # m2 stops heartbeating (killed); m1 takes its shards once lease and membership expire.
    assert c2._task is not None
    c2._task.cancel()
    await asyncio.sleep(0.45)
    await c1.tick()
    assert set(one.range_ids) == set(range(4))
    # m2, paused rather than dead, finds on its next tick that it lost them (range_id moved on).
    await c2.tick()
    assert not set(two.range_ids) & set(lost)
    await c1.stop()
    await c2.stop()
