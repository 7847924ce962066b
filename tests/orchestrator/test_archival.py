"""Archival (issue 14): after retention, closed runs go to a file or S3 archive before deletion.

The clock is moved past the retention (``SystemClock.offset``) and the timer processor woken; the
tests then wait for a state in the store (never for a fixed time): the run gone, or a re-armed
``delete_history`` row after a failed archival.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from orchestrator.api.tasks import TimerKind, TimerTask
from orchestrator.archival import ArchivalService, history_key, open_archiver
from orchestrator.archival.file import FileArchiver
from orchestrator.metrics import METRICS
from orchestrator.server import DevServer, Orchestrator
from sagas.cli.main import app as cli
from tests.e2e.minimal_worker import MinimalWorker, complete_workflow, of_type, schedule
from tests.services import SQSServer, sqs_server  # noqa: F401 - the moto fixture (moto serves S3 too)

DAY = 86400.0


@pytest.fixture
async def server(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[DevServer]:
    store = getattr(request, "param", "memory")
    srv = DevServer(store_url="memory://" if store == "memory" else f"sqlite:///{tmp_path / 'sagas.db'}", port=0)
    await srv.start()
    yield srv
    await srv.stop()


@pytest.fixture
async def http(server: DevServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://{server.target}/api/v1", timeout=30) as client:
        yield client


async def register(http: httpx.AsyncClient, name: str, **settings: Any) -> dict[str, Any]:
    r = await http.post("/namespaces", json={"name": name, "retention_days": 1, **settings})
    assert r.status_code == 201, r.text
    return dict(r.json())


def one_activity(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if done := of_type(events, "ActivityTaskCompleted"):
        return [complete_workflow({"booked": done[-1]["result"]})]
    return [] if of_type(events, "ActivityTaskScheduled") else [schedule("book")]


async def run_to_completion(server: DevServer, ns: str, wid: str) -> tuple[str, list[dict[str, Any]]]:
    """Start ``wid`` in ``ns``, run it to completion; its run id and its history (from the store)."""
    worker = MinimalWorker(f"http://{server.target}", namespace=ns)
    try:
        run_id = await worker.start(wid, input=[{"city": "Lisbon"}], memo={"who": "test"})
        await worker.workflow_task(one_activity)
        await worker.activity_task(lambda t: {"result": "car-7"})
        await worker.workflow_task(one_activity)
        assert (await worker.result(wid))["status"] == "Completed"
        return run_id, await worker.history(wid)
    finally:
        await worker.aclose()


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def skip_time(orc: Orchestrator, seconds: float) -> None:
    orc.clock.offset += seconds
    orc.timers.wake()


async def delete_timers(orc: Orchestrator, run_id: str) -> list[TimerTask]:
    found = []
    for shard in list(orc.history.range_ids):
        for t in await orc.store.get_timer_tasks(shard, orc.clock.now() + 365 * DAY, 10_000):
            if t.kind == TimerKind.DELETE_HISTORY and t.run_id == run_id:
                found.append(t)
    return found


async def expect_archived_and_deleted(
    server: DevServer, http: httpx.AsyncClient, ns: str, wid: str, run_id: str, original: list[dict[str, Any]]
) -> dict[str, Any]:
    orc = server.orchestrator
    skip_time(orc, 1 * DAY + 60)

    async def deleted() -> bool:
        return await orc.store.get_execution(ns, wid, run_id) is None

    await until(deleted, f"retention to delete {wid}")
    assert await orc.store.read_events(ns, wid, run_id) == []
    assert (await orc.store.list_visibility(ns, filters={"workflow_id": wid})).records == []
    assert (await http.get(f"/namespaces/{ns}/workflows/{wid}")).json()["code"] == "workflow_not_found"

    for params in ({"run_id": run_id}, {}):  # by run id, and the last closed run
        r = await http.get(f"/namespaces/{ns}/archived-workflows/{wid}/history", params=params)
        assert r.status_code == 200, r.text
        archived = r.json()
        assert (archived["namespace"], archived["workflow_id"], archived["run_id"]) == (ns, wid, run_id)
        assert len(archived["events"]) == len(original) == 11
        for got, want in zip(archived["events"], original, strict=True):
            for field in want.keys() | got.keys():
                assert got.get(field) == want.get(field), (want["event_id"], field)
        info = archived["info"]
        assert info["status"] == "Completed" and info["history_length"] == len(original)
        assert info["memo"] == {"who": "test"} and info["workflow_type"] == "Test"
    return dict(archived)


def cli_show(server: DevServer, ns: str, *args: str) -> Any:
    return CliRunner().invoke(
        cli, ["workflow", "show", "--address", server.target, "--namespace", ns, "--archived", *args]
    )


# -- file:// -----------------------------------------------------------------------------------------


async def test_file_archival_then_delete_then_show(server: DevServer, http: httpx.AsyncClient, tmp_path: Path) -> None:
    history_dir, visibility_dir = tmp_path / "history", tmp_path / "visibility"
    info = await register(
        http, "arch", history_archival_uri=history_dir.as_uri(), visibility_archival_uri=visibility_dir.as_uri()
    )
    assert info["history_archival_uri"] == history_dir.as_uri()
    assert info["visibility_archival_uri"] == visibility_dir.as_uri()
    wid = "trip 1 ..odd"  # escaped in keys: a workflow id never escapes its folder
    run_id, original = await run_to_completion(server, "arch", wid)
    assert (await http.get(f"/namespaces/arch/archived-workflows/{wid}/history")).json()["code"] == "workflow_not_archived"

    await expect_archived_and_deleted(server, http, "arch", wid, run_id, original)

    # the documents on disk: one gzip JSON history per run, one visibility record, nothing else
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert files == [
        f"history/arch/trip%201%20%2E%2Eodd/{run_id}.history.json.gz",
        f"visibility/arch/trip%201%20%2E%2Eodd/{run_id}.visibility.json",
    ]
    doc = json.loads(gzip.decompress((tmp_path / files[0]).read_bytes()))
    assert doc["format"] == "sagas.archived-history" and doc["version"] == 1 and doc["events"] == original
    visibility = json.loads((tmp_path / files[1]).read_text())
    assert visibility["run_id"] == run_id and visibility["status"] == "Completed"

    # the CLI, as a user types it: table, and JSON equal to the original history
    result = await asyncio.to_thread(cli_show, server, "arch", "-w", wid, "--output", "json")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["run_id"] == run_id and shown["events"] == original
    result = await asyncio.to_thread(cli_show, server, "arch", "-w", wid, "--run-id", run_id)
    assert result.exit_code == 0, result.output
    assert f"Archived run {run_id}" in result.stdout and "WorkflowExecutionCompleted" in result.stdout


@pytest.mark.parametrize("server", ["memory", "sqlite"], indirect=True)
async def test_archival_failure_keeps_the_run_and_retries(
    server: DevServer, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    archive = tmp_path / "archive"
    await register(http, "flaky", history_archival_uri=archive.as_uri())
    run_id, original = await run_to_completion(server, "flaky", "w")
    orc = server.orchestrator
    orc.archival.retry_initial = 600.0
    shutil.rmtree(archive, ignore_errors=True)
    archive.write_text("a file where the archive directory should be")  # every write now fails
    failed_before = METRICS.archival.labels(kind="history", outcome="failed")._value.get()

    skip_time(orc, 1 * DAY + 60)

    async def rearmed() -> bool:
        return [t.attempt for t in await delete_timers(orc, run_id)] == [2]

    await until(rearmed, "the delete_history timer to be re-armed after the failed archival")
    (timer,) = await delete_timers(orc, run_id)
    assert timer.fire_time == pytest.approx(orc.clock.now() + 600, abs=30)
    assert await orc.store.get_execution("flaky", "w", run_id) is not None  # not deleted
    assert len(await orc.store.read_events("flaky", "w", run_id)) == len(original)
    assert METRICS.archival.labels(kind="history", outcome="failed")._value.get() > failed_before

    archive.unlink()  # the archive is back: the next attempt archives, then deletes
    skip_time(orc, 0)  # not due yet: nothing happens ...
    assert [t.attempt for t in await delete_timers(orc, run_id)] == [2]
    assert await orc.store.get_execution("flaky", "w", run_id) is not None
    orc.clock.offset += 600  # ... until the back-off has passed
    await expect_archived_and_deleted(server, http, "flaky", "w", run_id, original)
    assert await delete_timers(orc, run_id) == []


async def test_archiving_twice_overwrites_the_same_document(tmp_path: Path, server: DevServer, http: httpx.AsyncClient) -> None:
    await register(http, "twice", history_archival_uri=(tmp_path / "a").as_uri())
    run_id, original = await run_to_completion(server, "twice", "w")
    orc = server.orchestrator
    state = await orc.history.get_state("twice", "w", run_id)
    events = await orc.store.read_events("twice", "w", run_id)
    await orc.archival.archive(state, events)
    await orc.archival.archive(state, events)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert [p.name for p in files] == [f"{run_id}.history.json.gz"]  # no temporary file left either
    assert (await orc.archival.read_history("twice", "w", run_id)).events == original


async def test_read_back_errors(server: DevServer, http: httpx.AsyncClient, tmp_path: Path) -> None:
    r = await http.get("/namespaces/default/archived-workflows/w/history")
    assert r.status_code == 400 and r.json()["code"] == "archival_not_enabled", r.text
    await register(http, "empty", history_archival_uri=(tmp_path / "x").as_uri())
    r = await http.get("/namespaces/empty/archived-workflows/nope/history", params={"run_id": "r1"})
    assert r.status_code == 404 and r.json()["code"] == "workflow_not_archived", r.text
    assert "nope" in r.json()["message"] and r.json()["hint"]
    result = await asyncio.to_thread(cli_show, server, "empty", "-w", "nope")
    assert result.exit_code == 1 and "not in the archive" in result.output


@pytest.mark.parametrize(
    "uri, words",
    [
        ("ftp://host/dir", "unknown archival URI scheme"),
        ("/just/a/path", "has no scheme"),
        ("file://relative/dir", "not an absolute file URI"),
        ("file:///tmp/x?fsync=no", "takes no options"),
        ("s3://", "names no bucket"),
        ("s3://bucket?colour=blue", "unknown option"),
        ("s3://key:secret@bucket", "no credentials in the URI"),
    ],
)
async def test_bad_uri_refused_at_registration(http: httpx.AsyncClient, uri: str, words: str) -> None:
    for field in ("history_archival_uri", "visibility_archival_uri"):
        r = await http.post("/namespaces", json={"name": "bad", field: uri})
        assert r.status_code == 400 and r.json()["code"] == "invalid_argument", r.text
        assert words in r.json()["message"] and field in r.json()["message"] and r.json()["hint"]
    assert (await http.get("/namespaces/bad")).status_code == 404  # nothing was registered


async def test_unwritable_directory_refused_and_archival_can_be_turned_off(
    http: httpx.AsyncClient, tmp_path: Path
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    r = await http.post("/namespaces", json={"name": "nope", "history_archival_uri": (blocker / "dir").as_uri()})
    assert r.status_code == 400 and "cannot be used" in r.json()["message"], r.text
    await register(http, "on", history_archival_uri=(tmp_path / "ok").as_uri())
    r = await http.patch("/namespaces/on", json={"history_archival_uri": ""})
    assert r.status_code == 200 and r.json()["history_archival_uri"] is None


async def test_retry_delay_doubles_up_to_the_cap() -> None:
    service = ArchivalService(lambda ns: (None, None), retry_initial=30, retry_max=3600)
    assert [service.retry_delay(a) for a in (1, 2, 3, 8, 1000)] == [30, 60, 120, 3600, 3600]
    assert not service.enabled("default")


async def test_file_archiver_writes_atomically(tmp_path: Path) -> None:
    archiver = open_archiver((tmp_path / "arc").as_uri())
    assert isinstance(archiver, FileArchiver)
    key = history_key("ns", "../../escape", "run")
    assert ".." not in key and key.count("/") == 2
    await archiver.put(key, b"one")
    await archiver.put(key, b"two")
    assert await archiver.get(key) == b"two"
    assert await archiver.get("ns/missing") is None
    assert await archiver.list_keys("ns/") == []  # keys are files, not folders
    assert await archiver.list_keys(key.rpartition("/")[0] + "/") == [key]
    assert [p.name for p in (tmp_path / "arc").rglob("*") if p.is_file()] == [key.rpartition("/")[2]]


# -- s3:// on moto -----------------------------------------------------------------------------------


async def _create_bucket(endpoint_url: str, bucket: str) -> None:
    import aioboto3

    async with aioboto3.Session().client(
        "s3", endpoint_url=endpoint_url, region_name="us-east-1",
        aws_access_key_id="sagas-dummy", aws_secret_access_key="sagas-dummy",
    ) as s3:
        await s3.create_bucket(Bucket=bucket)


async def test_s3_archival_on_moto(
    server: DevServer, http: httpx.AsyncClient, sqs_server: SQSServer  # noqa: F811
) -> None:
    endpoint = sqs_server.endpoint_url
    bucket = f"sagas-archive-{uuid.uuid4().hex[:8]}"
    await _create_bucket(endpoint, bucket)
    uri = f"s3://{bucket}/prod/histories?endpoint_url={endpoint}"
    await register(http, "s3ns", history_archival_uri=uri, visibility_archival_uri=f"s3://{bucket}/prod/vis?endpoint_url={endpoint}")
    run_id, original = await run_to_completion(server, "s3ns", "trip-1")
    await expect_archived_and_deleted(server, http, "s3ns", "trip-1", run_id, original)

    archiver = open_archiver(uri)
    try:
        keys = await archiver.list_keys("s3ns/")
        assert keys == [f"s3ns/trip-1/{run_id}.history.json.gz"]
    finally:
        await archiver.aclose()
    vis = open_archiver(f"s3://{bucket}/prod/vis?endpoint_url={endpoint}")
    try:
        data = await vis.get(f"s3ns/trip-1/{run_id}.visibility.json")
        assert data is not None and json.loads(data)["status"] == "Completed"
    finally:
        await vis.aclose()

    result = await asyncio.to_thread(cli_show, server, "s3ns", "-w", "trip-1", "-o", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["events"] == original


async def test_s3_missing_bucket_or_endpoint_refused(
    http: httpx.AsyncClient, sqs_server: SQSServer  # noqa: F811
) -> None:
    cases = [
        (f"s3://no-such-bucket-{uuid.uuid4().hex[:6]}?endpoint_url={sqs_server.endpoint_url}", "no-such-bucket"),
        ("s3://bucket?endpoint_url=http://127.0.0.1:1", "unreachable"),
    ]
    for uri, words in cases:
        r = await http.post("/namespaces", json={"name": "s3bad", "history_archival_uri": uri})
        assert r.status_code == 400 and r.json()["code"] == "invalid_argument", r.text
        assert words in r.json()["message"], r.text
