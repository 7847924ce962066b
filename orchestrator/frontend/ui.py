"""The web UI: server-rendered HTML pages on the frontend's port (see ``docs/ui.md``).

    /                                          -> /namespaces/default/workflows
    /namespaces                                namespaces
    /namespaces/{ns}/workflows                 list: filters, list query, counts, pages
    /namespaces/{ns}/workflows/{wid}?run_id=   one run: summary, pending work, saga timeline,
                                               history, and signal / cancel / terminate buttons

Plain HTML with a little CSS and vanilla JavaScript in the page: no build
step, nothing fetched from another host. Every value from the store goes
through :func:`html.escape`. Pages read one page of the list (default 50,
with the store's ``next_page_token``) and one page of history, so they stay
fast with any number of workflows. The buttons call the JSON API
(``/api/v1/...``) with ``fetch()``; the UI has no write path of its own.

:func:`mount_ui` adds the routes to the API's FastAPI app.
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote as url_quote
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from prometheus_client import Histogram

from orchestrator.api.enums import WorkflowExecutionStatus
from orchestrator.api.events import HistoryEvent
from orchestrator.errors import InvalidArgumentError, OrchestratorError, WorkflowNotFoundError
from orchestrator.history.state import ExecutionState
from orchestrator.persistence.base import VisibilityRecord
from orchestrator.visibility.query import quote

if TYPE_CHECKING:
    from orchestrator.server import Orchestrator

__all__ = ["mount_ui"]

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
EVENTS_PER_PAGE = 100
SAGA_SCAN_LIMIT = 5000
"""Events read to draw the saga timeline; a longer history is drawn up to here (and says so)."""
MAX_JSON_CHARS = 20_000
"""A payload longer than this is cut in the page (the JSON API has all of it)."""
SAGA_MARKER = "saga"
"""``marker_name`` of the markers ``sagas.Saga`` records (kept in step with ``sagas.saga.SAGA_MARKER``)."""

UI_RENDER_SECONDS = Histogram(
    "sagas_ui_render_seconds",
    "Time to build a web UI page, store reads included.",
    ["page"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)

_STATUSES = [s.value for s in WorkflowExecutionStatus]


def mount_ui(app: FastAPI, orc: Orchestrator) -> None:
    """Add the web UI's routes to ``app`` (called by ``create_app``)."""
    ui = _Pages(orc)

    @app.get("/", include_in_schema=False)
    async def root() -> Response:
        return RedirectResponse("/namespaces/default/workflows", status_code=307)

    @app.get("/namespaces", include_in_schema=False)
    async def namespaces() -> Response:
        return await _timed("namespaces", ui.namespaces)

    @app.get("/namespaces/{ns}/workflows", include_in_schema=False)
    async def workflows(ns: str, request: Request) -> Response:
        return await _timed("workflows", lambda: ui.workflows(ns, dict(request.query_params)))

    @app.get("/namespaces/{ns}/workflows/{wid:path}", include_in_schema=False)
    async def workflow(ns: str, wid: str, request: Request) -> Response:
        return await _timed("workflow", lambda: ui.workflow(ns, wid, dict(request.query_params)))


async def _timed(page: str, render: Callable[[], Awaitable[Response]]) -> Response:
    started = time.perf_counter()
    try:
        return await render()
    except OrchestratorError as exc:
        body = f'<div class="error"><b>{_e(exc.message)}</b>{_hint(exc.hint)}</div>'
        return _page("Error", body, status_code=exc.http_status)
    finally:
        UI_RENDER_SECONDS.labels(page).observe(time.perf_counter() - started)


