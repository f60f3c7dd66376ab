"""How the `ticketflow` command ends: after a command that used a Temporal client, without the interpreter's
teardown, which the SDK's Rust threads can abort (temporalio/sdk-python#300: "Fatal Python error:
PyGILState_Release", exit status -6, seen in CI on `ticketflow list`). The race itself is rare and cannot be
made to happen on demand; what is tested is that the command's output and exit status survive the short cut,
and that the short cut is taken exactly when the SDK's runtime was started. An atexit handler stands for the
teardown."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from starter.devstack import TemporalDevServer

# main() with the given arguments, and an atexit handler that says whether the interpreter tore down
DRIVER = """
import atexit, sys
atexit.register(lambda: print("teardown ran", file=sys.stderr))
sys.argv = ["ticketflow", *sys.argv[1:]]
from starter.cli import main
main()
"""


def ticketflow(*args: str, address: str = "127.0.0.1:1") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TICKETFLOW_TEMPORAL_ADDRESS": address, "TICKETFLOW_TASK_QUEUE": "exit-test"}
    return subprocess.run(
        [sys.executable, "-c", DRIVER, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_the_short_cut_flushes_everything_and_keeps_the_status() -> None:
    code = (
        "import sys; from starter.cli import exit_without_teardown; "
        "print('x' * 200_000, end=''); print('to stderr', file=sys.stderr, end=''); exit_without_teardown(3)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert (done.returncode, len(done.stdout), done.stderr) == (3, 200_000, "to stderr")  # pipes: block-buffered
    text = subprocess.run(
        [sys.executable, "-c", "from starter.cli import exit_without_teardown; exit_without_teardown('why')"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (text.returncode, text.stderr.strip()) == (1, "why")  # as sys.exit("why") would


def test_a_command_that_started_the_sdk_ends_without_teardown(dev_server: TemporalDevServer) -> None:
    listed = ticketflow("list", "--json", address=dev_server.address)
    assert listed.returncode == 0, listed.stderr
    assert isinstance(json.loads(listed.stdout), list)
    assert "teardown ran" not in listed.stderr
    missing = ticketflow("show", "no-such-ticket", address=dev_server.address)
    assert missing.returncode == 1 and "no-such-ticket" in missing.stderr, missing
    assert "teardown ran" not in missing.stderr
    # a server that cannot be reached: the SDK's runtime and its threads were started all the same
    unreachable = ticketflow("list")  # nothing listens on port 1
    assert unreachable.returncode == 1 and "cannot reach Temporal at 127.0.0.1:1" in unreachable.stderr
    assert "teardown ran" not in unreachable.stderr


def test_a_command_that_never_started_the_sdk_ends_as_usual() -> None:
    helped = ticketflow("--help")
    assert helped.returncode == 0 and "Usage" in helped.stdout
    assert "teardown ran" in helped.stderr
    bad = ticketflow("list", "--limit", "not-a-number")
    assert bad.returncode == 2 and "teardown ran" in bad.stderr
