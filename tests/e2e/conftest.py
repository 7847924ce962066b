"""Helpers to run the dev server as a real subprocess (for kill -9 tests)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """``sagas server start-dev`` in a subprocess, ready when it wrote its ready file."""

    def __init__(self, db: Path, port: int, workdir: Path) -> None:
        self.db, self.port, self.workdir = db, port, workdir
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        ready = self.workdir / f"ready-{time.monotonic_ns()}"
        with open(self.workdir / "server.log", "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sagas.cli.server", "start-dev", "--db-filename", str(self.db),
                 "--port", str(self.port), "--ready-file", str(ready)],
                stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {(self.workdir / 'server.log').read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError("server did not become ready")
            time.sleep(0.02)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
