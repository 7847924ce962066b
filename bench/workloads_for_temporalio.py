"""``bench/workloads.py`` for temporalio, as a module that can be imported by name.

:func:`bench.workloads.build` loads ``workloads.py`` under this name without a file of its own;
that is enough unsandboxed. temporalio's default sandboxed runner (the ``temporal-sandbox``
system) re-imports each workflow's module by name inside the sandbox, so the name must resolve
to a file: this one runs the very same source under this module's name (``SDK`` = temporalio).
"""

from pathlib import Path

_SOURCE = Path(__file__).with_name("workloads.py")
exec(compile(_SOURCE.read_text(), str(_SOURCE), "exec"))  # noqa: S102 - one source for both SDKs
