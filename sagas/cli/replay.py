"""``sagas workflow replay``: replay histories against today's workflow code; exit 1 on a divergence.

Load the workflow code with ``--workflows module:Class`` (repeat it) or
``--module pkg.mod`` (every ``@workflow.defn`` class in it), and choose where
the histories come from::

    # recorded history files (what `sagas workflow show --output json` writes); a folder replays them all
    sagas workflow replay --module trips.workflows --file tests/histories

    # runs fetched from the server
    sagas workflow replay --workflows trips.workflows:BookTrip -w trip-1 -w trip-2 --address host:7233

    # the history stream {prefix}.history on a broker (see docs/replay.md)
    sagas workflow replay --module trips.workflows --broker-log kafka://k1:9092 --topic sagas.history \\
        --since 2026-05-01T00:00:00Z --until 2026-05-02T00:00:00Z

Each history prints ``OK``, or the first divergence: the event id, the
command history recorded, the command today's code produced and the file:line
of the workflow code that produced it. Exit status: 0 when every history
replayed, 1 on a divergence or another replay failure (or when there was
nothing to replay), 2 for bad options.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from brokers.base import BrokerError
from sagas.client import Client
from sagas.exceptions import SagasError
from sagas.testing.replay import (
    LabeledHistory,
    ReplayFailure,
    describe_replay_failure,
    load_histories,
    replay_histories,
)
from sagas.worker._history_stream import histories_from_stream, read_history_stream
from sagas.workflow._definition import get_definition

_out = Console(highlight=False, soft_wrap=True)
_err = Console(stderr=True, highlight=False, soft_wrap=True)


def replay(
    workflows: Annotated[
        list[str] | None,
        typer.Option("--workflows", help="A workflow class as module:Class; repeat for several."),
    ] = None,
    modules: Annotated[
        list[str] | None,
        typer.Option("--module", help="A module whose @workflow.defn classes are all loaded; repeatable."),
    ] = None,
    app_dir: Annotated[
        str, typer.Option("--app-dir", help="Folder put first on the import path for --workflows/--module.")
    ] = ".",
    files: Annotated[
        list[Path] | None,
        typer.Option("--file", "-f", help="A history JSON file, or a folder of them; repeatable."),
    ] = None,
    workflow_ids: Annotated[
        list[str] | None,
        typer.Option(
            "--workflow-id", "-w", help="Replay this workflow from the server (with --file/--broker-log: only it); repeatable."
        ),
    ] = None,
    run_id: Annotated[
        str | None, typer.Option("--run-id", "-r", help="With one --workflow-id: this run (default: the latest).")
    ] = None,
    broker_log: Annotated[
        str | None,
        typer.Option("--broker-log", help="Read histories from the history stream on this broker URL."),
    ] = None,
    topic: Annotated[
        str, typer.Option("--topic", help="The history stream's queue/topic ({prefix}.history).")
    ] = "sagas.history",
    since: Annotated[
        str | None,
        typer.Option("--since", help="With --broker-log: only runs with an event at or after this time (ISO 8601; UTC if no zone)."),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option("--until", help="With --broker-log: only runs with an event before this time (ISO 8601)."),
    ] = None,
    wait: Annotated[
        float, typer.Option("--wait", help="With --broker-log: seconds to wait for the first message.")
    ] = 10.0,
    idle: Annotated[
        float, typer.Option("--idle", help="With --broker-log: stop reading after this many quiet seconds.")
    ] = 2.0,
    ignore_unknown_types: Annotated[
        bool,
        typer.Option("--ignore-unknown-types", help="Skip histories of workflow types not loaded (instead of failing)."),
    ] = False,
    address: Annotated[
        str, typer.Option("--address", envvar="SAGAS_ADDRESS", help="Orchestrator host:port.")
    ] = "localhost:7233",
    namespace: Annotated[
        str | None,
        typer.Option(
            "--namespace", "-n", envvar="SAGAS_NAMESPACE",
            help="Namespace (server: default 'default'; --broker-log: only this namespace).",
        ),
    ] = None,
    api_key: Annotated[
        str | None, typer.Option("--api-key", envvar="SAGAS_API_KEY", help="API key (sent as a Bearer token).")
    ] = None,
) -> None:
    """Replay workflow histories against today's workflow code and report the first divergence of each."""
    if files and broker_log:
        raise typer.BadParameter("choose one source: --file or --broker-log", param_hint="--file/--broker-log")
    if not files and not broker_log and not workflow_ids:
        raise typer.BadParameter(
            "say where the histories are: --file PATH, --workflow-id ID (from the server) or --broker-log URL",
            param_hint="--file/--workflow-id/--broker-log",
        )
    if run_id and len(workflow_ids or []) != 1:
        raise typer.BadParameter("--run-id needs exactly one --workflow-id", param_hint="--run-id")
    window = (_parse_time(since, "--since"), _parse_time(until, "--until"))
    classes = load_workflow_classes(workflows or [], modules or [], app_dir)

    refused: list[str] = []  # runs of the broker log whose events are not a coherent history

    async def histories() -> list[LabeledHistory]:
        if files:
            loaded = load_histories(files)
            return [h for h in loaded if h.history.workflow_id in workflow_ids] if workflow_ids else loaded
        if broker_log:
            return await _from_broker_log(
                broker_log, topic, namespace, workflow_ids, *window, wait=wait, idle=idle, refused=refused
            )
        return await _from_server(address, namespace or "default", api_key, workflow_ids or [], run_id)

    async def go() -> int:
        found = await histories()
        if not found:
            _err.print("[red]Error:[/red] no history to replay.")
            return 1
        failures = await replay_histories(found, workflows=classes)
        code = _report(found, failures, ignore_unknown_types=ignore_unknown_types)
        return 1 if refused else code

    try:
        code = asyncio.run(go())
    except (SagasError, BrokerError, OSError, ValueError) as exc:
        _err.print(f"[red]Error:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    raise typer.Exit(code)


def _parse_time(text: str | None, option: str) -> datetime | None:
    if text is None:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is not an ISO 8601 time, e.g. 2026-05-01 or 2026-05-01T12:00:00Z", param_hint=option
        ) from None


