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
import contextlib
import hashlib
import json
import logging
import math
import os
import socket
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import uvicorn

from brokers.base import Broker, BrokerError
from brokers.memory import MemoryBroker
from orchestrator.api.events import HistoryEvent
from orchestrator.archival import ArchivalService
from orchestrator.dynamic_config import DynamicConfig, start_for_orchestrator
from orchestrator.errors import (
    ConfigurationError,
    InvalidArgumentError,
    PayloadTooLargeError,
    UnsupportedEventVersionError,
)
from orchestrator.frontend.auth import Authorizer, ClaimMapper, FrontendAuth
from orchestrator.history.service import HistoryService, SystemClock
from orchestrator.history.stream import HistoryStreamPublisher
from orchestrator.logging import json_logging_enabled
from orchestrator.matching.processor import CompletionHandler, TransferQueueProcessor
from orchestrator.metrics import METRICS, instrument_broker, unwatch_backlog, watch_backlog
from orchestrator.namespaces import NamespaceDefaults, NamespaceRegistry
from orchestrator.persistence import base as store_base
from orchestrator.persistence._instrumented import InstrumentedHistoryStore
from orchestrator.persistence._retrying import RetryingHistoryStore
from orchestrator.persistence.base import HistoryStore, VisibilityPage, open_store
from orchestrator.timers.processor import TimerQueueProcessor
from orchestrator.visibility.query import parse_list_query

if TYPE_CHECKING:
    from orchestrator.membership import ShardController, ShardRouter
    from orchestrator.system import SystemWorker
    from sagas.converter import PayloadCodec

log = logging.getLogger("sagas.server")

DEFAULT_MAX_PAYLOAD = 2 * 1024 * 1024


EVENT_LOOPS = ("auto", "uvloop", "asyncio")
"""Names of ``--loop``: uvloop when it imports (``auto``), uvloop or fail, the standard loop."""


def event_loop_factory(name: str = "auto") -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The ``loop_factory`` of :class:`asyncio.Runner` for the server's event loop (None: asyncio's).

    uvloop (a dependency on Linux and macOS) costs the server less CPU per request than the
    standard loop; ``asyncio`` is the way back, e.g. to rule the loop out when something misbehaves.
    """
    if name not in EVENT_LOOPS:
        raise ConfigurationError(f"unknown event loop {name!r}: one of {', '.join(EVENT_LOOPS)}")
    if name == "asyncio":
        return None
    try:
        import uvloop
    except ImportError as exc:
        if name == "uvloop":
            raise ConfigurationError(
                "uvloop is not installed (it is not available on Windows)", hint="use --loop asyncio"
            ) from exc
        return None
    return uvloop.new_event_loop


def _count_dead_letter(queue: str) -> None:
    METRICS.dead_letters.labels(queue=queue).inc()


class Visibility:
    """List and count runs with the list-filter language."""

    def __init__(self, store: HistoryStore) -> None:
        self.store = store

    async def list(self, namespace: str, query: str, *, page_size: int = 100, next_page_token: str | None = None) -> VisibilityPage:
        filters = parse_list_query(query)
        try:
            return await self.store.list_visibility(
                namespace, filters=filters, page_size=max(1, min(page_size, 1000)), next_page_token=next_page_token
            )
        except ValueError as exc:  # a forged or stale page token
            raise InvalidArgumentError(f"invalid next_page_token: {exc}") from exc

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
    history_stream_url: str | None = None
    """Publish every committed event to ``{prefix}.history`` on this broker (best-effort; see
    ``orchestrator.history.stream``). ``local://`` is the server's own built-in broker."""
    history_stream_namespaces: list[str] | None = None
    """Namespaces whose events are streamed (``None``: all)."""
    store_wrapper: Callable[[HistoryStore], HistoryStore] | None = None
    """Wraps the raw store, inside the retrying and instrumented layers (tests: fault injection)."""
    max_history_events: int | None = 51_200
    """Default hard limit on a run's history (a namespace may set its own): the run is terminated."""
    history_warn_events: int | None = 10_240
    """Default history length past which describe warns (continue-as-new)."""
    claim_mapper: ClaimMapper | None = None
    """Turns credentials (JWT, API key) into claims; see ``orchestrator.frontend.auth``."""
    authorizer: Authorizer | None = None
    """Decides per request (default: roles from the claims when a claim mapper is set, else allow all)."""
    auth_required: bool = False
    """Production: refuse to start without a claim mapper or authorizer ..."""
    allow_unauthenticated: bool = False
    """... unless this says the network in front of the server authorizes requests."""
    payload_codecs: Mapping[str, PayloadCodec] | None = None
    """Codecs of the codec server endpoint per namespace (``"*"``: all); see ``orchestrator.frontend.codec``."""
    dynamic_config_path: str | None = None
    """YAML file of runtime-tunable settings, watched and applied without a restart (``orchestrator.dynamic_config``)."""
    system_worker: bool = True
    """Run the system workflows (schedules, batch operations) in this process; see ``orchestrator.system``."""
    cluster: ClusterOptions | None = None
    """Share the history shards with other processes (membership and leases in the store;
    ``orchestrator.membership``). None: this process owns every shard."""
    history_enabled: bool = True
    """Run history, matching and timers here (False: a frontend that forwards to shard owners)."""


