"""`sagas server ...` commands.

    sagas server start-dev                        # SQLite in a temp file, built-in broker, port 7233
    sagas server start-dev --db-filename sagas.db # keep history across restarts
    sagas server start --config config/production.yaml   # services, store, broker, cluster from a file
    sagas server start-dev --loop asyncio         # the standard event loop (default: uvloop when installed)
    sagas server start-dev --tls-cert server.pem --tls-key server-key.pem [--tls-client-ca ca.pem] \
        --auth-config auth.yaml                   # HTTPS (mutual TLS), JWT / API key authorization

``--auth-config`` is a YAML file read by
``orchestrator.frontend.auth.claim_mapper_from_config`` (``api_keys``, ``jwt``);
with it, every request needs a role (see ``docs/security.md``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

from orchestrator.logging import configure_logging

if TYPE_CHECKING:
    from orchestrator.config import ServerConfig

server_app = typer.Typer(help="Run the orchestrator server.", no_args_is_help=True)
console = Console(stderr=True)


@server_app.callback()
def _group() -> None:
    """Run the orchestrator server."""


def security_options(
    tls_cert: str | None, tls_key: str | None, tls_client_ca: str | None, auth_config: str | None
) -> dict[str, Any]:
    """DevServer keyword arguments for TLS and authorization (reads ``auth_config``)."""
    options: dict[str, Any] = {"tls_cert": tls_cert, "tls_key": tls_key, "tls_client_ca": tls_client_ca}
    if auth_config:
        import yaml

        from orchestrator.errors import ConfigurationError
        from orchestrator.frontend.auth import claim_mapper_from_config

        try:
            data = yaml.safe_load(Path(auth_config).read_text()) or {}
            options["claim_mapper"] = claim_mapper_from_config(data)
        except (OSError, yaml.YAMLError, ValueError, ConfigurationError) as exc:
            console.print(f"[red]error:[/] --auth-config {auth_config}: {exc}")
            raise typer.Exit(1) from exc
        options["auth_required"] = True
    return options


async def serve_dev(
    db_filename: str | None,
    ip: str,
    port: int,
    log_level: str,
    ready_file: str | None = None,
    security: dict[str, Any] | None = None,
) -> None:
    """Run the dev server until SIGINT/SIGTERM."""
    from orchestrator.errors import ConfigurationError
    from orchestrator.server import DevServer

    with tempfile.TemporaryDirectory(prefix="sagas-dev-") as tmp:
        path = Path(db_filename).resolve() if db_filename else Path(tmp) / "sagas.db"
        try:
            server = DevServer(store_url=f"sqlite:///{path}", host=ip, port=port, log_level=log_level, **(security or {}))
            await server.start()
        except ConfigurationError as exc:
            console.print(f"[red]error:[/] {exc.message}" + (f" ({exc.hint})" if exc.hint else ""))
            raise typer.Exit(1) from exc
        except OSError as exc:
            console.print(f"[red]error:[/] cannot listen on {ip}:{port}: {exc.strerror or exc}. Is another server running? Try --port.")
            raise typer.Exit(1) from exc
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        console.print(
            f"[green]sagas dev server[/] listening on {server.url}  "
            f"(history: {path if db_filename else 'temporary SQLite file'}, broker: built-in)"
        )
        if ready_file:
            Path(ready_file).write_text(server.target)
        await stop.wait()
        console.print("shutting down ...")
        await server.stop()


@server_app.command("start-dev")
def start_dev(
    db_filename: str = typer.Option(None, "--db-filename", "-f", help="SQLite file for history (default: a temporary file)."),
    ip: str = typer.Option("127.0.0.1", "--ip", help="Address to listen on."),
    port: int = typer.Option(7233, "--port", "-p", help="Port of the HTTP API and UI."),
    log_level: str = typer.Option("warning", "--log-level", help="debug, info, warning or error."),
    log_format: str = typer.Option(
        "text", "--log-format", help="text, or json: one JSON object per line with workflow id / run id / shard."
    ),
    ready_file: str = typer.Option(None, "--ready-file", help="Write host:port to this file once serving (for scripts)."),
    tls_cert: str = typer.Option(None, "--tls-cert", help="Server certificate (PEM): serve HTTPS."),
    tls_key: str = typer.Option(None, "--tls-key", help="Private key (PEM) of --tls-cert."),
    tls_client_ca: str = typer.Option(None, "--tls-client-ca", help="Require client certificates signed by this CA (mutual TLS)."),
    auth_config: str = typer.Option(None, "--auth-config", help="YAML file of API keys / JWT keys: require authorization."),
    dynamic_config: str = typer.Option(None, "--dynamic-config", help="YAML file of runtime-tunable settings, watched (docs/dynamic-config.md)."),
    loop: str = typer.Option("auto", "--loop", help="Event loop: auto (uvloop when installed), uvloop or asyncio."),
) -> None:
    """Run every service in one process on the embedded default (SQLite + built-in broker)."""
    if log_format not in ("text", "json"):
        raise typer.BadParameter("text or json", param_hint="--log-format")
    configure_logging(log_level.upper(), log_format)
    security = security_options(tls_cert, tls_key, tls_client_ca, auth_config)
    if dynamic_config:
        security["dynamic_config_path"] = str(Path(dynamic_config).resolve())
    factory = _loop_factory(loop)
    with contextlib.suppress(KeyboardInterrupt), asyncio.Runner(loop_factory=factory) as runner:
        runner.run(serve_dev(db_filename, ip, port, log_level, ready_file, security))


def _loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """``--loop``: the event loop to run the server on (``orchestrator.server.event_loop_factory``)."""
    from orchestrator.errors import ConfigurationError
    from orchestrator.server import event_loop_factory

    try:
        return event_loop_factory(name)
    except ConfigurationError as exc:
        raise typer.BadParameter(exc.message + (f" ({exc.hint})" if exc.hint else ""), param_hint="--loop") from exc


def dev_server_options(cfg: ServerConfig) -> dict[str, Any]:
    """:class:`~orchestrator.server.DevServer` keyword arguments of a validated config file."""
    import socket
    import uuid

    from orchestrator.server import ClusterOptions

    f = cfg.frontend
    options = security_options(
        f.tls.cert_file if f.tls else None,
        f.tls.key_file if f.tls else None,
        f.tls.client_ca_file if f.tls else None,
        f.auth_config,
    )
    cluster = None
    if cfg.cluster is not None:
        member_id = cfg.cluster.member_id or f"{socket.gethostname()}:{f.port}:{uuid.uuid4().hex[:8]}"
        cluster = ClusterOptions(
            member_id=member_id,
            address=f.advertise_address or "",
            lease_seconds=cfg.cluster.lease_seconds,
            heartbeat_seconds=cfg.cluster.heartbeat_seconds,
        )
    options.update(
        store_url=cfg.store_url,
        broker_url=cfg.broker.url,
        host=f.host,
        port=f.port,
        log_level=cfg.log.level,
        num_shards=cfg.persistence.num_history_shards,
        prefix=cfg.prefix,
        cluster=cluster,
        history_enabled="history" in cfg.services,
        system_worker="worker" in cfg.services,
        dynamic_config_path=str(Path(cfg.dynamic_config_path).resolve()) if cfg.dynamic_config_path else None,
    )
    return options


async def serve_config(cfg: ServerConfig, source: str, ready_file: str | None) -> None:
    """Run the services ``cfg`` names until SIGINT/SIGTERM (SIGTERM hands the shards over)."""
    from orchestrator.errors import ConfigurationError
    from orchestrator.server import DevServer

    try:
        server = DevServer(**dev_server_options(cfg))
        await server.start()
    except ConfigurationError as exc:
        console.print(f"[red]error:[/] {exc.message}" + (f" ({exc.hint})" if exc.hint else ""))
        raise typer.Exit(1) from exc
    except OSError as exc:
        console.print(f"[red]error:[/] cannot listen on {cfg.frontend.host}:{cfg.frontend.port}: {exc.strerror or exc}")
        raise typer.Exit(1) from exc
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    member = server.config.cluster.member_id if server.config.cluster else "owns every shard"
    console.print(
        f"[green]sagas server[/] ({source}: {', '.join(cfg.services)}; {member}) listening on {server.url}"
    )
    if ready_file:
        Path(ready_file).write_text(server.target)
    await stop.wait()
    console.print("shutting down (handing shards over) ...")
    await server.stop()


@server_app.command("start")
def start(
    config: str = typer.Option(..., "--config", "-c", help="YAML server config (see config/*.yaml)."),
    ready_file: str = typer.Option(None, "--ready-file", help="Write host:port to this file once serving (for scripts)."),
    loop: str = typer.Option("auto", "--loop", help="Event loop: auto (uvloop when installed), uvloop or asyncio."),
) -> None:
    """Run the services a config file names (production: many processes share the history shards)."""
    from orchestrator.config import load_config
    from orchestrator.errors import ConfigurationError

    try:
        cfg = load_config(config)
    except ConfigurationError as exc:
        console.print(f"[red]error:[/] {exc.message}")
        raise typer.Exit(2) from exc
    logging.basicConfig(level=cfg.log.level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    factory = _loop_factory(loop)
    with contextlib.suppress(KeyboardInterrupt), asyncio.Runner(loop_factory=factory) as runner:
        runner.run(serve_config(cfg, config, ready_file))


if __name__ == "__main__":
    server_app()
