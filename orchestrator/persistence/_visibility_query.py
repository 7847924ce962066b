"""The list API's filters, order and page tokens, shared by every backend.

Order: newest first (``start_time`` descending), then ``run_id`` and
``workflow_id`` ascending so that the order is total and a page token names
one exact position. A page token is opaque to callers: URL-safe base64 of the
sort key of the last record on the page.

Filters (the ``filters`` argument of ``list_visibility`` / ``count_visibility``)
=================================================================================

A plain dict, so that every backend (memory, SQLite, MongoDB) reads the same
structure. All given filters must hold (AND); there is no OR.

``workflow_type``, ``status``, ``workflow_id``, ``task_queue``: str
    Equality on that column.
``start_time_after``, ``start_time_before``: float (epoch seconds)
    Half-open: ``start_time_after <= start_time < start_time_before``.
``conditions``: list of ``(column, op, value)``
    A comparison on a record column. ``column`` is one of
    :data:`STRING_COLUMNS` (``value`` a str), :data:`TIME_COLUMNS` (``value``
    epoch seconds, int or float) or :data:`NUMBER_COLUMNS` (``value`` an int
    or float). A NULL column (``close_time`` of an open run) matches nothing.
``search_attributes``: list of ``(name, op, value)``
    A comparison on the custom search attribute ``name`` (letters, digits and
    ``_``, not starting with a digit). The *type of* ``value`` says how to
    compare, and a stored value of another type never matches:

    ==================== ===================================================
    ``value``            matches a stored value that is
    ==================== ===================================================
    ``str``              a JSON string (code-point order for ``<``, ``>``)
    ``int`` / ``float``  a JSON number (not a bool); numeric order
    ``bool``             ``true`` / ``false`` (only ``=`` and ``!=``)
    ``datetime`` (aware) a string in ISO-8601 (see :func:`datetime_millis`),
                         compared as an instant to the millisecond
    ==================== ===================================================

    A run without the attribute matches no comparison, not even ``!=``.
    Lists and objects as stored values match nothing.

``op`` is one of :data:`OPS`: ``=``, ``!=``, ``>``, ``>=``, ``<``, ``<=`` and
``starts_with`` (a str ``value`` only: the stored string begins with it). Both
tuples and lists are accepted for the triples. :class:`VisibilityQuery`
validates all of this once and gives backends :class:`Condition` objects;
:meth:`VisibilityQuery.matches` is the reference semantics (the memory
backend uses it, and the contract suite holds SQL and MongoDB to it).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from orchestrator.persistence.base import VisibilityRecord

EQUALITY_FILTERS = ("workflow_type", "status", "workflow_id", "task_queue")
TIME_FILTERS = ("start_time_after", "start_time_before")
CONDITION_FILTERS = ("conditions", "search_attributes")

OPS = ("=", "!=", ">", ">=", "<", "<=", "starts_with")
"""Comparison operators of :class:`Condition`."""
STRING_COLUMNS = ("workflow_id", "run_id", "workflow_type", "task_queue", "status")
TIME_COLUMNS = ("start_time", "close_time", "execution_time")
NUMBER_COLUMNS = ("history_length",)

SearchValue = str | int | float | bool | datetime
"""A value a condition compares with."""

_ATTRIBUTE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ISO_DATETIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?(Z|[+-]\d{2}:\d{2})?)?"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SQLITE_JULIAN_EPOCH = 2440587.5
"""SQLite's ``julianday()`` of the Unix epoch (for SQL that turns ISO text into epoch milliseconds)."""

SortKey = tuple[float, str, str]
"""``(-start_time, run_id, workflow_id)``: ascending order of this key is list order."""


def sort_key(record: VisibilityRecord) -> SortKey:
    return (-record.start_time, record.run_id, record.workflow_id)


def page_token(record: VisibilityRecord) -> str:
    raw = json.dumps([record.start_time, record.run_id, record.workflow_id]).encode()
    return base64.urlsafe_b64encode(raw).decode()


