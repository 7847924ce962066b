"""Dynamic config: a watched YAML file of runtime-tunable settings."""

from __future__ import annotations

import asyncio
import os
import re
import time
from pathlib import Path

import pytest

from orchestrator.dynamic_config import SETTINGS, DynamicConfig
from orchestrator.errors import ConfigurationError
from sagas.client import RPCError
from sagas.testing import WorkflowEnvironment


def write(path: Path, text: str) -> None:
    path.write_text(text)
    # Filesystems with coarse timestamps: make sure the watcher sees a new modification time.
    stamp = time.time() + 0.01 * len(text)
    os.utime(path, (stamp, stamp))


def test_defaults_file_values_and_subscribers(tmp_path: Path) -> None:
    path = tmp_path / "dynamic.yaml"
    write(path, "timers.batch_size: 50\nfrontend.namespace_rps: 10\n")
    config = DynamicConfig(path, defaults={"limits.max_payload_bytes": 4096})
    seen: list[int] = []
    config.subscribe("timers.batch_size", seen.append)
    assert config.get("timers.batch_size") == 500 and seen == [500]  # not loaded yet
    assert config.load() is True
    assert config.get("timers.batch_size") == 50 and seen == [500, 50]
    assert config.get("frontend.namespace_rps") == 10.0  # an int is a fine float
    assert config.get("limits.max_payload_bytes") == 4096  # the default given at construction
    assert config.get("timers.max_sleep_seconds") == SETTINGS["timers.max_sleep_seconds"].default
    # A key removed from the file goes back to its default.
    write(path, "frontend.namespace_rps: 10\n")
    assert config.load() is True and seen == [500, 50, 500]
    assert config.load() is False  # nothing changed


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("timers.batch_sise: 10\n", "unknown dynamic config setting 'timers.batch_sise'.*did you mean 'timers.batch_size'"),
        ("timers.batch_size: lots\n", "timers.batch_size: 'lots' is not an integer"),
        ("timers.batch_size: 0\n", "below the minimum 1"),
        ("timers.batch_size: null\n", "null is not allowed"),
        ("timers.batch_size: [1\n", "not valid YAML"),
        ("- timers.batch_size\n", "must be a mapping"),
    ],
)
def test_a_bad_file_is_refused_whole_and_the_old_values_stay(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "dynamic.yaml"
    write(path, "timers.batch_size: 50\nlimits.max_payload_bytes: 8192\n")
    config = DynamicConfig(path)
    assert config.load()
    write(path, text if text.startswith("-") else "limits.max_payload_bytes: 4096\n" + text)
    assert config.load() is False
    assert config.last_error is not None
    assert re.search(message, config.last_error), config.last_error
    assert (config.get("timers.batch_size"), config.get("limits.max_payload_bytes")) == (50, 8192)
    with pytest.raises(ConfigurationError, match="unknown dynamic config setting"):
        config.get("no.such.key")


async def test_a_bad_file_at_start_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "dynamic.yaml"
    write(path, "timers.batch_size: -1\n")
    with pytest.raises(ConfigurationError, match="below the minimum"):
        await DynamicConfig(path).start()


async def test_the_watcher_applies_a_changed_file(tmp_path: Path) -> None:
    path = tmp_path / "dynamic.yaml"
    write(path, "")
    config = DynamicConfig(path, poll_interval=0.02)
    await config.start()
    try:
        write(path, "matching.sweep_interval_seconds: 0.5\n")
        for _ in range(200):
            if config.get("matching.sweep_interval_seconds") == 0.5:
                break
            await asyncio.sleep(0.01)
        assert config.get("matching.sweep_interval_seconds") == 0.5 and config.version == 1
    finally:
        await config.stop()


async def test_a_change_takes_effect_in_a_running_server_without_restart(tmp_path: Path) -> None:
    path = tmp_path / "dynamic.yaml"
    write(path, "timers.batch_size: 100\n")
    async with await WorkflowEnvironment.start_local(dynamic_config_path=str(path), system_worker=False) as env:
        assert env.server is not None
        orc = env.server.orchestrator
        assert orc.dynamic_config is not None and orc.timers.batch_size == 100
        big = "x" * 5000
        await env.client.start_workflow("Anything", big, id="before", task_queue="nobody")  # fine: 2 MiB limit

        write(path, "timers.batch_size: 7\nlimits.max_payload_bytes: 4096\nfrontend.namespace_rps: 1000\n")
        deadline = time.monotonic() + 5
        while orc.dynamic_config.version < 2:  # version 1 was the file read at start
            assert time.monotonic() < deadline, orc.dynamic_config.last_error
            await asyncio.sleep(0.05)
        assert orc.timers.batch_size == 7
        assert orc.namespaces.rate_limit("default")[0] == 1000.0
        with pytest.raises(RPCError) as info:
            await env.client.start_workflow("Anything", big, id="after", task_queue="nobody")
        assert info.value.code == "payload_too_large" and "4096" in str(info.value)


def test_every_setting_is_documented_with_its_default() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "dynamic-config.md").read_text()
    for key, setting in SETTINGS.items():
        row = next((line for line in doc.splitlines() if line.startswith(f"| `{key}` |")), None)
        assert row is not None, f"{key} is not in docs/dynamic-config.md"
        default = "null" if setting.default is None else str(setting.default)
        assert f"| {default}" in row, f"docs/dynamic-config.md gives {key} another default than {default}"
