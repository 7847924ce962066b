"""The activities of the versioning guide's Order workflow."""

from __future__ import annotations

from sagas import activity


@activity.defn
async def charge(order_id: str) -> str:
    return f"charged {order_id}"


@activity.defn
async def check_fraud(order_id: str) -> str:
    return f"{order_id} looks fine"


@activity.defn
async def ship(order_id: str) -> str:
    return f"shipped {order_id}"


ACTIVITIES = [charge, check_fraud, ship]
