"""Side-by-side benchmarks: sagas vs Temporal (and DBOS), same workflows, same load, same machine.

    python -m bench suite                               # everything in bench/results/ (~35 min)
    python -m bench run --workload one_activity --duration 20 --systems sagas,temporal,dbos
    python -m bench run --workload all                  # every workload, sagas and temporal
    python -m bench run --workload timers --timers 300  # fewer timer workflows
    python -m bench run --workload one_activity --systems sagas --profile   # py-spy our server + worker
    python -m bench run --workload open --open 10000 --systems sagas,temporal,dbos   # 10k open workflows
    python -m bench run --workload one_activity --systems sagas,sagas-rabbitmq,sagas-kafka   # real brokers
    python -m bench run --workload one_activity --rate 20       # open loop: 20 starts/s, Poisson arrivals
    python -m bench run --workload one_activity --rate-of-peak 0.5   # our closed-loop peak first, then 50% of it
    python -m bench report                              # README.md + charts from the JSON files
    python -m bench brokers                             # tasks/s + latency per broker (bench/brokers.py)

Each system runs alone, one after the other, under the same load generator
(:mod:`bench.load`); results go to ``bench/results/<workload>.json`` with the
ratio sagas/temporal, then the table and the charts are regenerated. A
``--profile`` run writes py-spy profiles of our server and worker to
``bench/results/profile/`` and leaves the result JSON alone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import load, report
from bench.profile import summarize_raw
from bench.systems import BROKER_KINDS, SdkSystem, System, open_sagas, open_temporal, sqlite_journal_mode

SYSTEMS = ("sagas", "sagas-rabbitmq", "sagas-kafka", "temporal", "temporal-sandbox", "dbos")
"""``sagas-<broker>``: our server on that broker; ``temporal-sandbox``: temporalio's default (sandboxed) runner."""
DB_FILES = {"sagas": "sagas.db", "temporal": "temporal.db", "dbos": "dbos.sqlite"}
PROFILES = report.RESULTS / "profile"


@contextlib.asynccontextmanager
async def open_system(name: str, tmp: Path, max_concurrent: int) -> AsyncIterator[System]:
    if name == "sagas" or name.removeprefix("sagas-") in BROKER_KINDS:
        async with open_sagas(tmp, max_concurrent, broker=name.removeprefix("sagas-") if name != "sagas" else None) as s:
            yield s
    elif name in ("temporal", "temporal-sandbox"):
        async with open_temporal(tmp, max_concurrent, sandbox=name == "temporal-sandbox") as s:
            yield s
    else:
        from bench.dbos_system import open_dbos  # optional dependency

        async with open_dbos(tmp, max_concurrent) as d:
            yield d


def _watch(system: System) -> Callable[[], None]:
    def check() -> None:
        if isinstance(system, SdkSystem):
            for p in system.processes():
                p.check_alive()

    return check


def _py_spy() -> str:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy") or "py-spy"


