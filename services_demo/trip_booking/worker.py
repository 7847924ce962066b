"""The SDK worker of the trip-booking saga, as a process of its own (the compose topology runs it).

    python -m services_demo.trip_booking.worker --target orchestrator-1:7233

It connects to any frontend (requests for shards owned elsewhere are forwarded), takes
``TripBooking`` workflow tasks from the ``trips`` task queue on the cluster's broker, and runs
until SIGINT/SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal

import typer

from sagas.client import Client
from sagas.worker import Worker
from services_demo.trip_booking.workflow import TripBooking

TASK_QUEUE = "trips"


async def run(target: str, namespace: str) -> None:
    client = await Client.connect(target, namespace=namespace)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with Worker(client, task_queue=TASK_QUEUE, workflows=[TripBooking]):
            await stop.wait()
    finally:
        await client.close()


def main(
    target: str = typer.Option("127.0.0.1:7233", help="host:port of any orchestrator frontend."),
    namespace: str = typer.Option("default"),
) -> None:
    """Run the TripBooking workflow worker."""
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(target, namespace))


if __name__ == "__main__":
    typer.run(main)
