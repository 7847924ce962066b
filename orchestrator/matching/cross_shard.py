"""History operations on another process's shard: children, external signals and cancels, closes.

A transfer task of one workflow sometimes acts on another workflow: start a
child, signal or cancel an external workflow, report a child's close to its
parent, apply a parent close policy to children. In a cluster the other
workflow's shard may be owned by another process; the operation is then sent
to that process (``POST /api/v1/internal/history``, found through the
:class:`~orchestrator.membership.ShardRouter`) instead of waiting in the
outbox until one process happens to own both shards.

The request is signed with the cluster's task-token key (HMAC-SHA256 of the
body, header :data:`SIGNATURE_HEADER`), so only members of the cluster can
call the endpoint; it needs no user credentials. Errors travel back as the
usual error body and are raised again here as the same
:class:`~orchestrator.errors.OrchestratorError` class, so the caller handles a
remote ``workflow_not_found`` exactly like a local one. When the owner cannot
be reached, :class:`~orchestrator.errors.ShardNotOwnedError` leaves the task
in the outbox for the next sweep.

Example::

    remote = CrossShardClient(router, token_key)
    await remote.call(shard, HistoryOp(op="signal", namespace="default", workflow_id="order-7",
                                       signal_name="paid", input=[{"amount": 12}], request_id="ext:r1:9"))
"""

from __future__ import annotations

import hashlib
import hmac
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field, TypeAdapter

from orchestrator.api import events as E
from orchestrator.errors import ERRORS_BY_CODE, OrchestratorError, ShardNotOwnedError
from orchestrator.history.engine import StartRequest

if TYPE_CHECKING:
    from orchestrator.history.service import HistoryService
    from orchestrator.membership import ShardRouter

SIGNATURE_HEADER = "x-sagas-cluster-signature"
PATH = "/api/v1/internal/history"

_START = TypeAdapter(StartRequest)
_EVENT: TypeAdapter[E.HistoryEvent] = TypeAdapter(E.HistoryEvent)


class HistoryOp(BaseModel):
    """One operation on a workflow of another shard (the body of ``POST /api/v1/internal/history``)."""

    op: Literal["start", "signal", "request_cancel", "terminate", "child_closed"]
    namespace: str
    workflow_id: str
    run_id: str = ""
    start: dict[str, Any] | None = None
    """``start``: the :class:`StartRequest`, as JSON."""
    signal_name: str = ""
    input: list[Any] = Field(default_factory=list)
    request_id: str = ""
    reason: str = ""
    initiated_event_id: int = 0
    close_event: dict[str, Any] | None = None
    """``child_closed``: the child's close event, as JSON."""


class HistoryOpResult(BaseModel):
    run_id: str = ""
    started: bool = False


def sign(key: bytes, body: bytes) -> str:
    """The signature of an internal request body.

    Example::

        >>> sign(b"k" * 32, b"{}")[:16]
        '3ee8b232b00d38a6'
    """
    return hmac.new(key, body, hashlib.sha256).hexdigest()


def verify(key: bytes, body: bytes, signature: str) -> bool:
    """True when ``signature`` is :func:`sign` of ``body`` (constant-time comparison)."""
    return hmac.compare_digest(sign(key, body), signature)


def start_op(req: StartRequest) -> HistoryOp:
    """The ``start`` operation for ``req`` (a child start)."""
    return HistoryOp(op="start", namespace=req.namespace, workflow_id=req.workflow_id,
                     start=_START.dump_python(req, mode="json"))  # fmt: skip


def child_closed_op(ns: str, wid: str, rid: str, initiated: int, close_event: E.HistoryEvent) -> HistoryOp:
    """The ``child_closed`` operation: tell the parent (``ns/wid/rid``) its child closed."""
    return HistoryOp(op="child_closed", namespace=ns, workflow_id=wid, run_id=rid, initiated_event_id=initiated,
                     close_event=close_event.model_dump(mode="json"))  # fmt: skip


async def apply(history: HistoryService, op: HistoryOp) -> HistoryOpResult:
    """Run ``op`` on this process's history service (it must own the workflow's shard)."""
    engine = history.engine
    ns, wid, rid = op.namespace, op.workflow_id, op.run_id
    match op.op:
        case "start":
            run_id, started = await history.start(_START.validate_python(op.start or {}))
            return HistoryOpResult(run_id=run_id, started=started)
        case "signal":
            name, payloads, request_id = op.signal_name, list(op.input), op.request_id
            await history.update(ns, wid, rid, lambda s, now: engine.signal(s, name, payloads, now=now, request_id=request_id))
        case "request_cancel":
            reason = op.reason
            await history.update(ns, wid, rid, lambda s, now: engine.request_cancel(s, now=now, reason=reason))
        case "terminate":
            reason = op.reason
            await history.update(ns, wid, rid, lambda s, now: engine.terminate(s, now=now, reason=reason))
        case "child_closed":
            event, initiated = _EVENT.validate_python(op.close_event or {}), op.initiated_event_id
            await history.update(ns, wid, rid, lambda s, now: engine.child_closed(s, initiated, event, now=now))
    return HistoryOpResult()


class CrossShardClient:
    """Sends :class:`HistoryOp` to the owner of a shard (see the module docstring)."""

    def __init__(self, router: ShardRouter, token_key: bytes) -> None:
        self.router = router
        self.token_key = token_key

    async def call(self, shard: int, op: HistoryOp) -> HistoryOpResult:
        body = op.model_dump_json().encode()
        headers = {"content-type": "application/json", SIGNATURE_HEADER: sign(self.token_key, body)}
        response = await self.router.forward(shard, "POST", PATH, body=body, headers=headers)
        if response is None:
            raise ShardNotOwnedError(shard)
        if response.status_code < 300:
            return HistoryOpResult.model_validate_json(response.content)
        try:
            err = response.json()
            code, message = str(err.get("code", "")), str(err.get("message", ""))
        except ValueError:
            code, message = "", response.text[:300]
        if code == "shard_not_owned" or response.status_code == 503:
            raise ShardNotOwnedError(shard)  # moved meanwhile: the outbox retries
        raise ERRORS_BY_CODE.get(code, OrchestratorError)(f"on the owner of shard {shard}: {message}")
