"""Generate ``docs/http-api.md`` from the orchestrator's OpenAPI document.

    python scripts/gen_openapi_docs.py            # rewrite docs/http-api.md
    python scripts/gen_openapi_docs.py --check    # exit 1 if the page is out of date

It starts a dev server in this process (``memory://`` store, a free port), fetches
``/openapi.json`` and renders every route and every schema as Markdown. The page is
never edited by hand; ``tests/docs/test_docs.py`` fails when it differs from what this
script generates, so the reference cannot drift from the code.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "http-api.md"

# Routes the API groups under one heading each, in this order (first matching prefix wins).
SECTIONS: list[tuple[str, str, str]] = [
    (
        "/api/v1/namespaces/{ns}/workflow",
        "Workflows",
        "Start, list, inspect and steer workflow runs of one namespace.",
    ),
    (
        "/api/v1/namespaces",
        "Namespaces",
        "Register, list, describe and update namespaces (see [Namespaces](namespaces.md)).",
    ),
    ("/api/v1/tasks", "Task completions", "How SDK workers complete workflow and activity tasks."),
    (
        "/api/v1/queues",
        "Built-in broker",
        "The dev server's queues over HTTP, for workers and plain services (see [the JSON protocol](protocol.md)).",
    ),
    ("/api/v1/dlq", "Dead-letter queue", "Messages that could not be handled, with the reason."),
    (
        "/api/v1/codec",
        "Codec server",
        "Decode and encode payloads with the namespace's codec (see [Security](security.md#payload-encryption)).",
    ),
    ("/api/v1/cluster", "Cluster", "What a client or worker needs to know about this server."),
    ("/", "Operations", "Health and Prometheus metrics (see [Operations](operations.md))."),
]


# What each route does, where its (docstring-less) handler does not say. Keyed by "METHOD path";
# render() refuses a note whose route no longer exists, so a note cannot outlive its route.
ROUTE_NOTES: dict[str, str] = {
    "GET /healthz": '`{"status": "ok"}` while the frontend serves requests. No credentials needed.',
    "GET /metrics": "Prometheus metrics in the text format (the list is in [Operations](operations.md#monitoring)). No credentials needed.",
    "GET /api/v1/cluster": "Server version, the broker URL workers should use (`worker_broker_url`), the queue prefix, the payload limit and the namespaces the caller may read. SDK workers call it when they start.",
    "POST /api/v1/namespaces": "Register a namespace (`*:admin`). `409 namespace_already_exists` if the name is taken.",
    "GET /api/v1/namespaces": "The namespaces the caller may read.",
    "GET /api/v1/namespaces/{ns}": "One namespace's settings. `404 namespace_not_found`.",
    "PATCH /api/v1/namespaces/{ns}": "Change some of a namespace's settings (admin on `ns`); fields not given keep their value.",
    "POST /api/v1/namespaces/{ns}/workflows": "Start a run. With `signal`, signal-with-start: the signal goes to the running workflow, which is started first only if none runs. `started` is `false` when nothing new was started (the same `request_id` again, or signal-with-start on a running workflow). Errors: `409 workflow_already_started` (the id reuse policy refused), `413 payload_too_large`, `404 namespace_not_found`.",
    "GET /api/v1/namespaces/{ns}/workflows": "List runs, newest first, filtered by a list query (the language is in [Web UI](ui.md#the-list-query-language)); page with `next_page_token`.",
    "GET /api/v1/namespaces/{ns}/workflow-count": "How many runs match a list query.",
    "GET /api/v1/namespaces/{ns}/workflows/{wid}": "Describe a run (the latest without `run_id`): status, pending activities, timers and children, input, result or failure, history-size warnings. `404 workflow_not_found`.",
    "GET /api/v1/namespaces/{ns}/workflows/{wid}/history": "A page of the run's events from `first_event_id`; `next_page_token` is the event id to ask for next.",
    "GET /api/v1/namespaces/{ns}/workflows/{wid}/result": "Wait up to `wait` seconds (at most 60) for the run to close and return how it closed; a still-open run is returned as it is, with status `Running`: ask again.",
    "POST /api/v1/namespaces/{ns}/workflows/{wid}/signal": "Send a signal. `409 workflow_not_running` if the run is closed; a repeated `request_id` is applied once.",
    "POST /api/v1/namespaces/{ns}/workflows/{wid}/cancel": "Request cancellation: the workflow code sees it and decides (a `Saga` compensates). `409 workflow_not_running` if the run is closed.",
    "POST /api/v1/namespaces/{ns}/workflows/{wid}/terminate": "End the run at once, without running any more workflow code (no compensation).",
    "POST /api/v1/namespaces/{ns}/workflows/{wid}/query": "Ask a worker to run a query handler on the workflow's current state. `504 query_timeout` when no worker answers in `timeout` seconds (at most 60), `400 query_failed` when the handler raised.",
    "POST /api/v1/namespaces/{ns}/workflows/{wid}/update": "Send an update and wait (up to `timeout` seconds, at most 300) until it reaches `wait_for_stage`. `400 update_rejected` when the validator refused it.",
    "POST /api/v1/queues/{queue}/receive": "Long-poll up to `max_messages` (at most 100) deliveries, waiting up to `wait` seconds (at most 30). A delivery is leased: ack it, nack it, or it comes back after the visibility timeout.",
    "POST /api/v1/queues/{queue}/ack": "The delivery with this `receipt` was handled: it is gone.",
    "POST /api/v1/queues/{queue}/nack": "Give the delivery back (`requeue: true`) or dead-letter it with `reason` (`requeue: false`).",
    "POST /api/v1/queues/{queue}/publish": "Publish a message; plain services publish their replies to `sagas.completions` this way.",
    "GET /api/v1/dlq": "Read (without removing) the dead-lettered messages, each with its reason (`*:admin`).",
    "POST /api/v1/codec/decode": "Decode payloads with the namespace's codec (read on the namespace).",
    "POST /api/v1/codec/encode": "Encode payloads with the namespace's codec (write on the namespace).",
}


async def fetch_openapi() -> dict[str, Any]:
    """The OpenAPI document of a dev server started in this process."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import httpx

    from orchestrator.server import DevServer

    server = DevServer(store_url="memory://", port=0, system_worker=False)
    await server.start()
    try:
        async with httpx.AsyncClient() as http:
            answer = await http.get(f"http://{server.target}/openapi.json")
            answer.raise_for_status()
            spec: dict[str, Any] = answer.json()
            return spec
    finally:
        await server.stop()


