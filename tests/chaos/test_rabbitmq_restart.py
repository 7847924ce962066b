"""RabbitMQ stopped and started in the middle of 200 running sagas: all finish, none applied twice.

The orchestrator (``DevServer`` on a SQLite file) and an SDK worker run in this
process, the three trip-booking services are subprocesses; all of them speak to
one real RabbitMQ node (the ``rabbitmq_server`` session fixture, a node of its
own). While the sagas run, the node is stopped (``rabbitmqctl stop``: every
connection drops, the queues go away with the node and come back from disk) and
started again. The robust connections reconnect and restore their channels,
queues and consumers; publishes that were not confirmed are retried (the outbox
sweep on the server, a requeued task in a service), so every saga completes or
compensates, and the invariant checker (``tests/chaos/invariants.py``) proves that
no booking was applied twice and every history is well formed.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from orchestrator.server import DevServer
from sagas.client import Client
from sagas.common import WorkflowIDReusePolicy
from sagas.worker import Worker
from services_demo.trip_booking.services import KINDS
from services_demo.trip_booking.workflow import TripBooking
from tests.chaos.harness import Timeline, retry_rpc, saga_specs
from tests.chaos.invariants import (
    assert_no_violations,
    check,
    describe_unsettled,
    snapshot,
    wait_settled,
)
from tests.e2e.test_demos import Services
from tests.services import RabbitMQServer, rabbitmq_server  # noqa: F401  (session fixture, requested by name)

SAGAS = int(os.environ.get("SAGAS_RESTART_SAGAS", "200"))
"""200 as issue 7 asks; the variable makes a quicker local run possible."""
SEED = 4242
SETTLE_TIMEOUT = 120.0

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(300)]


async def test_rabbitmq_restart_in_the_middle_of_200_sagas(
    rabbitmq_server: RabbitMQServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    broker_url = f"{rabbitmq_server.url}?prefix=restart{uuid.uuid4().hex[:6]}&prefetch=16&reconnect_interval=1"
    timeline = Timeline()
    server = DevServer(store_url=f"sqlite:///{tmp_path / 'h.db'}", port=0, broker_url=broker_url)
    await server.start()
    services = Services("services_demo.trip_booking.services", server.orchestrator.worker_broker_url, tmp_path)
    client: Client | None = None
    node_down = False
    try:
        await asyncio.gather(*(services.start(kind) for kind in KINDS))
        client = await Client.connect(server.target)
        timeline.note("server, services and worker ready")
        specs = saga_specs(SAGAS, SEED)
        async with Worker(client, task_queue="trips", workflows=[TripBooking]):
            sem = asyncio.Semaphore(16)

            async def start(wid: str, destination: str) -> None:
                assert client is not None
                async with sem:
                    await retry_rpc(
                        lambda: client.start_workflow(
                            TripBooking.run,
                            {"destination": destination},
                            id=wid,
                            task_queue="trips",
                            task_timeout=timedelta(seconds=5),
                            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                            request_id=f"restart-{wid}",
                        )
                    )

            await asyncio.gather(*(start(s.workflow_id, s.destination) for s in specs))
            timeline.note(f"all {SAGAS} sagas started")

            # Stop the node while the sagas are mid-flight (some closed, most still running).
            deadline = time.monotonic() + 30
            while True:
                statuses = await wait_settled(server_url(server), [s.workflow_id for s in specs], timeout=0)
                closed = sum(v not in ("Running", "missing") for v in statuses.values())
                if closed >= SAGAS // 10 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
            assert closed < SAGAS, "every saga finished before the broker was stopped: the test proves nothing"
            timeline.note(f"stopping RabbitMQ ({closed} of {SAGAS} sagas closed)")
            node_down = True
            await asyncio.to_thread(rabbitmq_server.stop)
            timeline.note("RabbitMQ stopped")
            await asyncio.sleep(2.0)  # the outage itself: everybody's publishes and receives fail
            timeline.note("starting RabbitMQ")
            await asyncio.to_thread(rabbitmq_server.start)
            node_down = False
            timeline.note("RabbitMQ started")

            statuses = await wait_settled(server_url(server), [s.workflow_id for s in specs], timeout=SETTLE_TIMEOUT)
            counts = {k: sum(v == k for v in statuses.values()) for k in set(statuses.values())}
            timeline.note(f"settled: {counts}")

        consumer = server.orchestrator.completions._consumer
        assert consumer is not None and not consumer.done(), "the server's completions consumer died"
        snap = await snapshot(server_url(server), specs, tmp_path)
        violations = await check(snap, specs, expect_poison=False)
        unsettled = await describe_unsettled(server_url(server), snap)
        if unsettled:  # the first unsettled saga in full (its pending activity's last failure)
            async with httpx.AsyncClient(base_url=server_url(server)) as http:
                wid = unsettled.split("\n")[1].split(":")[0].strip()
                unsettled += "\n" + (await http.get(f"/api/v1/namespaces/default/workflows/{wid}")).text[:3000]
        print(timeline)
        assert_no_violations(violations, context=f"{timeline}\n{unsettled}")
        # A third go to the unserved destination and compensate (checked above, saga by saga); the
        # rest are booked, unless a step gave up after its retries (then it compensated, also checked).
        served = SAGAS - sum(s.must_fail for s in specs)
        assert counts.get("Completed", 0) >= served * 9 // 10, counts
        # RabbitMQ is durable: every outbox row was deleted after a confirmed publish, including the
        # rows whose publish failed while the node was down (re-published by the sweep).
        for shard in server.orchestrator.history.range_ids:
            assert await server.orchestrator.store.get_transfer_tasks(shard) == [], f"outbox rows left in shard {shard}"
    finally:
        if node_down:  # the session's node must outlive this test
            await asyncio.to_thread(rabbitmq_server.start)
        if client is not None:
            await client.close()
        await services.stop()
        await server.stop()


def server_url(server: DevServer) -> str:
    return f"http://{server.target}"
