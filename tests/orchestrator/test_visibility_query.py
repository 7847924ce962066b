"""The list-filter language: what parses to which store filters, and what is refused and how."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from orchestrator.errors import InvalidArgumentError
from orchestrator.persistence._visibility_query import VisibilityQuery
from orchestrator.visibility.query import parse_list_query, quote

T0 = datetime(2026, 1, 1, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", {}),
        ("   ", {}),
        ("WorkflowType = 'Trip'", {"conditions": [("workflow_type", "=", "Trip")]}),
        (
            "WorkflowType = 'Trip' AND ExecutionStatus = 'Running'",
            {"conditions": [("workflow_type", "=", "Trip"), ("status", "=", "Running")]},
        ),
        # keywords are case-insensitive, statuses too (made canonical), "<>" is "!="
        ("ExecutionStatus <> 'timedout' and TaskQueue='q'", {"conditions": [("status", "!=", "TimedOut"), ("task_queue", "=", "q")]}),
        ("WorkflowId STARTS_WITH 'order-'", {"conditions": [("workflow_id", "starts_with", "order-")]}),
        ("WorkflowId starts_with \"o\"", {"conditions": [("workflow_id", "starts_with", "o")]}),
        ("RunId = 'r'", {"conditions": [("run_id", "=", "r")]}),
        ("HistoryLength > 100", {"conditions": [("history_length", ">", 100)]}),
        # datetimes: ISO with or without time (for built-in time keys), zones, no zone = UTC
        ("StartTime > '2026-01-01T00:00:00Z'", {"conditions": [("start_time", ">", T0)]}),
        ("StartTime >= '2026-01-01'", {"conditions": [("start_time", ">=", T0)]}),
        ("CloseTime < '2026-01-01T02:00:00+02:00'", {"conditions": [("close_time", "<", T0)]}),
        ("ExecutionTime <= '2026-01-01 00:00'", {"conditions": [("execution_time", "<=", T0)]}),
        # search attributes: the literal's type is the comparison's type
        ("CustomerId = 'c-1'", {"search_attributes": [("CustomerId", "=", "c-1")]}),
        ("Amount > 100", {"search_attributes": [("Amount", ">", 100)]}),
        ("Amount >= -2.5", {"search_attributes": [("Amount", ">=", -2.5)]}),
        ("Amount<1e3", {"search_attributes": [("Amount", "<", 1000.0)]}),
        ("Vip = true", {"search_attributes": [("Vip", "=", True)]}),
        ("Vip != FALSE", {"search_attributes": [("Vip", "!=", False)]}),
        ("Vip = 'true'", {"search_attributes": [("Vip", "=", "true")]}),
        ("Amount = '100'", {"search_attributes": [("Amount", "=", "100")]}),
        (
            "PaidAt > '2026-01-01T00:00:00Z'",
            {"search_attributes": [("PaidAt", ">", datetime(2026, 1, 1, tzinfo=UTC))]},
        ),
        # a date without a time of day stays a string for search attributes (it may be a keyword)
        ("Day = '2026-01-01'", {"search_attributes": [("Day", "=", "2026-01-01")]}),
        ("Ref STARTS_WITH '2026-01-01T'", {"search_attributes": [("Ref", "starts_with", "2026-01-01T")]}),
        ("Note = 'it''s'", {"search_attributes": [("Note", "=", "it's")]}),
        ('Note = "say ""hi"""', {"search_attributes": [("Note", "=", 'say "hi"')]}),
        ("Note = 'a AND b'", {"search_attributes": [("Note", "=", "a AND b")]}),
        ("Note = ''", {"search_attributes": [("Note", "=", "")]}),
        (
            "WorkflowType = 'T' AND CustomerId = 'c' AND Amount > 1",
            {
                "conditions": [("workflow_type", "=", "T")],
                "search_attributes": [("CustomerId", "=", "c"), ("Amount", ">", 1)],
            },
        ),
    ],
)
def test_good_queries(query: str, expected: dict[str, Any]) -> None:
    filters = parse_list_query(query)
    assert filters == expected
    VisibilityQuery.parse("default", filters)  # every parse is a valid store filter


