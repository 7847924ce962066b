"""Fixtures of the SDK tests.

``env`` and ``time_skipping_env`` start an in-process orchestrator on the
history store and broker named by ``store_kind``. Tests marked ``e2e`` run once
per backend of :data:`E2E_BACKENDS`: ``[memory]`` (memory store, built-in
broker), ``[mongodb]`` (MongoDB store, built-in broker) and ``[rabbitmq]``, ``[kafka]``, ``[sqs]``
(memory store, that broker: the SDK worker then talks to the broker directly); under ``CI=true``
Kafka runs :data:`KAFKA_CI_SUBSET` only (see there). The others run on the in-memory store and
built-in broker only. ``mongodb`` is the MongoDB the contract suite uses (``SAGAS_TEST_MONGODB_URL``
or the SecantusDB stand-in, see ``tests/contract/conftest.py``), one database per
test; the brokers are the real servers of ``tests/services.py``. Each is skipped
when it cannot start, except in CI (``CI=true``), where that fails.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from sagas.testing import WorkflowEnvironment
from tests.services import (  # noqa: F401  (session fixtures, requested by name)
    kafka_server,
    rabbitmq_server,
    sqs_server,
)

E2E_BACKENDS = ["memory", "mongodb", "rabbitmq", "kafka", "sqs"]
BROKERS = ("rabbitmq", "kafka", "sqs")
KAFKA_CI_SUBSET = {
    "test_end_to_end": frozenset(
        {
            "test_one_activity_workflow",
            "test_activity_is_retried_until_it_succeeds",
            "test_signal_query_and_update",
            "test_query_after_the_worker_restarted_replays_history",
            "test_cancelling_a_workflow_cancels_its_heartbeating_activity",
            "test_activity_deadline_is_enforced_on_the_worker",
            "test_unreadable_task_is_dead_lettered_and_the_worker_goes_on",
            "test_many_workflows_across_two_workers",
            "test_worker_shutdown_is_prompt",
            "test_client_connect_to_the_environment",
        }
    )
}
"""The ``[kafka]`` tests CI runs (``SAGAS_E2E_KAFKA=all`` runs every one; outside CI that is the default).

Every worker start costs a consumer-group join, and Tansu answers a JoinGroup no sooner than a
second (half the session timeout, in whole seconds): a test takes ~3 s on Kafka against ~2.4 s on
RabbitMQ, and all of them would add ~70 s to a CI run that has none to spare. The subset keeps
what depends on the broker: tasks and retries, queries and signals through the workflow queue, a
restarted worker (leaving and joining the group), the activity deadline (both queues polled at
once), dead letters, two workers sharing a group, shutdown; the rest (payload errors, unknown
types, timers, async completion, the CLI) is the same code on every broker and runs on the other four."""


def _kafka_runs_all() -> bool:
    default = "subset" if os.environ.get("CI", "").lower() == "true" else "all"
    return os.environ.get("SAGAS_E2E_KAFKA", default).lower() == "all"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "e2e: runs a real orchestrator in-process (WorkflowEnvironment)")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "store_kind" in metafunc.fixturenames and metafunc.definition.get_closest_marker("e2e"):
        module = metafunc.module.__name__.rsplit(".", 1)[-1]
        subset = KAFKA_CI_SUBSET.get(module, frozenset())
        if missing := sorted(n for n in subset if not hasattr(metafunc.module, n)):
            raise pytest.UsageError(f"KAFKA_CI_SUBSET names tests {module} does not have: {missing}")
        skip = pytest.mark.skip(reason="Kafka runs KAFKA_CI_SUBSET in CI; SAGAS_E2E_KAFKA=all runs this")
        params = [
            pytest.param(kind, marks=skip)
            if kind == "kafka" and metafunc.function.__name__ not in subset and not _kafka_runs_all()
            else kind
            for kind in E2E_BACKENDS
        ]
        metafunc.parametrize("store_kind", params, indirect=True)


@pytest.fixture
def store_kind(request: pytest.FixtureRequest) -> str:
    """The backend of ``env`` (``memory`` unless the test is parametrised over E2E_BACKENDS)."""
    kind: str = getattr(request, "param", "memory")
    return kind


@pytest.fixture(scope="session")
def _stop_mongo_afterwards() -> Iterator[None]:
    yield
    from tests.contract.conftest import stop_mongo_server

    stop_mongo_server()


@pytest.fixture
def store_url(store_kind: str, request: pytest.FixtureRequest) -> str:
    if store_kind == "memory" or store_kind in BROKERS:
        return "memory://"
    if store_kind == "mongodb":
        from tests.contract.conftest import mongo_server_url

        request.getfixturevalue("_stop_mongo_afterwards")
        return mongo_server_url(f"sagas_sdk_{uuid.uuid4().hex[:12]}")
    raise ValueError(f"unknown store kind {store_kind!r}")


@pytest.fixture
def env_broker_url(store_kind: str, request: pytest.FixtureRequest) -> str:
    """The broker of ``env``: the built-in one, or a real server for the broker backends."""
    if store_kind not in BROKERS:
        return "local://"
    from tests.e2e.test_demos import broker_url

    return broker_url(request, store_kind)


@pytest.fixture
async def env(store_url: str, env_broker_url: str) -> AsyncIterator[WorkflowEnvironment]:
    async with await WorkflowEnvironment.start_local(store_url=store_url, broker_url=env_broker_url) as environment:
        yield environment


@pytest.fixture
async def time_skipping_env(store_url: str, env_broker_url: str, store_kind: str) -> AsyncIterator[WorkflowEnvironment]:
    if store_kind in BROKERS:
        pytest.skip("time skipping needs the built-in broker: the server cannot see an external broker's queues go idle")
    async with await WorkflowEnvironment.start_time_skipping(
        store_url=store_url, broker_url=env_broker_url
    ) as environment:
        yield environment
