"""Fail the build when today's workflow code can no longer replay recorded histories.

A change to workflow code that is not replay-safe (an activity added, removed
or reordered without ``workflow.patched``) breaks every run that is in flight
when it is deployed. Catch it before: keep a folder of recorded histories and
replay them in a test. Record one with the CLI or the client::

    sagas workflow show -w trip-1 --output json > tests/histories/trip-1.json

    history = await client.get_workflow_handle("trip-1").fetch_history()
    Path("tests/histories/trip-1.json").write_text(history.to_json())

Then, in the project's tests (with pytest-asyncio or anyio for ``async def``)::

    from sagas.testing.replay import assert_replays, parametrize_histories
    from sagas.worker import WorkflowHistory
    from trips.workflows import BookTrip, RefundTrip

    WORKFLOWS = [BookTrip, RefundTrip]

    # one test for the whole folder: the failure lists every history that broke
    async def test_recorded_histories_replay() -> None:
        await assert_replays("tests/histories", workflows=WORKFLOWS)

    # or one test per file (test ids are the file names)
    @parametrize_histories("tests/histories")
    async def test_history_replays(history: WorkflowHistory) -> None:
        await assert_replays(history, workflows=WORKFLOWS)

A broken history fails with what diverged, where, and in which file::

    AssertionError: 1 of 12 recorded histories no longer replay against today's workflow code:

    tests/histories/trip-1.json (workflow trip-1, run 6f0c...)
      nondeterminism at event 5
        history recorded:      ActivityTaskScheduled(activity_id='1', activity_type='book_car')
        the workflow produced: ScheduleActivityTask(activity_id='1', activity_type='book_hotel')
        at:                    /src/trips/workflows.py:42 in run
      the workflow code changed in a way that is not replay-safe: guard the change with ...

``sagas workflow replay --file tests/histories --module trips.workflows`` does
the same from a shell. An empty or missing folder is an error, never a pass.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.api.history_check import check_history
from sagas.converter import DataConverter
from sagas.exceptions import ApplicationError, NondeterminismError
from sagas.worker._replayer import Replayer, WorkflowHistory
from sagas.workflow._instance import error_source

if TYPE_CHECKING:
    import pytest

__all__ = [
    "LabeledHistory",
    "ReplayFailure",
    "assert_replays",
    "describe_replay_failure",
    "load_histories",
    "parametrize_histories",
    "replay_histories",
]

HistorySource = str | Path | WorkflowHistory
"""A history file, a folder of them (``*.json``, recursively), or a history object."""


@dataclass(frozen=True)
class LabeledHistory:
    """A history and where it came from (a file path, a broker log, a server), for messages.

    Example::

        for labeled in load_histories("tests/histories"):
            print(labeled.label, labeled.history.workflow_id, len(labeled.history.events))
    """

    label: str
    history: WorkflowHistory


@dataclass(frozen=True)
class ReplayFailure:
    """One history that did not replay, and the error the replay raised.

    Example::

        failures = await replay_histories(load_histories("tests/histories"), workflows=[BookTrip])
        for failure in failures:
            print(failure.label, describe_replay_failure(failure.error))
    """

    label: str
    history: WorkflowHistory
    error: Exception

    @property
    def is_nondeterminism(self) -> bool:
        """True for a determinism break (as opposed to, say, an unregistered workflow type)."""
        return isinstance(self.error, NondeterminismError)

    @property
    def is_unknown_type(self) -> bool:
        """True when the history's workflow type is not among the workflows replayed with."""
        return isinstance(self.error, ApplicationError) and self.error.type == "WorkflowTypeNotRegistered"


def load_histories(*sources: HistorySource | Iterable[HistorySource]) -> list[LabeledHistory]:
    """Histories from files, folders (every ``*.json`` below, sorted) and history objects.

    Raises ``FileNotFoundError`` for a path that does not exist and
    ``ValueError`` naming the file for one that is not a history.

    Example::

        histories = load_histories("tests/histories", Path("extra/trip-9.json"))
        print([h.label for h in histories])
    """
    out: list[LabeledHistory] = []
    for source in _flatten(sources):
        if isinstance(source, WorkflowHistory):
            out.append(LabeledHistory(_history_label(source), source))
            continue
        path = Path(source)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*.json") if p.is_file())
        elif path.is_file():
            files = [path]
        else:
            raise FileNotFoundError(f"no history file or folder at {str(path)!r}")
        out.extend(LabeledHistory(str(f), _read_history(f)) for f in files)
    return out


def _flatten(sources: Iterable[Any]) -> Iterable[HistorySource]:
    for s in sources:
        if isinstance(s, str | Path | WorkflowHistory):
            yield s
        else:
            yield from _flatten(s)


def _read_history(path: Path) -> WorkflowHistory:
    try:
        history = WorkflowHistory.from_json(path.read_text(encoding="utf-8"), workflow_id=path.stem)
    except Exception as exc:  # noqa: BLE001 - JSON and validation errors alike: name the file
        raise ValueError(
            f"{path} is not a workflow history ({type(exc).__name__}: {_first_line(exc)}); write one with "
            "`sagas workflow show -w ID --output json` or WorkflowHistory.to_json()"
        ) from exc
    if not history.events:
        raise ValueError(f"{path} is a workflow history without events")
    check_history(history.events, where=str(path))  # truncated, reordered, mixed runs: HistoryIntegrityError
    return history


