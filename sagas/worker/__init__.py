"""Run workflows and activities (mirrors ``temporalio.worker``).

Example::

    from sagas.client import Client
    from sagas.worker import Worker

    client = await Client.connect("localhost:7233")
    worker = Worker(client, task_queue="trips", workflows=[BookTrip], activities=[book_car, cancel_car])
    await worker.run()

A worker asks the server (``/api/v1/cluster``) which broker carries the task
queues, then takes workflow tasks from ``{prefix}.{namespace}.{task_queue}.wf``
and activity tasks from ``...act``. Workflow instances stay in a sticky
cache, so a task usually needs no history replay.

:class:`Replayer` replays recorded histories (``WorkflowHandle.fetch_history``,
``sagas workflow show --output json``) against today's workflow code.
"""

from sagas.worker._replayer import Replayer, ReplayResult, ReplayResults, WorkflowHistory
from sagas.worker._worker import Worker

__all__ = ["ReplayResult", "ReplayResults", "Replayer", "Worker", "WorkflowHistory"]
