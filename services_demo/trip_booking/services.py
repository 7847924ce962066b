"""The trip-booking microservices: car, hotel and flight, each a separate process.

They never import the SDK: each consumes ``activity_task`` JSON messages from
its own queue and replies with ``activity_result`` JSON (see
``brokers.service``). Each keeps its own SQLite ledger and is idempotent by
workflow id, so a redelivered or retried task never books twice.

    python -m services_demo.trip_booking.services car --broker-url local://127.0.0.1:7233 --db car.db

Failure switches: ``--fail`` (every booking is declined), ``--transient-failure-rate 0.3``
(random retryable errors), ``--delay 2.0`` (slow service, to show timeouts and retries; the
delay comes after the booking is written, the worst moment to crash).
Flights to "Atlantis" are always declined: that is how the demo makes a saga compensate.
"""

from __future__ import annotations

import asyncio
import logging
import random
import signal
from typing import Any

import typer

from brokers.envelope import ActivityTask
from brokers.service import ServiceError, serve
from services_demo.common import BookingLedger

KINDS = ("car", "hotel", "flight")
TASK_QUEUES = {"car": "cars", "hotel": "hotels", "flight": "flights"}
UNSERVED_DESTINATIONS = {"Atlantis"}


class BookingService:
    """Handles ``book_<kind>`` and ``cancel_<kind>`` for one kind of booking."""

    def __init__(self, kind: str, ledger: BookingLedger, *, fail: bool = False, transient_failure_rate: float = 0.0, delay: float = 0.0) -> None:
        self.kind = kind
        self.ledger = ledger
        self.fail = fail
        self.transient_failure_rate = transient_failure_rate
        self.delay = delay

    async def handle(self, task: ActivityTask) -> Any:
        trip = task.input[0] if task.input else {}
        if not isinstance(trip, dict):
            raise ServiceError("input must be a trip object", type="InvalidInput", non_retryable=True)
        if self.transient_failure_rate and random.random() < self.transient_failure_rate:
            raise ServiceError(f"{self.kind} service is temporarily unavailable", type="Unavailable")
        key = task.workflow_id
        if task.activity_type == f"book_{self.kind}":
            if self.fail or (self.kind == "flight" and trip.get("destination") in UNSERVED_DESTINATIONS):
                raise ServiceError(
                    f"no {self.kind} available for {trip.get('destination', '?')}", type="NoAvailability", non_retryable=True
                )
            booking_id, status = self.ledger.book(key, str(trip.get("destination", "")))
            if self.delay:  # slow *after* booking: the worst moment to crash, for the exactly-once demo
                await asyncio.sleep(self.delay)
            if status != "booked":
                raise ServiceError(f"{self.kind} booking for {key} was already cancelled", type="AlreadyCancelled", non_retryable=True)
            return {"kind": self.kind, "booking_id": booking_id}
        if task.activity_type == f"cancel_{self.kind}":
            previous = self.ledger.cancel(key)
            return {"kind": self.kind, "cancelled": True, "previous": previous}
        raise ServiceError(f"{self.kind} service does not know {task.activity_type!r}", type="UnknownOperation", non_retryable=True)


def main(
    kind: str = typer.Argument(..., help="car, hotel or flight"),
    broker_url: str = typer.Option("local://127.0.0.1:7233", help="Broker URL (the dev server's built-in broker by default)."),
    db: str = typer.Option(..., help="SQLite file for this service's bookings."),
    namespace: str = typer.Option("default"),
    fail: bool = typer.Option(False, help="Decline every booking."),
    transient_failure_rate: float = typer.Option(0.0, help="Probability of a retryable error per request."),
    delay: float = typer.Option(0.0, help="Seconds each request takes."),
    ready_file: str = typer.Option(None, help="Touch this file once consuming."),
) -> None:
    """Run one booking service until SIGTERM/SIGINT."""
    if kind not in KINDS:
        raise typer.BadParameter(f"kind must be one of {', '.join(KINDS)}")
    logging.basicConfig(level="WARNING")
    service = BookingService(kind, BookingLedger(db), fail=fail, transient_failure_rate=transient_failure_rate, delay=delay)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)

        def ready() -> None:
            if ready_file:
                open(ready_file, "w").close()

        await serve(TASK_QUEUES[kind], service.handle, broker_url=broker_url, namespace=namespace, stop=stop, ready=ready)

    asyncio.run(run())


if __name__ == "__main__":
    typer.run(main)
