"""Workflow class decorators and the definitions they build.

``@workflow.defn`` inspects the class once and stores a
:class:`WorkflowDefinition` on it; the runtime reads only that.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, ParamSpec, Protocol, TypeVar, overload

__all__ = [
    "QueryDefinition",
    "SignalDefinition",
    "UpdateDefinition",
    "UpdateMethod",
    "WorkflowDefinition",
    "defn",
    "get_definition",
    "init",
    "query",
    "run",
    "signal",
    "update",
]

_P = ParamSpec("_P")
_R = TypeVar("_R")
_R_co = TypeVar("_R_co", covariant=True)
_C = TypeVar("_C", bound=type)
_F = TypeVar("_F", bound=Callable[..., Any])

_DEFN_ATTR = "__sagas_workflow_definition__"
_RUN_ATTR = "__sagas_workflow_run__"
_INIT_ATTR = "__sagas_workflow_init__"
_SIGNAL_ATTR = "__sagas_signal_definition__"
_QUERY_ATTR = "__sagas_query_definition__"
_UPDATE_ATTR = "__sagas_update_definition__"
WORKFLOW_NAME_ATTR = "__sagas_workflow_name__"
"""Set on a workflow's run method, so ``execute_child_workflow(MyWorkflow.run)`` finds the type name."""


@dataclass
class SignalDefinition:
    """A signal handler: ``name`` is ``None`` for the dynamic handler (gets ``(name, args)``)."""

    name: str | None
    fn: Callable[..., Any]


@dataclass
class QueryDefinition:
    """A query handler (a plain, non-async function or method)."""

    name: str | None
    fn: Callable[..., Any]


@dataclass
class UpdateDefinition:
    """An update handler and its optional validator."""

    name: str | None
    fn: Callable[..., Any]
    validator: Callable[..., Any] | None = None


@dataclass
class WorkflowDefinition:
    """What the runtime needs to know about a workflow class."""

    name: str
    cls: type
    run_fn: Callable[..., Any]
    init_takes_args: bool = False
    signals: dict[str, SignalDefinition] = field(default_factory=dict)
    queries: dict[str, QueryDefinition] = field(default_factory=dict)
    updates: dict[str, UpdateDefinition] = field(default_factory=dict)
    dynamic_signal: SignalDefinition | None = None
    dynamic_query: QueryDefinition | None = None
    dynamic_update: UpdateDefinition | None = None
    failure_exception_types: tuple[type[BaseException], ...] = ()

    @staticmethod
    def from_class(cls: type, name: str) -> WorkflowDefinition:
        """Build the definition by scanning the class (and its bases) for decorated members."""
        run_fn: Callable[..., Any] | None = None
        init_takes_args = False
        defn_fields: dict[str, Any] = {"signals": {}, "queries": {}, "updates": {}}
        dynamic: dict[str, Any] = {}
        for klass in reversed(cls.__mro__):
            for attr, member in vars(klass).items():
                if getattr(member, _RUN_ATTR, False):
                    run_fn = member
                if attr == "__init__" and getattr(member, _INIT_ATTR, False):
                    init_takes_args = True
                for marker, kind in (
                    (_SIGNAL_ATTR, "signals"),
                    (_QUERY_ATTR, "queries"),
                    (_UPDATE_ATTR, "updates"),
                ):
                    d = getattr(member, marker, None)
                    if d is None:
                        continue
                    if d.name is None:
                        dynamic[kind] = d
                    else:
                        defn_fields[kind][d.name] = d
        if run_fn is None:
            raise ValueError(
                f"workflow class {cls.__qualname__} has no @workflow.run method; "
                "decorate its async entry point with @workflow.run"
            )
        if not inspect.iscoroutinefunction(run_fn):
            raise ValueError(f"@workflow.run method {cls.__qualname__}.{run_fn.__name__} must be 'async def'")
        return WorkflowDefinition(
            name=name,
            cls=cls,
            run_fn=run_fn,
            init_takes_args=init_takes_args,
            signals=defn_fields["signals"],
            queries=defn_fields["queries"],
            updates=defn_fields["updates"],
            dynamic_signal=dynamic.get("signals"),
            dynamic_query=dynamic.get("queries"),
            dynamic_update=dynamic.get("updates"),
        )


