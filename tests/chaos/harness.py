"""The chaos harness: real processes, a saga load, a concurrent fault schedule.

* :class:`ChildProcess`: a subprocess that touches a ready file once it serves;
  ``kill9()`` (SIGKILL), ``pause()``/``resume()`` (SIGSTOP/SIGCONT), ``restart()``.
* :class:`TripSystem`: the three trip-booking services and the SDK worker
  (``tests/chaos/worker_main.py``) as subprocesses against one orchestrator
  (a ``ServerProcess`` subprocess, or a ``DevServer`` in this process); starts
  the sagas, injects stale replies and poison messages, and keeps a timeline
  of every fault so a failure says what happened when.
* :func:`run_schedule`: runs timed fault steps concurrently with the load.

Readiness is always polled (ready files, HTTP); the only sleeps are the
schedule's own ("kill the server 1.5 s in").
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import httpx
from pydantic import BaseModel

from brokers import envelope as env
from orchestrator.api import events as E
from orchestrator.api.common import Failure
from sagas.client import Client
from sagas.common import WorkflowIDReusePolicy
from sagas.exceptions import RPCError
from services_demo.trip_booking.services import KINDS, UNSERVED_DESTINATIONS
from services_demo.trip_booking.workflow import TripBooking
from tests.chaos.invariants import SagaSpec

COMPLETIONS_QUEUE = "sagas.completions"
SERVED = ("Lisbon", "Rome", "Oslo", "Porto", "Vienna", "Kyoto")
RETRYABLE_RPC = frozenset({"unavailable", "deadline_exceeded", "internal"})


def token_key(secret: str) -> bytes:
    """The key the server signs task tokens with, from its ``SAGAS_TOKEN_SECRET``."""
    return hashlib.sha256(secret.encode()).digest()


def saga_specs(count: int, seed: int) -> list[SagaSpec]:
    """``count`` sagas, a third of them to a destination that is never served (they compensate)."""
    rng = random.Random(seed)
    specs = [
        SagaSpec(f"trip-{i:03d}", sorted(UNSERVED_DESTINATIONS)[0] if i % 3 == 0 else rng.choice(SERVED))
        for i in range(count)
    ]
    rng.shuffle(specs)
    return specs


class Timeline:
    """What the harness did, with times relative to its start (for failure messages)."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.entries: list[str] = []

    def note(self, what: str) -> None:
        self.entries.append(f"t={time.monotonic() - self.t0:6.2f}s  {what}")

    def __str__(self) -> str:
        return "fault timeline:\n" + "\n".join(f"    {e}" for e in self.entries)


