"""``file:///absolute/dir``: one file per key under a directory (a local disk or a mounted share).

Writes are atomic: the document goes to a hidden temporary file in the same folder, is flushed to
disk, then renamed over the final name (``os.replace``), so a crash leaves either the previous
document or the new one, never half of one. The blocking file calls run in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from orchestrator.archival.base import ArchivalError, Archiver
from orchestrator.errors import InvalidArgumentError

_T = TypeVar("_T")


class FileArchiver(Archiver):
    """Documents as files under ``root``; a key ``a/b/c`` is the file ``root/a/b/c``."""

    def __init__(self, root: str | os.PathLike[str], uri: str = "") -> None:
        self.root = Path(root)
        self.uri = uri or self.root.as_uri()

    @classmethod
    def from_uri(cls, uri: str) -> FileArchiver:
        parts = urlsplit(uri)
        path = unquote(parts.path)
        if parts.netloc not in ("", "localhost") or not path.startswith("/"):
            raise InvalidArgumentError(
                f"archival URI {uri!r} is not an absolute file URI",
                hint="Write file:///absolute/path (three slashes), e.g. file:///var/lib/sagas/archive.",
            )
        if parts.query:
            raise InvalidArgumentError(
                f"archival URI {uri!r}: file:// takes no options ({parts.query!r})",
                hint="Write file:///absolute/path; the documents are gzip JSON, written atomically.",
            )
        return cls(path, uri)

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*key.split("/"))

    async def put(self, key: str, data: bytes) -> None:
        await self._io(f"write {key}", self._write, self._path(key), data)

    async def get(self, key: str) -> bytes | None:
        return await self._io(f"read {key}", self._read, self._path(key))

    async def list_keys(self, prefix: str) -> list[str]:
        return await self._io(f"list {prefix}", self._list, prefix)

    async def check(self) -> None:
        await self._io("prepare the directory", self._check)

    async def _io(self, what: str, fn: Callable[..., _T], *args: Any) -> _T:
        try:
            return await asyncio.to_thread(fn, *args)
        except OSError as exc:
            raise ArchivalError(
                f"cannot {what} in the archive {self.uri}: {exc.strerror or exc}"
            ) from exc

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        with contextlib.suppress(OSError):  # the rename itself survives a power cut once the folder is synced
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    @staticmethod
    def _read(path: Path) -> bytes | None:
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None

    def _list(self, prefix: str) -> list[str]:
        folder, _, start = prefix.rpartition("/")
        base = self._path(folder) if folder else self.root
        if not base.is_dir():
            return []
        return sorted(
            f"{folder}/{p.name}" if folder else p.name
            for p in base.iterdir()
            if p.is_file() and not p.name.startswith(".") and p.name.startswith(start)
        )

    def _check(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise PermissionError(13, "the directory is not writable by the server")