# pages ---------------------------------------------------------------------------------------
class _Pages:
    def __init__(self, orc: Orchestrator) -> None:
        self.orc = orc

    async def namespaces(self) -> Response:
        records = {r.name: r for r in await self.orc.store.list_namespaces()}
        names = sorted(set(records) | set(self.orc.history.known_namespaces))
        rows = []
        for name in names:
            r = records.get(name)
            rows.append(
                "<tr>"
                f'<td><a href="{_e(_ns_url(name))}">{_e(name)}</a></td>'
                f"<td>{_e(f'{r.retention_days:g} days') if r else '-'}</td>"
                f"<td>{_e(r.description) if r else ''}</td>"
                "</tr>"
            )
        body = (
            "<h1>Namespaces</h1>"
            '<table class="grid"><thead><tr><th>Namespace</th><th>Retention</th><th>Description</th></tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>"
        )
        return _page("Namespaces", body)

    async def workflows(self, ns: str, params: dict[str, str]) -> Response:
        form = _ListForm.read(params)
        query = form.query()
        error = ""
        records: list[VisibilityRecord] = []
        token: str | None = None
        count: int | None = None
        try:
            page = await self.orc.visibility.list(
                ns, query, page_size=form.page_size, next_page_token=form.next_page_token or None
            )
            records, token = page.records, page.next_page_token
            count = await self.orc.visibility.count(ns, query)
        except InvalidArgumentError as exc:
            error = f'<div class="error" id="query-error"><b>{_e(exc.message)}</b>{_hint(exc.hint)}</div>'
        except ValueError as exc:  # a page token that was edited by hand
            error = f'<div class="error" id="query-error"><b>{_e(exc)}</b></div>'
        body = [
            f"<h1>Workflows <small>in {_e(ns)}</small></h1>",
            form.render(ns),
            _status_chips(ns, form),
            error,
        ]
        if not error:
            first = (form.page - 1) * form.page_size + 1
            shown = f"{first:,}–{first + len(records) - 1:,} of " if records else ""
            body.append(
                f'<p class="count" id="count">{shown}<b>{count or 0:,}</b> workflow{"" if count == 1 else "s"}'
                + (f' matching <code class="q">{_e(query)}</code>' if query else "")
                + "</p>"
            )
            body.append(_workflow_table(ns, records))
            nav = []
            if form.page > 1:
                nav.append(f'<a href="{_e(form.url(ns, next_page_token="", page=""))}">« First page</a>')
            if token:
                nav.append(
                    f'<a id="next-page" href="{_e(form.url(ns, next_page_token=token, page=str(form.page + 1)))}">'
                    "Next page »</a>"
                )
            body.append(f'<p class="pager">{" ".join(nav)}</p>')
        return _page(f"Workflows · {ns}", "".join(body), ns=ns, status_code=400 if error else 200)

    async def workflow(self, ns: str, wid: str, params: dict[str, str]) -> Response:
        run_id = params.get("run_id", "")
        try:
            state = await self.orc.history.get_state(ns, wid, run_id)
        except WorkflowNotFoundError as exc:
            body = f'<h1>{_e(wid)}</h1><div class="error"><b>{_e(exc.message)}</b>{_hint(exc.hint)}</div>'
            return _page("Not found", body, ns=ns, status_code=404)
        first_event = _int(params.get("first_event_id"), 1, 1, None)
        view = "json" if params.get("history") == "json" else "compact"
        history_length = state.next_event_id - 1
        scan = min(history_length, SAGA_SCAN_LIMIT)
        scanned = await self.orc.read_events(ns, wid, state.run_id, 1, scan) if scan else []
        if first_event + EVENTS_PER_PAGE - 1 <= len(scanned):
            events = scanned[first_event - 1 : first_event - 1 + EVENTS_PER_PAGE]
        else:
            events = await self.orc.read_events(ns, wid, state.run_id, first_event, EVENTS_PER_PAGE)
        runs = await self.orc.visibility.list(ns, f"WorkflowId = {quote(wid)}", page_size=10)
        parts = [
            _summary(ns, state),
            _actions(ns, state),
            _saga_section(_wf_url(ns, wid, state.run_id), scanned, history_length),
            _pending(ns, state),
            _payloads(state),
            _runs(ns, wid, state.run_id, runs.records),
            _history(ns, state, events, first_event, view),
        ]
        return _page(f"{wid} · {ns}", "".join(parts), ns=ns, data={"ns": ns, "wid": wid, "run": state.run_id})


# the list form -------------------------------------------------------------------------------
@dataclass
class _ListForm:
    """The list page's filters; each one becomes a clause of the list query."""

    workflow_type: str = ""
    status: str = ""
    workflow_id: str = ""
    start_after: str = ""
    start_before: str = ""
    text: str = ""
    page_size: int = DEFAULT_PAGE_SIZE
    next_page_token: str = ""
    page: int = 1

    @classmethod
    def read(cls, params: dict[str, str]) -> _ListForm:
        return cls(
            workflow_type=params.get("type", "").strip(),
            status=params.get("status", "").strip(),
            workflow_id=params.get("id", "").strip(),
            start_after=params.get("start_after", "").strip(),
            start_before=params.get("start_before", "").strip(),
            text=params.get("query", "").strip(),
            page_size=_int(params.get("page_size"), DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE),
            next_page_token=params.get("next_page_token", ""),
            page=_int(params.get("page"), 1, 1, None),
        )

    def query(self) -> str:
        clauses = []
        if self.workflow_type:
            clauses.append(f"WorkflowType = {quote(self.workflow_type)}")
        if self.status:
            clauses.append(f"ExecutionStatus = {quote(self.status)}")
        if self.workflow_id:
            clauses.append(f"WorkflowId STARTS_WITH {quote(self.workflow_id)}")
        if self.start_after:
            clauses.append(f"StartTime >= {quote(self.start_after)}")
        if self.start_before:
            clauses.append(f"StartTime < {quote(self.start_before)}")
        if self.text:
            clauses.append(self.text)
        return " AND ".join(clauses)

    def params(self, **changes: str) -> dict[str, str]:
        values = {
            "type": self.workflow_type,
            "status": self.status,
            "id": self.workflow_id,
            "start_after": self.start_after,
            "start_before": self.start_before,
            "query": self.text,
            "page_size": "" if self.page_size == DEFAULT_PAGE_SIZE else str(self.page_size),
            "next_page_token": self.next_page_token,
            "page": "" if self.page == 1 else str(self.page),
        }
        values.update(changes)
        return {k: v for k, v in values.items() if v}

    def url(self, ns: str, **changes: str) -> str:
        return _url(_ns_url(ns), self.params(**changes))

    def render(self, ns: str) -> str:
        options = "".join(
            f'<option value="{_e(s)}"{" selected" if s == self.status else ""}>{_e(s or "any")}</option>'
            for s in ["", *_STATUSES]
        )
        sizes = "".join(
            f'<option{" selected" if n == self.page_size else ""}>{n}</option>' for n in (25, 50, 100, 200)
        )
        return f"""
<form class="filters" method="get" action="{_e(_ns_url(ns))}">
  <label>Workflow type<input name="type" value="{_e(self.workflow_type)}" placeholder="TripBooking"></label>
  <label>Status<select name="status">{options}</select></label>
  <label>Workflow id starts with<input name="id" value="{_e(self.workflow_id)}" placeholder="order-"></label>
  <label>Started from (UTC)<input type="datetime-local" name="start_after" value="{_e(self.start_after)}"></label>
  <label>Started before (UTC)<input type="datetime-local" name="start_before" value="{_e(self.start_before)}"></label>
  <label>Page size<select name="page_size">{sizes}</select></label>
  <label class="wide">List query
    <input name="query" value="{_e(self.text)}" spellcheck="false"
           placeholder="CustomerId = 'c-1' AND Amount > 100 AND Vip = true"></label>
  <div class="buttons"><button type="submit">Apply</button>
    <a href="{_e(_ns_url(ns))}">Reset</a></div>
</form>
<details class="help"><summary>List query syntax</summary>{_QUERY_HELP}</details>"""


