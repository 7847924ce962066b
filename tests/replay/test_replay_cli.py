"""``sagas workflow replay`` and the ``sagas.testing.replay`` helpers: OK, divergence, and what the report says."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sagas import workflow
from sagas.cli.main import app
from sagas.testing import WorkflowEnvironment
from sagas.testing.replay import assert_replays, load_histories, parametrize_histories
from sagas.worker import Worker, WorkflowHistory
from tests.replay.record_histories import HISTORIES, REPLAY_WORKFLOWS

runner = CliRunner()

WORKFLOWS_MODULE = "tests.sagas.runtime.workflows"
ONE_ACTIVITY = HISTORIES / "one_activity.json"
TIMERS = HISTORIES / "timers.json"
SOURCE_LINE = re.compile(r"workflows\.py:\d+ in run")


@workflow.defn(name="SleepWorkflow")
class WaitsForeverInstead:
    """Sleeps like ``SleepWorkflow`` and then waits for a condition instead of sleeping again."""

    @workflow.run
    async def run(self) -> None:
        await workflow.sleep(10)
        await workflow.wait_condition(lambda: False)  # the line the report must name


@workflow.defn(name="SleepWorkflow")
class SleepsOnce:
    @workflow.run
    async def run(self) -> None:
        await workflow.sleep(10)


@workflow.defn(name="SleepWorkflow")
class RaisesInstead:
    @workflow.run
    async def run(self) -> None:
        await workflow.sleep(10)
        raise KeyError("a bug in the new code")


def replay(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["workflow", "replay", *args])
    return result.exit_code, result.output


def every_workflow() -> list[str]:
    return [arg for cls in REPLAY_WORKFLOWS for arg in ("--workflows", f"{cls.__module__}:{cls.__qualname__}")]


# -- the command ------------------------------------------------------------------------------


def test_good_file_replays_ok() -> None:
    code, out = replay("--workflows", f"{WORKFLOWS_MODULE}:OneActivityWorkflow", "--file", str(ONE_ACTIVITY))
    assert code == 0, out
    assert "OK" in out and "one_activity.json" in out
    assert "1 replayed: 1 OK, 0 failed" in out


def test_folder_of_recorded_histories_replays_ok() -> None:
    code, out = replay(*every_workflow(), "--file", str(HISTORIES))
    assert code == 0, out
    files = len(list(HISTORIES.glob("*.json")))
    assert f"{files} replayed: {files} OK, 0 failed" in out


def test_changed_workflow_exits_1_naming_event_both_commands_and_source_line() -> None:
    code, out = replay("--workflows", f"{WORKFLOWS_MODULE}:OneActivityWorkflowChanged", "--file", str(ONE_ACTIVITY))
    assert code == 1, out
    assert "FAILED" in out and "one_activity.json" in out
    assert "nondeterminism at event 5" in out
    assert "history recorded:      ActivityTaskScheduled(activity_id='1', activity_type='book_car')" in out
    assert "the workflow produced: ScheduleActivityTask(activity_id='1', activity_type='book_hotel')" in out
    assert SOURCE_LINE.search(out), out  # the workflow code that produced the command
    assert "workflow.patched" in out
    assert "1 replayed: 0 OK, 1 failed" in out


def test_a_missing_command_names_where_the_workflow_waits() -> None:
    code, out = replay("--workflows", f"{__name__}:WaitsForeverInstead", "--file", str(TIMERS))
    assert code == 1, out
    assert "history recorded:      TimerStarted(timer_id='2')" in out
    assert "the workflow produced: no command there" in out
    line = next(i for i, text in enumerate(Path(__file__).read_text().splitlines(), 1) if "the line the report" in text)
    assert f"waiting at:            {__file__}:{line} in run" in out


def test_an_extra_command_is_reported_at_the_end_of_history() -> None:
    code, out = replay("--workflows", f"{__name__}:SleepsOnce", "--file", str(TIMERS))
    assert code == 1, out
    assert "CompleteWorkflowExecution()" in out and "TimerStarted(timer_id='2')" in out
    assert re.search(r"test_replay_cli\.py:\d+ in run", out), out


def test_an_error_in_the_new_code_names_the_line_that_raised() -> None:
    code, out = replay("--workflows", f"{__name__}:RaisesInstead", "--file", str(TIMERS))
    assert code == 1, out
    assert "KeyError: 'a bug in the new code'" in out
    assert re.search(r"raised at .*test_replay_cli\.py:\d+ in run", out), out


def test_every_divergent_history_is_reported(tmp_path: Path) -> None:
    shutil.copy(ONE_ACTIVITY, tmp_path / "a.json")
    shutil.copy(ONE_ACTIVITY, tmp_path / "b.json")
    code, out = replay("--workflows", f"{WORKFLOWS_MODULE}:OneActivityWorkflowChanged", "--file", str(tmp_path))
    assert code == 1
    assert out.count("nondeterminism at event 5") == 2
    assert "2 replayed: 0 OK, 2 failed" in out


def test_workflow_id_selects_files_of_that_workflow() -> None:
    code, out = replay(*every_workflow(), "--file", str(HISTORIES), "-w", "replay-timers")
    assert code == 0, out
    assert "timers.json" in out and "1 replayed: 1 OK, 0 failed" in out


def test_unknown_workflow_type_fails_unless_ignored() -> None:
    args = ["--workflows", f"{WORKFLOWS_MODULE}:OneActivityWorkflow", "--file", str(ONE_ACTIVITY), "--file", str(TIMERS)]
    code, out = replay(*args)
    assert code == 1
    assert "'SleepWorkflow' is not registered" in out
    code, out = replay(*args, "--ignore-unknown-types")
    assert code == 0, out
    assert "SKIPPED" in out and "2 replayed: 1 OK, 0 failed, 1 skipped" in out


def test_module_loads_every_workflow_class(tmp_path: Path) -> None:
    package = f"replaymod_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{package}.py").write_text(
        "from sagas import workflow\n"
        "from tests.sagas.runtime.workflows import OneActivityWorkflow, SleepWorkflow\n"
        "class NotAWorkflow:\n    pass\n"
    )
    code, out = replay(
        "--module", package, "--app-dir", str(tmp_path), "--file", str(ONE_ACTIVITY), "--file", str(TIMERS)
    )
    assert code == 0, out
    assert "2 replayed: 2 OK, 0 failed" in out


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--file", str(ONE_ACTIVITY)], "--workflows module:Class or --module"),
        ([f"--workflows={WORKFLOWS_MODULE}:OneActivityWorkflow"], "say where the histories are"),
        (["--workflows", "no_colon", "--file", str(ONE_ACTIVITY)], "is not module:Class"),
        (["--workflows", f"{WORKFLOWS_MODULE}:Booking", "--file", str(ONE_ACTIVITY)], "is not a @workflow.defn class"),
        (["--workflows", "no_such_module_x:C", "--file", str(ONE_ACTIVITY)], "cannot import 'no_such_module_x'"),
        (["--module", WORKFLOWS_MODULE, "--file", str(ONE_ACTIVITY)], "are both workflow"),
        (
            ["--workflows", f"{WORKFLOWS_MODULE}:OneActivityWorkflow", "-w", "a", "-w", "b", "--run-id", "r"],
            "--run-id needs exactly one --workflow-id",
        ),
        (
            ["--workflows", f"{WORKFLOWS_MODULE}:OneActivityWorkflow", "--broker-log", "memory://", "--since", "yesterday"],
            "is not an ISO 8601 time",
        ),
    ],
)
def test_bad_options_exit_2_with_the_reason(args: list[str], expected: str) -> None:
    code, out = replay(*args)
    assert code == 2, out
    assert expected in " ".join(out.replace("│", " ").split()), out


def test_a_file_that_is_not_a_history_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "notes.json"
    bad.write_text(json.dumps({"events": [{"event_id": 1}]}))
    code, out = replay("--workflows", f"{WORKFLOWS_MODULE}:OneActivityWorkflow", "--file", str(bad))
    assert code == 1
    assert "notes.json is not a workflow history" in out.replace("\n", "")


def test_an_empty_broker_log_is_nothing_to_replay() -> None:
    code, out = replay(
        "--workflows", f"{WORKFLOWS_MODULE}:OneActivityWorkflow", "--broker-log", "memory://", "--wait", "0.1"
    )
    assert code == 1
    assert "no history to replay" in out


# -- from the server ---------------------------------------------------------------------------


async def test_replay_a_run_fetched_from_the_server() -> None:
    async with await WorkflowEnvironment.start_time_skipping() as env:
        from tests.sagas.runtime.workflows import SleepWorkflow

        async with Worker(env.client, task_queue="tq-replay", workflows=[WaitsForeverInstead]):
            handle = await env.client.start_workflow(WaitsForeverInstead.run, id="wf-replay-cli", task_queue="tq-replay")
            while len((await handle.fetch_history()).events) < 6:  # the first timer fired and was handled
                await asyncio.sleep(0.05)
        assert env.server is not None
        address = env.server.target
        ok = await asyncio.to_thread(
            replay, "--workflows", f"{__name__}:WaitsForeverInstead", "-w", "wf-replay-cli", "--address", address
        )
        assert ok[0] == 0, ok[1]
        assert "OK" in ok[1] and "wf-replay-cli" in ok[1]
        code, out = await asyncio.to_thread(
            replay, "--workflows", f"{SleepWorkflow.__module__}:SleepWorkflow", "-w", "wf-replay-cli", "--address", address
        )
        assert code == 1, out
        assert "nondeterminism at event" in out and "WaitsForeverInstead" not in out
        await handle.terminate()


def test_server_errors_are_reported_readably() -> None:
    code, out = replay("--workflows", f"{WORKFLOWS_MODULE}:OneActivityWorkflow", "-w", "x", "--address", "127.0.0.1:1")
    assert code == 1
    assert "Traceback" not in out and "cannot connect" in out


# -- sagas.testing.replay ----------------------------------------------------------------------


async def test_assert_replays_lists_every_failure_with_file_and_divergence(tmp_path: Path) -> None:
    shutil.copy(ONE_ACTIVITY, tmp_path / "trip.json")
    shutil.copy(TIMERS, tmp_path / "sleep.json")
    from tests.sagas.runtime.workflows import OneActivityWorkflowChanged, SleepWorkflow

    with pytest.raises(AssertionError) as info:
        await assert_replays(tmp_path, workflows=[OneActivityWorkflowChanged, SleepWorkflow])
    message = str(info.value)
    assert message.startswith("1 of 2 recorded histories no longer replay")
    assert f"{tmp_path / 'trip.json'} (workflow replay-one_activity, run run-one_activity)" in message
    assert "nondeterminism at event 5" in message
    assert "ActivityTaskScheduled(activity_id='1', activity_type='book_car')" in message
    assert "ScheduleActivityTask(activity_id='1', activity_type='book_hotel')" in message
    assert SOURCE_LINE.search(message)
    assert "sleep.json" not in message


async def test_assert_replays_accepts_files_folders_and_history_objects() -> None:
    history = WorkflowHistory.from_json(TIMERS.read_text())
    assert await assert_replays(ONE_ACTIVITY, [history], HISTORIES, workflows=REPLAY_WORKFLOWS) == 2 + len(
        list(HISTORIES.glob("*.json"))
    )


async def test_no_history_is_a_failure_not_a_pass(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="no recorded histories found"):
        await assert_replays(tmp_path, workflows=REPLAY_WORKFLOWS)
    with pytest.raises(FileNotFoundError, match="no history file or folder"):
        load_histories(tmp_path / "missing")
    with pytest.raises(ValueError, match="no recorded histories found"):
        parametrize_histories(tmp_path)


def test_parametrize_ids_are_file_names() -> None:
    mark = parametrize_histories(HISTORIES)
    argname, params = mark.args
    assert argname == "history"
    assert sorted(p.id for p in params) == sorted(f.stem for f in HISTORIES.glob("*.json"))
