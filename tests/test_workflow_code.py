"""Workflow code stays deterministic by its source, whichever sandbox a worker runs.

A worker process runs no sandbox by default (TICKETFLOW_WORKFLOW_SANDBOX=off), and the `shared` one imports the
workflow module once and refuses built-ins such as `open`, but not a `datetime.now()` reached through a module
import; the `ticketflow` core is passed through in every mode. So the modules a workflow executes are read here,
and a clock, randomness, I/O, `open` or a client library in them fails the suite before any worker runs it.
"""

from __future__ import annotations
import __future__

import ast
import importlib
import types
import typing
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from temporalio.common import RetryPolicy

ROOT = Path(__file__).parent.parent
# What a workflow executes: its own package and the core modules it imports.
WORKFLOW_MODULES = [
    *sorted((ROOT / "workflows").glob("*.py")),
    *(ROOT / "ticketflow" / f"{name}.py" for name in ("models", "calendar", "search", "contract")),
]
FORBIDDEN_MODULES = {
    "random",
    "secrets",
    "time",
    "uuid",
    "os",
    "socket",
    "subprocess",
    "threading",
    "psycopg",
    "psycopg_pool",
    "aiosmtplib",
    "httpx",
    "requests",
    "urllib",
    "activities",
}
FORBIDDEN_CALLS = {"now", "utcnow", "today", "fromtimestamp", "time", "monotonic", "perf_counter", "sleep"}
FORBIDDEN_BUILTINS = {"open", "input", "print"}


def violations(source: str, name: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source, name)):
        line = f"{name}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            found += [f"{line} imports {a.name}" for a in node.names if a.name.split(".")[0] in FORBIDDEN_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in FORBIDDEN_MODULES:
            found.append(f"{line} imports from {node.module}")
        elif isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Name) and f.id in FORBIDDEN_BUILTINS:
                found.append(f"{line} calls {f.id}()")
            elif isinstance(f, ast.Attribute) and f.attr in FORBIDDEN_CALLS:
                owner = f.value
                is_sdk = isinstance(owner, ast.Name) and owner.id in ("workflow", "asyncio")  # durable equivalents
                if not is_sdk:
                    found.append(f"{line} calls .{f.attr}()")
    return found


@pytest.mark.parametrize("path", WORKFLOW_MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_workflow_code_uses_no_clock_randomness_or_io(path: Path) -> None:
    assert violations(path.read_text("utf-8"), str(path.relative_to(ROOT))) == []


def test_the_check_catches_what_a_worker_without_the_strict_sandbox_would_let_through() -> None:
    source = (
        "import random\nfrom datetime import datetime\n"
        "def f():\n    return datetime.now(), open('x'), random.random(), workflow.now(), asyncio.sleep(1)\n"
    )
    assert violations(source, "w.py") == ["w.py:1 imports random", "w.py:4 calls .now()", "w.py:4 calls open()"]


# Values that cannot change once made. RetryPolicy is a plain dataclass, but workflow code only hands it to the
# SDK, which copies it into each command.
IMMUTABLE = (str, bytes, int, float, bool, type(None), timedelta, datetime, RetryPolicy, typing.TypeVar)
SHAPES = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType, __future__._Feature)


def carried_state(namespace: dict[str, object]) -> list[str]:
    """Names bound to a value one workflow run could change and the next one see."""

    def fixed(value: object) -> bool:
        if isinstance(value, tuple | frozenset):
            return all(fixed(v) for v in value)
        return isinstance(value, IMMUTABLE + SHAPES) or type(value).__module__ == "typing"

    return [
        name
        for name, value in namespace.items()
        if not name.startswith("__")
        and not isinstance(value, property | staticmethod | classmethod)
        and not fixed(value)
    ]


@pytest.mark.parametrize("module", ["workflows", "workflows.ticket"])
def test_workflow_modules_hold_no_state_that_one_run_could_leave_to_the_next(module: str) -> None:
    """A worker without a sandbox (the default) or with the shared one imports the workflow module once for
    every run: a list, dict or object at module or class level would be one run's state seen by the next, and
    would differ on replay."""
    mod = importlib.import_module(module)
    assert carried_state(vars(mod)) == []
    for cls in (v for v in vars(mod).values() if isinstance(v, type) and v.__module__ == module):
        assert carried_state(dict(vars(cls))) == [], cls.__qualname__


def test_the_state_check_catches_a_mutable_constant() -> None:
    namespace = {"RETRIES": 3, "NAMES": ("a", "b"), "SEEN": set(), "CACHE": {}, "DEFAULTS": ("a", [])}
    assert carried_state(namespace) == ["SEEN", "CACHE", "DEFAULTS"]
