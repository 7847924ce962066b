"""``sagas admin``: operator commands.

``sagas admin canary`` runs the canary workflows (``sagas.canary``) against a
live cluster and exits 1 when one fails: a health probe for a deployment::

    sagas admin canary --address orchestrator:7233 --namespace default --timeout 20

``sagas admin rebuild`` refills an **empty** store from the history stream
``{prefix}.history`` (a Kafka topic or a RabbitMQ stream, read from its start)
when the store was lost: executions, visibility, current-run pointers and the
pending tasks and timers, then verifies every run (see
``orchestrator/history/rebuild.py`` and ``docs/operations.md``)::

    sagas admin rebuild --from kafka://k1:9092 --store sqlite:////var/lib/sagas/new.db --shards 4

Exit status: 0 when every run was rebuilt and verified; 1 when the stream has a
run that cannot be rebuilt (incomplete, out of sequence, conflicting, unknown
event type: each named with its message position and event id) -- nothing is
written then -- or the store is not empty; 2 for bad options.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import asdict
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from brokers.base import BrokerError, parse_broker_url
from orchestrator.history.rebuild import RebuildError, RebuildReport, RunHistory, rebuild_store
from orchestrator.persistence.base import HistoryStore, StoreError, open_store
from sagas.canary import PROBES, CanaryResult, run_canary
from sagas.cli.workflow import Connection, OutputFormat, _run, _with_client, connected
from sagas.client import Client
from sagas.worker._history_stream import histories_from_stream, read_history_stream

admin_app = typer.Typer(
    help="Operator commands: rebuild the store from the history stream; probe a live cluster with canaries.",
    no_args_is_help=True,
)
_out = Console(highlight=False, soft_wrap=True)
_err = Console(stderr=True, highlight=False, soft_wrap=True)

_LOG_SCHEMES = ("kafka", "amqp", "amqps")


def runs_from_stream(bodies: Iterable[bytes | str], *, namespace: str | None = None) -> list[RunHistory]:
    """Every run in the stream messages, checked; raises :class:`RebuildError` listing each run that is not whole.

    Unlike replay, a rebuild takes all or nothing: a malformed message, a run
    with missing events (truncated, or events dropped: republish it), one with
    conflicting or unknown events, or events out of sequence refuse the rebuild.
    Duplicates (same event id, same contents) are dropped.
    """
    found = histories_from_stream(bodies, namespace=namespace)
    problems: list[str] = []
    if found.malformed:
        problems.append(f"{found.malformed} messages are not history events (first: {found.malformed_example})")
    problems += [f"{key}: {why}" for key, why in found.invalid.items()]
    problems += [f"{key}: {why}" for key, why in found.incomplete.items()]
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise RebuildError(f"the history stream cannot be rebuilt ({len(problems)} problems):\n  {shown}{more}")
    return [RunHistory(h.namespace or "default", h.workflow_id, h.run_id or "", list(h.events)) for h in found.histories]


async def rebuild_from_stream(
    source: str,
    store: HistoryStore,
    *,
    topic: str = "sagas.history",
    num_shards: int = 4,
    namespace: str | None = None,
    wait: float = 10.0,
    idle: float = 2.0,
    retention_days: float = 3.0,
) -> RebuildReport:
    """Read the history stream at ``source`` from its start and rebuild ``store`` (empty) from it."""
    scheme = parse_broker_url(source)[0]
    if scheme not in _LOG_SCHEMES:
        raise RebuildError(
            f"--from {scheme}:// is a queue (reading it takes the messages away): rebuild from a log, "
            "kafka://... or amqp://... (the history stream is a RabbitMQ stream there)"
        )
    bodies = await read_history_stream(source, topic, first_wait=wait, idle=idle)
    runs = runs_from_stream(bodies, namespace=namespace)
    if not runs:
        raise RebuildError(f"{topic} has no history events: nothing to rebuild")
    return await rebuild_store(store, runs, num_shards=num_shards, retention_days=retention_days)


@admin_app.command("rebuild")
def rebuild(
    source: Annotated[str, typer.Option("--from", help="The history stream's broker: kafka://... or amqp://...")],
    store_url: Annotated[
        str, typer.Option("--store", envvar="SAGAS_STORE", help="The EMPTY store to fill: sqlite:///path.db, mongodb://...")
    ],
    topic: Annotated[str, typer.Option("--topic", help="The history stream ({prefix}.history).")] = "sagas.history",
    shards: Annotated[
        int, typer.Option("--shards", help="persistence.numHistoryShards of the cluster that will use the store.")
    ] = 4,
    namespace: Annotated[
        str | None, typer.Option("--namespace", "-n", help="Only this namespace (default: all).")
    ] = None,
    retention_days: Annotated[
        float, typer.Option("--retention-days", help="Retention of closed runs in namespaces the store does not know.")
    ] = 3.0,
    wait: Annotated[float, typer.Option("--wait", help="Seconds to wait for the first message.")] = 10.0,
    idle: Annotated[float, typer.Option("--idle", help="Stop reading after this many quiet seconds.")] = 2.0,
) -> None:
    """Recreate executions, visibility and pending timers/tasks in an empty store from the history stream."""
    if shards < 1:
        raise typer.BadParameter("must be at least 1", param_hint="--shards")

    async def go() -> RebuildReport:
        store = await open_store(store_url)
        try:
            return await rebuild_from_stream(
                source, store, topic=topic, num_shards=shards, namespace=namespace, wait=wait, idle=idle,
                retention_days=retention_days,
            )
        finally:
            await store.aclose()

    try:
        report = asyncio.run(go())
    except (RebuildError, StoreError, BrokerError, OSError, ValueError) as exc:
        _err.print(f"[red]Error:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from None
    _out.print(
        f"Rebuilt {report.runs} runs of {report.workflows} workflows ({report.open_runs} open) in "
        f"{', '.join(report.namespaces)}: {report.events} events, {report.transfer_tasks} tasks, "
        f"{report.timer_tasks} timers; {report.verified} verified against their folded events."
    )


@admin_app.command("canary")
@connected
def canary(
    conn: Connection,
    probes: Annotated[
        str | None, typer.Option("--probes", help=f"Comma list of probes (default: all of {', '.join(PROBES)}).")
    ] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds each probe may take.")] = 30.0,
    timer_tolerance: Annotated[
        float, typer.Option("--timer-tolerance", help="Seconds after due a 1 s timer may fire and still pass.")
    ] = 2.0,
    task_queue: Annotated[
        str | None, typer.Option("--task-queue", "-t", help="Task queue of the canary worker (default: a fresh one).")
    ] = None,
    output: Annotated[OutputFormat, typer.Option("--output", "-o", help="table, or json.")] = OutputFormat.TABLE,
) -> None:
    """Run the canary workflows against a live cluster (a health probe); exit 1 if one fails.

    One small workflow per capability (echo, signal, query, timer, retry,
    cancellation, child, continue-as-new), all at once, with a worker in this
    process on a fresh task queue. See ``sagas.canary``.
    """
    names = [p.strip() for p in probes.split(",") if p.strip()] if probes else None

    async def go(client: Client) -> list[CanaryResult]:
        return await run_canary(client, probes=names, timeout=timeout, timer_tolerance=timer_tolerance,
                                task_queue=task_queue)  # fmt: skip

    results = _run(lambda: _with_client(conn, go))
    if output is OutputFormat.JSON:
        _out.print_json(data=[asdict(r) for r in results])
    else:
        table = Table("Probe", "Result", "Seconds", "Detail")
        for r in results:
            table.add_row(r.probe, "[green]ok[/]" if r.ok else "[red]FAILED[/]", f"{r.seconds:.2f}", escape(r.detail))
        _out.print(table)
    failed = [r.probe for r in results if not r.ok]
    if failed:
        _err.print(f"[red]Canary failed:[/red] {', '.join(failed)}")
        raise typer.Exit(1)
