"""``sagas schedule ...`` and ``sagas batch ...``: schedules and batch operations from a shell.

The connection options are those of ``sagas workflow`` (``--address``,
``--namespace``, ``--api-key``, ``--tls...``). Durations are ``90s``, ``15m``,
``1h``, ``2d`` (or plain seconds); times are ISO 8601 (UTC when no zone)::

    sagas schedule create -s nightly --workflow-type Report -t reports -w report \\
        --cron '0 2 * * *' --time-zone Europe/Paris --input '"eu"'
    sagas schedule create -s hourly --workflow-type Sync -t sync -w sync --interval 1h/5m --overlap buffer-one
    sagas schedule describe -s nightly
    sagas schedule pause -s nightly --note "migration tonight"
    sagas schedule trigger -s nightly
    sagas schedule backfill -s hourly --start-time 2026-01-01T00:00 --end-time 2026-01-08T00:00
    sagas schedule delete -s nightly

    sagas batch terminate --query "WorkflowType = 'BookTrip' AND ExecutionStatus = 'Running'" --rps 100
    sagas batch signal --query "WorkflowId STARTS_WITH 'order-'" --name approve --input '"ops"'
    sagas batch reset --query "WorkflowType = 'BookTrip' AND ExecutionStatus = 'Failed'" --type LastWorkflowTask
    sagas batch describe --batch-id 3f2a9c1d7e4b
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, TypeVar

import typer
from rich.markup import escape
from rich.table import Table

from sagas.cli.workflow import (
    Connection,
    Inputs,
    OutputFormat,
    _err,
    _json,
    _out,
    _parse_inputs,
    _run,
    _time,
    _with_client,
    connected,
)
from sagas.client import (
    BatchCancel,
    BatchOperation,
    BatchOperationProgress,
    BatchReset,
    BatchSignal,
    BatchTerminate,
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleBackfill,
    ScheduleDescription,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
)
from sagas.client._schedule import validate_schedule

_T = TypeVar("_T")

schedule_app = typer.Typer(help="Create, inspect and steer schedules.", no_args_is_help=True)
batch_app = typer.Typer(help="Signal, cancel, terminate or reset every workflow a query matches.", no_args_is_help=True)

ScheduleId = Annotated[str, typer.Option("--schedule-id", "-s", help="Schedule id.")]


class Overlap(StrEnum):
    SKIP = "skip"
    BUFFER_ONE = "buffer-one"
    BUFFER_ALL = "buffer-all"
    CANCEL_OTHER = "cancel-other"
    TERMINATE_OTHER = "terminate-other"
    ALLOW_ALL = "allow-all"

    def policy(self) -> ScheduleOverlapPolicy:
        return ScheduleOverlapPolicy[self.name]


OverlapOption = Annotated[Overlap | None, typer.Option("--overlap", help="Overlap policy (default: the schedule's).")]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(text: str, what: str) -> timedelta:
    """``90s``, ``15m``, ``1h``, ``2d`` or plain seconds."""
    m = _DURATION.match(text)
    if not m:
        raise ValueError(f"{what} {text!r} is not a duration; use e.g. 90s, 15m, 1h or 2d")
    return timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])


def parse_time(text: str, what: str) -> datetime:
    """ISO 8601; no zone means UTC."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{what} {text!r} is not an ISO 8601 time, e.g. 2026-01-01T09:00 or 2026-01-01T09:00+01:00") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _interval(text: str) -> ScheduleIntervalSpec:
    every, _, offset = text.partition("/")
    return ScheduleIntervalSpec(
        every=parse_duration(every, "--interval"),
        offset=parse_duration(offset, "--interval offset") if offset else None,
    )


