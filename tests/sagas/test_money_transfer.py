"""Money transfer saga with its activities in a separate worker process."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sagas.exceptions import ApplicationError, WorkflowFailureError
from sagas.testing import WorkflowEnvironment
from sagas.worker import Worker
from tests.sagas.money_transfer_app import MoneyTransfer, Transfer


@pytest.fixture
async def bank(tmp_path: Path) -> AsyncIterator[tuple[WorkflowEnvironment, Path]]:
    db = tmp_path / "bank.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE accounts (name TEXT PRIMARY KEY, balance INTEGER, closed INTEGER)")
    conn.executemany("INSERT INTO accounts VALUES (?, ?, ?)", [("alice", 100, 0), ("bob", 0, 0), ("closed", 0, 1)])
    conn.commit()
    conn.close()
    async with await WorkflowEnvironment.start_local() as env:
        ready = tmp_path / "ready"
        target = env.client.target_host
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.sagas.money_transfer_app", "--target", target, "--db", str(db), "--ready-file", str(ready)],
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            deadline = time.monotonic() + 30
            while not ready.exists():
                assert proc.poll() is None and time.monotonic() < deadline, "activity worker did not start"
                await asyncio.sleep(0.02)
            yield env, db
        finally:
            proc.terminate()
            await asyncio.to_thread(proc.wait, 10)


def balances(db: Path) -> dict[str, int]:
    conn = sqlite3.connect(db)
    try:
        return {n: b for n, b in conn.execute("SELECT name, balance FROM accounts")}
    finally:
        conn.close()


async def test_transfer_succeeds(bank: tuple[WorkflowEnvironment, Path]) -> None:
    env, db = bank
    async with Worker(env.client, task_queue="transfers", workflows=[MoneyTransfer]):
        result = await env.client.execute_workflow(
            MoneyTransfer.run, Transfer("t1", "alice", "bob", 30), id="transfer-1", task_queue="transfers"
        )
    assert result == "transferred"
    assert balances(db) == {"alice": 70, "bob": 30, "closed": 0}


async def test_failed_deposit_is_refunded(bank: tuple[WorkflowEnvironment, Path]) -> None:
    env, db = bank
    async with Worker(env.client, task_queue="transfers", workflows=[MoneyTransfer]):
        with pytest.raises(WorkflowFailureError) as failed:
            await env.client.execute_workflow(
                MoneyTransfer.run, Transfer("t2", "alice", "closed", 40), id="transfer-2", task_queue="transfers"
            )
    cause = failed.value.cause
    while getattr(cause, "cause", None) is not None:
        cause = cause.cause  # type: ignore[union-attr]
    assert isinstance(cause, ApplicationError) and cause.type == "AccountClosed"
    assert balances(db) == {"alice": 100, "bob": 0, "closed": 0}  # withdrawn, then refunded
