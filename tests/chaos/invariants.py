"""The invariant checker of the chaos suite: what must hold after any schedule of faults.

It reads, once the system has settled, what the three parties recorded:

* the orchestrator: each saga's history (``GET .../history``, paged), the
  visibility list (``GET .../workflows``) and the dead-letter queue
  (``GET /api/v1/dlq``), all over the HTTP API;
* the services: their own SQLite ledgers (``bookings`` table of
  ``services_demo.common.BookingLedger``), read directly from the files;

and checks (:func:`check`):

1. **settled**: every saga is closed, completed or failed (after compensation);
   nothing is left running, terminated or timed out; one run per workflow id;
2. **net effect**: each service's ledger matches the saga's outcome: booked (and
   not cancelled) iff the saga completed, with the booking id the saga returned;
   a failed saga leaves nothing booked anywhere; no ledger row belongs to an
   unknown saga; a destination that is never served never completes;
3. **no double booking**: exactly one ledger row per (service, workflow);
4. **histories are well formed**: event ids are ``1..n`` with no gap or
   duplicate; the first event is ``WorkflowExecutionStarted``; exactly one
   close event, and it is the last; every activity and workflow task is
   closed at most once (a duplicate reply was never applied); the saga shape
   holds (books in order, compensations of exactly the completed books, in
   reverse order, only when the saga failed); visibility agrees with history;
5. **replay**: every history replays with today's code (``sagas.worker.Replayer``);
6. **DLQ**: holds nothing but the messages the test poisoned on purpose (and
   every one of those, when asked).

Violations are collected, never raised one by one: :func:`assert_no_violations`
fails with the whole list, so one run shows every broken invariant at once.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from orchestrator.api import events as E
from orchestrator.api.common import Failure
from sagas.worker import Replayer, WorkflowHistory
from services_demo.trip_booking.services import KINDS, UNSERVED_DESTINATIONS
from services_demo.trip_booking.workflow import TripBooking

CLOSE_TYPES = (
    E.WorkflowExecutionCompleted,
    E.WorkflowExecutionFailed,
    E.WorkflowExecutionCanceled,
    E.WorkflowExecutionTerminated,
    E.WorkflowExecutionTimedOut,
    E.WorkflowExecutionContinuedAsNew,
)
ACTIVITY_CLOSE_TYPES = (
    E.ActivityTaskCompleted,
    E.ActivityTaskFailed,
    E.ActivityTaskTimedOut,
    E.ActivityTaskCanceled,
)
WFT_CLOSE_TYPES = (
    E.WorkflowTaskCompleted,
    E.WorkflowTaskFailed,
    E.WorkflowTaskTimedOut,
)
CLOSED_STATUSES = ("Completed", "Failed")
RETRYABLE_GIVE_UPS = frozenset({"Unavailable", "TimeoutError"})
"""Root-cause types with which a bookable saga may still fail: a transient error or a timeout
that outlasted the retry policy (the saga then compensates, which is checked)."""


@dataclass(frozen=True)
class SagaSpec:
    """One saga the test started: its workflow id and trip."""

    workflow_id: str
    destination: str

    @property
    def must_fail(self) -> bool:
        """The flight service never serves this destination: the saga must compensate."""
        return self.destination in UNSERVED_DESTINATIONS


@dataclass(frozen=True)
class LedgerRow:
    key: str
    booking_id: str
    status: str
    detail: str


@dataclass
class Snapshot:
    """Everything the checker reads, taken once the system settled."""

    histories: dict[str, list[E.HistoryEvent]] = field(default_factory=dict)
    run_ids: dict[str, str] = field(default_factory=dict)
    visibility: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    ledgers: dict[str, list[LedgerRow]] = field(default_factory=dict)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    read_errors: list[str] = field(default_factory=list)


# -- reading ------------------------------------------------------------------------------------


def read_ledger(path: Path) -> list[LedgerRow]:
    """All rows of a service's ``bookings`` table (empty if the service never wrote one)."""
    if not path.exists():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return [
            LedgerRow(*map(str, row))
            for row in db.execute("SELECT key, booking_id, status, detail FROM bookings")
        ]
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []
        raise
    finally:
        db.close()