def load_workflow_classes(specs: list[str], modules: list[str], app_dir: str = ".") -> list[type]:
    """The workflow classes named by ``module:Class`` specs and found in ``modules`` (``BadParameter`` if none)."""
    if not specs and not modules:
        raise typer.BadParameter(
            "load the workflow code: --workflows module:Class or --module pkg.mod", param_hint="--workflows/--module"
        )
    root = str(Path(app_dir).resolve())
    if root not in sys.path:
        sys.path.insert(0, root)
    classes: list[type] = []
    for spec in specs:
        module_name, _, qualname = spec.partition(":")
        if not module_name or not qualname:
            raise typer.BadParameter(f"{spec!r} is not module:Class, e.g. trips.workflows:BookTrip", param_hint="--workflows")
        obj: Any = _import(module_name, "--workflows")
        for part in qualname.split("."):
            if not hasattr(obj, part):
                raise typer.BadParameter(f"module {module_name!r} has no {qualname!r}", param_hint="--workflows")
            obj = getattr(obj, part)
        try:
            get_definition(obj)
        except TypeError:
            raise typer.BadParameter(f"{spec} is not a @workflow.defn class", param_hint="--workflows") from None
        classes.append(obj)
    for module_name in modules:
        module = _import(module_name, "--module")
        found = [c for _, c in inspect.getmembers(module, inspect.isclass) if _is_workflow(c)]
        if not found:
            raise typer.BadParameter(f"module {module_name!r} has no @workflow.defn class", param_hint="--module")
        classes.extend(found)
    unique = list(dict.fromkeys(classes))
    names: dict[str, type] = {}
    for cls in unique:
        name = get_definition(cls).name
        if name in names:
            raise typer.BadParameter(
                f"{names[name].__module__}.{names[name].__qualname__} and {cls.__module__}.{cls.__qualname__} "
                f"are both workflow {name!r}; load only the version to check (--workflows module:Class)",
                param_hint="--workflows/--module",
            )
        names[name] = cls
    return unique


