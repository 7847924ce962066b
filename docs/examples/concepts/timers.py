"""Durable timers: a workflow waits days for a person, through any restart."""

from __future__ import annotations

from datetime import timedelta

from sagas import workflow


# --8<-- [start:workflow]
@workflow.defn
class ExpenseApproval:
    def __init__(self) -> None:
        self.decision: str | None = None

    @workflow.run
    async def run(self, expense_id: str) -> str:
        try:
            # A durable timer: the server fires it in 7 days, whatever restarts.
            await workflow.wait_condition(
                lambda: self.decision is not None, timeout=timedelta(days=7)
            )
        except TimeoutError:
            return f"{expense_id}: escalated after 7 days without a decision"
        return f"{expense_id}: {self.decision}"

    @workflow.signal
    def decide(self, decision: str) -> None:
        self.decision = decision

    @workflow.query
    def pending(self) -> bool:
        return self.decision is None


# --8<-- [end:workflow]
