"""Types shared by workflows, activities and the client (mirrors ``temporalio.common``).

>>> from datetime import timedelta
>>> RetryPolicy(initial_interval=timedelta(seconds=2), maximum_attempts=5).to_spec().initial_interval
2.0
>>> KEY = SearchAttributeKey.for_keyword("CustomerId")
>>> KEY.value_set("c-42")
SearchAttributeUpdate(key=SearchAttributeKey(name='CustomerId', indexed_value_type='Keyword'), value='c-42')
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

from orchestrator.api.common import RetryPolicySpec
from orchestrator.api.enums import WorkflowIDReusePolicy

__all__ = [
    "RetryPolicy",
    "SearchAttributeKey",
    "SearchAttributeUpdate",
    "WorkflowIDReusePolicy",
]

_V = TypeVar("_V")


@dataclass(frozen=True)
class RetryPolicy:
    """How an activity or workflow is retried.

    ``maximum_attempts = 0`` retries forever; ``maximum_interval`` defaults to
    100 x ``initial_interval``; errors whose type is in
    ``non_retryable_error_types`` (or raised as non-retryable
    :class:`~sagas.exceptions.ApplicationError`) are never retried.

    >>> RetryPolicy(maximum_attempts=3)
    RetryPolicy(initial_interval=datetime.timedelta(seconds=1), backoff_coefficient=2.0, maximum_interval=None, maximum_attempts=3, non_retryable_error_types=None)
    """

    initial_interval: timedelta = timedelta(seconds=1)
    backoff_coefficient: float = 2.0
    maximum_interval: timedelta | None = None
    maximum_attempts: int = 0
    non_retryable_error_types: Sequence[str] | None = None

    def __post_init__(self) -> None:
        if self.maximum_attempts < 0:
            raise ValueError("RetryPolicy.maximum_attempts must be 0 (unlimited) or more")
        if self.backoff_coefficient < 1:
            raise ValueError("RetryPolicy.backoff_coefficient must be at least 1")
        if self.initial_interval <= timedelta(0):
            raise ValueError("RetryPolicy.initial_interval must be positive")
        if self.maximum_interval is not None and self.maximum_interval < self.initial_interval:
            raise ValueError("RetryPolicy.maximum_interval must not be less than initial_interval")

    def to_spec(self) -> RetryPolicySpec:
        """The wire form (seconds as floats)."""
        return RetryPolicySpec(
            initial_interval=self.initial_interval.total_seconds(),
            backoff_coefficient=self.backoff_coefficient,
            maximum_interval=self.maximum_interval.total_seconds()
            if self.maximum_interval is not None
            else None,
            maximum_attempts=self.maximum_attempts,
            non_retryable_error_types=tuple(self.non_retryable_error_types or ()),
        )

    @staticmethod
    def from_spec(spec: RetryPolicySpec) -> RetryPolicy:
        """Build a policy from its wire form."""
        return RetryPolicy(
            initial_interval=timedelta(seconds=spec.initial_interval),
            backoff_coefficient=spec.backoff_coefficient,
            maximum_interval=timedelta(seconds=spec.maximum_interval)
            if spec.maximum_interval is not None
            else None,
            maximum_attempts=spec.maximum_attempts,
            non_retryable_error_types=list(spec.non_retryable_error_types) or None,
        )


@dataclass(frozen=True)
class SearchAttributeKey(Generic[_V]):
    """A typed search attribute name; build one with the ``for_*`` constructors.

    >>> SearchAttributeKey.for_int("Priority").name
    'Priority'
    """

    name: str
    indexed_value_type: str

    @staticmethod
    def for_text(name: str) -> SearchAttributeKey[str]:
        """A full-text attribute."""
        return SearchAttributeKey(name, "Text")

    @staticmethod
    def for_keyword(name: str) -> SearchAttributeKey[str]:
        """An exact-match string attribute."""
        return SearchAttributeKey(name, "Keyword")

    @staticmethod
    def for_int(name: str) -> SearchAttributeKey[int]:
        """An integer attribute."""
        return SearchAttributeKey(name, "Int")

    @staticmethod
    def for_float(name: str) -> SearchAttributeKey[float]:
        """A floating-point attribute."""
        return SearchAttributeKey(name, "Double")

    @staticmethod
    def for_bool(name: str) -> SearchAttributeKey[bool]:
        """A boolean attribute."""
        return SearchAttributeKey(name, "Bool")

    @staticmethod
    def for_datetime(name: str) -> SearchAttributeKey[datetime]:
        """A timestamp attribute."""
        return SearchAttributeKey(name, "Datetime")

    @staticmethod
    def for_keyword_list(name: str) -> SearchAttributeKey[Sequence[str]]:
        """A list of exact-match strings."""
        return SearchAttributeKey(name, "KeywordList")

    def value_set(self, value: _V) -> SearchAttributeUpdate:
        """An update that sets this attribute (for ``workflow.upsert_search_attributes``)."""
        return SearchAttributeUpdate(self, value)

    def value_unset(self) -> SearchAttributeUpdate:
        """An update that removes this attribute."""
        return SearchAttributeUpdate(self, None)


@dataclass(frozen=True)
class SearchAttributeUpdate:
    """One change to a search attribute: set ``key`` to ``value`` (``None`` removes it).

    >>> from sagas.common import SearchAttributeKey
    >>> CUSTOMER = SearchAttributeKey.for_keyword("CustomerId")
    >>> update = CUSTOMER.value_set("c-42")
    >>> (update.key.name, update.value, CUSTOMER.value_unset().value)
    ('CustomerId', 'c-42', None)
    """

    key: SearchAttributeKey[Any]
    value: Any
