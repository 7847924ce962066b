"""Version 1 of the Order workflow: charge, wait until the parcel is packed, ship."""

from __future__ import annotations

from datetime import timedelta

from order_activities import charge, ship

from sagas import workflow

T = timedelta(seconds=10)


# --8<-- [start:workflow]
@workflow.defn(name="Order")
class Order:
    def __init__(self) -> None:
        self.packed = False

    @workflow.run
    async def run(self, order_id: str) -> list[str]:
        steps = [
            await workflow.execute_activity(charge, order_id, start_to_close_timeout=T)
        ]
        await workflow.wait_condition(lambda: self.packed)
        steps.append(
            await workflow.execute_activity(ship, order_id, start_to_close_timeout=T)
        )
        return steps

    @workflow.signal
    def mark_packed(self) -> None:
        self.packed = True


# --8<-- [end:workflow]