def parse_iso_datetime(text: str) -> datetime | None:
    """``text`` as an aware datetime if it is ISO-8601, else None.

    Accepted: ``YYYY-MM-DD``, optionally followed by ``T`` (or a space) and
    ``HH:MM[:SS[.fraction]]`` and then ``Z`` or ``±HH:MM``; no zone means UTC.
    These are the forms SQLite's date functions read too, so every backend
    agrees on which stored strings are datetimes.

    >>> parse_iso_datetime("2026-01-01T10:00:00Z")
    datetime.datetime(2026, 1, 1, 10, 0, tzinfo=datetime.timezone.utc)
    >>> parse_iso_datetime("c-1") is None
    True
    """
    if _ISO_DATETIME.fullmatch(text) is None:
        return None
    try:
        parsed = datetime.fromisoformat(text.replace(" ", "T", 1) if len(text) > 10 else text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def has_time_of_day(text: str) -> bool:
    """True when ``text`` is an ISO-8601 datetime with a time part (``2026-01-01T10:00Z``, not ``2026-01-01``)."""
    m = _ISO_DATETIME.fullmatch(text)
    return m is not None and m.group(4) is not None and parse_iso_datetime(text) is not None


def to_millis(value: datetime) -> int:
    """Epoch milliseconds of an aware datetime, rounded half up (as SQLite's ``julianday`` does)."""
    delta = value - _EPOCH
    return delta.days * 86_400_000 + delta.seconds * 1000 + (delta.microseconds + 500) // 1000


def datetime_millis(value: Any) -> int | None:
    """Epoch milliseconds of a stored search attribute value, if it is an ISO-8601 string (see :func:`parse_iso_datetime`)."""
    if not isinstance(value, str):
        return None
    parsed = parse_iso_datetime(value)
    return None if parsed is None else to_millis(parsed)


@dataclass(frozen=True)
class Condition:
    """One validated comparison: ``field op value`` (see the module docstring)."""

    field: str
    op: str
    value: SearchValue

    @property
    def kind(self) -> str:
        """How to compare: ``"string"``, ``"number"``, ``"bool"`` or ``"datetime"``."""
        if isinstance(self.value, bool):
            return "bool"
        if isinstance(self.value, str):
            return "string"
        if isinstance(self.value, datetime):
            return "datetime"
        return "number"

    @property
    def operand(self) -> str | int | float | bool:
        """The value as a backend compares it: a datetime becomes epoch milliseconds."""
        return to_millis(self.value) if isinstance(self.value, datetime) else self.value

    def holds(self, stored: Any) -> bool:
        """The reference semantics: does a stored value (None: missing) satisfy this condition?"""
        kind = self.kind
        if kind == "datetime":
            stored = datetime_millis(stored)
            if stored is None:
                return False
        elif kind == "string":
            if not isinstance(stored, str):
                return False
        elif kind == "bool":
            if not isinstance(stored, bool):
                return False
        elif isinstance(stored, bool) or not isinstance(stored, int | float):
            return False
        return compare(stored, self.op, self.operand)


def compare(left: Any, op: str, right: Any) -> bool:
    """``left op right`` for one of :data:`OPS` (both sides already of one comparable type)."""
    if op == "=":
        return bool(left == right)
    if op == "!=":
        return bool(left != right)
    if op == ">":
        return bool(left > right)
    if op == ">=":
        return bool(left >= right)
    if op == "<":
        return bool(left < right)
    if op == "<=":
        return bool(left <= right)
    return isinstance(left, str) and left.startswith(str(right))


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
    conditions: tuple[Condition, ...] = ()
    """Comparisons on record columns (``field`` is a column name)."""
    search_attributes: tuple[Condition, ...] = ()
    """Comparisons on search attributes (``field`` is the attribute name)."""

    @classmethod
    def parse(
        cls, namespace: str, filters: dict[str, Any] | None, next_page_token: str | None = None
    ) -> VisibilityQuery:
        """Validate ``filters`` and the token; raises :class:`ValueError` naming the bad one."""
        filters = filters or {}
        unknown = set(filters) - set(EQUALITY_FILTERS) - set(TIME_FILTERS) - set(CONDITION_FILTERS)
        if unknown:
            raise ValueError(
                f"unknown visibility filter(s) {sorted(unknown)}; "
                f"use {', '.join(EQUALITY_FILTERS + TIME_FILTERS + CONDITION_FILTERS)}"
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
            if value is not None and not _is_number(value):
                raise ValueError(f"visibility filter {name!r} must be epoch seconds, not {value!r}")
            times[name] = None if value is None else float(value)
        return cls(
            namespace,
            equals,
            times["start_time_after"],
            times["start_time_before"],
            _parse_token(next_page_token),
            tuple(_column_condition(c) for c in _triples(filters, "conditions")),
            tuple(_attribute_condition(c) for c in _triples(filters, "search_attributes")),
        )

    def matches(self, record: VisibilityRecord) -> bool:
        """True when ``record`` passes the filters (the page position aside)."""
        if record.namespace != self.namespace:
            return False
        if any(getattr(record, name) != value for name, value in self.equals.items()):
            return False
        if self.start_time_after is not None and record.start_time < self.start_time_after:
            return False
        if self.start_time_before is not None and record.start_time >= self.start_time_before:
            return False
        for cond in self.conditions:
            stored = getattr(record, cond.field)
            if stored is None or not compare(stored, cond.op, cond.value):
                return False
        attributes = record.search_attributes
        return all(c.holds(attributes.get(c.field)) for c in self.search_attributes)


def check_page_size(page_size: int) -> None:
    if page_size < 1:
        raise ValueError(f"page_size must be at least 1, not {page_size}")


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


def _triples(filters: Mapping[str, Any], key: str) -> list[tuple[str, str, Any]]:
    items = filters.get(key) or []
    if not isinstance(items, list | tuple):
        raise ValueError(f"visibility filter {key!r} must be a list of (name, op, value), not {items!r}")
    out: list[tuple[str, str, Any]] = []
    for item in items:
        if not isinstance(item, list | tuple) or len(item) != 3:
            raise ValueError(f"each {key!r} entry must be (name, op, value), not {item!r}")
        name, op, value = item
        if not isinstance(name, str) or op not in OPS:
            raise ValueError(f"bad {key!r} entry {item!r}: op must be one of {', '.join(OPS)}")
        out.append((name, op, value))
    return out


def _column_condition(triple: tuple[str, str, Any]) -> Condition:
    column, op, value = triple
    if column in STRING_COLUMNS:
        ok = isinstance(value, str)
    elif column in TIME_COLUMNS or column in NUMBER_COLUMNS:
        ok = _is_number(value) and op != "starts_with"
    else:
        raise ValueError(
            f"unknown column {column!r} in 'conditions'; "
            f"use {', '.join(STRING_COLUMNS + TIME_COLUMNS + NUMBER_COLUMNS)}"
        )
    if not ok:
        raise ValueError(f"condition {triple!r}: {column} cannot be compared with {value!r} by {op!r}")
    return Condition(column, op, value)


def _attribute_condition(triple: tuple[str, str, Any]) -> Condition:
    name, op, value = triple
    if _ATTRIBUTE_NAME.fullmatch(name) is None:
        raise ValueError(f"search attribute name {name!r} must be letters, digits and '_' (not first)")
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"search attribute condition {triple!r}: the datetime needs a time zone")
    elif not isinstance(value, str) and not _is_number(value) and not isinstance(value, bool):
        raise ValueError(
            f"search attribute condition {triple!r}: the value must be a str, int, float, bool or datetime"
        )
    cond = Condition(name, op, value)
    if cond.kind == "bool" and op not in ("=", "!="):
        raise ValueError(f"search attribute condition {triple!r}: a bool supports only = and !=")
    if op == "starts_with" and cond.kind != "string":
        raise ValueError(f"search attribute condition {triple!r}: starts_with needs a str value")
    return cond


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
