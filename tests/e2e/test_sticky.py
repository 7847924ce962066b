"""Sticky queues end to end: a workflow whose sticky worker is killed mid-run goes on elsewhere.

Worker A (a subprocess) runs the workflow's first tasks, so the server sends the next ones
to A's sticky queue. A is killed with SIGKILL; the next task -- addressed to A's sticky
queue -- must reach worker B through the normal queue within the sticky timeout, not
after the (much longer) workflow task timeout.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from orchestrator.server import DevServer
from sagas.client import Client
from sagas.worker import Worker
from tests.e2e.sticky_app import STICKY_TIMEOUT, TASK_QUEUE, Collect
from tests.e2e.test_demos import broker_url
from tests.services import rabbitmq_server  # noqa: F401  (session fixture, requested by name)

TASK_TIMEOUT = timedelta(seconds=60)
"""Long: a recovery by workflow task timeout would miss the test's deadline."""


@pytest.fixture(params=["local", "rabbitmq"])
async def server(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[DevServer]:
    srv = DevServer(store_url=f"sqlite:///{tmp_path / 'h.db'}", port=0, broker_url=broker_url(request, request.param))
    await srv.start()
    yield srv
    await srv.stop()


async def _start_worker_process(server: DevServer, tmp_path: Path) -> subprocess.Popen[bytes]:
    ready = tmp_path / "worker-a.ready"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.e2e.sticky_app", "--target", server.target, "--ready-file", str(ready)],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    deadline = time.monotonic() + 30
    while not ready.exists():
        assert proc.poll() is None, "worker A exited"
        assert time.monotonic() < deadline, "worker A not ready"
        await asyncio.sleep(0.02)  # the server runs in this loop: never block it
    return proc


async def test_workflow_goes_on_when_its_sticky_worker_is_killed(server: DevServer, tmp_path: Path) -> None:
    client = await Client.connect(server.target)
    worker_a = await _start_worker_process(server, tmp_path)
    try:
        handle = await client.start_workflow(Collect.run, 2, id="sticky-1", task_queue=TASK_QUEUE, task_timeout=TASK_TIMEOUT)
        await handle.signal(Collect.add, "a")
        deadline = time.monotonic() + 30
        while await handle.query(Collect.seen) != 1:
            assert time.monotonic() < deadline, "worker A never took the signal"
            await asyncio.sleep(0.05)
        run_id = (await handle.describe()).run_id
        sticky = server.orchestrator.matching.sticky_queue_of(run_id)
        assert sticky is not None and ".sticky." in sticky  # A asked for the run's next tasks

        worker_a.send_signal(signal.SIGKILL)
        await asyncio.to_thread(worker_a.wait, 10)
        async with Worker(client, task_queue=TASK_QUEUE, workflows=[Collect], identity="worker-b"):
            sent = time.monotonic()
            await handle.signal(Collect.add, "b")  # its task goes to A's sticky queue
            result = await asyncio.wait_for(handle.result(), 30)
            took = time.monotonic() - sent
        assert result == ["a", "b"]
        assert took < STICKY_TIMEOUT.total_seconds() + 8, f"took {took:.1f}s"
        history = await handle.fetch_history()
        types = [e.event_type.value for e in history.events]
        assert "WorkflowTaskTimedOut" not in types, types  # the fallback did it, not the task timeout
        completed = [e for e in history.events if e.event_type.value == "WorkflowTaskCompleted"]
        assert completed[-1].identity == "worker-b"
        assert completed[0].identity != "worker-b"
    finally:
        if worker_a.poll() is None:
            worker_a.kill()
        await client.close()
