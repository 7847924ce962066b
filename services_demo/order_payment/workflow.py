"""The ``OrderPayment`` saga: reserve stock, charge, wait for approval (big orders), ship.

Compensations: refund the charge, release the stock. Orders over
``APPROVAL_THRESHOLD`` need a human ``approve`` signal within
``approval_timeout`` (a durable timer): without it the saga compensates.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sagas import Saga, workflow
from sagas.common import RetryPolicy
from sagas.exceptions import ApplicationError

APPROVAL_THRESHOLD = 1000
STEP = timedelta(seconds=10)
RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_interval=timedelta(seconds=2), maximum_attempts=5)


@workflow.defn
class OrderPayment:
    def __init__(self) -> None:
        self.approved: bool | None = None
        self.stage = "new"

    @workflow.signal
    def approve(self, approved: bool = True) -> None:
        self.approved = approved

    @workflow.query
    def status(self) -> str:
        return self.stage

    @workflow.run
    async def run(self, order: dict[str, Any]) -> dict[str, Any]:
        timeout = float(order.get("approval_timeout_s", 60))
        async with Saga() as saga:
            self.stage = "reserving"
            await workflow.execute_activity("reserve_inventory", order, task_queue="inventory", start_to_close_timeout=STEP, retry_policy=RETRY)
            saga.add_compensation("release_inventory", order, task_queue="inventory", start_to_close_timeout=STEP)
            self.stage = "charging"
            charge = await workflow.execute_activity("charge_payment", order, task_queue="payments", start_to_close_timeout=STEP, retry_policy=RETRY)
            saga.add_compensation("refund_payment", order, task_queue="payments", start_to_close_timeout=STEP)
            if order.get("amount", 0) > APPROVAL_THRESHOLD:
                self.stage = "awaiting approval"
                try:
                    await workflow.wait_condition(lambda: self.approved is not None, timeout=timedelta(seconds=timeout))
                except TimeoutError:
                    raise ApplicationError("no approval in time", type="ApprovalTimeout", non_retryable=True) from None
                if not self.approved:
                    raise ApplicationError("order rejected by approver", type="ApprovalRejected", non_retryable=True)
            self.stage = "shipping"
            shipment = await workflow.execute_activity("create_shipment", order, task_queue="shipping", start_to_close_timeout=STEP, retry_policy=RETRY)
        self.stage = "shipped"
        return {"status": "shipped", "charge": charge, "shipment": shipment}
