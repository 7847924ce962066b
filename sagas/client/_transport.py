"""HTTP transport of the client: one ``httpx.AsyncClient``, retries, and error mapping.

Every error a caller can meet is a :mod:`sagas.exceptions` type: an HTTP
error body (``orchestrator.api.http.ErrorBody``) becomes the matching
exception by its stable ``code``; a connection failure becomes
``RPCError(code="unavailable")`` with a hint to start the server. Users never
see ``httpx`` exceptions.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from orchestrator.api.common import Failure
from orchestrator.api.http import ErrorBody
from sagas.client._tls import TLSConfig
from sagas.exceptions import (
    ApplicationError,
    RPCError,
    WorkflowAlreadyStartedError,
    WorkflowNotFoundError,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
    failure_to_error,
)

M = TypeVar("M", bound=BaseModel)

API_PREFIX = "/api/v1"

_RETRY_DELAYS = (0.1, 0.3, 0.8)
"""Back-off between attempts of a call that may be retried (connection errors, 503)."""

_START_HINT = "start a server with `sagas server start-dev`, or pass the right address"

MAX_KEEPALIVE_CONNECTIONS = 16
"""Connections the client keeps open for reuse (``httpx.Limits.max_keepalive_connections``).

httpcore walks every pooled connection on every request (expiry and a socket-readable probe
each, ``AsyncConnectionPool._assign_requests_to_connections``), so a big pool costs CPU on every
call: with 100 a worker spent about half its time there (``bench/results/PROFILE.md``). httpcore
1.0 also closes a released connection whenever the pool holds more than this many connections
in all (busy ones included), so it bounds the pool, not only the idle connections. 16 covers a
worker's long polls (one per polled queue, at most four) plus a dozen concurrent replies;
more concurrent calls still work (``max_connections``) on short-lived connections. Measured on
the one-activity benchmark at 32 concurrent workflows (worker CPU ms per workflow): 100 and 32
cost the same (~11.3), 16 about 7.5, 8 about 6.4; 16 keeps connection churn (a TLS handshake
each, with TLS) low for busier workers.
"""

_MAX_RATE_LIMIT_WAIT = 5.0
"""Longest ``Retry-After`` a rate-limited call waits before its next attempt."""


def base_url_of(target_host: str, tls: bool | ssl.SSLContext | TLSConfig) -> str:
    """``localhost:7233`` -> ``http://localhost:7233`` (``https`` with TLS); full URLs pass through."""
    target = target_host.strip().rstrip("/")
    if target.startswith(("http://", "https://")):
        return target
    scheme = "https" if tls else "http"
    return f"{scheme}://{target}"


def error_from_body(status: int, body: ErrorBody, *, context: dict[str, str] | None = None) -> Exception:
    """Map an API error body to the :mod:`sagas.exceptions` type for its code."""
    ctx = context or {}
    text = body.message + (f" ({body.hint})" if body.hint else "")
    code = body.code
    if code == "workflow_not_found":
        return WorkflowNotFoundError(text, code, status)
    if code == "workflow_already_started":
        return WorkflowAlreadyStartedError(
            str(body.details.get("workflow_id") or ctx.get("workflow_id", "")),
            str(body.details.get("workflow_type") or ctx.get("workflow_type", "")),
            run_id=body.details.get("run_id") or None,
        )
    if code == "query_failed":
        return WorkflowQueryFailedError(body.message)
    if code == "update_rejected":
        cause: BaseException
        raw = body.details.get("failure")
        try:
            cause = failure_to_error(Failure.model_validate(raw)) if raw else ApplicationError(body.message)
        except ValidationError:
            cause = ApplicationError(body.message)
        return WorkflowUpdateFailedError(cause=cause)
    return RPCError(text, code, status)


def error_from_response(resp: httpx.Response, *, context: dict[str, str] | None = None) -> Exception:
    """Map a non-2xx response to an exception (a body that is not ErrorBody becomes RPCError)."""
    try:
        body = ErrorBody.model_validate_json(resp.content)
    except ValidationError:
        code = {404: "not_found", 429: "rate_limited", 503: "unavailable"}.get(resp.status_code, "internal")
        snippet = resp.text[:300].strip() or resp.reason_phrase
        return RPCError(
            f"HTTP {resp.status_code} from {resp.request.method} {resp.request.url.path}: {snippet}",
            code,
            resp.status_code,
        )
    return error_from_body(resp.status_code, body, context=context)


