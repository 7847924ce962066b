"""Messages of the history stream ``{prefix}.history`` (DESIGN §4): one per committed event.

The orchestrator publishes every committed history event, after the commit,
to the stream (``orchestrator.history.stream.HistoryStreamPublisher``); the
broker message key is the workflow id (the ``key`` header), so a Kafka topic
keeps one workflow's events in order on one partition. The body is versioned
JSON::

    {"v": 1, "kind": "history_event", "namespace": "default",
     "workflow_id": "trip-1", "run_id": "0b9c...", "event": {"event_id": 5, ...}}

The stream is best-effort (the store is the source of truth): a consumer
de-duplicates by ``(namespace, workflow_id, run_id, event["event_id"])`` and
treats a gap in event ids as a message that was dropped.

>>> m = HistoryEventMessage(namespace="default", workflow_id="w", run_id="r",
...     event={"event_id": 1, "event_time": "2026-01-01T00:00:00Z", "event_type": "TimerFired",
...            "timer_id": "1", "started_event_id": 5})
>>> HistoryEventMessage.decode(m.encode()).history_event().event_id
1
"""

from __future__ import annotations

from typing import Any, Literal

from orchestrator.api.common import Frozen
from orchestrator.api.events import HistoryEvent, parse_event

HISTORY_STREAM_VERSION: Literal[1] = 1
"""Version of :class:`HistoryEventMessage` (``v``); a reader refuses newer ones."""

KEY_HEADER = "key"
"""The message header brokers use as the message key (Kafka: the record key)."""


def history_stream_name(prefix: str = "sagas") -> str:
    """The queue / topic / stream the history is published to: ``{prefix}.history``."""
    return f"{prefix}.history"


class HistoryEventMessage(Frozen):
    """One committed history event of one run, as published on the history stream."""

    v: Literal[1] = HISTORY_STREAM_VERSION
    kind: Literal["history_event"] = "history_event"
    namespace: str
    workflow_id: str
    run_id: str
    event: dict[str, Any]
    """The event as ``model_dump(mode="json")`` writes it (what ``fetch_history`` returns)."""

    @classmethod
    def of(cls, namespace: str, workflow_id: str, run_id: str, event: HistoryEvent) -> HistoryEventMessage:
        """The message for ``event`` of the run ``(namespace, workflow_id, run_id)``."""
        return cls(
            namespace=namespace, workflow_id=workflow_id, run_id=run_id, event=event.model_dump(mode="json")
        )

    @property
    def event_id(self) -> int:
        """The event's id: with the run's key, what a consumer de-duplicates on."""
        return int(self.event["event_id"])

    def history_event(self) -> HistoryEvent:
        """The typed event; raises ``pydantic.ValidationError`` if it does not parse."""
        return parse_event(self.event)

    def encode(self) -> bytes:
        """The message body (compact JSON)."""
        return self.model_dump_json().encode()

    @classmethod
    def decode(cls, body: bytes | str) -> HistoryEventMessage:
        """Parse a message body; raises ``pydantic.ValidationError`` for anything else."""
        return cls.model_validate_json(body)
