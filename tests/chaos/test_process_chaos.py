"""Sagas against real processes while a seeded random schedule kills, pauses and lies to them.

The orchestrator (``sagas server start-dev`` on a SQLite file), the three
booking services and the SDK worker each run as their own process. While 200
trip sagas run (a third of them to Atlantis, so they compensate), the
schedule of :data:`tests.chaos.campaign.SHORT` SIGKILLs and restarts the
orchestrator, the worker and services, SIGSTOPs the worker past its
workflow-task timeout and services past their activities' start-to-close
timeout, and the services fail 20% of their requests. After the last restart
it poisons queues and publishes duplicate and out-of-order replies for tasks
that were already closed. Once everything settled, :mod:`tests.chaos.invariants`
checks what the histories, the ledgers and the DLQ say.

The seed is printed; ``CHAOS_SEED=<seed>`` reruns the same schedule.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.campaign import FAULT_KINDS, LONG, SERVICE_PAUSE, SHORT, plan, run_campaign, seed_from_env
from tests.chaos.invariants import assert_no_violations

SEED = 20260517


def test_a_plan_is_reproducible_and_never_overlaps_faults_on_one_process() -> None:
    for campaign in (SHORT, LONG):
        faults = plan(campaign, SEED)
        assert faults == plan(campaign, SEED)
        assert faults != plan(campaign, SEED + 1)
        assert sum(1 for f in faults) == sum(campaign.faults.values())
        assert {f.kind for f in faults} == set(FAULT_KINDS)
        window = campaign.sagas * campaign.interval
        last_kill = max(f.at for f in faults if f.kind == "kill orchestrator")
        for f in faults:
            assert 0 < f.at <= window
            if f.kind in ("poison", "stale replies"):
                assert f.at > last_kill
        by_target: dict[str, list[float]] = {}
        for f in faults:
            if f.target:
                by_target.setdefault(f.target, []).append(f.at)
        for target, times in by_target.items():
            gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
            assert all(g >= 4.0 for g in gaps), (target, gaps)  # a restart slot at least


def test_a_plan_that_cannot_fit_says_so() -> None:
    crowded = SHORT.__class__(sagas=10, interval=0.1, faults={"pause service": 50}, settle_timeout=10)
    with pytest.raises(ValueError, match="no room for .*'pause service'"):
        plan(crowded, SEED)
    assert SERVICE_PAUSE > 10  # so the crowding above is real


@pytest.mark.chaos
@pytest.mark.timeout(420)
async def test_sagas_finish_or_compensate_under_a_random_fault_schedule(tmp_path: Path) -> None:
    seed = seed_from_env(SEED)
    print(f"chaos seed {seed}: rerun with CHAOS_SEED={seed}")
    result = await run_campaign(tmp_path, SHORT, seed)
    print(result.report.split("\n---", 1)[0])  # the timeline, shown with the test's output
    assert_no_violations(result.violations, context=result.report)
    assert result.faults == {k: n for k, n in SHORT.faults.items() if n}, result.faults  # every fault ran
    assert result.evidence["workflow task timeouts"] >= 1, result.evidence  # worker kills and pauses
    assert result.evidence["activities retried"] >= 1 and result.evidence["compensations completed"] >= 1
    assert result.statuses["Completed"] >= SHORT.sagas // 2, result.statuses  # the load really ran
