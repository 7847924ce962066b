"""Schemathesis fuzzes every operation of the OpenAPI spec against a real in-process server.

Checks: no 5xx, status codes / content types / bodies conform to the spec. Bounded and
reproducible (a fixed number of examples per operation, derandomized). Long polls are excluded
(``receive`` and ``result`` would wait up to their fuzzed ``wait``); their validation is covered by
their own tests.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks

from orchestrator.server import DevServer

NOT_CHECKED = [
    # A schema-valid request may still be refused with a documented 4xx the schema cannot express:
    # a list query's grammar, a signed task token, a payload codec that is not configured.
    checks.positive_data_acceptance,
    # Starlette answers a wrong method with the ``Allow`` of the first route matching the path
    # (FastAPI has one route per method), not all of them.
    checks.unsupported_method,
    checks.allow_header_conformance,
    # pydantic's lax mode coerces JSON ``false`` to ``0.0`` and ``0`` to ``false``: accepted on purpose.
    checks.negative_data_rejection,
]
LONG_POLLS = ("/api/v1/queues/{queue}/receive", "/api/v1/namespaces/{ns}/workflows/{wid}/result")


class _ServerThread:
    """A ``DevServer(store_url="memory://", port=0)`` on its own event loop in a thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server = DevServer(store_url="memory://", port=0)

    def __enter__(self) -> DevServer:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(30)
        return self.server

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def _spec() -> dict[str, Any]:
    """Today's spec, as a server serves it (a short-lived server at collection: the pytest plugin
    of schemathesis needs the operations before the module's fixtures exist)."""

    async def fetch() -> dict[str, Any]:
        server = DevServer(store_url="memory://", port=0)
        await server.start()
        try:
            async with httpx.AsyncClient() as http:
                return dict((await http.get(f"{server.url}/openapi.json")).json())
        finally:
            await server.stop()

    return asyncio.run(fetch())


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    with _ServerThread() as server:
        yield server.url


schema = schemathesis.openapi.from_dict(_spec()).exclude(path=list(LONG_POLLS))


@schema.parametrize()
@settings(
    max_examples=15,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_api_conforms_to_its_openapi_spec(case: schemathesis.Case, server_url: str) -> None:
    case.call_and_validate(base_url=server_url, timeout=30, excluded_checks=NOT_CHECKED)