class Transport:
    """Calls the orchestrator's HTTP API (``/api/v1``) and maps its errors."""

    def __init__(
        self,
        target_host: str,
        *,
        api_key: str | None = None,
        tls: bool | ssl.SSLContext | TLSConfig = False,
        timeout: float = 30.0,
        http_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url_of(target_host, tls)
        self.headers: dict[str, str] = {"accept": "application/json"}
        if api_key:
            self.headers["authorization"] = f"Bearer {api_key}"
        self.verify: ssl.SSLContext | bool = (
            tls.ssl_context() if isinstance(tls, TLSConfig) else tls if isinstance(tls, ssl.SSLContext) else True
        )
        self.sni_hostname = tls.domain if isinstance(tls, TLSConfig) else None
        """Name the server certificate is checked against, when not the address's host."""
        self.extensions: dict[str, Any] = {"sni_hostname": self.sni_hostname} if self.sni_hostname else {}
        self.timeout = timeout
        kwargs: dict[str, Any] = {
            "base_url": self.base_url + API_PREFIX,
            "headers": self.headers,
            "timeout": httpx.Timeout(timeout, pool=None),
            "limits": httpx.Limits(max_connections=1000, max_keepalive_connections=MAX_KEEPALIVE_CONNECTIONS),
        }
        if http_transport is not None:
            kwargs["transport"] = http_transport
        else:
            kwargs["verify"] = self.verify
        self._http = httpx.AsyncClient(**kwargs)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def call(
        self,
        method: str,
        path: str,
        body: BaseModel | None = None,
        *,
        params: dict[str, Any] | None = None,
        timeout: float | None = None,
        idempotent: bool = True,
        context: dict[str, str] | None = None,
    ) -> Any:
        """Send one request and return the decoded JSON answer.

        Connection failures are retried (the request never left); read errors
        and ``503 unavailable`` only when ``idempotent``.
        """
        content = body.model_dump_json().encode() if body is not None else None
        headers = {"content-type": "application/json"} if content is not None else None
        clean_params = {k: v for k, v in (params or {}).items() if v is not None}
        attempt = 0
        while True:
            try:
                resp = await self._http.request(
                    method,
                    path,
                    content=content,
                    headers=headers,
                    params=clean_params or None,
                    timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
                    extensions=self.extensions or None,
                )
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                if attempt < len(_RETRY_DELAYS):
                    await asyncio.sleep(_RETRY_DELAYS[attempt])
                    attempt += 1
                    continue
                raise RPCError(
                    f"cannot connect to the orchestrator at {self.base_url} ({_describe(exc)}); {_START_HINT}",
                    "unavailable",
                    503,
                ) from None
            except httpx.TimeoutException as exc:
                if idempotent and attempt < len(_RETRY_DELAYS):
                    await asyncio.sleep(_RETRY_DELAYS[attempt])
                    attempt += 1
                    continue
                raise RPCError(
                    f"the orchestrator at {self.base_url} did not answer {method} {path} in time ({_describe(exc)})",
                    "deadline_exceeded",
                    504,
                ) from None
            except httpx.HTTPError as exc:
                if idempotent and attempt < len(_RETRY_DELAYS):
                    await asyncio.sleep(_RETRY_DELAYS[attempt])
                    attempt += 1
                    continue
                raise RPCError(
                    f"lost the connection to the orchestrator at {self.base_url} during {method} {path} "
                    f"({_describe(exc)}); the call may or may not have taken effect",
                    "unavailable",
                    503,
                ) from None
            if resp.status_code == 429 and attempt < len(_RETRY_DELAYS):
                # Refused before it reached the engine: safe to send again once a token is free.
                await asyncio.sleep(min(_retry_after(resp, _RETRY_DELAYS[attempt]), _MAX_RATE_LIMIT_WAIT))
                attempt += 1
                continue
            if resp.status_code == 503 and idempotent and attempt < len(_RETRY_DELAYS):
                await asyncio.sleep(_RETRY_DELAYS[attempt])
                attempt += 1
                continue
            if resp.status_code >= 400:
                raise error_from_response(resp, context=context)
            try:
                return resp.json()
            except ValueError:
                raise RPCError(
                    f"the server at {self.base_url} answered {method} {path} with something that is not JSON "
                    f"(is it a sagas orchestrator?): {resp.text[:200]!r}",
                    "internal",
                    resp.status_code,
                ) from None

    async def call_model(
        self,
        model: type[M],
        method: str,
        path: str,
        body: BaseModel | None = None,
        **kwargs: Any,
    ) -> M:
        """Like :meth:`call` and validate the answer as ``model``."""
        data = await self.call(method, path, body, **kwargs)
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            raise RPCError(
                f"unexpected answer to {method} {path} (not a {model.__name__}): {exc.errors()[:2]}; "
                "are the client and server versions compatible?",
                "internal",
                500,
            ) from None


def _retry_after(resp: httpx.Response, default: float) -> float:
    """Seconds of the response's ``Retry-After`` (``default`` when absent or an HTTP date)."""
    try:
        return max(0.0, float(resp.headers["retry-after"]))
    except (KeyError, ValueError):
        return default


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