class PySpy:
    """py-spy attached to one process for the measured phase (stopped with SIGINT, which writes the file)."""

    def __init__(self, pid: int, out: Path) -> None:
        self.out = out
        self.proc = subprocess.Popen(
            # --gil: only the thread holding the GIL, i.e. what the event loop spends its one core on
            # (threads blocked in queue.get / Condition.wait would otherwise show up as busy).
            [_py_spy(), "record", "--pid", str(pid), "--gil", "--format", "raw", "--rate", "200", "-o", str(out)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    async def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        _, err = await asyncio.to_thread(self.proc.communicate)
        if not self.out.exists():
            print(f"py-spy wrote nothing: {err.decode(errors='replace')[-500:]}", file=sys.stderr)


async def measure(name: str, args: argparse.Namespace, workload: str, stamp: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp_dir:
        tmp = Path(tmp_dir)
        async with open_system(name, tmp, args.max_concurrent) as system:
            prefix = f"{workload}-{name}-{stamp}"
            await load.warm_up(system, workload, prefix=f"{prefix}-warm", watch=_watch(system), timeout=90)
            spies: list[PySpy] = []
            if args.profile and isinstance(system, SdkSystem):
                PROFILES.mkdir(parents=True, exist_ok=True)
                spies = [PySpy(p.pid, PROFILES / f"{workload}-{name}-{p.role.split()[-1]}.raw.txt") for p in system.processes()]
            load_before = os.getloadavg()
            counters0 = await system.counters()
            cpu0 = system.cpu_seconds()
            if workload == "timers":
                m = await load.timers_batch(
                    system, count=args.timers, sleep=1.0, concurrency=args.concurrency,
                    op_timeout=args.op_timeout, prefix=prefix,
                )
            elif workload == "open":
                probe = await load.start_rate_probe(
                    system, count=min(args.open, 100), concurrency=args.concurrency, prefix=f"{prefix}-probe",
                    op_timeout=args.op_timeout,
                )
                counters0, cpu0 = await system.counters(), system.cpu_seconds()
                m = await load.open_batch(
                    system, count=args.open, concurrency=args.concurrency, probe=probe,
                    fire_rate=args.open_fire_rate, hold=args.open_hold, op_timeout=args.op_timeout,
                    prefix=prefix, rss=system.rss_bytes,
                )
            elif args.rate:
                m = await load.open_loop(
                    system, workload, rate=args.rate, duration=args.duration, arrivals=args.arrivals,
                    op_timeout=args.op_timeout, prefix=prefix,
                )
            else:
                m = await load.closed_loop(
                    system, workload, concurrency=args.concurrency, duration=args.duration,
                    op_timeout=args.op_timeout, prefix=prefix,
                )
            cpu1 = system.cpu_seconds()
            counters1 = await system.counters()
            rss_end = system.rss_bytes()
            for spy in spies:
                await spy.stop()
                if spy.out.exists():
                    summary = summarize_raw(spy.out.read_text())
                    spy.out.with_suffix("").with_suffix(".top.txt").write_text(summary)
                    print(f"profile: {spy.out}\n{summary[:3000]}")
            cpu = {role: cpu1[role] - cpu0.get(role, 0.0) for role in cpu1}
            counted = {k: v - counters0.get(k, 0.0) for k, v in counters1.items() if v - counters0.get(k, 0.0)}
            result = load.summarize(system, m, cpu, load_before, counted)
            result["rss_mb_end"] = {role: round(v / 2**20, 1) for role, v in rss_end.items()}
            if isinstance(system, SdkSystem) and (m.errors or args.verbose):
                result["logs_tail"] = {p.role: p.tail(10) for p in system.processes()}
        # Stopped: what its store file says about its durability (WAL persists in the file).
        db = tmp / DB_FILES[name.split("-")[0]]
        result["durability_measured"] = {"journal_mode": sqlite_journal_mode(db)}
        return result


def code_version() -> dict[str, Any]:
    """The commit measured, and how many files differ from it (the working tree is what runs)."""
    def git(*cmd: str) -> str:
        out = subprocess.run(["git", *cmd], capture_output=True, text=True, cwd=report.RESULTS.parent.parent, check=False)
        return out.stdout.strip()

    changed = [line for line in git("status", "--porcelain", "--", "orchestrator", "brokers", "sagas").splitlines() if line]
    return {"commit": git("rev-parse", "--short", "HEAD"), "uncommitted_files_in_orchestrator_brokers_sagas": len(changed)}


def run_workload(workload: str, systems: list[str], args: argparse.Namespace) -> dict[str, Any]:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    params: dict[str, Any] = {
        "rounds": args.rounds, "concurrency": args.concurrency, "worker_max_concurrent": args.max_concurrent,
    }
    if workload == "timers":
        params |= {"workflows": args.timers, "sleep_s": 1.0}
    elif workload == "open":
        params |= {"workflows": args.open, "fire_rate_wf_per_s": args.open_fire_rate, "hold_s": args.open_hold,
                   "start_concurrency": args.concurrency}
    else:
        params |= {"duration_s": args.duration}
    if args.rate and workload != "open":
        params |= {"open_loop_rate_wf_per_s": round(args.rate, 2), "arrivals": args.arrivals}
        if getattr(args, "peak", None):
            params["rate_fraction_of_peak"] = args.peak["fraction"]
            params["sagas_peak_wf_per_s"] = args.peak["throughput_wf_per_s"]
    doc: dict[str, Any] = {
        "workload": workload,
        "description": load.DESCRIPTIONS[workload] + (
            f"; open loop: {args.rate:g} starts/s ({args.arrivals} arrivals) for {args.duration:g} s whatever "
            "completes, latency = scheduled start -> result" if args.rate and workload != "open" else ""
        ),
        "run_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "host": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "params": params,
        "code": code_version(),
        "note": "systems run back-to-back on a shared machine (other work may add noise)",
        "systems": {},
    }
    if args.rate and workload != "open" and getattr(args, "peak", None):
        doc["peak"] = args.peak  # the closed-loop run the rate was derived from
    per_system: dict[str, list[dict[str, Any]]] = {name: [] for name in systems}
    for round_no in range(args.rounds):
        # Alternate the order so that neither system always runs on a warmer (or busier) machine.
        order = systems if round_no % 2 == 0 else systems[::-1]
        for name in order:
            print(f"[{workload}] round {round_no + 1}/{args.rounds} {name}: running ...", flush=True)
            t0 = time.perf_counter()
            try:
                # A fresh event loop per run: nothing one system leaves behind (DBOS shuts the
                # loop's default executor down on destroy) can touch the next one.
                result = asyncio.run(measure(name, args, workload, f"{stamp}-r{round_no}"))
            except Exception as exc:
                result = {"system": name, "completed": 0, "errors": 1, "throughput_wf_per_s": 0.0,
                          "failed": f"{type(exc).__name__}: {exc}"[:2000]}
                print(f"[{workload}] {name}: FAILED {result['failed']}", file=sys.stderr, flush=True)
            result["round"] = round_no + 1
            per_system[name].append(result)
            lat = result.get("latency_ms", {})
            print(
                f"[{workload}] round {round_no + 1} {name}: {result['completed']} done, {result['errors']} errors, "
                f"{result['throughput_wf_per_s']} wf/s, p50 {lat.get('p50')} ms, p99 {lat.get('p99')} ms "
                f"({time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
    doc["order"] = [" -> ".join(systems if r % 2 == 0 else systems[::-1]) for r in range(args.rounds)]
    doc["systems"] = {name: report.representative(results) for name, results in per_system.items()}
    doc["ratios_by_round"] = report.ratios_by_round(per_system)
    return doc


def run(args: argparse.Namespace, *, regenerate: bool = True) -> int:
    workloads = list(load.WORKLOADS) if args.workload == "all" else args.workload.split(",")
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    for s in systems:
        if s not in SYSTEMS:
            raise SystemExit(f"unknown system {s!r}; choose from {', '.join(SYSTEMS)}")
    for w in workloads:
        if w not in load.WORKLOADS:
            raise SystemExit(f"unknown workload {w!r}; choose from {', '.join(load.WORKLOADS)} or all")
    if args.name and len(workloads) != 1:
        raise SystemExit("--name names the results of one workload; give a single --workload")
    if args.rate_of_peak:
        if len(workloads) != 1 or workloads[0] not in load.CLOSED_LOOP:
            raise SystemExit("--rate-of-peak needs a single closed-loop --workload (one_activity, saga3, signal)")
        args = measure_peak(workloads[0], args)
    failed = False
    for workload in workloads:
        doc = run_workload(workload, systems, args)
        failed |= any("failed" in r for s in doc["systems"].values() for r in s.get("rounds", [s]))
        if args.profile:
            continue
        path = report.write_workload(args.name or workload, doc, args.results_dir)
        print(f"[{workload}] ratios {doc['ratios']} -> {path}")
    if regenerate and not args.profile:
        for path in report.regenerate(args.results_dir):
            print(f"wrote {path}")
    return 1 if failed else 0


def measure_peak(workload: str, args: argparse.Namespace) -> argparse.Namespace:
    """Our closed-loop peak (``--concurrency`` clients, one round), then ``--rate`` = that x ``--rate-of-peak``."""
    print(f"[{workload}] measuring the sagas peak (closed loop, {args.concurrency} clients) ...", flush=True)
    closed = argparse.Namespace(**{**vars(args), "rate": None, "rate_of_peak": None, "rounds": 1})
    peak_doc = run_workload(workload, ["sagas"], closed)
    peak = peak_doc["systems"]["sagas"]
    if not peak.get("completed"):
        raise SystemExit(f"[{workload}] the sagas peak run failed: {peak.get('failed') or peak.get('error_examples')}")
    rate = round(peak["throughput_wf_per_s"] * args.rate_of_peak, 2)
    print(f"[{workload}] sagas peak {peak['throughput_wf_per_s']} wf/s -> open loop at {rate} wf/s", flush=True)
    summary = {"system": "sagas", "throughput_wf_per_s": peak["throughput_wf_per_s"], "latency_ms": peak.get("latency_ms"),
               "concurrency": args.concurrency, "duration_s": args.duration, "fraction": args.rate_of_peak}
    return argparse.Namespace(**{**vars(args), "rate": rate, "rate_of_peak": None, "peak": summary})


SUITE: list[tuple[str, dict[str, Any]]] = [
    ("one_activity", {}),
    ("one_activity_c1", {"workload": "one_activity", "concurrency": 1}),
    ("saga3", {}),
    ("signal", {}),
    ("timers", {"timers": 300}),
    ("timers_1000", {"workload": "timers", "timers": 1000}),
    ("open10k", {"workload": "open", "rounds": 1}),  # --open workflows (default 10000)
    ("one_activity_brokers", {"workload": "one_activity", "systems": "sagas,sagas-rabbitmq,sagas-kafka"}),
    ("one_activity_rate50", {"workload": "one_activity", "rate_of_peak": 0.5}),
]
"""What ``python -m bench suite`` runs: the result files committed in bench/results/, by name."""


def run_suite(args: argparse.Namespace) -> int:
    failed = 0
    only = set(args.only.split(",")) if args.only else None
    for name, overrides in SUITE:
        if only is not None and name not in only:
            continue
        one = argparse.Namespace(**{**vars(args), "workload": name, "name": name, **overrides})
        failed |= run(one, regenerate=False)
    for path in report.regenerate(args.results_dir):
        print(f"wrote {path}")
    return failed


def _run_options(p: argparse.ArgumentParser, *, systems: str, rounds: int) -> None:
    p.add_argument("--systems", default=systems, help=f"comma list of {', '.join(SYSTEMS)} (run in this order)")
    p.add_argument("--duration", type=float, default=20.0, help="measured seconds per system (closed-loop workloads)")
    p.add_argument("--concurrency", type=int, default=32, help="concurrent clients (timers: concurrent start calls)")
    p.add_argument("--rounds", type=int, default=rounds, help="rounds of every system, order alternating each round")
    p.add_argument("--max-concurrent", type=int, default=100, help="worker's concurrent workflow tasks / activities")
    p.add_argument("--op-timeout", type=float, default=60.0, help="seconds before one workflow counts as an error")
    p.add_argument("--results-dir", type=Path, default=report.RESULTS, help="where the JSON, table and charts go")
    p.add_argument("--verbose", action="store_true", help="keep the last log lines of every process in the JSON")
    p.add_argument("--open", type=int, default=10000, help="open workload: workflows open at once")
    p.add_argument("--open-fire-rate", type=float, default=100.0, help="open workload: timers due per second once all are open")
    p.add_argument("--open-hold", type=float, default=10.0, help="open workload: seconds all stay open before the first is due")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run workloads against systems, write bench/results/")
    r.add_argument("--workload", default="one_activity", help=f"{', '.join(load.WORKLOADS)}, a comma list, or all")
    _run_options(r, systems="sagas,temporal", rounds=1)
    r.add_argument("--timers", type=int, default=1000, help="workflows of the timers workload")
    r.add_argument("--profile", action="store_true", help="py-spy our server and worker; do not write results")
    r.add_argument("--name", help="results file stem (default: the workload), e.g. one_activity_c1")
    r.add_argument("--rate", type=float, help="open loop: start this many workflows per second for --duration")
    r.add_argument("--arrivals", choices=load.ARRIVALS, default="poisson", help="open loop: inter-arrival times")
    r.add_argument("--rate-of-peak", type=float, help="measure our closed-loop peak first, then --rate = peak x this")
    s = sub.add_parser("suite", help=f"every committed result ({', '.join(n for n, _ in SUITE)}), 3 rounds")
    _run_options(s, systems="sagas,temporal,temporal-sandbox,dbos", rounds=3)
    s.add_argument("--only", help="comma list of suite steps to run (default: all)")
    s.set_defaults(profile=False, timers=1000, rate=None, arrivals="poisson", rate_of_peak=None)
    rep = sub.add_parser("report", help="regenerate bench/results/README.md and the charts from the JSON files")
    rep.add_argument("--results-dir", type=Path, default=report.RESULTS)
    b = sub.add_parser("brokers", help="tasks/s and dispatch latency per broker (bench/brokers.py)")
    b.add_argument("--brokers", default="memory,local,rabbitmq,kafka,sqs", help="comma list")
    b.add_argument("--tasks", type=int, default=2000, help="tasks per broker")
    b.add_argument("--window", type=int, default=32, help="tasks in flight")
    b.add_argument("--results-dir", type=Path, default=report.RESULTS)
    args = parser.parse_args()
    if args.command == "brokers":
        from bench import brokers

        names = [n for n in args.brokers.split(",") if n]
        for path in asyncio.run(brokers.run(names, args.tasks, args.window, args.results_dir)):
            print(f"wrote {path}")
        return
    if args.command == "report":
        for path in report.regenerate(args.results_dir):
            print(f"wrote {path}")
        return
    raise SystemExit(run_suite(args) if args.command == "suite" else run(args))


if __name__ == "__main__":
    main()
