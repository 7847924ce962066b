"""Read py-spy's raw (collapsed-stack) output and list where the time goes.

    python -m bench.profile bench/results/profile/one_activity-sagas-server.raw.txt

Each raw line is ``frame;frame;...;leaf count`` with frames like
``update (orchestrator/history/service.py:120)``. Printed: the hottest lines by
self time (the leaf frame), the hottest functions by inclusive time (on the
stack at all), and inclusive time per package.
"""

from __future__ import annotations

import re
import sys
from collections import Counter

_LINE = re.compile(r":\d+\)$")


def _function(frame: str) -> str:
    return _LINE.sub(")", frame)


def _package(frame: str) -> str:
    m = re.search(r"\((.*?)(?::\d+)?\)$", frame)
    path = m.group(1) if m else frame
    for marker in ("site-packages/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    parts = path.split("/")
    return "/".join(parts[:2]) if len(parts) > 2 else parts[0]


def parse(raw: str) -> list[tuple[list[str], int]]:
    stacks = []
    for line in raw.splitlines():
        head, _, count = line.rpartition(" ")
        if head and count.isdigit():
            stacks.append((head.split(";"), int(count)))
    return stacks


OUR_CODE = ("(orchestrator/", "(brokers/", "(sagas/")
"""Frames of this repository (py-spy prints paths relative to the working directory)."""


def summarize_raw(raw: str, top: int = 30) -> str:
    stacks = parse(raw)
    total = sum(c for _, c in stacks) or 1
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    ours: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    self_packages: Counter[str] = Counter()
    for frames, count in stacks:
        self_time[frames[-1]] += count
        self_packages[_package(frames[-1])] += count
        functions = {_function(f) for f in frames}
        for fn in functions:
            inclusive[fn] += count
            if any(marker in fn for marker in OUR_CODE) and "(sagas/cli/" not in fn:
                ours[fn] += count
        for pkg in {_package(f) for f in frames}:
            packages[pkg] += count

    def block(title: str, counter: Counter[str], n: int) -> list[str]:
        lines = [f"{title}", ""]
        lines += [f"{100 * c / total:6.1f}%  {name}" for name, c in counter.most_common(n)]
        return lines + [""]

    out = [f"samples: {total} (py-spy --gil: the thread holding the GIL, whatever it runs)", ""]
    out += block("self time, by line (leaf frame)", self_time, top)
    out += block("inclusive time, by function of this repository", ours, top)
    out += block("inclusive time, by function", inclusive, top)
    out += block("self time, by package/module (where the CPU actually goes)", self_packages, top)
    out += block("inclusive time, by package/module", packages, top)
    return "\n".join(out)


if __name__ == "__main__":
    for path in sys.argv[1:]:
        with open(path) as f:
            print(summarize_raw(f.read()))
