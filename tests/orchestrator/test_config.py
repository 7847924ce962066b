"""The server config file: every example loads, each kind of mistake names its key, env overrides."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from orchestrator.config import apply_env, load_config, parse_config
from orchestrator.errors import ConfigurationError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "config").glob("*.yaml"))
COMPOSE = ROOT / "compose" / "docker-compose.yml"

MINIMAL = """
persistence:
  defaultStore: default
  datastores:
    default:
      sqlite: {path: x.db}
"""


def test_there_are_examples() -> None:
    assert {p.name for p in EXAMPLES} >= {"development.yaml", "production.yaml"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_config_loads(path: Path) -> None:
    cfg = load_config(path, environ={})
    assert cfg.store_url.startswith(("sqlite://", "mongodb://"))


def test_defaults_of_a_minimal_file() -> None:
    cfg = parse_config(MINIMAL, environ={})
    assert cfg.services == ["frontend", "history", "matching", "timers", "worker"]
    assert cfg.persistence.num_history_shards == 4
    assert cfg.store_url == "sqlite:///x.db"
    assert cfg.broker.url == "local://" and cfg.cluster is None


def _error(text: str) -> str:
    with pytest.raises(ConfigurationError) as info:
        parse_config(text, source="f.yaml", environ={})
    return info.value.message


@pytest.mark.parametrize(
    ("text", "names"),
    [
        # a required key missing
        ("persistence: {defaultStore: m, datastores: {m: {mongodb: {}}}}",
         "persistence.datastores.m.mongodb.url: field required"),
        # a misspelt key
        (MINIMAL + "brokr: {url: amqp://x}", "brokr: unknown key"),
        ("persistence: {defaultStore: d, datastores: {d: {sqlite: {path: x, pth: y}}}}",
         "persistence.datastores.d.sqlite.pth: unknown key"),
        # a wrong type / out of range
        (MINIMAL + "frontend: {port: seventy}", "frontend.port: "),
        (MINIMAL.replace("defaultStore", "numHistoryShards: 0\n  defaultStore"), "persistence.numHistoryShards: "),
        # a bad value
        (MINIMAL + "services: [frontend, histroy]", "services.1: "),
        ("persistence: {defaultStore: d, datastores: {d: {mongodb: {url: 'http://x'}}}}",
         "persistence.datastores.d.mongodb.url: "),
        # references and combinations
        ("persistence: {defaultStore: nope, datastores: {d: {memory: {}}}}", "persistence: "),
        ("persistence: {defaultStore: d, datastores: {d: {memory: {}, sqlite: {path: x}}}}",
         "persistence.datastores.d: "),
        (MINIMAL + "cluster: {leaseSeconds: 3}", "built-in broker"),
        (MINIMAL + "services: [history, matching, timers]", "every process runs the frontend"),
        (MINIMAL + "services: [frontend, history]", "run together"),
        ("[1, 2]", "mapping"),
        ("persistence: [", "not valid YAML"),
    ],
)
def test_each_kind_of_mistake_names_the_key(text: str, names: str) -> None:
    message = _error(text)
    assert names in message, message
    assert message.startswith("f.yaml")


def test_visibility_store_must_be_the_default_store() -> None:
    text = MINIMAL.replace("defaultStore: default", "defaultStore: default\n  visibilityStore: other")
    assert "visibilityStore must be the defaultStore" in _error(text)


def test_environment_overrides_nested_keys_case_and_underscore_insensitively() -> None:
    env = {
        "SAGAS_BROKER__URL": "amqp://guest:guest@rabbit:5672/",
        "SAGAS_PERSISTENCE__NUM_HISTORY_SHARDS": "32",
        "SAGAS_PERSISTENCE__DATASTORES__DEFAULT__SQLITE__PATH": "/data/s.db",
        "SAGAS_CLUSTER__LEASE_SECONDS": "5",
        "SAGAS_FRONTEND__ADVERTISE_ADDRESS": "http://orc-2:7233",
        "SAGAS_TOKEN_SECRET": "not a file key",
        "OTHER": "ignored",
    }
    cfg = parse_config(MINIMAL, environ=env)
    assert cfg.broker.url == "amqp://guest:guest@rabbit:5672/"
    assert cfg.persistence.num_history_shards == 32
    assert cfg.store_url == "sqlite:////data/s.db"
    assert cfg.cluster is not None and cfg.cluster.lease_seconds == 5
    assert cfg.advertise_address == "http://orc-2:7233"


def test_an_environment_mistake_names_the_key_too() -> None:
    with pytest.raises(ConfigurationError, match=r"frontend\.port: "):
        parse_config(MINIMAL, environ={"SAGAS_FRONTEND__PORT": "abc"})
    assert apply_env({}, {"SAGAS_LOG__LEVEL": "debug"}) == {"log": {"level": "debug"}}


def test_cli_refuses_a_bad_file_naming_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(MINIMAL + "frontend: {prot: 1}")
    done = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv").exists() else "python",
         "-m", "sagas.cli.server", "start", "--config", str(bad)],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert done.returncode == 2
    assert "frontend.prot: unknown key" in done.stderr.replace("\n", "")


# compose ----------------------------------------------------------------------------------------
def _compose() -> dict[str, object]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def test_compose_file_passes_docker_compose_config() -> None:
    binary = shutil.which("docker-compose") or shutil.which("docker")
    if binary is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI=true and neither docker-compose nor docker is installed")
        pytest.skip("docker-compose is not installed (apt-get install -y --no-install-recommends docker-compose)")
    argv = [binary, "-f", str(COMPOSE), "config", "-q"]
    if binary.endswith("docker"):
        argv = [binary, "compose", "-f", str(COMPOSE), "config", "-q"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_compose_references_files_and_commands_that_exist() -> None:
    compose = _compose()
    services = compose["services"]
    assert isinstance(services, dict)
    assert {"mongo", "mongo-init", "rabbitmq", "trip-worker"} <= set(services)
    orchestrators = [n for n in services if n.startswith("orchestrator-")]
    assert len(orchestrators) >= 2
    for name, service in services.items():
        assert isinstance(service, dict)
        build = service.get("build")
        if isinstance(build, dict):
            assert (COMPOSE.parent / build["context"] / build["dockerfile"]).exists(), name
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE.parent / source).exists(), f"{name}: {source}"
        command = service.get("command", [])
        if command[:3] == ["sagas", "server", "start"]:
            mounted = {v.split(":")[1]: COMPOSE.parent / v.split(":")[0] for v in service["volumes"]}
            config = mounted[command[command.index("--config") + 1]]
            env = {k: str(v) for k, v in service.get("environment", {}).items()}
            cfg = load_config(config, environ=env)  # loads, with the container's overrides
            assert cfg.cluster is not None and cfg.broker.url.startswith("amqp://")
            assert cfg.advertise_address == f"http://{name}:7233"
        elif command[:2] == ["python", "-m"]:
            module = ROOT / (command[2].replace(".", "/") + ".py")
            assert module.exists(), f"{name}: {command[2]}"
    copied = re.findall(r"^COPY (\S+)", (COMPOSE.parent / "Dockerfile").read_text(), re.M)
    for path in copied:
        assert (ROOT / path).exists(), path


def test_prometheus_scrapes_every_orchestrator_and_the_dashboard_uses_real_metrics() -> None:
    import json

    from prometheus_client import REGISTRY

    import orchestrator.metrics  # noqa: F401
    import orchestrator.persistence._instrumented  # noqa: F401

    services = _compose()["services"]
    assert isinstance(services, dict)
    assert {"prometheus", "grafana"} <= set(services)
    scrape = yaml.safe_load((COMPOSE.parent / "prometheus.yml").read_text())
    targets = {t for job in scrape["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    assert targets == {f"{n}:7233" for n in services if n.startswith("orchestrator-")}

    dashboard = json.loads((COMPOSE.parent / "grafana" / "dashboards" / "sagas.json").read_text())
    exported = set()
    for family in REGISTRY.collect():
        if family.name.startswith("sagas_"):
            exported |= {s.name for s in family.samples} | {family.name, family.name + "_total"}
            exported |= {family.name + suffix for suffix in ("_bucket", "_count", "_sum")}
    used = {m for p in dashboard["panels"] for t in p["targets"] for m in re.findall(r"\bsagas_[a-z_]+", t["expr"])}
    assert used and used <= exported, sorted(used - exported)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    provisioning = COMPOSE.parent / "grafana" / "provisioning"
    assert yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"][0]["uid"] == "prometheus"


async def test_time_skipping_on_an_external_broker_is_refused_with_the_reason() -> None:
    from orchestrator.errors import ConfigurationError
    from orchestrator.server import Orchestrator, OrchestratorConfig

    orc = Orchestrator(OrchestratorConfig(store_url="memory://", broker_url="amqp://guest:pw@127.0.0.1:1/", time_skipping=True))
    with pytest.raises(ConfigurationError, match=r"time skipping needs the built-in broker .* not amqp://127.0.0.1: ") as info:
        await orc.start()
    assert "pw" not in str(info.value)  # no credentials in the message
