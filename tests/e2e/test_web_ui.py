"""The web UI end to end: a dev server in this process, workflows driven over the raw HTTP API.

(a) the pages over HTTP (httpx): list, filters, list query, paging, counts, a
    workflow's summary, pending work, history and saga timeline, escaping;
(b) a real browser (Debian's Chromium through Playwright, see
    ``shared/SERVICES.md``): open the list, click into a workflow, signal it,
    cancel it (accepting the confirm dialog), terminate another, and check
    every change through the JSON API. Screenshots go to ``/tmp/ui*.png``.

Without Chromium or Playwright the browser test is skipped, except in CI
(``CI=true``), where it fails: ``scripts/install-services.sh`` installs both.
"""

from __future__ import annotations

import html
import importlib.util
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import pytest_asyncio

from orchestrator.server import DevServer
from tests.e2e.minimal_worker import MinimalWorker, complete_workflow, fail_workflow, of_type, schedule

CHROMIUM = os.environ.get("SAGAS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
BULK = 57
"""Extra running workflows, so that the list has more than one page of 50."""
NASTY_ID = "x<script>alert(1)</script>&'\""
ONCE = {"maximum_attempts": 1}


@dataclass
class Seeded:
    server: DevServer
    base: str
    pending: MinimalWorker
    """The worker of ``pending-1`` and ``pending-2`` (task queue ``pending``)."""

    @property
    def total(self) -> int:
        return BULK + 5


def marker(event: str, name: str, index: int, **extra: Any) -> dict[str, Any]:
    details = {"saga_id": "saga-1", "event": event, "name": name, "index": index, **extra}
    return {"command_type": "RecordMarker", "marker_name": "saga", "details": details}


def activity_types(events: list[dict[str, Any]]) -> dict[int, str]:
    return {e["event_id"]: e["activity_type"] for e in of_type(events, "ActivityTaskScheduled")}


def outcomes(events: list[dict[str, Any]]) -> dict[str, str]:
    """Activity type -> ``Completed`` / ``Failed`` / ... of its last outcome."""
    types = activity_types(events)
    return {
        types[e["scheduled_event_id"]]: e["event_type"].removeprefix("ActivityTask")
        for e in events
        if e["event_type"] in ("ActivityTaskCompleted", "ActivityTaskFailed", "ActivityTaskTimedOut")
    }


def trip_saga(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """book_car, then book_flight fails, so the saga compensates car: as ``sagas.Saga`` records it."""
    done = outcomes(events)
    if not activity_types(events):
        return [schedule("book_car", "1", retry_policy=ONCE)]
    if done == {"book_car": "Completed"}:
        return [marker("step_registered", "cancel_car", 0), schedule("book_flight", "2", retry_policy=ONCE)]
    if done.get("book_flight") == "Failed" and "cancel_car" not in done:
        return [marker("compensation_started", "cancel_car", 0), schedule("cancel_car", "3")]
    assert done.get("cancel_car") == "Completed", done
    return [marker("compensation_completed", "cancel_car", 0), fail_workflow("book_flight failed: sold out")]


def charge_once(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if completed := of_type(events, "ActivityTaskCompleted"):
        return [complete_workflow(completed[-1]["result"])]
    return [schedule("charge", "1", retry_policy=ONCE)]


async def seed(base: str) -> MinimalWorker:
    """Workflows of every kind the pages show; returns the worker of the still-running ones."""
    orders = MinimalWorker(base, task_queue="orders")
    await orders.start(
        "order-done",
        input=[{"order": 1, "note": "<b>not bold</b>"}],
        search_attributes={"CustomerId": "c-1", "Amount": 150, "Vip": True},
    )
    await orders.workflow_task(charge_once)
    await orders.activity_task(lambda t: {"result": {"charged": 150}})
    await orders.workflow_task(charge_once)
    assert (await orders.result("order-done"))["status"] == "Completed"
    await orders.start(NASTY_ID, search_attributes={"CustomerId": "c-2", "Amount": 5})
    await orders.aclose()

    trips = MinimalWorker(base, task_queue="trips")
    await trips.start("trip-saga", input=[{"city": "Lisbon"}])
    await trips.workflow_task(trip_saga)
    await trips.activity_task(lambda t: {"result": {"car": "R-1"}})
    await trips.workflow_task(trip_saga)
    await trips.activity_task(lambda t: {"failure": {"message": "sold out", "type": "SoldOut", "non_retryable": True}})
    await trips.workflow_task(trip_saga)
    await trips.activity_task(lambda t: None if t["activity_type"] != "cancel_car" else {"result": None})
    await trips.workflow_task(trip_saga)
    assert (await trips.result("trip-saga"))["status"] == "Failed"
    await trips.aclose()

    # pending-1: an activity that failed once, is on attempt 2 and heartbeats; a timer for an hour
    pending = MinimalWorker(base, task_queue="pending")
    await pending.start("pending-1", search_attributes={"CustomerId": "c-1", "Amount": 7})
    await pending.workflow_task(
        lambda events: [
            schedule("slow", "1", heartbeat_timeout=3600, retry_policy={"initial_interval": 0.01, "maximum_attempts": 5}),
            {"command_type": "StartTimer", "timer_id": "reminder", "start_to_fire_timeout": 3600},
        ]
    )
    await pending.activity_task(lambda t: {"failure": {"message": "flaky network", "type": "Flaky"}})

    def heartbeat(task: dict[str, Any]) -> None:
        assert task["attempt"] == 2
        heartbeats.append(task["task_token"])
        return None

    heartbeats: list[str] = []
    await pending.activity_task(heartbeat)
    r = await pending.complete({"kind": "activity_heartbeat", "task_token": heartbeats[0], "details": [{"progress": 40}]})
    assert r.status_code == 200, r.text
    await pending.start("pending-2")
    await pending.workflow_task(lambda events: [{"command_type": "StartTimer", "timer_id": "t", "start_to_fire_timeout": 3600}])

    bulk = MinimalWorker(base, task_queue="bulk")
    for i in range(BULK):  # one by one: start times must differ for a stable newest-first order
        await bulk.start(f"bulk-{i:03d}", workflow_type="Bulk")
    await bulk.aclose()
    return pending


async def _seeded_server() -> AsyncIterator[Seeded]:
    server = DevServer(store_url="memory://", port=0)
    await server.start()
    base = f"http://{server.target}"
    try:
        pending = await seed(base)
        try:
            yield Seeded(server, base, pending)
        finally:
            await pending.aclose()
    finally:
        await server.stop()


# Seeding takes seconds, so the read-only page tests share one server; the browser test changes
# workflows and gets its own.
pytestmark = pytest.mark.asyncio(loop_scope="module")
seeded = pytest_asyncio.fixture(scope="module", loop_scope="module", name="seeded")(_seeded_server)
fresh = pytest_asyncio.fixture(loop_scope="module", name="fresh")(_seeded_server)


@pytest_asyncio.fixture(loop_scope="module")
async def http(seeded: Seeded) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=seeded.base, timeout=30) as client:
        yield client


def rows(page: str, table: str = "workflows") -> list[str]:
    """Workflow ids of a list page's table, in order."""
    if f'id="{table}"' not in page:
        assert '<p class="empty">No workflows match.</p>' in page
        return []
    body = page.split(f'id="{table}"', 1)[1].split("</table>", 1)[0]
    return [html_unescape(m) for m in re.findall(r'<a class="wid" href="[^"]*">([^<]*)</a>', body)]


def html_unescape(text: str) -> str:
    return html.unescape(text)


# (a) the pages over HTTP -------------------------------------------------------------------------
async def test_root_redirects_and_namespaces(http: httpx.AsyncClient) -> None:
    r = await http.get("/")
    assert r.status_code == 307 and r.headers["location"] == "/namespaces/default/workflows"
    r = await http.get("/namespaces")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert '<a href="/namespaces/default/workflows">default</a>' in r.text


async def test_list_pages_counts_and_filters(seeded: Seeded, http: httpx.AsyncClient) -> None:
    first = await http.get("/namespaces/default/workflows")
    assert first.status_code == 200
    ids = rows(first.text)
    assert len(ids) == 50 and ids[0] == f"bulk-{BULK - 1:03d}"  # newest first
    assert f"1–50 of <b>{seeded.total}</b> workflows" in first.text
    next_href = re.search(r'id="next-page" href="([^"]+)"', first.text)
    assert next_href is not None
    second = await http.get(html_unescape(next_href.group(1)))
    rest = rows(second.text)
    assert len(rest) == seeded.total - 50 and not set(rest) & set(ids)
    assert f"51–{seeded.total} of" in second.text and 'id="next-page"' not in second.text
    assert {"order-done", "trip-saga", "pending-1", "pending-2", NASTY_ID} <= set(ids + rest)

    async def listed(**params: str) -> list[str]:
        r = await http.get("/namespaces/default/workflows", params=params)
        assert r.status_code == 200, r.text
        return rows(r.text)

    assert await listed(query="CustomerId = 'c-1' AND Amount > 100 AND Vip = true") == ["order-done"]
    assert await listed(query="CustomerId = 'c-1'") == ["pending-1", "order-done"]
    assert await listed(status="Failed") == ["trip-saga"]
    assert await listed(status="Completed", query="Amount >= 150") == ["order-done"]
    assert await listed(type="Test", id="pending-") == ["pending-2", "pending-1"]
    assert len(await listed(type="Bulk", page_size="200")) == BULK
    assert await listed(start_after="2000-01-01T00:00", start_before="2000-01-02T00:00") == []
    r = await http.get("/namespaces/default/workflows", params={"status": "Completed"})
    assert "<b>1</b> workflow matching" in r.text and "ExecutionStatus = &#x27;Completed&#x27;" in r.text


async def test_bad_list_queries_are_explained(http: httpx.AsyncClient) -> None:
    for query, message in [
        ("CustomerId = 'c-1", "unterminated string"),
        ("Amount == 1", "unknown operator"),
        ("StartTime > 5", "type mismatch"),
        ("A = 1 OR B = 2", "OR is not supported"),
    ]:
        r = await http.get("/namespaces/default/workflows", params={"query": query})
        assert r.status_code == 400
        assert 'id="query-error"' in r.text and message in r.text
        assert html_unescape(re.search(r'name="query" value="([^"]*)"', r.text).group(1)) == query  # type: ignore[union-attr]
    r = await http.get("/namespaces/default/workflows", params={"next_page_token": "forged"})
    assert r.status_code == 400 and "next_page_token" in r.text


async def test_workflow_page_summary_and_history(http: httpx.AsyncClient) -> None:
    r = await http.get("/namespaces/default/workflows/order-done")
    assert r.status_code == 200
    page = r.text
    summary = page.split('id="summary"', 1)[1].split("</dl>", 1)[0]
    assert "st-Completed" in summary and "orders" in summary and "Test" in summary
    assert "&quot;CustomerId&quot;:&quot;c-1&quot;" in summary
    assert "&lt;b&gt;not bold&lt;/b&gt;" in page and "<b>not bold</b>" not in page  # input, escaped
    assert "&quot;charged&quot;: 150" in page  # result
    assert 'id="reset-form"' in page and 'id="cancel-button"' not in page  # closed: only reset
    events = page.split('id="events"', 1)[1]
    types = re.findall(r'<td class="etype[^"]*">(\w+)</td>', events)
    assert types[0] == "WorkflowExecutionStarted" and types[-1] == "WorkflowExecutionCompleted"
    assert "ActivityTaskScheduled" in types and "activity_type=charge" in events
    assert 'id="saga"' not in page  # no saga markers, no saga section

    full = await http.get("/namespaces/default/workflows/order-done", params={"history": "json"})
    assert "&quot;event_type&quot;: &quot;ActivityTaskCompleted&quot;" in full.text
    assert 'class="event-json" id="e1"' in full.text

    missing = await http.get("/namespaces/default/workflows/nobody")
    assert missing.status_code == 404 and "not found" in missing.text


async def test_saga_timeline(http: httpx.AsyncClient) -> None:
    page = (await http.get("/namespaces/default/workflows/trip-saga")).text
    saga = page.split('id="saga"', 1)[1].split("</section>", 1)[0]
    assert "saga-1" in saga and "saga-compensated" in saga
    assert "Compensation triggered by" in saga and "book_flight failed: SoldOut: sold out" in saga
    step = re.search(r'<tr class="step-compensated">(.*?)</tr>', saga, re.S)
    assert step is not None and "book_car" in step.group(1) and "cancel_car" in step.group(1)
    timeline = re.findall(r'<li class="tl-([\w-]+)">.*?<b>([^<]*)</b>', saga, re.S)
    assert timeline == [
        ("act", "activity book_car: completed"),
        ("step", "step #0 done: book_car"),
        ("act-bad", "activity book_flight: failed"),
        ("comp", "compensating step #0: cancel_car"),
        ("act-comp", "compensation activity cancel_car: completed"),
        ("comp-ok", "step #0 compensated: cancel_car"),
    ]
    assert "&quot;message&quot;: &quot;book_flight failed: sold out&quot;" in page  # the workflow's failure


async def test_pending_activities_and_timers(http: httpx.AsyncClient) -> None:
    page = (await http.get("/namespaces/default/workflows/pending-1")).text
    activities = page.split('id="pending-activities"', 1)[1].split("</table>", 1)[0]
    cells = re.findall(r"<td[^>]*>(.*?)</td>", activities, re.S)
    assert cells[:4] == ["1", "slow", "Started", "2"]
    assert "&quot;progress&quot;:40" in activities and "Flaky: flaky network" in activities
    assert "<time" in cells[5]  # last heartbeat time
    timers = page.split('id="pending-timers"', 1)[1].split("</table>", 1)[0]
    assert "reminder" in timers and re.search(r"\d+ m \d+ s|\d+ h \d+ m", timers)
    assert 'id="cancel-button"' in page and 'id="terminate-button"' in page and 'id="signal-form"' in page
    assert 'data-wid="pending-1"' in page


async def test_everything_is_escaped(http: httpx.AsyncClient) -> None:
    listing = (await http.get("/namespaces/default/workflows", params={"query": "CustomerId = 'c-2'"})).text
    assert "<script>alert(1)" not in listing
    assert rows(listing) == [NASTY_ID]
    href = html_unescape(re.search(r'<a class="wid" href="([^"]+)"', listing).group(1))  # type: ignore[union-attr]
    assert href.startswith(f"/namespaces/default/workflows/{quote(NASTY_ID, safe='')}?run_id=")
    page = await http.get(href)
    assert page.status_code == 200 and "<script>alert(1)" not in page.text
    assert "x&lt;script&gt;alert(1)&lt;/script&gt;&amp;&#x27;&quot;" in page.text
    assert page.text.count("<script>") == 1  # the page's own


async def test_ui_pages_are_measured(http: httpx.AsyncClient) -> None:
    await http.get("/namespaces/default/workflows")
    metrics = (await http.get("/metrics")).text
    assert re.search(r'sagas_ui_render_seconds_count\{page="workflows"\} [1-9]', metrics)


# (b) a real browser --------------------------------------------------------------------------------
def require_browser() -> None:
    missing = []
    if importlib.util.find_spec("playwright") is None:
        missing.append("the playwright package")
    if not os.path.exists(CHROMIUM):
        missing.append(CHROMIUM)
    if missing:
        reason = f"{' and '.join(missing)} missing: run scripts/install-services.sh"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true and the browser for the web UI test is missing: {reason}", pytrace=False)
        pytest.skip(reason)


async def api_status(http: httpx.AsyncClient, wid: str) -> str:
    r = await http.get(f"/api/v1/namespaces/default/workflows/{wid}")
    r.raise_for_status()
    return str(r.json()["info"]["status"])


async def api_events(http: httpx.AsyncClient, wid: str) -> list[dict[str, Any]]:
    r = await http.get(f"/api/v1/namespaces/default/workflows/{wid}/history")
    r.raise_for_status()
    return list(r.json()["events"])


@pytest.fixture
def browser_available() -> None:
    require_browser()  # before seeding a server, which takes seconds


async def test_browser_list_click_signal_cancel_terminate(browser_available: None, fresh: Seeded) -> None:
    seeded = fresh
    async with httpx.AsyncClient(base_url=seeded.base, timeout=30) as http:
        await _drive_browser(seeded, http)


async def _drive_browser(seeded: Seeded, http: httpx.AsyncClient) -> None:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            dialogs: list[str] = []

            async def accept(dialog: Any) -> None:
                dialogs.append(dialog.message)
                await dialog.accept()

            page.on("dialog", accept)

            # the list, filtered in the form, then a click into a workflow
            await page.goto(f"{seeded.base}/")
            assert page.url.endswith("/namespaces/default/workflows")
            assert await page.locator("#workflows tbody tr").count() == 50
            await page.screenshot(path="/tmp/ui-list.png", full_page=False)
            await page.fill("input[name=id]", "pending-")
            await page.click("button[type=submit]")
            await page.wait_for_url(re.compile(r"id=pending-"))
            assert await page.locator("#workflows tbody tr").count() == 2
            await page.click("a.wid >> text=pending-1")
            await page.wait_for_url(re.compile(r"/workflows/pending-1"))
            assert await page.locator("h1.wid").inner_text() == "pending-1"
            assert "Running" in await page.locator("#summary").inner_text()
            await page.screenshot(path="/tmp/ui-pending.png", full_page=True)

            # signal with a JSON input
            await page.fill("#signal-form input[name=name]", "approve")
            await page.fill("#signal-form input[name=input]", '{"by": "ui-test"}')
            async with page.expect_navigation():  # the page reloads itself after a successful action
                await page.click("#signal-form button")
            signaled = of_type(await api_events(http, "pending-1"), "WorkflowExecutionSignaled")
            assert [(e["signal_name"], e["input"], e["identity"]) for e in signaled] == [
                ("approve", [{"by": "ui-test"}], "web-ui")
            ]
            # the worker handles the signal (until then, new input would be buffered, not in history)
            def cancel_when_asked(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
                if of_type(events, "WorkflowExecutionCancelRequested"):
                    return [{"command_type": "CancelWorkflowExecution", "details": []}]
                return []

            await seeded.pending.workflow_task(cancel_when_asked)

            # cancel: confirm, the request lands, the worker cancels, the page shows it
            async with page.expect_navigation():
                await page.click("#cancel-button")
            assert dialogs == ["Request cancellation of workflow pending-1?"]
            assert "cancel requested" in await page.locator("#summary").inner_text()
            requested = of_type(await api_events(http, "pending-1"), "WorkflowExecutionCancelRequested")
            assert len(requested) == 1 and requested[0]["identity"] == "web-ui"
            await seeded.pending.workflow_task(cancel_when_asked)
            assert await api_status(http, "pending-1") == "Canceled"
            await page.reload()
            assert "Canceled" in await page.locator("#summary").inner_text()
            assert await page.locator("#cancel-button").count() == 0

            # terminate another one, with a reason
            await page.goto(f"{seeded.base}/namespaces/default/workflows/pending-2")
            await page.fill("#terminate-reason", "stuck in test")
            async with page.expect_navigation():
                await page.click("#terminate-button")
            assert "Terminated" in await page.locator("#summary").inner_text()
            assert dialogs[-1].startswith("Terminate workflow pending-2 now?")
            assert await api_status(http, "pending-2") == "Terminated"
            terminated = of_type(await api_events(http, "pending-2"), "WorkflowExecutionTerminated")
            assert terminated[0]["reason"] == "stuck in test"

            # the saga, for the eyes (docs/ui.md shows what to look for)
            await page.goto(f"{seeded.base}/namespaces/default/workflows/trip-saga")
            assert await page.locator("#saga-timeline li").count() == 6
            await page.screenshot(path="/tmp/ui.png", full_page=True)

            # reset the completed saga to its last workflow task: the page moves to the new run
            first_run = (await http.get("/api/v1/namespaces/default/workflows/trip-saga")).json()["info"]["run_id"]
            await page.fill("#reset-form input[name=reason]", "ui reset test")
            async with page.expect_navigation():
                await page.click("#reset-form button")
            assert dialogs[-1].startswith("Reset workflow trip-saga: start a new run from its last workflow task?")
            new_run = (await http.get("/api/v1/namespaces/default/workflows/trip-saga")).json()["info"]["run_id"]
            assert new_run != first_run and f"run_id={new_run}" in page.url
            assert "Running" in await page.locator("#summary").inner_text()
            failed = of_type(await api_events(http, "trip-saga"), "WorkflowTaskFailed")
            assert failed[-1]["cause"] == "ResetWorkflow" and "ui reset test" in failed[-1]["failure"]["message"]
            # a bad reset point is refused with the server's reason, on the page
            await page.fill("#reset-form input[name=event_id]", "1")
            await page.click("#reset-form button")
            await page.wait_for_function("document.getElementById('action-result').textContent.includes('failed')")
            assert "a reset point is an event of a started workflow task" in await page.locator("#action-result").inner_text()
            assert errors == []
        finally:
            await browser.close()
