"""The load generator: the same clients, the same operations, whatever the system.

Closed loop (``one_activity``, ``saga3``, ``signal``): ``concurrency`` clients
each start a workflow, await its result, and start the next one, until
``duration`` seconds have passed; then the runs in flight are drained (awaited)
and counted. Throughput = completed runs / (measured time + drain).

Open batch (``timers``): ``count`` workflows that each sleep ``sleep`` seconds
are started, at most ``concurrency`` start calls at a time, and all results
are awaited together. The latency reported is the timer lag: result received -
start call returned - ``sleep``.

Open loop (``--rate R``, any closed-loop workload): a new workflow starts every
1/R s on average (Poisson or uniform arrivals) for ``duration`` seconds,
whether or not earlier ones finished; the latency is scheduled start -> result
(so a harness that falls behind its schedule still counts the wait).

Many open workflows (``open``): ``count`` workflows that each sleep on one
durable timer until an absolute due time are started; the due times are set so
that every workflow is started and asleep before the first one is due, then
they fire ``fire_rate`` per second. Resident memory is sampled throughout (the
figure "all open" is the last sample before the first due time). The timer lag
is result received - due time, the result being asked for from 2 s before it is
due (so at most about ``2 s x fire_rate`` result calls are in flight, never one
per open workflow); the workflow also returns its own clock on waking
(``wake_lag_ms``, whose instant differs by system: see ``open_batch``).
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from bench.systems import System

WORKLOADS = ("one_activity", "saga3", "timers", "signal", "open")

DESCRIPTIONS = {
    "one_activity": "start -> one activity -> result; latency = start call to result",
    "saga3": "3-step trip booking saga (car, hotel, flight); every 2nd trip fails at the flight "
    "and compensates (cancel hotel, cancel car); latency = start call to result",
    "timers": "N workflows each sleeping 1 s on a durable timer; latency = timer lag "
    "(result received - start returned - 1 s)",
    "signal": "workflow waits for a signal then completes; the client waits until it is waiting "
    "(query / DBOS event), then latency = signal call to result",
    "open": "N workflows open at once, each asleep on one durable timer, then falling due at a set rate; resident "
    "memory of server and worker with all N open; latency = timer lag (result received - due time)",
}
ARRIVALS = ("poisson", "uniform")


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
    extra: dict[str, Any] = field(default_factory=dict)
    """Workload-specific figures copied into the result as they are (open loop, open workflows)."""

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


async def open_loop(
    system: System, workload: str, *, rate: float, duration: float, arrivals: str, op_timeout: float, prefix: str,
    seed: int = 13,
) -> Measurement:
    """Start ``rate`` workflows per second for ``duration`` seconds, whatever completes; latency from the schedule."""
    if rate <= 0:
        raise ValueError("--rate must be > 0")
    if arrivals not in ARRIVALS:
        raise ValueError(f"arrivals: {', '.join(ARRIVALS)}")
    op = CLOSED_LOOP[workload]
    m = Measurement()
    rng = random.Random(seed)
    behind: list[float] = []
    in_flight = 0
    peak_in_flight = 0

    async def one(i: int, scheduled: float) -> None:
        nonlocal in_flight, peak_in_flight
        in_flight += 1
        peak_in_flight = max(peak_in_flight, in_flight)
        try:
            latency = await asyncio.wait_for(op(system, i, f"{prefix}-{i}"), op_timeout)
        except Exception as exc:
            m.error(exc, op_timeout)
            return
        finally:
            in_flight -= 1
        cycle = time.perf_counter() - scheduled
        m.cycles.append(cycle)
        m.latencies.append(cycle if latency is None else latency)
        if workload == "saga3":
            m.outcomes["compensated" if i % 2 else "booked"] += 1

    tasks: list[asyncio.Task[None]] = []
    t0 = time.perf_counter()
    at = t0
    for i in itertools.count():
        at += rng.expovariate(rate) if arrivals == "poisson" else 1 / rate
        if at - t0 > duration + 1e-9:  # uniform: a float sum of 1/rate gaps overshoots
            break
        delay = at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        behind.append(max(0.0, time.perf_counter() - at))
        tasks.append(asyncio.create_task(one(i, at)))
    started = time.perf_counter() - t0
    await asyncio.gather(*tasks)
    m.elapsed = time.perf_counter() - t0
    m.extra["open_loop"] = {
        "offered_rate_wf_per_s": round(rate, 2),
        "arrivals": arrivals,
        "started": len(tasks),
        "achieved_start_rate_wf_per_s": round(len(tasks) / started, 2) if started else 0.0,
        "harness_behind_schedule_ms": {
            "p99": round(percentile(behind, 99) * 1000, 1) if behind else 0.0,
            "max": round(max(behind, default=0.0) * 1000, 1),
        },
        "peak_in_flight": peak_in_flight,
    }
    return m


async def start_rate_probe(
    system: System, *, count: int, concurrency: int, prefix: str, op_timeout: float
) -> tuple[float, float]:
    """How fast ``open`` workflows can be started and put to sleep: ``count`` of them, due 1 s after the
    probe begins, all awaited. Returns (start calls per second, whole runs per second: start, first
    workflow task, timer, second task and completion, less the 1 s): a start returns before its first
    task ran, and a whole run is about twice the work of a start and its first task."""
    starting = asyncio.Semaphore(concurrency)
    handles: list[Any] = []
    due = time.time() + 1.0

    async def one(i: int) -> None:
        async with starting:
            handles.append(await asyncio.wait_for(system.start("open", due, f"{prefix}-{i}"), op_timeout))

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(count)))
    starts = count / (time.perf_counter() - t0)
    await asyncio.gather(*(asyncio.wait_for(system.result(h), op_timeout) for h in handles))
    runs = count / max(time.perf_counter() - t0 - 1.0, 1e-3)
    return starts, runs


RESULT_LEAD = 2.0
"""``open``: seconds before its due time that a workflow's result is asked for."""
RESULT_CALLS = 1000
"""``open``: result calls in flight at most (the ``timers`` workload has up to 1000 too)."""


