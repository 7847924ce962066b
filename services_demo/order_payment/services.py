"""Inventory, payment and shipping services for the order/payment demo (plain JSON on queues).

    python -m services_demo.order_payment.services payments --db pay.db --broker-url local://127.0.0.1:7233

Payments decline cards ending in "0000" (non-retryable) -- the demo's way to
show a declined payment releasing the reserved stock.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import typer

from brokers.envelope import ActivityTask
from brokers.service import ServiceError, serve
from services_demo.common import BookingLedger

OPERATIONS = {
    "inventory": ("reserve_inventory", "release_inventory"),
    "payments": ("charge_payment", "refund_payment"),
    "shipping": ("create_shipment", "cancel_shipment"),
}


class OrderService:
    def __init__(self, name: str, ledger: BookingLedger) -> None:
        self.name = name
        self.ledger = ledger
        self.do, self.undo = OPERATIONS[name]

    async def handle(self, task: ActivityTask) -> Any:
        order = task.input[0] if task.input else {}
        if not isinstance(order, dict):
            raise ServiceError("input must be an order object", type="InvalidInput", non_retryable=True)
        key = task.workflow_id
        if task.activity_type == self.do:
            if self.name == "payments" and str(order.get("card", "")).endswith("0000"):
                raise ServiceError("card declined", type="PaymentDeclined", non_retryable=True)
            ref, status = self.ledger.book(key, str(order.get("amount", "")))
            if status != "booked":
                raise ServiceError(f"{self.do} for {key} was already undone", type="AlreadyUndone", non_retryable=True)
            return {"service": self.name, "ref": ref}
        if task.activity_type == self.undo:
            return {"service": self.name, "undone": True, "previous": self.ledger.cancel(key)}
        raise ServiceError(f"{self.name} does not know {task.activity_type!r}", type="UnknownOperation", non_retryable=True)


def main(
    name: str = typer.Argument(..., help="inventory, payments or shipping"),
    broker_url: str = typer.Option("local://127.0.0.1:7233"),
    db: str = typer.Option(...),
    namespace: str = typer.Option("default"),
    ready_file: str = typer.Option(None),
) -> None:
    if name not in OPERATIONS:
        raise typer.BadParameter(f"name must be one of {', '.join(OPERATIONS)}")
    service = OrderService(name, BookingLedger(db))

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)

        def ready() -> None:
            if ready_file:
                open(ready_file, "w").close()

        await serve(name, service.handle, broker_url=broker_url, namespace=namespace, stop=stop, ready=ready)

    asyncio.run(run())


if __name__ == "__main__":
    typer.run(main)
