"""The archiver contract: a flat key -> bytes store behind a URI.

An :class:`Archiver` knows nothing of histories: :mod:`orchestrator.archival.service` decides what
goes under which key. Keys are ``/``-separated paths of escaped segments (:func:`segment`), so a
workflow id may hold any character without escaping its folder.

:func:`open_archiver` picks the backend by the URI's scheme and checks the URI's syntax without any
I/O; :meth:`Archiver.check` then says whether the place is reachable and writable.
"""

from __future__ import annotations

import abc
from urllib.parse import quote, unquote

from orchestrator.errors import InvalidArgumentError

SCHEMES = ("file", "s3")


class ArchivalError(Exception):
    """The archive could not be read or written (unreachable, refused, full): try again later."""


class Archiver(abc.ABC):
    """Where archived documents live: ``put`` overwrites (so archiving twice is harmless)."""

    uri: str = ""

    @abc.abstractmethod
    async def put(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key`` atomically: a reader sees the old document or the new one."""

    @abc.abstractmethod
    async def get(self, key: str) -> bytes | None:
        """The document under ``key``; None when there is none."""

    @abc.abstractmethod
    async def list_keys(self, prefix: str) -> list[str]:
        """Keys that start with ``prefix`` (a folder: ends with ``/``), sorted."""

    @abc.abstractmethod
    async def check(self) -> None:
        """Raise :class:`ArchivalError` unless the archive is reachable and accepts writes."""

    async def aclose(self) -> None:  # noqa: B027 - optional: most backends hold nothing
        """Release connections."""


def segment(value: str) -> str:
    """``value`` as one key segment: no ``/``, no ``.`` (so never ``..``), reversible."""
    return quote(value, safe="").replace(".", "%2E")


def unsegment(value: str) -> str:
    return unquote(value)


def open_archiver(uri: str) -> Archiver:
    """The archiver of ``uri``: ``file:///absolute/dir`` or ``s3://bucket[/prefix][?endpoint_url=&region=]``.

    Raises :class:`~orchestrator.errors.InvalidArgumentError` for an unknown scheme or a malformed
    URI (no I/O happens here).
    """
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
    if scheme == "file":
        from orchestrator.archival.file import FileArchiver

        return FileArchiver.from_uri(uri)
    if scheme == "s3":
        from orchestrator.archival.s3 import S3Archiver

        return S3Archiver.from_uri(uri)
    raise InvalidArgumentError(
        f"unknown archival URI scheme in {uri!r}" if scheme else f"archival URI {uri!r} has no scheme",
        hint="Use file:///absolute/directory or s3://bucket/prefix (add ?endpoint_url=http://host:port "
        "for an S3-compatible store such as MinIO); an empty string turns archival off.",
    )
