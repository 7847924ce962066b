"""sagas: a durable-execution SDK for saga workflows, mirroring the temporalio Python SDK.

Code written for temporalio ports by changing the import root::

    from sagas import activity, workflow
    from sagas.client import Client
    from sagas.worker import Worker

Submodules: ``activity``, ``client``, ``common``, ``converter``,
``exceptions``, ``testing``, ``worker``, ``workflow``; plus :class:`Saga`,
our addition for compensation (see :mod:`sagas.saga`). Submodules are
imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from sagas.saga import Saga

__version__ = "0.1.0"
"""The version of the SDK.

Example::

    import sagas

    print(f"running sagas {sagas.__version__}")
"""

_SUBMODULES = frozenset(
    {"activity", "client", "common", "converter", "exceptions", "testing", "worker", "workflow"}
)

__all__ = [
    "Saga",
    "__version__",
    "activity",
    "client",
    "common",
    "converter",
    "exceptions",
    "testing",
    "worker",
    "workflow",
]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"sagas.{name}")
    raise AttributeError(f"module 'sagas' has no attribute {name!r}")
