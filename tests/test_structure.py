"""The house rules, checked on the source: where tasks and threads are made, module sizes,
docstrings, no print in the library."""

from __future__ import annotations

import ast
import pathlib

import pytest

import asyncfeed

PACKAGE = pathlib.Path(asyncfeed.__file__).parent
MODULES = sorted(PACKAGE.rglob("*.py"))
MAX_LINES = 400

# Where tasks may be made: the run (the feed's process) and the edges that run in other
# processes with loops of their own.
TASK_MAKERS = {"run.py", "procs/worker.py"}
THREAD_MAKERS = {"bridge.py"}
# The command line talks to its user on stdout.
PRINTERS = {"__main__.py", "demo.py"}


def _rel(path: pathlib.Path) -> str:
    return path.relative_to(PACKAGE).as_posix()


def _calls(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute):
                names.add(func.attr)
            elif isinstance(func, ast.Name):
                names.add(func.id)
    return names


@pytest.mark.parametrize("path", MODULES, ids=_rel)
def test_module_rules(path: pathlib.Path) -> None:
    source = path.read_text()
    tree = ast.parse(source)
    rel = _rel(path)
    assert len(source.splitlines()) <= MAX_LINES, f"{rel} has more than {MAX_LINES} lines"
    assert ast.get_docstring(tree), f"{rel} has no module docstring"
    calls = _calls(tree)
    if rel not in PRINTERS:
        assert "print" not in calls, f"{rel} prints; log through logging.getLogger('asyncfeed')"
    if rel not in TASK_MAKERS:
        made = calls & {"create_task", "ensure_future", "TaskGroup"}
        assert not made, f"{rel} makes tasks ({made}); only {sorted(TASK_MAKERS)} may"
    if rel not in THREAD_MAKERS:
        assert "Thread" not in calls, f"{rel} makes threads; only bridge.py may"


def test_every_public_name_is_documented() -> None:
    for name in asyncfeed.__all__:
        obj = getattr(asyncfeed, name)
        if callable(obj):
            assert obj.__doc__, f"asyncfeed.{name} has no docstring"
