"""Every public name of the SDK has a docstring with an example (issue 15).

What is checked:

* **Public modules**: ``sagas`` and every module found by walking the package with
  :mod:`pkgutil`, except private ones (any ``_x`` component) and the CLI
  (``sagas.cli.*``, the ``sagas`` command's internals, not an importable API) unless
  such a module declares ``__all__``. Each has a module docstring.
* **Public names**: the names in the module's ``__all__``; a module without ``__all__``
  is taken to export the non-underscore classes, functions and constants *defined in
  it* (not the ones it imports, nor submodules, which are checked as modules). Each
  has a docstring that contains an example, either

  - a literal block introduced by a line that starts with ``Example`` and ends with
    ``::`` (``Example::``, ``Example (inside a workflow)::``), followed by an indented
    block -- the form used for code that needs a server or a running workflow; or
  - a doctest: at least one ``>>>`` line that is not just a comment. Doctests run
    here too (:func:`test_doctests_pass`), so they must not need a server.

  The docs hook ``docs/hooks/rst_docstrings.py`` turns both into code blocks for
  ``mkdocs build --strict``, which runs ``docstring_style: sphinx``.
* Which docstring: a class, function or module must have its **own** ``__doc__``
  (:func:`inspect.getdoc` would inherit a base class's docstring, and a dataclass
  without one gets a generated ``Name(field: type, ...)`` signature, which is not
  documentation). Enums are classes: the class docstring documents the members. A
  constant, a type alias or an object such as ``activity.logger`` cannot carry a
  ``__doc__`` of its own, so its *attribute docstring* counts -- the string literal
  right after its assignment in the module that defines it (the convention that
  mkdocstrings and Sphinx render), found by following ``from ... import`` to the
  defining module.
* **Methods**: every public method and property of every public class (defined in
  ``sagas``; inherited from the standard library or pydantic is not ours to document)
  has a docstring -- its own or, for an override, the one of the ``sagas`` method it
  overrides. No example is required there.

Every missing docstring or example is listed in one failure message.
"""

from __future__ import annotations

import ast
import dataclasses
import doctest
import importlib
import inspect
import pkgutil
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import sagas

_EXAMPLE_LINE = re.compile(r"^(\s*)Examples?\b.*::\s*$")


def public_modules() -> list[ModuleType]:
    modules = [sagas]
    for found in pkgutil.walk_packages(sagas.__path__, "sagas."):
        parts = found.name.split(".")
        if any(part.startswith("_") for part in parts):
            continue
        module = importlib.import_module(found.name)
        if parts[1] == "cli" and not hasattr(module, "__all__"):
            continue
        modules.append(module)
    return modules


def exported_names(module: ModuleType) -> list[str]:
    if hasattr(module, "__all__"):
        return list(module.__all__)
    names = []
    for name, value in vars(module).items():
        if name.startswith("_") or inspect.ismodule(value):
            continue
        if getattr(value, "__module__", module.__name__) == module.__name__ or name in _assigned_names(
            module
        ):
            names.append(name)
    return names


def _tree(module: ModuleType) -> ast.Module:
    return ast.parse(Path(inspect.getfile(module)).read_text())


