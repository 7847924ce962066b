"""Amazon SQS broker (``sqs://``) on aioboto3: visibility timeout, redrive to a DLQ, FIFO queues.

::

    broker = await open_broker("sqs://?region=eu-west-1")                      # AWS
    broker = await open_broker("sqs://127.0.0.1:4566?endpoint_url=http://127.0.0.1:4566&fifo=true")
    await broker.publish("sagas.default.trips.act", b'{"v":1}', {"key": "trip-1"})
    [d] = await broker.receive("sagas.default.trips.act", max_messages=10, wait=20)
    await broker.ack(d)

URL options:

``endpoint_url``
    A stand-in such as moto or LocalStack. Without it, a host in the URL
    (``sqs://127.0.0.1:4566``) is the endpoint (``http`` on loopback, else
    ``https``); with neither, AWS's own endpoint for ``region``.
``region`` (``$AWS_REGION``, ``$AWS_DEFAULT_REGION`` or ``us-east-1``)
``visibility_timeout`` (30), ``max_deliveries`` (5), ``prefix`` (``sagas``), ``fifo`` (``false``)
``max_attempts`` (botocore's default)
    Attempts per request, retries included (botocore's ``standard`` retry mode).

Credentials come from ``sqs://KEY:SECRET@host`` or boto's usual chain
(environment, profile, instance role). Against an ``endpoint_url`` with no
credentials in the environment, dummy ones are used (moto and LocalStack
accept any).

How the broker contract maps onto SQS:

* **Queue names**: ``.`` becomes ``-`` and any other character SQS refuses
  becomes ``_`` (so ``sagas.default.trips.act`` is ``sagas-default-trips-act``);
  FIFO queues get the ``.fifo`` suffix. Names longer than 80 end in a hash.
* **Queues** are created on first use with ``VisibilityTimeout`` and a
  ``RedrivePolicy`` to ``{prefix}-dlq`` with ``maxReceiveCount`` =
  ``max_deliveries``: SQS itself moves a message that was received that many
  times without being deleted (a consumer that keeps crashing).
* **publish**: ``SendMessage`` (SQS has stored the message when it answers);
  the message id is SQS's ``MessageId``. Headers travel as one JSON
  ``headers`` message attribute (SQS allows only 10 attributes). Bodies that
  are not valid SQS text are base64-encoded (``encoding`` attribute). On a
  FIFO queue ``MessageGroupId`` is the ``key`` header (the workflow id; else
  ``default``) and ``MessageDeduplicationId`` a fresh UUID (content-based
  deduplication is off: two equal tasks are two messages).
* **receive**: long polling (``WaitTimeSeconds`` = ``wait`` rounded up, at most
  20; longer waits poll again), batches of up to 10; ``delivery_count`` is
  ``ApproximateReceiveCount``.
* **ack** = ``DeleteMessage``; **nack(requeue=True)** =
  ``ChangeMessageVisibility`` 0 (or, on the ``max_deliveries``-th delivery, a
  dead-letter with the reason); **nack(requeue=False, reason)** = send a copy
  to the DLQ with a ``reason`` attribute (and ``queue``, ``message_id``) and
  delete the original. :meth:`SQSBroker.extend_visibility` keeps a long task
  hidden.
* **dead_letters**: receives from the DLQ (hiding the messages while reading,
  so each is seen once) and makes them visible again at once; reading removes
  nothing. A message SQS moved by itself has no ``reason`` attribute: its
  reason is reported as the redrive.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import re
import uuid
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlparse

import aioboto3
from aiobotocore.config import AioConfig
from botocore.exceptions import BotoCoreError, ClientError

from brokers.base import Broker, BrokerError, DeadLetter, Delivery, parse_broker_url

MAX_WAIT_SECONDS = 20
MAX_BATCH = 10
_MAX_NAME = 80
_INVALID_NAME_CHARS = re.compile(r"[^A-Za-z0-9_-]")
# Characters SQS accepts in a message body (XML 1.0 characters).
_INVALID_BODY_CHARS = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_STALE_RECEIPT_CODES = frozenset({"ReceiptHandleIsInvalid", "AWS.SimpleQueueService.ReceiptHandleIsInvalid"})
_QUEUE_EXISTS_CODES = frozenset({"QueueAlreadyExists", "QueueNameExists", "AWS.SimpleQueueService.QueueNameExists"})


def sqs_queue_name(queue: str, *, fifo: bool = False) -> str:
    """The SQS name of ``queue``: ``.`` -> ``-``, other invalid characters -> ``_``, ``.fifo`` for FIFO."""
    suffix = ".fifo" if fifo else ""
    name = _INVALID_NAME_CHARS.sub("_", queue.replace(".", "-")) or "_"
    room = _MAX_NAME - len(suffix)
    if len(name) > room:
        digest = hashlib.sha256(queue.encode()).hexdigest()[:12]
        name = f"{name[: room - 13]}-{digest}"
    return name + suffix


@dataclass(frozen=True)
class _Receipt:
    queue_url: str
    handle: str


class SQSBroker(Broker):
    """Task queues on SQS (see the module docstring for the semantics)."""

    durable = True

    def __init__(
        self,
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        visibility_timeout: float = 30.0,
        max_deliveries: int = 5,
        prefix: str = "sagas",
        fifo: bool = False,
        max_attempts: int | None = None,
    ) -> None:
        if max_deliveries < 1:
            raise BrokerError(f"max_deliveries must be at least 1, got {max_deliveries}")
        self.region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        self.endpoint_url = endpoint_url
        if endpoint_url and not access_key_id and not os.environ.get("AWS_ACCESS_KEY_ID"):
            access_key_id, secret_access_key = "sagas-dummy", "sagas-dummy"
        self._access_key_id = access_key_id
        self._secret_access_key = secret_access_key
        self.visibility_timeout = float(max(0, math.ceil(visibility_timeout)))
        self.max_deliveries = max_deliveries
        self.prefix = prefix
        self.fifo = fifo
        self.max_attempts = max_attempts
        self.dead_letter_queue = sqs_queue_name(f"{prefix}-dlq", fifo=fifo)
        self.display_url = endpoint_url or f"AWS SQS in {self.region}"
        self._stack: AsyncExitStack | None = None
        self._sqs: Any = None
        self._urls: dict[str, str] = {}  # queue -> URL
        self._created: dict[str, str] = {}  # SQS name -> URL
        self._dlq_arn: str | None = None
        self._closed = False

    @classmethod
    def from_url(cls, url: str) -> SQSBroker:
        """Build from ``sqs://[KEY:SECRET@][host:port]?endpoint_url=...&region=...&fifo=false``."""
        scheme, _, options = parse_broker_url(url)
        if scheme != "sqs":
            raise BrokerError(f"SQSBroker needs an sqs:// URL, got {url!r}")
        parsed = urlparse(url)
        endpoint_url = options.get("endpoint_url")
        if not endpoint_url and parsed.hostname:
            host = parsed.hostname
            loopback = host in ("localhost", "::1") or host.startswith("127.")
            port = f":{parsed.port}" if parsed.port else ""
            endpoint_url = f"{'http' if loopback else 'https'}://{host}{port}"
        try:
            return cls(
                region=options.get("region"),
                endpoint_url=endpoint_url,
                access_key_id=unquote(parsed.username) if parsed.username else None,
                secret_access_key=unquote(parsed.password) if parsed.password else None,
                visibility_timeout=float(options.get("visibility_timeout", 30)),
                max_deliveries=int(options.get("max_deliveries", 5)),
                prefix=options.get("prefix", "sagas"),
                fifo=options.get("fifo", "false").lower() in ("1", "true", "yes"),
                max_attempts=int(options["max_attempts"]) if "max_attempts" in options else None,
            )
        except ValueError as exc:
            raise BrokerError(f"invalid option in broker URL {url!r}: {exc}") from exc

    # -- lifecycle ---------------------------------------------------------

    async def connect(self) -> None:
        if self._sqs is not None:
            return
        stack = AsyncExitStack()
        kwargs: dict[str, Any] = {"region_name": self.region}
        if self.endpoint_url:
            kwargs["endpoint_url"] = self.endpoint_url
        if self._access_key_id:
            kwargs["aws_access_key_id"] = self._access_key_id
            kwargs["aws_secret_access_key"] = self._secret_access_key
        if self.max_attempts is not None:
            kwargs["config"] = AioConfig(retries={"mode": "standard", "total_max_attempts": self.max_attempts})
        try:
            self._sqs = await stack.enter_async_context(aioboto3.Session().client("sqs", **kwargs))
            await self._sqs.list_queues(MaxResults=1)
        except (ClientError, BotoCoreError) as exc:
            await stack.aclose()
            self._sqs = None
            raise BrokerError(
                f"cannot reach SQS at {self.display_url} ({type(exc).__name__}: {exc}); check the endpoint, "
                "the region and the credentials"
            ) from exc
        self._stack = stack

    async def aclose(self) -> None:
        self._closed = True
        stack, self._stack = self._stack, None
        self._sqs = None
        if stack is not None:
            await stack.aclose()

    def _client(self) -> Any:
        if self._closed:
            raise BrokerError(f"broker {self.display_url} is closed")
        if self._sqs is None:
            raise BrokerError(f"broker {self.display_url} is not connected (call connect() first)")
        return self._sqs

    async def _call(self, what: str, operation: str, **params: Any) -> Any:
        sqs = self._client()
        try:
            return await getattr(sqs, operation)(**params)
        except (ClientError, BotoCoreError) as exc:
            raise BrokerError(f"SQS {operation} for {what} at {self.display_url} failed: {exc}") from exc

    # -- queues ------------------------------------------------------------

    async def declare_queue(self, queue: str) -> None:
        """Create the queue (with its redrive policy) and the DLQ if they do not exist."""
        await self._queue_url(queue)

    async def _dead_letter_queue(self) -> tuple[str, str]:
        url = await self._create(self.dead_letter_queue, {"MessageRetentionPeriod": "1209600"})
        if self._dlq_arn is None:
            attrs = await self._call(self.dead_letter_queue, "get_queue_attributes", QueueUrl=url, AttributeNames=["QueueArn"])
            self._dlq_arn = str(attrs["Attributes"]["QueueArn"])
        return url, self._dlq_arn

    async def _queue_url(self, queue: str) -> str:
        url = self._urls.get(queue)
        if url is not None:
            return url
        _, dlq_arn = await self._dead_letter_queue()
        attributes = {
            "VisibilityTimeout": str(int(self.visibility_timeout)),
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(self.max_deliveries)}),
        }
        url = await self._create(sqs_queue_name(queue, fifo=self.fifo), attributes)
        self._urls[queue] = url
        return url

    async def _create(self, name: str, attributes: dict[str, str]) -> str:
        cached = self._created.get(name)
        if cached is not None:
            return cached
        if self.fifo:
            attributes = {**attributes, "FifoQueue": "true", "ContentBasedDeduplication": "false"}
        sqs = self._client()
        try:
            response = await sqs.create_queue(QueueName=name, Attributes=attributes)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in _QUEUE_EXISTS_CODES:
                raise BrokerError(
                    f"SQS queue {name!r} at {self.display_url} already exists with other attributes than "
                    f"{attributes}; set visibility_timeout=, max_deliveries= and prefix= in the broker URL to match "
                    "it, or delete the queue"
                ) from exc
            raise BrokerError(f"cannot create SQS queue {name!r} at {self.display_url}: {exc}") from exc
        except BotoCoreError as exc:
            raise BrokerError(f"cannot create SQS queue {name!r} at {self.display_url}: {exc}") from exc
        url = str(response["QueueUrl"])
        self._created[name] = url
        return url

    # -- publish -----------------------------------------------------------

    async def publish(self, queue: str, body: bytes, headers: dict[str, str] | None = None) -> str:
        url = await self._queue_url(queue)
        headers = dict(headers or {})
        params = self._message(body, headers, {"queue": queue})
        if self.fifo:
            params["MessageGroupId"] = headers.get("key") or "default"
            params["MessageDeduplicationId"] = uuid.uuid4().hex
        response = await self._call(queue, "send_message", QueueUrl=url, **params)
        return str(response["MessageId"])

    def _message(self, body: bytes, headers: dict[str, str], extra: dict[str, str]) -> dict[str, Any]:
        attributes = {k: {"DataType": "String", "StringValue": v} for k, v in extra.items() if v}
        if headers:
            attributes["headers"] = {"DataType": "String", "StringValue": json.dumps(headers)}
        if not body:  # SQS refuses an empty body
            text = "-"
            attributes["encoding"] = {"DataType": "String", "StringValue": "empty"}
            return {"MessageBody": text, "MessageAttributes": attributes}
        try:
            text = body.decode()
            if _INVALID_BODY_CHARS.search(text):
                raise ValueError("not SQS text")
        except ValueError:
            text = base64.b64encode(body).decode()
            attributes["encoding"] = {"DataType": "String", "StringValue": "base64"}
        return {"MessageBody": text, "MessageAttributes": attributes}

    # -- receive -----------------------------------------------------------

    async def receive(self, queue: str, max_messages: int = 1, wait: float = 0.0) -> list[Delivery]:
        url = await self._queue_url(queue)
        out: list[Delivery] = []
        remaining = max(0.0, wait)
        while True:
            seconds = min(MAX_WAIT_SECONDS, math.ceil(remaining)) if not out else 0
            batch = await self._receive(queue, url, min(MAX_BATCH, max_messages - len(out)), seconds)
            out += [self._delivery(queue, url, m) for m in batch]
            if len(out) >= max_messages:
                return out
            if out:
                if len(batch) < MAX_BATCH:
                    return out  # the queue had no more to give at once
                continue
            remaining -= seconds
            if remaining <= 0:
                return out

    async def _receive(self, what: str, url: str, count: int, wait_seconds: int, **extra: Any) -> list[dict[str, Any]]:
        response = await self._call(
            what,
            "receive_message",
            QueueUrl=url,
            MaxNumberOfMessages=count,
            WaitTimeSeconds=wait_seconds,
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
            MessageAttributeNames=["All"],
            **extra,
        )
        messages: list[dict[str, Any]] = response.get("Messages", [])
        return messages

    def _delivery(self, queue: str, url: str, message: dict[str, Any]) -> Delivery:
        attributes = _attributes(message)
        return Delivery(
            queue=queue,
            body=_body(message, attributes),
            headers=_headers(attributes),
            message_id=str(message["MessageId"]),
            delivery_count=int(message.get("Attributes", {}).get("ApproximateReceiveCount", 1)),
            receipt=_Receipt(url, str(message["ReceiptHandle"])),
        )

    # -- settle ------------------------------------------------------------

    async def ack(self, delivery: Delivery) -> None:
        receipt = _receipt(delivery)
        sqs = self._client()
        try:
            await sqs.delete_message(QueueUrl=receipt.queue_url, ReceiptHandle=receipt.handle)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _STALE_RECEIPT_CODES:
                return  # received again by someone else since: they settle it
            raise BrokerError(f"SQS delete_message on {delivery.queue!r} at {self.display_url} failed: {exc}") from exc
        except BotoCoreError as exc:
            raise BrokerError(f"SQS delete_message on {delivery.queue!r} at {self.display_url} failed: {exc}") from exc

    async def nack(self, delivery: Delivery, *, requeue: bool = True, reason: str = "") -> None:
        receipt = _receipt(delivery)
        if not requeue:
            await self._dead_letter(delivery, reason or "rejected")
        elif delivery.delivery_count >= self.max_deliveries:
            await self._dead_letter(delivery, f"max_deliveries ({self.max_deliveries}) reached; last: {reason or 'nack'}")
        else:
            await self._change_visibility(delivery, receipt, 0)

    async def extend_visibility(self, delivery: Delivery, seconds: float) -> None:
        """Keep ``delivery`` hidden for ``seconds`` more from now (for tasks that run long)."""
        await self._change_visibility(delivery, _receipt(delivery), max(0, math.ceil(seconds)))

    async def _change_visibility(self, delivery: Delivery, receipt: _Receipt, seconds: int) -> None:
        await self._call(
            delivery.queue,
            "change_message_visibility",
            QueueUrl=receipt.queue_url,
            ReceiptHandle=receipt.handle,
            VisibilityTimeout=seconds,
        )

    async def _dead_letter(self, delivery: Delivery, reason: str) -> None:
        url, _ = await self._dead_letter_queue()
        params = self._message(
            delivery.body, delivery.headers, {"reason": reason, "queue": delivery.queue, "message_id": delivery.message_id}
        )
        if self.fifo:
            params["MessageGroupId"] = delivery.headers.get("key") or "default"
            params["MessageDeduplicationId"] = uuid.uuid4().hex
        await self._call(self.dead_letter_queue, "send_message", QueueUrl=url, **params)
        await self.ack(delivery)

    # -- dead letters ------------------------------------------------------

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """Up to ``limit`` messages of the DLQ, left in it (see module docstring)."""
        url, _ = await self._dead_letter_queue()
        seen: dict[str, dict[str, Any]] = {}
        handles: list[str] = []
        try:
            while len(seen) < limit:
                batch = await self._receive(
                    self.dead_letter_queue, url, min(MAX_BATCH, limit - len(seen)), 0 if seen else 1, VisibilityTimeout=60
                )
                if not batch:
                    break
                for message in batch:
                    handles.append(str(message["ReceiptHandle"]))
                    seen.setdefault(str(message["MessageId"]), message)
        finally:
            for start in range(0, len(handles), MAX_BATCH):
                entries = [
                    {"Id": str(i), "ReceiptHandle": handle, "VisibilityTimeout": 0}
                    for i, handle in enumerate(handles[start : start + MAX_BATCH])
                ]
                await self._call(self.dead_letter_queue, "change_message_visibility_batch", QueueUrl=url, Entries=entries)
        return [self._dead_letter_of(m) for m in list(seen.values())[:limit]]

    def _dead_letter_of(self, message: dict[str, Any]) -> DeadLetter:
        attributes = _attributes(message)
        reason = attributes.get("reason") or f"max_deliveries ({self.max_deliveries}) reached (SQS redrive)"
        return DeadLetter(
            queue=attributes.get("queue", ""),
            body=_body(message, attributes),
            reason=reason,
            headers=_headers(attributes),
            message_id=attributes.get("message_id") or str(message["MessageId"]),
        )


def _receipt(delivery: Delivery) -> _Receipt:
    if not isinstance(delivery.receipt, _Receipt):
        raise BrokerError(f"delivery of {delivery.message_id!r} did not come from an SQSBroker")
    return delivery.receipt


def _attributes(message: dict[str, Any]) -> dict[str, str]:
    raw: dict[str, Any] = message.get("MessageAttributes") or {}
    return {k: str(v.get("StringValue", "")) for k, v in raw.items()}


def _headers(attributes: dict[str, str]) -> dict[str, str]:
    text = attributes.get("headers")
    if not text:
        return {}
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _body(message: dict[str, Any], attributes: dict[str, str]) -> bytes:
    text = str(message.get("Body", ""))
    if attributes.get("encoding") == "base64":
        return base64.b64decode(text)
    if attributes.get("encoding") == "empty":
        return b""
    return text.encode()
