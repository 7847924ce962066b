"""Visibility filters on search attributes and record columns, on every store backend.

The ``store`` fixture (``conftest.py``) runs each test on every backend of
:data:`~tests.contract.conftest.STORE_BACKENDS`; the semantics are those of
``orchestrator.persistence._visibility_query`` (the memory backend is the
reference), and filters are written in the list-filter language where that
reads better.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from orchestrator.api.enums import WorkflowExecutionStatus as Status
from orchestrator.persistence.base import HistoryStore
from orchestrator.visibility.query import parse_list_query

from .conftest import NS, create, make_state, visibility

SHARD = 2

ATTRIBUTES: dict[str, dict[str, Any]] = {
    # newest first in the list: start times 105, 104, ...
    "wf-a": {"CustomerId": "c-1", "Amount": 150, "Vip": True, "At": "2026-01-01T10:00:00Z", "Note": "it's late"},
    "wf-b": {"CustomerId": "c-2", "Amount": 99.5, "Vip": False, "At": "2026-01-01T12:00:00+02:00"},
    "wf-c": {"CustomerId": "c-1", "Amount": "150", "Vip": "true", "At": "not a date"},
    "wf-d": {},
    "wf-e": {"CustomerId": 1, "Amount": True, "Vip": 1, "At": "2026-02-30T00:00:00Z", "Tags": ["x", "y"]},
    "wf-f": {"CustomerId": "c-10", "Amount": -3, "At": "2026-01-01 10:00:00.5", "Nested": {"a": 1}},
}
CLOSED = {"wf-b": 2000.0, "wf-d": 3000.0}


async def _seed(store: HistoryStore) -> None:
    range_id = await store.acquire_shard(SHARD, "test-host")
    for i, (workflow_id, attributes) in enumerate(ATTRIBUTES.items()):
        state = make_state(workflow_id, f"run-{workflow_id}", start_time=105.0 - i)
        close_time = CLOSED.get(workflow_id)
        record = visibility(
            state,
            status=Status.COMPLETED.value if close_time else Status.RUNNING.value,
            close_time=close_time,
            history_length=10 * (i + 1),
            search_attributes=attributes,
        )
        await store.write(SHARD, range_id, [create(state, visibility=record)])
    other = make_state("wf-other", "run-other", namespace="other")
    record = visibility(other, search_attributes={"CustomerId": "c-1"})
    await store.write(SHARD, range_id, [create(other, visibility=record)])


async def _ids(store: HistoryStore, query: str) -> list[str]:
    """Workflow ids matching ``query``, checked against the count and a paged walk."""
    filters = parse_list_query(query)
    listed = [r.workflow_id for r in (await store.list_visibility(NS, filters=filters)).records]
    assert await store.count_visibility(NS, filters=filters) == len(listed), query
    paged: list[str] = []
    token: str | None = None
    while True:
        page = await store.list_visibility(NS, filters=filters, page_size=1, next_page_token=token)
        paged += [r.workflow_id for r in page.records]
        token = page.next_page_token
        if token is None:
            break
    assert paged == listed, query
    return listed


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        # keyword: only JSON strings, exact, code-point order, prefix
        ("CustomerId = 'c-1'", ["wf-a", "wf-c"]),
        ("CustomerId != 'c-1'", ["wf-b", "wf-f"]),
        ("CustomerId > 'c-1'", ["wf-b", "wf-f"]),
        ("CustomerId <= 'c-10'", ["wf-a", "wf-c", "wf-f"]),
        ("CustomerId STARTS_WITH 'c-1'", ["wf-a", "wf-c", "wf-f"]),
        ("CustomerId STARTS_WITH ''", ["wf-a", "wf-b", "wf-c", "wf-f"]),
        ("Note = 'it''s late'", ["wf-a"]),
        ("Amount = '150'", ["wf-c"]),
        # numbers: JSON numbers only (not bools, not strings), ints and doubles together
        ("Amount > 100", ["wf-a"]),
        ("Amount >= 99.5", ["wf-a", "wf-b"]),
        ("Amount = 150", ["wf-a"]),
        ("Amount = 150.0", ["wf-a"]),
        ("Amount != 150", ["wf-b", "wf-f"]),
        ("Amount < 0", ["wf-f"]),
        ("CustomerId = 1", ["wf-e"]),
        # bools: true/false only (not 1, not "true")
        ("Vip = true", ["wf-a"]),
        ("Vip = false", ["wf-b"]),
        ("Vip != true", ["wf-b"]),
        ("Vip != false", ["wf-a"]),
        # datetimes: ISO-8601 strings compared as instants (zones, space separator, fractions)
        ("At = '2026-01-01T10:00:00Z'", ["wf-a", "wf-b"]),
        ("At = '2026-01-01T11:00:00+01:00'", ["wf-a", "wf-b"]),
        ("At > '2026-01-01T10:00:00Z'", ["wf-f"]),
        ("At >= '2026-01-01T10:00:00.500Z'", ["wf-f"]),
        ("At < '2026-01-01T10:00:00.5Z'", ["wf-a", "wf-b"]),
        ("At != '2026-01-01T10:00:00Z'", ["wf-f"]),
        ("At STARTS_WITH '2026-01-01T'", ["wf-a", "wf-b"]),
        # missing attributes, lists and objects match nothing
        ("Missing != 'x'", []),
        ("Tags = 'x'", []),
        ("Nested = 1", []),
        # combined, and with record columns
        ("CustomerId = 'c-1' AND Amount > 100 AND Vip = true", ["wf-a"]),
        ("ExecutionStatus = 'Completed' AND Vip = false", ["wf-b"]),
        ("ExecutionStatus != 'Completed' AND CustomerId STARTS_WITH 'c'", ["wf-a", "wf-c", "wf-f"]),
    ],
)
async def test_search_attribute_filters(store: HistoryStore, query: str, expected: list[str]) -> None:
    await _seed(store)
    assert await _ids(store, query) == expected


async def test_column_conditions(store: HistoryStore) -> None:
    await _seed(store)
    # start times: a=105, b=104, c=103, d=102, e=101, f=100
    start = datetime.fromtimestamp(102, UTC).isoformat()
    assert await _ids(store, f"StartTime > '{start}'") == ["wf-a", "wf-b", "wf-c"]
    assert await _ids(store, f"StartTime >= '{start}'") == ["wf-a", "wf-b", "wf-c", "wf-d"]
    assert await _ids(store, f"StartTime = '{start}'") == ["wf-d"]
    assert await _ids(store, f"StartTime != '{start}' AND StartTime <= '1970-01-01T00:01:42Z'") == ["wf-e", "wf-f"]
    # close time: open runs have none, so they match no comparison on it, not even !=
    close = datetime.fromtimestamp(2500, UTC).isoformat()
    assert await _ids(store, f"CloseTime < '{close}'") == ["wf-b"]
    assert await _ids(store, f"CloseTime != '{close}'") == ["wf-b", "wf-d"]
    assert await _ids(store, "WorkflowId STARTS_WITH 'wf-' AND WorkflowId != 'wf-c'") == [
        "wf-a",
        "wf-b",
        "wf-d",
        "wf-e",
        "wf-f",
    ]
    assert await _ids(store, "RunId = 'run-wf-e'") == ["wf-e"]
    assert await _ids(store, "HistoryLength >= 40") == ["wf-d", "wf-e", "wf-f"]
    assert await _ids(store, "WorkflowType = 'BookTrip' AND TaskQueue = 'trips' AND HistoryLength < 20") == ["wf-a"]
    # a column twice must hold twice (no silent overwrite)
    assert await _ids(store, "WorkflowId = 'wf-a' AND WorkflowId = 'wf-b'") == []


async def test_filters_stay_in_their_namespace(store: HistoryStore) -> None:
    await _seed(store)
    filters = parse_list_query("CustomerId = 'c-1'")
    assert [r.workflow_id for r in (await store.list_visibility("other", filters=filters)).records] == ["wf-other"]
    assert await store.count_visibility("nobody", filters=filters) == 0


async def test_raw_triples_and_typed_values(store: HistoryStore) -> None:
    """The structure other code passes without the parser: lists or tuples, datetime objects."""
    await _seed(store)
    ten = datetime(2026, 1, 1, 11, 0, tzinfo=timezone(timedelta(hours=1)))
    filters: dict[str, Any] = {
        "status": "Running",
        "conditions": [["history_length", "<=", 60]],
        "search_attributes": [("At", "=", ten), ["Amount", ">", 1]],
    }
    page = await store.list_visibility(NS, filters=filters)
    assert [r.workflow_id for r in page.records] == ["wf-a"]
    assert page.records[0].search_attributes == ATTRIBUTES["wf-a"]
    assert await store.count_visibility(NS, filters=filters) == 1


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({"search_attributes": [("Bad-Name", "=", "x")]}, "letters, digits"),
        ({"search_attributes": [("Vip", ">", True)]}, "only = and !="),
        ({"search_attributes": [("Amount", "starts_with", 1)]}, "starts_with needs a str"),
        ({"search_attributes": [("At", "=", datetime(2026, 1, 1))]}, "time zone"),
        ({"search_attributes": [("Amount", "=", float("nan"))]}, "must be a str"),
        ({"search_attributes": [("Amount", "=", [1])]}, "must be a str"),
        ({"search_attributes": [("Amount", "~", 1)]}, "op must be one of"),
        ({"search_attributes": [("Amount", "=")]}, r"\(name, op, value\)"),
        ({"search_attributes": "Amount = 1"}, "must be a list"),
        ({"conditions": [("colour", "=", "red")]}, "unknown column"),
        ({"conditions": [("start_time", "=", "2026-01-01")]}, "cannot be compared"),
        ({"conditions": [("status", "=", 1)]}, "cannot be compared"),
        ({"conditions": [("close_time", "starts_with", 1.0)]}, "cannot be compared"),
    ],
)
async def test_bad_filters_are_refused(store: HistoryStore, filters: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        await store.list_visibility(NS, filters=filters)
    with pytest.raises(ValueError, match=message):
        await store.count_visibility(NS, filters=filters)
