"""Rebuild workflow histories from the orchestrator's history stream ``{prefix}.history``.

What ``sagas workflow replay --broker-log URL`` reads. The orchestrator
publishes every committed event as one
:class:`~orchestrator.api.history_stream.HistoryEventMessage`, best-effort:
a message may be duplicated (retries, a republish) or missing (dropped on
overflow). So the events are grouped by run, de-duplicated by event id, and
only a run whose events are complete from event 1 without a gap is replayed;
the others are reported with what is missing. A run is refused, with the
message position and event id, when two messages carry the same event id with
different contents (two runs mixed under one run id), when an event has a type
this version does not know, or when its events do not follow each other
(:func:`~orchestrator.api.history_check.check_history`: reordered, truncated,
mixed runs)::

    bodies = await read_history_stream("kafka://k1:9092", "sagas.history")
    found = histories_from_stream(bodies, workflow_ids={"trip-1"})
    await Replayer(workflows=[BookTrip]).replay_workflows(found.histories)

Reading a Kafka topic or a RabbitMQ stream (``amqp://``: the publisher declares
``{prefix}.history`` as a stream) is non-destructive: a fresh consumer group, or
a stream consumer at offset ``first``, reads it from the beginning, as often as
wanted. On queue brokers (``memory://``, ``local://``, ``sqs://``) reading takes
the messages off the queue.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import ValidationError

from brokers.base import Broker, open_broker, parse_broker_url
from orchestrator.api.events import HistoryEvent
from orchestrator.api.history_check import HistoryIntegrityError, check_event_json, check_history
from orchestrator.api.history_stream import HistoryEventMessage
from sagas.worker._replayer import WorkflowHistory

__all__ = ["StreamHistories", "histories_from_stream", "read_history_stream"]

RunKey = tuple[str, str, str]
"""(namespace, workflow_id, run_id)"""


@dataclass
class StreamHistories:
    """What :func:`histories_from_stream` found in the stream."""

    histories: list[WorkflowHistory] = field(default_factory=list)
    """Runs complete from event 1 without a gap, ready to replay (in the order first seen)."""
    incomplete: dict[str, str] = field(default_factory=dict)
    """``namespace/workflow_id/run_id`` -> why that run cannot be replayed (what is missing)."""
    invalid: dict[str, str] = field(default_factory=dict)
    """``namespace/workflow_id/run_id`` -> why its events are refused (conflicting, unknown type, out of
    sequence), naming the message position (0-based, in read order) and the event id."""
    out_of_order: int = 0
    """Messages that came after a higher event id of their run (a republish filling a gap does
    that); they are put back in event-id order, which :func:`check_history` then checks."""
    out_of_order_example: str = ""
    messages: int = 0
    duplicates: int = 0
    malformed: int = 0
    malformed_example: str = ""
    """Why the first malformed message was refused."""


def histories_from_stream(
    bodies: Iterable[bytes | str],
    *,
    namespace: str | None = None,
    workflow_ids: Collection[str] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> StreamHistories:
    """Group stream messages into per-run histories (de-duplicated by event id, gaps reported).

    Filters: ``namespace``; ``workflow_ids``; ``since``/``until`` select the
    runs that have at least one event in ``[since, until)`` (each selected run
    is still replayed from its first event). Naive datetimes are UTC.
    """
    found = StreamHistories()
    runs: dict[RunKey, dict[int, tuple[HistoryEvent, int, dict[str, object]]]] = {}
    refused: dict[RunKey, str] = {}
    highest: dict[RunKey, int] = {}
    for position, body in enumerate(bodies):
        found.messages += 1
        try:
            message = HistoryEventMessage.decode(body)
        except (ValidationError, ValueError) as exc:
            found.malformed += 1
            if not found.malformed_example:
                found.malformed_example = f"message {position}: {_first_error(exc)}"
            continue
        if namespace is not None and message.namespace != namespace:
            continue
        if workflow_ids is not None and message.workflow_id not in workflow_ids:
            continue
        key = (message.namespace, message.workflow_id, message.run_id)
        if key in refused:
            continue
        try:
            check_event_json(message.event, position=position)
            event = message.history_event()
        except HistoryIntegrityError as exc:
            refused[key] = f"message {position}, event {exc.event_id}: {exc.reason}"
            continue
        except (ValidationError, ValueError) as exc:
            refused[key] = f"message {position}, event {message.event.get('event_id')}: it does not parse: {_first_error(exc)}"
            continue
        events = runs.setdefault(key, {})
        seen = events.get(event.event_id)
        if seen is not None:
            if seen[2] != message.event:
                refused[key] = (
                    f"messages {seen[1]} and {position} both carry event {event.event_id} with different contents: "
                    "events of two runs are mixed under one run id, or the stream is corrupt"
                )
            else:
                found.duplicates += 1
            continue
        if event.event_id < highest.get(key, 0):
            found.out_of_order += 1
            if not found.out_of_order_example:
                found.out_of_order_example = (
                    f"{'/'.join(key)}: event {event.event_id} at message {position} came after event {highest[key]}"
                )
        highest[key] = max(highest.get(key, 0), event.event_id)
        events[event.event_id] = (event, position, message.event)
    lo, hi = _utc(since), _utc(until)
    for key, why in refused.items():
        found.invalid["/".join(key)] = why
    for key, by_id in runs.items():
        if key in refused:
            continue
        ns, workflow_id, run_id = key
        ordered = [by_id[i][0] for i in sorted(by_id)]
        if (lo or hi) and not any(_within(e.event_time, lo, hi) for e in ordered):
            continue
        problem = _missing(sorted(by_id))
        if problem:
            found.incomplete[f"{ns}/{workflow_id}/{run_id}"] = problem
            continue
        try:
            check_history(ordered)
        except HistoryIntegrityError as exc:
            at = by_id[exc.event_id][1] if exc.event_id in by_id else None
            found.invalid[f"{ns}/{workflow_id}/{run_id}"] = (
                f"message {at}, event {exc.event_id}: {exc.reason}" if at is not None else str(exc)
            )
            continue
        found.histories.append(WorkflowHistory(workflow_id=workflow_id, events=ordered, run_id=run_id, namespace=ns))
    return found


def _missing(ids: list[int]) -> str:
    """Why a run's event ids are not a complete history from 1, or ``""``."""
    gaps: list[str] = []
    expected = 1
    for i in ids:
        if i > expected:
            gaps.append(str(expected) if i - 1 == expected else f"{expected}-{i - 1}")
        expected = i + 1
    if not gaps:
        return ""
    where = (
        "the stream has none of its first events (published before the stream was enabled, or dropped)"
        if ids[0] != 1
        else "they were dropped by the best-effort stream"
    )
    return (
        f"events {', '.join(gaps)} are missing: {where}; publish the run again from the store "
        "(HistoryStreamPublisher.republish) or replay it from the server with --workflow-id"
    )


