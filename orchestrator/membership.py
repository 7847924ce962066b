"""Shard ownership across orchestrator processes: membership, assignment, leases and routing.

Many orchestrator processes share the history shards of one store (DESIGN §2). Nothing home-made
does distribution: the store is the only coordinator.

* **Membership.** Every history process writes a heartbeat row (``heartbeat_member``) with a TTL
  of one lease; a process whose row expired is gone.
* **Assignment.** Every live member computes the same assignment from the same sorted member
  ids: rendezvous hashing (:func:`assign_shards`), so a join or a leave moves only the shards
  of the members concerned.
* **Leases.** A member *owns* a shard when ``acquire_shard(shard, member_id, lease_seconds)``
  gave it a ``range_id``: that only succeeds once the previous owner's lease expired or was
  released. The owner renews its leases every heartbeat; it releases the shards no longer
  assigned to it (a newcomer) and, on a graceful shutdown, all of them. Every history write is
  still fenced by the ``range_id`` (a paused old owner can never write after the new owner
  acquired), so correctness never depends on clocks: a lease only decides *when* a takeover
  may start.
* **Routing.** :class:`ShardRouter` knows, from the shard and member rows, the frontend address
  of each shard's owner, and forwards a request there (``docs/operations-scale-out.md``).

Usage (the :class:`~orchestrator.server.Orchestrator` does this when ``cluster`` is configured)::

    controller = ShardController(history, member_id="orc-1", address="http://10.0.0.5:7233",
                                 lease_seconds=10)
    await controller.start()      # joins, takes its shards
    ...
    await controller.stop()       # releases its shards, leaves
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping

import httpx

from orchestrator.history.service import HistoryService
from orchestrator.metrics import METRICS
from orchestrator.persistence.base import MemberRecord, ShardInfo, ShardLeaseHeldError, StoreError

log = logging.getLogger("sagas.membership")

FORWARDED_HEADER = "x-sagas-forwarded"
"""Set on a request one frontend forwarded to another: it is never forwarded a second time."""


def _weight(shard_id: int, member_id: str) -> int:
    digest = hashlib.blake2b(f"{shard_id}/{member_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def assign_shards(num_shards: int, member_ids: Iterable[str]) -> dict[int, str]:
    """``shard -> member id`` by rendezvous (highest random weight) hashing.

    Pure and deterministic: every member computes the same map from the same member ids, in any
    order. Adding or removing a member moves only the shards it gains or loses.

    >>> assign_shards(4, ["a"])
    {0: 'a', 1: 'a', 2: 'a', 3: 'a'}
    """
    members = sorted(set(member_ids))
    if not members:
        return {}
    return {shard: max(members, key=lambda m: (_weight(shard, m), m)) for shard in range(num_shards)}


def shards_of(member_id: str, num_shards: int, member_ids: Iterable[str]) -> set[int]:
    """The shards :func:`assign_shards` gives ``member_id``."""
    return {s for s, m in assign_shards(num_shards, member_ids).items() if m == member_id}


def owner_addresses(
    shards: Iterable[ShardInfo], members: Iterable[MemberRecord], now: float
) -> dict[int, str]:
    """``shard -> frontend address`` of each shard held by a live lease of a live member."""
    address = {m.member_id: m.address for m in members if m.expires_at > now}
    return {
        s.shard_id: address[s.owner]
        for s in shards
        if s.owner in address and s.lease_until > now
    }


class ShardRouter:
    """Where each shard's owner listens, and forwarding of a request to it over HTTP."""

    def __init__(self, history: HistoryService, *, timeout: float = 65.0) -> None:
        self.history = history
        self.addresses: dict[int, str] = {}
        self._client = httpx.AsyncClient(timeout=timeout)
        self._refreshed = 0.0

    async def refresh(self) -> None:
        store = self.history.store
        shards, members = await store.list_shards(), await store.list_members()
        self._refreshed = time.time()
        self.addresses = owner_addresses(shards, members, self._refreshed)

    async def owner_address(self, shard_id: int) -> str | None:
        """The owner's frontend address (refreshed once on a miss), or None when no live owner is known."""
        address = self.addresses.get(shard_id)
        if address is None and time.time() - self._refreshed > 0.2:
            await self.refresh()
            address = self.addresses.get(shard_id)
        return address

    async def forward(
        self, shard_id: int, method: str, path: str, *, body: bytes = b"", headers: Mapping[str, str] | None = None
    ) -> httpx.Response | None:
        """Send the request to the shard's owner; None when no owner is known or it cannot be reached."""
        address = await self.owner_address(shard_id)
        if address is None:
            return None
        sent = {k: v for k, v in (headers or {}).items() if k.lower() not in ("host", "content-length")}
        sent[FORWARDED_HEADER] = "1"
        try:
            response = await self._client.request(method, address.rstrip("/") + path, content=body, headers=sent)
        except httpx.HTTPError as exc:
            log.warning("owner of shard %d at %s unreachable: %s", shard_id, address, exc)
            self.addresses.pop(shard_id, None)
            return None
        METRICS.requests_forwarded.inc()
        return response

    async def aclose(self) -> None:
        await self._client.aclose()


