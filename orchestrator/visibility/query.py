"""The list-filter language, in the spirit of Temporal's.

    WorkflowType = 'TripBooking' AND ExecutionStatus = 'Running' AND StartTime > '2026-01-01T00:00:00Z'
    CustomerId = 'c-1' AND Amount > 100 AND Vip = true

A query is clauses ``Key op value`` joined by ``AND`` (case-insensitive);
the empty query matches every run. :func:`parse_list_query` turns it into the
store filters documented in :mod:`orchestrator.persistence._visibility_query`.

Keys
====

================= ========= ===================================================
key               type      notes
================= ========= ===================================================
``WorkflowId``    keyword
``RunId``         keyword
``WorkflowType``  keyword
``TaskQueue``     keyword
``ExecutionStatus`` status  ``Running``, ``Completed``, ``Failed``, ``Canceled``,
                            ``Terminated``, ``ContinuedAsNew``, ``TimedOut``
                            (any case); ``=`` and ``!=`` only
``StartTime``     datetime
``CloseTime``     datetime  open runs have none, so match no ``CloseTime`` clause
``ExecutionTime`` datetime  when the run started executing (after a start delay)
``HistoryLength`` int
anything else     custom    a search attribute (letters, digits, ``_``)
================= ========= ===================================================

Keys are case-sensitive; ``workflowtype`` is refused with a "did you mean".

Values
======

* ``'text'`` or ``"text"``: a string; double the quote to include it (``'it''s'``).
  A quoted ISO-8601 date-time *with a time of day*
  (``'2026-01-01T10:00:00Z'``, ``'2026-01-01 10:00'``; no zone means UTC) is
  compared as an instant. For the datetime keys above a plain date
  (``'2026-01-01'``, midnight UTC) is accepted too.
* ``100``, ``-2.5``, ``1e3``: a number (unquoted), for int and double attributes.
* ``true`` / ``false`` (unquoted, any case): a bool, with ``=`` and ``!=`` only.

The value's type chooses the comparison; a run whose attribute has another
type (or no such attribute) does not match, not even with ``!=``. There is no
registry of attribute types: ``Amount > 100`` matches runs whose ``Amount`` is
a JSON number; ``Amount = '100'`` matches those where it is the string ``"100"``.
Text attributes are compared like keywords (exactly, or by prefix): there is
no full-text search.

Operators
=========

``=``, ``!=`` (or ``<>``), ``>``, ``>=``, ``<``, ``<=`` and ``STARTS_WITH``
(strings: ``WorkflowId STARTS_WITH 'order-'``).

Not supported (each is a clear :class:`~orchestrator.errors.InvalidArgumentError`):
``OR``, ``NOT``, parentheses, ``IN``, ``BETWEEN``, ``IS NULL``, ``LIKE`` and
``ORDER BY`` (runs are always listed newest first). Run one query per
alternative instead of ``OR``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from orchestrator.api.enums import WorkflowExecutionStatus
from orchestrator.errors import InvalidArgumentError
from orchestrator.persistence._visibility_query import has_time_of_day, parse_iso_datetime

__all__ = ["BUILT_IN_KEYS", "parse_list_query", "quote"]

BUILT_IN_KEYS: dict[str, tuple[str, str]] = {
    "WorkflowId": ("workflow_id", "keyword"),
    "RunId": ("run_id", "keyword"),
    "WorkflowType": ("workflow_type", "keyword"),
    "TaskQueue": ("task_queue", "keyword"),
    "ExecutionStatus": ("status", "status"),
    "StartTime": ("start_time", "datetime"),
    "CloseTime": ("close_time", "datetime"),
    "ExecutionTime": ("execution_time", "datetime"),
    "HistoryLength": ("history_length", "int"),
}
"""Query key -> (visibility column, type)."""

_SYMBOL_OPS = {"=": "=", "!=": "!=", "<>": "!=", ">": ">", ">=": ">=", "<": "<", "<=": "<="}
_OPS_HINT = "Use =, !=, >, >=, <, <= or STARTS_WITH, e.g. CustomerId = 'c-1' or Amount > 100."
_SYNTAX_HINT = (
    "Write clauses like WorkflowType = 'TripBooking' joined by AND; quote strings and datetimes, "
    "leave numbers and true/false unquoted."
)
_STATUSES = {s.value.lower(): s.value for s in WorkflowExecutionStatus}
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OP_CHARS = re.compile(r"[=!<>~^|&]+")


@dataclass(frozen=True)
class _Token:
    kind: str
    """``name``, ``string``, ``number``, ``op``, ``paren``, ``punct`` or ``end``."""
    text: str
    pos: int
    value: Any = None


def quote(value: str) -> str:
    """``value`` as a quoted string literal of the language.

    >>> quote("it's")
    "'it''s'"
    """
    return "'" + value.replace("'", "''") + "'"


def parse_list_query(query: str) -> dict[str, Any]:
    """Turn a list query into store filters (``conditions`` and ``search_attributes``).

    >>> parse_list_query("WorkflowType = 'Trip' AND Amount > 100")
    {'conditions': [('workflow_type', '=', 'Trip')], 'search_attributes': [('Amount', '>', 100)]}

    Raises :class:`~orchestrator.errors.InvalidArgumentError` saying what is
    wrong, where, and how to write it instead.
    """
    tokens = _tokenize(query)
    conditions: list[tuple[str, str, Any]] = []
    attributes: list[tuple[str, str, Any]] = []
    i = 0
    if tokens[0].kind == "end":
        return {}
    while True:
        # Each helper raises on an "end" token, so the next index always exists.
        key = tokens[i]
        _expect_key(key)
        op_token = tokens[i + 1]
        op = _operator(key, op_token)
        value_token = tokens[i + 2]
        value = _value(key, op_token, value_token)
        if key.text in BUILT_IN_KEYS:
            conditions.append(_built_in(key.text, op, value, value_token))
        else:
            attributes.append(_attribute(key.text, op, value, value_token))
        i += 3
        nxt = tokens[i]
        if nxt.kind == "end":
            break
        if nxt.kind == "name" and nxt.text.upper() == "AND":
            i += 1
            continue
        _refuse_connector(nxt)
    out: dict[str, Any] = {}
    if conditions:
        out["conditions"] = conditions
    if attributes:
        out["search_attributes"] = attributes
    return out


def _error(message: str, hint: str = _SYNTAX_HINT) -> InvalidArgumentError:
    return InvalidArgumentError(f"list query: {message}", hint=hint)


def _tokenize(query: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(query)
    while i < n:
        ch = query[i]
        if ch.isspace():
            i += 1
        elif ch in "'\"":
            start, i, chars = i, i + 1, []
            while True:
                if i >= n:
                    raise _error(
                        f"unterminated string starting at position {start + 1}: {query[start:start + 30]!r}",
                        hint=f"Close the string with {ch}; to put {ch} inside it, double it ({ch}{ch}).",
                    )
                if query[i] == ch:
                    if i + 1 < n and query[i + 1] == ch:
                        chars.append(ch)
                        i += 2
                        continue
                    i += 1
                    break
                chars.append(query[i])
                i += 1
            tokens.append(_Token("string", query[start:i], start, "".join(chars)))
        elif (m := _NUMBER.match(query, i)) and (ch.isdigit() or ch in "+-."):
            text = m.group()
            value: int | float = int(text) if re.fullmatch(r"[+-]?\d+", text) else float(text)
            if not (math.isfinite(value) and -(2**63) <= value < 2**63):
                raise _error(f"the number {text} at position {i + 1} is out of range (64-bit)")
            tokens.append(_Token("number", text, i, value))
            i = m.end()
        elif m := _NAME.match(query, i):
            tokens.append(_Token("name", m.group(), i))
            i = m.end()
        elif m := _OP_CHARS.match(query, i):
            tokens.append(_Token("op", m.group(), i))
            i = m.end()
        elif ch in "()":
            tokens.append(_Token("paren", ch, i))
            i += 1
        elif ch == ",":  # only ever wrong, but reported where the parser meets it (e.g. after IN)
            tokens.append(_Token("punct", ch, i))
            i += 1
        else:
            raise _error(f"unexpected character {ch!r} at position {i + 1}")
    tokens.append(_Token("end", "", n))
    return tokens


def _where(token: _Token) -> str:
    return "at the end of the query" if token.kind == "end" else f"at position {token.pos + 1}"


def _refuse_connector(token: _Token) -> None:
    word = token.text.upper()
    if token.kind == "name" and word == "OR":
        raise _error(
            f"OR is not supported ({_where(token)})",
            hint="Clauses can only be joined by AND; run one query per alternative.",
        )
    if token.kind == "name" and word == "ORDER":
        raise _error(
            f"ORDER BY is not supported ({_where(token)})",
            hint="Runs are always listed newest first (StartTime descending).",
        )
    if token.kind == "paren":
        raise _error(f"parentheses are not supported ({_where(token)})", hint="Join clauses with AND only.")
    raise _error(f"expected AND or the end of the query {_where(token)}, found {token.text!r}")


def _expect_key(token: _Token) -> None:
    if token.kind == "name" and token.text.upper() in ("OR", "AND", "ORDER"):
        raise _error(f"expected a key {_where(token)}, found {token.text!r}")
    if token.kind == "name" and token.text.upper() == "NOT":
        raise _error(f"NOT is not supported ({_where(token)})", hint="Use != instead, e.g. ExecutionStatus != 'Running'.")
    if token.kind == "paren":
        raise _error(f"parentheses are not supported ({_where(token)})", hint="Join clauses with AND only.")
    if token.kind != "name":
        found = "nothing" if token.kind == "end" else repr(token.text)
        raise _error(f"expected a key such as WorkflowType {_where(token)}, found {found}")
    if token.text not in BUILT_IN_KEYS:
        for known in BUILT_IN_KEYS:
            if known.lower() == token.text.lower():
                raise _error(
                    f"unknown key {token.text!r}: did you mean {known}?",
                    hint="Keys are case-sensitive.",
                )


def _operator(key: _Token, token: _Token) -> str:
    if token.kind == "op" and token.text in _SYMBOL_OPS:
        return _SYMBOL_OPS[token.text]
    if token.kind == "name" and token.text.upper() == "STARTS_WITH":
        return "starts_with"
    if token.kind == "end":
        raise _error(f"{key.text} needs an operator and a value", hint=_OPS_HINT)
    raise _error(f"unknown operator {token.text!r} after {key.text} {_where(token)}", hint=_OPS_HINT)


def _value(key: _Token, op_token: _Token, token: _Token) -> Any:
    if token.kind in ("string", "number"):
        return token.value
    if token.kind == "name" and token.text.lower() in ("true", "false"):
        return token.text.lower() == "true"
    if token.kind == "name" and token.text.lower() == "null":
        raise _error(f"null values are not supported ({key.text} {op_token.text} null)",
                     hint="IS NULL is not supported; a run without the attribute matches no clause on it.")
    found = "nothing" if token.kind == "end" else repr(token.text)
    raise _error(
        f"expected a value after {key.text} {op_token.text} {_where(token)}, found {found}",
        hint="Quote strings and datetimes ('c-1', '2026-01-01T00:00:00Z'); write numbers and true/false bare.",
    )


def _describe(value: Any, token: _Token) -> str:
    if isinstance(value, bool):
        return f"the bool {token.text}"
    if isinstance(value, str):
        return f"the string {token.text}"
    return f"the number {token.text}"


def _built_in(key: str, op: str, value: Any, token: _Token) -> tuple[str, str, Any]:
    column, kind = BUILT_IN_KEYS[key]
    if kind == "keyword":
        if not isinstance(value, str):
            raise _error(
                f"type mismatch: {key} is a keyword, compare it with a quoted string, not {_describe(value, token)}",
                hint=f"Write {key} = {quote(str(token.text))}.",
            )
        return (column, op, value)
    if kind == "status":
        if op not in ("=", "!="):
            raise _error(f"{key} supports only = and != (got {op})")
        status = _STATUSES.get(value.lower()) if isinstance(value, str) else None
        if status is None:
            raise _error(
                f"{key} {token.text} is not a status",
                hint=f"Use one of {', '.join(repr(s) for s in _STATUSES.values())}.",
            )
        return (column, op, status)
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int | float) or op == "starts_with":
            raise _error(f"type mismatch: {key} is an int, compare it with a bare number, not {_describe(value, token)}")
        return (column, op, value)
    # datetime
    when = parse_iso_datetime(value) if isinstance(value, str) else None
    if when is None or op == "starts_with":
        raise _error(
            f"type mismatch: {key} is a datetime, compare it with a quoted ISO-8601 time, "
            f"not {_describe(value, token)}" + (" with STARTS_WITH" if op == "starts_with" else ""),
            hint=f"Write {key} > '2026-01-01T00:00:00Z' (no zone means UTC).",
        )
    return (column, op, when.timestamp())


def _attribute(name: str, op: str, value: Any, token: _Token) -> tuple[str, str, Any]:
    if isinstance(value, bool) and op not in ("=", "!="):
        raise _error(
            f"type mismatch: {name} {op} {token.text}: true/false support only = and !=",
            hint=f"Write {name} = {token.text.lower()} or {name} != {token.text.lower()}.",
        )
    if op == "starts_with" and not isinstance(value, str):
        raise _error(f"type mismatch: STARTS_WITH needs a quoted string, not {_describe(value, token)}")
    if isinstance(value, str) and op != "starts_with" and has_time_of_day(value):
        when: datetime | None = parse_iso_datetime(value)
        return (name, op, when)
    return (name, op, value)
