"""``sagas workflow ...``: start, inspect and steer workflows from a shell.

Every command takes ``--address`` (default ``localhost:7233``, env
``SAGAS_ADDRESS``) and ``--namespace`` (default ``default``, env
``SAGAS_NAMESPACE``); for a secured server also ``--api-key`` (an API key or
a JWT, env ``SAGAS_API_KEY``), ``--tls`` or ``--tls-ca ca.pem`` (HTTPS), and
``--tls-cert``/``--tls-key`` (a client certificate for mutual TLS).
Inputs are JSON, one ``--input`` per argument::

    sagas workflow start --type BookTrip --task-queue trips -w trip-1 --input '{"city": "Lisbon"}'
    sagas workflow show -w trip-1
    sagas workflow show -w trip-1 --output json > trip-1.json     # for the Replayer
    sagas workflow show -w trip-1 --archived                      # after retention (docs/archival.md)

Errors are printed in one readable paragraph and exit with status 1.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from orchestrator.api.enums import EventType
from orchestrator.api.events import HistoryEvent
from sagas.client import Client, TLSConfig, WorkflowExecutionDescription, WorkflowHandle
from sagas.exceptions import SagasError, WorkflowFailureError
from sagas.saga import SAGA_MARKER

workflow_app = typer.Typer(help="Start, inspect and steer workflows.", no_args_is_help=True)

_out = Console()
_err = Console(stderr=True)

_T = TypeVar("_T")

Address = Annotated[
    str, typer.Option("--address", envvar="SAGAS_ADDRESS", help="Orchestrator host:port.")
]
Namespace = Annotated[
    str, typer.Option("--namespace", "-n", envvar="SAGAS_NAMESPACE", help="Namespace of the workflows.")
]
ApiKey = Annotated[
    str | None, typer.Option("--api-key", envvar="SAGAS_API_KEY", help="API key (sent as a Bearer token).")
]
Tls = Annotated[bool, typer.Option("--tls", envvar="SAGAS_TLS", help="Use HTTPS (verified by the system's CAs).")]
TlsCa = Annotated[
    str | None, typer.Option("--tls-ca", envvar="SAGAS_TLS_CA", help="CA certificate (PEM) of the server; implies --tls.")
]
TlsCert = Annotated[
    str | None, typer.Option("--tls-cert", envvar="SAGAS_TLS_CERT", help="Client certificate (PEM) for mutual TLS.")
]
TlsKey = Annotated[
    str | None, typer.Option("--tls-key", envvar="SAGAS_TLS_KEY", help="Private key (PEM) of --tls-cert.")
]
WorkflowId = Annotated[str, typer.Option("--workflow-id", "-w", help="Workflow id.")]
RunId = Annotated[str | None, typer.Option("--run-id", "-r", help="Run id (default: the latest run).")]
Inputs = Annotated[
    list[str] | None,
    typer.Option("--input", "-i", help="A JSON argument; repeat for several arguments."),
]

class OutputFormat(StrEnum):
    TABLE = "table"
    JSON = "json"


def _parse_inputs(inputs: list[str] | None) -> list[Any]:
    """The JSON values of the ``--input`` options (checked before connecting)."""
    values = []
    for i, text in enumerate(inputs or [], start=1):
        try:
            values.append(json.loads(text))
        except json.JSONDecodeError as exc:
            _err.print(
                f"[red]Error:[/red] --input #{i} is not valid JSON ({exc.msg} at column {exc.colno}): "
                f"{escape(repr(text))}. Strings need quotes, e.g. --input '\"Lisbon\"'."
            )
            raise typer.Exit(1) from None
    return values


def _run(body: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    """Run an async command body; print sagas errors readably and exit 1."""
    try:
        return asyncio.run(body())
    except WorkflowFailureError as exc:
        cause = exc.cause
        _err.print(f"[red]Workflow failed:[/red] {escape(type(cause).__name__)}: {escape(str(cause))}")
        raise typer.Exit(1) from None
    except (SagasError, ValueError, TypeError) as exc:
        _err.print(f"[red]Error:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


@dataclass(frozen=True)
class Connection:
    """Where and how the CLI connects (the common options of every command)."""

    address: str
    namespace: str
    api_key: str | None = None
    tls: bool = False
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None

    def tls_option(self) -> bool | TLSConfig:
        """``Client.connect``'s ``tls`` argument (reads the PEM files)."""
        if not (self.tls_ca or self.tls_cert or self.tls_key):
            return self.tls
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("--tls-cert and --tls-key go together (a client certificate and its key)")

        def read(path: str | None, what: str) -> bytes | None:
            if path is None:
                return None
            try:
                with open(path, "rb") as f:
                    return f.read()
            except OSError as exc:
                raise ValueError(f"cannot read {what} {path!r}: {exc.strerror or exc}") from None

        return TLSConfig(
            server_root_ca_cert=read(self.tls_ca, "--tls-ca"),
            client_cert=read(self.tls_cert, "--tls-cert"),
            client_private_key=read(self.tls_key, "--tls-key"),
        )


