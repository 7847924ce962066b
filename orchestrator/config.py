"""The server's static configuration file (``sagas server start --config FILE``), Temporal-style.

A YAML file, validated by pydantic; a mistake names its key
(``persistence.datastores.default.mongodb.url: Field required``)::

    services: [frontend, history, matching, timers, worker]
    persistence:
      numHistoryShards: 16          # fixed at cluster creation
      defaultStore: main
      visibilityStore: main
      datastores:
        main:
          mongodb: {url: "mongodb://mongo:27017/sagas?replicaSet=rs0"}
    broker: {url: "amqp://guest:guest@rabbitmq:5672/"}
    frontend: {host: 0.0.0.0, port: 7233, advertiseAddress: "http://orchestrator-1:7233"}
    cluster: {leaseSeconds: 10}
    log: {level: info}

Every key can be overridden by an environment variable ``SAGAS_`` + the key path in capitals,
levels joined by ``__`` (``SAGAS_BROKER__URL``, ``SAGAS_FRONTEND__PORT``,
``SAGAS_PERSISTENCE__DATASTORES__MAIN__MONGODB__URL``); underscores inside a level are ignored
when matching (``SAGAS_PERSISTENCE__NUM_HISTORY_SHARDS``). Values are parsed as YAML scalars.

:func:`load_config` reads, overrides and validates; :meth:`ServerConfig.orchestrator_config`
turns the result into the :class:`~orchestrator.server.OrchestratorConfig` the server runs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from orchestrator.errors import ConfigurationError

ENV_PREFIX = "SAGAS_"
Service = Literal["frontend", "history", "matching", "timers", "worker"]
ALL_SERVICES: tuple[Service, ...] = ("frontend", "history", "matching", "timers", "worker")


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=_camel, populate_by_name=True, frozen=True)


class SqliteDatastore(_Section):
    path: str


class MongoDatastore(_Section):
    url: str = Field(pattern=r"^mongodb(\+srv)?://")


class MemoryDatastore(_Section):
    pass


class Datastore(_Section):
    """Exactly one of ``sqlite``, ``mongodb``, ``memory``."""

    sqlite: SqliteDatastore | None = None
    mongodb: MongoDatastore | None = None
    memory: MemoryDatastore | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Datastore:
        kinds = [k for k in ("sqlite", "mongodb", "memory") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(f"give exactly one of sqlite, mongodb, memory (got {', '.join(kinds) or 'none'})")
        return self

    @property
    def url(self) -> str:
        if self.sqlite is not None:
            return f"sqlite:///{self.sqlite.path}"
        if self.mongodb is not None:
            return self.mongodb.url
        return "memory://"


class Persistence(_Section):
    num_history_shards: int = Field(4, ge=1, le=16384)
    default_store: str
    visibility_store: str | None = None
    secondary_visibility_store: str | None = None
    datastores: dict[str, Datastore]

    @model_validator(mode="after")
    def _stores_exist(self) -> Persistence:
        if self.default_store not in self.datastores:
            raise ValueError(f"defaultStore {self.default_store!r} is not one of datastores ({', '.join(self.datastores)})")
        if self.visibility_store not in (None, self.default_store):
            # One store holds executions and visibility together (one transaction per write).
            raise ValueError("visibilityStore must be the defaultStore: a separate visibility store is not supported")
        if self.secondary_visibility_store is not None:
            raise ValueError("secondaryVisibilityStore is not supported")
        return self


class Broker(_Section):
    url: str = "local://"
    """``local://`` (built in; one process only), ``amqp://``, ``kafka://``, ``sqs://``."""


class Tls(_Section):
    cert_file: str
    key_file: str
    client_ca_file: str | None = None


class Frontend(_Section):
    host: str = "127.0.0.1"
    port: int = Field(7233, ge=0, le=65535)
    advertise_address: str | None = None
    """URL other processes reach this frontend at (forwarded requests); default ``http://host:port``."""
    tls: Tls | None = None
    auth_config: str | None = None
    """YAML file of API keys / JWT keys (``orchestrator.frontend.auth.claim_mapper_from_config``)."""


