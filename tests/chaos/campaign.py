"""Seeded random fault campaigns over a trip-saga load: the CI run and the long run share this.

A :class:`Campaign` says how many sagas to start, at what pace, and how many
faults of each kind to inject. :func:`plan` turns it and a seed into a fault
schedule (the same seed always gives the same schedule, and the seed is
printed, so a failure can be replayed with ``CHAOS_SEED=<seed>``).
:func:`run_campaign` starts the orchestrator (``sagas server start-dev`` on a
SQLite file), the three booking services and the SDK worker as processes,
runs the load and the schedule side by side, waits for every saga to settle,
and runs the invariant checker of :mod:`tests.chaos.invariants`.

Fault kinds (:data:`FAULT_KINDS`):

* ``kill orchestrator``: SIGKILL the dev server and start it again on the same file;
* ``kill worker`` / ``kill service``: SIGKILL the SDK worker or one booking
  service and restart it like a supervisor would;
* ``pause worker``: SIGSTOP the worker past its workflow-task timeout, then SIGCONT;
* ``pause service``: SIGSTOP a service past its activities' start-to-close timeout;
* ``poison``: garbage and forged messages to a service queue and the completions queue;
* ``stale replies``: duplicate, late and out-of-order replies for tasks already closed.

Faults on one process never overlap (a process is killed, paused or restarted
by one fault at a time); poison and stale replies run after the last
orchestrator restart, because the built-in broker's dead-letter queue and the
stale-reply counter live in the running server's memory.

The long run (5,000 sagas, hundreds of faults) writes its figures to
``bench/results/chaos_long.json``::

    .venv/bin/python -m tests.chaos.campaign --long
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sagas.client import Client
from services_demo.trip_booking.services import KINDS
from tests.chaos.harness import Step, TripSystem, run_schedule, saga_specs
from tests.chaos.invariants import check, describe_unsettled, fault_evidence, snapshot, wait_settled
from tests.e2e.conftest import ServerProcess, free_port

SECRET = "chaos-token-secret"
TASK_TIMEOUT = 3.0
"""Workflow-task timeout of the sagas (seconds): a worker pause outlasts it."""
STEP_TIMEOUT = 10.0
"""``TripBooking``'s start-to-close timeout: a service pause outlasts it."""
SERVICE_PAUSE = STEP_TIMEOUT + 4.0
WORKER_PAUSE = TASK_TIMEOUT + 1.5
RESTART_SLOT = 4.0
"""Seconds a kill + restart keeps its process busy in the plan (no other fault on it meanwhile)."""

FAULT_KINDS = (
    "kill orchestrator",
    "kill worker",
    "kill service",
    "pause worker",
    "pause service",
    "poison",
    "stale replies",
)
LATE_KINDS = frozenset({"poison", "stale replies"})
"""Faults that run after the last orchestrator restart (they read the server's memory)."""


@dataclass(frozen=True)
class Campaign:
    """A saga load and how many faults of each kind to inject while it runs."""

    sagas: int
    interval: float
    """Seconds between two saga starts (the load's pace)."""
    faults: Mapping[str, int]
    settle_timeout: float
    stale_sample: int = 200
    """How many sagas get stale replies injected after settling."""


SHORT = Campaign(
    sagas=200,
    interval=0.15,
    faults={"kill orchestrator": 2, "kill worker": 2, "kill service": 3, "pause worker": 2,
            "pause service": 2, "poison": 1, "stale replies": 2},
    settle_timeout=120.0,
)  # fmt: skip
"""The schedule CI runs: 200 sagas over ~30 s, a few faults of each kind."""

LONG = Campaign(
    sagas=5000,
    interval=0.2,
    faults={"kill orchestrator": 30, "kill worker": 30, "kill service": 90, "pause worker": 25,
            "pause service": 40, "poison": 10, "stale replies": 10},
    settle_timeout=1800.0,
)  # fmt: skip
"""The long run: 5,000 sagas over ~1,000 s with 235 faults (at 0.08 s a start, a 2-core machine fell
behind: about 4 sagas/s settle under this fault rate, and the backlog grew past the settle timeout)."""


@dataclass(frozen=True)
class PlannedFault:
    at: float
    kind: str
    target: str
    """``orchestrator``, ``worker`` or a service kind; empty for poison and stale replies."""

    @property
    def name(self) -> str:
        return self.kind if self.kind.endswith(self.target) else f"{self.kind} {self.target}"


