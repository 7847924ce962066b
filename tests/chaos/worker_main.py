"""The SDK worker of the chaos suite, as its own process: runs ``TripBooking`` until SIGTERM.

    python -m tests.chaos.worker_main --target 127.0.0.1:7233 --ready-file /tmp/w.ready

It keeps trying to connect while the server is down (a supervisor would restart
it; here the harness kills and restarts it on purpose), touches ``--ready-file``
once it polls, and stops gracefully on SIGTERM/SIGINT. SIGKILL and SIGSTOP are
the harness's faults.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import time
from datetime import timedelta
from pathlib import Path

from sagas.client import Client
from sagas.exceptions import RPCError
from sagas.worker import Worker
from services_demo.trip_booking.workflow import TripBooking

log = logging.getLogger("chaos.worker")


async def connect(target: str, deadline: float) -> Client:
    while True:
        try:
            client = await Client.connect(target)
            await client.cluster_info(refresh=True)
            return client
        except RPCError as exc:
            if time.monotonic() > deadline:
                raise
            log.warning("server not reachable yet (%s); retrying", exc)
            await asyncio.sleep(0.2)


async def run(target: str, ready_file: str | None, connect_timeout: float) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    client = await connect(target, time.monotonic() + connect_timeout)
    try:
        worker = Worker(
            client,
            task_queue="trips",
            workflows=[TripBooking],
            graceful_shutdown_timeout=timedelta(seconds=2),
            poll_wait=1.0,
        )
        async with worker:
            if ready_file:
                Path(ready_file).write_text("ready")
            await stop.wait()
    finally:
        await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", required=True, help="host:port of the orchestrator")
    parser.add_argument("--ready-file", help="touched once the worker polls its task queue")
    parser.add_argument("--connect-timeout", type=float, default=60.0)
    opts = parser.parse_args()
    logging.basicConfig(level="WARNING", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(run(opts.target, opts.ready_file, opts.connect_timeout))


if __name__ == "__main__":
    main()
