"""Metrics for any store: per-method calls, errors and latency, transactions and rows.

:class:`InstrumentedHistoryStore` keeps its own counters as plain attributes
(:attr:`~InstrumentedHistoryStore.stats`, ``transactions``, ``rows``; handy in
tests and benchmarks) and also feeds Prometheus metrics named ``sagas_store_*``
(labelled by backend), exported with the process's other metrics.

The Prometheus metrics are created once, when this module is imported, and
shared by every instance: creating many stores (as tests do) never registers a
metric twice.

>>> from orchestrator.persistence.memory import MemoryHistoryStore
>>> store = InstrumentedHistoryStore(MemoryHistoryStore())
>>> store.transactions
0
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from prometheus_client import Counter, Histogram

from orchestrator.persistence._delegating import _DelegatingStore
from orchestrator.persistence.base import ExecutionWrite, HistoryStore

T = TypeVar("T")

STORE_CALLS = Counter(
    "sagas_store_calls",
    "History store method calls, by outcome (ok or the error class).",
    ["backend", "method", "outcome"],
)
STORE_LATENCY = Histogram(
    "sagas_store_latency_seconds",
    "History store method latency.",
    ["backend", "method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
STORE_TRANSACTIONS = Counter(
    "sagas_store_transactions",
    "History writes committed (events + state + tasks in one transaction).",
    ["backend"],
)
STORE_ROWS = Counter(
    "sagas_store_rows",
    "Rows appended by committed history writes, by kind.",
    ["backend", "kind"],
)


@dataclass
class MethodStats:
    """Counters of one store method."""

    calls: int = 0
    errors: int = 0
    seconds: float = 0.0
    """Total time spent in the method, failed calls included."""


class InstrumentedHistoryStore(_DelegatingStore):
    """Wraps ``inner`` and counts what goes through it (see module docstring)."""

    def __init__(self, inner: HistoryStore, *, backend: str | None = None) -> None:
        super().__init__(inner)
        self.backend = backend or inner.url.split(":", 1)[0] or type(inner).__name__
        self.stats: dict[str, MethodStats] = {}
        """Method name -> its counters, for every method called at least once."""
        self.transactions = 0
        """Successful :meth:`write` calls."""
        self.rows = 0
        """Events plus transfer and timer tasks stored by successful writes."""

    async def _around(self, method: str, call: Callable[[], Awaitable[T]]) -> T:
        stats = self.stats.setdefault(method, MethodStats())
        stats.calls += 1
        start = time.perf_counter()
        outcome = "ok"
        try:
            return await call()
        except BaseException as exc:  # cancellations too: they show up as "CancelledError"
            stats.errors += 1
            outcome = type(exc).__name__
            raise
        finally:
            elapsed = time.perf_counter() - start
            stats.seconds += elapsed
            STORE_LATENCY.labels(self.backend, method).observe(elapsed)
            STORE_CALLS.labels(self.backend, method, outcome).inc()

    async def write(self, shard_id: int, range_id: int, writes: list[ExecutionWrite]) -> None:
        await super().write(shard_id, range_id, writes)
        events = sum(len(w.events) for w in writes)
        transfer = sum(len(w.transfer_tasks) for w in writes)
        timers = sum(len(w.timer_tasks) for w in writes)
        self.transactions += 1
        self.rows += events + transfer + timers
        STORE_TRANSACTIONS.labels(self.backend).inc()
        STORE_ROWS.labels(self.backend, "events").inc(events)
        STORE_ROWS.labels(self.backend, "transfer_tasks").inc(transfer)
        STORE_ROWS.labels(self.backend, "timer_tasks").inc(timers)
