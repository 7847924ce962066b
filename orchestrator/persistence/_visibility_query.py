"""The list API's filters, order and page tokens, shared by every backend.

Order: newest first (``start_time`` descending), then ``run_id`` and
``workflow_id`` ascending so that the order is total and a page token names
one exact position. A page token is opaque to callers: URL-safe base64 of the
sort key of the last record on the page.

Time filters are half-open: ``start_time_after <= start_time < start_time_before``.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from orchestrator.persistence.base import VisibilityRecord

EQUALITY_FILTERS = ("workflow_type", "status", "workflow_id", "task_queue")
TIME_FILTERS = ("start_time_after", "start_time_before")

SortKey = tuple[float, str, str]
"""``(-start_time, run_id, workflow_id)``: ascending order of this key is list order."""


def sort_key(record: VisibilityRecord) -> SortKey:
    return (-record.start_time, record.run_id, record.workflow_id)


def page_token(record: VisibilityRecord) -> str:
    raw = json.dumps([record.start_time, record.run_id, record.workflow_id]).encode()
    return base64.urlsafe_b64encode(raw).decode()


@dataclass(frozen=True)
class VisibilityQuery:
    """Validated arguments of ``list_visibility`` / ``count_visibility``."""

    namespace: str
    equals: dict[str, str]
    """Column name -> required value, for the keys in :data:`EQUALITY_FILTERS`."""
    start_time_after: float | None = None
    start_time_before: float | None = None
    after: SortKey | None = None
    """Only records whose :func:`sort_key` is greater (from the page token)."""

    @classmethod
    def parse(
        cls, namespace: str, filters: dict[str, Any] | None, next_page_token: str | None = None
    ) -> VisibilityQuery:
        """Validate ``filters`` and the token; raises :class:`ValueError` naming the bad one."""
        filters = filters or {}
        unknown = set(filters) - set(EQUALITY_FILTERS) - set(TIME_FILTERS)
        if unknown:
            raise ValueError(
                f"unknown visibility filter(s) {sorted(unknown)}; "
                f"use {', '.join(EQUALITY_FILTERS + TIME_FILTERS)}"
            )
        equals: dict[str, str] = {}
        for name in EQUALITY_FILTERS:
            if name in filters:
                value = filters[name]
                if not isinstance(value, str):
                    raise ValueError(f"visibility filter {name!r} must be a string, not {value!r}")
                equals[name] = str(value)
        times: dict[str, float | None] = {}
        for name in TIME_FILTERS:
            value = filters.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise ValueError(f"visibility filter {name!r} must be epoch seconds, not {value!r}")
            times[name] = None if value is None else float(value)
        return cls(
            namespace,
            equals,
            times["start_time_after"],
            times["start_time_before"],
            _parse_token(next_page_token),
        )

    def matches(self, record: VisibilityRecord) -> bool:
        """True when ``record`` passes the filters (the page position aside)."""
        if record.namespace != self.namespace:
            return False
        if any(getattr(record, name) != value for name, value in self.equals.items()):
            return False
        if self.start_time_after is not None and record.start_time < self.start_time_after:
            return False
        return self.start_time_before is None or record.start_time < self.start_time_before


def check_page_size(page_size: int) -> None:
    if page_size < 1:
        raise ValueError(f"page_size must be at least 1, not {page_size}")


def _parse_token(token: str | None) -> SortKey | None:
    if token is None:
        return None
    try:
        start_time, run_id, workflow_id = json.loads(base64.urlsafe_b64decode(token.encode()))
        if not isinstance(run_id, str) or not isinstance(workflow_id, str):
            raise TypeError
        return (-float(start_time), run_id, workflow_id)
    except (ValueError, TypeError, binascii.Error) as exc:
        raise ValueError(
            f"invalid next_page_token {token!r}: pass back the token of the previous page unchanged"
        ) from exc
