"""Fixtures of the SDK tests.

``env`` and ``time_skipping_env`` start an in-process orchestrator on the
history store and broker named by ``store_kind``. Tests marked ``e2e`` run once
per backend of :data:`E2E_BACKENDS`: ``[memory]`` (memory store, built-in
broker), ``[mongodb]`` (MongoDB store, built-in broker) and ``[rabbitmq]``, ``[kafka]``, ``[sqs]``
(memory store, that broker: the SDK worker then talks to the broker directly). The others run on
the in-memory store and built-in broker only. ``mongodb`` is the MongoDB the contract suite uses (``SAGAS_TEST_MONGODB_URL``
or the SecantusDB stand-in, see ``tests/contract/conftest.py``), one database per
test; the brokers are the real servers of ``tests/services.py``. Each is skipped
when it cannot start, except in CI (``CI=true``), where that fails.
"""

from __future__ import annotations

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
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "e2e: runs a real orchestrator in-process (WorkflowEnvironment)")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "store_kind" in metafunc.fixturenames and metafunc.definition.get_closest_marker("e2e"):
        metafunc.parametrize("store_kind", E2E_BACKENDS, indirect=True)


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
