"""Micro-benchmark: history writes through the engine + the MongoDB store (no broker, no HTTP).

The same one-activity workflows as :mod:`bench.micro_history` (start, workflow
task that schedules one activity, activity result, workflow task that
completes: four history writes), on :class:`MongoHistoryStore`. Two phases:

* **profile**: a few workflows one at a time; every command the driver sends
  is counted (PyMongo command monitoring), per history write. These are the
  round trips to the primary each write costs on a real replica set.
* **throughput**: N workflows, C at a time: store transactions per workflow
  and per activity, history writes and events per second, retried
  transactions, latency.

Without ``--url`` it runs on the SecantusDB stand-in (started here, as the
tests start it). The stand-in is a correctness tool, 1-3 ms an operation and
single-threaded Python: its figures are **not** MongoDB's; the command counts
are the same on any server.

    python -m bench.mongo_history --workflows 200 --concurrency 16
    python -m bench.mongo_history --url 'mongodb://host:27017/bench?replicaSet=rs0'

Writes ``bench/results/mongo_history.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from pymongo import monitoring

from bench.micro_history import STEPS, one_workflow
from orchestrator.history.service import HistoryService
from orchestrator.persistence._instrumented import InstrumentedHistoryStore
from orchestrator.persistence.base import ExecutionWrite
from orchestrator.persistence.mongo import MongoHistoryStore

RESULTS = Path(__file__).parent / "results"

_HANDSHAKE = {"hello", "ismaster", "isMaster", "ping", "endSessions", "buildInfo"}


class CommandCounter(monitoring.CommandListener):
    """Counts the commands sent to the server (one round trip each), by name and collection."""

    def __init__(self) -> None:
        self.commands: Counter[str] = Counter()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        name = event.command_name
        if name not in _HANDSHAKE:
            target = event.command.get(name)
            self.commands[f"{name} {target}" if isinstance(target, str) else name] += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    def snapshot(self) -> Counter[str]:
        return Counter(self.commands)


class EventCountingStore(InstrumentedHistoryStore):
    """Also counts the history events stored."""

    events = 0

    async def write(self, shard_id: int, range_id: int, writes: list[ExecutionWrite]) -> None:
        await super().write(shard_id, range_id, writes)
        self.events += sum(len(w.events) for w in writes)


async def _open(url: str, counter: CommandCounter) -> tuple[MongoHistoryStore, EventCountingStore, HistoryService]:
    raw = MongoHistoryStore(url, client_options={"event_listeners": [counter]})
    await raw.open()
    store = EventCountingStore(raw)
    history = HistoryService(store, num_shards=4)
    await history.acquire_shards()
    return raw, store, history


async def profile(url: str, workflows: int) -> dict[str, Any]:
    """Commands per history write, by step (sequential, so nothing else is counted)."""
    counter = CommandCounter()
    raw, store, history = await _open(url, counter)
    per_step: dict[str, list[Counter[str]]] = {step: [] for step in STEPS}
    try:
        for i in range(workflows):
            before = counter.snapshot()

            def mark(step: str) -> None:
                nonlocal before
                now = counter.snapshot()
                per_step[step].append(now - before)
                before = now

            await one_workflow(history, 10_000_000 + i, [], mark)
    finally:
        await store.aclose()
    steps: dict[str, Any] = {}
    for step, counts in per_step.items():
        names = sorted({name for c in counts for name in c})
        typical = {name: statistics.median(c[name] for c in counts) for name in names}
        steps[step] = {"commands": typical, "round_trips": sum(typical.values())}
    return {"workflows": workflows, "retried_transactions": raw.transaction_retries, "per_write": steps}


async def throughput(url: str, workflows: int, concurrency: int) -> dict[str, Any]:
    counter = CommandCounter()
    raw, store, history = await _open(url, counter)
    latencies: list[float] = []
    sem = asyncio.Semaphore(concurrency)

    async def guarded(i: int) -> None:
        async with sem:
            await one_workflow(history, i, latencies)

    try:
        commands_before = sum(counter.commands.values())
        t0 = time.perf_counter()
        await asyncio.gather(*(guarded(i) for i in range(workflows)))
        elapsed = time.perf_counter() - t0
        commands = sum(counter.commands.values()) - commands_before
    finally:
        await store.aclose()
    latencies.sort()
    transactions = store.transactions
    return {
        "workflows": workflows,
        "concurrency": concurrency,
        "elapsed_s": round(elapsed, 3),
        "workflows_per_s": round(workflows / elapsed, 1),
        "history_writes_per_s": round(transactions / elapsed, 1),
        "events_per_s": round(store.events / elapsed, 1),
        "store_transactions": transactions,
        "events": store.events,
        "transactions_per_workflow": transactions / workflows,
        # every workflow also needs a start and two workflow tasks (3 writes); the rest is the activity
        "transactions_per_activity_happy_path": (transactions - 3 * workflows) / workflows,
        "retried_transactions": raw.transaction_retries,
        "commands_per_write": round(commands / max(transactions, 1), 2),
        "latency_p50_ms": round(1000 * statistics.median(latencies), 2),
        "latency_p99_ms": round(1000 * latencies[int(0.99 * (len(latencies) - 1))], 2),
    }


async def run(url: str | None, workflows: int, concurrency: int, profiled: int) -> dict[str, Any]:
    server = None
    if url is None:
        from tests.contract.conftest import SecantusServer

        server = SecantusServer()
        server.start()
        base = server.url
    else:
        host, _, query = url.partition("?")
        scheme, rest = host.split("://", 1)
        base = lambda database: f"{scheme}://{rest.split('/', 1)[0]}/{database}?{query}"  # noqa: E731
    try:
        run_id = uuid.uuid4().hex[:8]
        prof = await profile(base(f"bench_profile_{run_id}"), profiled)
        tput = await throughput(base(f"bench_tput_{run_id}"), workflows, concurrency)
    finally:
        if server is not None:
            server.stop()
    return {
        "benchmark": "mongo_history",
        "server": "SecantusDB 0.7.0b3 stand-in (not MongoDB: do not compare its speed)" if server else url,
        "profile": prof,
        "throughput": tput,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }


README_HEADING = "## The MongoDB store (`python -m bench.mongo_history`)"

ROUND_TRIPS = """\
Round trips to the primary of a real replica set, counted from `orchestrator/persistence/mongo.py`
(`MongoHistoryStore.write`: `_read_view`, `_fence`, `_apply`, commit) and confirmed by the command
counts above (the driver sends one command per round trip; `startTransaction` travels with the
first command and small `find` results come back whole in the first batch, so there is no
`startTransaction`, `getMore` or `killCursors` of their own):

