"""`sagas demo ...` commands."""

from __future__ import annotations

import typer

demo_app = typer.Typer(help="Run the demos.", no_args_is_help=True)
