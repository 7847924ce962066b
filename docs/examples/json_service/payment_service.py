"""A payment service that joins sagas without the SDK: JSON over the built-in broker.

It imports nothing from sagas: the same loop in Go, Java or Node.js needs an HTTP
client and a JSON parser. On RabbitMQ, Kafka or SQS the same JSON bodies travel on
the same queue names.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

TASKS = "sagas.default.payments.act"  # sagas.<namespace>.<task queue>.act

# This service's records by workflow id (a real one keeps them in its database).
CHARGES: dict[str, dict[str, Any]] = {}


# --8<-- [start:handle]
def handle(task: dict[str, Any]) -> dict[str, Any]:
    """The reply fields for one activity task: {"result": ...} or {"failure": {...}}."""
    order = task["input"][0]
    key = task[
        "workflow_id"
    ]  # the same for every attempt and redelivery: our idempotency key
    if task["activity_type"] == "charge_card":
        if order["amount"] > 1000:
            return {
                "failure": {
                    "message": f"card declined for {order['amount']}",
                    "type": "CardDeclined",
                    "non_retryable": True,
                    "details": [],
                }
            }
        charge = CHARGES.setdefault(
            key, {"charge_id": f"ch-{len(CHARGES) + 1}", "amount": order["amount"]}
        )
        return {"result": {"charge_id": charge["charge_id"]}}
    if task["activity_type"] == "refund_card":
        charge = CHARGES.get(key)
        if charge is not None:
            charge["refunded"] = True
        return {"result": {"refunded": charge is not None}}
    return {
        "failure": {
            "message": f"unknown operation {task['activity_type']}",
            "type": "UnknownOperation",
            "non_retryable": True,
            "details": [],
        }
    }


# --8<-- [end:handle]


# --8<-- [start:loop]
async def serve(
    base_url: str = "http://127.0.0.1:7233", stop: asyncio.Event | None = None
) -> None:
    """Take tasks, reply, ack; until ``stop`` is set."""
    stop = stop or asyncio.Event()
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        while not stop.is_set():
            # 1. long-poll for tasks (at once if there are some, else after `wait` s)
            answer = await http.post(
                f"/api/v1/queues/{TASKS}/receive", json={"max_messages": 10, "wait": 1}
            )
            answer.raise_for_status()
            for delivery in answer.json()["deliveries"]:
                task = json.loads(delivery["body"])
                # 2. publish the reply, with the task token copied unchanged
                reply = {
                    "v": 1,
                    "kind": "activity_result",
                    "task_token": task["task_token"],
                    **handle(task),
                }
                published = await http.post(
                    f"/api/v1/queues/{task['reply_to']}/publish",
                    json={"body": json.dumps(reply)},
                )
                published.raise_for_status()
                # 3. only then ack the task: if we crash before this, it comes again
                await http.post(
                    f"/api/v1/queues/{TASKS}/ack", json={"receipt": delivery["receipt"]}
                )


# --8<-- [end:loop]


if __name__ == "__main__":
    asyncio.run(serve())