_QUERY_HELP = """
<p>Clauses <code>Key op value</code> joined by <code>AND</code>. Operators: <code>= != &gt; &gt;= &lt; &lt;=
STARTS_WITH</code>. Strings and datetimes in quotes, numbers and <code>true</code>/<code>false</code> bare.
<code>OR</code>, parentheses and <code>ORDER BY</code> are not supported (runs are listed newest first).</p>
<p>Built-in keys: <code>WorkflowId</code>, <code>RunId</code>, <code>WorkflowType</code>, <code>TaskQueue</code>,
<code>ExecutionStatus</code>, <code>StartTime</code>, <code>CloseTime</code>, <code>ExecutionTime</code>,
<code>HistoryLength</code>; any other key is a search attribute.</p>
<p>Examples: <code>CustomerId = 'c-1' AND Amount &gt; 100 AND Vip = true</code> ·
<code>ExecutionStatus = 'Failed' AND CloseTime &gt; '2026-01-01T00:00:00Z'</code> ·
<code>WorkflowId STARTS_WITH 'order-'</code></p>"""


def _status_chips(ns: str, form: _ListForm) -> str:
    chips = []
    for status in ["", *_STATUSES]:
        active = " active" if status == form.status else ""
        href = form.url(ns, status=status, next_page_token="", page="")
        dot = f'<span class="dot st-{_e(status)}"></span>' if status else ""
        chips.append(f'<a class="chip{active}" href="{_e(href)}">{dot}{_e(status or "All")}</a>')
    return f'<nav class="chips">{"".join(chips)}</nav>'