class Cluster(_Section):
    member_id: str | None = None
    """This process's id in the membership table (default: hostname + port + random)."""
    lease_seconds: float = Field(10.0, gt=0)
    """How long a shard lease and a membership heartbeat last: a killed process's shards move
    after at most about this long."""
    heartbeat_seconds: float | None = Field(None, gt=0)
    """How often leases are renewed (default a third of the lease)."""


class Metrics(_Section):
    prometheus: bool = True
    """Serve ``/metrics`` on the frontend."""


class Log(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"


class ServerConfig(_Section):
    """The whole file. ``cluster`` present: this process shares shards with others."""

    services: list[Service] = Field(default_factory=lambda: list(ALL_SERVICES))
    persistence: Persistence
    broker: Broker = Broker()
    frontend: Frontend = Frontend()
    cluster: Cluster | None = None
    metrics: Metrics = Metrics()
    log: Log = Log()
    prefix: str = "sagas"
    dynamic_config_path: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ServerConfig:
        queues = {"history", "matching", "timers"} & set(self.services)
        if queues and queues != {"history", "matching", "timers"}:
            raise ValueError(
                "history, matching and timers run together (matching and timers process the owned shards' "
                f"queues); got {sorted(queues)}"
            )
        if "frontend" not in self.services:
            raise ValueError("every process runs the frontend: requests for its shards are forwarded to it")
        if self.cluster is not None and self.broker.url.startswith(("local://", "memory://")):
            raise ValueError(
                f"broker.url {self.broker.url!r} is the built-in broker, which lives inside one process: "
                "many processes need a real broker (amqp://, kafka:// or sqs://)"
            )
        if self.cluster is not None and self.persistence.datastores[self.persistence.default_store].memory is not None:
            raise ValueError("a cluster needs a shared datastore (mongodb or sqlite), not memory")
        return self

    @property
    def store_url(self) -> str:
        return self.persistence.datastores[self.persistence.default_store].url

    @property
    def advertise_address(self) -> str:
        f = self.frontend
        scheme = "https" if f.tls else "http"
        return f.advertise_address or f"{scheme}://{f.host}:{f.port}"


def format_errors(exc: ValidationError) -> str:
    """``key.path: message`` per error, aliases as written in the file."""
    lines = []
    for error in exc.errors():
        loc = ".".join(str(part) for part in error["loc"])
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        elif error["type"] == "missing":
            message = "field required"
        lines.append(f"{loc}: {message}" if loc else message)
    return "; ".join(lines)


def _norm(key: str) -> str:
    return key.replace("_", "").replace("-", "").lower()


def apply_env(data: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """``data`` with every ``SAGAS_A__B__C=value`` set at ``a.b.c`` (existing keys matched
    case- and underscore-insensitively; new keys in camelCase)."""
    top = {_norm(_camel(name)) for name in ServerConfig.model_fields} | {_norm(n) for n in ServerConfig.model_fields}
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX):
            continue
        path = [p for p in name[len(ENV_PREFIX) :].split("__") if p]
        if not path or _norm(path[0]) not in top:
            continue  # other SAGAS_ variables (e.g. SAGAS_TOKEN_SECRET) are not file keys
        node = data
        for i, part in enumerate(path):
            key = next((k for k in node if _norm(k) == _norm(part)), None)
            if key is None:
                key = _camel(part.lower())
            if i == len(path) - 1:
                node[key] = yaml.safe_load(raw) if raw else raw
            else:
                child = node.get(key)
                if not isinstance(child, dict):
                    child = node[key] = {}
                node = child
    return data


def parse_config(text: str, *, source: str = "config", environ: Mapping[str, str] | None = None) -> ServerConfig:
    """Validate YAML text (with environment overrides); :class:`ConfigurationError` names the bad key."""
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"{source} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigurationError(f"{source} must be a YAML mapping at the top level")
    data = apply_env(data, os.environ if environ is None else environ)
    try:
        return ServerConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigurationError(
            f"{source}: {format_errors(exc)}", hint="See config/*.yaml for examples and docs/operations-scale-out.md."
        ) from exc


def load_config(path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None) -> ServerConfig:
    """Read and validate a config file; relative file paths inside it stay relative to the working directory."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigurationError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
    return parse_config(text, source=str(path), environ=environ)