def _import(module_name: str, option: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any import-time error of user code: say which module
        raise typer.BadParameter(
            f"cannot import {module_name!r} ({type(exc).__name__}: {exc}); run from the project folder "
            "or pass --app-dir",
            param_hint=option,
        ) from None


def _is_workflow(cls: type) -> bool:
    try:
        get_definition(cls)
    except TypeError:
        return False
    return True


async def _from_server(
    address: str, namespace: str, api_key: str | None, workflow_ids: list[str], run_id: str | None
) -> list[LabeledHistory]:
    client = await Client.connect(address, namespace=namespace, api_key=api_key)
    try:
        out = []
        for workflow_id in workflow_ids:
            history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
            out.append(LabeledHistory(f"{workflow_id} (run {history.run_id})", history))
        return out
    finally:
        await client.close()


async def _from_broker_log(
    url: str,
    topic: str,
    namespace: str | None,
    workflow_ids: list[str] | None,
    since: datetime | None,
    until: datetime | None,
    *,
    wait: float,
    idle: float,
    refused: list[str] | None = None,
) -> list[LabeledHistory]:
    _err.print(f"Reading {escape(topic)} from {escape(_safe_url(url))} ...")
    bodies = await read_history_stream(url, topic, first_wait=wait, idle=idle)
    found = histories_from_stream(
        bodies, namespace=namespace, workflow_ids=set(workflow_ids) if workflow_ids else None, since=since, until=until
    )
    _err.print(
        f"{found.messages} messages, {found.duplicates} duplicates, {len(found.histories)} complete runs"
        + (f", {len(found.incomplete)} incomplete" if found.incomplete else "")
    )
    if found.malformed:
        _err.print(
            f"[yellow]Skipped {found.malformed} messages that are not history events[/yellow] "
            f"(first: {escape(found.malformed_example)})"
        )
    for key, why in found.incomplete.items():
        _err.print(f"[yellow]NOT REPLAYED[/yellow] {escape(key)}: {escape(why)}")
    if found.out_of_order:
        _err.print(
            f"[yellow]{found.out_of_order} messages came after a higher event id of their run[/yellow] "
            f"(put back in event-id order; first: {escape(found.out_of_order_example)})"
        )
    for key, why in found.invalid.items():
        _err.print(f"[red]REFUSED[/red] {escape(key)}: {escape(why)}")
        if refused is not None:
            refused.append(key)
    return [LabeledHistory(f"{h.namespace}/{h.workflow_id} (run {h.run_id})", h) for h in found.histories]


def _safe_url(url: str) -> str:
    """The URL without a password (it is printed)."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest.split("/", 1)[0]:
        rest = "***@" + rest.split("@", 1)[1]
    return f"{scheme}{sep}{rest}"


def _report(found: list[LabeledHistory], failures: list[ReplayFailure], *, ignore_unknown_types: bool) -> int:
    failed = {id(f.history): f for f in failures}
    ok = bad = skipped = 0
    for item in found:
        failure = failed.get(id(item.history))
        events = len(item.history.events)
        if failure is None:
            ok += 1
            _out.print(f"[green]OK[/green]      {escape(item.label)}  ({events} events)")
        elif failure.is_unknown_type and ignore_unknown_types:
            skipped += 1
            _out.print(f"[yellow]SKIPPED[/yellow] {escape(item.label)}: {escape(str(failure.error))}")
        else:
            bad += 1
            _out.print(f"[red]FAILED[/red]  {escape(item.label)}  ({events} events)")
            for line in describe_replay_failure(failure.error):
                _out.print(f"        {escape(line)}", soft_wrap=True)
    summary = f"{ok + bad + skipped} replayed: {ok} OK, {bad} failed" + (f", {skipped} skipped" if skipped else "")
    _out.print(summary if not bad else f"[red]{summary}[/red]")
    if ok + bad == 0:
        return 1  # everything skipped: nothing was checked
    return 1 if bad else 0
