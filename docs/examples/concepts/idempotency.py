"""At-least-once delivery + an idempotent service = the effect happens once."""

from __future__ import annotations

from sagas import activity

# The payment provider's records by idempotency key (really: its database).
CHARGES: dict[str, str] = {}


# --8<-- [start:activity]
@activity.defn
async def charge_once(amount: int) -> str:
    info = activity.info()
    # The same for every retry and redelivery of this activity, unique to this step:
    key = f"{info.workflow_id}/{info.workflow_run_id}/{info.activity_id}"
    # Really: INSERT ... ON CONFLICT DO NOTHING, or the provider's idempotency key.
    if key not in CHARGES:
        CHARGES[key] = f"charge-{len(CHARGES) + 1} of {amount}"
    return CHARGES[key]


# --8<-- [end:activity]