class ChildProcess:
    """A subprocess that is ready once it wrote its ready file; logs to ``workdir/<name>.log``."""

    def __init__(self, name: str, argv: Callable[[Path, int], list[str]], workdir: Path) -> None:
        self.name = name
        self._argv = argv
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.log_path = workdir / f"{name}.log"

    async def start(self, timeout: float = 45.0) -> None:
        ready = self.workdir / f"{self.name}-{time.monotonic_ns()}.ready"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self._argv(ready, self.starts),
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        self.starts += 1
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} not ready after {timeout}s:\n{self.log_tail()}")
            await asyncio.sleep(0.02)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(self.proc.wait, 10)

    async def restart(self) -> None:
        await self.kill9()
        await self.start()

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    async def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGCONT)  # a paused process cannot handle SIGTERM
        self.proc.terminate()
        try:
            await asyncio.to_thread(self.proc.wait, 10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            await asyncio.to_thread(self.proc.wait, 10)

    def log_tail(self, chars: int = 2500) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return text[-chars:]


@dataclass
class Step:
    """One fault of a schedule: ``action`` runs ``at`` seconds after the schedule starts."""

    at: float
    name: str
    action: Callable[[], Awaitable[None]]


async def run_schedule(steps: Sequence[Step], timeline: Timeline) -> None:
    """Run the steps at their times, each in its own task (a step may last, e.g. a pause)."""
    start = time.monotonic()

    async def one(step: Step) -> None:
        delay = step.at - (time.monotonic() - start)
        if delay > 0:
            await asyncio.sleep(delay)  # the schedule itself, not a readiness wait
        timeline.note(f"begin {step.name}")
        await step.action()
        timeline.note(f"end   {step.name}")

    await asyncio.gather(*(one(s) for s in steps))


async def retry_rpc(what: Callable[[], Awaitable[Any]], timeout: float = 60.0) -> Any:
    """Call ``what`` until it does not fail with a retryable RPC error (the server may be restarting)."""
    deadline = time.monotonic() + timeout
    delay = 0.1
    while True:
        try:
            return await what()
        except RPCError as exc:
            if exc.code not in RETRYABLE_RPC or time.monotonic() > deadline:
                raise
        await asyncio.sleep(delay)
        delay = min(delay * 2, 1.0)


class TripSystem:
    """Services + SDK worker as subprocesses around one orchestrator at ``target``."""

    def __init__(
        self,
        workdir: Path,
        target: str,
        *,
        seed: int,
        secret: str,
        transient_failure_rate: float = 0.2,
        task_timeout: float = 3.0,
    ) -> None:
        self.workdir = workdir
        self.target = target
        self.base_url = f"http://{target}"
        self.seed = seed
        self.key = token_key(secret)
        self.task_timeout = task_timeout
        self.timeline = Timeline()
        self.services = {
            kind: ChildProcess(kind, self.service_argv(kind, i, transient_failure_rate), workdir)
            for i, kind in enumerate(KINDS)
        }
        self.worker = ChildProcess(
            "worker",
            lambda ready, _: [
                sys.executable,
                "-m",
                "tests.chaos.worker_main",
                "--target",
                target,
                "--ready-file",
                str(ready),
            ],
            workdir,
        )
        self.started: dict[str, str] = {}
        """workflow id -> run id of every saga whose start was acknowledged."""
        self.poisoned: list[str] = []
        self.stale_replies = 0
        self.http_stale_answers: list[str] = []
        """The error code of each stale reply POSTed to /tasks/complete (want ``stale_task``)."""

    def service_argv(
        self, kind: str, index: int, rate: float, *extra: str
    ) -> Callable[[Path, int], list[str]]:
        """The command line of a service process (``extra``: more switches, e.g. ``--delay 5``)."""

        def argv(ready: Path, starts: int) -> list[str]:
            return [
                sys.executable, "-m", "tests.chaos.service_main", "--seed", str(self.seed * 100 + index * 10 + starts),
                kind, "--broker-url", f"local://{self.target}", "--db", str(self.workdir / f"{kind}.db"),
                "--ready-file", str(ready), "--transient-failure-rate", str(rate), *extra,
            ]  # fmt: skip

        return argv

    @property
    def processes(self) -> list[ChildProcess]:
        return [*self.services.values(), self.worker]

    async def start(self) -> None:
        await asyncio.gather(*(p.start() for p in self.processes))
        self.timeline.note("services and worker ready")

    async def stop(self) -> None:
        await asyncio.gather(*(p.stop() for p in self.processes), return_exceptions=True)

    def crashed(self) -> list[str]:
        """Processes that died on their own (not killed by the schedule)."""
        return [
            f"{p.name} exited with {p.proc.returncode}"
            for p in self.processes
            if p.proc and p.proc.poll() is not None
        ]

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}.log (tail) ---\n{p.log_tail(1500)}" for p in self.processes)

    async def wait_serving(self, timeout: float = 30.0) -> None:
        """Poll the orchestrator's ``/healthz`` until it answers (it may be restarting)."""
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(base_url=self.base_url, timeout=5) as http:
            while True:
                try:
                    if (await http.get("/healthz")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"the orchestrator at {self.base_url} did not answer within {timeout}s"
                    )
                await asyncio.sleep(0.05)

    async def restart(self, name: str) -> None:
        """SIGKILL a service or the worker, and start it again like a supervisor would (once the
        orchestrator answers: a service's first act is to reach it)."""
        proc = self.worker if name == "worker" else self.services[name]
        await proc.kill9()
        for attempt in range(1, 6):  # like a supervisor's restart policy
            await self.wait_serving()
            try:
                await proc.start()
                return
            except RuntimeError:  # exited at start: the orchestrator went down again meanwhile
                if attempt == 5:
                    raise
                self.timeline.note(f"{name} exited while starting (orchestrator restarting?); starting it again")

    # -- load ----------------------------------------------------------------------------------

    async def start_sagas(self, client: Client, specs: Sequence[SagaSpec], interval: float) -> None:
        """Start the sagas one every ``interval`` s; a start is retried (same request id) through restarts."""
        for spec in specs:
            request_id = f"chaos-{spec.workflow_id}"

            async def start(spec: SagaSpec = spec, request_id: str = request_id) -> Any:
                return await client.start_workflow(
                    TripBooking.run,
                    {"destination": spec.destination},
                    id=spec.workflow_id,
                    task_queue="trips",
                    task_timeout=timedelta(seconds=self.task_timeout),
                    id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                    request_id=request_id,
                )

            handle = await retry_rpc(start)
            self.started[spec.workflow_id] = handle.result_run_id or ""
            await asyncio.sleep(interval)  # the load's pace
        self.timeline.note(f"all {len(specs)} sagas started")

    # -- duplicate and reordered deliveries ----------------------------------------------------

    def _sign(
        self, wid: str, run_id: str, sid: int, attempt: int, kind: Literal["wf", "act"], activity_id: str = ""
    ) -> str:
        token = env.TaskToken(
            namespace="default", workflow_id=wid, run_id=run_id, scheduled_event_id=sid, attempt=attempt,
            kind=kind, activity_id=activity_id,
        )  # fmt: skip
        return env.sign_token(token, self.key)

    def stale_replies_for(self, wid: str, run_id: str, events: Sequence[E.HistoryEvent]) -> list[BaseModel]:
        """Replies a real system could deliver late or twice, for tasks this history already closed.

        * a duplicate success (with a different result) and a late non-retryable failure for
          every completed activity attempt;
        * a success from an *earlier* attempt of an activity that needed retries;
        * a second completion of every completed workflow task, closing the workflow with a
          forged result.

        (:meth:`inject_stale_replies` adds the reply of an earlier attempt of every activity
        that is still retrying.)
        Any of them, if applied, breaks an invariant (a second close event, a result that is
        not the ledger's booking id, a failed saga that should have completed).
        """
        replies: list[BaseModel] = []
        by_id = {e.event_id: e for e in events}
        for e in events:
            if isinstance(e, E.ActivityTaskStarted):
                scheduled = by_id.get(e.scheduled_event_id)
                assert isinstance(scheduled, E.ActivityTaskScheduled)
                for attempt in sorted({e.attempt, max(1, e.attempt - 1)}):
                    token = self._sign(wid, run_id, scheduled.event_id, attempt, "act", scheduled.activity_id)
                    replies.append(
                        env.ActivityResult(task_token=token, result={"booking_id": f"STALE-{attempt}"})
                    )
                    replies.append(
                        env.ActivityResult(
                            task_token=token,
                            failure=Failure(
                                message="injected late failure", type="InjectedStale", non_retryable=True
                            ),
                        )
                    )
            elif isinstance(e, E.WorkflowTaskCompleted):
                scheduled_wft = by_id.get(e.scheduled_event_id)
                assert isinstance(scheduled_wft, E.WorkflowTaskScheduled)
                token = self._sign(wid, run_id, scheduled_wft.event_id, scheduled_wft.attempt, "wf")
                forged = {"command_type": "CompleteWorkflowExecution", "result": {"status": "FORGED"}}
                replies.append(env.WorkflowTaskCompleted(task_token=token, commands=[forged]))
        return replies

    async def inject_stale_replies(self, workflow_ids: Sequence[str], *, via_http: int = 2) -> int:
        """Publish stale replies for the given sagas to ``sagas.completions`` (and POST a few).

        Returns how many were published to the queue. Each one must be dropped as stale.
        Requests go out concurrently: each is a separate, independent delivery.
        """
        await self.wait_serving()
        sem = asyncio.Semaphore(16)
        counts: list[int] = []
        async with httpx.AsyncClient(base_url=self.base_url, timeout=30) as http:

            async def post(path: str, **kwargs: Any) -> httpx.Response:
                async with sem:
                    return await http.post(path, **kwargs)

            async def one(wid: str) -> None:
                run_id = self.started.get(wid, "")
                async with sem:
                    r = await http.get(
                        f"/api/v1/namespaces/default/workflows/{quote(wid)}/history",
                        params={"run_id": run_id, "page_size": 1000},
                    )
                    described = await http.get(
                        f"/api/v1/namespaces/default/workflows/{quote(wid)}", params={"run_id": run_id}
                    )
                if r.status_code != 200 or described.status_code != 200:
                    return
                replies = self.stale_replies_for(wid, run_id, E.parse_events(r.json()["events"]))
                # An activity still retrying: the reply of an attempt that already timed out or failed.
                for pending in described.json()["pending_activities"]:
                    if pending["attempt"] > 1:
                        sid, activity_id = pending["scheduled_event_id"], pending["activity_id"]
                        token = self._sign(wid, run_id, sid, pending["attempt"] - 1, "act", activity_id)
                        replies.append(
                            env.ActivityResult(task_token=token, result={"booking_id": "STALE-EARLIER"})
                        )
                published = await asyncio.gather(
                    *(
                        post(
                            f"/api/v1/queues/{COMPLETIONS_QUEUE}/publish",
                            json={"body": env.encode(reply).decode()},
                        )
                        for reply in replies
                    )
                )
                for p in published:
                    p.raise_for_status()
                counts.append(len(published))
                for reply in replies[:via_http]:
                    answer = await post(
                        "/api/v1/tasks/complete",
                        content=env.encode(reply),
                        headers={"content-type": "application/json"},
                    )
                    code = answer.json().get("code", "") if answer.status_code >= 400 else "applied"
                    self.http_stale_answers.append(f"{answer.status_code} {code}")

            await asyncio.gather(*(one(wid) for wid in workflow_ids))
        self.stale_replies += sum(counts)
        self.timeline.note(f"published {sum(counts)} stale/duplicate replies for {len(counts)} sagas")
        return sum(counts)

    # -- poison ----------------------------------------------------------------------------------

    async def poison(self) -> None:
        """Messages that must end in the DLQ (and nowhere else): garbage to a service's queue,
        garbage and a forged token to the completions queue."""
        forged = env.ActivityResult(
            task_token="eyJmb3JnZWQiOnRydWV9.AAAAAAAAAAAAAAAAAAAAAA", result={"booking_id": "forged"}
        )
        messages = [
            ("sagas.default.cars.act", "chaos poison: not json {"),
            (COMPLETIONS_QUEUE, "chaos poison: not json either ["),
            (COMPLETIONS_QUEUE, json.dumps({"v": 99, "kind": "activity_result", "task_token": "x"})),
            (COMPLETIONS_QUEUE, env.encode(forged).decode()),
        ]
        await self.wait_serving()
        async with httpx.AsyncClient(base_url=self.base_url, timeout=10) as http:
            for queue, body in messages:
                r = await http.post(f"/api/v1/queues/{quote(queue, safe='')}/publish", json={"body": body})
                r.raise_for_status()
                self.poisoned.append(body)
        self.timeline.note(f"published {len(messages)} poison messages")

    async def stale_rejections(self) -> float:
        """``sagas_completions_rejected_total{reason="stale"}`` of the running server."""
        async with httpx.AsyncClient(base_url=self.base_url, timeout=10) as http:
            text = (await http.get("/metrics")).text
        for line in text.splitlines():
            if line.startswith('sagas_completions_rejected_total{reason="stale"}'):
                return float(line.rsplit(" ", 1)[1])
        return 0.0
