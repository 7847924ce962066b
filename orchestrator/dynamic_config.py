"""Dynamic config: runtime-tunable settings in a YAML file, applied without a restart.

The file maps setting keys to values (every key is optional; a missing key
means its default, the value the server was started with)::

    # /etc/sagas/dynamic.yaml
    frontend.namespace_rps: 200          # per-namespace request rate (token bucket)
    frontend.namespace_burst: 400
    limits.max_payload_bytes: 1048576
    timers.batch_size: 200

:class:`DynamicConfig` reads it, polls its modification time every
``poll_interval`` seconds and re-reads it when it changed. Components read a
value with :meth:`DynamicConfig.get` whenever they need it, or
:meth:`subscribe` to be called with each new value (how the orchestrator's
services are tuned: :func:`bind_orchestrator`). A file that does not parse,
names an unknown key or has a value of the wrong type is refused *as a whole*
with an error naming the problem (logged, and kept in :attr:`last_error`); the
previous values stay in force, so a typo never takes the server down.

Every setting, its default and what it tunes: :data:`SETTINGS`, and
``docs/dynamic-config.md``. Start the dev server with it::

    sagas server start-dev --dynamic-config /etc/sagas/dynamic.yaml
    # or: DevServer(dynamic_config_path="/etc/sagas/dynamic.yaml")
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from orchestrator.errors import ConfigurationError

if TYPE_CHECKING:
    from orchestrator.server import Orchestrator

log = logging.getLogger("sagas.dynamic_config")


@dataclass(frozen=True)
class Setting:
    """One tunable: its key, type, default, lower bound and what it does."""

    key: str
    type: type
    default: Any
    doc: str
    minimum: float | None = None
    nullable: bool = False
    """``null`` in the file is allowed (and means "no limit")."""

    def check(self, value: Any) -> Any:
        """The value converted to the setting's type; ``ConfigurationError`` naming the problem otherwise."""
        if value is None:
            if self.nullable:
                return None
            raise ConfigurationError(f"dynamic config {self.key}: null is not allowed (default {self.default!r})")
        if self.type is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, self.type) or (self.type is not bool and isinstance(value, bool)):
            raise ConfigurationError(
                f"dynamic config {self.key}: {value!r} is not {'a number' if self.type is float else 'an integer'}"
                if self.type in (int, float)
                else f"dynamic config {self.key}: {value!r} is not a {self.type.__name__}"
            )
        if self.minimum is not None and isinstance(value, int | float) and value < self.minimum:
            raise ConfigurationError(f"dynamic config {self.key}: {value!r} is below the minimum {self.minimum:g}")
        return value


SETTINGS: dict[str, Setting] = {
    s.key: s
    for s in [
        Setting(
            "frontend.namespace_rps", float, None, minimum=0.001, nullable=True,
            doc="Requests per second a namespace may make to the frontend (token bucket), for namespaces that "
            "set no rate of their own; null: unlimited.",
        ),
        Setting(
            "frontend.namespace_burst", int, None, minimum=1, nullable=True,
            doc="Bucket size of that rate limit (requests that may arrive at once); null: the rate, rounded up.",
        ),
        Setting(
            "limits.max_payload_bytes", int, 2 * 1024 * 1024, minimum=1024,
            doc="Largest payload (workflow input, signal, result...) the frontend accepts, for namespaces that "
            "set no lower limit. Raising it above the value the server started with is capped by the HTTP body "
            "limit fixed at start.",
        ),
        Setting(
            "limits.max_history_events", int, 51_200, minimum=100, nullable=True,
            doc="Events after which a run is terminated (namespaces may set their own); null: no limit.",
        ),
        Setting(
            "limits.history_warn_events", int, 10_240, minimum=10, nullable=True,
            doc="History length past which describe warns that the run should continue as new.",
        ),
        Setting(
            "timers.batch_size", int, 500, minimum=1,
            doc="Due timers loaded and fired per store read by the timer queue processor.",
        ),
        Setting(
            "timers.max_sleep_seconds", float, 5.0, minimum=0.01,
            doc="Longest the timer queue processor sleeps before looking at the store again (other processes "
            "may have added earlier timers).",
        ),
        Setting(
            "matching.sweep_interval_seconds", float, 5.0, minimum=0.1,
            doc="How often the transfer queue processor re-reads the outbox for tasks to (re)dispatch.",
        ),
    ]
}


