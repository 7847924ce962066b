# mypy: allow-untyped-decorators
"""DBOS Transact as a system under test: a library in the harness process, SQLite system database.

DBOS has no server and no worker: workflows run in the process that starts
them, checkpointing each step to its system database. So the load generator,
the "worker" and the "server" share one process (and one core's worth of
GIL), unlike sagas and temporal. DBOS's API differs from temporalio's, so its
workflows are written here, doing the same steps as :mod:`bench.workloads`.
DBOS's defaults are kept; on SQLite, ``recv`` notices a message by polling
every ``notification_listener_polling_interval_sec`` (1 s by default), which
sets its ``signal`` latency.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import AsyncIterator
from importlib import metadata
from pathlib import Path
from typing import Any

from dbos import DBOS, SetWorkflowID

from bench.systems import harness_cpu, process_rss
from bench.workloads import SAGA_STEPS


class NoFlights(Exception):
    pass


@DBOS.step(name="echo")
async def echo(value: int) -> int:
    return value


@DBOS.step(name="book")
async def book(kind: str, trip: dict[str, Any]) -> str:
    if kind == "flight" and trip.get("fail"):
        raise NoFlights("no flights to Atlantis")
    return f"{kind}-{trip['id']}"


@DBOS.step(name="cancel")
async def cancel(kind: str, trip: dict[str, Any]) -> str:
    return f"cancelled {kind}-{trip['id']}"


@DBOS.workflow(name="OneActivity")
async def one_activity(value: int) -> int:
    result: int = await echo(value)
    return result


@DBOS.workflow(name="TripSaga")
async def trip_saga(trip: dict[str, Any]) -> str:
    booked: list[str] = []
    try:
        for kind in SAGA_STEPS:
            await book(kind, trip)
            booked.append(kind)
    except NoFlights:
        for kind in reversed(booked):
            await cancel(kind, trip)
        return "compensated"
    return "booked"


@DBOS.workflow(name="Sleeper")
async def sleeper(seconds: float) -> float:
    await DBOS.sleep_async(seconds)
    return seconds


@DBOS.workflow(name="OpenSleeper")
async def open_sleeper(due: float) -> list[float]:
    # DBOS has no workflow clock: the wall clock, as the step that would record it would read it.
    started = time.time()
    await DBOS.sleep_async(max(0.001, due - started))
    return [started, time.time()]


@DBOS.workflow(name="SignalWaiter")
async def signal_waiter() -> str:
    await DBOS.set_event_async("waiting", True)
    value: str = await DBOS.recv_async("proceed", timeout_seconds=120)
    return value


WORKFLOWS: dict[str, Any] = {
    "one_activity": one_activity, "saga3": trip_saga, "timers": sleeper, "signal": signal_waiter, "open": open_sleeper,
}
DURABILITY = (
    "SQLite system database with DBOS's defaults: no journal_mode or synchronous pragma (dbos/_sys_db_sqlite.py "
    "sets only busy_timeout and foreign_keys), so SQLite's defaults: rollback journal, synchronous=FULL"
)


class DbosSystem:
    name = "dbos"

    def __init__(self, tmp: Path) -> None:
        url = f"sqlite:///{tmp / 'dbos.sqlite'}"
        self.config: dict[str, Any] = {
            "sdk": f"dbos {metadata.version('dbos')}",
            "system_database_url": "sqlite:///<tmp>/dbos.sqlite",
            "topology": "in-process library: load generator, workflows and system database in the harness process",
            "durability": DURABILITY,
        }
        DBOS(config={"name": "bench", "system_database_url": url, "log_level": "WARNING"})

    async def start(self, workload: str, arg: Any, workflow_id: str) -> Any:
        args = () if arg is None else (arg,)
        with SetWorkflowID(workflow_id):
            return await DBOS.start_workflow_async(WORKFLOWS[workload], *args)

    async def result(self, handle: Any) -> Any:
        return await handle.get_result()

    async def signal(self, handle: Any, name: str, arg: Any) -> None:
        await DBOS.send_async(handle.get_workflow_id(), arg, name)

    async def wait_ready(self, handle: Any) -> None:
        await DBOS.get_event_async(handle.get_workflow_id(), "waiting", timeout_seconds=60)

    def cpu_seconds(self) -> dict[str, float]:
        return {"harness": harness_cpu()}

    async def counters(self) -> dict[str, float]:
        return {}

    def rss_bytes(self) -> dict[str, int]:
        return {"harness": process_rss(os.getpid())}  # workflows, system database and load generator alike


@contextlib.asynccontextmanager
async def open_dbos(tmp: Path, max_concurrent: int) -> AsyncIterator[DbosSystem]:
    system = DbosSystem(tmp)
    DBOS.launch()
    try:
        yield system
    finally:
        DBOS.destroy()
