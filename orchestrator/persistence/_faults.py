"""Fault injection for tests: a store that fails, slows down, or lies about commits.

:class:`FaultInjectingHistoryStore` wraps any store and, per method:

* fails the next call(s) with a chosen error (:meth:`~FaultInjectingHistoryStore.fail_next`),
* fails a random share of calls with :class:`StoreUnavailableError`
  (``error_rate``; seeded, so a test run is reproducible),
* applies the call and *then* raises :class:`AmbiguousWriteError`, like a
  timeout after the commit was sent (:meth:`~FaultInjectingHistoryStore.commit_then_timeout`
  and ``ambiguous_rate``),
* adds latency to every call.

An injected failure before the call never reaches the inner store, so it is
the honest "nothing was applied" :class:`StoreUnavailableError`.

>>> from orchestrator.persistence.memory import MemoryHistoryStore
>>> store = FaultInjectingHistoryStore(MemoryHistoryStore(), seed=1)
>>> store.fail_next("write")
"""

from __future__ import annotations

import asyncio
import collections
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from orchestrator.persistence._delegating import STORE_METHODS, _DelegatingStore
from orchestrator.persistence.base import AmbiguousWriteError, HistoryStore, StoreUnavailableError

T = TypeVar("T")


class FaultInjectingHistoryStore(_DelegatingStore):
    """Wraps ``inner`` and injects faults (see module docstring).

    ``error_rate`` and ``ambiguous_rate`` apply to every method; change one
    method's with :meth:`set_error_rate` / :meth:`set_ambiguous_rate`.
    :attr:`injected` counts the faults injected, by method.
    """

    def __init__(
        self,
        inner: HistoryStore,
        *,
        error_rate: float = 0.0,
        ambiguous_rate: float = 0.0,
        latency: float = 0.0,
        seed: int | None = None,
    ) -> None:
        super().__init__(inner)
        self.latency = latency
        self.injected: collections.Counter[str] = collections.Counter()
        self._random = random.Random(seed)
        self._error_rates = dict.fromkeys(STORE_METHODS, error_rate)
        self._ambiguous_rates = dict.fromkeys(STORE_METHODS, ambiguous_rate)
        self._fail_next: dict[str, collections.deque[BaseException | None]] = collections.defaultdict(
            collections.deque
        )
        self._timeouts_after_commit: collections.Counter[str] = collections.Counter()

    def fail_next(self, method: str, exc: BaseException | None = None, *, times: int = 1) -> None:
        """Make the next ``times`` calls of ``method`` raise ``exc`` (default: StoreUnavailableError)
        without reaching the inner store."""
        self._fail_next[_checked(method)].extend([exc] * times)

    def commit_then_timeout(self, method: str = "write", *, times: int = 1) -> None:
        """Make the next ``times`` calls of ``method`` succeed on the inner store, then raise
        :class:`AmbiguousWriteError` as if the reply had been lost."""
        self._timeouts_after_commit[_checked(method)] += times

    def set_error_rate(self, method: str, rate: float) -> None:
        """Fail this share (0..1) of ``method``'s calls with :class:`StoreUnavailableError`."""
        self._error_rates[_checked(method)] = rate

    def set_ambiguous_rate(self, method: str, rate: float) -> None:
        """Apply, then report :class:`AmbiguousWriteError` for this share of ``method``'s calls."""
        self._ambiguous_rates[_checked(method)] = rate

    async def _around(self, method: str, call: Callable[[], Awaitable[T]]) -> T:
        if self.latency > 0:
            await asyncio.sleep(self.latency)
        queued = self._fail_next.get(method)
        if queued:
            self.injected[method] += 1
            raise queued.popleft() or StoreUnavailableError(f"injected fault: {method} failed")
        if self._random.random() < self._error_rates[method]:
            self.injected[method] += 1
            raise StoreUnavailableError(f"injected fault: {method} failed (error rate)")
        result = await call()
        if self._timeouts_after_commit[method] > 0 or self._random.random() < self._ambiguous_rates[method]:
            if self._timeouts_after_commit[method] > 0:
                self._timeouts_after_commit[method] -= 1
            self.injected[method] += 1
            raise AmbiguousWriteError(
                f"injected fault: {method} was applied but its reply was lost (timeout); reload and compare"
            )
        return result


def _checked(method: str) -> str:
    if method not in STORE_METHODS:
        raise ValueError(f"unknown store method {method!r}; use one of {sorted(STORE_METHODS)}")
    return method