async def read_history(
    http: httpx.AsyncClient, workflow_id: str, namespace: str = "default"
) -> tuple[str, list[E.HistoryEvent]]:
    """The current run's id and its whole history (every page)."""
    path = f"/api/v1/namespaces/{quote(namespace, safe='')}/workflows/{quote(workflow_id, safe='')}"
    described = await http.get(path)
    described.raise_for_status()
    run_id = str(described.json()["info"]["run_id"])
    events: list[E.HistoryEvent] = []
    first = 1
    while True:
        r = await http.get(
            f"{path}/history", params={"run_id": run_id, "first_event_id": first, "page_size": 500}
        )
        r.raise_for_status()
        body = r.json()
        events.extend(E.parse_events(body["events"]))
        if not body.get("next_page_token"):
            return run_id, events
        first = int(body["next_page_token"])


async def read_visibility(
    http: httpx.AsyncClient, namespace: str = "default"
) -> dict[str, list[dict[str, Any]]]:
    """Every run the list API knows, by workflow id."""
    runs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    token: str | None = None
    while True:
        params: dict[str, Any] = {"page_size": 1000}
        if token:
            params["next_page_token"] = token
        r = await http.get(f"/api/v1/namespaces/{quote(namespace, safe='')}/workflows", params=params)
        r.raise_for_status()
        body = r.json()
        for execution in body["executions"]:
            runs[execution["workflow_id"]].append(execution)
        token = body.get("next_page_token")
        if not token:
            return dict(runs)


async def read_dead_letters(http: httpx.AsyncClient) -> list[dict[str, Any]]:
    r = await http.get("/api/v1/dlq", params={"limit": 10_000})
    r.raise_for_status()
    return list(r.json()["dead_letters"])


async def snapshot(base_url: str, sagas: Sequence[SagaSpec], ledger_dir: Path) -> Snapshot:
    """Read histories, visibility and DLQ over HTTP and the ledgers from their files."""
    snap = Snapshot()
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        snap.visibility = await read_visibility(http)
        snap.dead_letters = await read_dead_letters(http)
        sem = asyncio.Semaphore(8)

        async def one(spec: SagaSpec) -> None:
            async with sem:
                try:
                    run_id, events = await read_history(http, spec.workflow_id)
                except httpx.HTTPError as exc:
                    snap.read_errors.append(f"{spec.workflow_id}: cannot read its history: {exc}")
                    return
                snap.run_ids[spec.workflow_id] = run_id
                snap.histories[spec.workflow_id] = events

        await asyncio.gather(*(one(s) for s in sagas))
    snap.ledgers = {kind: read_ledger(ledger_dir / f"{kind}.db") for kind in KINDS}
    return snap


async def wait_settled(base_url: str, workflow_ids: Iterable[str], timeout: float) -> dict[str, str]:
    """Poll the list API until every workflow id has a closed run, or ``timeout`` passes.

    Returns the last status seen per workflow id ("missing" when the list API has no
    run); the caller's invariants say whether that is good enough.
    """
    wanted = set(workflow_ids)
    deadline = time.monotonic() + timeout
    statuses: dict[str, str] = {}
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        while True:
            try:
                runs = await read_visibility(http)
            except httpx.HTTPError:
                runs = None  # the server may be restarting: poll again
            if runs is not None:
                statuses = {wid: (runs[wid][0]["status"] if runs.get(wid) else "missing") for wid in wanted}
                if all(s not in ("Running", "missing") for s in statuses.values()):
                    return statuses
            if time.monotonic() > deadline:
                return statuses
            await asyncio.sleep(0.25)


