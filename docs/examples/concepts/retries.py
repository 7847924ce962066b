"""Activities are retried by the orchestrator with durable back-off timers."""

from __future__ import annotations

from datetime import timedelta

from sagas import activity, workflow
from sagas.common import RetryPolicy
from sagas.exceptions import ApplicationError


# --8<-- [start:activity]
@activity.defn
async def charge_card(amount: int) -> str:
    info = activity.info()
    if amount > 1000:
        # A business error: retrying cannot help, so say so.
        raise ApplicationError(
            f"card declined for {amount}", type="CardDeclined", non_retryable=True
        )
    if info.attempt < 3:
        # Any other exception is retried (here: the first two attempts fail).
        raise ConnectionError("payment gateway did not answer")
    return f"charged {amount} on attempt {info.attempt}"


# --8<-- [end:activity]


# --8<-- [start:workflow]
@workflow.defn
class Checkout:
    @workflow.run
    async def run(self, amount: int) -> str:
        return await workflow.execute_activity(
            charge_card,
            amount,
            start_to_close_timeout=timedelta(
                seconds=10
            ),  # one attempt may take this long
            retry_policy=RetryPolicy(
                initial_interval=timedelta(
                    milliseconds=100
                ),  # then 200 ms, 400 ms, ...
                backoff_coefficient=2.0,
                maximum_interval=timedelta(seconds=10),
                maximum_attempts=5,  # 0 (the default) retries for ever
                non_retryable_error_types=["CardDeclined"],
            ),
        )


# --8<-- [end:workflow]
