"""What the demo services share: an idempotent booking ledger in SQLite."""

from __future__ import annotations

import sqlite3
import threading
import uuid
from pathlib import Path


class BookingLedger:
    """Bookings of one service, idempotent by key (workflow id + activity id).

    ``book`` twice with the same key returns the same booking; ``cancel`` of a
    key never booked leaves a tombstone so that a late, retried ``book`` cannot
    book after the saga compensated.
    """

    def __init__(self, path: str | Path) -> None:
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS bookings (key TEXT PRIMARY KEY, booking_id TEXT, status TEXT, detail TEXT)"
        )
        self._lock = threading.Lock()

    def book(self, key: str, detail: str) -> tuple[str, str]:
        """Returns (booking_id, status); status is ``booked`` or ``cancelled`` (tombstone)."""
        with self._lock:
            row = self._db.execute("SELECT booking_id, status FROM bookings WHERE key = ?", (key,)).fetchone()
            if row:
                return row[0], row[1]
            booking_id = uuid.uuid4().hex[:8]
            self._db.execute("INSERT INTO bookings VALUES (?, ?, 'booked', ?)", (key, booking_id, detail))
            return booking_id, "booked"

    def cancel(self, key: str) -> str:
        """Cancel a booking (idempotent); returns the previous status or ``none``."""
        with self._lock:
            row = self._db.execute("SELECT status FROM bookings WHERE key = ?", (key,)).fetchone()
            if row is None:
                self._db.execute("INSERT INTO bookings VALUES (?, '', 'cancelled', 'tombstone')", (key,))
                return "none"
            self._db.execute("UPDATE bookings SET status = 'cancelled' WHERE key = ?", (key,))
            return str(row[0])

    def status(self) -> dict[str, str]:
        with self._lock:
            return {k: s for k, s in self._db.execute("SELECT key, status FROM bookings")}

    def close(self) -> None:
        self._db.close()
