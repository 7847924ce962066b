"""What is archived, under which key, and how it is read back.

Per run, when its namespace's retention ends (the ``delete_history`` timer,
``orchestrator.timers.processor``), before the run is deleted from the store:

* with ``history_archival_uri``: ``{namespace}/{workflow_id}/{run_id}.history.json.gz``, a gzip
  JSON :class:`ArchivedHistory` (format ``sagas.archived-history`` version 1): every event of the
  run, exactly as the history API returns them, and the run's visibility record;
* with ``visibility_archival_uri``: ``{namespace}/{workflow_id}/{run_id}.visibility.json``, the
  visibility record alone (format ``sagas.archived-visibility``).

Keys depend only on the run, so archiving a run again overwrites the same documents with the same
content: a retry after a crash between archiving and deleting is harmless.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, Field

from orchestrator.api.events import HistoryEvent
from orchestrator.archival.base import ArchivalError, Archiver, open_archiver, segment
from orchestrator.errors import (
    ArchivalNotEnabledError,
    InvalidArgumentError,
    UnavailableError,
    WorkflowNotArchivedError,
)
from orchestrator.history.engine import visibility_of
from orchestrator.history.state import ExecutionState
from orchestrator.metrics import METRICS

log = logging.getLogger("sagas.archival")

HISTORY_FORMAT = "sagas.archived-history"
VISIBILITY_FORMAT = "sagas.archived-visibility"
FORMAT_VERSION = 1
_HISTORY_SUFFIX = ".history.json.gz"
_VISIBILITY_SUFFIX = ".visibility.json"

UrisOf = Callable[[str], tuple[str | None, str | None]]
"""``namespace -> (history_archival_uri, visibility_archival_uri)``; None: not archived."""


class ArchivedHistory(BaseModel):
    """One archived run: the document stored under ``...{run_id}.history.json.gz``."""

    format: str = HISTORY_FORMAT
    version: int = FORMAT_VERSION
    namespace: str
    workflow_id: str
    run_id: str
    archived_at: float
    visibility: dict[str, Any] | None = None
    """The run's :class:`~orchestrator.persistence.base.VisibilityRecord` as a dict."""
    events: list[dict[str, Any]] = Field(default_factory=list)


def history_key(namespace: str, workflow_id: str, run_id: str) -> str:
    return f"{segment(namespace)}/{segment(workflow_id)}/{segment(run_id)}{_HISTORY_SUFFIX}"


def visibility_key(namespace: str, workflow_id: str, run_id: str) -> str:
    return f"{segment(namespace)}/{segment(workflow_id)}/{segment(run_id)}{_VISIBILITY_SUFFIX}"


def encode_history(doc: ArchivedHistory) -> bytes:
    # mtime=0: the same run archived twice is the same bytes
    return gzip.compress(doc.model_dump_json().encode(), mtime=0)


def decode_history(data: bytes) -> ArchivedHistory:
    doc = ArchivedHistory.model_validate_json(gzip.decompress(data))
    if doc.format != HISTORY_FORMAT or doc.version > FORMAT_VERSION:
        raise ValueError(f"not a {HISTORY_FORMAT} document of version <= {FORMAT_VERSION}: {doc.format} v{doc.version}")
    return doc


