"""Where the milliseconds of one workflow go, at concurrency 1 (``python -m bench.latency_breakdown``).

Runs N one-activity workflows one after the other against our dev server
(``sagas server start-dev`` on a SQLite file, one ``bench.worker`` process: the
topology of ``python -m bench run``), then reads each run's history and splits
start -> result into phases by the events' server timestamps:

=============================  =================================================================
phase                          from -> to
=============================  =================================================================
start request                  client calls ``start_workflow`` -> ``WorkflowExecutionStarted``
first workflow task            ``WorkflowExecutionStarted`` -> ``WorkflowTaskCompleted`` #1 (dispatch
                               to the worker, the worker runs the workflow, its reply is committed)
activity                       ``WorkflowTaskCompleted`` #1 -> ``ActivityTaskCompleted`` (dispatch,
                               run, reply committed)
second workflow task           ``ActivityTaskCompleted`` -> ``WorkflowExecutionCompleted``
result to the client           ``WorkflowExecutionCompleted`` -> the client's ``result()`` returns
=============================  =================================================================

Each phase ends with a store commit (fsync, group commit), and each crossing
between processes is an HTTP request. The result is written to
``bench/results/latency_breakdown.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.load import percentile
from bench.systems import open_sagas
from orchestrator.api.enums import EventType

PHASES = ("start request", "first workflow task", "activity", "second workflow task", "result to the client")


def phases_of(events: list[Any], called: float, returned: float) -> dict[str, float]:
    """The phase durations (ms) of one run from its events and the client's wall-clock call/return times."""
    t = {}
    completed_tasks = []
    for e in events:
        stamp = e.event_time.timestamp()
        if e.event_type == EventType.WORKFLOW_EXECUTION_STARTED:
            t["started"] = stamp
        elif e.event_type == EventType.WORKFLOW_TASK_COMPLETED:
            completed_tasks.append(stamp)
        elif e.event_type == EventType.ACTIVITY_TASK_COMPLETED:
            t["activity"] = stamp
        elif e.event_type == EventType.WORKFLOW_EXECUTION_COMPLETED:
            t["closed"] = stamp
    marks = [called, t["started"], completed_tasks[0], t["activity"], t["closed"], returned]
    return {name: round((b - a) * 1000, 2) for name, a, b in zip(PHASES, marks[:-1], marks[1:], strict=True)}


async def run(workflows: int, warmup: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="latency-") as tmp:
        async with open_sagas(Path(tmp), max_concurrent=100) as system:
            samples: list[dict[str, float]] = []
            totals: list[float] = []
            for i in range(warmup + workflows):
                called = time.time()
                handle = await system.start("one_activity", i, f"lat-{i}")
                await system.result(handle)
                returned = time.time()
                if i < warmup:
                    continue
                events = [e async for e in handle.fetch_history_events()]
                samples.append(phases_of(events, called, returned))
                totals.append((returned - called) * 1000)
    summary = {
        name: {"p50_ms": round(statistics.median(s[name] for s in samples), 2),
               "p99_ms": round(percentile([s[name] for s in samples], 99), 2)}
        for name in PHASES
    }  # fmt: skip
    return {
        "what": "one-activity workflows one at a time against sagas server start-dev (SQLite file) + one "
        "bench.worker process; phases from the history's server timestamps (bench/latency_breakdown.py)",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "workflows": workflows,
        "total_p50_ms": round(statistics.median(totals), 2),
        "total_p99_ms": round(percentile(totals, 99), 2),
        "phases": summary,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workflows", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "latency_breakdown.json")
    args = parser.parse_args()
    result = asyncio.run(run(args.workflows, args.warmup))
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
