"""The demos end to end on the MongoDB history store (issue 6: "the demos pass with --store mongodb://").

The dev server's store is the MongoDB the contract suite uses (``SAGAS_TEST_MONGODB_URL``
or the SecantusDB stand-in, see ``tests/contract/conftest.py``), one database per test;
the services are real subprocesses on the built-in broker, the SDK worker runs here.

* the trip-booking saga: booked, and compensated in reverse order;
* the order/payment approval flow: a signal approves, the query sees the wait; a missed
  approval refunds and releases;
* "commit succeeded but the client saw a timeout" on MongoDB: the next writes commit and then
  raise ``AmbiguousWriteError`` (``FaultInjectingHistoryStore`` under the server's retrying
  layer, via ``OrchestratorConfig.store_wrapper``); the server must resolve each by re-reading:
  no event written twice, no task lost (both sagas finish, each booking once).
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

pytest.importorskip("pymongo")

from orchestrator.persistence._faults import FaultInjectingHistoryStore  # noqa: E402
from orchestrator.persistence.base import HistoryStore, open_store  # noqa: E402
from orchestrator.server import DevServer  # noqa: E402
from sagas.client import Client  # noqa: E402
from sagas.exceptions import ApplicationError, WorkflowFailureError  # noqa: E402
from sagas.worker import Worker  # noqa: E402
from services_demo.order_payment.workflow import OrderPayment  # noqa: E402
from services_demo.trip_booking.workflow import TripBooking  # noqa: E402
from tests.contract.conftest import mongo_server_url, stop_mongo_server  # noqa: E402
from tests.e2e.test_demos import Services, root_cause  # noqa: E402

pytestmark = pytest.mark.timeout(180)

AMBIGUOUS = 12
"""Writes that commit and then time out in the fault test (more than one saga's worth of steps)."""
ACTIVITY_CLOSES = ("ActivityTaskCompleted", "ActivityTaskFailed", "ActivityTaskTimedOut", "ActivityTaskCanceled")


@pytest.fixture(scope="module", autouse=True)
def _stop_the_stand_in_afterwards() -> Iterator[None]:
    yield
    stop_mongo_server()


@pytest.fixture
def store_url() -> str:
    return mongo_server_url(f"sagas_demos_{uuid.uuid4().hex[:12]}")


class Faults:
    """``OrchestratorConfig.store_wrapper`` that keeps the fault injector it built (quiet until armed)."""

    def __init__(self) -> None:
        self.store: FaultInjectingHistoryStore | None = None

    def __call__(self, raw: HistoryStore) -> HistoryStore:
        self.store = FaultInjectingHistoryStore(raw, seed=6)
        return self.store


@pytest.fixture
def faults() -> Faults:
    return Faults()


@pytest.fixture
async def server(store_url: str, faults: Faults) -> AsyncIterator[DevServer]:
    srv = DevServer(store_url=store_url, port=0, visibility_timeout=2.0, store_wrapper=faults)
    await srv.start()
    yield srv
    await srv.stop()


@pytest.fixture
async def client(server: DevServer) -> AsyncIterator[Client]:
    c = await Client.connect(server.target)
    yield c
    await c.close()


@pytest.fixture
async def trip_services(server: DevServer, tmp_path: Path) -> AsyncIterator[Services]:
    services = Services("services_demo.trip_booking.services", f"local://127.0.0.1:{server.port}", tmp_path)
    await asyncio.gather(*(services.start(kind) for kind in ("car", "hotel", "flight")))
    yield services
    await services.stop()


@pytest.fixture
async def order_services(server: DevServer, tmp_path: Path) -> AsyncIterator[Services]:
    services = Services("services_demo.order_payment.services", f"local://127.0.0.1:{server.port}", tmp_path)
    await asyncio.gather(*(services.start(name) for name in ("inventory", "payments", "shipping")))
    yield services
    await services.stop()


async def stored_history_problems(store_url: str, workflow_id: str) -> list[str]:
    """What MongoDB holds for the current run, read by a store of its own: event ids 1..n, each
    once, as many as the run's state counts."""
    async with await open_store(store_url) as store:
        current = await store.get_current_run("default", workflow_id)
        assert current is not None, f"{workflow_id}: no current run"
        state = await store.get_execution("default", workflow_id, current.run_id)
        assert state is not None
        events = await store.read_events("default", workflow_id, state.run_id)
    ids = [e.event_id for e in events]
    problems = []
    if ids != list(range(1, len(ids) + 1)):
        problems.append(f"{workflow_id}: stored event ids {ids} are not 1..{len(ids)}")
    if len(ids) != state.next_event_id - 1:
        problems.append(f"{workflow_id}: {len(ids)} events stored, the state says {state.next_event_id - 1}")
    return problems


async def test_trip_happy_path_and_compensation_on_mongodb(
    trip_services: Services, client: Client, store_url: str
) -> None:
    async with Worker(client, task_queue="trips", workflows=[TripBooking]):
        ok = await client.execute_workflow(TripBooking.run, {"destination": "Lisbon"}, id="trip-ok", task_queue="trips")
        assert ok["status"] == "booked"
        with pytest.raises(WorkflowFailureError) as failed:
            await client.execute_workflow(TripBooking.run, {"destination": "Atlantis"}, id="trip-bad", task_queue="trips")
    cause = root_cause(failed.value)
    assert isinstance(cause, ApplicationError) and cause.type == "NoAvailability"
    for kind in ("car", "hotel", "flight"):
        assert trip_services.ledger(kind) == {"trip-ok": "booked", "trip-bad": "cancelled"}
    history = await client.get_workflow_handle("trip-bad").fetch_history()
    scheduled = [e.activity_type for e in history.events if e.event_type.value == "ActivityTaskScheduled"]
    assert scheduled == ["book_car", "book_hotel", "book_flight", "cancel_flight", "cancel_hotel", "cancel_car"]
    assert await stored_history_problems(store_url, "trip-ok") == []
    assert await stored_history_problems(store_url, "trip-bad") == []


async def test_order_approved_is_shipped_on_mongodb(order_services: Services, client: Client, store_url: str) -> None:
    async with Worker(client, task_queue="orders", workflows=[OrderPayment]):
        handle = await client.start_workflow(
            OrderPayment.run, {"amount": 5000, "card": "4242", "approval_timeout_s": 60}, id="order-approved", task_queue="orders"
        )
        while await handle.query(OrderPayment.status) != "awaiting approval":
            await asyncio.sleep(0.05)
        await handle.signal(OrderPayment.approve, True)
        result = await handle.result()
    assert result["status"] == "shipped"
    assert order_services.ledger("shipping") == {"order-approved": "booked"}
    assert order_services.ledger("payments") == {"order-approved": "booked"}
    assert await stored_history_problems(store_url, "order-approved") == []


async def test_order_without_approval_in_time_is_refunded_on_mongodb(order_services: Services, client: Client) -> None:
    async with Worker(client, task_queue="orders", workflows=[OrderPayment]):
        handle = await client.start_workflow(
            OrderPayment.run, {"amount": 5000, "card": "4242", "approval_timeout_s": 1}, id="order-timeout", task_queue="orders"
        )
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
    assert getattr(root_cause(failed.value), "type", None) == "ApprovalTimeout"
    assert order_services.ledger("payments") == {"order-timeout": "cancelled"}
    assert order_services.ledger("inventory") == {"order-timeout": "cancelled"}
    assert order_services.ledger("shipping") == {}


async def test_commit_then_timeout_on_mongodb_no_duplicate_event_no_lost_task(
    trip_services: Services, client: Client, faults: Faults, store_url: str, server: DevServer
) -> None:
    """Writes of two sagas (one booked, one compensated) commit on MongoDB, then the server is
    told they timed out. Re-reading must find the commits: no event twice, no task lost."""
    assert faults.store is not None
    server.orchestrator.matching.sweep_interval = 0.5  # the outbox sweep re-drives what an ambiguous write left
    async with Worker(client, task_queue="trips", workflows=[TripBooking]):
        faults.store.commit_then_timeout("write", times=AMBIGUOUS)
        ok = await asyncio.wait_for(
            client.execute_workflow(TripBooking.run, {"destination": "Rome"}, id="trip-ambiguous", task_queue="trips"), 90
        )
        with pytest.raises(WorkflowFailureError):
            await asyncio.wait_for(
                client.execute_workflow(
                    TripBooking.run, {"destination": "Atlantis"}, id="trip-ambiguous-bad", task_queue="trips"
                ),
                90,
            )
        injected = faults.store.injected["write"]
    assert ok["status"] == "booked"
    assert injected == AMBIGUOUS, f"{injected} of {AMBIGUOUS} ambiguous writes were injected"
    for wid in ("trip-ambiguous", "trip-ambiguous-bad"):
        history = await client.get_workflow_handle(wid).fetch_history()
        ids = [e.event_id for e in history.events]
        assert ids == list(range(1, len(ids) + 1)), f"{wid}: duplicated or missing events: {ids}"
        types = Counter(e.event_type.value for e in history.events)
        assert types["WorkflowExecutionStarted"] == 1, types
        assert types["WorkflowExecutionCompleted"] + types["WorkflowExecutionFailed"] == 1, types
        # every activity scheduled is closed exactly once: no reply applied twice, no task left behind
        scheduled = [e.event_id for e in history.events if e.event_type.value == "ActivityTaskScheduled"]
        closed = Counter(getattr(e, "scheduled_event_id", 0) for e in history.events if e.event_type.value in ACTIVITY_CLOSES)
        assert all(closed[s] == 1 for s in scheduled), f"{wid}: activity closes {dict(closed)} for scheduled {scheduled}"
        assert await stored_history_problems(store_url, wid) == []
    for kind in ("car", "hotel", "flight"):
        assert trip_services.rows(kind, "trip-ambiguous") == 1
        assert trip_services.ledger(kind)["trip-ambiguous"] == "booked"
        assert trip_services.ledger(kind)["trip-ambiguous-bad"] == "cancelled"