async def _with_client(conn: Connection, fn: Callable[[Client], Awaitable[_T]]) -> _T:
    client = await Client.connect(conn.address, namespace=conn.namespace, api_key=conn.api_key, tls=conn.tls_option())
    try:
        return await fn(client)
    finally:
        await client.close()


_CONNECTION_OPTIONS = (
    ("address", Address, "localhost:7233"),
    ("namespace", Namespace, "default"),
    ("api_key", ApiKey, None),
    ("tls", Tls, False),
    ("tls_ca", TlsCa, None),
    ("tls_cert", TlsCert, None),
    ("tls_key", TlsKey, None),
)


def connected(command: Callable[..., _T]) -> Callable[..., _T]:
    """Give a command the connection options and hand them to it as one :class:`Connection`.

    The command's first parameter is ``conn: Connection``; typer sees ``--address``,
    ``--namespace``, ``--api-key`` and the TLS options in its place, after the command's own::

        @workflow_app.command("cancel")
        @connected
        def cancel(conn: Connection, workflow_id: WorkflowId) -> None:
            _run(lambda: _with_client(conn, lambda client: client.get_workflow_handle(workflow_id).cancel()))
    """
    own = list(inspect.signature(command, eval_str=True).parameters.values())
    if not own or own[0].name != "conn":
        raise TypeError(f"{command.__name__}: a @connected command takes `conn: Connection` first")
    options = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)
        for name, annotation, default in _CONNECTION_OPTIONS
    ]

    @functools.wraps(command)
    def with_connection(*args: Any, **kwargs: Any) -> _T:
        conn = Connection(*(kwargs.pop(name) for name, _, _ in _CONNECTION_OPTIONS))
        return command(conn, *args, **kwargs)

    params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own[1:]] + options
    with_connection.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    with_connection.__annotations__ = {p.name: p.annotation for p in params}
    return with_connection


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, default=str, ensure_ascii=False)


