"""Retry transient store errors at the boundary, with tenacity.

:class:`RetryingHistoryStore` retries a call that failed with
:class:`StoreUnavailableError`, reads and writes alike. That is safe because a
backend raises ``StoreUnavailableError`` only when nothing was applied (the
database was locked, the connection was refused, the transaction rolled back).

It never retries :class:`AmbiguousWriteError`: that error says the write *may*
have committed (a timeout after the commit was sent). Sending the same write
again would then either fail its compare-and-swap, misleading the caller into
thinking another writer raced it, or, for anything not fenced by a CAS, apply
it twice. The only correct reaction is the caller's: reload the execution and
compare its ``db_version`` (or last event id) with what it tried to write.
Every other :class:`StoreError` (CAS failures, fencing) is an answer, not an
outage, and is passed on at once.

>>> from orchestrator.persistence.memory import MemoryHistoryStore
>>> store = RetryingHistoryStore(MemoryHistoryStore(), attempts=5)
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    retry_if_not_exception_type,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from orchestrator.persistence._delegating import _DelegatingStore
from orchestrator.persistence.base import AmbiguousWriteError, HistoryStore, StoreUnavailableError

T = TypeVar("T")

_log = logging.getLogger(__name__)


class RetryingHistoryStore(_DelegatingStore):
    """Wraps ``inner``; retries each call on :class:`StoreUnavailableError` (see module docstring).

    ``attempts`` counts the first try. The wait before retry *n* is
    ``initial_backoff * 2**(n-1)``, capped at ``max_backoff`` seconds, plus a
    random jitter of up to ``initial_backoff`` (so that many callers hit by one
    outage do not come back in step); ``initial_backoff=0`` retries at once
    (tests). :attr:`retries` counts the retries made so far.
    """

    def __init__(
        self,
        inner: HistoryStore,
        *,
        attempts: int = 4,
        initial_backoff: float = 0.05,
        max_backoff: float = 2.0,
    ) -> None:
        super().__init__(inner)
        if attempts < 1:
            raise ValueError(f"attempts must be at least 1, not {attempts}")
        self.attempts = attempts
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.retries = 0

    async def _around(self, method: str, call: Callable[[], Awaitable[T]]) -> T:
        # The first try without tenacity: building its retry policy costs more than a store read,
        # and almost every call succeeds at once. Only a failure enters tenacity.
        try:
            return await call()
        except StoreUnavailableError as exc:
            first: StoreUnavailableError | None = exc

        async def attempt_call() -> T:
            nonlocal first
            if first is not None:  # tenacity's first attempt is the one that just failed
                failure, first = first, None
                raise failure
            return await call()

        retrying = AsyncRetrying(
            retry=retry_if_exception_type(StoreUnavailableError)
            & retry_if_not_exception_type(AmbiguousWriteError),
            stop=stop_after_attempt(self.attempts),
            wait=wait_exponential(multiplier=self.initial_backoff, max=self.max_backoff)
            + wait_random(0, self.initial_backoff),
            before_sleep=lambda state: self._note_retry(method, state),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await attempt_call()
        raise AssertionError("unreachable: tenacity either returns or re-raises")

    def _note_retry(self, method: str, state: RetryCallState) -> None:
        self.retries += 1
        error = state.outcome.exception() if state.outcome is not None else None
        _log.warning("store %s failed (attempt %d), retrying: %s", method, state.attempt_number, error)
