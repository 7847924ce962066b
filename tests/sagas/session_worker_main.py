"""A session-hosting worker as its own process, for tests/sagas/test_sessions.py.

    python -m tests.sagas.session_worker_main --target 127.0.0.1:7233 --identity worker-A --task-queue tq

Prints ``ready`` once it polls, and ``holding <step>`` when the ``hold``
activity starts (it then blocks until cancelled): the test reads these lines
instead of sleeping, and SIGKILLs the process while it hosts a session.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sagas import activity
from sagas.client import Client
from sagas.worker import Worker


def make_activities(label: str, on_hold: Callable[[], None] | None = None) -> list[Callable[..., Any]]:
    """``where(step)`` returns who ran it and from which task queue; ``hold(step)`` blocks."""

    @activity.defn(name="where")
    async def where(step: str) -> dict[str, str]:
        return {"step": step, "worker": label, "task_queue": activity.info().task_queue}

    @activity.defn(name="hold")
    async def hold(step: str) -> str:
        print(f"holding {step}", flush=True)
        if on_hold is not None:
            on_hold()
        await asyncio.Event().wait()
        return step

    return [where, hold]


async def run(target: str, identity: str, task_queue: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    client = await Client.connect(target)
    try:
        worker = Worker(
            client,
            task_queue=task_queue,
            activities=make_activities(identity),
            identity=identity,
            max_concurrent_sessions=1,
            graceful_shutdown_timeout=timedelta(seconds=1),
            poll_wait=0.2,
        )
        async with worker:
            print("ready", flush=True)
            await stop.wait()
    finally:
        await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", required=True)
    parser.add_argument("--identity", required=True)
    parser.add_argument("--task-queue", required=True)
    opts = parser.parse_args()
    asyncio.run(run(opts.target, opts.identity, opts.task_queue))


if __name__ == "__main__":
    main()
