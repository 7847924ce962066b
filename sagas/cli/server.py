"""`sagas server ...` commands (start-dev, start)."""

from __future__ import annotations

import typer

server_app = typer.Typer(help="Run the orchestrator server.", no_args_is_help=True)
