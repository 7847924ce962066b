"""Benchmark: workflow tasks per second through the worker's workflow runtime.

Runs a workflow of N sequential activities through the in-memory fake server
(``tests/sagas/runtime/fakeserver.py``) twice: with the sticky cache (each task
applies only the new events to the cached instance) and without it (each task
replays the whole history on a fresh instance, as after a cache miss).

    python -m bench.worker_runtime --activities 50 --runs 20

Writes ``bench/results/worker_runtime.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import time
from datetime import timedelta
from pathlib import Path

from orchestrator.api.events import WorkflowTaskCompleted
from sagas import workflow
from tests.sagas.runtime.fakeserver import FakeServer

RESULTS = Path(__file__).parent / "results"


@workflow.defn
class Steps:
    @workflow.run
    async def run(self, n: int) -> int:
        total = 0
        for i in range(n):
            total += await workflow.execute_activity("step", i, start_to_close_timeout=timedelta(seconds=10))
        return total


async def one(n: int, cached: bool) -> tuple[float, int]:
    server = FakeServer([Steps], activities={"step": lambda i: i}, cached=cached)
    server.start("Steps", n)
    t0 = time.perf_counter()
    await server.run(max_tasks=n + 10)
    elapsed = time.perf_counter() - t0
    tasks = len(server.events_of(WorkflowTaskCompleted))
    return elapsed, tasks


async def measure(n: int, runs: int, cached: bool) -> dict[str, float]:
    total_time, total_tasks = 0.0, 0
    for _ in range(runs):
        elapsed, tasks = await one(n, cached)
        total_time += elapsed
        total_tasks += tasks
    return {
        "workflow_tasks": total_tasks,
        "seconds": round(total_time, 3),
        "workflow_tasks_per_s": round(total_tasks / total_time, 1),
        "mean_ms_per_task": round(1000 * total_time / total_tasks, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--activities", type=int, default=50)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    sticky = asyncio.run(measure(args.activities, args.runs, cached=True))
    replay = asyncio.run(measure(args.activities, args.runs, cached=False))
    result = {
        "benchmark": "worker_runtime",
        "activities_per_workflow": args.activities,
        "workflows": args.runs,
        "sticky_cache": sticky,
        "replay_from_scratch": replay,
        "sticky_speedup": round(sticky["workflow_tasks_per_s"] / replay["workflow_tasks_per_s"], 1),
        "note": "fake server in the same process: runtime cost only, no network, no store",
        "python": platform.python_version(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "worker_runtime.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
