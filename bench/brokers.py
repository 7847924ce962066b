"""Broker benchmark: tasks per second and dispatch latency through the ``Broker`` interface.

    python -m bench brokers                          # every broker, 2000 tasks each
    python -m bench brokers --brokers memory,rabbitmq --tasks 5000

For each broker: publish -> receive -> ack of ``--tasks`` messages (a ~300-byte task body)
with ``--window`` of them in flight: ``--window`` concurrent publishers, each awaiting the
broker's confirmation of its publish, and one consumer
receives batches of up to 10 and acks each. Throughput is tasks acked per second over the
whole run; latency is publish call -> the consumer has the message, per message (p50/p99).

``memory`` is the in-process broker; ``local`` the built-in broker of a dev server in this
process, over HTTP; ``rabbitmq``, ``kafka`` (Tansu, a Kafka-protocol stand-in) and ``sqs``
(moto, an SQS stand-in) are started exactly as the tests start them (``tests/services.py``).
Results: ``bench/results/brokers.json`` and a section of ``bench/results/README.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import statistics
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from brokers.base import Broker, open_broker, queue_name

BROKERS = ("memory", "local", "rabbitmq", "kafka", "sqs")
STAND_INS = {"kafka": "Tansu (Kafka protocol)", "sqs": "moto_server (SQS API)"}
SECTION_START = "<!-- brokers:start -->"
SECTION_END = "<!-- brokers:end -->"


@contextlib.asynccontextmanager
async def open_bench_broker(name: str, prefix: str) -> AsyncIterator[tuple[Broker, Broker]]:
    """(publisher, consumer) connections to a running ``name`` broker, servers started and stopped here."""
    if name == "memory":
        from brokers.memory import MemoryBroker

        broker = MemoryBroker()
        yield broker, broker
        await broker.aclose()
        return
    if name == "local":
        from brokers.local import LocalBrokerClient
        from orchestrator.server import DevServer

        server = DevServer(store_url="memory://", port=0)
        await server.start()
        try:
            clients: list[Broker] = [LocalBrokerClient.from_url(f"local://127.0.0.1:{server.port}") for _ in range(2)]
            pub, con = clients
            await pub.connect()
            await con.connect()
            yield pub, con
            await pub.aclose()
            await con.aclose()
        finally:
            await server.stop()
        return
    from tests import services

    with services.running(name) as server:
        if name == "rabbitmq":
            url = f"{server.url}?prefix={prefix}&prefetch=64"
        elif name == "kafka":
            url = f"kafka://{server.bootstrap}?group={prefix}&prefix={prefix}&session_timeout_ms=2000&heartbeat_interval_ms=100&fetch_max_wait_ms=100"
        else:
            url = f"sqs://127.0.0.1:{server.port}?endpoint_url={server.endpoint_url}&region=us-east-1&prefix={prefix}"
        pub, con = await open_broker(url), await open_broker(url)
        try:
            yield pub, con
        finally:
            await pub.aclose()
            await con.aclose()


async def _warm_up(pub: Broker, con: Broker, queue: str) -> None:
    """One message through (Kafka joins its group, SQS creates the queue): must arrive in 60 s."""
    await pub.declare_queue(queue)
    await pub.publish(queue, b"warm-up")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for d in await con.receive(queue, max_messages=10, wait=1.0):
            await con.ack(d)
            if d.body == b"warm-up":
                return
    raise RuntimeError(f"warm-up message never arrived on {queue}")


async def measure(pub: Broker, con: Broker, queue: str, tasks: int, window: int) -> dict[str, Any]:
    await _warm_up(pub, con, queue)
    body_pad = "x" * 240
    sent_at: dict[int, float] = {}
    latencies: list[float] = []
    slots = asyncio.Semaphore(window)
    done = asyncio.Event()
    acked = 0

    numbers = iter(range(tasks))

    async def produce() -> None:  # ``window`` of these: each awaits its publish's confirmation
        for i in numbers:
            await slots.acquire()
            sent_at[i] = time.perf_counter()
            await pub.publish(queue, json.dumps({"n": i, "pad": body_pad}).encode(), {"key": f"wf-{i % 64}"})

    async def consume() -> None:
        nonlocal acked
        while acked < tasks:
            batch = await con.receive(queue, max_messages=10, wait=1.0)
            now = time.perf_counter()
            for d in batch:
                n = json.loads(d.body)["n"]
                if n in sent_at:
                    latencies.append(now - sent_at.pop(n))
            await asyncio.gather(*(con.ack(d) for d in batch))
            for _ in batch:
                acked += 1
                slots.release()
        done.set()

    start = time.perf_counter()
    producers = [asyncio.create_task(produce()) for _ in range(window)]
    consumer = asyncio.create_task(consume())
    await asyncio.wait_for(asyncio.gather(*producers, consumer), timeout=600)
    elapsed = time.perf_counter() - start
    latencies.sort()
    return {
        "tasks": tasks,
        "window": window,
        "seconds": round(elapsed, 3),
        "tasks_per_second": round(tasks / elapsed, 1),
        "latency_p50_ms": round(1000 * statistics.quantiles(latencies, n=100)[49], 2),
        "latency_p99_ms": round(1000 * statistics.quantiles(latencies, n=100)[98], 2),
    }


async def bench_one(name: str, tasks: int, window: int) -> dict[str, Any]:
    prefix = f"bench{uuid.uuid4().hex[:6]}"
    async with open_bench_broker(name, prefix) as (pub, con):
        result = await measure(pub, con, queue_name(prefix, "default", "bench", "act"), tasks, window)
    result["broker"] = name
    if name in STAND_INS:
        result["stand_in"] = STAND_INS[name]
    return result


def markdown(doc: dict[str, Any]) -> str:
    lines = [
        SECTION_START,
        "## Brokers: publish -> receive -> ack through the `Broker` interface",
        "",
        f"`python -m bench brokers` on {doc['machine']}, {doc['date']}: {doc['tasks']} tasks of ~300 bytes per "
        f"broker, at most {doc['window']} in flight, {doc['window']} concurrent publishers (each awaiting its "
        "confirmation) and one consumer "
        "(batches of 10, one ack per message), all in one Python process. Latency: publish call -> received.",
        "",
        "| broker | tasks/s | p50 latency (ms) | p99 latency (ms) |",
        "|---|---:|---:|---:|",
    ]
    for r in doc["results"]:
        name = r["broker"] + (f" ({r['stand_in']})" if "stand_in" in r else "")
        if "error" in r:
            lines.append(f"| {name} | failed: {r['error']} | - | - |")
        else:
            lines.append(f"| {name} | {r['tasks_per_second']:.0f} | {r['latency_p50_ms']:.1f} | {r['latency_p99_ms']:.1f} |")
    lines += [
        "",
        "`memory` is in-process (no I/O); `local` is the dev server's built-in broker over HTTP, with the server "
        "in the same process as the client. `rabbitmq` is a real RabbitMQ (quorum queues, publisher confirms). "
        "**Kafka and SQS are stand-ins**: Tansu speaks the Kafka protocol and moto_server the SQS API, "
        "neither performs like the real service (Apache Kafka, Amazon SQS with network round trips), so their "
        "rows say how our client code behaves, not what the real brokers can do. One run, 2 shared cores: "
        "expect noise of tens of percent.",
        SECTION_END,
    ]
    return "\n".join(lines) + "\n"


def write_results(doc: dict[str, Any], results: Path) -> list[Path]:
    results.mkdir(parents=True, exist_ok=True)
    json_path = results / "brokers.json"
    json_path.write_text(json.dumps(doc, indent=2) + "\n")
    readme = results / "README.md"
    text = readme.read_text() if readme.exists() else ""
    section = markdown(doc)
    if SECTION_START in text and SECTION_END in text:
        head, _, rest = text.partition(SECTION_START)
        _, _, tail = rest.partition(SECTION_END + "\n")
        text = head + section + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section
    readme.write_text(text)
    return [json_path, readme]


async def run(names: list[str], tasks: int, window: int, results: Path) -> list[Path]:
    out: list[dict[str, Any]] = []
    for name in names:
        print(f"{name}: {tasks} tasks ...", flush=True)
        try:
            r = await bench_one(name, tasks, window)
        except Exception as exc:  # noqa: BLE001 - a broker that cannot start is reported, the others still run
            r = {"broker": name, "error": f"{type(exc).__name__}: {exc}"[:200]}
        print(f"  {r}", flush=True)
        out.append(r)
    doc = {
        "benchmark": "brokers",
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "tasks": tasks,
        "window": window,
        "results": out,
    }
    return write_results(doc, results)
