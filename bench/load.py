"""The load generator: the same clients, the same operations, whatever the system.

Closed loop (``one_activity``, ``saga3``, ``signal``): ``concurrency`` clients
each start a workflow, await its result, and start the next one, until
``duration`` seconds have passed; then the runs in flight are drained (awaited)
and counted. Throughput = completed runs / (measured time + drain).

Open batch (``timers``): ``count`` workflows that each sleep ``sleep`` seconds
are started, at most ``concurrency`` start calls at a time, and all results
are awaited together. The latency reported is the timer lag: result received -
start call returned - ``sleep``.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from bench.systems import System

WORKLOADS = ("one_activity", "saga3", "timers", "signal")

DESCRIPTIONS = {
    "one_activity": "start -> one activity -> result; latency = start call to result",
    "saga3": "3-step trip booking saga (car, hotel, flight); every 2nd trip fails at the flight "
    "and compensates (cancel hotel, cancel car); latency = start call to result",
    "timers": "N workflows each sleeping 1 s on a durable timer; latency = timer lag "
    "(result received - start returned - 1 s)",
    "signal": "workflow waits for a signal then completes; the client waits until it is waiting "
    "(query / DBOS event), then latency = signal call to result",
}


@dataclass
class Measurement:
    """What one system did under one workload."""

    latencies: list[float] = field(default_factory=list)
    """The workload's latency measure, seconds."""
    cycles: list[float] = field(default_factory=list)
    """Whole operation (start ... result), seconds."""
    errors: int = 0
    error_examples: list[str] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    elapsed: float = 0.0

    def error(self, exc: BaseException, op_timeout: float | None = None) -> None:
        self.errors += 1
        detail = str(exc) or (f"no result within the {op_timeout:g} s per-workflow limit (--op-timeout)"
                              if isinstance(exc, TimeoutError) and op_timeout else "")
        text = f"{type(exc).__name__}: {detail}"[:300]
        if len(self.error_examples) < 5 and text not in self.error_examples:
            self.error_examples.append(text)


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (0 < p <= 100) of a non-empty list."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1))]


Operation = Callable[[System, int, str], Awaitable[float | None]]
"""One workflow's life; returns its latency when it is not the whole operation."""


async def run_one_activity(system: System, i: int, wid: str) -> float | None:
    handle = await system.start("one_activity", i, wid)
    result = await system.result(handle)
    if result != i:
        raise AssertionError(f"{wid}: expected {i}, got {result!r}")
    return None


async def run_saga3(system: System, i: int, wid: str) -> float | None:
    fail = i % 2 == 1
    handle = await system.start("saga3", {"id": wid, "fail": fail}, wid)
    result = await system.result(handle)
    expected = "compensated" if fail else "booked"
    if result != expected:
        raise AssertionError(f"{wid}: expected {expected}, got {result!r}")
    return None


async def run_signal(system: System, i: int, wid: str) -> float | None:
    handle = await system.start("signal", None, wid)
    await system.wait_ready(handle)
    t0 = time.perf_counter()
    await system.signal(handle, "proceed", wid)
    result = await system.result(handle)
    latency = time.perf_counter() - t0
    if result != wid:
        raise AssertionError(f"{wid}: expected the signal's value, got {result!r}")
    return latency


CLOSED_LOOP: dict[str, Operation] = {
    "one_activity": run_one_activity,
    "saga3": run_saga3,
    "signal": run_signal,
}


async def closed_loop(
    system: System, workload: str, *, concurrency: int, duration: float, op_timeout: float, prefix: str
) -> Measurement:
    op = CLOSED_LOOP[workload]
    m = Measurement()
    numbers = itertools.count()
    t0 = time.perf_counter()
    deadline = t0 + duration

    async def client() -> None:
        while time.perf_counter() < deadline:
            i = next(numbers)
            started = time.perf_counter()
            try:
                latency = await asyncio.wait_for(op(system, i, f"{prefix}-{i}"), op_timeout)
            except Exception as exc:  # counted, and the client goes on
                m.error(exc, op_timeout)
                continue
            cycle = time.perf_counter() - started
            m.cycles.append(cycle)
            m.latencies.append(cycle if latency is None else latency)
            if workload == "saga3":
                m.outcomes["compensated" if i % 2 else "booked"] += 1

    await asyncio.gather(*(client() for _ in range(concurrency)))
    m.elapsed = time.perf_counter() - t0
    return m