def plan(campaign: Campaign, seed: int) -> list[PlannedFault]:
    """A fault schedule for ``campaign``: random times in the load's window, no two faults on one
    process at once, poison and stale replies in the last tenth (after the last orchestrator kill).

    Each process's faults are shuffled and laid end to end with random gaps (cut points drawn
    uniformly in its free time), so any campaign whose faults fit in the window gets a plan.
    """
    rng = random.Random(seed)
    load_window = campaign.sagas * campaign.interval
    per_target: dict[str, list[tuple[str, float]]] = {}
    out: list[PlannedFault] = []
    for kind in FAULT_KINDS:
        for _ in range(campaign.faults.get(kind, 0)):
            if kind in LATE_KINDS:
                out.append(PlannedFault(rng.uniform(0.9, 1.0) * load_window, kind, ""))
                continue
            verb, what = kind.split(" ", 1)
            length = {"kill": RESTART_SLOT, "pause": SERVICE_PAUSE if what == "service" else WORKER_PAUSE}[verb]
            if what == "service":  # the least busy service so far (ties broken at random)
                load = {k: sum(n for _, n in per_target.get(k, [])) for k in KINDS}
                target = min(rng.sample(list(KINDS), len(KINDS)), key=load.__getitem__)
            else:
                target = what
            per_target.setdefault(target, []).append((kind, length + 0.5))
    start, end = 0.5, 0.85 * load_window
    for target in sorted(per_target):
        slots = per_target[target]
        rng.shuffle(slots)
        free = (end - start) - sum(length for _, length in slots)
        if free < 0:
            kinds = Counter(kind for kind, _ in slots)
            raise ValueError(
                f"no room for {dict(kinds)} on {target!r} in a {load_window:.0f} s load "
                f"({-free:.0f} s short)"
            )
        cuts = sorted(rng.uniform(0, free) for _ in slots)
        at, used = start, 0.0
        for (kind, length), cut in zip(slots, cuts, strict=True):
            at += cut - used
            used = cut
            out.append(PlannedFault(at, kind, target))
            at += length
    return sorted(out, key=lambda f: f.at)


@dataclass
class CampaignResult:
    """What a campaign did and what the checker found."""

    seed: int
    sagas: int
    faults: Counter[str]
    """Faults applied, by kind."""
    statuses: Counter[str]
    evidence: Counter[str]
    violations: list[str]
    seconds: float
    report: str = ""
    """The fault timeline, what did not settle and the processes' log tails (for failures)."""
    stale_replies: int = 0
    poisoned: int = 0
    details: dict[str, object] = field(default_factory=dict)

    def figures(self) -> dict[str, object]:
        return {
            "seed": self.seed,
            "sagas": self.sagas,
            "faults": dict(sorted(self.faults.items())),
            "faults_total": sum(self.faults.values()),
            "stale_replies_injected": self.stale_replies,
            "poison_messages": self.poisoned,
            "outcomes": dict(sorted(self.statuses.items())),
            "evidence_in_histories": dict(sorted(self.evidence.items())),
            "violations": len(self.violations),
            "violation_samples": self.violations[:20],
            "seconds": round(self.seconds, 1),
            **self.details,
        }


async def _wait_for_stale_drops(system: TripSystem, baseline: float, published: int, timeout: float) -> str | None:
    deadline = time.monotonic() + timeout
    while (seen := await system.stale_rejections()) < baseline + published:
        if time.monotonic() > deadline:
            return f"only {seen - baseline:.0f} of {published} injected stale replies were counted as dropped"
        await asyncio.sleep(0.1)
    return None


