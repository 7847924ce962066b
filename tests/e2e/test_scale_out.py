"""Three orchestrator processes share the history shards on MongoDB (the stand-in) and RabbitMQ.

Trip sagas run through the demo services (plain JSON over RabbitMQ, replies consumed by whichever
process gets them and forwarded to the shard's owner) and an SDK worker talking to one frontend
(requests for other shards are forwarded). One process is SIGKILLed mid-run and a new one joins:
every saga finishes or compensates, the dead process's shards are re-owned within the lease
timeout (measured and printed), and every history is contiguous with no duplicate event.
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from orchestrator.membership import assign_shards
from orchestrator.persistence.base import HistoryStore, open_store, shard_for
from sagas import workflow
from sagas.client import Client
from sagas.exceptions import WorkflowFailureError
from sagas.worker import Worker
from services_demo.trip_booking.workflow import TripBooking
from tests.chaos.harness import retry_rpc
from tests.contract.conftest import mongo_server_url, stop_mongo_server
from tests.e2e.conftest import free_port
from tests.e2e.test_demos import Services
from tests.services import rabbitmq_server  # noqa: F401  (session fixture, requested by name)

LEASE = 3.0
SHARDS = 8
TRIPS = 300

CONFIG = """
services: [frontend, history, matching, timers]
persistence:
  numHistoryShards: {shards}
  defaultStore: main
  visibilityStore: main
  datastores:
    main:
      mongodb: {{url: "{mongo}"}}
