"""The benchmark harness's own logic (bench/load.py, bench/report.py) on an in-memory system: no server,
no peer SDK, no charts. The benchmarks themselves never run in tests."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench import load, report


class FakeSystem:
    """Workflows that finish after ``delay`` s; ``open`` ones at their due time (wall clock)."""

    name = "sagas"
    config: dict[str, Any] = {}

    def __init__(self, delay: float = 0.01) -> None:
        self.delay = delay
        self.started = 0

    async def start(self, workload: str, arg: Any, workflow_id: str) -> Any:
        self.started += 1
        return asyncio.ensure_future(self._run(workload, arg))

    async def _run(self, workload: str, arg: Any) -> Any:
        if workload == "open":
            started = time.time()
            await asyncio.sleep(max(0.0, arg - started))
            return [started, time.time()]
        await asyncio.sleep(self.delay)
        return arg

    async def result(self, handle: Any) -> Any:
        return await handle

    async def signal(self, handle: Any, name: str, arg: Any) -> None: ...

    async def wait_ready(self, handle: Any) -> None: ...

    def cpu_seconds(self) -> dict[str, float]:
        return {"harness": 0.0}

    async def counters(self) -> dict[str, float]:
        return {}

    def rss_bytes(self) -> dict[str, int]:
        return {"server": 100 * 2**20 + 1024 * self.started, "worker": 50 * 2**20}


async def test_open_loop_starts_at_the_offered_rate_whatever_completes() -> None:
    system = FakeSystem(delay=0.3)  # slower than the gap between starts: many in flight
    m = await load.open_loop(system, "one_activity", rate=50, duration=1.0, arrivals="uniform", op_timeout=5, prefix="t")
    assert m.errors == 0
    assert len(m.latencies) == m.extra["open_loop"]["started"] == 50
    assert m.extra["open_loop"]["peak_in_flight"] >= 10
    assert min(m.latencies) >= 0.3


async def test_open_batch_has_all_open_at_once_then_reports_memory_and_lag() -> None:
    system = FakeSystem()
    m = await load.open_batch(
        system, count=50, concurrency=8, probe=(500, 250), fire_rate=200, hold=0.6, op_timeout=5, prefix="t",
        rss=system.rss_bytes,
    )
    o = m.extra["open"]
    assert m.errors == 0 and len(m.latencies) == 50
    assert o["all_open_at_once"] and o["started"] == 50
    assert o["rss_kb_per_open_wf"]["server"] == 1.0 and o["rss_kb_per_open_wf"]["worker"] == 0.0
    assert o["on_time_within_1s_pct"] == 100.0
    summary = load.summarize(system, m, {"harness": 0.0}, (0.0, 0.0, 0.0))
    assert set(summary["latency_ms"]) >= {"p50", "p95", "p99"}
    assert summary["open"] is o


def test_store_transactions_per_activity() -> None:
    counters = {
        'sagas_store_transactions_total{backend="sqlite"}': 40.0,
        'sagas_tasks_dispatched_total{kind="activity"}': 10.0,
        'sagas_tasks_dispatched_total{kind="workflow"}': 20.0,
    }
    assert load.store_transactions(counters, 10) == {"store_tx_per_wf": 4.0, "store_tx_per_activity": 4.0}


def test_report_tables_show_p95_open_memory_and_durability() -> None:
    lat = {"p50": 1.0, "p95": 2.0, "p99": 3.0}
    closed = {
        "workload": "one_activity", "params": {}, "systems": {
            "sagas": {"completed": 10, "throughput_wf_per_s": 5.0, "latency_ms": lat, "store_tx_per_activity": 4.0,
                      "config": {"durability": "fsync"}, "durability_measured": {"journal_mode": "wal"}},
            "temporal-sandbox": {"completed": 10, "throughput_wf_per_s": 2.5, "latency_ms": lat},
        },
        "ratios": {"sagas/temporal-sandbox": report.ratios(
            {"completed": 1, "throughput_wf_per_s": 5.0, "latency_ms": lat},
            {"completed": 1, "throughput_wf_per_s": 2.5, "latency_ms": lat},
        )},
    }
    opened = {"workload": "open", "params": {"workflows": 3}, "systems": {"dbos": {
        "completed": 3, "throughput_wf_per_s": 1.0, "latency_ms": lat, "errors": 0,
        "open": {"started": 3, "all_open_at_once": True, "start_rate_wf_per_s": 9.0, "rss_mb_before": {"harness": 1.0},
                 "rss_mb_all_open": {"harness": 2.0}, "rss_mb_peak": {"harness": 2.0},
                 "rss_kb_per_open_wf": {"harness": 341.33}, "fire_rate_wf_per_s": 100.0,
                 "on_time_within_1s_pct": 100.0},
    }, "sagas": {"failed": "RuntimeError: boom\nline two | pipe", "completed": 0}}}
    table = report.table({"one_activity": closed, "open10k": opened})
    assert "| one_activity | sagas | 10 | 0 | 5.0 | 1.0 | 2.0 | 3.0 | - | - | 4.0 |" in table
    assert "| one_activity | sagas/temporal-sandbox | 2.00x | 1.00x | 1.00x | 1.00x |" in table
    assert "open10k" not in table
    rows = report.open_table({"open10k": opened}).splitlines()
    assert any(r.startswith("| open10k | dbos | 3 | yes | 9.0 | 1 -> 2 | 341.33 |") for r in rows)
    assert any("failed: RuntimeError: boom line two / pipe" in r for r in rows)
    assert "| sagas | fsync | wal |" in report.durability({"one_activity": closed})