def fault_evidence(snap: Snapshot) -> Counter[str]:
    """Traces the faults left in the histories, to show the schedule really bit.

    Retries write no event per attempt, but the final ``ActivityTaskStarted``
    carries the attempt number and the previous attempt's failure.
    """
    seen: Counter[str] = Counter()
    for events in snap.histories.values():
        by_id = {e.event_id: e for e in events}
        for e in events:
            if isinstance(e, E.WorkflowTaskTimedOut):
                seen["workflow task timeouts"] += 1
            elif isinstance(e, E.WorkflowTaskFailed):
                seen["workflow task failures"] += 1
            elif isinstance(e, E.ActivityTaskStarted) and e.attempt > 1:
                seen["activities retried"] += 1
                scheduled = by_id.get(e.scheduled_event_id)
                kind = scheduled.activity_type if isinstance(scheduled, E.ActivityTaskScheduled) else "?"
                if e.last_failure is not None and e.last_failure.kind == "timeout":
                    seen[f"{kind} attempts timed out"] += 1
                elif e.last_failure is not None:
                    seen[f"{kind} attempts failed ({e.last_failure.type})"] += 1
            elif isinstance(e, E.ActivityTaskCompleted):
                scheduled = by_id.get(e.scheduled_event_id)
                if isinstance(scheduled, E.ActivityTaskScheduled) and scheduled.activity_type.startswith(
                    "cancel_"
                ):
                    seen["compensations completed"] += 1
    return seen


async def describe_unsettled(base_url: str, snap: Snapshot) -> str:
    """What each saga that did not close is waiting for (pending work, last events): for the report."""
    lines: list[str] = []
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        for wid, events in sorted(snap.histories.items()):
            if events and isinstance(events[-1], CLOSE_TYPES):
                continue
            r = await http.get(f"/api/v1/namespaces/default/workflows/{quote(wid, safe='')}")
            info = r.json() if r.status_code == 200 else {}
            pending = [
                f"{a['activity_type']}#{a['scheduled_event_id']} attempt {a['attempt']} {a['state']}"
                for a in info.get("pending_activities", [])
            ]
            tail = ", ".join(f"{e.event_id}:{e.event_type.value}" for e in events[-6:])
            lines.append(f"    {wid}: pending activities {pending or 'none'}; last events: {tail}")
    return ("unsettled sagas:\n" + "\n".join(lines)) if lines else ""


# -- checking -----------------------------------------------------------------------------------


def root_cause(failure: Failure | None) -> Failure | None:
    while failure is not None and failure.cause is not None:
        failure = failure.cause
    return failure


def check_history(workflow_id: str, events: Sequence[E.HistoryEvent]) -> list[str]:
    """Structural invariants of one run's history (see the module docstring, 4)."""
    out: list[str] = []
    ids = [e.event_id for e in events]
    if ids != list(range(1, len(ids) + 1)):
        dup = sorted(i for i, n in Counter(ids).items() if n > 1)
        missing = sorted(set(range(1, max(ids, default=0) + 1)) - set(ids))
        out.append(f"{workflow_id}: event ids are not 1..{len(ids)} (duplicated {dup}, missing {missing})")
    if not events or not isinstance(events[0], E.WorkflowExecutionStarted):
        out.append(f"{workflow_id}: history does not start with WorkflowExecutionStarted")
    closes = [e for e in events if isinstance(e, CLOSE_TYPES)]
    if len(closes) != 1:
        out.append(
            f"{workflow_id}: {len(closes)} close events (want exactly 1): {[e.event_type.value for e in closes]}"
        )
    elif events[-1] is not closes[0]:
        out.append(
            f"{workflow_id}: close event {closes[0].event_id} is not the last event ({events[-1].event_id})"
        )

    scheduled = {e.event_id: e for e in events if isinstance(e, E.ActivityTaskScheduled)}
    act_closes: dict[int, list[E.HistoryEvent]] = defaultdict(list)
    for e in events:
        if isinstance(e, ACTIVITY_CLOSE_TYPES):
            act_closes[e.scheduled_event_id].append(e)
    for sid, closing in act_closes.items():
        if sid not in scheduled:
            out.append(
                f"{workflow_id}: {closing[0].event_type.value} {closing[0].event_id} refers to no scheduled activity ({sid})"
            )
        if len(closing) > 1:
            kinds = [f"{c.event_type.value}@{c.event_id}" for c in closing]
            out.append(
                f"{workflow_id}: activity {sid} closed {len(closing)} times (a duplicate reply was applied): {kinds}"
            )
    wft_scheduled = {e.event_id for e in events if isinstance(e, E.WorkflowTaskScheduled)}
    wft_closes: Counter[int] = Counter()
    wft_starts: Counter[int] = Counter()
    for e in events:
        if isinstance(e, WFT_CLOSE_TYPES):
            wft_closes[e.scheduled_event_id] += 1
        if isinstance(e, E.WorkflowTaskStarted):
            wft_starts[e.scheduled_event_id] += 1
    for sid in wft_closes + wft_starts:
        if sid not in wft_scheduled:
            out.append(f"{workflow_id}: a workflow task event refers to no WorkflowTaskScheduled ({sid})")
    for sid in [s for s, n in wft_closes.items() if n > 1] + [s for s, n in wft_starts.items() if n > 1]:
        out.append(f"{workflow_id}: workflow task {sid} was started or closed more than once")
    return out


