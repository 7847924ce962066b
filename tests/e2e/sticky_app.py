"""A workflow that waits for signals, and a worker process for it (the sticky e2e test kills it).

    python -m tests.e2e.sticky_app --target 127.0.0.1:7233 --ready-file /tmp/ready
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import timedelta
from pathlib import Path

from sagas import workflow
from sagas.client import Client
from sagas.worker import Worker

TASK_QUEUE = "sticky-e2e"
STICKY_TIMEOUT = timedelta(seconds=2)


@workflow.defn
class Collect:
    """Collects ``count`` signals, then returns them."""

    def __init__(self) -> None:
        self.items: list[str] = []

    @workflow.run
    async def run(self, count: int) -> list[str]:
        await workflow.wait_condition(lambda: len(self.items) >= count)
        return self.items

    @workflow.signal
    async def add(self, item: str) -> None:
        self.items.append(item)

    @workflow.query
    def seen(self) -> int:
        return len(self.items)


async def _main(target: str, ready_file: str) -> None:
    client = await Client.connect(target)
    async with Worker(
        client, task_queue=TASK_QUEUE, workflows=[Collect], sticky_queue_schedule_to_start_timeout=STICKY_TIMEOUT
    ):
        Path(ready_file).write_text("ready")
        await asyncio.Event().wait()  # until killed


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", required=True)
    parser.add_argument("--ready-file", required=True)
    args = parser.parse_args()
    asyncio.run(_main(args.target, args.ready_file))