async def run_campaign(workdir: Path, campaign: Campaign, seed: int) -> CampaignResult:
    """Run ``campaign`` with the schedule of ``seed`` against real processes; check the invariants."""
    os.environ["SAGAS_TOKEN_SECRET"] = SECRET  # the server signs task tokens with it: we forge stale ones
    began = time.monotonic()
    server = ServerProcess(workdir / "history.db", free_port(), workdir)
    await asyncio.to_thread(server.start)
    system = TripSystem(workdir, f"127.0.0.1:{server.port}", seed=seed, secret=SECRET, task_timeout=TASK_TIMEOUT)
    timeline = system.timeline
    timeline.note(f"seed {seed}: rerun this schedule with CHAOS_SEED={seed}")
    faults = plan(campaign, seed)
    applied: Counter[str] = Counter()
    problems: list[str] = []
    client: Client | None = None
    last_kill = max((f.at for f in faults if f.kind == "kill orchestrator"), default=None)
    last_restart_done = asyncio.Event()
    if last_kill is None:
        last_restart_done.set()
    try:
        await system.start()
        client = await Client.connect(system.target)
        specs = saga_specs(campaign.sagas, seed)

        async def restart_server(fault: PlannedFault) -> None:
            await asyncio.to_thread(server.kill9)
            await asyncio.to_thread(server.start)
            if fault.at == last_kill:
                last_restart_done.set()

        async def pause(fault: PlannedFault) -> None:
            proc = system.worker if fault.target == "worker" else system.services[fault.target]
            proc.pause()
            await asyncio.sleep(WORKER_PAUSE if fault.target == "worker" else SERVICE_PAUSE)  # the fault itself
            proc.resume()

        async def poison(_: PlannedFault) -> None:
            await last_restart_done.wait()
            await system.poison()

        async def stale(_: PlannedFault) -> None:
            await last_restart_done.wait()
            baseline = await system.stale_rejections()
            published = await system.inject_stale_replies(random.Random(seed).sample(sorted(system.started),
                                                                                   min(15, len(system.started))))
            if problem := await _wait_for_stale_drops(system, baseline, published, 60.0):
                problems.append(f"mid-flight: {problem}")

        actions: dict[str, Callable[[PlannedFault], Awaitable[None]]] = {
            "kill orchestrator": restart_server,
            "kill worker": lambda f: system.restart("worker"),
            "kill service": lambda f: system.restart(f.target),
            "pause worker": pause,
            "pause service": pause,
            "poison": poison,
            "stale replies": stale,
        }

        def step(fault: PlannedFault) -> Step:
            async def act() -> None:
                await actions[fault.kind](fault)
                applied[fault.kind] += 1

            return Step(fault.at, fault.name, act)

        load = asyncio.create_task(system.start_sagas(client, specs, interval=campaign.interval))
        await run_schedule([step(f) for f in faults], timeline)
        await load

        statuses = await wait_settled(system.base_url, [s.workflow_id for s in specs], timeout=campaign.settle_timeout)
        counts = Counter(statuses.values())
        timeline.note(f"settled: {dict(counts)}")

        baseline = await system.stale_rejections()
        sample = [s.workflow_id for s in specs[: campaign.stale_sample]]
        published = await system.inject_stale_replies(sample)
        if problem := await _wait_for_stale_drops(system, baseline, published, 120.0):
            problems.append(f"after settling: {problem}")
        problems += [f"a stale reply POSTed to /tasks/complete got {a} (want 409 stale_task)"
                     for a in system.http_stale_answers if a != "409 stale_task"]  # fmt: skip

        timeline.note("checking invariants")
        snap = await snapshot(system.base_url, specs, workdir)
        violations = await check(snap, specs, poisoned=system.poisoned, expect_poison=applied["poison"] > 0)
        violations += problems + system.crashed()
        if server.proc is None or server.proc.poll() is not None:
            violations.append("the orchestrator died on its own")
        evidence = fault_evidence(snap)
        timeline.note(f"checked: {len(violations)} violation(s); traces of the faults: {dict(evidence)}")
        unsettled = await describe_unsettled(system.base_url, snap) if violations else ""
        report = (f"{timeline}\n{unsettled}\n{system.logs()}\n--- server.log ---\n"
                  f"{(workdir / 'server.log').read_text(errors='replace')[-3000:]}")  # fmt: skip
        return CampaignResult(
            seed=seed, sagas=campaign.sagas, faults=applied, statuses=counts, evidence=evidence,
            violations=violations, seconds=time.monotonic() - began, report=report,
            stale_replies=system.stale_replies, poisoned=len(system.poisoned),
        )  # fmt: skip
    finally:
        if client is not None:
            await client.close()
        await system.stop()
        await asyncio.to_thread(server.stop)


def seed_from_env(default: int) -> int:
    """``CHAOS_SEED`` when set (to rerun a printed schedule), else ``default``."""
    return int(os.environ.get("CHAOS_SEED", default))


def _code_version() -> str:
    """The commit the campaign ran, and whether the tree had changes (``git`` output, or ``unknown``)."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "orchestrator", "brokers", "sagas", "tests"],
                               cwd=root, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit} ({'uncommitted changes' if dirty else 'clean tree'})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--long", action="store_true", help="5,000 sagas with hundreds of faults")
    parser.add_argument("--seed", type=int, default=None, help="default: CHAOS_SEED or the time")
    parser.add_argument("--out", type=Path, default=None, help="results JSON (default bench/results/chaos_*.json)")
    args = parser.parse_args(argv)
    campaign = LONG if args.long else SHORT
    seed = args.seed if args.seed is not None else seed_from_env(int(time.time()))
    out = args.out or Path(__file__).resolve().parents[2] / "bench" / "results" / (
        "chaos_long.json" if args.long else "chaos_short.json"
    )
    with tempfile.TemporaryDirectory(prefix="chaos-") as tmp:
        result = asyncio.run(run_campaign(Path(tmp), campaign, seed))
    figures = {
        "what": "trip-booking sagas against real processes under a seeded random fault schedule "
        "(tests/chaos/campaign.py); violations must be 0",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} cores",
        "code": _code_version(),
        **result.figures(),
    }
    out.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    if result.violations:
        print(result.report, file=sys.stderr)
    return 1 if result.violations else 0


if __name__ == "__main__":
    raise SystemExit(main())