| # | command | when |
|---:|---|---|
| 1 | `find executions` (`db_version` of the run; starts the transaction, snapshot read concern) | every write |
| 2 | `find current_executions` (the current-run pointer) | every write |
| 3 | `findAndModify shard_fences` (the fence: reads `range_id`, writes a counter) | every write (one per fence stripe touched: 1 for one workflow) |
| 4 | `update executions` (compare-and-swap on `db_version`) or `insert` (a new run) | every write |
| 5 | `update current_executions` | only when the pointer changes (a start, a close, a status change) |
| 6 | `insert history_events` (all the write's events in one command) | when it has events (always, in practice) |
| 7 | `insert transfer_tasks` | when it makes transfer tasks |
| 8 | `insert timer_tasks` | when it makes timers |
| 9 | `update visibility` | when the visibility record changes (start, close) |
| 10 | `commitTransaction` (write concern `majority`) | every write |

A write in the middle of a run (an activity scheduled, an activity completed, each with its
events, a transfer task and a timeout timer) is therefore **8 round trips**, the commit waiting
besides for a majority of the members to have the transaction (about one round trip between
primary and secondaries, plus their journal flush). A start is 11 (the run is inserted and its
pointer and visibility record written, and the id-reuse check reads the pointer once more), a
close 10 (the pointer's status and the visibility record change). One activity in a workflow of sequential activities costs two writes (the workflow
task that schedules it, the activity's result): **2 transactions, 16 round trips and 2 majority
commits**; the one-activity workflow of this benchmark costs 4 transactions (1 for the activity
itself beyond start and two workflow tasks), 11 + 8 + 8 + 10 = 37 round trips (39 before an
unchanged current-run pointer was no longer rewritten). Outside the
transactions: the outbox rows are deleted after they are published (`delete`, one per batch) and
fired timers after they fire; a process of a multi-process cluster records each server session it
uses once every 10 minutes (so a shard's next owner can kill a dead owner's transactions).
At 1 ms between the orchestrator and the primary, one mid-run write costs about 8-10 ms of
latency; it does not limit throughput, which is bound by the primary's commit rate, since
writes of different workflows run concurrently.
"""


def readme_section(results: Path = RESULTS) -> str:
    """The README section of the last run (empty without ``mongo_history.json``)."""
    path = results / "mongo_history.json"
    if not path.exists():
        return ""
    doc = json.loads(path.read_text())
    t, per_write = doc["throughput"], doc["profile"]["per_write"]
    trips = ", ".join(f"{step} {per_write[step]['round_trips']:g}" for step in STEPS)
    return f"""
{README_HEADING}

Server: {doc["server"]}. The history writes of `bench.micro_history` (one-activity workflows through
`HistoryService`, no broker, no HTTP) on `MongoHistoryStore`; {t["workflows"]} workflows,
{t["concurrency"]} at a time.

| store transactions per workflow | per activity (beyond start and 2 workflow tasks) | history writes/s | events/s | workflows/s | p50 ms | p99 ms | retried transactions | commands per write |
|---:|---:|---:|---:|---:|---:|---:|---:|---:|
| {t["transactions_per_workflow"]:g} | {t["transactions_per_activity_happy_path"]:g} | {t["history_writes_per_s"]} | {t["events_per_s"]} | {t["workflows_per_s"]} | {t["latency_p50_ms"]} | {t["latency_p99_ms"]} | {t["retried_transactions"]} | {t["commands_per_write"]} |

Commands per history write, measured (PyMongo command monitoring, one workflow at a time): {trips}.
The stand-in's speed says nothing about MongoDB's (it is single-threaded Python, 1-3 ms an
operation); the command counts are the same on any server.

{ROUND_TRIPS}"""


def update_readme(results: Path = RESULTS) -> None:
    """Put the last run's section in ``README.md``: in place of the old one, else at the end."""
    path = results / "README.md"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    head, found, rest = text.partition("\n" + README_HEADING)
    tail = ""
    if found:
        _, other, after = rest.partition("\n## ")  # the next section (another benchmark's), kept
        tail = "\n" + other + after if other else ""
    path.write_text(head.rstrip("\n") + "\n" + readme_section(results) + tail)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a MongoDB replica set (default: start the SecantusDB stand-in)")
    parser.add_argument("--workflows", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--profiled", type=int, default=10, help="workflows of the command-count phase")
    args = parser.parse_args()
    result = asyncio.run(run(args.url, args.workflows, args.concurrency, args.profiled))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "mongo_history.json").write_text(json.dumps(result, indent=2) + "\n")
    update_readme()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