def _workflow_table(ns: str, records: Sequence[VisibilityRecord]) -> str:
    if not records:
        return '<p class="empty">No workflows match.</p>'
    rows = []
    for r in records:
        href = _wf_url(ns, r.workflow_id, r.run_id)
        rows.append(
            "<tr>"
            f"<td>{_badge(r.status)}</td>"
            f'<td><a class="wid" href="{_e(href)}">{_e(r.workflow_id)}</a></td>'
            f'<td><a class="mono" href="{_e(href)}" title="{_e(r.run_id)}">{_e(r.run_id[:8])}</a></td>'
            f"<td>{_e(r.workflow_type)}</td>"
            f"<td>{_e(r.task_queue)}</td>"
            f"<td>{_time(r.start_time)}</td>"
            f"<td>{_time(r.close_time)}</td>"
            f'<td class="num">{r.history_length:,}</td>'
            f'<td class="mono small">{_e(_short_json(r.search_attributes, 80)) if r.search_attributes else ""}</td>'
            "</tr>"
        )
    return (
        '<table class="grid" id="workflows"><thead><tr><th>Status</th><th>Workflow id</th><th>Run</th>'
        "<th>Type</th><th>Task queue</th><th>Start (UTC)</th><th>Close (UTC)</th><th>Events</th>"
        f"<th>Search attributes</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


# the workflow page -----------------------------------------------------------------------------
def _summary(ns: str, s: ExecutionState) -> str:
    rows: list[tuple[str, str]] = [
        ("Status", _badge(s.status.value) + (' <span class="warn">cancel requested</span>' if s.cancel_requested and s.is_open else "")),
        ("Workflow type", _e(s.workflow_type)),
        ("Task queue", _e(s.task_queue)),
        ("Run id", f'<span class="mono">{_e(s.run_id)}</span>'),
        ("Start", _time(s.start_time)),
    ]
    if s.execution_time != s.start_time:
        rows.append(("Execution time", _time(s.execution_time)))
    rows.append(("Close", _time(s.close_time) if s.close_time else "-"))
    end = s.close_time if s.close_time is not None else time.time()
    rows.append(("Duration", _e(_duration(end - s.start_time)) + ("" if s.close_time else " so far")))
    rows.append(("History", f"{s.next_event_id - 1:,} events"))
    if s.attempt > 1:
        rows.append(("Attempt", str(s.attempt)))
    if s.parent is not None:
        rows.append(("Parent", _wf_link(s.parent.namespace, s.parent.workflow_id, s.parent.run_id)))
    if s.first_run_id and s.first_run_id != s.run_id:
        rows.append(("First run", _wf_link(ns, s.workflow_id, s.first_run_id, s.first_run_id)))
    if s.new_run_id:
        rows.append(("Continued as", _wf_link(ns, s.workflow_id, s.new_run_id, s.new_run_id)))
    if s.search_attributes:
        rows.append(("Search attributes", f'<span class="mono">{_e(_short_json(s.search_attributes, 400))}</span>'))
    if s.memo:
        rows.append(("Memo", f'<span class="mono">{_e(_short_json(s.memo, 400))}</span>'))
    cells = "".join(f"<dt>{_e(k)}</dt><dd>{v}</dd>" for k, v in rows)
    return (
        f'<p class="crumbs"><a href="{_e(_ns_url(ns))}">Workflows</a> › {_e(s.workflow_id)}</p>'
        f'<h1 class="wid">{_e(s.workflow_id)}</h1>'
        f'<dl class="summary" id="summary">{cells}</dl>'
    )


_RESET_FORM = """
  <form id="reset-form" class="inline" title="Start a new run from a workflow task of this run (after a fix)">
    <input name="event_id" inputmode="numeric" pattern="[0-9]*" style="width:19em"
           title="Any event of a started workflow task, e.g. a WorkflowTaskCompleted id; empty: the last one"
           placeholder="reset to event id (blank: last task)">
    <input name="reason" placeholder="reset reason">
    <button type="submit" class="danger">Reset</button>
  </form>"""


def _actions(ns: str, s: ExecutionState) -> str:
    if not s.is_open:
        return f"""
<section class="actions" id="actions">{_RESET_FORM}
  <span id="action-result" role="status"></span>
</section>"""
    return f"""
<section class="actions" id="actions">
  <form id="signal-form" class="inline">
    <input name="name" placeholder="signal name" required>
    <input name="input" class="wide" placeholder='input: one JSON value, e.g. {{"approved": true}} (empty: no argument)'>
    <button type="submit">Signal</button>
  </form>
  <button id="cancel-button" class="danger">Cancel</button>
  <input id="terminate-reason" placeholder="terminate reason">
  <button id="terminate-button" class="danger">Terminate</button>{_RESET_FORM}
  <span id="action-result" role="status"></span>
</section>"""


def _pending(ns: str, s: ExecutionState) -> str:
    parts = []
    if s.activities:
        rows = []
        for a in sorted(s.activities.values(), key=lambda a: a.scheduled_event_id):
            state = "Started" if a.started_time else ("Scheduled" if a.dispatch_time else "Backing off")
            rows.append(
                "<tr>"
                f"<td>{_e(a.activity_id)}</td><td>{_e(a.activity_type)}</td><td>{_e(state)}</td>"
                f'<td class="num">{a.attempt}</td>'
                f"<td>{_time(a.scheduled_time)}</td>"
                f"<td>{_time(a.last_heartbeat_time) if a.last_heartbeat_time else '-'}</td>"
                f'<td class="mono small">{_e(_short_json(a.heartbeat_details, 200)) if a.heartbeat_details else ""}</td>'
                f'<td class="fail">{_e(_failure_text(a.last_failure.model_dump())) if a.last_failure else ""}</td>'
                "</tr>"
            )
        parts.append(
            '<h2>Pending activities</h2><table class="grid" id="pending-activities"><thead><tr><th>Id</th><th>Type</th>'
            "<th>State</th><th>Attempt</th><th>Scheduled</th><th>Last heartbeat</th><th>Heartbeat details</th>"
            f"<th>Last failure</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
        )
    if s.timers:
        now = time.time()
        rows = [
            f"<tr><td>{_e(t.timer_id)}</td><td class='num'>{t.started_event_id}</td><td>{_time(t.fire_time)}</td>"
            f"<td>{_e(_duration(t.fire_time - now)) if t.fire_time > now else 'due'}</td></tr>"
            for t in sorted(s.timers.values(), key=lambda t: t.fire_time)
        ]
        parts.append(
            '<h2>Pending timers</h2><table class="grid" id="pending-timers"><thead><tr><th>Timer</th>'
            f"<th>Started event</th><th>Fires</th><th>In</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
        )
    if s.children:
        rows = [
            f"<tr><td>{_wf_link(c.namespace, c.workflow_id, c.run_id)}</td><td>{_e(c.workflow_type)}</td>"
            f"<td>{'started' if c.started_event_id else 'starting'}</td><td>{_e(c.parent_close_policy)}</td></tr>"
            for c in s.children.values()
        ]
        parts.append(
            '<h2>Pending child workflows</h2><table class="grid"><thead><tr><th>Workflow</th><th>Type</th>'
            f"<th>State</th><th>Parent close policy</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
        )
    return "".join(parts)


def _payloads(s: ExecutionState) -> str:
    parts = [f'<div class="payload"><h3>Input</h3>{_pre(s.input)}</div>']
    if s.status == WorkflowExecutionStatus.COMPLETED or s.result is not None:
        parts.append(f'<div class="payload"><h3>Result</h3>{_pre(s.result)}</div>')
    if s.failure is not None:
        failure = s.failure.model_dump(mode="json", exclude_defaults=True)
        parts.append(
            f'<div class="payload failure"><h3>Failure</h3><p class="fail">{_e(_failure_text(failure))}</p>'
            f"{_pre(failure)}</div>"
        )
    return f'<section class="payloads" id="payloads">{"".join(parts)}</section>'


def _runs(ns: str, wid: str, current: str, runs: Sequence[VisibilityRecord]) -> str:
    if len(runs) <= 1:
        return ""
    items = "".join(
        f"<li>{_badge(r.status)} "
        + (f"<b class='mono'>{_e(r.run_id)}</b>" if r.run_id == current else _wf_link(ns, wid, r.run_id, r.run_id))
        + f" started {_time(r.start_time)}</li>"
        for r in runs
    )
    return f'<h2>Runs of this workflow id</h2><ul class="runs">{items}</ul>'


def _history(ns: str, s: ExecutionState, events: Sequence[HistoryEvent], first: int, view: str) -> str:
    total = s.next_event_id - 1
    base = _wf_url(ns, s.workflow_id, s.run_id)

    def link(label: str, **changes: Any) -> str:
        params = {"run_id": s.run_id, "history": view if view == "json" else "", "first_event_id": ""}
        params.update({k: str(v) for k, v in changes.items()})
        return f'<a href="{_e(_url(base, {k: v for k, v in params.items() if v}))}#history">{_e(label)}</a>'

    toggle = (
        f"<b>Compact</b> · {link('Full JSON', history='json', first_event_id=first)}"
        if view != "json"
        else f"{link('Compact', history='', first_event_id=first)} · <b>Full JSON</b>"
    )
    nav = []
    if first > 1:
        nav.append(link("« Earlier", first_event_id=max(1, first - EVENTS_PER_PAGE)))
    if first + EVENTS_PER_PAGE <= total:
        nav.append(link("Later »", first_event_id=first + EVENTS_PER_PAGE))
    last = first + len(events) - 1
    header = (
        f'<h2 id="history">History <small>events {first}–{last} of {total}</small></h2>'
        f'<p class="toggle" id="history-toggle">{toggle} <span class="pager">{" ".join(nav)}</span></p>'
    )
    if view == "json":
        blocks = "".join(
            f'<div class="event-json" id="e{e.event_id}">{_pre(e.model_dump(mode="json"))}</div>' for e in events
        )
        return header + blocks
    rows = []
    for e in events:
        data = e.model_dump(mode="json")
        rows.append(
            f'<tr id="e{e.event_id}"><td class="num">{e.event_id}</td>'
            f"<td class='nowrap'>{_e(e.event_time.astimezone(UTC).strftime('%H:%M:%S.%f')[:-3])}</td>"
            f'<td class="etype {_event_class(e.event_type)}">{_e(e.event_type)}</td>'
            f'<td class="mono small">{_e(_event_details(data))}</td></tr>'
        )
    return (
        header + '<table class="grid events" id="events"><thead><tr><th>Id</th><th>Time (UTC)</th><th>Type</th>'
        f"<th>Details</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


_HIDDEN_EVENT_FIELDS = {"event_id", "event_time", "event_type", "v"}


def _event_details(data: dict[str, Any]) -> str:
    parts = []
    for key, value in data.items():
        if key in _HIDDEN_EVENT_FIELDS or value in (None, "", [], {}):
            continue
        if key in ("failure", "continued_failure") and isinstance(value, dict):
            value = _failure_text(value)
        parts.append(f"{key}={value if isinstance(value, str) else _short_json(value, 120)}")
    return _cut(", ".join(parts), 300)


def _event_class(event_type: str) -> str:
    for prefix, css in (
        ("WorkflowExecution", "ev-wf"),
        ("WorkflowTask", "ev-task"),
        ("ActivityTask", "ev-act"),
        ("Timer", "ev-timer"),
        ("Marker", "ev-marker"),
    ):
        if event_type.startswith(prefix):
            return css + (" ev-bad" if event_type.endswith(("Failed", "TimedOut", "Terminated")) else "")
    return "ev-other"


# the saga timeline ------------------------------------------------------------------------------
@dataclass
class _Activity:
    scheduled_event_id: int
    activity_id: str
    activity_type: str
    scheduled_time: datetime
    outcome: str = "Pending"
    outcome_event_id: int = 0
    attempt: int = 1
    failure: str = ""
    compensation: bool = False


@dataclass
class _Step:
    index: int
    compensation: str
    registered_event_id: int = 0
    after: _Activity | None = None
    """The activity that completed last before the step was registered: the step's own work."""
    state: str = "done"
    compensation_activity: _Activity | None = None
    error: str = ""


@dataclass
class _Saga:
    saga_id: str
    steps: dict[int, _Step] = field(default_factory=dict)
    trigger: str = ""

    @property
    def state(self) -> str:
        states = [s.state for s in self.steps.values()]
        if "compensation failed" in states:
            return "compensation failed"
        if "compensating" in states:
            return "compensating"
        if states and all(s == "compensated" for s in states):
            return "compensated"
        if "compensated" in states:
            return "partly compensated"
        return "steps done"


@dataclass
class _Entry:
    event_id: int
    time: datetime
    css: str
    title: str
    detail: str = ""
    saga_id: str = ""


def _saga_timeline(events: Iterable[HistoryEvent]) -> tuple[list[_Saga], list[_Entry]]:
    """Sagas and a chronological timeline of their steps and compensations, from history.

    Reads the ``saga`` markers ``sagas.Saga`` records (``{"saga_id", "event",
    "name", "index"[, "error"]}``) and the ``ActivityTask*`` events around them.
    """
    sagas: dict[str, _Saga] = {}
    activities: dict[int, _Activity] = {}
    entries: list[_Entry] = []
    unclaimed: list[_Activity] = []  # completed forward work not yet matched to a registered step
    awaiting: dict[str, list[_Step]] = {}  # compensation name -> steps whose activity is not scheduled yet
    last_failed: _Activity | None = None
    cancel_requested = False
    for e in events:
        data = e.model_dump(mode="json")
        kind = e.event_type
        if kind == "ActivityTaskScheduled":
            a = _Activity(e.event_id, data["activity_id"], data["activity_type"], e.event_time)
            activities[e.event_id] = a
            waiting = awaiting.get(a.activity_type)
            if waiting:
                step = waiting.pop(0)
                step.compensation_activity, a.compensation = a, True
            entries.append(_Entry(e.event_id, e.event_time, "act", a.activity_type))
        elif kind.startswith("ActivityTask") and (a_ := activities.get(data.get("scheduled_event_id", 0))):
            if kind == "ActivityTaskStarted":
                a_.attempt = int(data.get("attempt") or 1)
            elif kind in ("ActivityTaskCompleted", "ActivityTaskFailed", "ActivityTaskTimedOut", "ActivityTaskCanceled"):
                a_.outcome, a_.outcome_event_id = kind.removeprefix("ActivityTask"), e.event_id
                if isinstance(data.get("failure"), dict):
                    a_.failure = _failure_text(data["failure"])
                if not a_.compensation:
                    if kind == "ActivityTaskCompleted":
                        unclaimed.append(a_)
                    else:
                        last_failed = a_
        elif kind == "WorkflowExecutionCancelRequested":
            cancel_requested = True
        elif kind == "MarkerRecorded" and data.get("marker_name") == SAGA_MARKER:
            details = data.get("details") or {}
            saga_id = str(details.get("saga_id", "saga"))
            saga = sagas.setdefault(saga_id, _Saga(saga_id))
            what, name = str(details.get("event", "")), str(details.get("name", "?"))
            index = details.get("index")
            index = index if isinstance(index, int) else len(saga.steps)
            step = saga.steps.setdefault(index, _Step(index, name))
            if what == "step_registered":
                step.registered_event_id = e.event_id
                step.after = unclaimed.pop() if unclaimed else None
                title = f"step #{index} done" + (f": {step.after.activity_type}" if step.after else "")
                entries.append(_Entry(e.event_id, e.event_time, "step", title, f"compensation registered: {name}", saga_id))
                continue
            if what == "compensation_started":
                if not saga.trigger:
                    saga.trigger = (
                        f"{last_failed.activity_type} {last_failed.outcome.lower()}: {last_failed.failure}"
                        if last_failed
                        else ("workflow cancellation requested" if cancel_requested else "compensate() called")
                    )
                step.state = "compensating"
                awaiting.setdefault(name, []).append(step)
                entries.append(_Entry(e.event_id, e.event_time, "comp", f"compensating step #{index}: {name}", "", saga_id))
            elif what == "compensation_completed":
                step.state = "compensated"
                entries.append(_Entry(e.event_id, e.event_time, "comp-ok", f"step #{index} compensated: {name}", "", saga_id))
            elif what == "compensation_failed":
                step.state, step.error = "compensation failed", str(details.get("error", ""))
                entries.append(
                    _Entry(e.event_id, e.event_time, "comp-bad", f"compensation of step #{index} failed: {name}", step.error, saga_id)
                )
    if not sagas:
        return [], []
    for entry in entries:  # activity rows show how each activity ended
        act = activities.get(entry.event_id)
        if entry.css == "act" and act is not None:
            bad = act.outcome in ("Failed", "TimedOut")
            entry.css = "act-bad" if bad else ("act-comp" if act.compensation else "act")
            role = "compensation activity" if act.compensation else "activity"
            attempts = f", attempt {act.attempt}" if act.attempt > 1 else ""
            entry.title = f"{role} {act.activity_type}: {act.outcome.lower()}{attempts}"
            entry.detail = act.failure
    return list(sagas.values()), entries


def _saga_section(base: str, events: Sequence[HistoryEvent], history_length: int) -> str:
    sagas, entries = _saga_timeline(events)
    if not sagas:
        return ""
    parts = ['<section class="saga" id="saga"><h2>Saga</h2>']
    if history_length > len(events):
        parts.append(f'<p class="warn">Drawn from the first {len(events):,} of {history_length:,} events.</p>')
    for saga in sagas:
        rows = []
        for step in sorted(saga.steps.values(), key=lambda s: s.index):
            comp = step.compensation_activity
            rows.append(
                f'<tr class="step-{_e(step.state.replace(" ", "-"))}"><td class="num">{step.index}</td>'
                f"<td>{_e(step.after.activity_type) if step.after else '-'}</td>"
                f"<td>{_e(step.compensation)}</td>"
                f'<td><span class="sstate">{_e(step.state)}</span>'
                + (f" <span class='fail'>{_e(step.error)}</span>" if step.error else "")
                + "</td>"
                f"<td>{_event_link(base, step.registered_event_id)}"
                + (f" → {_event_link(base, comp.scheduled_event_id)}" if comp else "")
                + (f"–{_event_link(base, comp.outcome_event_id)}" if comp and comp.outcome_event_id else "")
                + "</td></tr>"
            )
        trigger = f'<p>Compensation triggered by: <span class="fail">{_e(saga.trigger)}</span></p>' if saga.trigger else ""
        parts.append(
            f'<h3>{_e(saga.saga_id)} <span class="sstate saga-{_e(saga.state.replace(" ", "-"))}">{_e(saga.state)}</span></h3>'
            f"{trigger}"
            '<table class="grid saga-steps"><thead><tr><th>#</th><th>Step (activity)</th><th>Compensation</th>'
            f"<th>State</th><th>Events</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
        )
    several = len(sagas) > 1
    items = "".join(
        f'<li class="tl-{_e(x.css)}"><span class="tl-when">{_event_link(base, x.event_id)} '
        f"{_e(x.time.astimezone(UTC).strftime('%H:%M:%S.%f')[:-3])}</span> "
        f"{_e(x.saga_id) + ': ' if several and x.saga_id else ''}<b>{_e(x.title)}</b>"
        + (f' <span class="tl-detail">{_e(x.detail)}</span>' if x.detail else "")
        + "</li>"
        for x in entries
    )
    parts.append(f'<h3>Timeline</h3><ol class="timeline" id="saga-timeline">{items}</ol></section>')
    return "".join(parts)


def _event_link(base: str, event_id: int) -> str:
    """A link to event ``event_id`` on its page of the history table (``base``: the run's URL)."""
    if not event_id:
        return ""
    first = (event_id - 1) // EVENTS_PER_PAGE * EVENTS_PER_PAGE + 1
    sep = "&" if "?" in base else "?"
    return f'<a class="evlink" href="{_e(f"{base}{sep}first_event_id={first}#e{event_id}")}">#{event_id}</a>'


# helpers -------------------------------------------------------------------------------------
def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _hint(hint: str) -> str:
    return f"<br><span class='hint'>{_e(hint)}</span>" if hint else ""


def _int(text: str | None, default: int, low: int, high: int | None) -> int:
    try:
        value = int(text) if text else default
    except ValueError:
        return default
    value = max(low, value)
    return min(high, value) if high is not None else value


def _url(path: str, params: dict[str, str]) -> str:
    return f"{path}?{urlencode(params)}" if params else path


def _ns_url(ns: str) -> str:
    return f"/namespaces/{url_quote(ns, safe='')}/workflows"


def _wf_url(ns: str, wid: str, run_id: str = "") -> str:
    path = f"{_ns_url(ns)}/{url_quote(wid, safe='')}"
    return _url(path, {"run_id": run_id} if run_id else {})


def _wf_link(ns: str, wid: str, run_id: str = "", label: str | None = None) -> str:
    return f'<a href="{_e(_wf_url(ns, wid, run_id))}">{_e(label or wid)}</a>'


def _badge(status: str) -> str:
    return f'<span class="badge st-{_e(status)}">{_e(status)}</span>'


def _time(ts: float | None) -> str:
    if ts is None:
        return ""
    when = datetime.fromtimestamp(ts, UTC)
    return f'<time datetime="{when.isoformat()}">{when.strftime("%Y-%m-%d %H:%M:%S")}</time>'


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    minutes, sec = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} m {sec} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} m"
    return f"{hours // 24} d {hours % 24} h"


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _short_json(value: Any, limit: int) -> str:
    return _cut(json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str), limit)


