"""An order saga whose payment step is done by a service that never imports the SDK."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sagas import Saga, activity, workflow
from sagas.client import Client
from sagas.exceptions import ApplicationError
from sagas.worker import Worker

T = timedelta(seconds=10)


@dataclass
class Order:
    order_id: str
    amount: int
    address: str


@activity.defn
async def reserve_stock(order: Order) -> str:
    return f"reservation-{order.order_id}"


@activity.defn
async def release_stock(order: Order) -> None:
    pass


@activity.defn
async def ship(order: Order) -> str:
    if not order.address:
        raise ApplicationError(
            "no shipping address", type="NoAddress", non_retryable=True
        )
    return f"parcel-{order.order_id}"


# --8<-- [start:workflow]
@workflow.defn
class OrderSaga:
    @workflow.run
    async def run(self, order: Order) -> dict[str, Any]:
        async with Saga() as saga:
            await workflow.execute_activity(
                reserve_stock, order, start_to_close_timeout=T
            )
            saga.add_compensation(release_stock, order, start_to_close_timeout=T)

            # By name, on the payment service's task queue: no Python function needed.
            charge = await workflow.execute_activity(
                "charge_card", order, task_queue="payments", start_to_close_timeout=T
            )
            saga.add_compensation(
                "refund_card", order, task_queue="payments", start_to_close_timeout=T
            )

            parcel = await workflow.execute_activity(
                ship, order, start_to_close_timeout=T
            )
        return {"charge": charge, "parcel": parcel}


# --8<-- [end:workflow]


# --8<-- [start:main]
async def main() -> None:
    async with await Client.connect(
        os.environ.get("SAGAS_ADDRESS", "localhost:7233")
    ) as client:
        async with Worker(
            client,
            task_queue="orders",
            workflows=[OrderSaga],
            activities=[reserve_stock, release_stock, ship],
        ):
            result = await client.execute_workflow(
                OrderSaga.run,
                Order("o-1", 40, "1 Main St"),
                id="order-1",
                task_queue="orders",
            )
            print(result)  # {'charge': {'charge_id': 'ch-1'}, 'parcel': 'parcel-o-1'}


# --8<-- [end:main]


if __name__ == "__main__":
    asyncio.run(main())
