"""The orchestrator, an SDK worker and the plain-JSON demo services on real brokers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from orchestrator.server import DevServer
from sagas.client import Client
from sagas.exceptions import WorkflowFailureError
from sagas.worker import Worker
from services_demo.trip_booking.workflow import TripBooking
from tests.e2e.test_demos import Services, broker_url
from tests.services import (  # noqa: F401  (session fixtures, requested by name)
    kafka_server,
    rabbitmq_server,
    sqs_server,
)


@pytest.fixture(params=["rabbitmq", "kafka", "sqs"])
async def server(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[DevServer]:
    srv = DevServer(store_url=f"sqlite:///{tmp_path / 'h.db'}", port=0, broker_url=broker_url(request, request.param))
    await srv.start()
    yield srv
    await srv.stop()


async def test_trip_sagas_on_a_real_broker(server: DevServer, tmp_path: Path) -> None:
    services = Services("services_demo.trip_booking.services", server.orchestrator.worker_broker_url, tmp_path)
    for kind in ("car", "hotel", "flight"):
        await services.start(kind)
    client = await Client.connect(server.target)
    try:
        async with Worker(client, task_queue="trips", workflows=[TripBooking]):
            ok = await client.execute_workflow(TripBooking.run, {"destination": "Lisbon"}, id="trip-ok", task_queue="trips")
            assert ok["status"] == "booked"
            with pytest.raises(WorkflowFailureError):
                await client.execute_workflow(TripBooking.run, {"destination": "Atlantis"}, id="trip-bad", task_queue="trips")
    finally:
        await client.close()
        await services.stop()
    assert services.ledger("car") == {"trip-ok": "booked", "trip-bad": "cancelled"}
    assert services.ledger("hotel") == {"trip-ok": "booked", "trip-bad": "cancelled"}
    assert services.ledger("flight") == {"trip-ok": "booked", "trip-bad": "cancelled"}
    # a durable broker confirmed every publish: no outbox row is left behind
    for shard in server.orchestrator.history.range_ids:
        assert await server.orchestrator.store.get_transfer_tasks(shard) == []
