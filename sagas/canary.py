"""Canary workflows: a health probe of a live cluster, one small workflow per capability.

:func:`run_canary` starts a worker for a fresh task queue in this process and
runs each probe against the orchestrator the client is connected to, at the
same time, each with its own deadline:

========================  =============================================================
probe                     passes when
========================  =============================================================
``echo``                  an activity's result comes back unchanged
``signal``                a signal reaches a waiting workflow and ends it
``query``                 a query answers from a waiting workflow's state
``timer``                 a 1 s durable timer fires, within ``timer_tolerance`` of due
``retry``                 an activity failing twice succeeds on its third attempt
``cancellation``          a cancelled workflow closes as cancelled
``child``                 a child workflow runs and its result reaches the parent
``continue_as_new``       a workflow continued as new twice returns from its third run
========================  =============================================================

Every probe uses workflow ids ``canary-<probe>-<random>``, so probes of
several runs (or several operators) never collide. ``sagas admin canary`` runs
them from a shell and exits 1 when one fails, which makes it a liveness probe
for a deployment::

    sagas admin canary --address orchestrator:7233 --namespace default
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

from sagas import activity, workflow
from sagas.client import Client
from sagas.common import RetryPolicy
from sagas.exceptions import CancelledError, WorkflowFailureError
from sagas.worker import Worker

__all__ = ["PROBES", "CanaryResult", "run_canary"]

_STEP = timedelta(seconds=10)
_TIMER_SECONDS = 1.0


@activity.defn(name="SagasCanaryEcho")
async def _echo(value: str) -> str:
    return value


@activity.defn(name="SagasCanaryFlaky")
async def _flaky(succeed_on: int) -> int:
    attempt = activity.info().attempt
    if attempt < succeed_on:
        raise RuntimeError(f"canary: attempt {attempt} fails on purpose")
    return attempt


@workflow.defn(name="SagasCanaryEcho")
class _EchoWorkflow:
    @workflow.run
    async def run(self, value: str) -> str:
        result: str = await workflow.execute_activity(_echo, value, start_to_close_timeout=_STEP)
        return result


@workflow.defn(name="SagasCanaryWaiter")
class _WaiterWorkflow:
    """Waits for ``finish``; ``state`` answers queries meanwhile."""

    def __init__(self) -> None:
        self.value: str | None = None

    @workflow.run
    async def run(self, state: str) -> str:
        self.state = state
        await workflow.wait_condition(lambda: self.value is not None)
        assert self.value is not None
        return self.value

    @workflow.signal
    def finish(self, value: str) -> None:
        self.value = value

    @workflow.query
    def current(self) -> str:
        return self.state


@workflow.defn(name="SagasCanaryTimer")
class _TimerWorkflow:
    @workflow.run
    async def run(self, seconds: float) -> float:
        await workflow.sleep(seconds)
        return seconds


@workflow.defn(name="SagasCanaryRetry")
class _RetryWorkflow:
    @workflow.run
    async def run(self, succeed_on: int) -> int:
        attempt: int = await workflow.execute_activity(
            _flaky,
            succeed_on,
            start_to_close_timeout=_STEP,
            retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=100), backoff_coefficient=1.0,
                                     maximum_attempts=succeed_on),
        )  # fmt: skip
        return attempt


@workflow.defn(name="SagasCanaryParent")
class _ParentWorkflow:
    @workflow.run
    async def run(self, value: str) -> str:
        child_id = f"{workflow.info().workflow_id}-child"
        result: str = await workflow.execute_child_workflow(_EchoWorkflow.run, value, id=child_id)
        return result


@workflow.defn(name="SagasCanaryContinueAsNew")
class _ContinueAsNewWorkflow:
    @workflow.run
    async def run(self, run_number: int, last: int) -> int:
        if run_number < last:
            workflow.continue_as_new(run_number + 1, last)
        return run_number


@dataclass(frozen=True)
class CanaryResult:
    """How one probe went.

    Example::

        result = CanaryResult(probe="timer", ok=True, seconds=1.04, detail="fired 0.04 s after due")
        assert result.ok and result.probe in PROBES
    """

    probe: str
    ok: bool
    seconds: float
    """Wall time of the probe, start call to verdict."""
    detail: str
    """What was observed (on failure: what went wrong)."""


class _ProbeFailed(Exception):
    pass


def _expect(ok: bool, message: str) -> None:
    if not ok:
        raise _ProbeFailed(message)


async def _probe_echo(client: Client, wid: str, tq: str, opts: dict[str, float]) -> str:
    token = uuid.uuid4().hex
    result = await client.execute_workflow(_EchoWorkflow.run, token, id=wid, task_queue=tq)
    _expect(result == token, f"the activity returned {result!r}, not {token!r}")
    return "activity result came back unchanged"


async def _probe_signal(client: Client, wid: str, tq: str, opts: dict[str, float]) -> str:
    handle = await client.start_workflow(_WaiterWorkflow.run, "waiting", id=wid, task_queue=tq)
    await handle.signal(_WaiterWorkflow.finish, "signalled")
    result = await handle.result()
    _expect(result == "signalled", f"the workflow returned {result!r} after the signal")
    return "signal delivered, workflow completed"


async def _probe_query(client: Client, wid: str, tq: str, opts: dict[str, float]) -> str:
    token = uuid.uuid4().hex
    handle = await client.start_workflow(_WaiterWorkflow.run, token, id=wid, task_queue=tq)
    try:
        answer = await handle.query(_WaiterWorkflow.current)
        _expect(answer == token, f"the query answered {answer!r}, not {token!r}")
    finally:
        await handle.signal(_WaiterWorkflow.finish, "done")
    await handle.result()
    return "query answered from the workflow's state"


async def _probe_timer(client: Client, wid: str, tq: str, opts: dict[str, float]) -> str:
    began = time.monotonic()
    await client.execute_workflow(_TimerWorkflow.run, _TIMER_SECONDS, id=wid, task_queue=tq)
    lag = time.monotonic() - began - _TIMER_SECONDS
    _expect(lag >= -0.05, f"a {_TIMER_SECONDS:g} s timer fired {-lag:.2f} s early")
    _expect(lag <= opts["timer_tolerance"],
            f"a {_TIMER_SECONDS:g} s timer fired {lag:.2f} s after due (tolerance {opts['timer_tolerance']:g} s)")  # fmt: skip
    return f"{_TIMER_SECONDS:g} s timer fired {lag:.2f} s after due (start and result round trips included)"


async def _probe_retry(client: Client, wid: str, tq: str, opts: dict[str, float]) -> str:
    attempt = await client.execute_workflow(_RetryWorkflow.run, 3, id=wid, task_queue=tq)
    _expect(attempt == 3, f"the activity succeeded on attempt {attempt}, expected 3")
    return "activity failed twice, succeeded on attempt 3"


async def _probe_cancellation(client: Client, wid: str, tq: str, opts: dict[str, float]) -> str:
    handle = await client.start_workflow(_TimerWorkflow.run, 3600.0, id=wid, task_queue=tq)
    await handle.cancel()
    try:
        result = await handle.result()
    except WorkflowFailureError as exc:
        _expect(isinstance(exc.cause, CancelledError), f"closed with {type(exc.cause).__name__}: {exc.cause}")
        return "workflow closed as cancelled"
    raise _ProbeFailed(f"the cancelled workflow completed with {result!r}")


async def _probe_child(client: Client, wid: str, tq: str, opts: dict[str, float]) -> str:
    token = uuid.uuid4().hex
    result = await client.execute_workflow(_ParentWorkflow.run, token, id=wid, task_queue=tq)
    _expect(result == token, f"the parent returned {result!r}, not its child's {token!r}")
    return "child ran, its result reached the parent"


async def _probe_continue_as_new(client: Client, wid: str, tq: str, opts: dict[str, float]) -> str:
    result = await client.execute_workflow(_ContinueAsNewWorkflow.run, args=[1, 3], id=wid, task_queue=tq)
    _expect(result == 3, f"the last run returned {result!r}, expected 3 (third run)")
    return "continued as new twice, third run returned"


_Probe = Callable[[Client, str, str, dict[str, float]], Awaitable[str]]

_PROBES: dict[str, _Probe] = {
    "echo": _probe_echo,
    "signal": _probe_signal,
    "query": _probe_query,
    "timer": _probe_timer,
    "retry": _probe_retry,
    "cancellation": _probe_cancellation,
    "child": _probe_child,
    "continue_as_new": _probe_continue_as_new,
}

PROBES: tuple[str, ...] = tuple(_PROBES)
"""The probes' names, in the order :func:`run_canary` reports them.

