"""The demos end to end: dev server + plain-JSON services as real subprocesses + an SDK worker.

The order/payment tests run on every broker (``server`` parametrised indirectly: the
built-in one and the real RabbitMQ, Kafka (Tansu) and SQS (moto) of ``tests/services.py``);
trip booking on the real brokers is ``test_brokers_e2e.py``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from orchestrator.server import DevServer
from sagas.client import Client
from sagas.exceptions import ApplicationError, WorkflowFailureError
from sagas.worker import Worker
from services_demo.order_payment.workflow import OrderPayment
from services_demo.trip_booking.workflow import TripBooking
from tests.services import (  # noqa: F401  (session fixtures, requested by name)
    kafka_server,
    rabbitmq_server,
    sqs_server,
)

ALL_BROKERS = ["local", "rabbitmq", "kafka", "sqs"]


def broker_url(request: pytest.FixtureRequest, kind: str) -> str:
    """The server's broker URL for ``kind`` (``local``: the built-in broker).

    The servers' queues are ``sagas.*`` on every broker, so RabbitMQ's and SQS's dead-letter
    prefix, part of each queue's arguments, is the same for every test (``e2e``). So are Kafka's
    consumer groups: a test's services start after the offsets the previous test's services
    committed, instead of re-reading its tasks from the start of the topic.

    Kafka's ``session_timeout_ms=2000``: Tansu answers a JoinGroup only once half the group's
    session timeout has passed, in steps of a second, so 2000 makes every join (each worker start)
    take 1 s instead of 3 s at 6000, and 2 s is still 20 heartbeats (every 100 ms) before a live
    consumer could be taken for dead. ``fetch_max_wait_ms=100``: Tansu holds a fetch that found
    nothing for the whole of it, even when a record arrives meanwhile, so aiokafka's 500 ms added
    0-500 ms to every delivery."""
    if kind == "local":
        return "local://"
    if kind == "rabbitmq":
        return f"{request.getfixturevalue('rabbitmq_server').url}?prefix=e2e&prefetch=16"
    if kind == "kafka":
        server = request.getfixturevalue("kafka_server")
        return (
            f"kafka://{server.bootstrap}?group=e2e&prefix=e2e"
            "&session_timeout_ms=2000&heartbeat_interval_ms=100&fetch_max_wait_ms=100"
        )
    server = request.getfixturevalue("sqs_server")
    return f"sqs://127.0.0.1:{server.port}?endpoint_url={server.endpoint_url}&region=us-east-1&prefix=e2e&visibility_timeout=30"


class Services:
    """Starts demo services as subprocesses and waits until each consumes its queue."""

    def __init__(self, module: str, broker_url: str, workdir: Path) -> None:
        self.module, self.broker_url, self.workdir = module, broker_url, workdir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    async def start(self, name: str, *extra: str) -> None:
        ready = self.workdir / f"{name}-{time.monotonic_ns()}.ready"
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", self.module, name, "--broker-url", self.broker_url,
             "--db", str(self.workdir / f"{name}.db"), "--ready-file", str(ready), *extra],
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert self.procs[name].poll() is None, f"service {name} exited"
            assert time.monotonic() < deadline, f"service {name} not ready"
            await asyncio.sleep(0.02)  # the server runs in this loop: never block it

    async def kill9(self, name: str) -> None:
        self.procs[name].send_signal(signal.SIGKILL)
        await asyncio.to_thread(self.procs[name].wait, 10)

    def ledger(self, name: str) -> dict[str, str]:
        db = sqlite3.connect(self.workdir / f"{name}.db")
        try:
            return {k: s for k, s in db.execute("SELECT key, status FROM bookings")}
        finally:
            db.close()

    def rows(self, name: str, key: str) -> int:
        db = sqlite3.connect(self.workdir / f"{name}.db")
        try:
            return int(db.execute("SELECT COUNT(*) FROM bookings WHERE key = ?", (key,)).fetchone()[0])
        finally:
            db.close()

    async def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
        for p in self.procs.values():
            try:
                await asyncio.to_thread(p.wait, 10)
            except subprocess.TimeoutExpired:
                p.kill()


@pytest.fixture
async def server(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[DevServer]:
    url = broker_url(request, getattr(request, "param", "local"))
    srv = DevServer(store_url=f"sqlite:///{tmp_path / 'history.db'}", port=0, visibility_timeout=2.0, broker_url=url)
    await srv.start()
    yield srv
    await srv.stop()


@pytest.fixture
async def trip_services(server: DevServer, tmp_path: Path) -> AsyncIterator[Services]:
    services = Services("services_demo.trip_booking.services", f"local://127.0.0.1:{server.port}", tmp_path)
    yield services
    await services.stop()


@pytest.fixture
async def order_services(server: DevServer, tmp_path: Path) -> AsyncIterator[Services]:
    services = Services("services_demo.order_payment.services", server.orchestrator.worker_broker_url, tmp_path)
    for name in ("inventory", "payments", "shipping"):
        await services.start(name)
    yield services
    await services.stop()


@pytest.fixture
async def client(server: DevServer) -> AsyncIterator[Client]:
    c = await Client.connect(server.target)
    yield c
    await c.close()


def root_cause(exc: BaseException) -> BaseException:
    while getattr(exc, "cause", None) is not None:
        exc = exc.cause  # type: ignore[attr-defined]
    return exc


async def test_trip_happy_path_and_compensation(trip_services: Services, client: Client) -> None:
    for kind in ("car", "hotel", "flight"):
        await trip_services.start(kind)
    async with Worker(client, task_queue="trips", workflows=[TripBooking]):
        ok = await client.execute_workflow(TripBooking.run, {"destination": "Lisbon"}, id="trip-ok", task_queue="trips")
        assert ok["status"] == "booked"
        with pytest.raises(WorkflowFailureError) as failed:
            await client.execute_workflow(TripBooking.run, {"destination": "Atlantis"}, id="trip-bad", task_queue="trips")
    cause = root_cause(failed.value)
    assert isinstance(cause, ApplicationError) and cause.type == "NoAvailability"
    assert trip_services.ledger("car") == {"trip-ok": "booked", "trip-bad": "cancelled"}
    assert trip_services.ledger("hotel") == {"trip-ok": "booked", "trip-bad": "cancelled"}
    # the flight's undo is registered before the step, so the failed booking leaves a tombstone
    assert trip_services.ledger("flight") == {"trip-ok": "booked", "trip-bad": "cancelled"}
    # compensations ran in reverse order: hotel before car
    history = await client.get_workflow_handle("trip-bad").fetch_history()
    scheduled = [e.activity_type for e in history.events if e.event_type.value == "ActivityTaskScheduled"]
    assert scheduled == ["book_car", "book_hotel", "book_flight", "cancel_flight", "cancel_hotel", "cancel_car"]


async def test_service_killed_mid_booking_books_exactly_once(trip_services: Services, client: Client, server: DevServer) -> None:
    await trip_services.start("car")
    await trip_services.start("flight")
    await trip_services.start("hotel", "--delay", "30")  # books, then hangs before replying
    broker = server.orchestrator.broker
    async with Worker(client, task_queue="trips", workflows=[TripBooking]):
        handle = await client.start_workflow(TripBooking.run, {"destination": "Rome"}, id="trip-crash", task_queue="trips")
        deadline = time.monotonic() + 30
        while trip_services.rows("hotel", "trip-crash") == 0:
            assert time.monotonic() < deadline, "hotel never booked"
            await asyncio.sleep(0.05)
        await trip_services.kill9("hotel")  # booked in its ledger, reply never sent
        await trip_services.start("hotel")  # restarted, fast this time
        result = await asyncio.wait_for(handle.result(), 60)
    assert result["status"] == "booked"
    assert trip_services.rows("hotel", "trip-crash") == 1 and trip_services.ledger("hotel")["trip-crash"] == "booked"
    assert trip_services.ledger("car")["trip-crash"] == "booked" and trip_services.ledger("flight")["trip-crash"] == "booked"
    assert not (await broker.dead_letters())


async def test_poison_message_goes_to_dlq_and_nothing_else_is_affected(trip_services: Services, client: Client, server: DevServer) -> None:
    for kind in ("car", "hotel", "flight"):
        await trip_services.start(kind)
    async with httpx.AsyncClient(base_url=f"http://{server.target}") as http:
        r = await http.post("/api/v1/queues/sagas.default.cars.act/publish", json={"body": "this is not json"})
        assert r.status_code == 200
        async with Worker(client, task_queue="trips", workflows=[TripBooking]):
            ok = await client.execute_workflow(TripBooking.run, {"destination": "Oslo"}, id="trip-after-poison", task_queue="trips")
        assert ok["status"] == "booked"
        deadline = time.monotonic() + 10
        while not (dlq := (await http.get("/api/v1/dlq")).json()["dead_letters"]):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
    assert dlq[0]["queue"] == "sagas.default.cars.act" and dlq[0]["reason"].startswith("malformed_json")
    assert dlq[0]["body"] == "this is not json"


async def _order(client: Client, wid: str, order: dict[str, Any]) -> Any:
    return await client.start_workflow(OrderPayment.run, order, id=wid, task_queue="orders")


@pytest.mark.parametrize("server", ALL_BROKERS, indirect=True)
async def test_order_approved_is_shipped(order_services: Services, client: Client) -> None:
    async with Worker(client, task_queue="orders", workflows=[OrderPayment]):
        handle = await _order(client, "order-approved", {"amount": 5000, "card": "4242", "approval_timeout_s": 60})
        while await handle.query(OrderPayment.status) != "awaiting approval":
            await asyncio.sleep(0.05)
        await handle.signal(OrderPayment.approve, True)
        result = await handle.result()
    assert result["status"] == "shipped"
    assert order_services.ledger("shipping") == {"order-approved": "booked"}
    assert order_services.ledger("payments") == {"order-approved": "booked"}


@pytest.mark.parametrize("server", ALL_BROKERS, indirect=True)
async def test_order_without_approval_in_time_is_refunded_and_released(order_services: Services, client: Client) -> None:
    async with Worker(client, task_queue="orders", workflows=[OrderPayment]):
        handle = await _order(client, "order-timeout", {"amount": 5000, "card": "4242", "approval_timeout_s": 1})
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
    assert getattr(root_cause(failed.value), "type", None) == "ApprovalTimeout"
    assert order_services.ledger("payments") == {"order-timeout": "cancelled"}
    assert order_services.ledger("inventory") == {"order-timeout": "cancelled"}
    assert order_services.ledger("shipping") == {}


@pytest.mark.parametrize("server", ALL_BROKERS, indirect=True)
async def test_declined_payment_releases_inventory(order_services: Services, client: Client) -> None:
    async with Worker(client, task_queue="orders", workflows=[OrderPayment]):
        handle = await _order(client, "order-declined", {"amount": 50, "card": "4000000000000000"})
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
    assert getattr(root_cause(failed.value), "type", None) == "PaymentDeclined"
    assert order_services.ledger("inventory") == {"order-declined": "cancelled"}
    assert order_services.ledger("payments") == {}
