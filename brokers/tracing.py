"""OpenTelemetry tracing across the client, the orchestrator, the broker hop and the workers.

Tracing is optional: install the ``otel`` extra (``pip install 'sagas[otel]'``)
and configure a tracer provider the usual OpenTelemetry way (for instance
``opentelemetry-instrument`` or ``trace.set_tracer_provider(...)``). Without
the ``opentelemetry`` package, every function here is a cheap no-op.

The trace context travels as W3C ``traceparent``/``tracestate`` entries:

1. ``Client.start_workflow`` opens a ``StartWorkflow:<type>`` client span and
   puts its context in the start request's ``headers``;
2. the frontend opens ``StartWorkflowExecution:<type>`` (a server span, child
   of the client's) and stores *its* context in the ``WorkflowExecutionStarted``
   event's headers, so the whole run hangs below it;
3. the workflow copies those headers onto every activity it schedules (the
   copy is part of the command, so replay sees the same thing);
4. matching opens ``DispatchActivity:<type>`` (a producer span) when it
   publishes the activity task, and carries its context in the **broker
   message headers**;
5. the activity worker opens ``RunActivity:<type>`` (a consumer span) as a
   child of the context in the delivery's headers.

Example::

    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    trace.set_tracer_provider(provider)
    # ... then start the server, the worker and the client as usual: spans appear
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

try:
    from opentelemetry import context as _otel_context
    from opentelemetry import propagate as _propagate
    from opentelemetry import trace as _trace
except ImportError:  # pragma: no cover - the otel extra is not installed
    _trace = None  # type: ignore[assignment]

TRACE_HEADERS = ("traceparent", "tracestate")
"""The header names that carry the trace context (W3C Trace Context)."""

TRACER_NAME = "sagas"


def enabled() -> bool:
    """True when the ``opentelemetry`` package is importable.

    Example::

        if tracing.enabled():
            print("spans go to the configured tracer provider")
    """
    return _trace is not None


def trace_headers(headers: Mapping[str, Any] | None) -> dict[str, str]:
    """The trace-context entries of ``headers`` (an event's, a command's or a message's).

    Example::

        >>> trace_headers({"traceparent": "00-ab-cd-01", "user": "x"})
        {'traceparent': '00-ab-cd-01'}
    """
    if not headers:
        return {}
    return {k: str(headers[k]) for k in TRACE_HEADERS if k in headers}


def inject(headers: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write the current span's context into ``headers`` (a new dict when None) and return it.

    Example::

        with span("StartWorkflow:Trip", kind="client"):
            request_headers = inject({})  # {"traceparent": "00-...-01"} with tracing on
    """
    out: dict[str, Any] = {} if headers is None else headers
    if _trace is not None:
        carrier: dict[str, str] = {}
        _propagate.inject(carrier)
        out.update(carrier)
    return out


_KINDS = {"client": "CLIENT", "server": "SERVER", "producer": "PRODUCER", "consumer": "CONSUMER", "internal": "INTERNAL"}


@contextlib.contextmanager
def span(
    name: str,
    *,
    parent: Mapping[str, Any] | None = None,
    kind: str = "internal",
    attributes: Mapping[str, Any] | None = None,
) -> Iterator[Any]:
    """A span named ``name``; its parent is the context in ``parent`` headers, else the current span.

    The span is current inside the block (so :func:`inject` writes its context). It records an
    exception that escapes the block and marks the span as an error.

    Example::

        with span("RunActivity:book_car", parent=delivery.headers, kind="consumer",
                  attributes={"sagas.workflow_id": "trip-1"}):
            await run_the_activity()
    """
    if _trace is None:
        yield None
        return
    ctx = _propagate.extract(trace_headers(parent)) if parent is not None and trace_headers(parent) else None
    tracer = _trace.get_tracer(TRACER_NAME)
    token = _otel_context.attach(ctx) if ctx is not None else None
    try:
        with tracer.start_as_current_span(
            name,
            kind=getattr(_trace.SpanKind, _KINDS.get(kind, "INTERNAL")),
            attributes={k: v for k, v in (attributes or {}).items() if v is not None},
        ) as current:
            yield current
    finally:
        if token is not None:
            _otel_context.detach(token)
