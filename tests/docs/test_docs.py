"""The documentation, tested like code (issue 15).

* Every example the pages include (``docs/examples/**``, pulled in with ``--8<--``) is imported
  and run here against a real in-process orchestrator (``WorkflowEnvironment.start_local()`` /
  ``start_time_skipping()``); the tutorial also runs word for word, as a newcomer would type it:
  ``sagas server start-dev``, ``python worker.py`` and the ``sagas workflow`` commands of the page.
* Every ```python block in ``docs/`` is either included from an example file, or marked
  ``<!-- test -->`` (extracted and run here, with ``env`` and ``client`` in scope and top-level
  ``await`` allowed), or marked ``<!-- not-tested: why -->`` on the line before it.
* Every error code the server can return has a section in the troubleshooting page.
* Every ``sagas ...`` command line in the docs and the README names a real command, with real options.
* Every Prometheus metric the server exports is listed on the operations page.
* The HTTP API page is what ``scripts/gen_openapi_docs.py`` generates from today's OpenAPI.
* ``mkdocs build --strict`` passes (when mkdocs is installed, as it is in CI).
"""

from __future__ import annotations

import ast
import asyncio
import importlib.util
import inspect
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from sagas.exceptions import (
    ActivityError,
    ApplicationError,
    NondeterminismError,
    RPCError,
    WorkflowFailureError,
)
from sagas.testing import WorkflowEnvironment
from sagas.worker import Replayer, Worker

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
EXAMPLES = DOCS / "examples"
README = ROOT / "README.md"
POLL = 0.2  # the tests' workers stop within this; the examples keep the default


# -- helpers ---------------------------------------------------------------------------------------


def pages() -> list[Path]:
    return sorted(p for p in DOCS.rglob("*.md") if "examples" not in p.parts)


def load_example(relpath: str) -> ModuleType:
    """Import ``docs/examples/<relpath>`` with its folder on ``sys.path``, as when run from there."""
    path = EXAMPLES / relpath
    name = "docs_example_" + re.sub(r"\W", "_", relpath.removesuffix(".py"))
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    sys.path.insert(0, str(path.parent))  # for its sibling imports; not left there for other tests
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    return module


FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>```+|~~~+)(?P<info>[^\n`]*)$")