def _utc(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _within(t: datetime, lo: datetime | None, hi: datetime | None) -> bool:
    return (lo is None or t >= lo) and (hi is None or t < hi)


def _first_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError) and exc.errors():
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err.get("loc", ()))
        return f"{loc}: {err.get('msg', '')}" if loc else str(err.get("msg", ""))
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


async def read_history_stream(
    source: str | Broker,
    topic: str = "sagas.history",
    *,
    first_wait: float = 10.0,
    idle: float = 2.0,
    limit: int | None = None,
    consume: bool | None = None,
) -> list[bytes]:
    """Read every message of the history stream ``topic`` until it has been quiet for ``idle`` seconds.

    ``source`` is a broker URL (opened and closed here) or a connected broker.
    A ``kafka://`` URL is read from the beginning with a fresh consumer group
    and nothing is acked (the log stays as it was); an ``amqp://`` one reads the
    RabbitMQ stream from its first offset (``consume`` does not apply); on other
    brokers each message is acked, i.e. taken off the queue (``consume``
    overrides this).
    ``first_wait``: how long to wait for the first message (a consumer group
    takes seconds to join); ``limit``: stop after that many messages.
    """
    if isinstance(source, str):
        is_log = parse_broker_url(source)[0] == "kafka"
        broker = await open_broker(_fresh_group(source) if is_log else source)
        owned = True
    else:
        broker, owned, is_log = source, False, False
    ack = (not is_log) if consume is None else consume
    bodies: list[bytes] = []
    read_stream = getattr(broker, "read_stream", None)
    if read_stream is not None:  # a RabbitMQ stream: read from its first offset, nothing removed
        try:
            return [body for _, body in await read_stream(topic, first_wait=first_wait, idle=idle, limit=limit)]
        finally:
            if owned:
                await broker.aclose()
    try:
        started = time.monotonic()
        last_message: float | None = None
        while limit is None or len(bodies) < limit:
            now = time.monotonic()
            remaining = (first_wait - (now - started)) if last_message is None else (idle - (now - last_message))
            if remaining <= 0:
                break
            want = 100 if limit is None else min(100, limit - len(bodies))
            deliveries = await broker.receive(topic, max_messages=want, wait=min(remaining, 1.0))
            for d in deliveries:
                bodies.append(d.body)
                if ack:
                    await broker.ack(d)
            if deliveries:
                last_message = time.monotonic()
    finally:
        if owned:
            await broker.aclose()
    return bodies


def _fresh_group(url: str) -> str:
    """``url`` with a consumer group of its own, so the topic is read from its beginning."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "group"]
    query.append(("group", f"sagas-replay-{uuid.uuid4().hex[:12]}"))
    return urlunsplit(parts._replace(query=urlencode(query)))
