"""The frontend: the HTTP/JSON API on port 7233 (see ``orchestrator.api.http``).

Errors are JSON ``{"code", "message", "hint"}`` with a stable code; a body
that is not JSON, too large, or has wrong fields never reaches the engine, so
bad input changes nothing in the store.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Receive, Scope, Send

from brokers import envelope as env
from brokers.base import Delivery
from orchestrator.api import http as H
from orchestrator.errors import (
    InvalidArgumentError,
    OrchestratorError,
    PayloadTooLargeError,
    UpdateRejectedError,
)
from orchestrator.history.engine import StartRequest
from orchestrator.history.state import ExecutionState
from orchestrator.metrics import METRICS

if TYPE_CHECKING:
    from orchestrator.server import Orchestrator

SERVER_VERSION = "0.1.0"


def _error(exc: OrchestratorError) -> JSONResponse:
    body = H.ErrorBody(code=exc.code, message=exc.message, hint=exc.hint, details=exc.details)
    return JSONResponse(body.model_dump(), status_code=exc.http_status)


def _info(s: ExecutionState) -> H.WorkflowExecutionInfo:
    return H.WorkflowExecutionInfo(
        namespace=s.namespace,
        workflow_id=s.workflow_id,
        run_id=s.run_id,
        workflow_type=s.workflow_type,
        task_queue=s.task_queue,
        status=s.status.value,
        start_time=s.start_time,
        close_time=s.close_time,
        execution_time=s.execution_time,
        history_length=s.next_event_id - 1,
        search_attributes=s.search_attributes,
        memo=s.memo,
        parent_workflow_id=s.parent.workflow_id if s.parent else None,
    )


def create_app(orc: Orchestrator) -> FastAPI:
    """Build the FastAPI application around a running :class:`Orchestrator`."""
    app = FastAPI(
        title="sagas orchestrator",
        version=SERVER_VERSION,
        description="Durable-execution saga orchestrator: HTTP/JSON API.",
    )
    history, engine = orc.history, orc.history.engine
    max_body = orc.max_payload_bytes

    @app.exception_handler(OrchestratorError)
    async def _orc_error(_: Request, exc: OrchestratorError) -> JSONResponse:
        return _error(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return _error(_MalformedJson("request body is not valid JSON"))
        parts = [f"{'.'.join(str(p) for p in e['loc'] if p != 'body')}: {e['msg']}" for e in errors[:3]]
        return _error(InvalidArgumentError("; ".join(parts) or "invalid request"))

    app.add_middleware(_BodyLimit, max_bytes=max_body + 64 * 1024)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    try:
        from orchestrator.frontend.ui import mount_ui
    except ImportError:  # the UI module is optional while it is being built

        @app.get("/", response_class=PlainTextResponse)
        async def root() -> str:
            return "sagas orchestrator: API under /api/v1, OpenAPI at /openapi.json, docs at /docs\n"
    else:
        mount_ui(app, orc)

    @app.get("/api/v1/cluster", response_model=H.ClusterInfo)
    async def cluster() -> H.ClusterInfo:
        return H.ClusterInfo(
            server_version=SERVER_VERSION,
            worker_broker_url=orc.worker_broker_url,
            queue_prefix=orc.prefix,
            max_payload_bytes=max_body,
            namespaces=sorted(history.known_namespaces),
        )

    # workflows -------------------------------------------------------------------------------
    @app.post("/api/v1/namespaces/{ns}/workflows", response_model=H.StartWorkflowResponse)
    async def start_workflow(ns: str, body: H.StartWorkflowRequest) -> H.StartWorkflowResponse:
        orc.check_payload(body.input, "workflow input")
        req = StartRequest(
            namespace=ns,
            workflow_id=body.workflow_id,
            workflow_type=body.workflow_type,
            task_queue=body.task_queue,
            input=body.input,
            request_id=body.request_id or uuid.uuid4().hex,
            id_reuse_policy=body.id_reuse_policy,
            execution_timeout=body.execution_timeout,
            run_timeout=body.run_timeout,
            task_timeout=body.task_timeout,
            retry_policy=body.retry_policy,
            cron_schedule=body.cron_schedule,
            memo=body.memo,
            search_attributes=body.search_attributes,
            start_delay=body.start_delay,
            identity=body.identity,
        )
        if body.signal is not None:
            orc.check_payload(body.signal.input, "signal input")
            req.signal_name, req.signal_input = body.signal.name, body.signal.input
            run_id, started = await history.signal_with_start(req)
        else:
            run_id, started = await history.start(req)
        if started:
            METRICS.workflows_started.inc()
        return H.StartWorkflowResponse(run_id=run_id, started=started)

    @app.get("/api/v1/namespaces/{ns}/workflows", response_model=H.ListWorkflowsResponse)
    async def list_workflows(
        ns: str, query: str = "", page_size: int = 100, next_page_token: str | None = None
    ) -> H.ListWorkflowsResponse:
        page = await orc.visibility.list(ns, query, page_size=page_size, next_page_token=next_page_token)
        return H.ListWorkflowsResponse(
            executions=[H.WorkflowExecutionInfo(**r.__dict__) for r in page.records],
            next_page_token=page.next_page_token,
        )

    @app.get("/api/v1/namespaces/{ns}/workflow-count", response_model=H.CountWorkflowsResponse)
    async def count_workflows(ns: str, query: str = "") -> H.CountWorkflowsResponse:
        return H.CountWorkflowsResponse(count=await orc.visibility.count(ns, query))

    @app.get("/api/v1/namespaces/{ns}/workflows/{wid}", response_model=H.DescribeWorkflowResponse)
    async def describe(ns: str, wid: str, run_id: str = "") -> H.DescribeWorkflowResponse:
        s = await history.get_state(ns, wid, run_id)
        return H.DescribeWorkflowResponse(
            info=_info(s),
            pending_activities=[
                H.PendingActivity(
                    activity_id=a.activity_id,
                    activity_type=a.activity_type,
                    scheduled_event_id=a.scheduled_event_id,
                    attempt=a.attempt,
                    state="Started" if a.started_time else ("Scheduled" if a.dispatch_time else "BackingOff"),
                    last_failure=a.last_failure,
                    heartbeat_details=a.heartbeat_details,
                    last_heartbeat_time=a.last_heartbeat_time,
                    scheduled_time=a.scheduled_time,
                )
                for a in s.activities.values()
            ],
            pending_timers=[
                H.PendingTimer(timer_id=t.timer_id, started_event_id=t.started_event_id, fire_time=t.fire_time)
                for t in s.timers.values()
            ],
            pending_children=[c.model_dump() for c in s.children.values()],
            input=s.input,
            result=s.result,
            failure=s.failure,
        )

    @app.get("/api/v1/namespaces/{ns}/workflows/{wid}/history", response_model=H.HistoryResponse)
    async def get_history(
        ns: str, wid: str, run_id: str = "", first_event_id: int = 1, page_size: int = 1000
    ) -> H.HistoryResponse:
        if page_size < 1 or first_event_id < 1:
            raise InvalidArgumentError("page_size and first_event_id must be positive")
        run_id = await history.resolve_run_id(ns, wid, run_id)
        await history.get_state(ns, wid, run_id)  # 404 for an unknown run
        events = await orc.read_events(ns, wid, run_id, first_event_id, page_size + 1)
        token = str(events[page_size].event_id) if len(events) > page_size else None
        return H.HistoryResponse(events=[e.model_dump(mode="json") for e in events[:page_size]], next_page_token=token)

    @app.get("/api/v1/namespaces/{ns}/workflows/{wid}/result", response_model=H.WorkflowResultResponse)
    async def result(ns: str, wid: str, run_id: str = "", wait: float = 20.0) -> H.WorkflowResultResponse:
        s = await history.wait_for(ns, wid, run_id, lambda st: not st.is_open, min(max(wait, 0.0), 60.0))
        return H.WorkflowResultResponse(
            status=s.status.value, run_id=s.run_id, result=s.result, failure=s.failure, new_run_id=s.new_run_id
        )

    @app.post("/api/v1/namespaces/{ns}/workflows/{wid}/signal", response_model=H.Ack)
    async def signal(ns: str, wid: str, body: H.SignalRequest) -> H.Ack:
        orc.check_payload(body.input, "signal input")
        await history.update(
            ns, wid, body.run_id,
            lambda s, now: engine.signal(s, body.name, body.input, now=now, request_id=body.request_id, identity=body.identity),
        )
        return H.Ack()

    @app.post("/api/v1/namespaces/{ns}/workflows/{wid}/cancel", response_model=H.Ack)
    async def cancel(ns: str, wid: str, body: H.CancelRequest) -> H.Ack:
        await history.update(ns, wid, body.run_id, lambda s, now: engine.request_cancel(s, now=now, reason=body.reason, identity=body.identity))
        return H.Ack()

    @app.post("/api/v1/namespaces/{ns}/workflows/{wid}/terminate", response_model=H.Ack)
    async def terminate(ns: str, wid: str, body: H.TerminateRequest) -> H.Ack:
        await history.update(
            ns, wid, body.run_id,
            lambda s, now: engine.terminate(s, now=now, reason=body.reason, details=body.details, identity=body.identity),
        )
        return H.Ack()

    @app.post("/api/v1/namespaces/{ns}/workflows/{wid}/query", response_model=H.QueryWorkflowResponse)
    async def query(ns: str, wid: str, body: H.QueryWorkflowRequest) -> H.QueryWorkflowResponse:
        value = await orc.matching.query(ns, wid, body.run_id, body.name, body.input, min(body.timeout, 60.0))
        return H.QueryWorkflowResponse(result=value)

    @app.post("/api/v1/namespaces/{ns}/workflows/{wid}/update", response_model=H.UpdateWorkflowResponse)
    async def update(ns: str, wid: str, body: H.UpdateWorkflowRequest) -> H.UpdateWorkflowResponse:
        orc.check_payload(body.input, "update input")
        update_id = body.update_id or uuid.uuid4().hex
        m = await history.update(ns, wid, body.run_id, lambda s, now: engine.request_update(s, update_id, body.name, body.input, now=now))
        run_id = m.state.run_id

        def reached(st: ExecutionState) -> bool:
            u = st.updates.get(update_id)
            if u is None or not st.is_open:
                return True
            if body.wait_for_stage == "Accepted":
                return bool(u.accepted_event_id) or u.completed
            return u.completed

        s = await history.wait_for(ns, wid, run_id, reached, min(body.timeout, 300.0))
        u = s.updates.get(update_id)
        if u is None:
            raise InvalidArgumentError(f"update {update_id} was lost: the workflow closed before handling it")
        if u.completed and not u.accepted_event_id:
            raise UpdateRejectedError(
                u.failure.message if u.failure else "update rejected",
                details={"failure": u.failure.model_dump(mode="json") if u.failure else None},
            )
        stage = "Completed" if u.completed else ("Accepted" if u.accepted_event_id else "Admitted")
        return H.UpdateWorkflowResponse(update_id=update_id, stage=stage, result=u.result, failure=u.failure)

    # workers -----------------------------------------------------------------------------------
    @app.post("/api/v1/tasks/complete", response_model=H.Ack)
    async def complete(request: Request) -> H.Ack:
        body = await request.body()
        try:
            reply = env.parse_reply(body, max_body)
        except env.EnvelopeError as exc:
            if exc.reason == "too_large":
                raise PayloadTooLargeError(str(exc)) from exc
            if exc.reason == "malformed_json":
                raise _MalformedJson(str(exc)) from exc
            raise InvalidArgumentError(str(exc)) from exc
        cancel_requested = await orc.completions.handle(reply)
        return H.Ack(cancel_requested=cancel_requested)

    # the built-in broker, for remote workers ---------------------------------------------------
    broker = orc.broker

    @app.post("/api/v1/queues/{queue}/receive", response_model=H.ReceiveResponse)
    async def receive(queue: str, body: H.ReceiveRequest, request: Request) -> H.ReceiveResponse:
        deliveries = await _receive_unless_gone(
            request, queue, max(1, min(body.max_messages, 100)), min(max(body.wait, 0.0), 30.0)
        )
        return H.ReceiveResponse(
            deliveries=[
                H.WireDelivery(
                    message_id=d.message_id,
                    body=d.body.decode(),
                    headers=d.headers,
                    delivery_count=d.delivery_count,
                    receipt=str(d.receipt),
                )
                for d in deliveries
            ]
        )

    async def _receive_unless_gone(request: Request, queue: str, max_messages: int, wait: float) -> list[Delivery]:
        """Long-poll the broker, but stop when the worker hung up: a message handed to a
        connection that is gone would stay leased for the whole visibility timeout."""
        receiving = asyncio.ensure_future(broker.receive(queue, max_messages, wait))
        while not receiving.done():
            done, _ = await asyncio.wait({receiving}, timeout=0.25)
            if not done and await request.is_disconnected():
                receiving.cancel()
                await asyncio.gather(receiving, return_exceptions=True)
                return []
        deliveries = receiving.result()
        if deliveries and await request.is_disconnected():
            for d in deliveries:
                await broker.nack(d, requeue=True, reason="receiver disconnected")
            return []
        return deliveries

    @app.post("/api/v1/queues/{queue}/ack", response_model=H.Ack)
    async def ack(queue: str, body: H.SettleRequest) -> H.Ack:
        await broker.ack(Delivery(queue=queue, body=b"", receipt=body.receipt))
        return H.Ack()

    @app.post("/api/v1/queues/{queue}/nack", response_model=H.Ack)
    async def nack(queue: str, body: H.SettleRequest) -> H.Ack:
        await broker.nack(Delivery(queue=queue, body=b"", receipt=body.receipt), requeue=body.requeue, reason=body.reason)
        return H.Ack()

    @app.post("/api/v1/queues/{queue}/publish", response_model=H.PublishResponse)
    async def publish(queue: str, body: H.PublishRequest) -> H.PublishResponse:
        return H.PublishResponse(message_id=await broker.publish(queue, body.body.encode(), body.headers))

    @app.get("/api/v1/dlq", response_model=H.DeadLettersResponse)
    async def dlq(limit: int = 100) -> H.DeadLettersResponse:
        items = await broker.dead_letters(limit)
        return H.DeadLettersResponse(
            dead_letters=[
                H.DeadLetterItem(queue=d.queue, body=d.body.decode(errors="replace"), reason=d.reason, headers=d.headers, message_id=d.message_id)
                for d in items
            ]
        )

    return app


class _MalformedJson(InvalidArgumentError):
    code = "malformed_json"


class _BodyLimit:
    """Refuse a request whose declared body is over the limit before reading it (pure ASGI,
    so that endpoints still see client disconnects)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            length = dict(scope["headers"]).get(b"content-length")
            if length is not None and length.isdigit() and int(length) > self.max_bytes:
                response = _error(
                    PayloadTooLargeError(f"request body of {int(length)} bytes is over the limit of {self.max_bytes} bytes")
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

