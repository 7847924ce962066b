"""Data conversion between Python values and JSON payloads (mirrors ``temporalio.converter``).

Payloads are plain JSON so that services that never import the SDK can read
them. Values are converted by the receiving function's type hints:

>>> from datetime import datetime, timezone
>>> conv = default()
>>> p = conv.to_payload(datetime(2026, 1, 1, tzinfo=timezone.utc))
>>> p
'2026-01-01T00:00:00Z'
>>> conv.from_payload(p, datetime)
datetime.datetime(2026, 1, 1, 0, 0, tzinfo=TzInfo(0))
"""

from sagas.converter._converter import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    DataConverter,
    PayloadCodec,
    default,
    parameter_hints,
    return_hint,
)

__all__ = [
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "DataConverter",
    "PayloadCodec",
    "default",
    "parameter_hints",
    "return_hint",
]