def check_saga(
    spec: SagaSpec,
    events: Sequence[E.HistoryEvent],
    runs: Sequence[Mapping[str, Any]],
    ledgers: Mapping[str, Sequence[LedgerRow]],
) -> list[str]:
    """Outcome, saga shape and net effect on every service of one saga."""
    wid = spec.workflow_id
    out: list[str] = []
    if len(runs) != 1:
        out.append(
            f"{wid}: {len(runs)} runs in visibility (want exactly 1: a retried start must not start twice)"
        )
    close = events[-1] if events and isinstance(events[-1], CLOSE_TYPES) else None
    status = (
        "Completed"
        if isinstance(close, E.WorkflowExecutionCompleted)
        else "Failed"
        if isinstance(close, E.WorkflowExecutionFailed)
        else ""
    )
    if close is None:
        out.append(f"{wid}: not closed (destination {spec.destination})")
        return out
    if not status:
        out.append(
            f"{wid}: closed as {close.event_type.value}; a saga must complete or fail after compensating"
        )
    if runs and runs[0]["status"] != (status or close.event_type.value.removeprefix("WorkflowExecution")):
        out.append(
            f"{wid}: visibility says {runs[0]['status']} but history closed with {close.event_type.value}"
        )

    by_id = {e.event_id: e for e in events}
    book_order: list[str] = []
    booked: set[str] = set()
    cancels_done: list[str] = []
    cancels_scheduled: list[str] = []
    for e in events:
        if isinstance(e, E.ActivityTaskScheduled):
            if e.activity_type.startswith("book_"):
                book_order.append(e.activity_type.removeprefix("book_"))
            elif e.activity_type.startswith("cancel_"):
                cancels_scheduled.append(e.activity_type.removeprefix("cancel_"))
        elif isinstance(e, E.ActivityTaskCompleted):
            scheduled = by_id.get(e.scheduled_event_id)
            if isinstance(scheduled, E.ActivityTaskScheduled):
                kind = scheduled.activity_type.split("_", 1)[1]
                if scheduled.activity_type.startswith("book_"):
                    booked.add(kind)
                else:
                    cancels_done.append(kind)
    if book_order != list(KINDS)[: len(book_order)] or len(set(book_order)) != len(book_order):
        out.append(f"{wid}: bookings scheduled as {book_order}, want a prefix of {list(KINDS)} each once")
    expected_cancels = [k for k in reversed(book_order) if k in booked]

    result_ids: dict[str, str] = {}
    if isinstance(close, E.WorkflowExecutionCompleted):
        if spec.must_fail:
            out.append(f"{wid}: completed although {spec.destination} is never served")
        if booked != set(KINDS):
            out.append(f"{wid}: completed but only {sorted(booked)} were booked")
        if cancels_scheduled:
            out.append(f"{wid}: completed but compensations {cancels_scheduled} were scheduled")
        trip = close.result.get("trip", {}) if isinstance(close.result, dict) else {}
        if not isinstance(close.result, dict) or close.result.get("status") != "booked":
            out.append(f"{wid}: completed with an unexpected result {close.result!r}")
        result_ids = {k: str(trip.get(f"{k}_booking", "")) for k in KINDS}
    elif isinstance(close, E.WorkflowExecutionFailed):
        cause = root_cause(close.failure)
        cause_type = cause.type if cause else None
        if not spec.must_fail and cause_type not in RETRYABLE_GIVE_UPS:
            out.append(
                f"{wid}: failed with {cause_type}: {cause.message if cause else ''!r} although {spec.destination} is served"
            )
        # Every completed booking is undone, in reverse order; a workflow may also undo the step that
        # was in flight (registering its compensation before the step), but nothing twice or unbooked.
        undone_bookings = [k for k in cancels_done if k in booked]
        extra = [k for k in cancels_done if k not in book_order]
        if undone_bookings != expected_cancels or extra or len(set(cancels_done)) != len(cancels_done):
            out.append(
                f"{wid}: failed; compensations completed {cancels_done}, want {expected_cancels} "
                f"(the completed bookings, in reverse order, each once)"
            )

    for kind in KINDS:
        rows = [r for r in ledgers.get(kind, []) if r.key == wid]
        if len(rows) > 1:
            out.append(f"{wid}: {len(rows)} {kind} ledger rows (double booking): {rows}")
        live = [r for r in rows if r.status == "booked"]
        if status == "Completed":
            if len(live) != 1:
                out.append(
                    f"{wid}: completed but the {kind} ledger has {rows or 'no row'} (want one 'booked' row)"
                )
            elif result_ids.get(kind) != live[0].booking_id:
                out.append(
                    f"{wid}: the saga returned {kind} booking {result_ids.get(kind)!r} but the ledger holds "
                    f"{live[0].booking_id!r}"
                )
        elif live:
            out.append(f"{wid}: {status or 'not completed'} but {kind} is still booked: {live}")
    if spec.must_fail and any(r.key == wid and r.status == "booked" for r in ledgers.get("flight", [])):
        out.append(f"{wid}: a flight to {spec.destination} was booked")
    return out


