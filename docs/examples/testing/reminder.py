"""An invoice reminder: waits days between reminders, which a test must not."""

from __future__ import annotations

from datetime import timedelta

from sagas import activity, workflow


@activity.defn
async def send_reminder(invoice_id: str) -> str:
    activity.heartbeat("sending")
    return f"reminder for {invoice_id} sent"  # a real one sends an e-mail


# --8<-- [start:workflow]
@workflow.defn
class InvoiceReminder:
    def __init__(self) -> None:
        self.paid = False

    @workflow.run
    async def run(self, invoice_id: str) -> str:
        for wait in (timedelta(days=3), timedelta(days=4)):
            try:
                await workflow.wait_condition(lambda: self.paid, timeout=wait)
                return "paid"
            except TimeoutError:
                await workflow.execute_activity(
                    send_reminder,
                    invoice_id,
                    start_to_close_timeout=timedelta(seconds=30),
                )
        return "handed to collections"

    @workflow.signal
    def pay(self) -> None:
        self.paid = True


# --8<-- [end:workflow]
