"""Client of the dev server's built-in broker, reached over HTTP (``local://host:port``).

The server keeps the queues in its own store and serves them under
``/api/v1/queues/{queue}/...`` with long-poll receive (see
``orchestrator.api.http``). Workers use this client; it speaks only HTTP, so a
worker process never loads the server.

::

    broker = await open_broker("local://127.0.0.1:7233")
    [d] = await broker.receive("sagas.default.trips.act", wait=20.0)
    await broker.ack(d)

Options in the URL query string: ``tls=1`` (HTTPS), ``tls_ca=PATH`` (verify
the server with this CA instead of the system's), ``timeout=SECONDS``
(per-request timeout on top of the long-poll wait, default 10). When the
server requires credentials, :meth:`LocalBrokerClient.from_url` sends the
``SAGAS_API_KEY`` environment variable as a bearer token. SDK workers need
none of this: they reuse their client's address, credentials and TLS.
"""

from __future__ import annotations

import os
import ssl
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from brokers.base import Broker, BrokerError, DeadLetter, Delivery, parse_broker_url
from orchestrator.api.http import (
    Ack,
    DeadLettersResponse,
    ErrorBody,
    PublishRequest,
    PublishResponse,
    ReceiveRequest,
    ReceiveResponse,
    SettleRequest,
    StickyQueueRequest,
)

_M = TypeVar("_M", bound=BaseModel)