async def open_batch(
    system: System, *, count: int, concurrency: int, probe: tuple[float, float], fire_rate: float, hold: float,
    op_timeout: float, prefix: str, rss: Callable[[], dict[str, int]],
) -> Measurement:
    """``count`` workflows asleep at once, then firing ``fire_rate``/s; RSS sampled every 0.5 s (see module doc)."""
    m = Measurement()
    # Every start must be done, and its first workflow task run, before the first due time: twice the
    # time the probe's start calls say, or once the time its whole runs say (about twice the work),
    # whichever is longer, plus ``hold`` seconds with all of them open.
    start_rate, run_rate = probe
    start_window = max(2.0 * count / max(start_rate, 1e-3), count / max(run_rate, 1e-3))
    first_due = time.time() + start_window + hold
    due = [first_due + i / fire_rate for i in range(count)]
    samples: list[tuple[float, dict[str, int]]] = []
    sampling = True

    async def sample() -> None:
        while sampling:
            samples.append((time.time(), await asyncio.to_thread(rss)))
            await asyncio.sleep(0.5)

    baseline = await asyncio.to_thread(rss)
    sampler = asyncio.create_task(sample())
    starting = asyncio.Semaphore(concurrency)
    handles: list[Any] = [None] * count
    t0 = time.perf_counter()

    async def start(i: int) -> None:
        async with starting:
            try:
                handles[i] = await asyncio.wait_for(system.start("open", due[i], f"{prefix}-{i}"), op_timeout)
            except Exception as exc:
                m.error(exc, op_timeout)

    try:
        await asyncio.gather(*(start(i) for i in range(count)))
        all_started = time.time()
        start_phase = time.perf_counter() - t0
        results: list[list[float] | None] = [None] * count
        received: list[float | None] = [None] * count
        waiting = asyncio.Semaphore(RESULT_CALLS)

        async def result(i: int) -> None:
            if handles[i] is None:
                return
            # Ask for the result from RESULT_LEAD s before it is due: a bounded number of calls in flight.
            await asyncio.sleep(max(0.0, due[i] - RESULT_LEAD - time.time()))
            async with waiting:
                try:
                    wait = max(0.0, due[i] - time.time()) + op_timeout
                    results[i] = list(await asyncio.wait_for(system.result(handles[i]), wait))
                    received[i] = time.time()
                except Exception as exc:
                    m.error(exc, op_timeout)

        await asyncio.gather(*(result(i) for i in range(count)))
    finally:
        sampling = False
        await sampler
    m.elapsed = time.perf_counter() - t0
    woke_up = [r for r in results if r is not None]
    wake_lags = [r[1] - due[i] for i, r in enumerate(results) if r is not None]
    m.latencies = [t - due[i] for i, t in enumerate(received) if t is not None]
    m.cycles = m.latencies
    open_samples = [s for t, s in samples if all_started <= t < first_due]
    at_open = open_samples[-1] if open_samples else (samples[-1][1] if samples else baseline)
    peak = {role: max(s.get(role, 0) for _, s in samples) for role in baseline} if samples else baseline
    last_started = max((r[0] for r in woke_up), default=0.0)
    mb = 1024 * 1024
    on_time = sum(1 for x in m.latencies if x <= 1.0)
    m.extra["open"] = {
        "workflows": count,
        "started": sum(h is not None for h in handles),
        "start_phase_s": round(start_phase, 1),
        "start_rate_wf_per_s": round(count / start_phase, 1) if start_phase else 0.0,
        "probe_starts_per_s": round(start_rate, 1),
        "probe_runs_per_s": round(run_rate, 1),
        "fire_rate_wf_per_s": fire_rate,
        "open_at_once_s": round(first_due - all_started, 1),
        # The workflow clock of each first task: all of them ran before the first timer was due.
        "all_open_at_once": bool(woke_up) and len(woke_up) == count and last_started < first_due,
        "rss_mb_before": {role: round(v / mb, 1) for role, v in baseline.items()},
        "rss_mb_all_open": {role: round(v / mb, 1) for role, v in at_open.items()},
        "rss_mb_peak": {role: round(v / mb, 1) for role, v in peak.items()},
        "rss_kb_per_open_wf": {
            role: round((at_open.get(role, 0) - baseline.get(role, 0)) / 1024 / count, 2) for role in baseline
        },
        "on_time_within_1s_pct": round(100 * on_time / count, 2) if count else 0.0,
        # The workflow's own clock on waking - due: the same code, but not the same instant in each
        # system (ours: the workflow task was scheduled; Temporal: a worker started it; DBOS: woke up).
        "wake_lag_ms": {
            "p50": round(percentile(wake_lags, 50) * 1000, 1),
            "p95": round(percentile(wake_lags, 95) * 1000, 1),
            "p99": round(percentile(wake_lags, 99) * 1000, 1),
        } if wake_lags else {},
    }
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


