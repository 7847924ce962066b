"""The ``sagas`` command line, without a server."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from typer.testing import CliRunner

from orchestrator.api.events import parse_events
from sagas.cli.main import app
from sagas.cli.workflow import saga_steps

runner = CliRunner()

COMMANDS = ["start", "execute", "describe", "show", "list", "signal", "query", "cancel", "terminate"]


def test_root_help_lists_groups() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for group in ("workflow", "server", "demo"):
        assert group in result.output


@pytest.mark.parametrize("command", COMMANDS)
def test_workflow_command_help(command: str) -> None:
    result = runner.invoke(app, ["workflow", command, "--help"])
    assert result.exit_code == 0, result.output
    assert "--address" in result.output and "--namespace" in result.output


def test_connection_refused_prints_a_clear_error() -> None:
    result = runner.invoke(app, ["workflow", "describe", "-w", "wf-1", "--address", "127.0.0.1:1"])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert "cannot connect to the orchestrator" in result.output
    assert "sagas server start-dev" in result.output.replace("\n", " ")


def test_bad_json_input_is_refused_before_connecting() -> None:
    result = runner.invoke(
        app, ["workflow", "start", "--type", "T", "-t", "q", "-w", "x", "--input", "{bad", "--address", "127.0.0.1:1"]
    )
    assert result.exit_code == 1
    assert "not valid JSON" in result.output
    assert "cannot connect" not in result.output


def _event(event_id: int, event_type: str, **fields: object) -> dict[str, object]:
    return {"event_id": event_id, "event_time": datetime(2026, 1, 1, tzinfo=UTC).isoformat(), "event_type": event_type, **fields}


def test_saga_steps_from_markers() -> None:
    def marker(event_id: int, event: str, index: int, name: str, **extra: object) -> dict[str, object]:
        details = {"saga_id": "s1", "event": event, "index": index, "name": name, **extra}
        return _event(event_id, "MarkerRecorded", marker_name="saga", details=details)

    events = parse_events(
        [
            _event(1, "ActivityTaskScheduled", activity_id="1", activity_type="book_car", task_queue="q"),
            _event(2, "ActivityTaskCompleted", scheduled_event_id=1, started_event_id=0),
            marker(3, "step_registered", 0, "cancel_car"),
            _event(4, "ActivityTaskScheduled", activity_id="2", activity_type="book_hotel", task_queue="q"),
            _event(5, "ActivityTaskCompleted", scheduled_event_id=4, started_event_id=0),
            marker(6, "step_registered", 1, "cancel_hotel"),
            marker(7, "compensation_started", 1, "cancel_hotel"),
            marker(8, "compensation_failed", 1, "cancel_hotel", error="hotel down"),
            marker(9, "compensation_started", 0, "cancel_car"),
            marker(10, "compensation_completed", 0, "cancel_car"),
        ]
    )
    steps = saga_steps(events)
    assert [(s["step"], s["compensation"], s["status"], s["error"]) for s in steps] == [
        ("book_car", "cancel_car", "compensated", ""),
        ("book_hotel", "cancel_hotel", "compensation failed", "hotel down"),
    ]
