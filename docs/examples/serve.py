"""Run the orchestrator on the store and broker of your choice.

``sagas server start-dev`` always uses SQLite and the built-in broker; this script is
the same server with both taken from the environment:

    SAGAS_STORE_URL=mongodb://db1,db2,db3/sagas?replicaSet=rs0 \
    SAGAS_BROKER_URL=amqp://sagas:secret@rabbit1/ \
    python serve.py
"""

from __future__ import annotations

import asyncio
import os
import signal

from orchestrator.server import DevServer


async def serve(stop: asyncio.Event | None = None) -> None:
    server = DevServer(
        store_url=os.environ.get("SAGAS_STORE_URL", "sqlite:///sagas.db"),
        broker_url=os.environ.get("SAGAS_BROKER_URL", "local://"),
        host=os.environ.get("SAGAS_HOST", "127.0.0.1"),
        port=int(os.environ.get("SAGAS_PORT", "7233")),
        num_shards=int(
            os.environ.get("SAGAS_NUM_SHARDS", "4")
        ),  # fixed for the life of the store
    )
    await server.start()
    # URLs may hold passwords: print only their schemes
    store, broker = (
        url.split(":", 1)[0]
        for url in (server.config.store_url, server.config.broker_url)
    )
    print(f"serving on {server.url} (store: {store}, broker: {broker})", flush=True)
    if stop is None:
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop()


if __name__ == "__main__":
    asyncio.run(serve())
