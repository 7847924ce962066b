"""The chaos suite: sagas under process kills, pauses, store faults and bad deliveries."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "chaos: runs sagas against real processes under a fault schedule, then checks the invariants",
    )
