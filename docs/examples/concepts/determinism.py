"""Workflow code is replayed: what it decides must come out the same every time."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sagas import activity, workflow


@activity.defn
async def reserve_seat(guest: str) -> str:
    return f"seat-for-{guest}"  # an activity may do anything: I/O, clocks, randomness


# --8<-- [start:workflow]
@workflow.defn
class DinnerParty:
    @workflow.run
    async def run(self, guests: list[str]) -> dict[str, object]:
        booked_at = workflow.now()  # not datetime.now()
        code = str(workflow.uuid4())[:8]  # not uuid.uuid4()
        table = workflow.random().randint(1, 20)  # not random.randint()

        # Plain asyncio is deterministic here: the activities run at the same time.
        seats = await asyncio.gather(
            *(
                workflow.execute_activity(
                    reserve_seat, g, start_to_close_timeout=timedelta(seconds=10)
                )
                for g in guests
            )
        )
        await asyncio.sleep(
            1
        )  # a durable timer, exactly like workflow.sleep(1); a month works the same way
        return {
            "booked_at": booked_at.isoformat(),
            "code": code,
            "table": table,
            "seats": seats,
        }


# --8<-- [end:workflow]
