"""The canary workflows (``sagas.canary``) and ``sagas admin canary`` against a real in-process server."""

from __future__ import annotations

import asyncio
import json

import pytest
from typer.testing import CliRunner

from orchestrator.api.enums import WorkflowExecutionStatus
from sagas.canary import PROBES, run_canary
from sagas.cli.main import app
from sagas.testing import WorkflowEnvironment

pytestmark = pytest.mark.e2e

runner = CliRunner()


@pytest.fixture
async def env() -> object:
    async with await WorkflowEnvironment.start_local() as env:
        yield env


async def test_every_probe_passes_on_a_healthy_server(env: WorkflowEnvironment) -> None:
    results = await run_canary(env.client, timeout=30)

    assert [r.probe for r in results] == list(PROBES)
    assert [r for r in results if not r.ok] == []
    # The verdicts come from real workflows: each left a closed run behind.
    closed = {wf.id: wf.status async for wf in env.client.list_workflows("WorkflowId STARTS_WITH 'canary-'")}
    by_probe = {wid.split("-")[1]: status for wid, status in closed.items() if not wid.endswith("-child")}
    assert by_probe["cancellation"] == WorkflowExecutionStatus.CANCELED
    assert by_probe["echo"] == by_probe["timer"] == by_probe["retry"] == WorkflowExecutionStatus.COMPLETED
    assert any(wid.endswith("-child") for wid in closed)
    timer = next(r for r in results if r.probe == "timer")
    assert timer.seconds >= 1.0, "a 1 s timer cannot pass in less than a second"


async def test_a_broken_timer_service_fails_exactly_the_probes_that_need_timers(env: WorkflowEnvironment) -> None:
    assert env.server is not None
    await env.server.orchestrator.timers.stop()

    results = {r.probe: r for r in await run_canary(env.client, probes=["echo", "timer", "retry", "signal"], timeout=4)}

    assert results["echo"].ok and results["signal"].ok
    # A durable sleep and a retry's back-off are both durable timers.
    assert not results["timer"].ok and "no verdict within 4 s" in results["timer"].detail
    assert not results["retry"].ok and "canary-retry-" in results["retry"].detail


async def test_unknown_probes_are_refused_before_anything_starts(env: WorkflowEnvironment) -> None:
    with pytest.raises(ValueError, match="unknown canary probe.*'pnig'.*choose from echo"):
        await run_canary(env.client, probes=["echo", "pnig"])


async def test_cli_prints_json_and_exits_0_when_healthy(env: WorkflowEnvironment) -> None:
    assert env.server is not None
    args = ["admin", "canary", "--address", env.server.target, "--probes", "echo,query", "-o", "json"]
    result = await asyncio.to_thread(runner.invoke, app, args)

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [(r["probe"], r["ok"]) for r in report] == [("echo", True), ("query", True)]


async def test_cli_exits_1_and_names_the_failed_probe(env: WorkflowEnvironment) -> None:
    assert env.server is not None
    await env.server.orchestrator.timers.stop()
    args = ["admin", "canary", "--address", env.server.target, "--probes", "echo,timer", "--timeout", "3"]
    result = await asyncio.to_thread(runner.invoke, app, args)

    assert result.exit_code == 1
    assert "Canary failed: timer" in result.output.replace("\n", " ")


def test_cli_against_no_server_is_a_clear_error() -> None:
    result = runner.invoke(app, ["admin", "canary", "--address", "127.0.0.1:1", "--probes", "echo"])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert "cannot connect to the orchestrator" in result.output