broker: {{url: "{broker}"}}
frontend: {{host: 127.0.0.1, port: 7233}}
cluster: {{leaseSeconds: {lease}}}
log: {{level: warning}}
"""


class ClusterProcess:
    """``sagas server start --config`` as a subprocess; the port comes from the environment."""

    def __init__(self, name: str, config: Path, workdir: Path) -> None:
        self.name, self.config, self.workdir = name, config, workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self, timeout: float = 60.0) -> None:
        ready = self.workdir / f"{self.name}.ready"
        env = {
            **os.environ, "PYTHONUNBUFFERED": "1",
            "SAGAS_FRONTEND__PORT": str(self.port), "SAGAS_CLUSTER__MEMBER_ID": self.name,
        }
        with open(self.workdir / f"{self.name}.log", "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sagas.cli.server", "start", "--config", str(self.config),
                 "--ready-file", str(ready)],
                stdout=log, stderr=subprocess.STDOUT, env=env,
            )
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {(self.workdir / f'{self.name}.log').read_text()[-3000:]}")
            assert time.monotonic() < deadline, f"{self.name} not ready"
            await asyncio.sleep(0.05)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


async def _owners(store: HistoryStore) -> dict[int, str]:
    now = time.time()
    live = {m.member_id for m in await store.list_members()}
    return {s.shard_id: s.owner for s in await store.list_shards() if s.lease_until > now and s.owner in live}


async def _wait_all_owned(store: HistoryStore, *, without: str, timeout: float, since: float | None = None) -> float:
    start = time.monotonic() if since is None else since
    while time.monotonic() - start < timeout:
        owners = await _owners(store)
        if len(owners) == SHARDS and without not in owners.values():
            return time.monotonic() - start
        await asyncio.sleep(0.05)
    raise AssertionError(f"shards not re-owned within {timeout} s: {await _owners(store)}")


async def _wait_settled(store: HistoryStore, members: list[str], *, timeout: float) -> float:
    """Until every shard is owned by the member the assignment gives it."""
    start, expected = time.monotonic(), assign_shards(SHARDS, members)
    while time.monotonic() - start < timeout:
        if await _owners(store) == expected:
            return time.monotonic() - start
        await asyncio.sleep(0.05)
    raise AssertionError(f"shards not on the assignment {expected} within {timeout} s: {await _owners(store)}")


@pytest.fixture(scope="module", autouse=True)
def _stop_mongo() -> object:
    yield None
    stop_mongo_server()


@pytest.mark.timeout(900)
async def test_three_processes_share_shards_and_survive_a_sigkill(
    rabbitmq_server: object, tmp_path: Path  # noqa: F811
) -> None:
    mongo = mongo_server_url(f"scale{uuid.uuid4().hex[:8]}")
    broker = f"{rabbitmq_server.url}?prefix=e2e&prefetch=16"  # type: ignore[attr-defined]
    config = tmp_path / "cluster.yaml"
    config.write_text(CONFIG.format(shards=SHARDS, mongo=mongo, broker=broker, lease=LEASE))
    procs = [ClusterProcess(f"orc-{i}", config, tmp_path) for i in range(1, 4)]
    store = await open_store(mongo)
    services = Services("services_demo.trip_booking.services", broker, tmp_path)
    client: Client | None = None
    try:
        await asyncio.gather(*(p.start() for p in procs))
        settled = await _wait_settled(store, [p.name for p in procs], timeout=4 * LEASE)
        print(f"\nthree processes joined; shards settled on the assignment {settled:.2f} s after the last start")
        spread = collections.Counter((await _owners(store)).values())
        print(f"shards per process before the kill: {dict(spread)}")

        for kind in ("car", "hotel", "flight"):
            await services.start(kind)
        client = await Client.connect(procs[0].target)
        async with Worker(client, task_queue="trips", workflows=[TripBooking]):
            ids = [f"trip-{i}" for i in range(TRIPS)]
            fails = {wid for i, wid in enumerate(ids) if i % 5 == 0}
            handles: list[Any] = []

            async def start_all() -> None:
                for wid in ids:  # a start the dead process's shard refuses is retried (same request id)
                    handles.append(await retry_rpc(lambda wid=wid: client.start_workflow(  # type: ignore[misc]
                        TripBooking.run, {"destination": "Atlantis" if wid in fails else "Lisbon"}, id=wid,
                        task_queue="trips", request_id=f"start-{wid}")))  # fmt: skip

            starting = asyncio.create_task(start_all())
            while len(handles) < TRIPS // 3 and not starting.done():
                await asyncio.sleep(0.05)  # polling the load's progress: kill a third of the way in
            victim = procs[1]
            victim.kill9()
            killed_at = time.monotonic()
            joiner = ClusterProcess("orc-4", config, tmp_path)
            procs.append(joiner)
            joining = asyncio.create_task(joiner.start())  # joins while the survivors take over
            # The lease plus one renewal period (about 3-4 s). When the kill lands inside an open
            # MongoDB transaction of the victim, that transaction keeps its write lock on the shard's
            # fence documents until the server aborts it (transactionLifetimeLimitSeconds, 60 s by
            # default); the new owner kills the victim's server sessions (killSessions) so it need
            # not wait for that. The bound is far below 60 s: a takeover that waits fails here.
            reowned = await _wait_all_owned(store, without=victim.name, timeout=5 * LEASE, since=killed_at)
            print(f"shards of the SIGKILLed process re-owned {reowned:.2f} s after the kill (lease {LEASE} s)")
            await joining
            await starting
            print(f"{len(handles)} sagas started; the kill came after {TRIPS // 3}")

            outcomes: dict[str, str] = {}
            for wid, handle in zip(ids, handles, strict=True):
                try:
                    result = await asyncio.wait_for(handle.result(), 300)
                    outcomes[wid] = result["status"]
                except WorkflowFailureError:
                    outcomes[wid] = "compensated"
            print(f"all {TRIPS} sagas closed {time.monotonic() - killed_at:.1f} s after the kill")
        await _wait_settled(store, [p.name for p in procs if p is not victim], timeout=4 * LEASE)
        spread = collections.Counter((await _owners(store)).values())
        print(f"shards per process after the join: {dict(spread)}")
        assert victim.name not in spread

        assert {w for w, o in outcomes.items() if o == "compensated"} == fails
        assert all(outcomes[w] == "booked" for w in ids if w not in fails)
        car, hotel, flight = services.ledger("car"), services.ledger("hotel"), services.ledger("flight")
        for wid in ids:
            if wid in fails:
                assert car.get(wid) == hotel.get(wid) == flight.get(wid) == "cancelled", wid  # flight: a tombstone
            else:
                assert car[wid] == hotel[wid] == flight[wid] == "booked", wid
            current = await store.get_current_run("default", wid)
            assert current is not None
            events = await store.read_events("default", wid, current.run_id)
            assert [e.event_id for e in events] == list(range(1, len(events) + 1)), wid
            kinds = collections.Counter(type(e).__name__ for e in events)
            assert kinds["WorkflowExecutionStarted"] == 1 and kinds["ActivityTaskCompleted"] <= 6, (wid, kinds)
    finally:
        if client is not None:
            await client.close()
        await services.stop()
        for p in procs:
            p.stop()
        await store.aclose()


# -- workflows that reach across shards ------------------------------------------------------------


@workflow.defn
class CrossChild:
    @workflow.run
    async def run(self, n: int) -> int:
        return n * 10


@workflow.defn
class CrossForever:
    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: False)


@workflow.defn
class CrossWaiter:
    def __init__(self) -> None:
        self.got: str | None = None

    @workflow.signal
    def poke(self, value: str) -> None:
        self.got = value

    @workflow.run
    async def run(self) -> str:
        await workflow.wait_condition(lambda: self.got is not None)
        assert self.got is not None
        return self.got


@workflow.defn
class CrossParent:
    @workflow.run
    async def run(self, children: list[str], forever: str, waiter: str, doomed: str) -> int:
        await workflow.start_child_workflow(CrossForever.run, id=forever,
                                            parent_close_policy=workflow.ParentClosePolicy.TERMINATE)  # fmt: skip
        await workflow.get_external_workflow_handle(waiter).signal(CrossWaiter.poke, "from the parent")
        await workflow.get_external_workflow_handle(doomed).cancel()
        results = [await workflow.execute_child_workflow(CrossChild.run, i, id=c) for i, c in enumerate(children)]
        return sum(results)


def _ids_on(owner: str, owners: dict[int, str], prefix: str, count: int) -> list[str]:
    out, i = [], 0
    while len(out) < count:
        wid = f"{prefix}-{i}"
        if owners[shard_for("default", wid, SHARDS)] == owner:
            out.append(wid)
        i += 1
    return out


@pytest.mark.timeout(300)
async def test_children_signals_cancels_and_closes_cross_processes(
    rabbitmq_server: object, tmp_path: Path  # noqa: F811
) -> None:
    """A parent on one process starts children, signals and cancels workflows, all on shards another
    process owns, and its close terminates a child there: each is sent to the owner at once
    (``orchestrator/matching/cross_shard.py``), not left in the outbox."""
    mongo = mongo_server_url(f"cross{uuid.uuid4().hex[:8]}")
    broker = f"{rabbitmq_server.url}?prefix=e2e"  # type: ignore[attr-defined]
    config = tmp_path / "cluster.yaml"
    config.write_text(CONFIG.format(shards=SHARDS, mongo=mongo, broker=broker, lease=LEASE))
    procs = [ClusterProcess(f"cx-{i}", config, tmp_path) for i in range(1, 3)]
    store = await open_store(mongo)
    client: Client | None = None
    try:
        await asyncio.gather(*(p.start() for p in procs))
        await _wait_settled(store, [p.name for p in procs], timeout=4 * LEASE)
        owners = await _owners(store)
        [parent_id] = _ids_on("cx-1", owners, "parent", 1)
        children = _ids_on("cx-2", owners, "child", 3)
        forever, waiter, doomed = (_ids_on("cx-2", owners, name, 1)[0] for name in ("forever", "waiter", "doomed"))
        client = await Client.connect(procs[0].target)
        async with Worker(client, task_queue="cross", workflows=[CrossParent, CrossChild, CrossForever, CrossWaiter]):
            waiting = await client.start_workflow(CrossWaiter.run, id=waiter, task_queue="cross")
            doomed_handle = await client.start_workflow(CrossWaiter.run, id=doomed, task_queue="cross")
            began = time.monotonic()
            parent = await client.start_workflow(
                CrossParent.run, args=[children, forever, waiter, doomed], id=parent_id, task_queue="cross"
            )
            # The outbox sweep runs every 5 s and never helps here (no process owns both shards):
            # without forwarding, the first child start would wait forever.
            assert await asyncio.wait_for(parent.result(), 30) == 0 + 10 + 20
            took = time.monotonic() - began
            print(f"\nparent with 3 cross-process children, a signal and a cancel closed in {took:.2f} s")
            assert await asyncio.wait_for(waiting.result(), 30) == "from the parent"
            with pytest.raises(WorkflowFailureError):  # cancelled from the other shard
                await asyncio.wait_for(doomed_handle.result(), 30)

            async def terminated() -> str:
                while True:
                    status = (await client.get_workflow_handle(forever).describe()).status.name
                    if status != "RUNNING":
                        return status
                    await asyncio.sleep(0.1)  # polling the child's status

            assert await asyncio.wait_for(terminated(), 30) == "TERMINATED"  # the parent's close policy
        for wid in children:
            current = await store.get_current_run("default", wid)
            assert current is not None and current.status == "Completed", wid
            events = await store.read_events("default", wid, current.run_id)
            started = events[0]
            assert started.parent is not None and started.parent.workflow_id == parent_id  # type: ignore[attr-defined]
    finally:
        if client is not None:
            await client.close()
        for p in procs:
            p.stop()
        await store.aclose()