class ShardController:
    """Keeps this process's membership row alive and its shard leases in line with the assignment.

    ``on_acquired`` is called with the shards just acquired (start their queue processing from the
    store: outbox and timer rows); ownership lost or given away is dropped from the
    :class:`HistoryService` (with its cached states) before anything else happens.
    """

    def __init__(
        self,
        history: HistoryService,
        *,
        member_id: str,
        address: str,
        lease_seconds: float = 10.0,
        heartbeat_interval: float | None = None,
        router: ShardRouter | None = None,
        on_acquired: Callable[[set[int]], None] | None = None,
    ) -> None:
        self.history = history
        self.store = history.store
        self.member_id = member_id
        self.address = address
        self.lease_seconds = lease_seconds
        self.heartbeat_interval = heartbeat_interval or lease_seconds / 3
        self.router = router
        self.on_acquired = on_acquired
        self._task: asyncio.Task[None] | None = None
        history.owner = member_id
        history.owned_shards_only = True

    async def start(self) -> None:
        """Join the cluster and take the shards assigned to this member that are free now."""
        await self.tick()
        self._task = asyncio.create_task(self._run(), name="shard-controller")

    async def stop(self) -> None:
        """Graceful hand-off: release every shard and leave, so the others take over at once."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for shard, range_id in list(self.history.range_ids.items()):
            self.history.drop_shard(shard)
            try:
                await self.store.release_shard(shard, self.member_id, range_id)
            except StoreError as exc:
                log.warning("could not release shard %d (its lease will expire): %s", shard, exc)
        try:
            await self.store.remove_member(self.member_id)
        except StoreError as exc:
            log.warning("could not remove membership row %s (it will expire): %s", self.member_id, exc)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            try:
                await self.tick()
            except Exception:  # noqa: BLE001 - store trouble: the next tick retries; fencing keeps writes safe
                log.exception("membership tick failed")

    async def tick(self) -> None:
        """One round: heartbeat, renew or give away owned shards, acquire newly assigned free ones."""
        await self.store.heartbeat_member(self.member_id, self.address, self.lease_seconds)
        members = await self.store.list_members()
        ids = {m.member_id for m in members} | {self.member_id}
        mine = shards_of(self.member_id, self.history.num_shards, ids)
        for shard, range_id in list(self.history.range_ids.items()):
            if shard not in mine:
                self.history.drop_shard(shard)  # stop writing first, then let the new owner in
                await self.store.release_shard(shard, self.member_id, range_id)
                log.info("released shard %d (assigned to another member)", shard)
            elif not await self.store.renew_shard(shard, self.member_id, range_id, self.lease_seconds):
                self.history.drop_shard(shard)
                log.warning("lost shard %d (acquired by another member)", shard)
        acquired: set[int] = set()
        for shard in sorted(mine - set(self.history.range_ids)):
            try:
                range_id = await self.store.acquire_shard(shard, self.member_id, self.lease_seconds)
            except ShardLeaseHeldError:
                continue  # the previous owner's lease is live: try again next tick
            self.history.add_shard(shard, range_id)
            acquired.add(shard)
        if acquired:
            log.info("acquired shards %s", sorted(acquired))
            if self.on_acquired is not None:
                self.on_acquired(acquired)
        METRICS.shards_owned.set(len(self.history.range_ids))
        if self.router is not None:
            await self.router.refresh()
