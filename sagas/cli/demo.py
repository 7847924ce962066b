"""`sagas demo ...`: run a demo end to end on the embedded default.

    sagas demo trip-booking            # dev server + 3 services + worker; one trip books, one compensates
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

demo_app = typer.Typer(help="Run the demos.", no_args_is_help=True)
console = Console()


def _free_port(preferred: int) -> int:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])


async def _wait_for_files(paths: list[Path], procs: list[subprocess.Popen[bytes]], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not all(p.exists() for p in paths):
        for proc in procs:
            if proc.poll() is not None:
                raise RuntimeError(f"a demo service exited early (code {proc.returncode})")
        if time.monotonic() > deadline:
            raise TimeoutError("demo services did not become ready in time")
        await asyncio.sleep(0.05)


def saga_rows(events: list[Any]) -> list[tuple[str, str, str]]:
    """(step, outcome, detail) rows of a trip's activities, read from its history."""
    scheduled: dict[int, str] = {}
    rows: list[tuple[str, str, str]] = []
    for e in events:
        kind = e.event_type.value
        if kind == "ActivityTaskScheduled":
            scheduled[e.event_id] = e.activity_type
        elif kind == "ActivityTaskCompleted":
            name = scheduled.get(e.scheduled_event_id, "?")
            role = "compensation" if name.startswith("cancel_") else "step"
            rows.append((name, f"{role} done", str(e.result)))
        elif kind in ("ActivityTaskFailed", "ActivityTaskTimedOut"):
            name = scheduled.get(e.scheduled_event_id, "?")
            rows.append((name, "failed", e.failure.message))
    return rows


async def run_trip_booking(keep_running: bool, port: int, broker_url: str = "local://") -> int:
    from orchestrator.server import DevServer
    from sagas.client import Client
    from sagas.exceptions import WorkflowFailureError
    from sagas.worker import Worker
    from services_demo.trip_booking.workflow import TripBooking

    tmp = Path(tempfile.mkdtemp(prefix="sagas-demo-"))
    port = _free_port(port)
    server = DevServer(store_url=f"sqlite:///{tmp / 'history.db'}", port=port, broker_url=broker_url)
    procs: list[subprocess.Popen[bytes]] = []
    with console.status("starting the dev server and the car, hotel and flight services ...") as status:
        await server.start()
        ready = []
        for kind in ("car", "hotel", "flight"):
            marker = tmp / f"{kind}.ready"
            ready.append(marker)
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable, "-m", "services_demo.trip_booking.services", kind,
                        "--broker-url", server.orchestrator.worker_broker_url,
                        "--db", str(tmp / f"{kind}.db"), "--ready-file", str(marker),
                    ],
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )
            )
        try:
            await _wait_for_files(ready, procs)
            client = await Client.connect(server.target)
            trips = [
                ("trip-lisbon", {"customer": "ada", "destination": "Lisbon", "nights": 3}),
                ("trip-atlantis", {"customer": "alan", "destination": "Atlantis", "nights": 2}),
            ]
            outcomes: dict[str, str] = {}
            async with Worker(client, task_queue="trips", workflows=[TripBooking]):
                status.update("running two trip-booking sagas (Lisbon books; Atlantis has no flights) ...")
                for wid, trip in trips:
                    handle = await client.start_workflow(TripBooking.run, trip, id=f"{wid}-{int(time.time())}", task_queue="trips")
                    try:
                        await handle.result()
                        outcomes[handle.id] = "[green]completed[/]"
                    except WorkflowFailureError as exc:
                        root: BaseException = exc
                        while root.__cause__ is not None or getattr(root, "cause", None) is not None:
                            root = getattr(root, "cause", None) or root.__cause__  # type: ignore[assignment]
                        outcomes[handle.id] = f"[yellow]compensated[/] (because: {root})"
            for wid, outcome in outcomes.items():
                handle = client.get_workflow_handle(wid)
                history = await handle.fetch_history()
                table = Table(title=f"{wid}: {outcome}", title_justify="left")
                table.add_column("activity")
                table.add_column("outcome")
                table.add_column("detail", overflow="fold")
                for row in saga_rows(history.events):
                    table.add_row(*row)
                console.print(table)
        finally:
            for p in procs:
                p.terminate()
            for p in procs:  # wait off the event loop: the server in this loop still answers them
                with contextlib.suppress(subprocess.TimeoutExpired):
                    await asyncio.to_thread(p.wait, 5)
    console.print(f"Runs are visible at http://{server.target}/api/v1/namespaces/default/workflows (history in {tmp}).")
    if keep_running:
        console.print("Server keeps running; press Ctrl-C to stop.")
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()
    await server.stop()
    return 0


@demo_app.command("trip-booking")
def trip_booking(
    keep_running: bool = typer.Option(False, help="Keep the dev server up after the demo, to look at the runs."),
    port: int = typer.Option(7233, help="Port for the dev server (a free one is used if taken)."),
    broker_url: str = typer.Option(
        "local://", help="Task queues: local:// (built in), amqp://..., kafka://host:port, sqs://...?endpoint_url=..."
    ),
) -> None:
    """Dev server + car/hotel/flight services + a worker: one trip books, one compensates."""
    with contextlib.suppress(KeyboardInterrupt):
        raise typer.Exit(asyncio.run(run_trip_booking(keep_running, port, broker_url)))