class LocalBrokerClient(Broker):
    """The worker side of the built-in broker (``local://host:port``)."""

    durable = True  # the server keeps the outbox row / stored message

    def __init__(
        self,
        base_url: str,
        *,
        headers: dict[str, str] | None = None,
        verify: ssl.SSLContext | bool = True,
        request_timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        sni_hostname: str | None = None,
    ) -> None:
        """``base_url`` is the server's root, e.g. ``http://127.0.0.1:7233``; ``headers`` carry the
        credentials (``authorization``), ``verify`` the TLS context, ``sni_hostname`` the name the
        server certificate is checked against when it is not the URL's host."""
        self.base_url = base_url.rstrip("/")
        self._headers = dict(headers or {})
        self._verify = verify
        self._extensions: dict[str, Any] = {"sni_hostname": sni_hostname} if sni_hostname else {}
        self._request_timeout = request_timeout
        self._transport = transport
        self._http: httpx.AsyncClient | None = None

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        verify: ssl.SSLContext | bool = True,
    ) -> LocalBrokerClient:
        """Build from ``local://host:port[?tls=1&timeout=10]``."""
        scheme, location, options = parse_broker_url(url)
        if scheme != "local":
            raise BrokerError(f"LocalBrokerClient needs a local://host:port URL, got {url!r}")
        host = location.strip("/")
        if not host:
            raise BrokerError(
                f"broker URL {url!r} names no server; use local://host:port, e.g. local://127.0.0.1:7233"
            )
        tls_ca = options.get("tls_ca")
        http_scheme = "https" if tls_ca or options.get("tls", "").lower() in ("1", "true", "yes") else "http"
        timeout = float(options.get("timeout", "10"))
        if tls_ca and verify is True:
            try:
                verify = ssl.create_default_context(cafile=tls_ca)
            except (OSError, ssl.SSLError) as exc:
                raise BrokerError(f"broker URL {url!r}: cannot load tls_ca {tls_ca!r}: {exc}") from exc
        if headers is None and (api_key := os.environ.get("SAGAS_API_KEY")):
            headers = {"authorization": f"Bearer {api_key}"}
        return cls(f"{http_scheme}://{host}", headers=headers, verify=verify, request_timeout=timeout)

    # -- lifecycle ---------------------------------------------------------

    async def connect(self) -> None:
        if self._http is not None:
            return
        kwargs: dict[str, Any] = {
            "base_url": f"{self.base_url}/api/v1",
            "headers": self._headers,
            "timeout": httpx.Timeout(self._request_timeout),
        }
        if self._transport is not None:
            kwargs["transport"] = self._transport
        else:
            kwargs["verify"] = self._verify
        self._http = httpx.AsyncClient(**kwargs)
        # Fail early with a clear message when the server is not there.
        await self._call("GET", "/cluster")

    async def aclose(self) -> None:
        if self._http is not None:
            http, self._http = self._http, None
            await http.aclose()

    # -- broker operations -------------------------------------------------

    async def declare_queue(self, queue: str) -> None:
        # The server creates built-in queues on first use.
        return None

    async def publish(self, queue: str, body: bytes, headers: dict[str, str] | None = None) -> str:
        req = PublishRequest(body=body.decode(), headers=dict(headers or {}))
        data = await self._call("POST", f"/queues/{_q(queue)}/publish", req)
        return _parse(PublishResponse, data, self.base_url).message_id

    async def receive(self, queue: str, max_messages: int = 1, wait: float = 0.0) -> list[Delivery]:
        req = ReceiveRequest(max_messages=max_messages, wait=wait)
        data = await self._call(
            "POST", f"/queues/{_q(queue)}/receive", req, timeout=wait + self._request_timeout
        )
        resp = _parse(ReceiveResponse, data, self.base_url)
        return [
            Delivery(
                queue=queue,
                body=d.body.encode(),
                headers=dict(d.headers),
                message_id=d.message_id,
                delivery_count=d.delivery_count,
                receipt=d.receipt,
            )
            for d in resp.deliveries
        ]

    async def ack(self, delivery: Delivery) -> None:
        req = SettleRequest(receipt=str(delivery.receipt))
        _parse(Ack, await self._call("POST", f"/queues/{_q(delivery.queue)}/ack", req), self.base_url)

    async def nack(self, delivery: Delivery, *, requeue: bool = True, reason: str = "") -> None:
        req = SettleRequest(receipt=str(delivery.receipt), requeue=requeue, reason=reason)
        _parse(Ack, await self._call("POST", f"/queues/{_q(delivery.queue)}/nack", req), self.base_url)

    # -- sticky queues: kept by the server's MemoryBroker, alive while this client polls them --

    sticky_routing = True

    async def declare_sticky_queue(self, queue: str, *, fallback: str, timeout: float) -> None:
        req = StickyQueueRequest(fallback=fallback, timeout=timeout)
        _parse(Ack, await self._call("POST", f"/queues/{_q(queue)}/sticky", req), self.base_url)

    async def delete_sticky_queue(self, queue: str) -> None:
        _parse(Ack, await self._call("DELETE", f"/queues/{_q(queue)}/sticky"), self.base_url)

    async def publish_sticky(self, queue: str, fallback: str, body: bytes, headers: dict[str, str] | None = None) -> str:
        req = PublishRequest(body=body.decode(), headers=dict(headers or {}), fallback=fallback)
        data = await self._call("POST", f"/queues/{_q(queue)}/publish", req)
        return _parse(PublishResponse, data, self.base_url).message_id

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        data = await self._call("GET", "/dlq", params={"limit": limit})
        resp = _parse(DeadLettersResponse, data, self.base_url)
        return [
            DeadLetter(
                queue=d.queue,
                body=d.body.encode(),
                reason=d.reason,
                headers=dict(d.headers),
                message_id=d.message_id,
            )
            for d in resp.dead_letters
        ]

    # -- HTTP ----------------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        body: BaseModel | None = None,
        *,
        params: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Any:
        if self._http is None:
            raise BrokerError(f"broker client for {self.base_url} is not connected (call connect() first)")
        try:
            resp = await self._http.request(
                method,
                path,
                content=body.model_dump_json().encode() if body is not None else None,
                headers={"content-type": "application/json"} if body is not None else None,
                params=params,
                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
                extensions=self._extensions or None,
            )
        except httpx.TimeoutException as exc:
            raise BrokerError(
                f"built-in broker at {self.base_url} did not answer {method} {path} in time ({exc!r})"
            ) from exc
        except httpx.HTTPError as exc:
            raise BrokerError(
                f"cannot reach the built-in broker at {self.base_url} ({type(exc).__name__}: {exc}); "
                "is the server running (`sagas server start-dev`)?"
            ) from exc
        if resp.status_code >= 400:
            try:
                err = ErrorBody.model_validate_json(resp.content)
                detail = f"{err.code}: {err.message}" + (f" ({err.hint})" if err.hint else "")
            except ValidationError:
                detail = resp.text[:200]
            raise BrokerError(
                f"built-in broker at {self.base_url} refused {method} {path}: HTTP {resp.status_code} {detail}"
            )
        try:
            return resp.json()
        except ValueError as exc:
            raise BrokerError(
                f"built-in broker at {self.base_url} answered {method} {path} with non-JSON: {resp.text[:200]!r}"
            ) from exc


def _q(queue: str) -> str:
    return quote(queue, safe="")


def _parse(model: type[_M], data: Any, base_url: str) -> _M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise BrokerError(
            f"built-in broker at {base_url} sent an unexpected {model.__name__}: {exc.errors()[:2]}"
        ) from exc