def _ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def _anchor(name: str) -> str:
    return name.lower()


def _type(schema: dict[str, Any]) -> str:
    """A short Markdown type for a schema: links to named schemas, ``a | b`` for unions."""
    if "$ref" in schema:
        name = _ref_name(schema["$ref"])
        return f"[{name}](#{_anchor(name)})"
    for key in ("anyOf", "oneOf"):
        if key in schema:
            parts = [_type(s) for s in schema[key]]
            return " | ".join(dict.fromkeys(parts))
    if "allOf" in schema and len(schema["allOf"]) == 1:
        return _type(schema["allOf"][0])
    kind = schema.get("type")
    if kind == "array":
        return f"array of {_type(schema.get('items', {}))}"
    if kind == "object":
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict) and extra:
            return f"object of {_type(extra)}"
        return "object"
    if "enum" in schema:
        return " | ".join(f"`{json.dumps(v)}`" for v in schema["enum"])
    if "const" in schema:
        return f"`{json.dumps(schema['const'])}`"
    if kind is None:
        return "any"
    fmt = schema.get("format")
    return f"{kind} ({fmt})" if fmt else str(kind)


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ").strip()


def _default(schema: dict[str, Any]) -> str:
    return f"`{json.dumps(schema['default'])}`" if "default" in schema else ""


def _section_of(path: str) -> int:
    return next(i for i, (prefix, _, _) in enumerate(SECTIONS) if path.startswith(prefix))


