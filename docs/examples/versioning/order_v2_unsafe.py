"""Version 2 done wrong: a new activity without a patch. In-flight v1 runs break."""

from __future__ import annotations

from datetime import timedelta

from order_activities import charge, check_fraud, ship

from sagas import workflow

T = timedelta(seconds=10)


@workflow.defn(name="Order")
class Order:
    def __init__(self) -> None:
        self.packed = False

    @workflow.run
    async def run(self, order_id: str) -> list[str]:
        steps = [
            await workflow.execute_activity(charge, order_id, start_to_close_timeout=T)
        ]
        # --8<-- [start:unsafe]
        steps.append(
            await workflow.execute_activity(
                check_fraud, order_id, start_to_close_timeout=T
            )
        )  # NOT replay-safe
        # --8<-- [end:unsafe]
        await workflow.wait_condition(lambda: self.packed)
        steps.append(
            await workflow.execute_activity(ship, order_id, start_to_close_timeout=T)
        )
        return steps

    @workflow.signal
    def mark_packed(self) -> None:
        self.packed = True
