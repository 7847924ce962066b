"""Namespaces: the unit of isolation, and the settings that apply to each one.

A namespace is stored as a :class:`~orchestrator.persistence.base.NamespaceRecord`
(``retention_days``, ``description``, and the other settings in ``data``).
:class:`NamespaceRegistry` keeps them in memory so that the engine (retention),
the history service (history size limit) and the frontend (payload limit, rate
limit) can read a namespace's settings synchronously on every call; it reloads
from the store when a cached copy is older than ``refresh_interval`` (other
processes may have changed it).

::

    registry = NamespaceRegistry(store, NamespaceDefaults(retention_days=3.0))
    await registry.load()
    await registry.register(RegisterNamespaceRequest(name="payments", retention_days=30))
    registry.get("payments").retention_days          # 30.0

``default`` always exists (with the cluster defaults) until someone updates it.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from orchestrator.api.http import (
    NamespaceInfo,
    NamespaceLimits,
    RegisterNamespaceRequest,
    UpdateNamespaceRequest,
)
from orchestrator.errors import (
    InvalidArgumentError,
    NamespaceAlreadyExistsError,
    NamespaceNotFoundError,
    UnavailableError,
)
from orchestrator.persistence.base import HistoryStore, NamespaceRecord, StoreError

DEFAULT_NAMESPACE = "default"

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
"""Namespace names: no dots, because queue names are ``{prefix}.{namespace}.{task_queue}.{kind}``
and authorization reads the namespace back out of a queue name."""

_DATA_FIELDS = (
    "rate_limit_rps", "rate_limit_burst", "max_payload_bytes", "max_history_events", "history_warn_events",
    "history_archival_uri", "visibility_archival_uri",
)
_ARCHIVAL_FIELDS = ("history_archival_uri", "visibility_archival_uri")


@dataclass(frozen=True)
class NamespaceDefaults:
    """Cluster-wide values a namespace gets for every setting it does not set itself."""

    retention_days: float = 3.0
    max_payload_bytes: int = 2 * 1024 * 1024
    max_history_events: int | None = 51_200
    history_warn_events: int | None = 10_240
    rate_limit_rps: float | None = None
    rate_limit_burst: int | None = None


def check_namespace_name(name: str) -> None:
    """Raise :class:`InvalidArgumentError` unless ``name`` is a valid namespace name."""
    if not NAME_PATTERN.match(name):
        raise InvalidArgumentError(
            f"invalid namespace name {name!r}",
            hint="Use 1-64 letters, digits, '-' or '_', starting with a letter or digit (no dots).",
        )


class NamespaceRegistry:
    """The namespaces of the cluster, cached, with their effective settings."""

    def __init__(
        self,
        store: HistoryStore,
        defaults: NamespaceDefaults | None = None,
        *,
        refresh_interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.defaults = defaults or NamespaceDefaults()
        self.refresh_interval = refresh_interval
        self._clock = clock
        self._records: dict[str, NamespaceRecord] = {}
        self._loaded_at = -math.inf
        self.check_archival_uri: Callable[[str], Awaitable[None]] = _check_archival_uri
        """Refuses an archival URI that is malformed (the server also checks the archive is reachable)."""

    # reading ---------------------------------------------------------------------------
    async def load(self) -> None:
        """(Re)load every namespace from the store."""
        try:
            records = await self.store.list_namespaces()
        except StoreError as exc:
            raise UnavailableError(f"cannot read namespaces from the store: {exc}") from exc
        self._records = {r.name: r for r in records}
        self._loaded_at = self._clock()

    async def refresh_if_stale(self) -> None:
        if self._clock() - self._loaded_at >= self.refresh_interval:
            await self.load()

    def exists(self, name: str) -> bool:
        return name == DEFAULT_NAMESPACE or name in self._records

    def names(self) -> list[str]:
        return sorted({DEFAULT_NAMESPACE, *self._records})

    def get(self, name: str) -> NamespaceInfo:
        """Effective settings of ``name`` from the cache (cluster defaults for an unknown name)."""
        return self._info(self._records.get(name) or NamespaceRecord(name=name, retention_days=self.defaults.retention_days))

    async def describe(self, name: str) -> NamespaceInfo:
        """Effective settings of a registered namespace; :class:`NamespaceNotFoundError` otherwise."""
        record = await self._read(name)
        if record is None and name != DEFAULT_NAMESPACE:
            raise NamespaceNotFoundError(f"namespace {name!r} is not registered")
        return self.get(name)

    async def list(self) -> list[NamespaceInfo]:
        await self.load()
        return [self.get(name) for name in self.names()]

    # the settings other services ask for ----------------------------------------------
    def retention_days(self, name: str) -> float:
        return self.get(name).retention_days

    def max_payload_bytes(self, name: str) -> int:
        return self.get(name).max_payload_bytes

    def history_limits(self, name: str) -> tuple[int | None, int | None]:
        """(hard limit, warning threshold) on a run's history length in events."""
        info = self.get(name)
        return info.max_history_events, info.history_warn_events

    def rate_limit(self, name: str) -> tuple[float | None, int | None]:
        info = self.get(name)
        return info.rate_limit_rps, info.rate_limit_burst

    def archival_uris(self, name: str) -> tuple[str | None, str | None]:
        """(history, visibility) archival URIs of ``name``; None where archival is off."""
        info = self.get(name)
        return info.history_archival_uri, info.visibility_archival_uri

    # writing ---------------------------------------------------------------------------
    async def register(self, req: RegisterNamespaceRequest) -> NamespaceInfo:
        check_namespace_name(req.name)
        if await self._read(req.name) is not None or req.name == DEFAULT_NAMESPACE:
            raise NamespaceAlreadyExistsError(f"namespace {req.name!r} is already registered")
        record = NamespaceRecord(name=req.name, retention_days=self.defaults.retention_days)
        _apply(record, req)
        self._check(record)
        await self._check_archival(req)
        await self._write(record)
        return self.get(req.name)

    async def update(self, name: str, req: UpdateNamespaceRequest) -> NamespaceInfo:
        record = await self._read(name)
        if record is None:
            if name != DEFAULT_NAMESPACE:
                raise NamespaceNotFoundError(f"namespace {name!r} is not registered")
            record = NamespaceRecord(name=name, retention_days=self.defaults.retention_days)
        _apply(record, req)
        self._check(record)
        await self._check_archival(req)
        await self._write(record)
        return self.get(name)

    async def _check_archival(self, req: NamespaceLimits) -> None:
        for field in _ARCHIVAL_FIELDS:
            uri = getattr(req, field)
            if uri:
                try:
                    await self.check_archival_uri(uri)
                except InvalidArgumentError as exc:
                    raise InvalidArgumentError(f"{field}: {exc.message}", hint=exc.hint) from exc

    async def _read(self, name: str) -> NamespaceRecord | None:
        try:
            record = await self.store.get_namespace(name)
        except StoreError as exc:
            raise UnavailableError(f"cannot read namespace {name!r}: {exc}") from exc
        if record is None:
            self._records.pop(name, None)
        else:
            self._records[name] = record
        return record

    async def _write(self, record: NamespaceRecord) -> None:
        try:
            await self.store.upsert_namespace(record)
        except StoreError as exc:
            raise UnavailableError(f"cannot write namespace {record.name!r}: {exc}") from exc
        self._records[record.name] = record

    def _check(self, record: NamespaceRecord) -> None:
        info = self._info(record)
        if info.max_payload_bytes > self.defaults.max_payload_bytes:
            raise InvalidArgumentError(
                f"max_payload_bytes {info.max_payload_bytes} is over the cluster's limit of "
                f"{self.defaults.max_payload_bytes} bytes",
                hint="A namespace can only lower the payload limit.",
            )
        hard, warn = info.max_history_events, info.history_warn_events
        if "history_warn_events" in record.data and hard is not None and warn is not None and warn >= hard:
            raise InvalidArgumentError(
                f"history_warn_events ({warn}) must be below max_history_events ({hard})",
                hint="The warning is there to give time to continue-as-new before the hard limit.",
            )

    def _info(self, record: NamespaceRecord) -> NamespaceInfo:
        d, data = self.defaults, record.data
        rps = data.get("rate_limit_rps", d.rate_limit_rps) or None
        burst = data.get("rate_limit_burst", d.rate_limit_burst)
        hard = data.get("max_history_events", d.max_history_events)
        warn = data.get("history_warn_events")
        if warn is None:
            warn = d.history_warn_events
            if hard is not None and (warn is None or warn >= hard):
                warn = hard * 4 // 5  # the cluster's threshold does not fit this namespace's lower limit
        return NamespaceInfo(
            name=record.name,
            description=record.description,
            retention_days=record.retention_days,
            rate_limit_rps=rps,
            rate_limit_burst=(burst or max(1, math.ceil(rps))) if rps else None,
            max_payload_bytes=data.get("max_payload_bytes", d.max_payload_bytes),
            max_history_events=hard,
            history_warn_events=warn,
            history_archival_uri=data.get("history_archival_uri") or None,
            visibility_archival_uri=data.get("visibility_archival_uri") or None,
        )


async def _check_archival_uri(uri: str) -> None:
    from orchestrator.archival import open_archiver

    open_archiver(uri)  # the syntax only: InvalidArgumentError for an unknown scheme or a bad URI


def _apply(record: NamespaceRecord, req: NamespaceLimits) -> None:
    """Copy the fields ``req`` sets onto ``record``."""
    if req.description is not None:
        record.description = req.description
    if req.retention_days is not None:
        record.retention_days = req.retention_days
    for name in _DATA_FIELDS:
        value = getattr(req, name)
        if value is not None:
            record.data[name] = value