def _time(value: datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


# -- start / execute -------------------------------------------------------------


async def _start(
    client: Client,
    workflow_type: str,
    task_queue: str,
    workflow_id: str,
    args: list[Any],
    execution_timeout: float | None,
    run_timeout: float | None,
) -> WorkflowHandle[Any]:
    return await client.start_workflow(
        workflow_type,
        args=args,
        id=workflow_id,
        task_queue=task_queue,
        execution_timeout=_td(execution_timeout),
        run_timeout=_td(run_timeout),
    )


def _td(seconds: float | None) -> timedelta | None:
    return timedelta(seconds=seconds) if seconds is not None else None


@workflow_app.command("start")
@connected
def start(
    conn: Connection,
    workflow_type: Annotated[str, typer.Option("--type", help="Workflow type name.")],
    task_queue: Annotated[str, typer.Option("--task-queue", "-t", help="Task queue of the workers.")],
    workflow_id: WorkflowId,
    inputs: Inputs = None,
    execution_timeout: Annotated[
        float | None, typer.Option(help="Execution timeout in seconds (all runs).")
    ] = None,
    run_timeout: Annotated[float | None, typer.Option(help="Run timeout in seconds.")] = None,
) -> None:
    """Start a workflow and print its ids."""

    args = _parse_inputs(inputs)

    async def go(client: Client) -> None:
        handle = await _start(client, workflow_type, task_queue, workflow_id, args, execution_timeout, run_timeout)
        _out.print(f"Started [bold]{escape(handle.id)}[/bold]  run id {handle.result_run_id}")

    _run(lambda: _with_client(conn, go))


@workflow_app.command("execute")
@connected
def execute(
    conn: Connection,
    workflow_type: Annotated[str, typer.Option("--type", help="Workflow type name.")],
    task_queue: Annotated[str, typer.Option("--task-queue", "-t", help="Task queue of the workers.")],
    workflow_id: WorkflowId,
    inputs: Inputs = None,
    execution_timeout: Annotated[
        float | None, typer.Option(help="Execution timeout in seconds (all runs).")
    ] = None,
    run_timeout: Annotated[float | None, typer.Option(help="Run timeout in seconds.")] = None,
) -> None:
    """Start a workflow, wait for it to close and print its result as JSON."""

    args = _parse_inputs(inputs)

    async def go(client: Client) -> None:
        handle = await _start(client, workflow_type, task_queue, workflow_id, args, execution_timeout, run_timeout)
        _err.print(f"Started {escape(handle.id)} (run id {handle.result_run_id}); waiting for the result...")
        _out.print_json(_json(await handle.result()))

    _run(lambda: _with_client(conn, go))


# -- describe / list ---------------------------------------------------------------


def _describe_table(desc: WorkflowExecutionDescription) -> Table:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    rows = [
        ("Workflow id", desc.id),
        ("Run id", desc.run_id),
        ("Type", desc.workflow_type),
        ("Task queue", desc.task_queue),
        ("Status", str(desc.status)),
        ("Started", _time(desc.start_time)),
        ("Closed", _time(desc.close_time)),
        ("History length", str(desc.history_length)),
    ]
    if desc.parent_id:
        rows.append(("Parent", desc.parent_id))
    if desc.input:
        rows.append(("Input", _json(desc.input)))
    if desc.result is not None:
        rows.append(("Result", _json(desc.result)))
    if desc.failure is not None:
        rows.append(("Failure", f"{desc.failure.type or desc.failure.kind}: {desc.failure.message}"))
    for key, value in rows:
        table.add_row(key, escape(value))
    return table


@workflow_app.command("describe")
@connected
def describe(
    conn: Connection,
    workflow_id: WorkflowId,
    run_id: RunId = None,
    output: Annotated[OutputFormat, typer.Option("--output", "-o")] = OutputFormat.TABLE,
) -> None:
    """Show a run's status, times, and what it is waiting for."""

    async def go(client: Client) -> None:
        desc = await client.get_workflow_handle(workflow_id, run_id=run_id).describe()
        if output == OutputFormat.JSON:
            assert desc.raw_description is not None
            _out.print_json(desc.raw_description.model_dump_json())
            return
        _out.print(_describe_table(desc))
        if desc.pending_activities:
            t = Table(title="Pending activities")
            for col in ("Activity id", "Type", "Attempt", "State", "Last failure"):
                t.add_column(col)
            for a in desc.pending_activities:
                failure = a.last_failure.message if a.last_failure else ""
                t.add_row(a.activity_id, a.activity_type, str(a.attempt), a.state, escape(failure))
            _out.print(t)
        if desc.pending_timers:
            t = Table(title="Pending timers")
            for col in ("Timer id", "Fires at"):
                t.add_column(col)
            for timer in desc.pending_timers:
                t.add_row(timer.timer_id, _time(datetime.fromtimestamp(timer.fire_time, UTC)))
            _out.print(t)

    _run(lambda: _with_client(conn, go))


@workflow_app.command("list")
@connected
def list_(
    conn: Connection,
    query: Annotated[str, typer.Option("--query", "-q", help="Visibility query, e.g. \"ExecutionStatus = 'Running'\".")] = "",
    limit: Annotated[int, typer.Option(help="Show at most this many runs.")] = 50,
) -> None:
    """List workflow runs, newest first."""

    async def go(client: Client) -> None:
        t = Table()
        for col in ("Workflow id", "Run id", "Type", "Status", "Started", "Closed"):
            t.add_column(col)
        count = 0
        async for wf in client.list_workflows(query, limit=limit, page_size=min(limit, 1000)):
            t.add_row(escape(wf.id), wf.run_id, escape(wf.workflow_type), str(wf.status), _time(wf.start_time), _time(wf.close_time))
            count += 1
        if count == 0:
            _out.print("No workflows found.")
        else:
            _out.print(t)

    _run(lambda: _with_client(conn, go))


# -- show -------------------------------------------------------------------------


_NOISE = frozenset(
    {
        "event_id", "event_time", "v", "event_type", "identity", "workflow_task_completed_event_id",
        "task_queue", "start_to_close_timeout", "workflow_task_timeout", "first_run_id",
        "original_execution_run_id", "started_event_id", "retry_policy", "headers", "request_id",
    }
)
"""Event fields left out of ``show``'s one-line summaries (``--output json`` has them all)."""

_WORKFLOW_TASK_ROUTINE = frozenset(
    {EventType.WORKFLOW_TASK_SCHEDULED, EventType.WORKFLOW_TASK_STARTED, EventType.WORKFLOW_TASK_COMPLETED}
)


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _event_summary(e: HistoryEvent) -> str:
    """One short line of an event's most telling fields."""
    d = e.model_dump(mode="json", exclude_none=True)
    if e.event_type == EventType.MARKER_RECORDED and d.get("marker_name") == SAGA_MARKER:
        det = d.get("details", {})
        error = f": {det['error']}" if det.get("error") else ""
        return f"saga {det.get('event', '?')} {det.get('name', '')} (#{det.get('index', '?')}){error}"
    parts = []
    if isinstance(failure := d.pop("failure", None), dict):
        parts.append(f"failure={failure.get('type') or failure.get('kind')}: {failure.get('message')}")
    if d.get("attempt") == 1:
        d.pop("attempt")
    for key, value in d.items():
        if key in _NOISE or value in ({}, [], "", None):
            continue
        parts.append(f"{key}={_short(value)}")
    text = ", ".join(parts)
    return text if len(text) <= 200 else text[:197] + "..."


def _history_table(events: list[HistoryEvent], *, all_events: bool) -> Table:
    day = events[0].event_time.astimezone(UTC).strftime("%Y-%m-%d") if events else ""
    t = Table(title=f"History ({day} UTC)", title_justify="left")
    t.add_column("ID", justify="right")
    t.add_column("Time")
    t.add_column("Type")
    t.add_column("Details", overflow="fold")
    hidden = 0
    for e in events:
        if not all_events and e.event_type in _WORKFLOW_TASK_ROUTINE:
            hidden += 1
            continue
        style = "red" if "Failed" in e.event_type or "TimedOut" in e.event_type else ""
        name = f"[{style}]{e.event_type}[/]" if style else str(e.event_type)
        t.add_row(str(e.event_id), e.event_time.astimezone(UTC).strftime("%H:%M:%S.%f")[:-3], name, escape(_event_summary(e)))
    if hidden:
        t.caption = f"{hidden} routine workflow task events hidden (--all shows them)"
    return t


def saga_steps(events: list[HistoryEvent]) -> list[dict[str, Any]]:
    """Steps of every saga in a history, from its ``saga`` markers.

    Each step: ``saga_id``, ``index``, ``step`` (the activity that completed
    just before the compensation was registered), ``compensation``, ``status``
    (``done``, ``compensating``, ``compensated`` or ``compensation failed``)
    and ``error``.
    """
    steps: dict[tuple[str, int], dict[str, Any]] = {}
    scheduled: dict[int, str] = {}
    last_completed = ""
    for e in events:
        if e.event_type == EventType.ACTIVITY_TASK_SCHEDULED:
            scheduled[e.event_id] = getattr(e, "activity_type", "")
        elif e.event_type == EventType.ACTIVITY_TASK_COMPLETED:
            last_completed = scheduled.get(getattr(e, "scheduled_event_id", 0), "")
        elif e.event_type == EventType.MARKER_RECORDED and getattr(e, "marker_name", "") == SAGA_MARKER:
            details: dict[str, Any] = getattr(e, "details", {})
            key = (str(details.get("saga_id", "")), int(details.get("index", 0)))
            kind = details.get("event", "")
            step = steps.setdefault(
                key,
                {"saga_id": key[0], "index": key[1], "step": "", "compensation": details.get("name", ""), "status": "done", "error": ""},
            )
            if kind == "step_registered":
                step["step"] = last_completed
            elif kind == "compensation_started":
                step["status"] = "compensating"
            elif kind == "compensation_completed":
                step["status"] = "compensated"
            elif kind == "compensation_failed":
                step["status"] = "compensation failed"
                step["error"] = str(details.get("error", ""))
    return sorted(steps.values(), key=lambda s: (s["saga_id"], s["index"]))


def _saga_table(steps: list[dict[str, Any]]) -> Table:
    t = Table(title="Saga", title_justify="left")
    for col in ("#", "Step", "Compensation", "Status", "Error"):
        t.add_column(col)
    colour = {"done": "green", "compensated": "yellow", "compensating": "cyan", "compensation failed": "red"}
    multiple = len({s["saga_id"] for s in steps}) > 1
    for s in steps:
        number = f"{s['saga_id']}:{s['index']}" if multiple else str(s["index"])
        c = colour.get(s["status"], "")
        t.add_row(number, escape(s["step"] or "?"), escape(s["compensation"]), f"[{c}]{s['status']}[/]", escape(s["error"]))
    return t


@workflow_app.command("show")
@connected
def show(
    conn: Connection,
    workflow_id: WorkflowId,
    run_id: RunId = None,
    output: Annotated[
        OutputFormat, typer.Option("--output", "-o", help="table, or json (a history file the Replayer reads).")
    ] = OutputFormat.TABLE,
    all_events: Annotated[bool, typer.Option("--all", help="Also list routine workflow task events.")] = False,
    archived: Annotated[
        bool,
        typer.Option(
            "--archived", help="Read the run from the namespace's archive (after retention deleted it; docs/archival.md)."
        ),
    ] = False,
) -> None:
    """Show a run's event history (and its saga steps and compensations)."""

    async def go(client: Client) -> None:
        handle = client.get_workflow_handle(workflow_id, run_id=run_id)
        history = await (handle.fetch_archived_history() if archived else handle.fetch_history())
        if output == OutputFormat.JSON:
            print(history.to_json())
            return
        if archived:
            _out.print(f"Archived run {history.run_id} of {escape(history.workflow_id)}")
        _out.print(_history_table(list(history.events), all_events=all_events))
        steps = saga_steps(list(history.events))
        if steps:
            _out.print(_saga_table(steps))

    _run(lambda: _with_client(conn, go))


# -- signal / query / cancel / terminate --------------------------------------------


@workflow_app.command("signal")
@connected
def signal(
    conn: Connection,
    workflow_id: WorkflowId,
    name: Annotated[str, typer.Option("--name", help="Signal name.")],
    inputs: Inputs = None,
    run_id: RunId = None,
) -> None:
    """Send a signal to a workflow."""

    args = _parse_inputs(inputs)

    async def go(client: Client) -> None:
        await client.get_workflow_handle(workflow_id, run_id=run_id).signal(name, args=args)
        _out.print(f"Signal [bold]{escape(name)}[/bold] sent to {escape(workflow_id)}.")

    _run(lambda: _with_client(conn, go))


@workflow_app.command("query")
@connected
def query(
    conn: Connection,
    workflow_id: WorkflowId,
    name: Annotated[str, typer.Option("--name", help="Query name.")],
    inputs: Inputs = None,
    run_id: RunId = None,
) -> None:
    """Ask a workflow's query handler and print the answer as JSON."""

    args = _parse_inputs(inputs)

    async def go(client: Client) -> None:
        result = await client.get_workflow_handle(workflow_id, run_id=run_id).query(name, args=args)
        _out.print_json(_json(result))

    _run(lambda: _with_client(conn, go))


@workflow_app.command("cancel")
@connected
def cancel(
    conn: Connection,
    workflow_id: WorkflowId,
    reason: Annotated[str, typer.Option(help="Why (recorded in history).")] = "",
    run_id: RunId = None,
) -> None:
    """Ask a workflow to cancel (it may run compensations first)."""

    async def go(client: Client) -> None:
        await client.get_workflow_handle(workflow_id, run_id=run_id).cancel(reason=reason)
        _out.print(f"Cancellation of {escape(workflow_id)} requested.")

    _run(lambda: _with_client(conn, go))


@workflow_app.command("terminate")
@connected
def terminate(
    conn: Connection,
    workflow_id: WorkflowId,
    reason: Annotated[str, typer.Option(help="Why (recorded in history).")] = "",
    run_id: RunId = None,
) -> None:
    """Stop a workflow at once, without running any more of its code."""

    async def go(client: Client) -> None:
        await client.get_workflow_handle(workflow_id, run_id=run_id).terminate(reason=reason or None)
        _out.print(f"Terminated {escape(workflow_id)}.")

    _run(lambda: _with_client(conn, go))


@workflow_app.command("reset")
@connected
def reset(
    conn: Connection,
    workflow_id: WorkflowId,
    to_event: Annotated[
        int | None,
        typer.Option("--to-event", help="Any event id of a started workflow task (usually a WorkflowTaskCompleted)."),
    ] = None,
    reset_type: Annotated[
        str | None, typer.Option("--type", help="FirstWorkflowTask or LastWorkflowTask (instead of --to-event).")
    ] = None,
    reason: Annotated[str, typer.Option(help="Why (recorded in both runs' histories).")] = "",
    reapply_signals: Annotated[
        bool, typer.Option(help="Deliver again the signals received after the reset point.")
    ] = True,
    run_id: RunId = None,
) -> None:
    """Start a new run from a workflow task of this one (after fixing a bug); the running run is terminated.

    Example: ``sagas workflow reset trip-42 --to-event 9 --reason "hotel bug fixed"``
    """
    if (to_event is None) == (reset_type is None):
        raise typer.BadParameter("give exactly one of --to-event or --type")

    async def go(client: Client) -> None:
        handle = client.get_workflow_handle(workflow_id, run_id=run_id)
        new = await handle.reset(event_id=to_event, reset_type=reset_type, reason=reason, reapply_signals=reapply_signals)
        _out.print(f"Reset {escape(workflow_id)}: new run {new.run_id}.")

    _run(lambda: _with_client(conn, go))
