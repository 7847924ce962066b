"""Version 3: every v1 run has closed, so the old path goes; the patch is deprecated."""

from __future__ import annotations

from datetime import timedelta

from order_activities import charge, check_fraud, ship

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
        workflow.deprecate_patch(
            "fraud-check"
        )  # v2 runs recorded the marker; this accepts it
        steps.append(
            await workflow.execute_activity(
                check_fraud, order_id, start_to_close_timeout=T
            )
        )
        await workflow.wait_condition(lambda: self.packed)
        steps.append(
            await workflow.execute_activity(ship, order_id, start_to_close_timeout=T)
        )
        return steps

    @workflow.signal
    def mark_packed(self) -> None:
        self.packed = True


# --8<-- [end:workflow]