@pytest.mark.parametrize(
    ("query", "message", "hint"),
    [
        # unterminated quotes
        ("CustomerId = 'c-1", "unterminated string starting at position 14", "Close the string with '"),
        ('CustomerId = "c-1', "unterminated string", 'Close the string with "'),
        ("Note = 'it''s", "unterminated string", "double it"),
        # unknown operators
        ("Amount == 1", "unknown operator '=='", "Use =, !=, >, >=, <, <= or STARTS_WITH"),
        ("Amount ~ 1", "unknown operator '~'", "STARTS_WITH"),
        ("CustomerId LIKE 'c%'", "unknown operator 'LIKE'", "STARTS_WITH"),
        ("CustomerId IN ('a', 'b')", "unknown operator 'IN'", ""),
        ("Amount BETWEEN 1 AND 2", "unknown operator 'BETWEEN'", ""),
        ("CustomerId IS NULL", "unknown operator 'IS'", ""),
        ("CustomerId", "CustomerId needs an operator and a value", ""),
        # type mismatches
        ("StartTime > 5", "type mismatch: StartTime is a datetime", "2026-01-01T00:00:00Z"),
        ("StartTime > 'yesterday'", "type mismatch: StartTime is a datetime", ""),
        ("CloseTime STARTS_WITH '2026'", "with STARTS_WITH", ""),
        ("WorkflowType = 5", "type mismatch: WorkflowType is a keyword", "WorkflowType = '5'"),
        ("WorkflowId = true", "type mismatch: WorkflowId is a keyword", ""),
        ("HistoryLength > '5'", "type mismatch: HistoryLength is an int", ""),
        ("Vip > true", "true/false support only = and !=", "Vip = true"),
        ("Amount STARTS_WITH 1", "STARTS_WITH needs a quoted string", ""),
        ("ExecutionStatus = 'Runing'", "is not a status", "'Running'"),
        ("ExecutionStatus > 'Running'", "supports only = and !=", ""),
        ("Amount > 1e999", "out of range", ""),
        ("Amount > 99999999999999999999", "out of range", ""),
        # unsupported syntax
        ("A = 1 OR B = 2", "OR is not supported", "run one query per alternative"),
        ("A = 1 ORDER BY StartTime", "ORDER BY is not supported", "newest first"),
        ("(A = 1)", "parentheses are not supported", ""),
        ("A = 1 AND (B = 2)", "parentheses are not supported", ""),
        ("NOT A = 1", "NOT is not supported", "!="),
        ("A = null", "null values are not supported", ""),
        # structure
        ("A = 1 B = 2", "expected AND or the end of the query at position 7, found 'B'", ""),
        ("A = 1 AND", "expected a key such as WorkflowType at the end of the query", ""),
        ("AND A = 1", "expected a key at position 1", ""),
        ("= 1", "expected a key", ""),
        ("A =", "expected a value after A = at the end of the query", ""),
        ("A = bare", "expected a value after A = at position 5, found 'bare'", "Quote strings"),
        ("A = 1;", "unexpected character ';' at position 6", ""),
        ("workflowtype = 'x'", "did you mean WorkflowType?", "case-sensitive"),
        ("executionSTATUS = 'Running'", "did you mean ExecutionStatus?", ""),
    ],
)
def test_bad_queries_say_what_and_where(query: str, message: str, hint: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        parse_list_query(query)
    err = caught.value
    assert err.code == "invalid_argument" and err.http_status == 400
    assert message in err.message, err.message
    assert hint in err.hint, err.hint
    assert err.message.startswith("list query: ")


def test_quote_round_trips() -> None:
    for text in ["plain", "it's", "''", "a AND b", 'say "hi"', ""]:
        assert parse_list_query(f"Note = {quote(text)}") == {"search_attributes": [("Note", "=", text)]}