async def timers_batch(
    system: System, *, count: int, sleep: float, concurrency: int, op_timeout: float, prefix: str
) -> Measurement:
    m = Measurement()
    starting = asyncio.Semaphore(concurrency)
    t0 = time.perf_counter()

    async def one(i: int) -> None:
        wid = f"{prefix}-{i}"
        try:
            async with starting:
                handle = await asyncio.wait_for(system.start("timers", sleep, wid), op_timeout)
            started = time.perf_counter()
            result = await asyncio.wait_for(system.result(handle), op_timeout + sleep)
            done = time.perf_counter()
            if result != sleep:
                raise AssertionError(f"{wid}: expected {sleep}, got {result!r}")
        except Exception as exc:
            m.error(exc, op_timeout)
            return
        m.latencies.append(done - started - sleep)
        m.cycles.append(done - started)

    await asyncio.gather(*(one(i) for i in range(count)))
    m.elapsed = time.perf_counter() - t0
    return m


async def warm_up(system: System, workload: str, *, prefix: str, watch: Callable[[], None], timeout: float) -> None:
    """Run a few workflows end to end: proves the server and the worker are ready, and warms caches.

    Polls (``watch`` raises if a process died) instead of sleeping a fixed time.
    """
    ops: list[tuple[Operation, int]] = [(run_one_activity, i) for i in range(10)]
    if workload in CLOSED_LOOP and workload != "one_activity":
        ops += [(CLOSED_LOOP[workload], i) for i in range(10, 20)]

    async def all_ops() -> None:
        first_op, first_i = ops[0]
        await first_op(system, first_i, f"{prefix}-{first_i}")  # the first one waits for the worker
        await asyncio.gather(*(op(system, i, f"{prefix}-{i}") for op, i in ops[1:]))
        if workload == "timers":
            handle = await system.start("timers", 0.1, f"{prefix}-timer")
            await system.result(handle)

    task = asyncio.ensure_future(all_ops())
    deadline = time.monotonic() + timeout
    try:
        while not task.done():
            watch()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{system.name}: warm-up workflows did not finish in {timeout:.0f} s")
            await asyncio.wait({task}, timeout=0.2)
        task.result()
    finally:
        task.cancel()


def summarize(
    system: System,
    m: Measurement,
    cpu: dict[str, float],
    load_before: tuple[float, ...],
    counters: dict[str, float] | None = None,
) -> dict[str, Any]:
    completed = len(m.latencies)
    out: dict[str, Any] = {
        "system": system.name,
        "completed": completed,
        "errors": m.errors,
        "elapsed_s": round(m.elapsed, 3),
        "throughput_wf_per_s": round(completed / m.elapsed, 1) if m.elapsed else 0.0,
    }
    if completed:
        out["latency_ms"] = {
            "p50": round(percentile(m.latencies, 50) * 1000, 1),
            "p99": round(percentile(m.latencies, 99) * 1000, 1),
            "mean": round(sum(m.latencies) / completed * 1000, 1),
            "max": round(max(m.latencies) * 1000, 1),
        }
        if m.cycles != m.latencies:
            out["cycle_ms"] = {
                "p50": round(percentile(m.cycles, 50) * 1000, 1),
                "p99": round(percentile(m.cycles, 99) * 1000, 1),
            }
    if m.error_examples:
        out["error_examples"] = m.error_examples
    if m.outcomes:
        out["outcomes"] = dict(m.outcomes)
    out["cpu_s"] = {role: round(v, 2) for role, v in cpu.items()}
    if completed:
        out["cpu_ms_per_wf"] = {role: round(v / completed * 1000, 2) for role, v in cpu.items()}
    if counters and completed:
        # Server work per workflow: requests by route, store transactions, timers fired by kind.
        out["server_counters_per_wf"] = {k: round(v / completed, 2) for k, v in sorted(counters.items())}
    out["loadavg_1m_before"] = round(load_before[0], 2)
    out["config"] = dict(system.config)
    return out
