"""Throughput with 1, 2 and 3 orchestrator processes sharing the history shards.

    python -m bench.scale_out                                  # 1, 2, 3 processes -> bench/results/scale_out.json
    python -m bench.scale_out --processes 1,3 --duration 10 --concurrency 30

Each round starts ``N`` orchestrator processes (``sagas server start --config``,
all services, 8 shards) on one MongoDB database (the SecantusDB stand-in, or a real
replica set named by ``SAGAS_TEST_MONGODB_URL``) and one RabbitMQ node, waits
until the shards settled on the assignment, starts one ``bench.worker`` process
(it talks to RabbitMQ directly), and runs the closed-loop ``one_activity``
workload of :mod:`bench.load` with one client per frontend (start calls
round-robin; a request for a shard another process owns is forwarded).

Besides throughput and latency it records the CPU seconds of every process of
the topology (each orchestrator, the worker, the store, the broker, the load
generator), so the table says where the time goes: on a 2-core machine a sum
near ``2 x elapsed`` means the machine, not the design, is the limit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import platform
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import load
from bench.systems import (
    ManagedProcess,
    free_port,
    harness_cpu,
    parse_counters,
    poll_until,
    process_tree_cpu,
    process_tree_rss,
)
from bench.workloads import build
from orchestrator.membership import assign_shards
from orchestrator.persistence.base import HistoryStore, open_store
from tests.e2e.test_scale_out import (
    CONFIG as CLUSTER_CONFIG,  # the same cluster config the scale-out test runs
)

RESULTS = Path(__file__).parent / "results"
SHARDS = 8


class ClusterSystem:
    """``N`` orchestrator processes + a worker + one client per frontend (the bench.load System)."""

    def __init__(self, n: int, mongo: str, broker: str, tmp: Path, max_concurrent: int) -> None:
        import sagas

        self.name = f"sagas x{n}"
        self.n, self.mongo, self.tmp = n, mongo, tmp
        self.workloads = build(sagas)
        config = tmp / f"cluster-{n}.yaml"
        config.write_text(CLUSTER_CONFIG.format(shards=SHARDS, mongo=mongo, broker=broker, lease=5))
        self.ports = [free_port() for _ in range(n)]
        self.servers: list[ManagedProcess] = []
        self.ready = [tmp / f"orc-{n}-{i}.ready" for i in range(n)]
        for i, port in enumerate(self.ports):
            os.environ["SAGAS_FRONTEND__PORT"], os.environ["SAGAS_CLUSTER__MEMBER_ID"] = str(port), f"orc-{i}"
            self.servers.append(ManagedProcess(
                f"orchestrator {i}",
                [sys.executable, "-m", "sagas.cli.server", "start", "--config", str(config),
                 "--ready-file", str(self.ready[i])],
                tmp / f"orc-{n}-{i}.log",
            ))  # fmt: skip
        for key in ("SAGAS_FRONTEND__PORT", "SAGAS_CLUSTER__MEMBER_ID"):
            os.environ.pop(key, None)
        self.worker: ManagedProcess | None = None
        self.clients: list[Any] = []
        self._next = itertools.count()
        self.config: dict[str, Any] = {"processes": n, "shards": SHARDS, "worker_max_concurrent": max_concurrent}
        self.max_concurrent = max_concurrent

    def processes(self) -> list[ManagedProcess]:
        return [*self.servers, *([self.worker] if self.worker else [])]

    async def open(self, store: HistoryStore) -> float:
        """Start everything; returns the seconds until the shards settled on the assignment."""
        from sagas.client import Client

        async def all_ready() -> bool | None:
            return True if all(r.exists() for r in self.ready) else None

        await poll_until("orchestrators", all_ready, self.servers, timeout=120)
        t0 = time.monotonic()
        expected = assign_shards(SHARDS, [f"orc-{i}" for i in range(self.n)])

        async def settled() -> bool | None:
            now = time.time()
            owners = {s.shard_id: s.owner for s in await store.list_shards() if s.lease_until > now}
            return True if owners == expected else None

        await poll_until("shard assignment", settled, self.servers, timeout=60)
        settle = time.monotonic() - t0
        for port in self.ports:
            self.clients.append(await Client.connect(f"127.0.0.1:{port}"))
        self.worker = ManagedProcess(
            "worker",
            [sys.executable, "-m", "bench.worker", "--system", "sagas", "--target", f"127.0.0.1:{self.ports[0]}",
             "--max-concurrent", str(self.max_concurrent)],
            self.tmp / f"worker-{self.n}.log",
        )  # fmt: skip
        return settle

    async def start(self, workload: str, arg: Any, workflow_id: str) -> Any:
        from bench.workloads import TASK_QUEUE

        client = self.clients[next(self._next) % len(self.clients)]
        cls: Any = self.workloads.by_workload[workload]
        args = () if arg is None else (arg,)
        return await client.start_workflow(cls.run, *args, id=workflow_id, task_queue=TASK_QUEUE)

    async def result(self, handle: Any) -> Any:
        return await handle.result()

    async def signal(self, handle: Any, name: str, arg: Any) -> None:
        await handle.signal(name, arg)

    async def wait_ready(self, handle: Any) -> None:
        await handle.query("waiting")

    def cpu_seconds(self) -> dict[str, float]:
        out = {f"orchestrator_{i}": process_tree_cpu(p.pid) for i, p in enumerate(self.servers)}
        if self.worker is not None:
            out["worker"] = process_tree_cpu(self.worker.pid)
        out["harness"] = harness_cpu()
        return out

    def rss_bytes(self) -> dict[str, int]:
        out = {f"orchestrator_{i}": process_tree_rss(p.pid) for i, p in enumerate(self.servers)}
        if self.worker is not None:
            out["worker"] = process_tree_rss(self.worker.pid)
        return out

    async def counters(self) -> dict[str, float]:
        import httpx

        total: dict[str, float] = {}
        async with httpx.AsyncClient() as http:
            for port in self.ports:
                for k, v in parse_counters((await http.get(f"http://127.0.0.1:{port}/metrics")).text).items():
                    total[k] = total.get(k, 0.0) + v
        return total

    async def aclose(self) -> None:
        for c in self.clients:
            with contextlib.suppress(Exception):
                await c.close()
        for p in reversed(self.processes()):
            await p.stop()


def _infra_cpu(pids: dict[str, int]) -> dict[str, float]:
    return {role: process_tree_cpu(pid) for role, pid in pids.items()}


async def measure(n: int, args: argparse.Namespace, mongo_base: str, rabbit_url: str, infra: dict[str, int]) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:6]
    mongo = mongo_base.replace("/DBNAME?", f"/scale{n}_{tag}?")
    broker = f"{rabbit_url}?prefix=bench&prefetch=32"  # one dead-letter prefix: every round shares sagas.completions
    store = await open_store(mongo)
    with tempfile.TemporaryDirectory(prefix=f"bench-scale-{n}-") as tmp:
        system = ClusterSystem(n, mongo, broker, Path(tmp), args.max_concurrent)
        try:
            settle = await system.open(store)

            def watch() -> None:
                for p in system.processes():
                    p.check_alive()

            await load.warm_up(system, "one_activity", prefix=f"warm-{n}-{tag}", watch=watch, timeout=120)
            cpu0, infra0, counters0 = system.cpu_seconds(), _infra_cpu(infra), await system.counters()
            load_before = os.getloadavg()
            m = await load.closed_loop(system, "one_activity", concurrency=args.concurrency,
                                       duration=args.duration, op_timeout=60, prefix=f"run-{n}-{tag}")  # fmt: skip
            cpu1, infra1, counters1 = system.cpu_seconds(), _infra_cpu(infra), await system.counters()
            cpu = {k: cpu1[k] - cpu0.get(k, 0.0) for k in cpu1}
            cpu |= {k: infra1[k] - infra0[k] for k in infra1}
            counters = {k: v - counters0.get(k, 0.0) for k, v in counters1.items()}
            out = load.summarize(system, m, cpu, load_before, counters)
            out["shards_settled_s"] = round(settle, 2)
            busiest = max(cpu, key=lambda k: cpu[k])
            total = sum(cpu.values())
            out["cpu_share_of_machine"] = round(total / (m.elapsed * (os.cpu_count() or 1)), 2)
            out["busiest"] = {"role": busiest, "cpu_s": round(cpu[busiest], 2),
                              "share_of_all_cpu": round(cpu[busiest] / total, 2) if total else 0.0}  # fmt: skip
            return out
        finally:
            await system.aclose()
            await store.aclose()


def markdown(doc: dict[str, Any]) -> str:
    lines = [
        "# Scale-out: 1, 2 and 3 orchestrator processes",
        "",
        f"Run {doc['run_at']} on {doc['host']['cpus']} cores; `python -m bench.scale_out` "
        f"(one_activity, closed loop, {doc['params']['concurrency']} clients, {doc['params']['duration_s']} s; "
        f"store: {doc['store']}; broker: RabbitMQ {doc['broker']}).",
        "",
        "| processes | wf/s | p50 ms | p99 ms | CPU of the machine | busiest process (share of all CPU) | CPU ms/wf by role |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in doc["results"]:
        lat = r.get("latency_ms", {})
        per = ", ".join(f"{k} {v}" for k, v in r.get("cpu_ms_per_wf", {}).items())
        busiest = r.get("busiest", {})
        lines.append(
            f"| {r['config']['processes'] if 'config' in r else '?'} | {r['throughput_wf_per_s']} | {lat.get('p50')} | "
            f"{lat.get('p99')} | {r.get('cpu_share_of_machine', '?')} | {busiest.get('role')} "
            f"({busiest.get('share_of_all_cpu')}) | {per} |"
        )
    lines += ["", doc.get("finding", ""), ""]
    return "\n".join(lines)


def finding(results: list[dict[str, Any]]) -> str:
    """One paragraph on where the bottleneck is, from the measured CPU split."""
    ok = [r for r in results if r.get("completed")]
    if not ok:
        return "No round completed."
    parts = []
    for r in ok:
        roles = r.get("cpu_ms_per_wf", {})
        orch = sum(v for k, v in roles.items() if k.startswith("orchestrator_"))
        parts.append(
            f"{r['config']['processes']} process(es): {r['throughput_wf_per_s']} wf/s, orchestrators together "
            f"{orch:.1f} ms CPU per workflow, store {roles.get('store', 0)}, broker {roles.get('broker', 0)}, "
            f"worker {roles.get('worker', 0)}"
        )
    cores = {r["config"]["processes"]: r["busiest"]["cpu_s"] / r["elapsed_s"] for r in ok if r.get("elapsed_s")}
    roles = {r["busiest"]["role"] for r in ok}
    if len(roles) == 1 and min(cores.values()) >= 0.8:
        role = roles.pop()
        verdict = (
            f"In every round the {role} process is busy {min(cores.values()):.0%}-{max(cores.values()):.0%} of one "
            f"core: it is single-threaded and it is the bottleneck, so more orchestrator processes cannot add "
            f"throughput here; what they add is CPU (request forwarding between frontends and lease traffic). "
        )
        if role == "store":
            verdict += (
                "The store is the SecantusDB stand-in, a Python implementation of the MongoDB protocol; on a real "
                "replica set (multi-threaded, and on other machines) the same topology is bound by orchestrator CPU, "
                "which the shards spread over the processes."
            )
    else:
        verdict = "No single process is saturated: the limit is latency (store round trips per task)."
    return "Where the time goes (CPU ms per workflow): " + "; ".join(parts) + ". " + verdict


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", default="1,2,3")
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=30)
    parser.add_argument("--max-concurrent", type=int, default=100)
    parser.add_argument("--out", type=Path, default=RESULTS / "scale_out.json")
    args = parser.parse_args(argv)
    counts = [int(x) for x in args.processes.split(",")]

    from tests.contract.conftest import SecantusServer
    from tests.services import _read_pid, _start_rabbitmq, _stop

    real = os.environ.get("SAGAS_TEST_MONGODB_URL")
    secantus = None
    rabbit = _start_rabbitmq()
    try:
        infra: dict[str, int] = {}
        if real:
            host, _, query = real.partition("?")
            mongo_base, store_name = f"{host.rstrip('/')}/DBNAME?{query}", "MongoDB (SAGAS_TEST_MONGODB_URL)"
        else:
            secantus = SecantusServer()
            secantus.start()
            assert secantus.proc is not None
            infra["store"] = secantus.proc.pid
            mongo_base, store_name = secantus.url("DBNAME"), "SecantusDB stand-in"
        beam = _read_pid(Path(rabbit.env["RABBITMQ_PID_FILE"]))
        if beam:
            infra["broker"] = beam
        results = []
        for n in counts:
            print(f"[scale_out] {n} process(es): running ...", flush=True)
            try:
                r = asyncio.run(measure(n, args, mongo_base, rabbit.url, infra))
            except Exception as exc:
                r = {"completed": 0, "errors": 1, "throughput_wf_per_s": 0.0, "config": {"processes": n},
                     "failed": f"{type(exc).__name__}: {exc}"[:2000]}  # fmt: skip
            results.append(r)
            print(f"[scale_out] {n}: {r['throughput_wf_per_s']} wf/s, {r.get('latency_ms')}, busiest {r.get('busiest')}",
                  flush=True)  # fmt: skip
        doc = {
            "what": "one_activity throughput with N orchestrator processes sharing 8 history shards",
            "run_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "host": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "params": {"duration_s": args.duration, "concurrency": args.concurrency},
            "store": store_name,
            "broker": "(a local node)",
            "results": results,
        }
        doc["finding"] = finding(results)
        args.out.write_text(json.dumps(doc, indent=2) + "\n")
        args.out.with_suffix(".md").write_text(markdown(doc))
        print(markdown(doc))
        return 0 if all(r.get("completed") for r in results) else 1
    finally:
        if secantus is not None:
            secantus.stop()
        _stop(rabbit)


if __name__ == "__main__":
    raise SystemExit(main())