def get_definition(cls: Any) -> WorkflowDefinition:
    """The definition ``@workflow.defn`` stored on ``cls``; ``TypeError`` if it has none."""
    d = getattr(cls, _DEFN_ATTR, None) if isinstance(cls, type) else None
    # A subclass of a decorated class inherits the attribute: require its own.
    if not isinstance(d, WorkflowDefinition) or d.cls is not cls:
        raise TypeError(f"{cls!r} is not a workflow class; decorate it with @workflow.defn")
    return d


@overload
def defn(cls: _C) -> _C: ...


@overload
def defn(
    *,
    name: str | None = None,
    sandboxed: bool = True,
    failure_exception_types: Sequence[type[BaseException]] = (),
) -> Callable[[_C], _C]: ...


def defn(
    cls: _C | None = None,
    *,
    name: str | None = None,
    sandboxed: bool = True,
    failure_exception_types: Sequence[type[BaseException]] = (),
) -> _C | Callable[[_C], _C]:
    """Mark a class as a workflow; ``name`` defaults to the class name.

    ``sandboxed`` is accepted for temporalio compatibility and ignored: the
    sagas runtime does not sandbox imports. Determinism comes from the
    workflow's own event loop (timers, tasks) and the ``workflow.*`` helpers
    (``now``, ``random``, ``uuid4``); keep I/O in activities.

    An exception escaping the workflow fails the *workflow* when it is a
    :class:`~sagas.exceptions.FailureError` (e.g. ``ApplicationError``) or an
    instance of ``failure_exception_types``; any other exception fails only
    the workflow *task*, which is retried until the code is fixed.

    >>> from sagas import workflow
    >>> @workflow.defn(name="Greeter")
    ... class GreeterWorkflow:
    ...     @workflow.run
    ...     async def run(self, name: str) -> str:
    ...         return f"hello {name}"
    """

    def decorate(c: _C) -> _C:
        d = WorkflowDefinition.from_class(c, name or c.__name__)
        d.failure_exception_types = tuple(failure_exception_types)
        setattr(c, _DEFN_ATTR, d)
        setattr(d.run_fn, WORKFLOW_NAME_ATTR, d.name)
        return c

    if cls is not None:
        return decorate(cls)
    return decorate


def run(fn: _F) -> _F:
    """Mark the workflow's ``async`` entry point (exactly one per class).

    Example::

        @workflow.defn
        class BookTrip:
            @workflow.run
            async def run(self, trip: Trip) -> str:
                return await workflow.execute_activity(book_car, trip, start_to_close_timeout=T)
    """
    setattr(fn, _RUN_ATTR, True)
    return fn


def init(fn: _F) -> _F:
    """Mark ``__init__`` as taking the same arguments as the run method (like temporalio's ``workflow.init``).

    Example::

        @workflow.defn
        class BookTrip:
            @workflow.init
            def __init__(self, trip: Trip) -> None:
                self.trip = trip          # handlers can use it before run starts

            @workflow.run
            async def run(self, trip: Trip) -> str: ...
    """
    setattr(fn, _INIT_ATTR, True)
    return fn


def _handler_name(fn: Callable[..., Any], name: str | None, dynamic: bool) -> str | None:
    if dynamic:
        if name is not None:
            raise ValueError("a dynamic handler has no name")
        return None
    return name or fn.__name__


@overload
def signal(fn: _F) -> _F: ...


@overload
def signal(*, name: str | None = None, dynamic: bool = False) -> Callable[[_F], _F]: ...


