"""The benchmark worker, run in its own process by the harness (one per system).

    python -m bench.worker --system sagas --target 127.0.0.1:7233
    python -m bench.worker --system temporal --target 127.0.0.1:7433

Serves every workflow and activity of :mod:`bench.workloads` on the task queue
``bench`` until SIGTERM/SIGINT. Both workers use their SDK's defaults except
the concurrency limits, set alike (``--max-concurrent``), and temporalio's
workflow runner, which is unsandboxed (as ours is) unless ``--sandbox`` keeps
temporalio's default, the sandboxed runner (the ``temporal-sandbox`` system).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import signal
from typing import Any

from bench.workloads import TASK_QUEUE, build

SDK_OF_SYSTEM = {"sagas": "sagas", "temporal": "temporalio"}


async def serve(system: str, target: str, max_concurrent: int, sandbox: bool = False) -> None:
    sdk = importlib.import_module(SDK_OF_SYSTEM[system])
    client_mod = importlib.import_module(f"{sdk.__name__}.client")
    worker_mod = importlib.import_module(f"{sdk.__name__}.worker")
    workloads = build(sdk)
    client = await client_mod.Client.connect(target)
    options: dict[str, Any] = {
        "task_queue": TASK_QUEUE,
        "workflows": workloads.workflows,
        "activities": workloads.activities,
        "max_concurrent_workflow_tasks": max_concurrent,
        "max_concurrent_activities": max_concurrent,
    }
    if system == "temporal" and not sandbox:
        options["workflow_runner"] = worker_mod.UnsandboxedWorkflowRunner()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with worker_mod.Worker(client, **options):
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--system", choices=sorted(SDK_OF_SYSTEM), required=True)
    parser.add_argument("--target", required=True, help="host:port of the server")
    parser.add_argument("--max-concurrent", type=int, default=100, help="workflow tasks and activities at once")
    parser.add_argument(
        "--sandbox", action="store_true",
        help="temporal: keep temporalio's default sandboxed workflow runner (default: unsandboxed, as ours)",
    )
    args = parser.parse_args()
    asyncio.run(serve(args.system, args.target, args.max_concurrent, args.sandbox))


if __name__ == "__main__":
    main()