def _assigned_names(module: ModuleType) -> set[str]:
    names: set[str] = set()
    for node in _tree(module).body:
        if isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def attribute_docstring(module: ModuleType, name: str, depth: int = 0) -> str | None:
    """The string literal after ``name = ...`` in the module that defines ``name`` (following imports)."""
    body = _tree(module).body
    for i, node in enumerate(body):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, ast.AnnAssign):
            targets = [node.target]
        elif type(node).__name__ == "TypeAlias":  # ``type X = ...`` (Python 3.12+)
            targets = [node.name]  # type: ignore[attr-defined]
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            after = body[i + 1] if i + 1 < len(body) else None
            if (
                isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                return inspect.cleandoc(after.value.value)
            return None
    if depth > 5:
        return None
    for node in body:
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if (alias.asname or alias.name) == name:
                    source = importlib.import_module(
                        "." * node.level + (node.module or ""), module.__package__ if node.level else None
                    )
                    return attribute_docstring(source, alias.name, depth + 1)
    return None


def own_docstring(obj: Any) -> str | None:
    """The object's own docstring (not a base class's, not a dataclass's generated signature)."""
    doc = obj.__dict__.get("__doc__") if inspect.isclass(obj) else getattr(obj, "__doc__", None)
    if not isinstance(doc, str) or not doc.strip():
        return None
    if inspect.isclass(obj) and dataclasses.is_dataclass(obj) and doc.startswith(f"{obj.__name__}("):
        return None
    return inspect.cleandoc(doc)


def docstring_of(module: ModuleType, name: str) -> str | None:
    obj = getattr(module, name)
    if inspect.ismodule(obj) or inspect.isclass(obj) or inspect.isroutine(obj):
        return own_docstring(obj)
    return attribute_docstring(module, name)


def has_example(doc: str) -> bool:
    """An ``Example...::`` line followed by an indented block, or a ``>>>`` line that is not only a comment."""
    lines = doc.splitlines()
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith(">>>") and stripped[3:].strip() and not stripped[3:].strip().startswith("#"):
            return True
        match = _EXAMPLE_LINE.match(line)
        if match:
            rest = [x for x in lines[i + 1 :] if x.strip()]
            if rest and len(rest[0]) - len(rest[0].lstrip()) > len(match.group(1)):
                return True
    return False


def public_classes() -> dict[str, type]:
    classes: dict[str, type] = {}
    for module in public_modules():
        for name in exported_names(module):
            obj = getattr(module, name)
            if inspect.isclass(obj) and obj.__module__.startswith("sagas"):
                classes.setdefault(f"{obj.__module__}.{obj.__qualname__}", obj)
    return classes


# -- tests -----------------------------------------------------------------------------------------


def test_public_modules_are_found() -> None:
    found = {m.__name__ for m in public_modules()}
    expected = {
        "sagas", "sagas.activity", "sagas.client", "sagas.worker", "sagas.workflow", "sagas.testing",
        "sagas.testing.replay", "sagas.exceptions", "sagas.common", "sagas.converter", "sagas.saga",
        "sagas.contrib", "sagas.contrib.encryption", "sagas.canary",
    }  # fmt: skip
    assert expected <= found, expected - found
    assert not any(name.startswith("sagas.cli") for name in found - expected)


def test_every_public_module_has_a_docstring() -> None:
    missing = [m.__name__ for m in public_modules() if not own_docstring(m)]
    assert not missing, f"modules without a docstring: {missing}"


def test_every_public_name_has_a_docstring_with_an_example() -> None:
    no_docstring: list[str] = []
    no_example: list[str] = []
    count = 0
    for module in public_modules():
        for name in exported_names(module):
            count += 1
            qualified = f"{module.__name__}.{name}"
            doc = docstring_of(module, name)
            if not doc:
                no_docstring.append(qualified)
            elif not has_example(doc):
                no_example.append(qualified)
    assert count > 150, f"only {count} public names found: is the package walk broken?"
    message = []
    if no_docstring:
        message.append(f"{len(no_docstring)} public names have no docstring:\n  " + "\n  ".join(no_docstring))
    if no_example:
        message.append(
            f"{len(no_example)} public names have a docstring without an example "
            "(an 'Example::' literal block or a '>>>' doctest):\n  " + "\n  ".join(no_example)
        )
    assert not message, "\n".join(message)


def test_every_public_method_has_a_docstring() -> None:
    missing: list[str] = []
    for qualified, cls in sorted(public_classes().items()):
        for klass in cls.__mro__:
            if not klass.__module__.startswith("sagas"):
                continue
            for name, value in vars(klass).items():
                if name.startswith("_") or name in vars(cls) and klass is not cls:
                    continue
                func = value.__func__ if isinstance(value, (staticmethod, classmethod)) else value
                if isinstance(func, property):
                    doc = func.__doc__
                elif inspect.isfunction(func):
                    doc = inspect.getdoc(getattr(cls, name))  # an override may keep its base's docstring
                else:
                    continue
                if not doc or not doc.strip():
                    missing.append(f"{qualified}.{name}")
    for required in ("Client", "WorkflowHandle", "Worker", "Saga", "Replayer", "WorkflowEnvironment"):
        assert any(q.rsplit(".", 1)[-1] == required for q in public_classes()), required
    missing = sorted(set(missing))
    assert not missing, f"{len(missing)} public methods have no docstring:\n  " + "\n  ".join(missing)


def _doctests() -> list[doctest.DocTest]:
    finder = doctest.DocTestFinder(exclude_empty=True)
    tests: dict[tuple[str, int | None], doctest.DocTest] = {}
    for module in public_modules():
        objects: list[tuple[str, Any]] = [(module.__name__, module)]
        objects += [(f"{module.__name__}.{n}", getattr(module, n)) for n in exported_names(module)]
        for qualified, obj in objects:
            if not (inspect.ismodule(obj) or inspect.isclass(obj) or inspect.isroutine(obj)):
                continue
            home = obj if inspect.ismodule(obj) else inspect.getmodule(obj) or module
            for test in finder.find(obj, qualified, module=home, globs=dict(vars(home))):
                if any(not e.source.lstrip().startswith("#") for e in test.examples):
                    tests.setdefault((test.filename or test.name, test.lineno), test)
    return sorted(tests.values(), key=lambda t: t.name)


@pytest.mark.parametrize("test", _doctests(), ids=lambda t: t.name)
def test_doctests_pass(test: doctest.DocTest) -> None:
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    out: list[str] = []
    result = runner.run(test, out=out.append)
    assert result.failed == 0, "".join(out)