def check_ledgers_known(sagas: Sequence[SagaSpec], ledgers: Mapping[str, Sequence[LedgerRow]]) -> list[str]:
    known = {s.workflow_id for s in sagas}
    return [
        f"{kind} ledger has a row for unknown workflow {row.key!r}: {row}"
        for kind, rows in ledgers.items()
        for row in rows
        if row.key not in known
    ]


def check_dead_letters(
    dead_letters: Sequence[Mapping[str, Any]], poisoned: Sequence[str], *, expect_poison: bool
) -> list[str]:
    """Only deliberately poisoned bodies may be dead-lettered (and each of them must be, if asked)."""
    out = [
        f"DLQ holds a message nobody poisoned: queue={d['queue']} reason={d['reason']!r} body={d['body'][:160]!r}"
        for d in dead_letters
        if d["body"] not in poisoned
    ]
    if expect_poison:
        bodies = {d["body"] for d in dead_letters}
        out += [f"poisoned message was not dead-lettered: {p[:120]!r}" for p in poisoned if p not in bodies]
    return out


async def check_replay(
    histories: Mapping[str, Sequence[E.HistoryEvent]], run_ids: Mapping[str, str]
) -> list[str]:
    replayer = Replayer(workflows=[TripBooking])
    out = []
    for wid, events in histories.items():
        history = WorkflowHistory(workflow_id=wid, run_id=run_ids.get(wid, ""), events=list(events))
        result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
        if result.replay_failure is not None:
            out.append(
                f"{wid}: does not replay: {type(result.replay_failure).__name__}: {result.replay_failure}"
            )
    return out


async def check(
    snap: Snapshot, sagas: Sequence[SagaSpec], *, poisoned: Sequence[str] = (), expect_poison: bool = True
) -> list[str]:
    """Every invariant of the module docstring; returns the violations (empty: all hold)."""
    out = list(snap.read_errors)
    for spec in sagas:
        events = snap.histories.get(spec.workflow_id)
        if events is None:
            if not any(spec.workflow_id in e for e in snap.read_errors):
                out.append(f"{spec.workflow_id}: no history")
            continue
        out += check_history(spec.workflow_id, events)
        out += check_saga(spec, events, snap.visibility.get(spec.workflow_id, []), snap.ledgers)
    out += check_ledgers_known(sagas, snap.ledgers)
    out += check_dead_letters(snap.dead_letters, poisoned, expect_poison=expect_poison)
    out += await check_replay(snap.histories, snap.run_ids)
    return out


def assert_no_violations(violations: Sequence[str], *, context: str = "") -> None:
    """Fail with every violation, one per line (and ``context``: the fault timeline, logs)."""
    if violations:
        shown = "\n".join(f"  - {v}" for v in violations[:80])
        more = f"\n  ... and {len(violations) - 80} more" if len(violations) > 80 else ""
        raise AssertionError(f"{len(violations)} invariant violation(s):\n{shown}{more}\n{context}")
