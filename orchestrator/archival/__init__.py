"""Archival: closed histories and visibility records kept outside the store after retention.

A namespace with ``history_archival_uri`` (and/or ``visibility_archival_uri``) set has each closed
run written to that archive when its retention ends, *before* the run is deleted from the store;
if the archive cannot be written, the run is kept and archiving is tried again later (the
``delete_history`` timer is re-armed with a back-off), so nothing is deleted unarchived.

::

    archival = ArchivalService(lambda ns: ("file:///var/lib/sagas/archive", None))
    await archival.archive(state, events)                      # before deleting the run
    doc = await archival.read_history("default", "trip-1")     # ArchivedHistory: events + visibility

Backends (:func:`open_archiver`): ``file:///dir`` (:mod:`orchestrator.archival.file`) and
``s3://bucket/prefix?endpoint_url=...`` (:mod:`orchestrator.archival.s3`). See ``docs/archival.md``.
"""

from orchestrator.archival.base import ArchivalError, Archiver, open_archiver
from orchestrator.archival.service import ArchivalService, ArchivedHistory, history_key, visibility_key

__all__ = [
    "ArchivalError",
    "ArchivalService",
    "ArchivedHistory",
    "Archiver",
    "history_key",
    "open_archiver",
    "visibility_key",
]
