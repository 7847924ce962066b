"""Fixtures of the SDK tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from sagas.testing import WorkflowEnvironment


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "e2e: runs a real orchestrator in-process (WorkflowEnvironment)")


@pytest.fixture
async def env() -> AsyncIterator[WorkflowEnvironment]:
    async with await WorkflowEnvironment.start_local() as environment:
        yield environment


@pytest.fixture
async def time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    async with await WorkflowEnvironment.start_time_skipping() as environment:
        yield environment