Example::

    assert "timer" in PROBES and "continue_as_new" in PROBES
"""


async def run_canary(
    client: Client,
    *,
    probes: Sequence[str] | None = None,
    timeout: float = 30.0,
    timer_tolerance: float = 2.0,
    task_queue: str | None = None,
) -> list[CanaryResult]:
    """Run the canary probes (all, or ``probes``) at once; one :class:`CanaryResult` each.

    A worker for ``task_queue`` (default: a fresh ``sagas-canary-<random>``)
    runs in this process while the probes run; each probe fails after
    ``timeout`` seconds. Unknown probe names raise :class:`ValueError` before
    anything starts. A failing probe never raises: read ``ok``.

    Example::

        results = await run_canary(client, timeout=20)
        for r in results:
            print(f"{r.probe:16} {'ok' if r.ok else 'FAILED'} {r.seconds:.2f}s {r.detail}")
        healthy = all(r.ok for r in results)
    """
    names = list(PROBES if probes is None else probes)
    unknown = [n for n in names if n not in _PROBES]
    if unknown:
        raise ValueError(f"unknown canary probe(s) {', '.join(map(repr, unknown))}; choose from {', '.join(PROBES)}")
    if timeout <= 0:
        raise ValueError("timeout must be positive")
    tq = task_queue or f"sagas-canary-{uuid.uuid4().hex[:8]}"
    run_id = uuid.uuid4().hex[:8]
    opts = {"timer_tolerance": timer_tolerance}

    async def one(name: str) -> CanaryResult:
        wid = f"canary-{name.replace('_', '-')}-{run_id}"
        began = time.monotonic()
        try:
            detail = await asyncio.wait_for(_PROBES[name](client, wid, tq, opts), timeout)
            ok = True
        except TimeoutError:
            ok, detail = False, f"no verdict within {timeout:g} s (workflow {wid})"
        except _ProbeFailed as exc:
            ok, detail = False, f"{exc} (workflow {wid})"
        except Exception as exc:  # noqa: BLE001 - a probe reports every failure, it never raises
            ok, detail = False, f"{type(exc).__name__}: {exc} (workflow {wid})"
        return CanaryResult(name, ok, round(time.monotonic() - began, 3), detail)

    worker = Worker(
        client,
        task_queue=tq,
        workflows=[_EchoWorkflow, _WaiterWorkflow, _TimerWorkflow, _RetryWorkflow, _ParentWorkflow,
                   _ContinueAsNewWorkflow],
        activities=[_echo, _flaky],
    )  # fmt: skip
    async with worker:
        results: list[CanaryResult] = await asyncio.gather(*(one(n) for n in names))
    return results

