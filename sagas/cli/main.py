"""The ``sagas`` command line (console script ``sagas`` -> ``sagas.cli.main:app``).

::

    sagas server start-dev            # run an orchestrator with the embedded defaults
    sagas workflow list               # see what runs
    sagas workflow show -w trip-1     # draw a run's history and saga
    sagas workflow replay ...         # replay histories against today's code (docs/replay.md)
    sagas schedule ...                # schedules: create, describe, pause, trigger, backfill...
    sagas batch ...                   # signal / cancel / terminate every workflow a query matches
    sagas demo ...                    # run the demos
    sagas admin rebuild ...           # refill an empty store from the history stream
"""

from __future__ import annotations

import typer

from sagas.cli.admin import admin_app
from sagas.cli.demo import demo_app
from sagas.cli.replay import replay
from sagas.cli.schedule import batch_app, schedule_app
from sagas.cli.server import server_app
from sagas.cli.workflow import workflow_app

app = typer.Typer(
    name="sagas",
    help="Durable-execution saga orchestrator: run the server, start and inspect workflows.",
    no_args_is_help=True,
)
workflow_app.command("replay")(replay)
app.add_typer(workflow_app, name="workflow")
app.add_typer(server_app, name="server")
app.add_typer(demo_app, name="demo")
app.add_typer(schedule_app, name="schedule")
app.add_typer(batch_app, name="batch")
app.add_typer(admin_app, name="admin")

if __name__ == "__main__":
    app()
