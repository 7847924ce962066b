"""``sagas schedule ...`` and ``sagas batch ...`` against a dev server running in a background thread."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from orchestrator.server import DevServer
from sagas.cli.main import app

runner = CliRunner()


@pytest.fixture(scope="module")
def address() -> Iterator[str]:
    ready = threading.Event()
    stop: list[asyncio.Event] = []
    target: list[str] = []

    async def serve() -> None:
        async with DevServer(store_url="memory://", port=0) as server:
            target.append(server.target)
            stop.append(asyncio.Event())
            ready.set()
            await stop[0].wait()

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert ready.wait(30), "dev server did not start"
    yield target[0]
    loop.call_soon_threadsafe(stop[0].set)
    thread.join(30)
    loop.close()


def sagas(address: str, *args: str) -> str:
    result = runner.invoke(app, [*args, "--address", address])
    assert result.exit_code == 0, result.output
    return result.output


def test_schedule_commands(address: str) -> None:
    out = sagas(
        address, "schedule", "create", "-s", "nightly", "--workflow-type", "Report", "-t", "reports", "-w", "report",
        "--cron", "0 2 * * *", "--time-zone", "Europe/Paris", "--input", '"eu"', "--overlap", "buffer-one",
    )
    assert "Created schedule nightly" in out
    out = sagas(address, "schedule", "describe", "-s", "nightly")
    assert "0 2 * * * (Europe/Paris)" in out and "BUFFER_ONE" in out and "active" in out
    sagas(address, "schedule", "pause", "-s", "nightly", "--note", "migration")
    assert "paused: migration" in sagas(address, "schedule", "describe", "-s", "nightly")
    assert "nightly" in sagas(address, "schedule", "list")
    sagas(address, "schedule", "trigger", "-s", "nightly")
    assert "1 taken" in sagas(address, "schedule", "describe", "-s", "nightly")
    sagas(address, "schedule", "backfill", "-s", "nightly", "--start-time", "2026-01-01T00:00",
          "--end-time", "2026-01-03T00:00", "--overlap", "allow-all")
    assert "3 taken" in sagas(address, "schedule", "describe", "-s", "nightly")
    assert '"num_actions": 3' in sagas(address, "schedule", "describe", "-s", "nightly", "-o", "json")
    sagas(address, "schedule", "delete", "-s", "nightly")
    result = runner.invoke(app, ["schedule", "describe", "-s", "nightly", "--address", address])
    assert result.exit_code == 1 and "does not exist" in result.output

    # The runs it started are ordinary workflows: terminate them all with a batch.
    out = sagas(address, "batch", "terminate", "--query", "SagasScheduledById = 'nightly'", "--reason", "cleanup")
    assert re.search(r"Succeeded\s+3\b", out) and re.search(r"Failed\s+0\b", out), out


def test_bad_input_is_refused_before_connecting() -> None:
    cases = [
        (["--cron", "0 25 * * *"], "'0 25 * * *'"),
        (["--interval", "often"], "not a duration"),
        (["--cron", "@daily", "--time-zone", "Nowhere/Town"], "unknown time zone"),
    ]
    for extra, message in cases:
        result = runner.invoke(
            app,
            ["schedule", "create", "-s", "x", "--workflow-type", "T", "-t", "q", "-w", "x", *extra,
             "--address", "127.0.0.1:1"],
        )
        assert result.exit_code == 1, result.output
        assert message in result.output.replace("\n", " ") and "cannot connect" not in result.output