def fenced_blocks(text: str) -> Iterator[tuple[int, str, str, str]]:
    """``(line number, info string, body, the non-blank line before the block)`` of each fenced block."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start, fence = i, m.group("fence")
        before = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        body: list[str] = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i])
            i += 1
        yield start + 1, m.group("info").strip(), "\n".join(body), before
        i += 1


def python_blocks() -> Iterator[tuple[Path, int, str, str]]:
    for page in pages():
        for line, info, body, before in fenced_blocks(page.read_text()):
            if info.split(" ")[0] in ("python", "py"):
                yield page, line, body, before


SNIPPET = re.compile(r'^\s*--8<--\s+"(?P<path>[^":]+)(?::(?P<section>[\w-]+))?"\s*$')


def snippet_includes() -> Iterator[tuple[Path, str, str | None]]:
    for page in pages():
        for line in page.read_text().splitlines():
            if m := SNIPPET.match(line):
                yield page, m.group("path"), m.group("section")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def activity_types(handle: Any) -> list[str]:
    history = await handle.fetch_history()
    return [e.activity_type for e in history.events if e.event_type.value == "ActivityTaskScheduled"]


# -- the rules every page follows ------------------------------------------------------------------


def test_every_python_block_is_run_or_says_why_not() -> None:
    unaccounted = []
    for page, line, body, before in python_blocks():
        included = body.strip() and all(SNIPPET.match(b) for b in body.strip().splitlines())
        if included or before == "<!-- test -->" or re.fullmatch(r"<!-- not-tested: .+ -->", before):
            continue
        unaccounted.append(f"{page.relative_to(ROOT)}:{line}")
    assert not unaccounted, (
        "these ```python blocks are neither included from docs/examples (--8<--), nor marked "
        "<!-- test --> (run by tests/docs/test_docs.py), nor <!-- not-tested: why --> on the line before: "
        + ", ".join(unaccounted)
    )


def test_every_included_example_exists_and_every_example_is_shown() -> None:
    included: set[Path] = set()
    for page, rel, section in snippet_includes():
        path = EXAMPLES / rel
        assert path.is_file(), f"{page.relative_to(ROOT)} includes {rel}, which is not in docs/examples"
        if section:
            assert f"--8<-- [start:{section}]" in path.read_text(), (
                f"{rel} has no section {section!r} ({page.name})"
            )
        included.add(path.resolve())
    examples = {p.resolve() for p in EXAMPLES.rglob("*") if p.is_file() and p.suffix in (".py", ".yaml")}
    orphans = sorted(str(p.relative_to(ROOT)) for p in examples - included)
    # helpers the shown files import are shown too: an example nobody reads is an example nobody fixes
    assert not orphans, f"examples not included in any page: {orphans}"


@pytest.mark.parametrize(
    "block",
    [
        pytest.param((page, line, body), id=f"{page.relative_to(DOCS)}:{line}")
        for page, line, body, before in python_blocks()
        if before == "<!-- test -->"
    ],
)
async def test_marked_python_block_runs(block: tuple[Path, int, str]) -> None:
    page, line, body = block
    code = compile(body, f"{page.relative_to(ROOT)}:{line}", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    async with await WorkflowEnvironment.start_local() as env:
        namespace: dict[str, Any] = {"__name__": "docs_block", "env": env, "client": env.client}
        result = eval(code, namespace)
        if inspect.isawaitable(result):
            await result


# -- the tutorial ----------------------------------------------------------------------------------


async def test_tutorial_saga_books_and_compensates() -> None:
    trip = load_example("tutorial/trip.py")
    from sagas.cli.workflow import saga_steps

    async with await WorkflowEnvironment.start_local() as env:
        async with Worker(
            env.client,
            task_queue="trips",
            workflows=[trip.TripBooking],
            activities=trip.ACTIVITIES,
            poll_wait=POLL,
        ):
            booked = await env.client.execute_workflow(
                trip.TripBooking.run, trip.Trip("ada", "Lisbon"), id="trip-lisbon", task_queue="trips"
            )
            assert booked == {"car": "car-ada", "hotel": "hotel-ada", "flight": "flight-ada"}

            with pytest.raises(WorkflowFailureError) as failed:
                await env.client.execute_workflow(
                    trip.TripBooking.run,
                    trip.Trip("alan", "Atlantis"),
                    id="trip-atlantis",
                    task_queue="trips",
                )
            assert isinstance(failed.value.cause, ActivityError)
            root = failed.value.cause.cause
            assert isinstance(root, ApplicationError) and root.type == "NoFlights"

            handle = env.client.get_workflow_handle("trip-atlantis")
            assert await activity_types(handle) == [
                "book_car",
                "book_hotel",
                "book_flight",
                "cancel_hotel",
                "cancel_car",
            ]
            steps = saga_steps(list((await handle.fetch_history()).events))
            assert [(s["step"], s["compensation"], s["status"]) for s in steps] == [
                ("book_car", "cancel_car", "compensated"),
                ("book_hotel", "cancel_hotel", "compensated"),
            ]


def _sagas_command() -> list[str]:
    script = Path(sys.executable).parent / "sagas"
    return [str(script)] if script.exists() else [sys.executable, "-m", "sagas.cli.main"]


def _tutorial_commands() -> list[str]:
    """The ``sagas workflow ...`` lines of the tutorial's shell blocks, in page order."""
    commands = []
    for _, info, body, _ in fenced_blocks((DOCS / "tutorial.md").read_text()):
        if info in ("sh", "bash", "console"):
            for line in body.replace("\\\n", " ").splitlines():
                line = line.strip().removeprefix("$ ")
                if line.startswith("sagas workflow"):
                    commands.append(line)
    return commands


