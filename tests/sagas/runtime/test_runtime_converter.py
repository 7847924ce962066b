"""DataConverter round trips, conversion errors, size limit, codecs; exception <-> Failure."""

from __future__ import annotations

import base64
import enum
import uuid
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from orchestrator.api.common import Failure
from orchestrator.api.enums import RetryState, TimeoutType
from sagas.common import RetryPolicy, SearchAttributeKey
from sagas.converter import DataConverter, PayloadCodec, default
from sagas.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    ChildWorkflowError,
    FailureError,
    PayloadSizeError,
    ServerError,
    TerminatedError,
    TimeoutError,
    error_to_failure,
    failure_to_error,
    is_cancelled_error,
)


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclass
class Address:
    street: str
    number: int


@dataclass
class Person:
    name: str
    born: datetime
    id: uuid.UUID
    color: Color
    address: Address
    tags: list[str]


class Order(BaseModel):
    order_id: uuid.UUID
    amount: float
    placed: datetime
    color: Color = Color.RED


def test_round_trips_by_type_hint() -> None:
    conv = default()
    person = Person(
        "Ana", datetime(2026, 1, 2, 3, 4, tzinfo=UTC), uuid.uuid4(), Color.BLUE, Address("Main", 7), ["a"]
    )
    order = Order(order_id=uuid.uuid4(), amount=9.5, placed=datetime(2026, 5, 1, tzinfo=UTC))
    values: list[Any] = [person, order, person.born, person.id, Color.RED, {"k": [1, 2]}, None, 3, "s"]
    hints: list[Any] = [Person, Order, datetime, uuid.UUID, Color, dict[str, list[int]], None, int, str]
    payloads = conv.to_payloads(values)
    assert payloads[0]["born"] == "2026-01-02T03:04:00Z"
    assert payloads[0]["color"] == "blue"
    assert payloads[3] == str(person.id)
    assert conv.from_payloads(payloads, hints) == values


def test_any_or_missing_hint_gives_raw_json() -> None:
    conv = default()
    payloads = conv.to_payloads([Address("x", 1), 2])
    assert conv.from_payloads(payloads, [Any]) == [{"street": "x", "number": 1}, 2]
    assert conv.from_payload(payloads[0]) == {"street": "x", "number": 1}


def test_bad_payload_raises_non_retryable_conversion_error() -> None:
    with pytest.raises(ApplicationError) as info:
        default().from_payloads([{"street": "x", "number": "not a number"}], [Address])
    err = info.value
    assert err.type == "PayloadConversionError"
    assert err.non_retryable
    assert "Address" in err.message and "number" in err.message


def test_unserialisable_value_is_refused() -> None:
    with pytest.raises(ApplicationError) as info:
        default().to_payload(object())
    assert info.value.type == "PayloadConversionError"


def test_size_limit_names_the_limit() -> None:
    conv = DataConverter(max_payload_bytes=100)
    conv.to_payload("x" * 50)
    with pytest.raises(PayloadSizeError) as info:
        conv.to_payload("x" * 200)
    assert "limit of 100 bytes" in info.value.message
    assert info.value.non_retryable and info.value.limit == 100
    assert default().max_payload_bytes == 2 * 1024 * 1024


class ZlibCodec(PayloadCodec):
    name = "zlib"

    def encode(self, payloads: Sequence[bytes]) -> list[bytes]:
        return [zlib.compress(p) for p in payloads]

    def decode(self, payloads: Sequence[bytes]) -> list[bytes]:
        return [zlib.decompress(p) for p in payloads]


def test_codec_wraps_payloads() -> None:
    conv = DataConverter(payload_codec=ZlibCodec())
    payloads = conv.to_payloads([Address("Main", 1), 5])
    assert payloads[0]["__sagas_codec__"] == "zlib"
    assert zlib.decompress(base64.b64decode(payloads[0]["data"])) == b'{"street":"Main","number":1}'
    assert conv.from_payloads(payloads, [Address, int]) == [Address("Main", 1), 5]
    # Mixed plain and encoded payloads decode too.
    assert conv.from_payloads([7, payloads[1]], [int, int]) == [7, 5]
    with pytest.raises(ApplicationError, match="codec 'zlib'"):
        default().from_payloads(payloads, [Address])


def test_application_error_round_trip_with_cause_chain() -> None:
    inner = ApplicationError("card declined", {"code": 51}, type="Declined", non_retryable=True)
    outer = ActivityError(
        "Activity task failed", activity_type="charge", activity_id="3", scheduled_event_id=9
    )
    outer.__cause__ = inner
    failure = error_to_failure(outer)
    assert failure.kind == "activity" and failure.activity_type == "charge"
    assert failure.cause is not None and failure.cause.type == "Declined"
    back = failure_to_error(failure)
    assert isinstance(back, ActivityError)
    assert back.activity_type == "charge" and back.scheduled_event_id == 9
    assert back.failure == failure
    cause = back.cause
    assert isinstance(cause, ApplicationError)
    assert (cause.message, cause.type, cause.non_retryable, list(cause.details)) == (
        "card declined",
        "Declined",
        True,
        [{"code": 51}],
    )


@pytest.mark.parametrize(
    "err",
    [
        CancelledError("stop", "why"),
        TimeoutError("late", type=TimeoutType.HEARTBEAT, last_heartbeat_details=[1]),
        TerminatedError("bye"),
        ServerError("boom", non_retryable=True),
        ChildWorkflowError(
            "child failed", workflow_id="c", workflow_type="C", retry_state=RetryState.TIMEOUT
        ),
    ],
)
def test_every_kind_round_trips(err: FailureError) -> None:
    back = failure_to_error(error_to_failure(err))
    assert type(back) is type(err)
    assert back.message == err.message
    if isinstance(err, TimeoutError):
        assert isinstance(back, TimeoutError) and back.type == TimeoutType.HEARTBEAT
        assert list(back.last_heartbeat_details) == [1]
    if isinstance(err, ChildWorkflowError):
        assert isinstance(back, ChildWorkflowError) and back.retry_state == RetryState.TIMEOUT


def test_plain_exceptions_become_application_failures() -> None:
    try:
        raise KeyError("missing")
    except KeyError as err:
        failure = error_to_failure(err)
    assert (failure.kind, failure.type) == ("application", "KeyError")
    assert "test_plain_exceptions" in failure.stack_trace
    assert isinstance(failure_to_error(Failure(message="m", kind="unknown-kind")), ApplicationError)


def test_is_cancelled_error() -> None:
    wrapped = ActivityError("x")
    wrapped.__cause__ = CancelledError()
    assert is_cancelled_error(wrapped)
    assert is_cancelled_error(CancelledError())
    assert not is_cancelled_error(ApplicationError("x"))


def test_retry_policy_and_search_attribute_key() -> None:
    policy = RetryPolicy(initial_interval=timedelta(seconds=2), maximum_interval=timedelta(seconds=10))
    spec = policy.to_spec()
    assert (spec.initial_interval, spec.maximum_interval, spec.maximum_attempts) == (2.0, 10.0, 0)
    assert RetryPolicy.from_spec(spec) == policy
    with pytest.raises(ValueError):
        RetryPolicy(maximum_attempts=-1)
    key = SearchAttributeKey.for_int("Priority")
    assert key.name == "Priority" and key.value_set(3).value == 3