def signal(
    fn: _F | None = None, *, name: str | None = None, dynamic: bool = False
) -> _F | Callable[[_F], _F]:
    """Mark a method as a signal handler (sync or async; its return value is ignored).

    A ``dynamic=True`` handler receives every signal that has no handler of
    its own, as ``(name, args)`` with ``args`` the raw JSON values.

    >>> from sagas import workflow
    >>> class W:
    ...     @workflow.signal(name="approve")
    ...     def approve(self, who: str) -> None:
    ...         self.approved_by = who
    """

    def decorate(f: _F) -> _F:
        setattr(f, _SIGNAL_ATTR, SignalDefinition(_handler_name(f, name, dynamic), f))
        return f

    return decorate(fn) if fn is not None else decorate


@overload
def query(fn: _F) -> _F: ...


@overload
def query(*, name: str | None = None, dynamic: bool = False) -> Callable[[_F], _F]: ...


def query(fn: _F | None = None, *, name: str | None = None, dynamic: bool = False) -> _F | Callable[[_F], _F]:
    """Mark a plain (not ``async``) method as a query handler; it must not change state.

    >>> from sagas import workflow
    >>> class W:
    ...     @workflow.query
    ...     def status(self) -> str:
    ...         return "ok"
    """

    def decorate(f: _F) -> _F:
        if inspect.iscoroutinefunction(f):
            raise ValueError(f"query handler {f.__qualname__} must not be 'async def'")
        setattr(f, _QUERY_ATTR, QueryDefinition(_handler_name(f, name, dynamic), f))
        return f

    return decorate(fn) if fn is not None else decorate


class UpdateMethod(Protocol, Generic[_P, _R_co]):
    """An update handler: callable as before, plus ``.validator`` to register a validator.

    Example (in a workflow class)::

        @workflow.update
        async def set_limit(self, limit: int) -> int:
            self.limit = limit
            return limit

        @set_limit.validator
        def check_limit(self, limit: int) -> None:
            if limit < 0:
                raise ApplicationError("limit must be positive")
    """

    def __call__(self, *args: _P.args, **kwargs: _P.kwargs) -> _R_co: ...

    def validator(self, vfn: Callable[_P, None]) -> Callable[_P, None]:
        """Register ``vfn`` as the update's validator (it raises to reject the update)."""
        ...


@overload
def update(fn: Callable[_P, _R]) -> UpdateMethod[_P, _R]: ...


@overload
def update(
    *, name: str | None = None, dynamic: bool = False
) -> Callable[[Callable[_P, _R]], UpdateMethod[_P, _R]]: ...


def update(
    fn: Callable[_P, _R] | None = None, *, name: str | None = None, dynamic: bool = False
) -> UpdateMethod[_P, _R] | Callable[[Callable[_P, _R]], UpdateMethod[_P, _R]]:
    """Mark a method as an update handler; ``@handler.validator`` adds a validator.

    The validator gets the same arguments, runs before the update is accepted
    (not on replay) and rejects it by raising; it must not change state.

    >>> from sagas import workflow
    >>> class W:
    ...     @workflow.update
    ...     async def set_limit(self, limit: int) -> int:
    ...         self.limit = limit
    ...         return limit
    ...     @set_limit.validator
    ...     def check_limit(self, limit: int) -> None:
    ...         if limit < 0:
    ...             raise ValueError("limit must be >= 0")
    """

    def decorate(f: Callable[_P, _R]) -> UpdateMethod[_P, _R]:
        d = UpdateDefinition(_handler_name(f, name, dynamic), f)

        def validator(vfn: Callable[_P, None]) -> Callable[_P, None]:
            d.validator = vfn
            return vfn

        setattr(f, _UPDATE_ATTR, d)
        f.validator = validator  # type: ignore[attr-defined]
        return f  # type: ignore[return-value]

    return decorate(fn) if fn is not None else decorate


def handler_name_of(fn: Any, kind: str) -> str:
    """The registered name of a signal/query/update method, or ``fn`` itself if it is a string."""
    if isinstance(fn, str):
        return fn
    attr = {"signal": _SIGNAL_ATTR, "query": _QUERY_ATTR, "update": _UPDATE_ATTR}[kind]
    d = getattr(fn, attr, None)
    if d is None or d.name is None:
        raise TypeError(f"{fn!r} is not a @workflow.{kind} method; pass the {kind} name as a string")
    return str(d.name)
