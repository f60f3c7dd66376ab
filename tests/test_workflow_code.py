"""Workflow code stays deterministic by its source, whichever sandbox a worker runs.

The `shared` sandbox (TICKETFLOW_WORKFLOW_SANDBOX=shared) imports the workflow module once and still refuses
built-ins such as `open`, but not a `datetime.now()` reached through a module import; the `ticketflow` core
is passed through in either mode. So the modules a workflow executes are read here, and a clock, randomness,
I/O or a client library in them fails the suite before any worker runs it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

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


def test_the_check_catches_what_the_shared_sandbox_would_let_through() -> None:
    source = (
        "import random\nfrom datetime import datetime\n"
        "def f():\n    return datetime.now(), open('x'), random.random(), workflow.now(), asyncio.sleep(1)\n"
    )
    assert violations(source, "w.py") == ["w.py:1 imports random", "w.py:4 calls .now()", "w.py:4 calls open()"]
