"""A small list-filter language in the spirit of Temporal's.

    WorkflowType = 'TripBooking' AND ExecutionStatus = 'Running' AND StartTime > '2026-01-01T00:00:00Z'

Supported keys: ``WorkflowType``, ``WorkflowId``, ``ExecutionStatus``,
``TaskQueue`` (operator ``=``) and ``StartTime`` (``>``, ``>=``, ``<``,
``<=``), combined with ``AND``. Anything else is a clear
:class:`~orchestrator.errors.InvalidArgumentError`.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from orchestrator.errors import InvalidArgumentError

_CLAUSE = re.compile(r"\s*(\w+)\s*(=|>=|<=|>|<)\s*'((?:[^']|'')*)'\s*")
_EQUAL_KEYS = {"WorkflowType": "workflow_type", "WorkflowId": "workflow_id", "ExecutionStatus": "status", "TaskQueue": "task_queue"}


def parse_list_query(query: str) -> dict[str, Any]:
    """Turn a list query into store filters.

    >>> parse_list_query("WorkflowType = 'Trip' AND ExecutionStatus = 'Running'")
    {'workflow_type': 'Trip', 'status': 'Running'}
    """
    filters: dict[str, Any] = {}
    if not query.strip():
        return filters
    for part in re.split(r"\s+AND\s+", query.strip(), flags=re.IGNORECASE):
        m = _CLAUSE.fullmatch(part)
        if m is None:
            raise InvalidArgumentError(
                f"cannot parse {part!r} in list query",
                hint="Write clauses like WorkflowType = 'TripBooking' joined by AND; quote values with '.",
            )
        key, op, value = m.group(1), m.group(2), m.group(3).replace("''", "'")
        if key in _EQUAL_KEYS:
            if op != "=":
                raise InvalidArgumentError(f"{key} supports only '=' (got {op!r})")
            filters[_EQUAL_KEYS[key]] = value
        elif key == "StartTime":
            try:
                ts = datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
            except ValueError as exc:
                raise InvalidArgumentError(f"StartTime value {value!r} is not an ISO-8601 time") from exc
            if op in (">", ">="):
                filters["start_time_after"] = ts
            elif op in ("<", "<="):
                filters["start_time_before"] = ts
            else:
                raise InvalidArgumentError("StartTime supports >, >=, <, <=")
        else:
            raise InvalidArgumentError(
                f"unknown list query key {key!r}",
                hint="Known keys: WorkflowType, WorkflowId, ExecutionStatus, TaskQueue, StartTime.",
            )
    return filters
