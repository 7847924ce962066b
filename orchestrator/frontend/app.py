"""The frontend: the HTTP/JSON API on port 7233 (see ``orchestrator.api.http``).

Errors are JSON ``{"code", "message", "hint"}`` with a stable code; a body
that is not JSON, too large, or has wrong fields never reaches the engine, so
bad input changes nothing in the store.

Every route declares what it needs (``Depends(...)`` below, see
``orchestrator.frontend.auth``): the caller is authenticated and authorized
before anything is looked up, so a refusal says nothing about what exists in a
namespace the caller may not see. ``/namespaces/{ns}/workflows...`` routes
also take a token from the namespace's rate limit.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import uuid
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from brokers import envelope as env
from brokers import tracing
from brokers.base import BrokerError, Delivery
from orchestrator.api import http as H
from orchestrator.errors import (
    InvalidArgumentError,
    InvalidTaskTokenError,
    OrchestratorError,
    PayloadTooLargeError,
    RateLimitedError,
    ShardNotOwnedError,
    UnauthenticatedError,
    UnavailableError,
    UpdateRejectedError,
)
from orchestrator.frontend.auth import (
    FrontendAuth,
    Permission,
    Target,
    permission_check,
    queue_target,
)
from orchestrator.frontend.codec import add_codec_routes, codec_lookup
from orchestrator.frontend.ratelimit import NamespaceRateLimiter
from orchestrator.history.engine import StartRequest
from orchestrator.history.state import ExecutionState
from orchestrator.matching import cross_shard
from orchestrator.membership import FORWARDED_HEADER

if TYPE_CHECKING:
    from orchestrator.server import Orchestrator

log = logging.getLogger("sagas.frontend")

SERVER_VERSION = "0.1.0"


def error_response(exc: OrchestratorError) -> JSONResponse:
    """The JSON error body of ``exc`` (with ``Retry-After`` / ``WWW-Authenticate`` where they apply)."""
    body = H.ErrorBody(code=exc.code, message=exc.message, hint=exc.hint, details=exc.details)
    headers: dict[str, str] = {}
    if isinstance(exc, RateLimitedError):
        headers["retry-after"] = str(max(1, math.ceil(exc.retry_after)))
    elif isinstance(exc, UnauthenticatedError):
        headers["www-authenticate"] = 'Bearer realm="sagas"'
    return JSONResponse(body.model_dump(), status_code=exc.http_status, headers=headers)


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


_ERROR_RESPONSES = (
    (400, "Invalid request (`invalid_argument`, `malformed_json`, `invalid_task_token`, `query_failed`, `update_rejected`, `archival_not_enabled`)"),
    (401, "No or invalid credentials (`unauthenticated`)"),
    (403, "Not allowed (`permission_denied`)"),
    (404, "Unknown namespace or workflow (`namespace_not_found`, `workflow_not_found`, `workflow_not_archived`)"),
    (409, "Conflict (`workflow_already_started`, `workflow_not_running`, `stale_task`, `namespace_already_exists`)"),
    (413, "Payload or body too large (`payload_too_large`)"),
    (429, "Namespace rate limit (`rate_limited`, with `Retry-After`)"),
    (503, "Store or shard owner unreachable (`unavailable`): retry"),
    (504, "No worker answered the query in time (`query_timeout`)"),
)


def _document_errors(app: FastAPI) -> None:
    """Add the error answers every ``/api/`` route may give (an ``ErrorBody``) to the OpenAPI spec."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        first = app.openapi_schema is None
        spec = generate()
        if first:
            schemas = spec.setdefault("components", {}).setdefault("schemas", {})
            schemas.setdefault("ErrorBody", H.ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}"))
            body = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
            for path, operations in spec.get("paths", {}).items():
                if not path.startswith("/api/"):
                    continue
                for operation in operations.values():
                    for status, description in _ERROR_RESPONSES:
                        operation["responses"].setdefault(str(status), {"description": description, "content": body})
        return spec

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(orc: Orchestrator) -> FastAPI:
    """Build the FastAPI application around a running :class:`Orchestrator`."""
    app = FastAPI(
        title="sagas orchestrator",
        version=SERVER_VERSION,
        description="Durable-execution saga orchestrator: HTTP/JSON API.",
    )
    _document_errors(app)
    history, engine = orc.history, orc.history.engine
    max_body = orc.max_payload_bytes
    auth: FrontendAuth = orc.auth
    limiter = NamespaceRateLimiter(orc.namespaces.rate_limit)

    # authorization: each route declares what it needs -----------------------------------------
    caller = auth.caller  # the caller's claims (None: anonymous, or authorization is off)

    def on_namespace(permission: Permission, *, rate_limited: bool = True) -> Any:
        """Dependency of a ``/namespaces/{ns}/...`` route: ``permission`` on ``ns``, then a rate-limit token."""

        @permission_check
        async def check(ns: str, request: Request) -> None:
            auth.require(caller(request), Target.on(permission, ns))
            await orc.namespaces.refresh_if_stale()
            if rate_limited:
                limiter.check(ns)

        return Depends(check)

    def on_queue(operation: str) -> Any:
        """Dependency of a built-in broker route: worker on the queue's namespace (see ``queue_target``)."""

        @permission_check
        async def check(queue: str, request: Request) -> None:  # async: a sync one would run in a thread
            auth.require(caller(request), queue_target(orc.prefix, queue, operation))

        return Depends(check)

    def on_cluster(target: Target) -> Any:
        """Dependency of a route that needs ``target`` regardless of namespace."""

        @permission_check
        async def check(request: Request) -> None:  # async: a sync one would run in a thread
            auth.require(caller(request), target)

        return Depends(check)

    read = on_namespace(Permission.READ)
    write = on_namespace(Permission.WRITE)

    @app.exception_handler(OrchestratorError)
    async def _orc_error(_: Request, exc: OrchestratorError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(ShardNotOwnedError)
    async def _not_owned(request: Request, exc: ShardNotOwnedError) -> Response:
        # Another process owns the workflow's shard: forward the request there, once.
        if orc.router is None or request.headers.get(FORWARDED_HEADER):
            return error_response(exc)
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        body = request.scope.get(_BODY_KEY, b"")
        response = await orc.router.forward(exc.shard, request.method, path, body=body, headers=dict(request.headers))
        if response is None:
            return error_response(
                UnavailableError(
                    f"history shard {exc.shard} has no reachable owner",
                    hint="Its owner stopped or is unreachable; another process takes the shard over once the "
                    "owner's lease expires (cluster.leaseSeconds). Retry.",
                    details={"shard": exc.shard},
                )
            )
        kept = {k: v for k, v in response.headers.items() if k.lower() in ("content-type", "retry-after", "www-authenticate")}
        return Response(response.content, status_code=response.status_code, headers=kept)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error in the frontend")
        return error_response(OrchestratorError(f"internal error: {type(exc).__name__}: {exc}", hint="This is a bug: please report it with the server log."))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Starlette's own answers (unparsable body, unknown route, wrong method) in our error shape.
        code = {400: "invalid_argument", 404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        body = H.ErrorBody(code=code, message=str(exc.detail))
        return JSONResponse(body.model_dump(), status_code=exc.status_code, headers=dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return error_response(_MalformedJson("request body is not valid JSON"))
        parts = [f"{'.'.join(str(p) for p in e['loc'] if p != 'body')}: {e['msg']}" for e in errors[:3]]
        return error_response(InvalidArgumentError("; ".join(parts) or "invalid request"))

    if orc.router is not None:  # cluster: keep request bodies for forwarding to a shard's owner
        app.add_middleware(_KeepBody)
    app.add_middleware(_BodyLimit, max_bytes=max_body + 64 * 1024)
    if auth.enabled:
        app.add_middleware(_PageGuard, auth=auth)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics (text exposition format)")
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

    some_reader = on_cluster(Target.on_some_namespace(Permission.READ))

    @app.get("/api/v1/cluster", response_model=H.ClusterInfo, dependencies=[some_reader])
    async def cluster(request: Request) -> H.ClusterInfo:
        claims = caller(request)
        await orc.namespaces.refresh_if_stale()
        known = set(orc.namespaces.names()) | history.known_namespaces
        return H.ClusterInfo(
            server_version=SERVER_VERSION,
            # broker credentials only for those who may run workers
            worker_broker_url=orc.worker_broker_url
            if auth.allows(claims, Target.on_some_namespace(Permission.WORKER))
            else _redact_url(orc.worker_broker_url),
            queue_prefix=orc.prefix,
            max_payload_bytes=max_body,
            namespaces=sorted(n for n in known if auth.allows(claims, Target.on(Permission.READ, n))),
        )

    # namespaces --------------------------------------------------------------------------------
    @app.post(
        "/api/v1/namespaces", response_model=H.NamespaceInfo, status_code=201,
        dependencies=[on_cluster(Target.on_cluster(Permission.ADMIN))],
    )
    async def register_namespace(body: H.RegisterNamespaceRequest) -> H.NamespaceInfo:
        info = await orc.namespaces.register(body)
        history.known_namespaces.add(info.name)
        return info

    @app.get("/api/v1/namespaces", response_model=H.ListNamespacesResponse, dependencies=[some_reader])
    async def list_namespaces(request: Request) -> H.ListNamespacesResponse:
        claims = caller(request)
        return H.ListNamespacesResponse(
            namespaces=[
                info for info in await orc.namespaces.list()
                if auth.allows(claims, Target.on(Permission.READ, info.name))
            ]
        )

    @app.get("/api/v1/namespaces/{ns}", response_model=H.NamespaceInfo, dependencies=[on_namespace(Permission.READ, rate_limited=False)])
    async def describe_namespace(ns: str) -> H.NamespaceInfo:
        return await orc.namespaces.describe(ns)

    @app.patch("/api/v1/namespaces/{ns}", response_model=H.NamespaceInfo, dependencies=[on_namespace(Permission.ADMIN, rate_limited=False)])
    async def update_namespace(ns: str, body: H.UpdateNamespaceRequest) -> H.NamespaceInfo:
        return await orc.namespaces.update(ns, body)

    # workflows -------------------------------------------------------------------------------
    @app.post("/api/v1/namespaces/{ns}/workflows", response_model=H.StartWorkflowResponse, dependencies=[write])
    async def start_workflow(ns: str, body: H.StartWorkflowRequest) -> H.StartWorkflowResponse:
        orc.check_payload(body.input, "workflow input", ns)
        with tracing.span(f"StartWorkflowExecution:{body.workflow_type}", parent=body.headers, kind="server",
                          attributes={"sagas.namespace": ns, "sagas.workflow_id": body.workflow_id}):  # fmt: skip
            return await _start_workflow(ns, body)

    async def _start_workflow(ns: str, body: H.StartWorkflowRequest) -> H.StartWorkflowResponse:
        headers = dict(body.headers)
        if tracing.trace_headers(headers):  # the run hangs below this server span, not the client's
            tracing.inject(headers)
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
            headers=headers,
        )
        if body.signal is not None:
            orc.check_payload(body.signal.input, "signal input", ns)
            req.signal_name, req.signal_input = body.signal.name, body.signal.input
            run_id, started = await history.signal_with_start(req)
        else:
            run_id, started = await history.start(req)
        return H.StartWorkflowResponse(run_id=run_id, started=started)

    @app.get("/api/v1/namespaces/{ns}/workflows", response_model=H.ListWorkflowsResponse, dependencies=[read])
    async def list_workflows(
        ns: str, query: str = "", page_size: int = 100, next_page_token: str | None = None
    ) -> H.ListWorkflowsResponse:
        page = await orc.visibility.list(ns, query, page_size=page_size, next_page_token=next_page_token or None)
        return H.ListWorkflowsResponse(
            executions=[H.WorkflowExecutionInfo(**r.__dict__) for r in page.records],
            next_page_token=page.next_page_token,
        )

    @app.get("/api/v1/namespaces/{ns}/workflow-count", response_model=H.CountWorkflowsResponse, dependencies=[read])
    async def count_workflows(ns: str, query: str = "") -> H.CountWorkflowsResponse:
        return H.CountWorkflowsResponse(count=await orc.visibility.count(ns, query))

    @app.get("/api/v1/namespaces/{ns}/workflows/{wid}", response_model=H.DescribeWorkflowResponse, dependencies=[read])
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
            warnings=_history_warnings(s, *orc.namespaces.history_limits(ns)),
        )

    @app.get("/api/v1/namespaces/{ns}/workflows/{wid}/history", response_model=H.HistoryResponse, dependencies=[read])
    async def get_history(
        ns: str, wid: str, run_id: str = "", first_event_id: int = Query(1, ge=1), page_size: int = Query(1000, ge=1)
    ) -> H.HistoryResponse:
        if page_size < 1 or first_event_id < 1:
            raise InvalidArgumentError("page_size and first_event_id must be positive")
        run_id = await history.resolve_run_id(ns, wid, run_id)
        await history.get_state(ns, wid, run_id)  # 404 for an unknown run
        events = await orc.read_events(ns, wid, run_id, first_event_id, page_size + 1)
        token = str(events[page_size].event_id) if len(events) > page_size else None
        return H.HistoryResponse(events=[e.model_dump(mode="json") for e in events[:page_size]], next_page_token=token)

    @app.get(
        "/api/v1/namespaces/{ns}/archived-workflows/{wid}/history", response_model=H.ArchivedHistoryResponse,
        dependencies=[read],
    )
    async def get_archived_history(ns: str, wid: str, run_id: str = "") -> H.ArchivedHistoryResponse:
        """A run's history from the namespace's archive (after retention deleted it from the store)."""
        doc = await orc.archival.read_history(ns, wid, run_id or None)
        return H.ArchivedHistoryResponse(
            namespace=doc.namespace,
            workflow_id=doc.workflow_id,
            run_id=doc.run_id,
            archived_at=doc.archived_at,
            info=H.WorkflowExecutionInfo(**doc.visibility) if doc.visibility else None,
            events=doc.events,
        )

    @app.get("/api/v1/namespaces/{ns}/workflows/{wid}/result", response_model=H.WorkflowResultResponse, dependencies=[read])
    async def result(ns: str, wid: str, run_id: str = "", wait: float = 20.0) -> H.WorkflowResultResponse:
        s = await history.wait_for(ns, wid, run_id, lambda st: not st.is_open, min(max(wait, 0.0), 60.0))
        return H.WorkflowResultResponse(
            status=s.status.value, run_id=s.run_id, result=s.result, failure=s.failure, new_run_id=s.new_run_id
        )

    @app.post("/api/v1/namespaces/{ns}/workflows/{wid}/signal", response_model=H.Ack, dependencies=[write])
    async def signal(ns: str, wid: str, body: H.SignalRequest) -> H.Ack:
        orc.check_payload(body.input, "signal input", ns)
        await history.update(
            ns, wid, body.run_id,
            lambda s, now: engine.signal(s, body.name, body.input, now=now, request_id=body.request_id, identity=body.identity),
        )
        return H.Ack()

    @app.post("/api/v1/namespaces/{ns}/workflows/{wid}/cancel", response_model=H.Ack, dependencies=[write])
    async def cancel(ns: str, wid: str, body: H.CancelRequest) -> H.Ack:
        await history.update(ns, wid, body.run_id, lambda s, now: engine.request_cancel(s, now=now, reason=body.reason, identity=body.identity))
        return H.Ack()

    @app.post("/api/v1/namespaces/{ns}/workflows/{wid}/terminate", response_model=H.Ack, dependencies=[write])
    async def terminate(ns: str, wid: str, body: H.TerminateRequest) -> H.Ack:
        await history.update(
            ns, wid, body.run_id,
            lambda s, now: engine.terminate(s, now=now, reason=body.reason, details=body.details, identity=body.identity),
        )
        return H.Ack()

    @permission_check
    async def cluster_member(request: Request) -> None:
        """Authorizes internal calls: signed with the cluster's token key (no user credentials)."""
        body = request.scope.get(_BODY_KEY) or await request.body()
        if not cross_shard.verify(orc.token_key, body, request.headers.get(cross_shard.SIGNATURE_HEADER, "")):
            raise UnauthenticatedError("internal cluster call with a missing or wrong signature")

    @app.post(cross_shard.PATH, response_model=cross_shard.HistoryOpResult, include_in_schema=False,
              dependencies=[Depends(cluster_member)])  # fmt: skip
    async def internal_history(request: Request) -> cross_shard.HistoryOpResult:
        """An operation on a workflow of this process's shards, from another member of the cluster
        (``orchestrator/matching/cross_shard.py``)."""
        body = request.scope.get(_BODY_KEY) or await request.body()
        try:
            op = cross_shard.HistoryOp.model_validate_json(body)
        except ValueError as exc:
            raise InvalidArgumentError(f"bad internal history operation: {exc}") from exc
        return await cross_shard.apply(history, op)

    @app.post("/api/v1/namespaces/{ns}/workflows/{wid}/reset", response_model=H.ResetWorkflowResponse, dependencies=[write])
    async def reset(ns: str, wid: str, body: H.ResetWorkflowRequest) -> H.ResetWorkflowResponse:
        run_id = await history.reset(
            ns, wid, body.run_id, event_id=body.event_id, reset_type=body.reset_type, reason=body.reason,
            identity=body.identity, reapply_signals=body.reapply_signals,
        )  # fmt: skip
        return H.ResetWorkflowResponse(run_id=run_id)

    @app.post("/api/v1/namespaces/{ns}/workflows/{wid}/query", response_model=H.QueryWorkflowResponse, dependencies=[read])
    async def query(ns: str, wid: str, body: H.QueryWorkflowRequest) -> H.QueryWorkflowResponse:
        value = await orc.matching.query(ns, wid, body.run_id, body.name, body.input, min(body.timeout, 60.0))
        return H.QueryWorkflowResponse(result=value)

    @app.post("/api/v1/namespaces/{ns}/workflows/{wid}/update", response_model=H.UpdateWorkflowResponse, dependencies=[write])
    async def update(ns: str, wid: str, body: H.UpdateWorkflowRequest) -> H.UpdateWorkflowResponse:
        orc.check_payload(body.input, "update input", ns)
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
    broker = orc.broker

    @app.post(
        "/api/v1/tasks/complete", response_model=H.CompleteTaskResponse, description=_COMPLETE_DESCRIPTION,
        dependencies=[on_cluster(Target.on_some_namespace(Permission.WORKER))],
    )
    async def complete(
        request: Request,
        ack_queue: str | None = Query(None, description="Built-in broker queue of the delivery to ack once the reply is applied."),
        ack_receipt: str | None = Query(None, description="Receipt of that delivery (from `receive`)."),
    ) -> Response:
        if (ack_queue is None) != (ack_receipt is None):
            raise InvalidArgumentError("ack_queue and ack_receipt go together: name both or neither")
        body = await request.body()
        try:
            reply = env.parse_reply(body, max_body)
        except env.EnvelopeError as exc:
            if exc.reason == "too_large":
                raise PayloadTooLargeError(str(exc)) from exc
            if exc.reason == "malformed_json":
                raise _MalformedJson(str(exc)) from exc
            raise InvalidArgumentError(str(exc)) from exc
        try:
            # The token's signature is checked by the handler; a forged namespace fails there.
            namespace = env.peek_token(reply.task_token).namespace
        except env.EnvelopeError as exc:
            raise InvalidTaskTokenError(str(exc)) from exc
        claims = caller(request)
        auth.require(claims, Target.on(Permission.WORKER, namespace))
        if ack_queue is not None:  # the same check as POST /queues/{queue}/ack, before anything happens
            auth.require(claims, queue_target(orc.prefix, ack_queue, "ack"))
        cancel_requested = await orc.completions.handle(reply)
        if ack_queue is None or ack_receipt is None:
            return Response(_COMPLETED[cancel_requested], media_type="application/json")
        # Only after the reply was applied: had that failed, the delivery would stay leased and come back.
        try:
            await broker.ack(Delivery(queue=ack_queue, body=b"", receipt=ack_receipt))
        except BrokerError as exc:  # applied, not acked: the worker acks it itself
            log.warning("applied a completion but could not ack its delivery on %s: %s", ack_queue, exc)
            return Response(_COMPLETED[cancel_requested], media_type="application/json")
        return Response(_COMPLETED_ACKED[cancel_requested], media_type="application/json")

    # the built-in broker, for remote workers ---------------------------------------------------
    # The hot routes below return pre-encoded JSON (a ``Response``), which FastAPI sends as is:
    # ``response_model`` only documents it. Their answers must stay valid for that model.
    @app.post("/api/v1/queues/{queue}/receive", response_model=H.ReceiveResponse, dependencies=[on_queue("receive")])
    async def receive(queue: str, body: H.ReceiveRequest, request: Request) -> Response:
        deliveries = await _receive_unless_gone(
            request, queue, max(1, min(body.max_messages, 100)), min(max(body.wait, 0.0), 30.0)
        )
        return Response(_receive_response(deliveries), media_type="application/json")

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

    @app.post("/api/v1/queues/{queue}/ack", response_model=H.Ack, dependencies=[on_queue("ack")])
    async def ack(queue: str, body: H.SettleRequest) -> Response:
        await broker.ack(Delivery(queue=queue, body=b"", receipt=body.receipt))
        return Response(_ACKED, media_type="application/json")

    @app.post("/api/v1/queues/{queue}/nack", response_model=H.Ack, dependencies=[on_queue("nack")])
    async def nack(queue: str, body: H.SettleRequest) -> Response:
        await broker.nack(Delivery(queue=queue, body=b"", receipt=body.receipt), requeue=body.requeue, reason=body.reason)
        return Response(_ACKED, media_type="application/json")

    @app.post("/api/v1/queues/{queue}/publish", response_model=H.PublishResponse, dependencies=[on_queue("publish")])
    async def publish(queue: str, body: H.PublishRequest, request: Request) -> H.PublishResponse:
        if body.fallback is not None:
            _check_sticky(queue, body.fallback, request)
            message_id = await broker.publish_sticky(queue, body.fallback, body.body.encode(), body.headers)
            return H.PublishResponse(message_id=message_id)
        return H.PublishResponse(message_id=await broker.publish(queue, body.body.encode(), body.headers))

    def _check_sticky(queue: str, fallback: str, request: Request) -> None:
        """A sticky queue and its fallback: ``{prefix}.{ns}.sticky.*`` and ``{prefix}.{ns}.*.wf``, one namespace."""
        parts, target = queue.split(".", 3), fallback.split(".", 2)
        if len(parts) < 4 or parts[2] != "sticky" or parts[:2] != target[:2] or not fallback.endswith(".wf"):
            raise InvalidArgumentError(
                f"{queue!r} with fallback {fallback!r} is not a sticky queue and a workflow task queue of one "
                f"namespace ({orc.prefix}.NS.sticky.WORKER and {orc.prefix}.NS.TASK_QUEUE.wf)"
            )
        auth.require(caller(request), queue_target(orc.prefix, fallback, "publish"))

    @app.post("/api/v1/queues/{queue}/sticky", response_model=H.Ack, dependencies=[on_queue("receive")])
    async def declare_sticky(queue: str, body: H.StickyQueueRequest, request: Request) -> H.Ack:
        _check_sticky(queue, body.fallback, request)
        await broker.declare_sticky_queue(queue, fallback=body.fallback, timeout=min(max(body.timeout, 0.1), 600.0))
        return H.Ack()

    @app.delete("/api/v1/queues/{queue}/sticky", response_model=H.Ack, dependencies=[on_queue("receive")])
    async def delete_sticky(queue: str) -> H.Ack:
        await broker.delete_sticky_queue(queue)
        return H.Ack()

    @app.get("/api/v1/dlq", response_model=H.DeadLettersResponse, dependencies=[on_cluster(Target.on_cluster(Permission.ADMIN))])
    async def dlq(limit: int = 100) -> H.DeadLettersResponse:
        items = await broker.dead_letters(limit)
        return H.DeadLettersResponse(
            dead_letters=[
                H.DeadLetterItem(queue=d.queue, body=d.body.decode(errors="replace"), reason=d.reason, headers=d.headers, message_id=d.message_id)
                for d in items
            ]
        )

    add_codec_routes(app, codec_lookup(orc.config.payload_codecs), auth, max_payload_bytes=max_body)
    return app


def _history_warnings(s: ExecutionState, hard: int | None, warn: int | None) -> list[str]:
    length = s.next_event_id - 1
    if not s.is_open or warn is None or length < warn:
        return []
    limit = f"; the run is terminated at {hard} events" if hard is not None else ""
    return [
        f"history has {length} events, past the namespace's warning threshold of {warn}{limit}: "
        "use continue-as-new to start a fresh history"
    ]


def _redact_url(url: str) -> str:
    """``scheme://user:***@host/...``: the URL without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


_COMPLETE_DESCRIPTION = (
    "How SDK workers report a workflow task's commands or an activity's outcome (the same JSON replies a plain "
    "service publishes to `sagas.completions`). `409 stale_task` for a task that is no longer pending (harmless), "
    "`400 invalid_task_token` for a forged token. A worker of the built-in broker names the delivery it answers "
    "with `ack_queue` and `ack_receipt` (which need the same permission as `POST /api/v1/queues/{queue}/ack`): "
    "the server acks it once the reply is applied and answers `acked: true`, saving the separate ack. When the "
    "reply is refused (any error) the delivery is not acked; it comes back after its visibility timeout unless "
    "the worker settles it."
)


def _encoded(model: H.Ack) -> bytes:
    return model.model_dump_json().encode()


_ACKED = _encoded(H.Ack())
"""The body of every plain ``Ack`` answer, encoded once."""
_COMPLETED = {c: _encoded(H.CompleteTaskResponse(cancel_requested=c)) for c in (False, True)}
_COMPLETED_ACKED = {c: _encoded(H.CompleteTaskResponse(cancel_requested=c, acked=True)) for c in (False, True)}


def _receive_response(deliveries: list[Delivery]) -> bytes:
    """A ``ReceiveResponse`` as JSON, in one dump (no model object per message)."""
    return json.dumps(
        {
            "deliveries": [
                {
                    "message_id": d.message_id,
                    "body": d.body.decode(),
                    "headers": d.headers,
                    "delivery_count": d.delivery_count,
                    "receipt": str(d.receipt),
                }
                for d in deliveries
            ]
        },
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode()


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
                response = error_response(
                    PayloadTooLargeError(f"request body of {int(length)} bytes is over the limit of {self.max_bytes} bytes")
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)



_BODY_KEY = "sagas.request_body"


class _KeepBody:
    """Reads an API request's body once and keeps it in the scope (``_BODY_KEY``), so that a request
    for a shard owned by another process can be forwarded there with its body (pure ASGI)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/api/v1/namespaces/") and scope["path"] != "/api/v1/tasks/complete":
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        scope[_BODY_KEY] = body
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # then the client's disconnect, as without this middleware

        await self.app(scope, replay, send)


_OPEN_PATHS = ("/api/", "/healthz", "/metrics", "/openapi.json", "/docs", "/redoc")
"""Paths the page guard leaves alone: the API authorizes per route, the rest holds no workflow data."""

_NAMESPACE_PAGE = re.compile(r"^/namespaces/([^/]+)")


class _PageGuard:
    """Authorizes the web UI's pages (which read the store directly) when authorization is on:
    ``/namespaces/{ns}/...`` needs read on ``ns``, ``/namespaces`` read on every namespace, any
    other page read on some namespace. The UI has no login: a proxy in front must add the
    ``Authorization`` header. Pure ASGI, like :class:`_BodyLimit`."""

    def __init__(self, app: ASGIApp, auth: FrontendAuth) -> None:
        self.app = app
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] == "http" and not path.startswith(_OPEN_PATHS):
            try:
                claims = self.auth.authenticate(Headers(scope=scope).get("authorization"))
                self.auth.require(claims, _page_target(path))
            except OrchestratorError as exc:
                await error_response(exc)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _page_target(path: str) -> Target:
    if match := _NAMESPACE_PAGE.match(path):
        return Target.on(Permission.READ, match.group(1))
    if path.rstrip("/") == "/namespaces":
        return Target.on_cluster(Permission.READ)
    return Target.on_some_namespace(Permission.READ)
