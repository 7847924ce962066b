"""Money transfer saga: withdraw, deposit (may fail), refund. Activities run in their own process:

    python -m tests.sagas.money_transfer_app --target 127.0.0.1:7233 --db bank.db --ready-file ready
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sqlite3
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from sagas import Saga, activity, workflow
from sagas.common import RetryPolicy
from sagas.exceptions import ApplicationError

BANK_QUEUE = "bank"
STEP = timedelta(seconds=10)


@dataclass
class Transfer:
    transfer_id: str
    source: str
    target: str
    amount: int


class Bank:
    """Accounts plus a journal keyed by (transfer, operation): every operation is idempotent."""

    def __init__(self, path: str) -> None:
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("CREATE TABLE IF NOT EXISTS accounts (name TEXT PRIMARY KEY, balance INTEGER, closed INTEGER)")
        self.db.execute("CREATE TABLE IF NOT EXISTS journal (key TEXT PRIMARY KEY)")

    def apply(self, key: str, account: str, delta: int) -> int:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            if self.db.execute("SELECT 1 FROM journal WHERE key = ?", (key,)).fetchone() is None:
                row = self.db.execute("SELECT balance, closed FROM accounts WHERE name = ?", (account,)).fetchone()
                if row is None or row[1]:
                    raise ApplicationError(f"account {account} cannot take money", type="AccountClosed", non_retryable=True)
                if row[0] + delta < 0:
                    raise ApplicationError(f"insufficient funds in {account}", type="InsufficientFunds", non_retryable=True)
                self.db.execute("UPDATE accounts SET balance = balance + ? WHERE name = ?", (delta, account))
                self.db.execute("INSERT INTO journal VALUES (?)", (key,))
            balance = int(self.db.execute("SELECT balance FROM accounts WHERE name = ?", (account,)).fetchone()[0])
            self.db.execute("COMMIT")
            return balance
        except BaseException:
            self.db.execute("ROLLBACK")
            raise


BANK: Bank | None = None


def _bank() -> Bank:
    assert BANK is not None, "the bank database is opened by main()"
    return BANK


@activity.defn
async def withdraw(t: Transfer) -> int:
    return _bank().apply(f"{t.transfer_id}:withdraw", t.source, -t.amount)


@activity.defn
async def deposit(t: Transfer) -> int:
    return _bank().apply(f"{t.transfer_id}:deposit", t.target, t.amount)


@activity.defn
async def refund(t: Transfer) -> int:
    return _bank().apply(f"{t.transfer_id}:refund", t.source, t.amount)


@workflow.defn
class MoneyTransfer:
    @workflow.run
    async def run(self, t: Transfer) -> str:
        retry = RetryPolicy(initial_interval=timedelta(milliseconds=100), maximum_attempts=3)
        async with Saga() as saga:
            await workflow.execute_activity(withdraw, t, task_queue=BANK_QUEUE, start_to_close_timeout=STEP, retry_policy=retry)
            saga.add_compensation(refund, t, task_queue=BANK_QUEUE, start_to_close_timeout=STEP)
            await workflow.execute_activity(deposit, t, task_queue=BANK_QUEUE, start_to_close_timeout=STEP, retry_policy=retry)
        return "transferred"


async def main() -> None:
    from sagas.client import Client
    from sagas.worker import Worker

    parser = argparse.ArgumentParser()
    parser.add_argument("--target", required=True)
    parser.add_argument("--db", required=True)
    parser.add_argument("--ready-file", required=True)
    args = parser.parse_args()
    global BANK
    BANK = Bank(args.db)
    client = await Client.connect(args.target)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    async with Worker(client, task_queue=BANK_QUEUE, activities=[withdraw, deposit, refund]):
        Path(args.ready_file).touch()
        await stop.wait()
    await client.close()


if __name__ == "__main__":
    asyncio.run(main())