@dataclass
class ClusterOptions:
    """How this process takes part in a cluster (``cluster:`` in the config file)."""

    member_id: str
    address: str = ""
    """URL of this process's frontend for forwarded requests (set by the server once it listens)."""
    lease_seconds: float = 10.0
    heartbeat_seconds: float | None = None


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
        self.history_stream: HistoryStreamPublisher | None = None
        self.dynamic_config: DynamicConfig | None = None
        self.router: ShardRouter | None = None
        self.shard_controller: ShardController | None = None
        self._background: set[asyncio.Task[None]] = set()
        self.auth = FrontendAuth.from_config(
            claim_mapper=config.claim_mapper,
            authorizer=config.authorizer,
            auth_required=config.auth_required,
            allow_unauthenticated=config.allow_unauthenticated,
        )

    async def start(self) -> None:
        cfg = self.config
        if cfg.time_skipping and not cfg.broker_url.startswith(("local://", "memory://")):
            where = urlsplit(cfg.broker_url)
            raise ConfigurationError(
                f"time skipping needs the built-in broker (local:// or memory://), not {where.scheme}://{where.hostname}: "
                "the server skips time only when it sees every queue idle, which it cannot see on an external broker"
            )
        self.raw_store = await open_store(cfg.store_url)
        if cfg.store_wrapper is not None:
            self.raw_store = cfg.store_wrapper(self.raw_store)
        self.instrumented = InstrumentedHistoryStore(self.raw_store)
        self.store = RetryingHistoryStore(self.instrumented)
        if cfg.broker_url.startswith(("local://", "memory://")):
            self.broker = MemoryBroker(visibility_timeout=cfg.visibility_timeout)
            self.broker.on_dead_letter = _count_dead_letter
            watch_backlog(self.broker)
        else:
            from brokers.base import open_broker

            self.broker = await open_broker(cfg.broker_url)
        instrument_broker(self.broker, cfg.broker_url.split(":", 1)[0].replace("local", "memory"))
        secret = cfg.token_secret or os.environ.get("SAGAS_TOKEN_SECRET", "") or f"dev:{cfg.store_url}"
        token_key = hashlib.sha256(secret.encode()).digest()
        self.token_key = token_key
        self.history = HistoryService(self.store, clock=self.clock, num_shards=cfg.num_shards)
        self.history.engine.retention_days = cfg.retention_days
        self.namespaces = NamespaceRegistry(
            self.store,
            NamespaceDefaults(
                retention_days=cfg.retention_days,
                max_payload_bytes=cfg.max_payload_bytes,
                max_history_events=cfg.max_history_events,
                history_warn_events=cfg.history_warn_events,
            ),
        )
        await self.namespaces.load()
        self.archival = ArchivalService(self.namespaces.archival_uris)
        self.namespaces.check_archival_uri = self.archival.check_uri  # syntax, and the archive is reachable
        self.history.engine.retention_of = self.namespaces.retention_days
        self.history.history_limits = self.namespaces.history_limits
        if cfg.cluster is None:
            await self.history.acquire_shards()
        else:
            self.history.owned_shards_only = True
        if cfg.history_stream_url:
            builtin = cfg.history_stream_url.startswith("local://") and isinstance(self.broker, MemoryBroker)
            self.history_stream = HistoryStreamPublisher(
                None if builtin else cfg.history_stream_url,
                broker=self.broker if builtin else None,
                store=self.store,
                prefix=cfg.prefix,
                namespaces=cfg.history_stream_namespaces,
            )
            await self.history_stream.start()
            self.history.history_sink = self.history_stream
        self.matching = TransferQueueProcessor(self.history, self.broker, token_key=token_key, prefix=cfg.prefix)
        self.completions = CompletionHandler(self.history, self.matching, token_key=token_key)
        idle = self._idle if cfg.time_skipping else None
        if cfg.time_skipping:
            # The clock jumps to the next timer whenever the system is idle: a retention timer would
            # delete a closed run's history right after it closed, before the test could read it.
            self.history.engine.retention_of = lambda namespace: math.inf
        self.timers = TimerQueueProcessor(self.history, idle=idle)
        self.timers.archival = self.archival
        self.history.transfer_sink = self.matching
        self.history.timer_sink = self.timers
        self.visibility = Visibility(self.store)
        if cfg.history_enabled:
            await self.matching.start()
            await self.timers.start()
            self.completions.start_consumer()
        if cfg.cluster is not None:
            await self._join_cluster(cfg.cluster)
        if cfg.dynamic_config_path:  # runtime-tunable settings: docs/dynamic-config.md
            self.dynamic_config = await start_for_orchestrator(self, cfg.dynamic_config_path)

    async def _join_cluster(self, options: ClusterOptions) -> None:
        from orchestrator.matching.cross_shard import CrossShardClient
        from orchestrator.membership import ShardController, ShardRouter

        self.router = ShardRouter(self.history)
        self.completions.forward = self._forward_reply
        self.matching.remote = CrossShardClient(self.router, self.token_key)
        if not self.config.history_enabled:
            await self.router.refresh()
            return

        def acquired(_: set[int]) -> None:
            # A new shard's queues start from the store: its outbox rows and its timer rows.
            task = asyncio.create_task(self.matching.sweep())
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            self.timers.wake()

        self.shard_controller = ShardController(
            self.history,
            member_id=options.member_id,
            address=options.address,
            lease_seconds=options.lease_seconds,
            heartbeat_interval=options.heartbeat_seconds,
            router=self.router,
            on_acquired=acquired,
        )
        await self.shard_controller.start()

    async def _forward_reply(self, shard: int, body: bytes) -> bool:
        """Hand a worker's reply to the owner of its shard (the completions queue is shared)."""
        assert self.router is not None
        response = await self.router.forward(
            shard, "POST", "/api/v1/tasks/complete", body=body, headers={"content-type": "application/json"}
        )
        # 4xx: stale, forged or malformed there too -- applying it again would not help.
        return response is not None and response.status_code < 500

    def _idle(self) -> bool:
        busy = self.broker.busy() if isinstance(self.broker, MemoryBroker) else True
        return not busy and not self.matching.busy()

    async def stop(self) -> None:
        if self.shard_controller is not None:
            await self.shard_controller.stop()  # hand the shards over first: others take them at once
        if self.dynamic_config is not None:
            await self.dynamic_config.stop()
        await self.completions.stop()
        await self.timers.stop()
        await self.matching.stop()
        if self.history_stream is not None:
            await self.history_stream.stop()
        unwatch_backlog(self.broker)
        try:
            await self.broker.aclose()
        except BrokerError:
            pass
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self.archival.aclose()
        if self.router is not None:
            await self.router.aclose()
        await self.store.aclose()

    def check_payload(self, payloads: Any, what: str, namespace: str | None = None) -> None:
        """Refuse payloads over the namespace's limit (the cluster's without a namespace)."""
        limit = self.namespaces.max_payload_bytes(namespace) if namespace is not None else self.max_payload_bytes
        size = len(json.dumps(payloads, separators=(",", ":")))
        if size > limit:
            where = f" of namespace {namespace!r}" if namespace is not None else ""
            raise PayloadTooLargeError(f"{what} is {size} bytes, over the limit{where} of {limit} bytes")

    async def read_events(self, ns: str, wid: str, rid: str, first: int, limit: int) -> list[HistoryEvent]:
        try:
            return await self.store.read_events(ns, wid, rid, first, limit)
        except store_base.UnsupportedEventVersionError as exc:
            raise UnsupportedEventVersionError(str(exc)) from exc