def store_transactions(counters: dict[str, float], completed: int) -> dict[str, float]:
    """Our store's committed history writes per workflow and per activity task dispatched (retries included)."""
    tx = sum(v for k, v in counters.items() if k.startswith("sagas_store_transactions_total"))
    activities = sum(v for k, v in counters.items() if k.startswith("sagas_tasks_dispatched_total") and 'kind="activity"' in k)
    out: dict[str, float] = {}
    if tx and completed:
        out["store_tx_per_wf"] = round(tx / completed, 2)
    if tx and activities:
        out["store_tx_per_activity"] = round(tx / activities, 2)
    return out


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
            "p95": round(percentile(m.latencies, 95) * 1000, 1),
            "p99": round(percentile(m.latencies, 99) * 1000, 1),
            "mean": round(sum(m.latencies) / completed * 1000, 1),
            "max": round(max(m.latencies) * 1000, 1),
        }
        if m.cycles != m.latencies:
            out["cycle_ms"] = {
                "p50": round(percentile(m.cycles, 50) * 1000, 1),
                "p95": round(percentile(m.cycles, 95) * 1000, 1),
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
        out |= store_transactions(counters, completed)
    out |= m.extra
    out["loadavg_1m_before"] = round(load_before[0], 2)
    out["config"] = dict(system.config)
    return out
