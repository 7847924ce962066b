"""The ``TripBooking`` saga: book a car, a hotel and a flight; undo what was booked if a step fails.

The bookings are done by separate microservices (``services.py``) reached by
activity *name* on their own task queues, so the services need no SDK.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sagas import Saga, workflow
from sagas.common import RetryPolicy

STEP_TIMEOUT = timedelta(seconds=10)
RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_interval=timedelta(seconds=2), maximum_attempts=5)


@workflow.defn
class TripBooking:
    """Books car -> hotel -> flight as a saga; compensates in reverse order on failure."""

    def __init__(self) -> None:
        self.booked: list[str] = []

    @workflow.run
    async def run(self, trip: dict[str, Any]) -> dict[str, Any]:
        async with Saga() as saga:
            for kind, queue in (("car", "cars"), ("hotel", "hotels"), ("flight", "flights")):
                # Register the undo *before* the step: a booking whose reply never arrived (a crash,
                # a cancel mid-step) is still undone. The services' cancel is idempotent and leaves a
                # tombstone, so undoing a step that never happened is harmless.
                saga.add_compensation(f"cancel_{kind}", trip, task_queue=queue, start_to_close_timeout=STEP_TIMEOUT)
                booking = await workflow.execute_activity(
                    f"book_{kind}", trip, task_queue=queue, start_to_close_timeout=STEP_TIMEOUT, retry_policy=RETRY
                )
                self.booked.append(kind)
                trip = {**trip, f"{kind}_booking": booking["booking_id"]}
        return {"status": "booked", "trip": trip}

    @workflow.query
    def booked_steps(self) -> list[str]:
        return list(self.booked)
