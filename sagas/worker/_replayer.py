"""Replay recorded workflow histories against today's workflow code.

The cheapest guard against a determinism regression: save histories of real
runs (``sagas workflow show --json`` or ``WorkflowHandle.fetch_history``)
and replay them in a test.

.. code-block:: python

    history = WorkflowHistory.from_json(Path("trip.json").read_text())
    await Replayer(workflows=[TripWorkflow]).replay_workflow(history)
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestrator.api.events import HistoryEvent, WorkflowExecutionStarted, dump_events, parse_events
from sagas.converter import DataConverter
from sagas.workflow._instance import WorkflowRunner

__all__ = ["ReplayResult", "ReplayResults", "Replayer", "WorkflowHistory"]


@dataclass
class WorkflowHistory:
    """A workflow run's history: its id and its events (from event 1).

    ``run_id`` seeds ``workflow.random()``; when empty it is taken from the
    start event's ``original_execution_run_id``.

    Example::

        history = await client.get_workflow_handle("trip-1").fetch_history()
        Path("tests/histories/trip-1.json").write_text(history.to_json())
        same = WorkflowHistory.from_json(Path("tests/histories/trip-1.json").read_text())
    """

    workflow_id: str
    events: list[HistoryEvent]
    run_id: str = ""
    namespace: str = "default"

    @staticmethod
    def from_json(
        data: str | bytes | Mapping[str, Any] | Sequence[Any], workflow_id: str = "replay"
    ) -> WorkflowHistory:
        """Parse ``{"workflow_id": ..., "events": [...]}`` or a bare list of events (JSON text or objects)."""
        obj: Any = json.loads(data) if isinstance(data, str | bytes) else data
        if isinstance(obj, Mapping):
            return WorkflowHistory(
                workflow_id=str(obj.get("workflow_id") or workflow_id),
                events=parse_events(list(obj.get("events", []))),
                run_id=str(obj.get("run_id") or ""),
                namespace=str(obj.get("namespace") or "default"),
            )
        return WorkflowHistory(workflow_id=workflow_id, events=parse_events(list(obj)))

    def to_json(self) -> str:
        """The inverse of :meth:`from_json` (indented, one event per object)."""
        return json.dumps(
            {
                "workflow_id": self.workflow_id,
                "run_id": self.run_id,
                "namespace": self.namespace,
                "events": json.loads(dump_events(self.events)),
            },
            indent=1,
        )


@dataclass
class ReplayResult:
    """The outcome of replaying one history; ``replay_failure`` is ``None`` on success.

    Example::

        result = await Replayer(workflows=[BookTrip]).replay_workflow(history, raise_on_replay_failure=False)
        if result.replay_failure is not None:
            print("does not replay:", result.replay_failure)
    """

    history: WorkflowHistory
    replay_failure: Exception | None = None


@dataclass
class ReplayResults:
    """Outcomes of :meth:`Replayer.replay_workflows`: failures by ``workflow_id/run_id``.

    Example::

        results = await Replayer(workflows=[BookTrip]).replay_workflows(histories, raise_on_replay_failure=False)
        for run, error in results.replay_failures.items():
            print(run, error)
        print(results.replayed, "replayed")
    """

    replay_failures: dict[str, Exception] = field(default_factory=dict)
    replayed: int = 0


class Replayer:
    """Replays histories through the workflow runtime without a server.

    A replay fails with the error the runtime raised: most often
    :class:`~sagas.exceptions.NondeterminismError`, naming the event id and
    both commands.

    Example::

        history = WorkflowHistory.from_json(Path("tests/histories/trip-1.json").read_text())
        await Replayer(workflows=[BookTrip]).replay_workflow(history)   # raises NondeterminismError on a divergence
    """

    def __init__(self, *, workflows: Sequence[type], data_converter: DataConverter | None = None) -> None:
        self._runner = WorkflowRunner(workflows, data_converter=data_converter)

    async def replay_workflow(
        self, history: WorkflowHistory, *, raise_on_replay_failure: bool = True
    ) -> ReplayResult:
        """Replay every event of ``history``; raise (or return) the failure if replay diverges."""
        try:
            await self._replay(history)
        except Exception as err:
            if raise_on_replay_failure:
                raise
            return ReplayResult(history, err)
        return ReplayResult(history)

    async def replay_workflows(
        self,
        histories: Iterable[WorkflowHistory] | AsyncIterable[WorkflowHistory],
        *,
        raise_on_replay_failure: bool = True,
    ) -> ReplayResults:
        """Replay several histories; with ``raise_on_replay_failure=False`` collect every failure."""
        results = ReplayResults()

        async def one(h: WorkflowHistory) -> None:
            result = await self.replay_workflow(h, raise_on_replay_failure=raise_on_replay_failure)
            results.replayed += 1
            if result.replay_failure is not None:
                results.replay_failures[f"{h.workflow_id}/{self._run_id(h)}"] = result.replay_failure

        if isinstance(histories, AsyncIterable):
            async for h in histories:
                await one(h)
        else:
            for h in histories:
                await one(h)
        return results

    @staticmethod
    def _run_id(history: WorkflowHistory) -> str:
        if history.run_id:
            return history.run_id
        first = history.events[0] if history.events else None
        if isinstance(first, WorkflowExecutionStarted) and first.original_execution_run_id:
            return first.original_execution_run_id
        return "replay"

    async def _replay(self, history: WorkflowHistory) -> None:
        first = history.events[0] if history.events else None
        if not isinstance(first, WorkflowExecutionStarted):
            raise ValueError("a history must start with WorkflowExecutionStarted (event 1)")
        instance = self._runner.create_instance(
            namespace=history.namespace,
            workflow_id=history.workflow_id,
            run_id=self._run_id(history),
            workflow_type=first.workflow_type,
            task_queue=first.task_queue,
        )
        await instance.replay(history.events)
