"""Tests of InvoiceReminder: a week of waiting, in well under a second.

Run with pytest and pytest-asyncio (``asyncio_mode = "auto"``).
"""

from __future__ import annotations

from reminder import InvoiceReminder, send_reminder

from sagas import activity
from sagas.testing import ActivityEnvironment, WorkflowEnvironment
from sagas.worker import Worker

sent: list[str] = []


@activity.defn(
    name="send_reminder"
)  # same name as the real activity: the workflow cannot tell
async def fake_send_reminder(invoice_id: str) -> str:
    sent.append(invoice_id)
    return "sent"


async def test_two_reminders_then_collections() -> None:
    sent.clear()
    async with await WorkflowEnvironment.start_time_skipping() as env:
        async with Worker(
            env.client,
            task_queue="billing",
            workflows=[InvoiceReminder],
            activities=[fake_send_reminder],
        ):
            result = await env.client.execute_workflow(
                InvoiceReminder.run, "inv-1", id="invoice-inv-1", task_queue="billing"
            )
    assert result == "handed to collections"
    assert sent == ["inv-1", "inv-1"]  # 3 + 4 days of durable timers, skipped


async def test_paid_before_the_first_reminder() -> None:
    sent.clear()
    async with await WorkflowEnvironment.start_time_skipping() as env:
        async with Worker(
            env.client,
            task_queue="billing",
            workflows=[InvoiceReminder],
            activities=[fake_send_reminder],
        ):
            # signal-with-start: the payment is in the history before the first step
            handle = await env.client.start_workflow(
                InvoiceReminder.run,
                "inv-2",
                id="invoice-inv-2",
                task_queue="billing",
                start_signal="pay",
            )
            assert await handle.result() == "paid"
    assert sent == []


async def test_send_reminder_activity() -> None:
    env = ActivityEnvironment()
    assert await env.run(send_reminder, "inv-3") == "reminder for inv-3 sent"
    assert env.heartbeats == [("sending",)]