class DevServer:
    """The orchestrator plus its HTTP frontend in this process (``sagas server start-dev``).

    TLS: ``tls_cert`` and ``tls_key`` (PEM files) serve HTTPS; ``tls_client_ca``
    additionally requires every client to present a certificate signed by that
    CA (mutual TLS). Authorization is allow-all unless ``claim_mapper`` /
    ``authorizer`` are given (see :class:`OrchestratorConfig`).
    """

    def __init__(
        self,
        *,
        store_url: str = "sqlite:///sagas.db",
        broker_url: str = "local://",
        host: str = "127.0.0.1",
        port: int = 7233,
        time_skipping: bool = False,
        log_level: str = "warning",
        tls_cert: str | os.PathLike[str] | None = None,
        tls_key: str | os.PathLike[str] | None = None,
        tls_client_ca: str | os.PathLike[str] | None = None,
        **config: Any,
    ) -> None:
        if (tls_cert is None) != (tls_key is None):
            raise ConfigurationError("TLS needs both tls_cert and tls_key (PEM files)")
        if tls_client_ca is not None and tls_cert is None:
            raise ConfigurationError("tls_client_ca (mutual TLS) needs tls_cert and tls_key as well")
        self.host = host
        self.port = port
        self.log_level = log_level
        self.tls_cert, self.tls_key, self.tls_client_ca = tls_cert, tls_key, tls_client_ca
        self.config = OrchestratorConfig(store_url=store_url, broker_url=broker_url, time_skipping=time_skipping, **config)
        self.orchestrator = Orchestrator(self.config)
        self._server: uvicorn.Server | None = None
        self._serve_task: asyncio.Task[None] | None = None
        self.system_worker: SystemWorker | None = None

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """``http://host:port``, or ``https://`` with TLS."""
        return f"{'https' if self.tls_cert else 'http'}://{self.target}"

    def _tls_options(self) -> dict[str, Any]:
        """uvicorn's TLS options, after checking the files load (a clear error before anything starts)."""
        if self.tls_cert is None or self.tls_key is None:
            return {}
        cert, key = os.fspath(self.tls_cert), os.fspath(self.tls_key)
        options: dict[str, Any] = {"ssl_certfile": cert, "ssl_keyfile": key}
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key)
            if self.tls_client_ca is not None:
                ca = os.fspath(self.tls_client_ca)
                ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_verify_locations(ca)
                options.update(ssl_ca_certs=ca, ssl_cert_reqs=ssl.CERT_REQUIRED)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigurationError(
                f"cannot load the frontend's TLS files (cert {cert}, key {key}, client CA {self.tls_client_ca}): {exc}",
                hint="They must be PEM files: the server certificate (chain), its private key, and the CA of client certificates.",
            ) from exc
        return options

    async def start(self) -> None:
        from orchestrator.frontend.app import create_app

        tls_options = self._tls_options()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted sockets inherit it: without it, delayed ACKs + Nagle add ~40 ms to every
        # keep-alive request (measured on /healthz: 40 ms -> 1.3 ms).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        if self.config.cluster is not None and not self.config.cluster.address:
            host = socket.gethostname() if self.host in ("0.0.0.0", "::") else self.host
            self.config.cluster.address = f"{'https' if self.tls_cert else 'http'}://{host}:{self.port}"
        if self.config.broker_url in ("local://", ""):
            tls = "?tls=1" if self.tls_cert else ""
            self.orchestrator.worker_broker_url = f"local://{self.host}:{self.port}{tls}"
        if not self.orchestrator.auth.enabled and self.host not in ("127.0.0.1", "localhost", "::1"):
            log.warning(
                "the frontend on %s allows every request (no claim mapper or authorizer): "
                "anyone who reaches it can read and change every workflow", self.target,
            )
        await self.orchestrator.start()
        app = create_app(self.orchestrator)
        if json_logging_enabled():
            tls_options["log_config"] = None  # uvicorn's lines go through the root's JSON handler too
        config = uvicorn.Config(
            app, log_level=self.log_level, lifespan="off", access_log=False, timeout_graceful_shutdown=2,
            **tls_options,
        )
        self._server = uvicorn.Server(config)
        # The process's owner (the CLI, a test) handles SIGINT/SIGTERM, not uvicorn.
        self._server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
        self._serve_task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._serve_task.done():
                self._serve_task.result()
                raise RuntimeError("frontend failed to start")
            await asyncio.sleep(0.01)
        if self.config.system_worker:  # schedules, batch operations: see orchestrator.system
            from orchestrator.system import SystemWorker

            self.system_worker = await SystemWorker.start_for(self)

    async def stop(self) -> None:
        if self.system_worker is not None:
            await self.system_worker.stop()
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
