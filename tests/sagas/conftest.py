"""Fixtures of the SDK tests.

``env`` and ``time_skipping_env`` start an in-process orchestrator on the
history store named by ``store_kind``. Tests marked ``e2e`` run once per store
of :data:`E2E_STORES` (ids ``[memory]`` and ``[mongodb]``); the others run on
the in-memory store only. ``mongodb`` is the MongoDB the contract suite uses
(``SAGAS_TEST_MONGODB_URL`` or the SecantusDB stand-in, see
``tests/contract/conftest.py``), one database per test; it is skipped when the
stand-in cannot start, except in CI (``CI=true``), where it fails.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from sagas.testing import WorkflowEnvironment

E2E_STORES = ["memory", "mongodb"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "e2e: runs a real orchestrator in-process (WorkflowEnvironment)")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "store_kind" in metafunc.fixturenames and metafunc.definition.get_closest_marker("e2e"):
        metafunc.parametrize("store_kind", E2E_STORES, indirect=True)


@pytest.fixture
def store_kind(request: pytest.FixtureRequest) -> str:
    """The history store of ``env`` (``memory`` unless the test is parametrised over E2E_STORES)."""
    kind: str = getattr(request, "param", "memory")
    return kind


@pytest.fixture(scope="session")
def _stop_mongo_afterwards() -> Iterator[None]:
    yield
    from tests.contract.conftest import stop_mongo_server

    stop_mongo_server()


@pytest.fixture
def store_url(store_kind: str, request: pytest.FixtureRequest) -> str:
    if store_kind == "memory":
        return "memory://"
    if store_kind == "mongodb":
        from tests.contract.conftest import mongo_server_url

        request.getfixturevalue("_stop_mongo_afterwards")
        return mongo_server_url(f"sagas_sdk_{uuid.uuid4().hex[:12]}")
    raise ValueError(f"unknown store kind {store_kind!r}")


@pytest.fixture
async def env(store_url: str) -> AsyncIterator[WorkflowEnvironment]:
    async with await WorkflowEnvironment.start_local(store_url=store_url) as environment:
        yield environment


@pytest.fixture
async def time_skipping_env(store_url: str) -> AsyncIterator[WorkflowEnvironment]:
    async with await WorkflowEnvironment.start_time_skipping(store_url=store_url) as environment:
        yield environment
