"""Structured JSON logs: one object per line, with the run a line is about."""

from __future__ import annotations

import io
import json
import logging
import uuid

from typer.testing import CliRunner

from orchestrator.history.engine import Mutation
from orchestrator.history.state import ExecutionState
from orchestrator.logging import JsonFormatter, configure_logging, reset_log_context, set_log_context
from sagas.cli.server import server_app
from sagas.testing import WorkflowEnvironment


def _capture(name: str) -> tuple[logging.Logger, io.StringIO, logging.Handler]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger(name)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return logger, out, handler


def _lines(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_each_line_is_one_json_object_with_the_context() -> None:
    logger, out, handler = _capture("sagas.test.json")
    try:
        logger.info("outside %s", "any run")
        token = set_log_context(namespace="default", workflow_id="trip-1", run_id="r1", shard=3)
        try:
            logger.warning("inside\nwith a newline")
            try:
                raise ValueError("boom")
            except ValueError:
                logger.exception("failed")
        finally:
            reset_log_context(token)
        logger.info("explicit", extra={"workflow_id": "other", "run_id": "r2"})
    finally:
        logger.removeHandler(handler)
    outside, inside, failed, explicit = _lines(out)
    assert outside["message"] == "outside any run" and outside["level"] == "INFO"
    assert outside["logger"] == "sagas.test.json" and str(outside["time"]).endswith("Z")
    assert "workflow_id" not in outside
    assert inside == {**inside, "message": "inside\nwith a newline", "level": "WARNING",
                      "namespace": "default", "workflow_id": "trip-1", "run_id": "r1", "shard": 3}
    assert failed["workflow_id"] == "trip-1" and "ValueError: boom" in str(failed["exc_info"])
    assert explicit["workflow_id"] == "other" and explicit["run_id"] == "r2" and "shard" not in explicit


async def test_history_writes_log_with_the_run_they_work_on() -> None:
    logger, out, handler = _capture("sagas.test.history")
    env = await WorkflowEnvironment.start_local()
    try:
        assert env.server is not None
        history = env.server.orchestrator.history
        wid = f"log-{uuid.uuid4().hex[:8]}"
        handle = await env.client.start_workflow("Nobody", id=wid, task_queue="nobody")

        def op(state: ExecutionState, now: float) -> Mutation:
            logger.info("working on it")
            return Mutation(state=state, expected_version=state.db_version, noop=True)

        await history.update("default", wid, "", op)
    finally:
        logger.removeHandler(handler)
        await env.shutdown()
    [line] = _lines(out)
    assert line["workflow_id"] == wid and line["run_id"] == handle.result_run_id and line["namespace"] == "default"
    assert line["shard"] == history.shard_of("default", wid)


def test_configure_logging_and_the_cli_option() -> None:
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    try:
        configure_logging("INFO", "json")
        assert isinstance(root.handlers[0].formatter, JsonFormatter) and root.level == logging.INFO
        configure_logging("WARNING", "text")
        assert not isinstance(root.handlers[0].formatter, JsonFormatter)
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
    runner = CliRunner()
    assert "--log-format" in runner.invoke(server_app, ["start-dev", "--help"]).output
    bad = runner.invoke(server_app, ["start-dev", "--log-format", "xml"])
    assert bad.exit_code != 0 and "text or json" in bad.output