def _history_label(history: WorkflowHistory) -> str:
    return f"{history.namespace}/{history.workflow_id}/{Replayer._run_id(history)}"


async def replay_histories(
    histories: Sequence[LabeledHistory],
    *,
    workflows: Sequence[type],
    data_converter: DataConverter | None = None,
) -> list[ReplayFailure]:
    """Replay every history against ``workflows``; the failures, in order (empty: all replayed).

    Example::

        failures = await replay_histories(load_histories("tests/histories"), workflows=[BookTrip])
        assert not failures, [f.label for f in failures]
    """
    replayer = Replayer(workflows=workflows, data_converter=data_converter)
    failures: list[ReplayFailure] = []
    for item in histories:
        result = await replayer.replay_workflow(item.history, raise_on_replay_failure=False)
        if result.replay_failure is not None:
            failures.append(ReplayFailure(item.label, item.history, result.replay_failure))
    return failures


async def assert_replays(
    *sources: HistorySource | Iterable[HistorySource],
    workflows: Sequence[type],
    data_converter: DataConverter | None = None,
) -> int:
    """Replay recorded histories against ``workflows``; ``AssertionError`` listing every one that fails.

    ``sources``: history files, folders of ``*.json`` files, or
    :class:`~sagas.worker.WorkflowHistory` objects. Returns how many replayed.
    Finding no history at all is a failure too (a wrong path must not pass).

    Example (a pytest test)::

        async def test_recorded_histories_replay() -> None:
            assert await assert_replays("tests/histories", workflows=[BookTrip, RefundTrip]) > 0
    """
    histories = load_histories(*sources)
    if not histories:
        raise AssertionError(f"no recorded histories found in {', '.join(map(str, _flatten(sources)))}")
    failures = await replay_histories(histories, workflows=workflows, data_converter=data_converter)
    if failures:
        lines = [
            f"{len(failures)} of {len(histories)} recorded histories no longer replay against today's "
            "workflow code:"
        ]
        for f in failures:
            lines += ["", f"{f.label} (workflow {f.history.workflow_id}, run {Replayer._run_id(f.history)})"]
            lines += [f"  {line}" for line in describe_replay_failure(f.error)]
        raise AssertionError("\n".join(lines))
    return len(histories)


def parametrize_histories(*sources: HistorySource, argname: str = "history") -> pytest.MarkDecorator:
    """``pytest.mark.parametrize`` over recorded histories: one test per file, its id the file name.

    The test receives a :class:`~sagas.worker.WorkflowHistory` as ``argname``.
    No history found is a collection error (never a silently empty test).

    Example (a pytest test per history file)::

        @parametrize_histories("tests/histories")
        async def test_history_replays(history: WorkflowHistory) -> None:
            await assert_replays(history, workflows=[BookTrip])
    """
    import pytest

    histories = load_histories(*sources)
    if not histories:
        raise ValueError(f"no recorded histories found in {', '.join(map(str, sources))}")
    roots = [Path(s) for s in sources if isinstance(s, str | Path) and Path(s).is_dir()]
    return pytest.mark.parametrize(
        argname, [pytest.param(h.history, id=_test_id(h.label, roots)) for h in histories]
    )


def _test_id(label: str, roots: list[Path]) -> str:
    path = Path(label)
    for root in roots:
        if path.is_relative_to(root):
            return str(path.relative_to(root).with_suffix(""))
    return path.stem if path.suffix == ".json" else label


def describe_replay_failure(error: BaseException) -> list[str]:
    """Lines that say why a replay failed: the divergence (event, both commands, source line) or the error.

    Example::

        try:
            await Replayer(workflows=[BookTrip]).replay_workflow(history)
        except Exception as err:
            for line in describe_replay_failure(err):
                print(line)
    """
    if isinstance(error, NondeterminismError) and (error.recorded or error.produced):
        lines = [f"nondeterminism at event {error.event_id}" if error.event_id else "nondeterminism"]
        if error.recorded:
            lines.append(f"  history recorded:      {error.recorded}")
        lines.append(f"  the workflow produced: {error.produced or 'no command there'}")
        if error.source:
            label = "at:" if error.produced else "waiting at:"
            lines.append(f"  {label:<23}{error.source}")
        lines.append(
            "  the workflow code changed in a way that is not replay-safe: guard the change with "
            "workflow.patched(...) so that runs already in flight keep the old path"
        )
        return lines
    lines = [f"{type(error).__name__}: {error}"]
    if isinstance(error, ApplicationError) and error.type == "WorkflowTypeNotRegistered":
        lines.append("  replay with that workflow's class too (or leave the history out)")
        return lines
    where = error_source(error)
    if where:
        lines.append(f"  raised at {where}")
    return lines


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
