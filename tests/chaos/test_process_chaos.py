"""Sagas against real processes while the fault schedule kills, pauses and lies to them.

The orchestrator (``sagas server start-dev`` on a SQLite file), the three
booking services and the SDK worker each run as their own process. While 45
trip sagas run (a third of them to Atlantis, so they compensate), the schedule
SIGKILLs and restarts the orchestrator twice, the worker once and the car
service once, SIGSTOPs the worker past its workflow-task timeout and the hotel
service past its activities' start-to-close timeout, and the services fail
20% of their requests. After the last restart it poisons queues and publishes
duplicate and out-of-order replies for tasks that were already closed. Once
everything settled, :mod:`tests.chaos.invariants` checks what the histories,
the ledgers and the DLQ say.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from sagas.client import Client
from tests.chaos.harness import Step, TripSystem, run_schedule, saga_specs
from tests.chaos.invariants import (
    assert_no_violations,
    check,
    describe_unsettled,
    fault_evidence,
    snapshot,
    wait_settled,
)
from tests.e2e.conftest import ServerProcess, free_port

SEED = 20260517
SAGAS = 45
SECRET = "chaos-token-secret"
TASK_TIMEOUT = 3.0
"""Workflow-task timeout of the sagas (seconds): the worker's pause outlasts it."""
STEP_TIMEOUT = 10.0
"""``TripBooking``'s start-to-close timeout: the hotel service's pause outlasts it."""
HOTEL_PAUSE = STEP_TIMEOUT + 4.0
"""Hotel tasks dispatched in the pause's first 4 s (the worker runs then) time out before it ends."""
WORKER_PAUSE = TASK_TIMEOUT + 1.5

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(240)]


async def wait_for_stale_drops(
    system: TripSystem, baseline: float, published: int, timeout: float = 30.0
) -> str | None:
    """Poll the server's stale-reply counter until it counted every injected reply."""
    deadline = time.monotonic() + timeout
    while (seen := await system.stale_rejections()) < baseline + published:
        if time.monotonic() > deadline:
            return f"only {seen - baseline:.0f} of {published} injected stale replies were counted as dropped"
        await asyncio.sleep(0.1)
    return None


async def test_sagas_finish_or_compensate_under_process_faults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "SAGAS_TOKEN_SECRET", SECRET
    )  # the server signs task tokens with it: we forge stale ones
    server = ServerProcess(tmp_path / "history.db", free_port(), tmp_path)
    await asyncio.to_thread(server.start)
    system = TripSystem(
        tmp_path, f"127.0.0.1:{server.port}", seed=SEED, secret=SECRET, task_timeout=TASK_TIMEOUT
    )
    client: Client | None = None
    problems: list[str] = []
    try:
        await system.start()
        client = await Client.connect(system.target)
        specs = saga_specs(SAGAS, SEED)
        timeline = system.timeline

        last_restart_done = asyncio.Event()

        async def restart_server(last: bool = False) -> None:
            await asyncio.to_thread(server.kill9)
            await asyncio.to_thread(server.start)
            if last:
                last_restart_done.set()

        async def pause(proc_pause: float, name: str) -> None:
            proc = system.worker if name == "worker" else system.services[name]
            proc.pause()
            await asyncio.sleep(proc_pause)  # the fault itself: stay stopped this long
            proc.resume()

        async def poison() -> None:
            await last_restart_done.wait()  # the DLQ lives in the server's memory: poison the last one
            await system.poison()

        async def mid_flight_replies() -> None:
            await last_restart_done.wait()  # so the server that counts the drops is the one we ask
            baseline = await system.stale_rejections()
            published = await system.inject_stale_replies(sorted(system.started)[:15])
            if problem := await wait_for_stale_drops(system, baseline, published):
                problems.append(f"mid-flight: {problem}")

        steps = [
            Step(1.0, "SIGKILL + restart orchestrator (1)", restart_server),
            Step(3.5, f"SIGSTOP hotel service {HOTEL_PAUSE:.0f}s (past start-to-close)", lambda: pause(HOTEL_PAUSE, "hotel")),
            Step(6.5, "SIGKILL + restart car service", lambda: system.restart("car")),
            Step(8.0, "SIGKILL + restart worker", lambda: system.restart("worker")),
            Step(10.5, f"SIGSTOP worker {WORKER_PAUSE:.1f}s (past workflow-task timeout)", lambda: pause(WORKER_PAUSE, "worker")),
            Step(18.5, "SIGKILL + restart orchestrator (2)", lambda: restart_server(last=True)),
            Step(20.5, "poison queues", poison),
            Step(20.5, "duplicate/reordered replies mid-flight", mid_flight_replies),
        ]  # fmt: skip
        load = asyncio.create_task(system.start_sagas(client, specs, interval=0.25))
        await run_schedule(steps, timeline)
        await load

        statuses = await wait_settled(system.base_url, [s.workflow_id for s in specs], timeout=60)
        timeline.note(f"settled: {sorted(statuses.values()).count('Completed')} completed, "
                      f"{sorted(statuses.values()).count('Failed')} failed")  # fmt: skip

        baseline = await system.stale_rejections()
        published = await system.inject_stale_replies([s.workflow_id for s in specs])
        if problem := await wait_for_stale_drops(system, baseline, published):
            problems.append(f"after settling: {problem}")
        problems += [f"a stale reply POSTed to /tasks/complete got {a} (want 409 stale_task)"
                     for a in system.http_stale_answers if a != "409 stale_task"]  # fmt: skip

        timeline.note("checking invariants")
        snap = await snapshot(system.base_url, specs, tmp_path)
        violations = await check(snap, specs, poisoned=system.poisoned)
        violations += problems + system.crashed()
        if server.proc is None or server.proc.poll() is not None:
            violations.append("the orchestrator died on its own")
        evidence = fault_evidence(snap)
        timeline.note(f"checked; traces of the faults in the histories: {dict(evidence)}")
        unsettled = await describe_unsettled(system.base_url, snap)
        print(timeline)  # shown with the test's output when something else fails
        assert_no_violations(violations, context=f"{timeline}\n{unsettled}\n{system.logs()}\n--- server.log ---\n"
                             f"{(tmp_path / 'server.log').read_text(errors='replace')[-3000:]}")  # fmt: skip
        assert evidence["workflow task timeouts"] >= 1, evidence  # the worker's kill and pause
        assert evidence["book_hotel attempts timed out"] >= 1, evidence  # the hotel's pause
        assert evidence["activities retried"] >= 1 and evidence["compensations completed"] >= 1, evidence
        assert sum(s == "Completed" for s in statuses.values()) >= SAGAS // 2, statuses  # the load really ran
    finally:
        if client is not None:
            await client.close()
        await system.stop()
        await asyncio.to_thread(server.stop)
