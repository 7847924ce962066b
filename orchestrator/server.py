"""Wiring of the orchestrator's services, and the dev server that runs them in one process.

    server = DevServer(store_url="sqlite:///sagas.db", port=7233)
    await server.start()      # frontend on http://127.0.0.1:7233
    ...
    await server.stop()

:class:`Orchestrator` holds the services (history, matching, timers,
completions, visibility) around one store and one broker; :class:`DevServer`
adds the HTTP frontend (uvicorn) on a port. ``start-dev`` uses the embedded
default: SQLite and the built-in broker, which remote workers reach over the
frontend's ``/api/v1/queues`` endpoints (``local://host:port``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import socket
from dataclasses import dataclass
from typing import Any

import uvicorn

from brokers.base import Broker, BrokerError
from brokers.memory import MemoryBroker
from orchestrator.api.events import HistoryEvent
from orchestrator.errors import PayloadTooLargeError, UnsupportedEventVersionError
from orchestrator.history.service import HistoryService, SystemClock
from orchestrator.matching.processor import CompletionHandler, TransferQueueProcessor
from orchestrator.persistence import base as store_base
from orchestrator.persistence._instrumented import InstrumentedHistoryStore
from orchestrator.persistence._retrying import RetryingHistoryStore
from orchestrator.persistence.base import HistoryStore, VisibilityPage, open_store
from orchestrator.timers.processor import TimerQueueProcessor
from orchestrator.visibility.query import parse_list_query

log = logging.getLogger("sagas.server")

DEFAULT_MAX_PAYLOAD = 2 * 1024 * 1024


class Visibility:
    """List and count runs with the list-filter language."""

    def __init__(self, store: HistoryStore) -> None:
        self.store = store

    async def list(self, namespace: str, query: str, *, page_size: int = 100, next_page_token: str | None = None) -> VisibilityPage:
        filters = parse_list_query(query)
        return await self.store.list_visibility(
            namespace, filters=filters, page_size=max(1, min(page_size, 1000)), next_page_token=next_page_token
        )

    async def count(self, namespace: str, query: str) -> int:
        return await self.store.count_visibility(namespace, filters=parse_list_query(query))


@dataclass
class OrchestratorConfig:
    store_url: str = "sqlite:///sagas.db"
    broker_url: str = "local://"
    num_shards: int = 4
    prefix: str = "sagas"
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD
    token_secret: str = ""
    time_skipping: bool = False
    retention_days: float = 3.0
    visibility_timeout: float = 30.0


class Orchestrator:
    """All services of one orchestrator process around one store and one broker."""

    def __init__(self, config: OrchestratorConfig) -> None:
        self.config = config
        self.prefix = config.prefix
        self.max_payload_bytes = config.max_payload_bytes
        self.worker_broker_url = config.broker_url
        self.store: HistoryStore
        self.raw_store: HistoryStore
        self.broker: Broker
        self.clock = SystemClock()

    async def start(self) -> None:
        cfg = self.config
        self.raw_store = await open_store(cfg.store_url)
        self.instrumented = InstrumentedHistoryStore(self.raw_store)
        self.store = RetryingHistoryStore(self.instrumented)
        if cfg.broker_url.startswith(("local://", "memory://")):
            self.broker = MemoryBroker(visibility_timeout=cfg.visibility_timeout)
        else:
            from brokers.base import open_broker

            self.broker = await open_broker(cfg.broker_url)
        secret = cfg.token_secret or os.environ.get("SAGAS_TOKEN_SECRET", "") or f"dev:{cfg.store_url}"
        token_key = hashlib.sha256(secret.encode()).digest()
        self.history = HistoryService(self.store, clock=self.clock, num_shards=cfg.num_shards)
        self.history.engine.retention_days = cfg.retention_days
        await self.history.acquire_shards()
        self.matching = TransferQueueProcessor(self.history, self.broker, token_key=token_key, prefix=cfg.prefix)
        self.completions = CompletionHandler(self.history, self.matching, token_key=token_key)
        idle = self._idle if cfg.time_skipping else None
        self.timers = TimerQueueProcessor(self.history, idle=idle)
        self.history.transfer_sink = self.matching
        self.history.timer_sink = self.timers
        self.visibility = Visibility(self.store)
        await self.matching.start()
        await self.timers.start()
        self.completions.start_consumer()

    def _idle(self) -> bool:
        busy = self.broker.busy() if isinstance(self.broker, MemoryBroker) else True
        return not busy and not self.matching.busy()

    async def stop(self) -> None:
        await self.completions.stop()
        await self.timers.stop()
        await self.matching.stop()
        try:
            await self.broker.aclose()
        except BrokerError:
            pass
        await self.store.aclose()

    def check_payload(self, payloads: Any, what: str) -> None:
        size = len(json.dumps(payloads, separators=(",", ":")))
        if size > self.max_payload_bytes:
            raise PayloadTooLargeError(f"{what} is {size} bytes, over the limit of {self.max_payload_bytes} bytes")

    async def read_events(self, ns: str, wid: str, rid: str, first: int, limit: int) -> list[HistoryEvent]:
        try:
            return await self.store.read_events(ns, wid, rid, first, limit)
        except store_base.UnsupportedEventVersionError as exc:
            raise UnsupportedEventVersionError(str(exc)) from exc


class DevServer:
    """The orchestrator plus its HTTP frontend in this process (``sagas server start-dev``)."""

    def __init__(
        self,
        *,
        store_url: str = "sqlite:///sagas.db",
        broker_url: str = "local://",
        host: str = "127.0.0.1",
        port: int = 7233,
        time_skipping: bool = False,
        log_level: str = "warning",
        **config: Any,
    ) -> None:
        self.host = host
        self.port = port
        self.log_level = log_level
        self.config = OrchestratorConfig(store_url=store_url, broker_url=broker_url, time_skipping=time_skipping, **config)
        self.orchestrator = Orchestrator(self.config)
        self._server: uvicorn.Server | None = None
        self._serve_task: asyncio.Task[None] | None = None

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self) -> None:
        from orchestrator.frontend.app import create_app

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        if self.config.broker_url in ("local://", ""):
            self.orchestrator.worker_broker_url = f"local://{self.host}:{self.port}"
        await self.orchestrator.start()
        app = create_app(self.orchestrator)
        config = uvicorn.Config(app, log_level=self.log_level, lifespan="off", access_log=False, timeout_graceful_shutdown=2)
        self._server = uvicorn.Server(config)
        self._server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self._serve_task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._serve_task.done():
                self._serve_task.result()
                raise RuntimeError("frontend failed to start")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._serve_task is not None:
            await asyncio.gather(self._serve_task, return_exceptions=True)
        await self.orchestrator.stop()

    async def __aenter__(self) -> DevServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