def _pre(value: Any) -> str:
    text = json.dumps(value, indent=2, ensure_ascii=False, default=str)
    if len(text) > MAX_JSON_CHARS:
        text = text[:MAX_JSON_CHARS] + f"\n… ({len(text) - MAX_JSON_CHARS:,} more characters: see the JSON API)"
    return f'<pre class="json">{_e(text)}</pre>'


def _failure_text(failure: dict[str, Any]) -> str:
    parts: list[str] = []
    current: Any = failure
    while isinstance(current, dict) and len(parts) < 5:
        message = str(current.get("message", ""))
        parts.append(f"{current['type']}: {message}" if current.get("type") else message)
        current = current.get("cause")
    return " ← ".join(parts)


def _page(title: str, body: str, *, ns: str | None = None, status_code: int = 200, data: dict[str, str] | None = None) -> HTMLResponse:
    ns_links = (
        f'<a href="{_e(_ns_url(ns))}">Workflows</a><span class="ns">namespace <b>{_e(ns)}</b></span>' if ns else ""
    )
    attrs = "".join(f' data-{k}="{_e(v)}"' for k, v in (data or {}).items())
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>{_e(title)} · sagas</title>
<style>{_CSS}</style></head>
<body{attrs}>
<header><a class="brand" href="/">sagas</a>{ns_links}<a href="/namespaces">Namespaces</a>
<a href="/docs">API</a><a href="/metrics">Metrics</a></header>
<main>{body}</main>
<script>{_JS}</script>
</body></html>"""
    return HTMLResponse(page, status_code=status_code)


_CSS = """
:root{--fg:#1d2330;--muted:#5f6b7a;--line:#dde3ea;--bg:#fff;--alt:#f6f8fa;--link:#0b5cad;
--ok:#1a7f37;--bad:#c62828;--run:#0b62c4;--warn:#a15c00}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg)}
header{display:flex;gap:18px;align-items:center;padding:10px 24px;background:#1d2330;color:#fff}
header a{color:#dfe7f1;text-decoration:none}header a:hover{color:#fff;text-decoration:underline}
header .brand{font-weight:700;font-size:17px;color:#fff;margin-right:12px}
header .ns{color:#9fb0c3;margin-left:auto}header .ns b{color:#fff}
main{padding:16px 24px;max-width:1500px}
h1{font-size:22px;margin:8px 0 12px}h1 small{color:var(--muted);font-weight:400;font-size:15px}
h2{font-size:17px;margin:22px 0 8px}h2 small{color:var(--muted);font-weight:400;font-size:13px}
h3{font-size:15px;margin:14px 0 6px}
a{color:var(--link)}
.mono,code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
.small{font-size:12px}.num{text-align:right;font-variant-numeric:tabular-nums}.nowrap{white-space:nowrap}
table.grid{border-collapse:collapse;width:100%;margin:6px 0 10px}
.grid th,.grid td{border-bottom:1px solid var(--line);padding:5px 8px;text-align:left;vertical-align:top}
.grid th{background:var(--alt);font-weight:600;font-size:12px;color:var(--muted);text-transform:uppercase;letter-spacing:.03em}
.grid tbody tr:hover{background:#f0f5fb}
.grid td.mono{word-break:break-all}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;color:#fff;background:#6b7785}
.st-Running{background:var(--run)}.st-Completed{background:var(--ok)}.st-Failed{background:var(--bad)}
.st-Canceled{background:#8a6d00}.st-Terminated{background:#7b1fa2}.st-TimedOut{background:#d35400}
.st-ContinuedAsNew{background:#00796b}
form.filters{display:grid;grid-template-columns:repeat(auto-fill,minmax(190px,1fr));gap:8px 12px;
background:var(--alt);padding:12px;border:1px solid var(--line);border-radius:6px}
form.filters label{display:flex;flex-direction:column;font-size:12px;color:var(--muted);gap:3px}
form.filters .wide{grid-column:1/-1}
input,select,button{font:inherit;padding:5px 8px;border:1px solid #c4ccd6;border-radius:4px;background:#fff;color:var(--fg)}
button{background:#1d2330;color:#fff;border-color:#1d2330;cursor:pointer}button:hover{opacity:.9}
button.danger{background:var(--bad);border-color:var(--bad)}
.buttons{display:flex;gap:14px;align-items:center;grid-column:1/-1}
nav.chips{margin:10px 0;display:flex;gap:6px;flex-wrap:wrap}
.chip{padding:2px 10px;border:1px solid var(--line);border-radius:12px;text-decoration:none;color:var(--fg);
font-size:13px;background:#fff}
.chip.active{background:#1d2330;color:#fff;border-color:#1d2330}
.dot{display:inline-block;width:9px;height:9px;border-radius:50%;margin-right:6px}
.count{color:var(--muted)}.count b{color:var(--fg)}code.q{background:var(--alt);padding:1px 5px;border-radius:3px}
.pager a{margin-right:14px}
.error{border:1px solid #f1b5b5;background:#fdecec;color:#7a1010;padding:10px 12px;border-radius:6px;margin:10px 0}
.hint{color:#5f3b3b}.warn{color:var(--warn);font-weight:600}.fail{color:var(--bad)}
.empty{color:var(--muted);padding:20px 0}
.crumbs{margin:0;color:var(--muted)}h1.wid{word-break:break-all}
dl.summary{display:grid;grid-template-columns:160px 1fr;gap:4px 16px;margin:0 0 10px}
dl.summary dt{color:var(--muted)}dl.summary dd{margin:0;word-break:break-all}
section.actions{display:flex;flex-wrap:wrap;gap:8px;align-items:center;padding:10px;background:var(--alt);
border:1px solid var(--line);border-radius:6px;margin:10px 0}
form.inline{display:flex;gap:6px;flex:1 1 520px}form.inline .wide{flex:1}
#action-result{font-weight:600}
.payloads{display:grid;grid-template-columns:repeat(auto-fit,minmax(320px,1fr));gap:12px}
pre.json{background:var(--alt);border:1px solid var(--line);border-radius:4px;padding:8px;margin:4px 0;
max-height:320px;overflow:auto;font-size:12px;white-space:pre-wrap;word-break:break-word}
.events td.etype{white-space:nowrap;font-weight:600}
.ev-wf{color:#1d2330}.ev-task{color:#6b7785;font-weight:400!important}.ev-act{color:#0b5cad}.ev-timer{color:#8a6d00}
.ev-marker{color:#7b1fa2}.ev-bad{color:var(--bad)}
.event-json pre.json{max-height:none}
section.saga{border:1px solid var(--line);border-radius:6px;padding:4px 14px 10px;margin:14px 0;background:#fcfcfd}
.sstate{font-weight:600}
.saga-compensated,.step-compensated .sstate{color:var(--ok)}.saga-compensating,.step-compensating .sstate{color:var(--warn)}
.saga-compensation-failed,.step-compensation-failed .sstate{color:var(--bad)}.saga-steps-done{color:var(--run)}
ol.timeline{list-style:none;margin:6px 0;padding:0 0 0 14px;border-left:3px solid var(--line)}
ol.timeline li{position:relative;padding:3px 0 3px 12px}
ol.timeline li::before{content:"";position:absolute;left:-22px;top:9px;width:11px;height:11px;border-radius:50%;
background:#9aa5b1;border:2px solid #fff}
.tl-when{color:var(--muted);font-size:12px;font-family:ui-monospace,Menlo,monospace;margin-right:6px}
ol.timeline li.tl-act::before{background:var(--run)}ol.timeline li.tl-act-bad::before{background:var(--bad)}
ol.timeline li.tl-step::before{background:var(--ok)}ol.timeline li.tl-comp::before{background:var(--warn)}
ol.timeline li.tl-act-comp::before{background:#d39e00}ol.timeline li.tl-comp-ok::before{background:#00796b}
ol.timeline li.tl-comp-bad::before{background:var(--bad)}
.tl-detail{color:var(--muted)}li.tl-act-bad .tl-detail,li.tl-comp-bad .tl-detail{color:var(--bad)}
a.evlink{font-size:12px;text-decoration:none}
ul.runs{margin:4px 0;padding-left:18px}
details.help{margin:6px 0;color:var(--muted);font-size:13px}details.help summary{cursor:pointer}
details.help code{background:var(--alt);padding:0 4px;border-radius:3px;color:var(--fg)}
"""

_JS = """
(function () {
  const d = document.body.dataset;
  if (!d.wid) return;
  const out = document.getElementById('action-result');
  const base = '/api/v1/namespaces/' + encodeURIComponent(d.ns) + '/workflows/' + encodeURIComponent(d.wid) + '/';
  async function call(action, body, then) {
    out.textContent = action + '…'; out.style.color = '';
    body.run_id = d.run; body.identity = 'web-ui';
    try {
      const r = await fetch(base + action, {method: 'POST', headers: {'content-type': 'application/json'},
                                            body: JSON.stringify(body)});
      const answer = await r.json().catch(() => ({}));
      if (!r.ok) throw new Error(answer.message || r.statusText);
      out.textContent = action + ': done'; out.style.color = 'var(--ok)';
      setTimeout(() => (then ? then(answer) : location.reload()), 400);
    } catch (err) {
      out.textContent = action + ' failed: ' + err.message; out.style.color = 'var(--bad)';
    }
  }
  const signal = document.getElementById('signal-form');
  if (signal) signal.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const text = signal.elements.input.value.trim();
    let input = [];
    try { if (text) input = [JSON.parse(text)]; }
    catch (err) { out.textContent = 'input is not JSON: ' + err.message; out.style.color = 'var(--bad)'; return; }
    call('signal', {name: signal.elements.name.value, input: input});
  });
  const cancel = document.getElementById('cancel-button');
  if (cancel) cancel.addEventListener('click', () => {
    if (confirm('Request cancellation of workflow ' + d.wid + '?')) call('cancel', {reason: 'cancelled from the web UI'});
  });
  const terminate = document.getElementById('terminate-button');
  if (terminate) terminate.addEventListener('click', () => {
    const reason = document.getElementById('terminate-reason').value || 'terminated from the web UI';
    if (confirm('Terminate workflow ' + d.wid + ' now? It stops without cleanup or compensation.'))
      call('terminate', {reason: reason});
  });
  const reset = document.getElementById('reset-form');
  if (reset) reset.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const eid = reset.elements.event_id.value.trim();
    const where = eid ? 'event ' + eid : 'its last workflow task';
    if (!confirm('Reset workflow ' + d.wid + ': start a new run from ' + where +
                 '? Work completed before that point is kept; a running run is terminated.')) return;
    const body = {reason: reset.elements.reason.value || 'reset from the web UI'};
    if (eid) body.event_id = parseInt(eid, 10); else body.reset_type = 'LastWorkflowTask';
    call('reset', body, (answer) => { location.href = location.pathname + '?run_id=' + encodeURIComponent(answer.run_id); });
  });
})();
"""