def test_tutorial_word_for_word(tmp_path: Path) -> None:
    """The tutorial's own commands: dev server, worker.py, the workflow commands; then the web UI."""
    from typer.testing import CliRunner

    from sagas.cli.main import app as cli_app

    for name in ("trip.py", "worker.py"):
        shutil.copy(EXAMPLES / "tutorial" / name, tmp_path / name)
    ready = tmp_path / "ready"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("SAGAS_API_KEY", None)
    server = subprocess.Popen(
        [*_sagas_command(), "server", "start-dev", "--port", "0", "--ready-file", str(ready)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    worker = None
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert server.poll() is None, "sagas server start-dev exited"
            assert time.monotonic() < deadline, "the dev server did not start"
            time.sleep(0.05)
        address = ready.read_text().strip()
        env["SAGAS_ADDRESS"] = address  # the tutorial's commands and worker.py default to localhost:7233
        worker = subprocess.Popen(
            [sys.executable, "worker.py"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        commands = _tutorial_commands()
        assert any("trip-lisbon" in c for c in commands) and any("trip-atlantis" in c for c in commands), (
            commands
        )
        # The sagas commands run in this process (the same typer app as the console script; a
        # subprocess each would cost most of a second of imports).
        runner = CliRunner()
        results = []
        for command in commands:
            results.append(
                (command, runner.invoke(cli_app, shlex.split(command)[1:], env={"SAGAS_ADDRESS": address}))
            )

        def result_of(*words: str) -> Any:
            return next(r for c, r in results if all(w in c.split() for w in words))

        lisbon, atlantis = result_of("execute", "trip-lisbon"), result_of("execute", "trip-atlantis")
        assert lisbon.exit_code == 0, lisbon.output
        assert '"flight": "flight-ada"' in lisbon.stdout
        assert atlantis.exit_code == 1 and "Workflow failed" in atlantis.output, atlantis.output
        show = result_of("show", "trip-atlantis")
        assert "compensation_completed" in show.stdout and show.stdout.count("compensated") >= 2, show.stdout
        for command, done in results:
            if done is not atlantis:
                assert done.exit_code == 0, f"{command}: {done.output}"

        page = httpx.get(f"http://{address}/namespaces/default/workflows/trip-atlantis", timeout=10)
        assert page.status_code == 200 and "compensated" in page.text
        assert httpx.get(f"http://{address}/", timeout=10, follow_redirects=True).status_code == 200
    finally:
        outputs = {}
        for proc in (worker, server):
            if proc is not None:
                proc.terminate()
        for name, proc in (("worker", worker), ("server", server)):
            if proc is not None:
                try:
                    outputs[name] = proc.communicate(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    outputs[name] = proc.communicate()
    printed = outputs["worker"][0].decode()
    assert "hotel cancelled for alan" in printed and "car cancelled for alan" in printed, printed
    assert printed.index("hotel cancelled for alan") < printed.index("car cancelled for alan")


# -- concepts --------------------------------------------------------------------------------------


async def test_concepts_determinism_replays() -> None:
    ex = load_example("concepts/determinism.py")
    # Not time skipping: a closed run's history may be deleted by its retention timer as soon as
    # the server is idle, before the test could fetch it.
    async with await WorkflowEnvironment.start_local() as env:
        async with Worker(
            env.client,
            task_queue="party",
            workflows=[ex.DinnerParty],
            activities=[ex.reserve_seat],
            poll_wait=POLL,
        ):
            handle = await env.client.start_workflow(
                ex.DinnerParty.run, ["ada", "alan"], id="party-1", task_queue="party"
            )
            result = await handle.result()
            history = await handle.fetch_history()
    assert result["seats"] == ["seat-for-ada", "seat-for-alan"] and 1 <= result["table"] <= 20
    assert [e.event_type.value for e in history.events].count("TimerStarted") == 1
    await Replayer(workflows=[ex.DinnerParty]).replay_workflow(history)  # same commands on replay


async def test_concepts_retries() -> None:
    ex = load_example("concepts/retries.py")
    async with await WorkflowEnvironment.start_local() as env:
        async with Worker(
            env.client,
            task_queue="shop",
            workflows=[ex.Checkout],
            activities=[ex.charge_card],
            poll_wait=POLL,
        ):
            assert (
                await env.client.execute_workflow(ex.Checkout.run, 30, id="checkout-1", task_queue="shop")
                == "charged 30 on attempt 3"
            )
            events = (await env.client.get_workflow_handle("checkout-1").fetch_history()).events
            kinds = [e.event_type.value for e in events]
            # three attempts, one set of events: the retries were durable timers, not history
            assert kinds.count("ActivityTaskScheduled") == kinds.count("ActivityTaskStarted") == 1
            assert next(e for e in events if e.event_type.value == "ActivityTaskStarted").attempt == 3

            with pytest.raises(WorkflowFailureError) as failed:
                await env.client.execute_workflow(ex.Checkout.run, 5000, id="checkout-2", task_queue="shop")
            assert isinstance(failed.value.cause, ActivityError)
            assert (
                isinstance(failed.value.cause.cause, ApplicationError)
                and failed.value.cause.cause.type == "CardDeclined"
            )
            events = (await env.client.get_workflow_handle("checkout-2").fetch_history()).events
            assert next(e for e in events if e.event_type.value == "ActivityTaskStarted").attempt == 1


async def test_concepts_durable_timer() -> None:
    ex = load_example("concepts/timers.py")
    async with await WorkflowEnvironment.start_time_skipping() as env:
        async with Worker(env.client, task_queue="expenses", workflows=[ex.ExpenseApproval], poll_wait=POLL):
            escalated = await env.client.execute_workflow(
                ex.ExpenseApproval.run, "exp-1", id="exp-1", task_queue="expenses"
            )
            assert escalated == "exp-1: escalated after 7 days without a decision"
            handle = await env.client.start_workflow(
                ex.ExpenseApproval.run,
                "exp-2",
                id="exp-2",
                task_queue="expenses",
                start_signal="decide",
                start_signal_args=["approved"],
            )
            assert await handle.result() == "exp-2: approved"


async def test_concepts_idempotent_activity() -> None:
    ex = load_example("concepts/idempotency.py")
    from sagas.testing import ActivityEnvironment

    activity_env = ActivityEnvironment()
    first = await activity_env.run(ex.charge_once, 30)
    again = await activity_env.run(ex.charge_once, 30)  # a redelivery: same workflow, run and activity id
    assert first == again and len(ex.CHARGES) == 1


# -- how-to guides ---------------------------------------------------------------------------------


async def test_json_service_joins_the_saga(monkeypatch: pytest.MonkeyPatch) -> None:
    service = load_example("json_service/payment_service.py")
    saga = load_example("json_service/order_saga.py")
    assert "sagas" not in {
        m.split(".")[0] for m in service.__dict__ if isinstance(getattr(service, m), ModuleType)
    }
    service.CHARGES.clear()
    async with await WorkflowEnvironment.start_local() as env:
        assert env.server is not None
        stop = asyncio.Event()
        serving = asyncio.create_task(service.serve(f"http://{env.server.target}", stop))
        try:
            monkeypatch.setenv("SAGAS_ADDRESS", env.server.target)
            await saga.main()  # the page's order: completes
            assert await env.client.get_workflow_handle("order-1").result() == {
                "charge": {"charge_id": "ch-1"},
                "parcel": "parcel-o-1",
            }
            async with Worker(
                env.client,
                task_queue="orders",
                workflows=[saga.OrderSaga],
                activities=[saga.reserve_stock, saga.release_stock, saga.ship],
                poll_wait=POLL,
            ):
                with pytest.raises(WorkflowFailureError):  # shipping fails: the JSON service refunds
                    await env.client.execute_workflow(
                        saga.OrderSaga.run, saga.Order("o-2", 50, ""), id="order-2", task_queue="orders"
                    )
                assert service.CHARGES["order-2"]["refunded"] is True
                assert await activity_types(env.client.get_workflow_handle("order-2")) == [
                    "reserve_stock",
                    "charge_card",
                    "ship",
                    "refund_card",
                    "release_stock",
                ]

                with pytest.raises(WorkflowFailureError) as declined:  # the service's failure reply
                    await env.client.execute_workflow(
                        saga.OrderSaga.run,
                        saga.Order("o-3", 5000, "1 Main St"),
                        id="order-3",
                        task_queue="orders",
                    )
                cause = declined.value.cause.cause
                assert (
                    isinstance(cause, ApplicationError)
                    and cause.type == "CardDeclined"
                    and cause.non_retryable
                )
                assert "order-3" not in service.CHARGES
        finally:
            stop.set()
            await serving


async def test_serve_script_starts_a_server(monkeypatch: pytest.MonkeyPatch) -> None:
    ex = load_example("serve.py")
    port = free_port()
    monkeypatch.setenv("SAGAS_STORE_URL", "memory://")
    monkeypatch.setenv("SAGAS_PORT", str(port))
    stop = asyncio.Event()
    serving = asyncio.create_task(ex.serve(stop))
    try:
        async with httpx.AsyncClient() as http:
            for _ in range(200):
                if serving.done():
                    serving.result()
                try:
                    cluster = (await http.get(f"http://127.0.0.1:{port}/api/v1/cluster")).json()
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
        assert cluster["worker_broker_url"] == f"local://127.0.0.1:{port}"
    finally:
        stop.set()
        await serving


async def test_versioning_with_patched() -> None:
    v1 = load_example("versioning/order_v1.py")
    v2 = load_example("versioning/order_v2.py")
    v2_unsafe = load_example("versioning/order_v2_unsafe.py")
    v3 = load_example("versioning/order_v3.py")
    acts = load_example("versioning/order_activities.py").ACTIVITIES
    async with await WorkflowEnvironment.start_local() as env:
        client = env.client
        async with Worker(client, task_queue="orders", workflows=[v1.Order], activities=acts, poll_wait=POLL):
            old = await client.start_workflow("Order", "order-old", id="order-old", task_queue="orders")
            for _ in range(500):  # until it passed the charge and waits for the packing signal
                kinds = [e.event_type.value for e in (await old.fetch_history()).events]
                if "ActivityTaskCompleted" in kinds and kinds[-1] == "WorkflowTaskCompleted":
                    break
                await asyncio.sleep(0.02)
            else:
                raise AssertionError(f"order-old never waited for the signal: {kinds}")
        in_flight = await old.fetch_history()
        # deploy v2: the in-flight run keeps its old path, a new run takes the new one
        async with Worker(client, task_queue="orders", workflows=[v2.Order], activities=acts, poll_wait=POLL):
            new = await client.start_workflow("Order", "order-new", id="order-new", task_queue="orders")
            for handle in (old, new):
                await handle.signal("mark_packed")
            assert await old.result() == ["charged order-old", "shipped order-old"]
            assert await new.result() == ["charged order-new", "order-new looks fine", "shipped order-new"]
            finished_new = await new.fetch_history()
    # what replay in CI says about each version
    await Replayer(workflows=[v2.Order]).replay_workflow(in_flight)
    with pytest.raises(NondeterminismError):
        await Replayer(workflows=[v2_unsafe.Order]).replay_workflow(in_flight)
    await Replayer(workflows=[v3.Order]).replay_workflow(finished_new)  # v3 replays v2 runs ...
    with pytest.raises(NondeterminismError):
        await Replayer(workflows=[v3.Order]).replay_workflow(in_flight)  # ... but not v1 runs


async def test_testing_guide_tests_pass() -> None:
    module = load_example("testing/test_reminder.py")
    tests = [fn for name, fn in vars(module).items() if name.startswith("test_")]
    assert len(tests) == 3
    for test in tests:
        await test()


async def test_secure_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    import yaml

    from orchestrator.frontend.auth import claim_mapper_from_config
    from orchestrator.server import DevServer
    from sagas.client import Client

    ex = load_example("secure/payments_worker.py")
    mapper = claim_mapper_from_config(yaml.safe_load((EXAMPLES / "secure" / "auth.yaml").read_text()))
    async with DevServer(store_url="memory://", port=0, claim_mapper=mapper, auth_required=True) as server:
        base = f"http://{server.target}"
        async with httpx.AsyncClient(base_url=base) as http:
            body = {"name": "payments", "retention_days": 30, "rate_limit_rps": 100}
            anonymous = await http.post("/api/v1/namespaces", json=body)
            assert anonymous.status_code == 401 and anonymous.json()["code"] == "unauthenticated"
            team = await http.post(
                "/api/v1/namespaces", json=body, headers={"Authorization": "Bearer payments-key-change-me"}
            )
            assert team.status_code == 403 and team.json()["code"] == "permission_denied"
            admin = await http.post(
                "/api/v1/namespaces", json=body, headers={"Authorization": "Bearer admin-key-change-me"}
            )
            assert admin.status_code == 201, admin.text

        monkeypatch.setenv("SAGAS_ADDRESS", server.target)
        monkeypatch.setenv("SAGAS_API_KEY", "payments-key-change-me")
        await ex.main()

        outsider = await Client.connect(server.target, namespace="default", api_key="payments-key-change-me")
        try:
            with pytest.raises(RPCError) as refused:
                await outsider.count_workflows()
            assert refused.value.code == "permission_denied"
        finally:
            await outsider.close()


# -- troubleshooting, CLI, metrics, HTTP API ---------------------------------------------------------


def _server_error_codes() -> dict[str, int]:
    import orchestrator.frontend.app  # noqa: F401  (defines error subclasses of its own, e.g. malformed_json)
    from orchestrator.errors import ERRORS_BY_CODE, OrchestratorError

    codes = {code: cls.http_status for code, cls in ERRORS_BY_CODE.items()}
    todo = [OrchestratorError]
    while todo:
        cls = todo.pop()
        codes.setdefault(cls.code, cls.http_status)
        todo.extend(cls.__subclasses__())
    return codes


def test_every_error_code_has_a_troubleshooting_section() -> None:
    text = (DOCS / "errors.md").read_text()
    sections = dict(re.findall(r"^## `([a-z_]+)`\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S))
    missing = []
    for code, status in sorted(_server_error_codes().items()):
        if code not in sections:
            missing.append(code)
        else:
            assert f"HTTP {status}" in sections[code], (
                f"the section of {code} does not say it is HTTP {status}"
            )
    assert not missing, f"error codes without a section '## `code`' in docs/errors.md: {missing}"


def _documented_command_lines() -> list[tuple[str, str]]:
    """``(where, command line)`` for every ``sagas ...`` invocation in code blocks and inline code."""
    found = []
    for page in [*pages(), README]:
        text = page.read_text()
        for line_no, info, body, _ in fenced_blocks(text):
            if info.split(" ")[0] not in ("", "sh", "bash", "shell", "console"):
                continue  # code in other languages, and ```text: output, not commands
            for line in body.replace("\\\n", " ").splitlines():
                for m in re.finditer(
                    r"(?:^|&&|;|\|)\s*(?:\$ )?(?:[A-Z_]+=\S+ )*(sagas (?:[a-z][\w-]*)(?: [^|&;#]*)?)", line
                ):
                    found.append((f"{page.relative_to(ROOT)}:{line_no}", m.group(1).strip()))
        for m in re.finditer(r"`(sagas [a-z][\w-]*(?: [^`]*)?)`", text):
            found.append((f"{page.relative_to(ROOT)} (inline)", m.group(1).strip()))
    return found


def test_every_documented_cli_command_exists() -> None:
    import typer

    from sagas.cli.main import app

    def is_group(command: Any) -> bool:  # typer may bring its own copy of click: duck-type
        return hasattr(command, "list_commands")

    root = typer.main.get_command(app)
    problems = []
    checked = 0
    for where, line in _documented_command_lines():
        words = shlex.split(line.replace("...", ""), comments=True)[1:]
        command: Any = root
        path = ["sagas"]
        while is_group(command) and words and not words[0].startswith("-"):
            sub = command.get_command(command.context_class(command), words[0])
            if sub is None:
                break
            command = sub
            path.append(words.pop(0))
        if is_group(command):
            if words and not words[0].startswith("-") and words[0] not in ("NAME", "COMMAND"):
                problems.append(f"{where}: `{line}`: no command {' '.join(path)} {words[0]}")
            continue
        options = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}
        for word in words:
            name = word.split("=", 1)[0]
            if name.startswith("-") and name not in options and name != "--help":
                problems.append(f"{where}: `{line}`: {' '.join(path)} has no option {name}")
        checked += 1
    assert checked > 20
    assert not problems, "\n".join(problems)


def test_documented_cli_commands_answer_help() -> None:
    from typer.testing import CliRunner

    from sagas.cli.main import app

    runner = CliRunner()
    seen = set()
    for _, line in _documented_command_lines():
        words = shlex.split(line.replace("...", ""), comments=True)[1:]
        path = tuple(w for w in words[:2] if not w.startswith("-") and w.replace("-", "").isalpha())
        if path and path not in seen:
            seen.add(path)
            result = runner.invoke(app, [*path, "--help"])
            assert result.exit_code == 0, f"sagas {' '.join(path)} --help: {result.output}"


def _exported_metric_names() -> set[str]:
    from prometheus_client import REGISTRY

    import orchestrator.frontend.ui  # noqa: F401
    import orchestrator.metrics  # noqa: F401
    import orchestrator.persistence._instrumented  # noqa: F401

    names = set()
    for family in REGISTRY.collect():
        if family.name.startswith("sagas_"):
            suffix = "_total" if family.type == "counter" else ""
            names.add(family.name + suffix)
    return names


def test_every_metric_is_on_the_operations_page() -> None:
    text = (DOCS / "operations.md").read_text()
    missing = sorted(n for n in _exported_metric_names() if f"`{n}`" not in text)
    assert not missing, f"metrics exported on /metrics but not listed in docs/operations.md: {missing}"


def test_http_api_page_is_generated_from_todays_openapi() -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import gen_openapi_docs
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    expected = gen_openapi_docs.render(asyncio.run(gen_openapi_docs.fetch_openapi()))
    assert (DOCS / "http-api.md").read_text() == expected, (
        "docs/http-api.md is out of date: run `python scripts/gen_openapi_docs.py`"
    )


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs", reason="mkdocs is not installed (pip install -e '.[docs]')")
    pytest.importorskip("material", reason="mkdocs-material is not installed")
    pytest.importorskip("mkdocstrings_handlers.python", reason="mkdocstrings[python] is not installed")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "site" / "tutorial" / "index.html").exists()
