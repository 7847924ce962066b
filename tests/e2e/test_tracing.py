"""OpenTelemetry: one trace from the client's start through history, the broker hop and the activity.

The server, the worker and the client share this process (and so one tracer provider), but the
context is never taken from the current span across a hop: the worker reads it from the broker
message's headers (fetched over HTTP from the built-in broker), the server from the start
request's headers. Each span's parent is checked, not only the trace id.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import timedelta

import httpx
import pytest

from orchestrator.api import events as E
from sagas import activity, workflow
from sagas.testing import WorkflowEnvironment
from sagas.worker import Worker

otel_sdk = pytest.importorskip("opentelemetry.sdk.trace", reason="the otel extra is not installed")
from opentelemetry import trace  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402

T = timedelta(seconds=10)
EXPORTER = InMemorySpanExporter()


@activity.defn
async def traced_book(item: str) -> str:
    return f"booked {item}"


@workflow.defn
class TracedTrip:
    @workflow.run
    async def run(self, item: str) -> str:
        return await workflow.execute_activity(traced_book, item, start_to_close_timeout=T)


@pytest.fixture(scope="module", autouse=True)
def tracer_provider() -> Iterator[None]:
    current = trace.get_tracer_provider()
    if not isinstance(current, otel_sdk.TracerProvider):  # the global provider can be set once per process
        provider = otel_sdk.TracerProvider()
        trace.set_tracer_provider(provider)
        current = provider
    assert isinstance(current, otel_sdk.TracerProvider)
    current.add_span_processor(SimpleSpanProcessor(EXPORTER))
    yield


@pytest.fixture
async def env() -> AsyncIterator[WorkflowEnvironment]:
    EXPORTER.clear()
    environment = await WorkflowEnvironment.start_local()
    try:
        yield environment
    finally:
        await environment.shutdown()


async def test_one_trace_from_client_start_to_the_activity(env: WorkflowEnvironment) -> None:
    async with Worker(env.client, task_queue="traced", workflows=[TracedTrip], activities=[traced_book]):
        assert await env.client.execute_workflow(TracedTrip.run, "car", id="traced-1", task_queue="traced") == "booked car"
    spans = {s.name: s for s in EXPORTER.get_finished_spans()}
    start, server = spans["StartWorkflow:TracedTrip"], spans["StartWorkflowExecution:TracedTrip"]
    dispatch, run = spans["DispatchActivity:traced_book"], spans["RunActivity:traced_book"]
    assert start.kind == trace.SpanKind.CLIENT and server.kind == trace.SpanKind.SERVER
    assert dispatch.kind == trace.SpanKind.PRODUCER and run.kind == trace.SpanKind.CONSUMER
    trace_id = start.context.trace_id
    assert {s.context.trace_id for s in (server, dispatch, run)} == {trace_id}
    assert start.parent is None
    assert server.parent is not None and server.parent.span_id == start.context.span_id
    assert dispatch.parent is not None and dispatch.parent.span_id == server.context.span_id
    assert run.parent is not None and run.parent.span_id == dispatch.context.span_id  # from the message headers
    assert run.attributes is not None and run.attributes["sagas.workflow_id"] == "traced-1"

    # the context is part of the history (the started event and the activity command), so replay agrees
    history = await env.client.get_workflow_handle("traced-1").fetch_history()
    started = next(e for e in history.events if isinstance(e, E.WorkflowExecutionStarted))
    scheduled = next(e for e in history.events if isinstance(e, E.ActivityTaskScheduled))
    assert f"{server.context.span_id:016x}" in started.headers["traceparent"]
    assert scheduled.headers["traceparent"] == started.headers["traceparent"]


async def test_a_start_without_trace_context_adds_no_headers(env: WorkflowEnvironment) -> None:
    assert env.server is not None
    async with Worker(env.client, task_queue="untraced", workflows=[TracedTrip], activities=[traced_book]):
        async with httpx.AsyncClient(base_url=env.server.url) as http:  # a plain HTTP client: no traceparent
            resp = await http.post("/api/v1/namespaces/default/workflows", json={
                "workflow_id": "untraced-1", "workflow_type": "TracedTrip", "task_queue": "untraced",
                "input": ["hotel"]})  # fmt: skip
            assert resp.status_code == 200, resp.text
        assert await env.client.get_workflow_handle("untraced-1").result() == "booked hotel"
    history = await env.client.get_workflow_handle("untraced-1").fetch_history()
    started = next(e for e in history.events if isinstance(e, E.WorkflowExecutionStarted))
    scheduled = next(e for e in history.events if isinstance(e, E.ActivityTaskScheduled))
    assert started.headers == {} and scheduled.headers == {}
    server = [s for s in EXPORTER.get_finished_spans() if s.name == "StartWorkflowExecution:TracedTrip"]
    spans = {s.context.span_id: s for s in EXPORTER.get_finished_spans()}
    server = [s for s in spans.values() if s.name == "StartWorkflowExecution:TracedTrip"]
    assert len(server) == 1
    root = server[0]
    while root.parent is not None and root.parent.span_id in spans:  # up to the start of its trace
        root = spans[root.parent.span_id]
    assert root.parent is None and root.name.startswith("POST "), root.name  # the HTTP request, no client span
    dispatch = [s for s in spans.values() if s.name == "DispatchActivity:traced_book"]
    assert len(dispatch) == 1 and dispatch[0].parent is None  # nothing in the activity's headers to continue
