"""The payload codec server: decode (and encode) payloads for authorized users only.

Payloads encoded by a :class:`~sagas.converter.PayloadCodec` (e.g.
``sagas.contrib.encryption.AESGCMCodec``) are stored and shown as
``{"__sagas_codec__": name, "data": base64}``. The web UI (or any tool) posts
them here to show them in clear::

    POST /api/v1/codec/decode   {"namespace": "payments", "payloads": [...]}   (needs read on the namespace)
    POST /api/v1/codec/encode   {"namespace": "payments", "payloads": [...]}   (needs write)

Payloads of no codec pass through unchanged. Codecs are configured per
namespace (``"*"``: every namespace). Where the codec holds encryption keys,
whoever runs this endpoint can read the payloads: for end-to-end encryption
run it as its own process next to the key holders with :func:`create_codec_app`
rather than inside the orchestrator (``docs/security.md``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse

from orchestrator.api import http as H
from orchestrator.errors import InvalidArgumentError, OrchestratorError
from orchestrator.frontend.auth import FrontendAuth, Permission, Target, permission_check
from sagas.converter import DataConverter, PayloadCodec
from sagas.exceptions import ApplicationError


def codec_lookup(codecs: Mapping[str, PayloadCodec] | None) -> Callable[[str], PayloadCodec | None]:
    """``namespace -> codec`` from a mapping whose ``"*"`` entry applies to every namespace."""
    table = dict(codecs or {})
    return lambda namespace: table.get(namespace) or table.get("*")


def add_codec_routes(
    app: FastAPI,
    codec_of: Callable[[str], PayloadCodec | None],
    auth: FrontendAuth,
    *,
    max_payload_bytes: int,
) -> None:
    """Add ``POST /api/v1/codec/decode`` and ``/encode`` to ``app``."""

    @permission_check
    def some_reader(request: Request) -> None:
        # The precise check (the body's namespace) is in the route; this one runs before the body is read.
        auth.require(auth.caller(request), Target.on_some_namespace(Permission.READ))

    def converter(namespace: str) -> DataConverter:
        codec = codec_of(namespace)
        if codec is None:
            raise InvalidArgumentError(
                f"no payload codec is configured for namespace {namespace!r}",
                hint="Configure one (OrchestratorConfig.payload_codecs) or decode on the client side.",
            )
        return DataConverter(payload_codec=codec, max_payload_bytes=max_payload_bytes)

    @app.post("/api/v1/codec/decode", response_model=H.CodecResponse, dependencies=[Depends(some_reader)])
    async def decode(body: H.CodecRequest, request: Request) -> H.CodecResponse:
        auth.require(auth.caller(request), Target.on(Permission.READ, body.namespace))
        return H.CodecResponse(payloads=_convert(lambda: converter(body.namespace).from_payloads(body.payloads)))

    @app.post("/api/v1/codec/encode", response_model=H.CodecResponse, dependencies=[Depends(some_reader)])
    async def encode(body: H.CodecRequest, request: Request) -> H.CodecResponse:
        auth.require(auth.caller(request), Target.on(Permission.WRITE, body.namespace))
        return H.CodecResponse(payloads=_convert(lambda: converter(body.namespace).to_payloads(body.payloads)))


def _convert(fn: Callable[[], list[Any]]) -> list[Any]:
    try:
        return fn()
    except ApplicationError as exc:
        raise InvalidArgumentError(f"cannot convert the payloads: {exc.message}") from None


def create_codec_app(codecs: Mapping[str, PayloadCodec], auth: FrontendAuth, *, max_payload_bytes: int = 2 * 1024 * 1024) -> FastAPI:
    """A stand-alone codec server (run it with uvicorn next to the key holders)."""
    from orchestrator.frontend.app import error_response  # app.py imports this module

    app = FastAPI(title="sagas codec server")

    @app.exception_handler(OrchestratorError)
    async def _error(_: Request, exc: OrchestratorError) -> JSONResponse:
        return error_response(exc)

    add_codec_routes(app, codec_lookup(codecs), auth, max_payload_bytes=max_payload_bytes)
    return app
