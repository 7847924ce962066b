"""``@activity.defn`` and the definition it attaches to a function."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar, overload

from sagas.converter import parameter_hints, return_hint

CallableT = TypeVar("CallableT", bound=Callable[..., Any])

NAME_ATTR = "__sagas_activity_name__"
DEFINITION_ATTR = "__sagas_activity_definition__"


def type_hints(fn: Callable[..., Any]) -> tuple[list[Any], Any]:
    """(positional parameter hints, return hint) of a function, bound method or callable instance."""
    if inspect.isfunction(fn) or inspect.ismethod(fn):
        return parameter_hints(fn), return_hint(fn)
    call = type(fn).__call__  # a callable instance: its class's __call__, minus self
    return parameter_hints(call, skip_self=True), return_hint(call)


def is_async_callable(fn: Callable[..., Any]) -> bool:
    """True when calling ``fn`` returns a coroutine (functions, methods, callable instances)."""
    if inspect.iscoroutinefunction(fn):
        return True
    return not inspect.isroutine(fn) and inspect.iscoroutinefunction(type(fn).__call__)


@dataclass(frozen=True)
class ActivityDefinition:
    """What the worker needs to run an activity: its name, function and type hints.

    Example::

        defn = ActivityDefinition.from_callable(book_car)   # None when not an @activity.defn
        print(defn.name, defn.is_async)
    """

    name: str
    fn: Callable[..., Any]
    is_async: bool
    no_thread_cancel_exception: bool = False
    arg_types: list[Any] = field(default_factory=list)
    ret_type: Any = None

    @staticmethod
    def from_callable(fn: Callable[..., Any]) -> ActivityDefinition | None:
        """The definition of a decorated activity (bound to ``fn`` itself), or None."""
        defn = getattr(fn, DEFINITION_ATTR, None)
        if not isinstance(defn, ActivityDefinition):
            return None
        if defn.fn is fn:
            return defn
        # A bound method (``obj.my_activity``) shares the function's attribute;
        # call it through the bound object and drop ``self`` from the hints.
        arg_types, ret_type = type_hints(fn)
        return replace(defn, fn=fn, arg_types=arg_types, ret_type=ret_type)

    @staticmethod
    def must_from_callable(fn: Callable[..., Any]) -> ActivityDefinition:
        """Like :meth:`from_callable` but raises a ``TypeError`` naming the function."""
        defn = ActivityDefinition.from_callable(fn)
        if defn is None:
            name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", repr(fn))
            raise TypeError(
                f"activity {name} is not decorated with @activity.defn; "
                "decorate it so the worker knows its name and types"
            )
        return defn


@overload
def defn(fn: CallableT) -> CallableT: ...


@overload
def defn(
    *, name: str | None = None, no_thread_cancel_exception: bool = False
) -> Callable[[CallableT], CallableT]: ...


def defn(
    fn: CallableT | None = None,
    *,
    name: str | None = None,
    no_thread_cancel_exception: bool = False,
) -> CallableT | Callable[[CallableT], CallableT]:
    """Mark a function (async or not) as an activity.

    The activity's type name is ``name`` or the function's ``__name__``.

    Example::

        @activity.defn
        async def book_car(req: CarRequest) -> str: ...

        @activity.defn(name="charge-card")
        def charge(req: Payment) -> Receipt: ...   # needs a Worker activity_executor

    Keyword-only parameters are refused: activity arguments travel as a
    positional JSON array.
    """

    def decorate(f: CallableT) -> CallableT:
        if not callable(f):
            raise TypeError(f"@activity.defn needs a function, got {f!r}")
        if getattr(f, DEFINITION_ATTR, None) is not None:
            raise ValueError(f"{getattr(f, '__name__', f)!r} is already decorated with @activity.defn")
        for param in inspect.signature(f).parameters.values():
            if param.kind == inspect.Parameter.KEYWORD_ONLY:
                raise TypeError(
                    f"activity {getattr(f, '__name__', f)!r} has keyword-only parameter {param.name!r}; "
                    "activities take positional arguments only"
                )
        activity_name = name or getattr(f, "__name__", None)
        if not activity_name:
            raise TypeError(f"activity {f!r} has no __name__; pass @activity.defn(name=...)")
        arg_types, ret_type = type_hints(f)
        definition = ActivityDefinition(
            name=activity_name,
            fn=f,
            is_async=is_async_callable(f),
            no_thread_cancel_exception=no_thread_cancel_exception,
            arg_types=arg_types,
            ret_type=ret_type,
        )
        setattr(f, NAME_ATTR, activity_name)
        setattr(f, DEFINITION_ATTR, definition)
        return f

    if fn is not None:
        return decorate(fn)
    return decorate