class ArchivalService:
    """Archives closed runs of the namespaces that ask for it, and reads them back.

    ``retry_initial`` / ``retry_max``: the back-off (seconds, doubling per attempt) before a failed
    archival is tried again.
    """

    def __init__(self, uris_of: UrisOf, *, retry_initial: float = 30.0, retry_max: float = 3600.0) -> None:
        self.uris_of = uris_of
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self._archivers: dict[str, Archiver] = {}

    def enabled(self, namespace: str) -> bool:
        return any(self.uris_of(namespace))

    def retry_delay(self, attempt: int) -> float:
        """Seconds before trying again after ``attempt`` failed attempts (1, 2, ...)."""
        return float(min(self.retry_max, self.retry_initial * 2 ** max(0, min(attempt - 1, 30))))

    def archiver(self, uri: str) -> Archiver:
        """The (cached) archiver of ``uri``; :class:`InvalidArgumentError` for a bad URI."""
        archiver = self._archivers.get(uri)
        if archiver is None:
            archiver = self._archivers[uri] = open_archiver(uri)
        return archiver

    async def check_uri(self, uri: str) -> None:
        """Refuse (``invalid_argument``) a URI that is malformed or whose archive is unreachable."""
        archiver = open_archiver(uri)
        try:
            await archiver.check()
        except ArchivalError as exc:
            raise InvalidArgumentError(
                f"archival URI {uri!r} cannot be used: {exc}",
                hint="The directory must be writable by the server, the bucket must exist and the credentials "
                "must allow writing to it.",
            ) from exc
        finally:
            await archiver.aclose()

    async def archive(self, state: ExecutionState, events: list[HistoryEvent]) -> None:
        """Write the run's history and visibility documents (each only if its URI is set).

        Raises :class:`ArchivalError` (or :class:`InvalidArgumentError` for a URI that became
        unusable): the caller keeps the run and tries again later.
        """
        history_uri, visibility_uri = self.uris_of(state.namespace)
        visibility = dataclasses.asdict(visibility_of(state))
        ns, wid, rid = state.namespace, state.workflow_id, state.run_id
        if history_uri:
            doc = ArchivedHistory(
                namespace=ns,
                workflow_id=wid,
                run_id=rid,
                archived_at=time.time(),
                visibility=visibility,
                events=[e.model_dump(mode="json") for e in events],
            )
            await self._put("history", history_uri, history_key(ns, wid, rid), encode_history(doc))
        if visibility_uri:
            body = {"format": VISIBILITY_FORMAT, "version": FORMAT_VERSION, **visibility}
            await self._put("visibility", visibility_uri, visibility_key(ns, wid, rid), json.dumps(body).encode())

    async def _put(self, kind: str, uri: str, key: str, data: bytes) -> None:
        try:
            await self.archiver(uri).put(key, data)
        except Exception:
            METRICS.archival.labels(kind=kind, outcome="failed").inc()
            raise
        METRICS.archival.labels(kind=kind, outcome="archived").inc()

    async def read_history(self, namespace: str, workflow_id: str, run_id: str | None = None) -> ArchivedHistory:
        """The archived history of a run (without ``run_id``: the run of ``workflow_id`` that closed last)."""
        history_uri, _ = self.uris_of(namespace)
        if not history_uri:
            raise ArchivalNotEnabledError(f"namespace {namespace!r} has no history archival URI: nothing of it is archived")
        archiver = self.archiver(history_uri)
        try:
            if run_id:
                data = await archiver.get(history_key(namespace, workflow_id, run_id))
                found = [] if data is None else [self._decode(data, history_uri)]
            else:
                folder = history_key(namespace, workflow_id, "x").rpartition("/")[0] + "/"
                keys = [k for k in await archiver.list_keys(folder) if k.endswith(_HISTORY_SUFFIX)]
                found = [self._decode(d, history_uri) for k in keys if (d := await archiver.get(k)) is not None]
        except ArchivalError as exc:
            raise UnavailableError(str(exc), hint="Check that the archive is reachable from the server; retry.") from exc
        if not found:
            run = f" run {run_id!r}" if run_id else ""
            raise WorkflowNotArchivedError(
                f"workflow {workflow_id!r}{run} of namespace {namespace!r} is not in the archive {history_uri}"
            )
        return max(found, key=lambda d: ((d.visibility or {}).get("close_time") or 0.0, d.archived_at))

    @staticmethod
    def _decode(data: bytes, uri: str) -> ArchivedHistory:
        try:
            return decode_history(data)
        except (ValueError, OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
            raise UnavailableError(
                f"an archived document in {uri} is unreadable: {exc}",
                hint="It was written by a newer server or damaged; check the archive.",
            ) from exc

    async def aclose(self) -> None:
        archivers, self._archivers = list(self._archivers.values()), {}
        for archiver in archivers:
            try:
                await archiver.aclose()
            except Exception:  # noqa: BLE001 - closing is best effort
                log.warning("closing the archiver of %s failed", archiver.uri, exc_info=True)
