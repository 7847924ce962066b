"""Run the trip-booking workflow and its activities until Ctrl-C."""

import asyncio
import os

from trip import ACTIVITIES, TripBooking

from sagas.client import Client
from sagas.worker import Worker


async def main() -> None:
    client = await Client.connect(os.environ.get("SAGAS_ADDRESS", "localhost:7233"))
    worker = Worker(
        client, task_queue="trips", workflows=[TripBooking], activities=ACTIVITIES
    )
    print("worker polling task queue 'trips'; Ctrl-C to stop")
    await worker.run()


if __name__ == "__main__":
    asyncio.run(main())
