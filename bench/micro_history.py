"""Micro-benchmark: history writes through the engine + SQLite store (no broker, no HTTP).

Runs N one-activity workflows concurrently through ``HistoryService`` exactly
as the server does (start, workflow task with one activity, activity result,
workflow task that completes), and counts store transactions with the
instrumented store.

    python -m bench.micro_history --workflows 2000 --concurrency 200

Writes ``bench/results/micro_history.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from orchestrator.api import commands as C
from orchestrator.history.engine import StartRequest
from orchestrator.history.service import HistoryService
from orchestrator.persistence._instrumented import InstrumentedHistoryStore
from orchestrator.persistence.sqlite import SqliteHistoryStore

RESULTS = Path(__file__).parent / "results"


STEPS = ("start", "schedule_activity", "activity_completed", "complete_workflow")
"""The four history writes of a one-activity workflow, in order."""


async def one_workflow(
    history: HistoryService, i: int, latencies: list[float], on_step: Callable[[str], None] | None = None
) -> None:
    """One workflow's four writes; ``on_step(name)`` is called after each (``STEPS``)."""
    step = on_step or (lambda name: None)
    t0 = time.perf_counter()
    engine = history.engine
    wid = f"bench-{i}"
    run_id, _ = await history.start(StartRequest(namespace="default", workflow_id=wid, workflow_type="Bench", task_queue="q"))
    step("start")
    cmd = C.ScheduleActivityTask(activity_id="1", activity_type="work", task_queue="q", start_to_close_timeout=30)
    m = await history.update("default", wid, run_id, lambda s, now: engine.complete_workflow_task(s, 2, 1, [cmd], now=now))
    step("schedule_activity")
    sched = m.events[-1].event_id
    m = await history.update("default", wid, run_id, lambda s, now: engine.activity_completed(s, sched, 1, {"ok": True}, now=now))
    step("activity_completed")
    wft = m.state.workflow_task
    assert wft is not None
    done = C.CompleteWorkflowExecution(result="ok")
    await history.update("default", wid, run_id, lambda s, now: engine.complete_workflow_task(s, wft.scheduled_event_id, 1, [done], now=now))
    step("complete_workflow")
    latencies.append(time.perf_counter() - t0)


async def run(workflows: int, concurrency: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        raw = SqliteHistoryStore(str(Path(tmp) / "bench.db"))
        await raw.open()
        store = InstrumentedHistoryStore(raw)
        history = HistoryService(store, num_shards=4)
        await history.acquire_shards()
        latencies: list[float] = []
        sem = asyncio.Semaphore(concurrency)

        async def guarded(i: int) -> None:
            async with sem:
                await one_workflow(history, i, latencies)

        tx_before, commits_before = store.transactions, raw.commits
        t0 = time.perf_counter()
        await asyncio.gather(*(guarded(i) for i in range(workflows)))
        elapsed = time.perf_counter() - t0
        transactions = store.transactions - tx_before
        commits = raw.commits - commits_before
        await store.aclose()
    latencies.sort()
    return {
        "benchmark": "micro_history",
        "workflows": workflows,
        "concurrency": concurrency,
        "elapsed_s": round(elapsed, 3),
        "workflows_per_s": round(workflows / elapsed, 1),
        "history_writes_per_s": round(transactions / elapsed, 1),
        "store_transactions": transactions,
        "sqlite_commits": commits,
        "transactions_per_workflow": transactions / workflows,
        # every workflow also needs a start and two workflow tasks (3 writes); the rest is the activity
        "transactions_per_activity_happy_path": (transactions - 3 * workflows) / workflows,
        "writes_per_fsync": round(transactions / max(commits, 1), 1),
        "latency_p50_ms": round(1000 * statistics.median(latencies), 2),
        "latency_p99_ms": round(1000 * latencies[int(0.99 * (len(latencies) - 1))], 2),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workflows", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=200)
    args = parser.parse_args()
    result = asyncio.run(run(args.workflows, args.concurrency))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "micro_history.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