def _checked(build: Callable[[], _T]) -> _T:
    """Build a command's input before connecting; bad input exits 1 with the reason."""
    try:
        return build()
    except ValueError as exc:  # InvalidScheduleError is one too
        _err.print(f"[red]Error:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from None


# -- schedules ---------------------------------------------------------------------------


@schedule_app.command("create")
@connected
def create(
    conn: Connection,
    schedule_id: ScheduleId,
    workflow_type: Annotated[str, typer.Option("--workflow-type", help="Workflow type the schedule starts.")],
    task_queue: Annotated[str, typer.Option("--task-queue", "-t", help="Task queue of its workers.")],
    workflow_id: Annotated[
        str, typer.Option("--workflow-id", "-w", help="Prefix of the runs' workflow ids ({id}-{fire time}).")
    ],
    inputs: Inputs = None,
    cron: Annotated[list[str] | None, typer.Option("--cron", help="Cron string; repeatable.")] = None,
    interval: Annotated[
        list[str] | None, typer.Option("--interval", help="Interval, optionally with an offset: 1h or 1h/5m; repeatable.")
    ] = None,
    time_zone: Annotated[str | None, typer.Option("--time-zone", help="IANA time zone of the cron strings.")] = None,
    jitter: Annotated[str | None, typer.Option("--jitter", help="Delay each fire by up to this much.")] = None,
    start_time: Annotated[str | None, typer.Option("--start-time", help="Do not fire before this time.")] = None,
    end_time: Annotated[str | None, typer.Option("--end-time", help="Do not fire after this time.")] = None,
    overlap: Annotated[Overlap, typer.Option("--overlap", help="What to do when a run is still open.")] = Overlap.SKIP,
    catchup_window: Annotated[str, typer.Option("--catchup-window", help="Run missed fires up to this old.")] = "365d",
    pause_on_failure: Annotated[bool, typer.Option("--pause-on-failure", help="Pause when a run fails.")] = False,
    paused: Annotated[bool, typer.Option("--paused", help="Create the schedule paused.")] = False,
    note: Annotated[str | None, typer.Option("--note", help="Note on the schedule's state.")] = None,
    trigger_immediately: Annotated[bool, typer.Option("--trigger-immediately", help="Also fire once now.")] = False,
) -> None:
    """Create a schedule that starts a workflow on cron strings and/or intervals."""

    args = _parse_inputs(inputs)

    def build() -> Schedule:
        return Schedule(
            action=ScheduleActionStartWorkflow(workflow_type, args=args, id=workflow_id, task_queue=task_queue),
            spec=ScheduleSpec(
                cron_expressions=list(cron or []),
                intervals=[_interval(i) for i in interval or []],
                time_zone_name=time_zone,
                jitter=parse_duration(jitter, "--jitter") if jitter else None,
                start_at=parse_time(start_time, "--start-time") if start_time else None,
                end_at=parse_time(end_time, "--end-time") if end_time else None,
            ),
            policy=SchedulePolicy(
                overlap=overlap.policy(),
                catchup_window=parse_duration(catchup_window, "--catchup-window"),
                pause_on_failure=pause_on_failure,
            ),
            state=ScheduleState(paused=paused, note=note),
        )

    def build_valid() -> Schedule:
        schedule = build()
        validate_schedule(schedule)
        return schedule

    schedule = _checked(build_valid)

    async def go(client: Client) -> None:
        handle = await client.create_schedule(schedule_id, schedule, trigger_immediately=trigger_immediately)
        desc = await handle.describe()
        nxt = desc.info.next_action_times[0] if desc.info.next_action_times else None
        _out.print(f"Created schedule [bold]{escape(handle.id)}[/bold]; next fire {_time(nxt)}")

    _run(lambda: _with_client(conn, go))


def _describe_table(desc: ScheduleDescription) -> Table:
    s, info = desc.schedule, desc.info
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    spec = [*s.spec.cron_expressions, *(f"every {i.every}" + (f" + {i.offset}" if i.offset else "") for i in s.spec.intervals)]
    rows = [
        ("Schedule id", desc.id),
        ("Workflow", f"{s.action.workflow} on {s.action.task_queue} (ids {s.action.id}-<fire time>)"),
        ("Spec", ", ".join(spec) + (f" ({s.spec.time_zone_name})" if s.spec.time_zone_name else "") or "-"),
        ("Overlap", s.policy.overlap.name),
        ("State", ("paused" if s.state.paused else "active") + (f": {s.state.note}" if s.state.note else "")),
        ("Actions", f"{info.num_actions} taken, {info.num_actions_skipped_overlap} skipped (overlap), "
                    f"{info.num_actions_missed_catchup_window} missed (catch-up window)"),
        ("Running", ", ".join(a.workflow_id for a in info.running_actions) or "-"),
        ("Recent", "\n".join(f"{_time(a.scheduled_at)}  {a.action.workflow_id}" for a in info.recent_actions) or "-"),
        ("Next", "\n".join(_time(t) for t in info.next_action_times[:5]) or "-"),
        ("Created", _time(info.created_at)),
    ]
    for key, value in rows:
        table.add_row(key, escape(value))
    return table


@schedule_app.command("describe")
@connected
def describe(
    conn: Connection,
    schedule_id: ScheduleId,
    output: Annotated[OutputFormat, typer.Option("--output", "-o", help="table or json.")] = OutputFormat.TABLE,
) -> None:
    """Show a schedule: spec, state, recent and next actions."""

    async def go(client: Client) -> None:
        desc = await client.get_schedule_handle(schedule_id).describe()
        if output == OutputFormat.JSON:
            _out.print_json(_json(asdict(desc)))
        else:
            _out.print(_describe_table(desc))

    _run(lambda: _with_client(conn, go))


@schedule_app.command("list")
@connected
def list_(
    conn: Connection,
) -> None:
    """List the schedules of the namespace."""

    async def go(client: Client) -> None:
        table = Table("Schedule id", "Workflow", "State", "Next fire")
        async for s in await client.list_schedules():
            state = "paused" if s.schedule.state.paused else "active"
            nxt = s.info.next_action_times[0] if s.info.next_action_times else None
            table.add_row(escape(s.id), escape(s.schedule.action.workflow), state, _time(nxt))
        _out.print(table)

    _run(lambda: _with_client(conn, go))


@schedule_app.command("pause")
@connected
def pause(
    conn: Connection,
    schedule_id: ScheduleId,
    note: Annotated[str | None, typer.Option("--note", help="Why it is paused.")] = None,
) -> None:
    """Stop firing until unpaused (triggers and backfills still run)."""

    async def go(client: Client) -> None:
        await client.get_schedule_handle(schedule_id).pause(note=note)
        _out.print(f"Paused {escape(schedule_id)}")

    _run(lambda: _with_client(conn, go))


@schedule_app.command("unpause")
@connected
def unpause(
    conn: Connection,
    schedule_id: ScheduleId,
    note: Annotated[str | None, typer.Option("--note", help="Why it runs again.")] = None,
) -> None:
    """Fire again from now on."""

    async def go(client: Client) -> None:
        await client.get_schedule_handle(schedule_id).unpause(note=note)
        _out.print(f"Unpaused {escape(schedule_id)}")

    _run(lambda: _with_client(conn, go))


@schedule_app.command("trigger")
@connected
def trigger(
    conn: Connection,
    schedule_id: ScheduleId,
    overlap: OverlapOption = None,
) -> None:
    """Take the schedule's action now."""

    async def go(client: Client) -> None:
        await client.get_schedule_handle(schedule_id).trigger(overlap=overlap.policy() if overlap else None)
        _out.print(f"Triggered {escape(schedule_id)}")

    _run(lambda: _with_client(conn, go))


@schedule_app.command("backfill")
@connected
def backfill(
    conn: Connection,
    schedule_id: ScheduleId,
    start_time: Annotated[str, typer.Option("--start-time", help="First fire time to run (ISO 8601).")],
    end_time: Annotated[str, typer.Option("--end-time", help="Last fire time to run (ISO 8601).")],
    overlap: OverlapOption = None,
) -> None:
    """Run the fire times of a past (or future) time range now."""

    def build() -> ScheduleBackfill:
        return ScheduleBackfill(
            start_at=parse_time(start_time, "--start-time"),
            end_at=parse_time(end_time, "--end-time"),
            overlap=overlap.policy() if overlap else None,
        )

    request = _checked(build)

    async def go(client: Client) -> None:
        await client.get_schedule_handle(schedule_id).backfill(request)
        _out.print(f"Backfilled {escape(schedule_id)} from {escape(start_time)} to {escape(end_time)}")

    _run(lambda: _with_client(conn, go))


@schedule_app.command("delete")
@connected
def delete(
    conn: Connection,
    schedule_id: ScheduleId,
) -> None:
    """Delete a schedule (the runs it started go on)."""

    async def go(client: Client) -> None:
        await client.get_schedule_handle(schedule_id).delete()
        _out.print(f"Deleted {escape(schedule_id)}")

    _run(lambda: _with_client(conn, go))


# -- batch operations -----------------------------------------------------------------------

Query = Annotated[str, typer.Option("--query", "-q", help="Visibility query of the workflows.")]
Rps = Annotated[float, typer.Option("--rps", help="Most workflows handled per second.")]
BatchId = Annotated[str | None, typer.Option("--batch-id", help="Id of the batch (default: generated).")]
Wait = Annotated[bool, typer.Option("--wait/--no-wait", help="Wait for the report (default) or print the id.")]
Reason = Annotated[str, typer.Option("--reason", help="Recorded with each cancel/terminate.")]


def _report_table(p: BatchOperationProgress) -> Table:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in [
        ("Operation", f"{p.operation} ({p.state})"),
        ("Query", p.query),
        ("Matched at start", str(p.total_estimate)),
        ("Succeeded", str(p.succeeded)),
        ("Failed", str(p.failed)),
        ("Skipped (not running / not current)", str(p.skipped)),
        ("Pages", str(p.pages)),
        ("Started / closed", f"{_time(p.started_at)} / {_time(p.closed_at)}"),
    ]:
        table.add_row(key, escape(value))
    for f in p.failures[:20]:
        table.add_row("Failure", escape(f"{f.workflow_id} ({f.run_id}): {f.message}"))
    return table


def _start_batch(conn: Connection, operation: BatchOperation, query: str, rps: float, batch_id: str | None, wait: bool) -> None:
    async def go(client: Client) -> None:
        handle = await client.start_batch_operation(operation, query, id=batch_id, rps=rps)
        _err.print(f"Started batch [bold]{escape(handle.id)}[/bold] ({operation.kind}, at most {rps:g}/s)")
        if wait:
            report = await handle.result()
            _out.print(_report_table(report))
            if report.failed:
                raise typer.Exit(1)

    _run(lambda: _with_client(conn, go))


@batch_app.command("signal")
@connected
def batch_signal(
    conn: Connection,
    query: Query,
    name: Annotated[str, typer.Option("--name", help="Signal name.")],
    inputs: Inputs = None,
    rps: Rps = 50.0,
    batch_id: BatchId = None,
    wait: Wait = True,
) -> None:
    """Signal every running workflow the query matches."""
    args: list[Any] = _parse_inputs(inputs)
    conn = conn
    _start_batch(conn, BatchSignal(name, args=args), query, rps, batch_id, wait)


@batch_app.command("cancel")
@connected
def batch_cancel(
    conn: Connection,
    query: Query,
    reason: Reason = "",
    rps: Rps = 50.0,
    batch_id: BatchId = None,
    wait: Wait = True,
) -> None:
    """Request cancellation of every running workflow the query matches."""
    conn = conn
    _start_batch(conn, BatchCancel(reason=reason), query, rps, batch_id, wait)


@batch_app.command("terminate")
@connected
def batch_terminate(
    conn: Connection,
    query: Query,
    reason: Reason = "",
    rps: Rps = 50.0,
    batch_id: BatchId = None,
    wait: Wait = True,
) -> None:
    """Terminate every running workflow the query matches."""
    conn = conn
    _start_batch(conn, BatchTerminate(reason=reason), query, rps, batch_id, wait)


@batch_app.command("reset")
@connected
def batch_reset(
    conn: Connection,
    query: Query,
    reset_type: Annotated[
        str, typer.Option("--type", help="FirstWorkflowTask or LastWorkflowTask (the last completed one).")
    ] = "LastWorkflowTask",
    reason: Reason = "",
    reapply_signals: Annotated[
        bool, typer.Option(help="Deliver again the signals received after the reset point.")
    ] = True,
    rps: Rps = 50.0,
    batch_id: BatchId = None,
    wait: Wait = True,
) -> None:
    """Reset every workflow the query matches (its current run) to its first or last workflow task."""
    if reset_type not in ("FirstWorkflowTask", "LastWorkflowTask"):
        raise typer.BadParameter(f"--type must be FirstWorkflowTask or LastWorkflowTask, not {reset_type!r}")
    conn = conn
    operation = BatchReset(reset_type=reset_type, reason=reason, reapply_signals=reapply_signals)
    _start_batch(conn, operation, query, rps, batch_id, wait)


@batch_app.command("describe")
@connected
def batch_describe(
    conn: Connection,
    batch_id: Annotated[str, typer.Option("--batch-id", help="Id of the batch.")],
) -> None:
    """Show a batch's progress (or its final report)."""

    async def go(client: Client) -> None:
        _out.print(_report_table(await client.get_batch_operation_handle(batch_id).describe()))

    _run(lambda: _with_client(conn, go))
