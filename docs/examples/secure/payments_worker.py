"""A worker and a client of the "payments" namespace, with the team's API key."""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta

from sagas import activity, workflow
from sagas.client import Client
from sagas.worker import Worker


@activity.defn
async def settle(invoice_id: str) -> str:
    return f"{invoice_id} settled"


@workflow.defn
class Settlement:
    @workflow.run
    async def run(self, invoice_id: str) -> str:
        return await workflow.execute_activity(
            settle, invoice_id, start_to_close_timeout=timedelta(seconds=10)
        )


# --8<-- [start:main]
async def main() -> None:
    async with await Client.connect(
        os.environ.get("SAGAS_ADDRESS", "localhost:7233"),
        namespace="payments",
        api_key=os.environ[
            "SAGAS_API_KEY"
        ],  # sent as "Authorization: Bearer ..."; never hard-code it
    ) as client:
        # The worker polls the built-in broker with the same address and key.
        async with Worker(
            client,
            task_queue="settlements",
            workflows=[Settlement],
            activities=[settle],
        ):
            result = await client.execute_workflow(
                Settlement.run, "inv-7", id="settle-inv-7", task_queue="settlements"
            )
            print(result)


# --8<-- [end:main]


if __name__ == "__main__":
    asyncio.run(main())