class DynamicConfig:
    """The settings of :data:`SETTINGS`, from a watched YAML file (``path`` None: defaults only).

    ::

        config = DynamicConfig("dynamic.yaml", defaults={"limits.max_payload_bytes": 4 << 20})
        await config.start()                  # loads now, then watches the file
        config.get("timers.batch_size")       # 500 until the file says otherwise
        config.subscribe("timers.batch_size", lambda n: setattr(timers, "batch_size", n))
        await config.stop()
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None,
        *,
        poll_interval: float = 1.0,
        defaults: Mapping[str, Any] | None = None,
    ) -> None:
        self.path = Path(path) if path is not None else None
        self.poll_interval = poll_interval
        self._defaults = {key: s.default for key, s in SETTINGS.items()}
        for key, value in (defaults or {}).items():
            self._defaults[_known(key)] = SETTINGS[key].check(value) if value is not None else None
        self._values: dict[str, Any] = dict(self._defaults)
        self._subscribers: dict[str, list[Callable[[Any], None]]] = {}
        self._mtime: float | None = None
        self._task: asyncio.Task[None] | None = None
        self.version = 0
        """Bumped each time a changed file is applied."""
        self.last_error: str | None = None
        """Why the last read of the file was refused (None after a good read)."""

    def get(self, key: str) -> Any:
        """The current value of ``key`` (``ConfigurationError`` for a key not in :data:`SETTINGS`)."""
        return self._values[_known(key)]

    def values(self) -> dict[str, Any]:
        """Every setting's current value."""
        return dict(self._values)

    def subscribe(self, key: str, apply: Callable[[Any], None]) -> None:
        """Call ``apply(value)`` now and whenever ``key`` changes."""
        self._subscribers.setdefault(_known(key), []).append(apply)
        apply(self._values[key])

    def load(self) -> bool:
        """Read the file now; apply it if valid. Returns whether any value changed."""
        if self.path is None:
            return False
        try:
            self._mtime = self.path.stat().st_mtime
            text = self.path.read_text(encoding="utf-8")
            values = self._parse(text)
        except (OSError, ConfigurationError) as exc:
            message = str(exc) if isinstance(exc, ConfigurationError) else f"cannot read {self.path}: {exc}"
            if message != self.last_error:
                log.error("dynamic config refused, previous values stay in force: %s", message)
            self.last_error = message
            return False
        self.last_error = None
        changed = {k: v for k, v in values.items() if self._values.get(k) != v}
        if not changed:
            return False
        self._values = values
        self.version += 1
        log.info("dynamic config applied (%s): %s", self.path, ", ".join(f"{k}={v!r}" for k, v in changed.items()))
        for key, value in changed.items():
            for apply in self._subscribers.get(key, []):
                try:
                    apply(value)
                except Exception:  # noqa: BLE001 - one broken subscriber must not block the others
                    log.exception("applying dynamic config %s=%r failed", key, value)
        return True

    def _parse(self, text: str) -> dict[str, Any]:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigurationError(f"dynamic config {self.path} is not valid YAML: {exc}") from None
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigurationError(
                f"dynamic config {self.path} must be a mapping of setting keys to values, got {type(data).__name__}"
            )
        values = dict(self._defaults)
        for key, value in data.items():
            known = _known(str(key), where=str(self.path))
            values[known] = SETTINGS[known].check(value)
        return values

    async def start(self) -> None:
        """Load the file (a bad file at start is an error) and watch it."""
        self.load()
        if self.last_error is not None:
            raise ConfigurationError(self.last_error, hint="Fix the dynamic config file; see docs/dynamic-config.md.")
        if self.path is not None:
            self._task = asyncio.create_task(self._watch(), name="dynamic-config")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _watch(self) -> None:
        assert self.path is not None
        while True:
            await asyncio.sleep(self.poll_interval)
            try:
                mtime: float | None = self.path.stat().st_mtime
            except OSError:
                mtime = None
            if mtime != self._mtime:
                self.load()


def _known(key: str, *, where: str = "") -> str:
    if key in SETTINGS:
        return key
    close = difflib.get_close_matches(key, list(SETTINGS), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; known settings: {', '.join(sorted(SETTINGS))}"
    raise ConfigurationError(f"unknown dynamic config setting {key!r}{f' in {where}' if where else ''}{hint}")


def bind_orchestrator(config: DynamicConfig, orc: Orchestrator) -> None:
    """Tune a started orchestrator's services from ``config`` (now and on every change)."""
    registry = orc.namespaces

    def namespace_default(field: str) -> Callable[[Any], None]:
        def apply(value: Any) -> None:
            registry.defaults = replace(registry.defaults, **{field: value})

        return apply

    config.subscribe("frontend.namespace_rps", namespace_default("rate_limit_rps"))
    config.subscribe("frontend.namespace_burst", namespace_default("rate_limit_burst"))
    config.subscribe("limits.max_payload_bytes", namespace_default("max_payload_bytes"))
    config.subscribe("limits.max_payload_bytes", lambda v: setattr(orc, "max_payload_bytes", v))
    config.subscribe("limits.max_history_events", namespace_default("max_history_events"))
    config.subscribe("limits.history_warn_events", namespace_default("history_warn_events"))
    config.subscribe("timers.batch_size", lambda v: setattr(orc.timers, "batch_size", v))
    config.subscribe("timers.max_sleep_seconds", lambda v: setattr(orc.timers, "max_sleep", v))
    config.subscribe("matching.sweep_interval_seconds", lambda v: setattr(orc.matching, "sweep_interval", v))


async def start_for_orchestrator(orc: Orchestrator, path: str | os.PathLike[str]) -> DynamicConfig:
    """The dynamic config of a started orchestrator: defaults from its config, then the file, watched."""
    ns = orc.namespaces.defaults
    config = DynamicConfig(
        path,
        # A key absent from the file means what the server was started with.
        defaults={
            "frontend.namespace_rps": ns.rate_limit_rps,
            "frontend.namespace_burst": ns.rate_limit_burst,
            "limits.max_payload_bytes": ns.max_payload_bytes,
            "limits.max_history_events": ns.max_history_events,
            "limits.history_warn_events": ns.history_warn_events,
            "timers.batch_size": orc.timers.batch_size,
            "timers.max_sleep_seconds": orc.timers.max_sleep,
            "matching.sweep_interval_seconds": orc.matching.sweep_interval,
        },
    )
    await config.start()
    bind_orchestrator(config, orc)
    return config
