"""`sagas server ...` commands.

    sagas server start-dev                        # SQLite in a temp file, built-in broker, port 7233
    sagas server start-dev --db-filename sagas.db # keep history across restarts
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import tempfile
from pathlib import Path

import typer
from rich.console import Console

server_app = typer.Typer(help="Run the orchestrator server.", no_args_is_help=True)
console = Console(stderr=True)


@server_app.callback()
def _group() -> None:
    """Run the orchestrator server."""


async def serve_dev(db_filename: str | None, ip: str, port: int, log_level: str, ready_file: str | None = None) -> None:
    """Run the dev server until SIGINT/SIGTERM."""
    from orchestrator.server import DevServer

    with tempfile.TemporaryDirectory(prefix="sagas-dev-") as tmp:
        path = Path(db_filename).resolve() if db_filename else Path(tmp) / "sagas.db"
        server = DevServer(store_url=f"sqlite:///{path}", host=ip, port=port, log_level=log_level)
        try:
            await server.start()
        except OSError as exc:
            console.print(f"[red]error:[/] cannot listen on {ip}:{port}: {exc.strerror or exc}. Is another server running? Try --port.")
            raise typer.Exit(1) from exc
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        console.print(
            f"[green]sagas dev server[/] listening on http://{server.target}  "
            f"(history: {path if db_filename else 'temporary SQLite file'}, broker: built-in)"
        )
        if ready_file:
            Path(ready_file).write_text(server.target)
        await stop.wait()
        console.print("shutting down ...")
        await server.stop()


@server_app.command("start-dev")
def start_dev(
    db_filename: str = typer.Option(None, "--db-filename", "-f", help="SQLite file for history (default: a temporary file)."),
    ip: str = typer.Option("127.0.0.1", "--ip", help="Address to listen on."),
    port: int = typer.Option(7233, "--port", "-p", help="Port of the HTTP API and UI."),
    log_level: str = typer.Option("warning", "--log-level", help="debug, info, warning or error."),
    ready_file: str = typer.Option(None, "--ready-file", help="Write host:port to this file once serving (for scripts)."),
) -> None:
    """Run every service in one process on the embedded default (SQLite + built-in broker)."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_dev(db_filename, ip, port, log_level, ready_file))


if __name__ == "__main__":
    server_app()
