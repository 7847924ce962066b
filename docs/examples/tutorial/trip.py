"""A trip-booking saga: book a car, a hotel and a flight; undo them if a step fails."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sagas import Saga, activity, workflow
from sagas.common import RetryPolicy
from sagas.exceptions import ApplicationError


@dataclass
class Trip:
    customer: str
    destination: str


# --8<-- [start:activities]
@activity.defn
async def book_car(trip: Trip) -> str:
    print(f"car booked for {trip.customer} in {trip.destination}")
    return f"car-{trip.customer}"


@activity.defn
async def cancel_car(trip: Trip) -> None:
    print(f"car cancelled for {trip.customer}")


@activity.defn
async def book_hotel(trip: Trip) -> str:
    print(f"hotel booked for {trip.customer} in {trip.destination}")
    return f"hotel-{trip.customer}"


@activity.defn
async def cancel_hotel(trip: Trip) -> None:
    print(f"hotel cancelled for {trip.customer}")


@activity.defn
async def book_flight(trip: Trip) -> str:
    if trip.destination == "Atlantis":
        # non_retryable: retrying will not make Atlantis appear on the map
        raise ApplicationError(
            f"no flights to {trip.destination}", type="NoFlights", non_retryable=True
        )
    print(f"flight booked for {trip.customer} to {trip.destination}")
    return f"flight-{trip.customer}"


# --8<-- [end:activities]


@activity.defn
async def cancel_flight(trip: Trip) -> None:
    print(f"flight cancelled for {trip.customer}")


# --8<-- [start:workflow]
@workflow.defn
class TripBooking:
    @workflow.run
    async def run(self, trip: Trip) -> dict[str, str]:
        timeout = timedelta(seconds=10)
        retry = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=3)
        async with Saga() as saga:
            car = await workflow.execute_activity(
                book_car, trip, start_to_close_timeout=timeout, retry_policy=retry
            )
            saga.add_compensation(cancel_car, trip, start_to_close_timeout=timeout)

            hotel = await workflow.execute_activity(
                book_hotel, trip, start_to_close_timeout=timeout, retry_policy=retry
            )
            saga.add_compensation(cancel_hotel, trip, start_to_close_timeout=timeout)

            flight = await workflow.execute_activity(
                book_flight, trip, start_to_close_timeout=timeout, retry_policy=retry
            )
            saga.add_compensation(cancel_flight, trip, start_to_close_timeout=timeout)
        return {"car": car, "hotel": hotel, "flight": flight}


# --8<-- [end:workflow]


ACTIVITIES = [
    book_car,
    cancel_car,
    book_hotel,
    cancel_hotel,
    book_flight,
    cancel_flight,
]