def _operation(method: str, path: str, op: dict[str, Any]) -> list[str]:
    out = [f"### `{method.upper()} {path}`", ""]
    summary = op.get("summary", "")
    description = (op.get("description") or "").strip() or ROUTE_NOTES.get(f"{method.upper()} {path}", "")
    out += [description or f"{summary}.", ""]
    params = op.get("parameters", [])
    if params:
        out += ["| parameter | in | type | required | default |", "|---|---|---|---|---|"]
        for p in params:
            schema = p.get("schema", {})
            out.append(
                f"| `{p['name']}` | {p['in']} | {_cell(_type(schema))} | {'yes' if p.get('required') else 'no'} | {_default(schema)} |"
            )
        out.append("")
    body = op.get("requestBody")
    if body:
        schema = body.get("content", {}).get("application/json", {}).get("schema", {})
        out += [f"Request body (JSON): {_type(schema)}", ""]
    responses = op.get("responses", {})
    rows = []
    for status, resp in sorted(responses.items()):
        if status == "422":
            continue  # FastAPI's validation schema; the server answers 400 invalid_argument instead
        content = resp.get("content", {})
        schema = content.get("application/json", {}).get("schema")
        kind = _type(schema) if schema else ", ".join(content) or "-"
        rows.append(f"| {status} | {_cell(kind)} |")
    if rows:
        out += ["| status | body |", "|---|---|", *rows, ""]
    return out


def _schema(name: str, schema: dict[str, Any]) -> list[str]:
    out = [f"### {name}", ""]
    if schema.get("description"):
        out += [schema["description"].strip(), ""]
    props = schema.get("properties", {})
    if props:
        required = set(schema.get("required", []))
        out += ["| field | type | required | default |", "|---|---|---|---|"]
        for field, fs in props.items():
            out.append(
                f"| `{field}` | {_cell(_type(fs))} | {'yes' if field in required else 'no'} | {_cell(_default(fs))} |"
            )
        out.append("")
    elif "enum" in schema:
        out += [f"One of {_type(schema)}.", ""]
    else:
        out += [f"{_type(schema)}", ""]
    return out


def render(spec: dict[str, Any]) -> str:
    """The Markdown page for an OpenAPI document."""
    info = spec.get("info", {})
    out = [
        "# HTTP API reference",
        "",
        "<!-- Generated by scripts/gen_openapi_docs.py from the server's /openapi.json: do not edit by hand. -->",
        "",
        f"{info.get('description', '')} Version {info.get('version', '?')}, OpenAPI {spec.get('openapi', '?')}.",
        "",
        "Every route is under the frontend's address (`http://127.0.0.1:7233` for `sagas server start-dev`);",
        "a running server also serves this document at `/openapi.json` and an interactive page at `/docs`.",
        'Bodies are JSON. An error is `{"code", "message", "hint", "details"}` with a stable `code`:',
        "[Troubleshooting](errors.md) explains each. A body that does not validate is answered",
        "`400 invalid_argument` (not FastAPI's 422). Routes under `/api/v1/namespaces/{ns}/workflows` take a token",
        "from the namespace's rate limit; with authorization on, every route but `/healthz`, `/metrics`,",
        "`/openapi.json` and `/docs` needs `Authorization: Bearer <API key or JWT>` (see [Security](security.md)).",
        "",
    ]
    grouped: dict[int, list[tuple[str, str, dict[str, Any]]]] = {}
    for path, ops in spec.get("paths", {}).items():
        for method, op in ops.items():
            grouped.setdefault(_section_of(path), []).append((method, path, op))
    routes = {f"{method.upper()} {path}" for path, ops in spec.get("paths", {}).items() for method in ops}
    stale = sorted(set(ROUTE_NOTES) - routes)
    if stale:
        raise ValueError(f"ROUTE_NOTES describe routes the server no longer has: {stale}")
    for index, (_, title, blurb) in enumerate(SECTIONS):
        if index not in grouped:
            continue
        out += [f"## {title}", "", blurb, ""]
        for method, path, op in grouped[index]:
            out += _operation(method, path, op)
    schemas = spec.get("components", {}).get("schemas", {})
    shown = {k: v for k, v in schemas.items() if k not in ("HTTPValidationError", "ValidationError")}
    if shown:
        out += ["## Schemas", ""]
        for name in sorted(shown):
            out += _schema(name, shown[name])
    while out and out[-1] == "":
        out.pop()
    return "\n".join(out) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="only check that docs/http-api.md is up to date")
    parser.add_argument(
        "--output", type=Path, default=PAGE, help="where to write the page (default: docs/http-api.md)"
    )
    args = parser.parse_args()
    text = render(asyncio.run(fetch_openapi()))
    if args.check:
        current = args.output.read_text() if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is out of date: run python scripts/gen_openapi_docs.py", file=sys.stderr)
            return 1
        print(f"{args.output} is up to date")
        return 0
    args.output.write_text(text)
    print(f"wrote {args.output} ({len(text.splitlines())} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
