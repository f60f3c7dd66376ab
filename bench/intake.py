"""Intake throughput and latency, as a ratio to the floor.

Tickets are submitted through the client SDK at increasing rates until the pipeline saturates; each reaches
"routed and acknowledged" when its tier-1 routing decision is written and its acknowledgement is handed to
the relay. The floor is an empty workflow started with the same payload, at the same rates, on the same dev
server and worker process in the same run. A final burst (as fast as `--concurrency` callers can) measures
each one's capacity; the headline is pipeline / floor at capacity (target: at least 0.8). The shaped floors do a
ticket's orchestration with a no-op; the I/O-shaped floor adds the least any help desk must do per ticket (one
committed row, one mail to the relay), so its own ratio to the floor is the most any pipeline can reach here.

    .venv/bin/python -m bench.intake --size small     # about 2 minutes
    .venv/bin/python -m bench.intake --size full      # about 15 minutes
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from bench.common import (
    CpuMeter,
    Stack,
    WorkerOptions,
    busy_warning,
    checkout,
    commit_of,
    console,
    fmt,
    gc_cells,
    ms,
    table,
    write_results,
)
from bench.floor import (
    ACTIVITY_SHAPED_FLOOR_WORKFLOW,
    FLOOR_WORKFLOW,
    IO_SHAPED_FLOOR_WORKFLOW,
    SHAPED_FLOOR_WORKFLOW,
)
from bench.load import (
    Submit,
    floor_submitter,
    key_of,
    pipeline_times,
    sdk_submitter,
    step_figures,
    submit_all,
    tickets,
    wait_acknowledged,
    wait_floor,
)
from starter.client import TicketClient
from ticketflow.ids import workflow_id
from ticketflow.temporal import LOCAL_ACTIVITY_MARKER

SIZES: dict[str, dict[str, Any]] = {
    "small": {"rates": [5, 10, 20, 40, 80], "step_seconds": 4.0, "min_step": 20, "burst": 100},
    "full": {"rates": [5, 10, 15, 20, 30, 40, 60, 80, 120, 160], "step_seconds": 30.0, "min_step": 100, "burst": 2000},
}
# bench/floor.py
FLOORS = {
    "floor": FLOOR_WORKFLOW,
    "floor_shaped": SHAPED_FLOOR_WORKFLOW,
    "floor_shaped_activity": ACTIVITY_SHAPED_FLOOR_WORKFLOW,
    "floor_io": IO_SHAPED_FLOOR_WORKFLOW,
}
# Variants of the worker, each a before/after of one candidate gain (a burst each in a whole run, or --paired):
PAIRED: dict[str, WorkerOptions] = {
    # the acknowledgement apart, sent by `notify` after the opening step as before patch ack-in-open-step
    "ack_apart": WorkerOptions(ack_apart=True),
    # 4 workflow-task slots, and so 4 threads running activations, instead of 100: what contention for the GIL costs
    "few_slots": WorkerOptions(sdk_options={"max_concurrent_workflow_tasks": 4}),
    # no bytecode, as a development machine runs it (editable install, PYTHONDONTWRITEBYTECODE=1), strict: that
    # sandbox compiles workflows/ticket.py from source for every workflow it creates
    "no_bytecode": WorkerOptions(bytecode=False, sandbox="strict"),
    # the strict sandbox (TICKETFLOW_WORKFLOW_SANDBOX=strict, the default before 2026-11-24): the workflow module
    # imported anew for every workflow, and carried by each cached one
    "strict_sandbox": WorkerOptions(sandbox="strict"),
    # the shared sandbox (TICKETFLOW_WORKFLOW_SANDBOX=shared, the default from 2026-11-24 until off): the module
    # imported once, built-ins still refused; what the sandbox's run-time checks cost against the default, none
    "shared_sandbox": WorkerOptions(sandbox="shared"),
    # asyncio's own event loop instead of uvloop's (TICKETFLOW_EVENT_LOOP=asyncio, the default before 2026-11-24):
    # the activities' sockets (PostgreSQL, SMTP) and the SDK's callbacks from its Rust threads run on it
    "asyncio_loop": WorkerOptions(event_loop="asyncio"),
}
IN_WHOLE_RUN = ("ack_apart", "no_bytecode", "strict_sandbox", "shared_sandbox")  # few_slots: --paired only
CAPACITY_COLUMNS = ["kind", "n", "per s", "/ floor", "p50 ms", "p95 ms", "p99 ms", "cpu ms", "worker", "temporal"]
CAPACITY_COLUMNS += ["pg", "driver", "gc %", "full gc ms"]
SATURATED = 0.85  # a step whose completions keep up with less than this share of the offered rate


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=sorted(SIZES), default="small")
    p.add_argument("--rates", type=lambda s: [float(x) for x in s.split(",")], help="offered rates, per second")
    p.add_argument("--step-seconds", type=float, help="how long each rate is offered")
    p.add_argument("--burst", type=int, help="tickets (and floor workflows) in the capacity burst")
    p.add_argument("--concurrency", type=int, default=64, help="callers in the burst")
    p.add_argument("--temporal-file", action="store_true", help="file-backed dev server (default: in memory)")
    p.add_argument("--keep", action="store_true", help="keep the work folder (logs, databases)")
    p.add_argument(
        "--paired",
        choices=sorted(PAIRED),
        help="instead of the ramp: bursts on fresh workers, the default one and this variant in turn, "
        "--rounds times; medians and their ratio (a before/after that the drift between runs cannot blur)",
    )
    p.add_argument(
        "--before",
        metavar="REV",
        help="--paired against the worker of git revision REV (e.g. HEAD~1, checked out under the run's folder), "
        "workflow code included: the before/after of a commit",
    )
    p.add_argument(
        "--rounds",
        type=int,
        help="rounds of --paired (default 3); in a whole run, rounds of the capacity bursts, each kind in turn, of "
        "which each kind's median round is reported (default 1)",
    )
    args = p.parse_args(argv)
    if args.rounds is None:
        args.rounds = 3 if args.paired or args.before else 1
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    if args.paired and args.before:
        p.error("--paired VARIANT and --before REV are two kinds of pair: give one")
    for k, v in SIZES[args.size].items():
        if getattr(args, k, None) is None:
            setattr(args, k, v)
    return args


class Intake:
    def __init__(self, stack: Stack, task_queue: str, floor_queue: str) -> None:
        assert stack.client is not None
        self.stack = stack
        self.client = stack.client
        self.use(task_queue)
        self.floor_queue = floor_queue
        self.batches = 0  # across task queues: it numbers the tickets
        self.last: dict[str, str] = {}  # kind -> one workflow id of its last batch

    def use(self, task_queue: str) -> None:
        """Open the next tickets on `task_queue`."""
        self.tickets = TicketClient(self.client, task_queue)
        self.task_queue = task_queue

    async def batch(self, kind: str, n: int, rate: float | None, concurrency: int) -> dict[str, Any]:
        """One batch of `kind` (floor, or pipeline through the client SDK) and its figures."""
        self.batches += 1
        label = f"b{self.batches}"
        items = tickets(n, label)
        submit: Submit = sdk_submitter(self.tickets)
        if kind in FLOORS:
            submit = floor_submitter(self.client, self.floor_queue, label, FLOORS[kind])
        timeout = 120 + n / 2
        meter = CpuMeter(self.stack).start()
        submitted = await submit_all(items, submit, rate=rate, concurrency=concurrency)
        ids = [s.key for s in submitted if s.error is None]
        if ids:
            self.last[kind] = ids[-1] if kind in FLOORS else workflow_id(ids[-1])
        if kind in FLOORS:
            done = await wait_floor(self.client, ids, timeout)
            figures = step_figures(submitted, done)
        else:
            await wait_acknowledged(self.stack.database_url, [key_of(t) for t in items], timeout)
            times = await pipeline_times(self.stack.database_url, ids)
            figures = step_figures(submitted, times.acked, times.routed)
        meter.stop()
        if figures["completed"] < len(ids):
            console.print(
                f"[yellow]{kind}: {len(ids) - figures['completed']} of {len(ids)} not done within {timeout:.0f} s "
                "(the machine is overloaded, or a worker is stuck: rerun with --keep and read the worker logs)[/]"
            )
        figures["kind"], figures["rate"] = kind, rate
        figures["cpu_ms_per_item"] = meter.per_item(figures["completed"])
        figures["cpu_busy_share"] = {k: round(v / meter.wall, 3) for k, v in meter.used.items()} if meter.wall else {}
        figures["gc"] = meter.gc
        return figures


async def history_shape(client: Client, wid: str) -> dict[str, int]:
    """What one workflow wrote to its history so far: server work grows with events, tasks and upserts."""
    history = await client.get_workflow_handle(wid).fetch_history()
    kinds = Counter(EventType.Name(e.event_type).removeprefix("EVENT_TYPE_") for e in history.events)
    local = sum(e.marker_recorded_event_attributes.marker_name == LOCAL_ACTIVITY_MARKER for e in history.events)
    return {
        "events": len(history.events),
        "workflow_tasks": kinds["WORKFLOW_TASK_COMPLETED"],
        "activities": kinds["ACTIVITY_TASK_SCHEDULED"],
        "local_activities": local,
        "patch_markers": kinds["MARKER_RECORDED"] - local,
        "search_attribute_upserts": kinds["UPSERT_WORKFLOW_SEARCH_ATTRIBUTES"],
        "timers": kinds["TIMER_STARTED"],
    }


def saturated(f: dict[str, Any]) -> bool:
    offered, done = f["offered_per_s"], f["completed_per_s"]
    return bool(f["errors"]) or f["completed"] < f["submitted"] or (offered and (done or 0) < SATURATED * offered)


def latency_cells(f: dict[str, Any]) -> list[str]:
    lat = f.get("latency_routed_s") or f["latency_done_s"]
    return [ms(lat["p50"]), ms(lat["p95"]), ms(lat["p99"])]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    busy_warning()
    queue, floor_queue = f"bench-{uuid.uuid4().hex[:6]}", f"floor-{uuid.uuid4().hex[:6]}"
    async with Stack(temporal_file=args.temporal_file, keep=args.keep) as stack:
        worker = await stack.start_worker(WorkerOptions(task_queue=queue, floor_queue=floor_queue))
        bench = Intake(stack, queue, floor_queue)
        console.log("warming up (sandbox imports, connections, caches)")
        for kind in ("floor", "pipeline"):
            await bench.batch(kind, 20, None, 8)

        ramp: list[dict[str, Any]] = []
        done_with: set[str] = set()
        for r in args.rates:
            for kind in ("floor", "pipeline"):
                if kind in done_with:
                    continue
                n = max(args.min_step, round(r * args.step_seconds))
                console.log(f"{kind}: {n} at {r:g}/s")
                f = await bench.batch(kind, n, r, 256)
                ramp.append(f)
                if saturated(f):
                    done_with.add(kind)
            if len(done_with) == 2:
                break

        console.log(f"capacity bursts of {args.burst} with {args.concurrency} callers, {args.rounds} round(s)")
        kinds = ("floor", "floor_shaped", "floor_shaped_activity", "floor_io", "pipeline")
        rounds: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
        for _ in range(args.rounds):  # each kind in turn, so drift within the run reaches all alike
            for kind in kinds:
                rounds[kind].append(await bench.batch(kind, args.burst, None, args.concurrency))
        bursts = {kind: median_round(figures) for kind, figures in rounds.items()}
        shapes = {kind: await history_shape(bench.client, wid) for kind, wid in bench.last.items()}
        for name in IN_WHOLE_RUN:  # each on a fresh worker
            await stack.stop_worker(worker)
            variant = dataclasses.replace(PAIRED[name], task_queue=queue, floor_queue=floor_queue)
            worker = await stack.start_worker(variant)
            await bench.batch("pipeline", 20, None, 8)
            bursts[f"pipeline_{name}"] = await bench.batch("pipeline", args.burst, None, args.concurrency)

    rows = []
    for f in ramp:
        rows.append(
            [
                f["kind"],
                fmt(f["rate"], 0),
                f["submitted"],
                fmt(f["offered_per_s"]),
                fmt(f["completed_per_s"]),
                *latency_cells(f),
                ms(f["latency_done_s"]["p99"]),
                f["errors"],
                "saturated" if saturated(f) else "",
            ]
        )
    table(
        "intake ramp: floor = empty workflow; pipeline = routed and acknowledged",
        ["kind", "rate", "n", "offered/s", "done/s", "p50 ms", "p95 ms", "p99 ms", "p99 done ms", "errors", ""],
        rows,
        caption="latency is submit -> routed for the pipeline, submit -> completed for the floor; "
        "'done' is acknowledged (pipeline) or completed (floor)",
    )

    floor_cap = bursts["floor"]["makespan_per_s"] or 0.0
    capacity_rows = []
    for name, f in bursts.items():
        cap = f["makespan_per_s"]
        capacity_rows.append(
            [
                name,
                f["completed"],
                fmt(cap),
                fmt(cap / floor_cap if cap and floor_cap else None, 2),
                *latency_cells(f),
                fmt(f["cpu_ms_per_item"].get("total"), 1),
                fmt(f["cpu_ms_per_item"].get("worker"), 1),
                fmt(f["cpu_ms_per_item"].get("temporal"), 1),
                fmt(f["cpu_ms_per_item"].get("postgres"), 1),
                fmt(f["cpu_ms_per_item"].get("driver"), 1),
                *gc_cells(f.get("gc", {})),
            ]
        )
    table(
        f"intake capacity: bursts of {args.burst}, {args.concurrency} callers",
        CAPACITY_COLUMNS,
        capacity_rows,
        caption="per s: the whole burst, first submit to last completion; cpu ms: CPU milliseconds per ticket (or "
        "floor workflow), by process (2 cores give 2,000 per second); gc %: the share of the burst the worker stood "
        "still for Python's cycle collector; full gc: its full collections, how many × how long each on average",
    )
    best = {
        kind: max([(f["completed_per_s"] or 0.0) for f in ramp if f["kind"] == kind], default=0.0)
        for kind in ("floor", "pipeline")
    }
    pipeline_cap = bursts["pipeline"]["makespan_per_s"]
    ratio = ratio_of(pipeline_cap, floor_cap)
    shaped_cap = bursts["floor_shaped"]["makespan_per_s"]
    shaped_ratio = ratio_of(pipeline_cap, shaped_cap)
    io_cap = bursts["floor_io"]["makespan_per_s"]
    io_ratio = ratio_of(pipeline_cap, io_cap)
    io_ceiling = ratio_of(io_cap, floor_cap)
    if args.rounds > 1:
        table(
            f"capacity by round: {args.rounds} rounds of bursts, each kind in turn",
            ["kind", "per s, by round", "median", "/ floor, by round"],
            [
                [
                    kind,
                    " ".join(fmt(f["makespan_per_s"]) for f in figures),
                    fmt(bursts[kind]["makespan_per_s"]),
                    " ".join(
                        fmt(ratio_of(f["makespan_per_s"], fl["makespan_per_s"]), 2)
                        for f, fl in zip(figures, rounds["floor"], strict=True)
                    ),
                ]
                for kind, figures in rounds.items()
            ],
            caption="the capacity table above shows each kind's median round",
        )
    table(
        "history of one workflow, once acknowledged (floor: completed)",
        ["kind", *next(iter(shapes.values()), {}).keys()],
        [[kind, *shape.values()] for kind, shape in shapes.items()],
    )
    console.print(
        f"pipeline / floor at capacity: [bold]{fmt(ratio, 2)}[/] (target 0.8); pipeline / shaped floor (the same "
        f"orchestration with no-op activities): [bold]{fmt(shaped_ratio, 2)}[/]; best sustained in the ramp: "
        f"pipeline {fmt(best['pipeline'])}/s, floor {fmt(best['floor'])}/s"
    )
    console.print(
        f"I/O-shaped floor (one committed row, one mail to the relay) / floor: [bold]{fmt(io_ceiling, 2)}[/], the "
        f"most any pipeline can reach on this machine; pipeline / I/O-shaped floor: [bold]{fmt(io_ratio, 2)}[/]"
    )
    return {
        "size": args.size,
        "params": {k: v for k, v in vars(args).items() if k != "keep"},
        "ramp": ramp,
        "bursts": bursts,
        "burst_rounds": {kind: [f["makespan_per_s"] for f in figures] for kind, figures in rounds.items()},
        "ratio_pipeline_to_floor": ratio,
        "ratio_pipeline_to_shaped_floor": shaped_ratio,
        "ratio_pipeline_to_io_floor": io_ratio,
        "ratio_io_floor_to_floor": io_ceiling,
        "best_per_s": best,
        "history": shapes,
    }


def median_round(figures: list[dict[str, Any]]) -> dict[str, Any]:
    """The round of median throughput, with all its figures (the upper one of an even count)."""
    return sorted(figures, key=lambda f: f["makespan_per_s"] or 0.0)[len(figures) // 2]


def ratio_of(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


async def paired(args: argparse.Namespace) -> dict[str, Any]:
    """The default worker and one variant in turn, each fresh (an empty cache, a warm-up batch) for its burst, on
    one server whose open tickets grow alike for both: the ratio of medians is the variant's gain or loss. Each
    side opens its tickets on a task queue of its own, so a worker never meets the other side's histories (a
    worker from before a change to the workflow code could not replay the ones after it)."""
    busy_warning()
    before = commit_of(args.before) if args.before else None
    other = args.paired or f"before ({args.before}, {before and before[:10]})"
    bursts: dict[str, list[dict[str, Any]]] = {"default": [], other: []}
    async with Stack(temporal_file=args.temporal_file, keep=args.keep) as stack:
        variant = WorkerOptions(source=checkout(before, stack.workdir)) if before else PAIRED[args.paired]
        sides = {"default": WorkerOptions(), other: variant}
        queues = {name: f"bench-{uuid.uuid4().hex[:6]}" for name in sides}
        bench = Intake(stack, queues["default"], "")
        for r in range(args.rounds):
            for name, options in sides.items():
                bench.use(queues[name])
                worker = await stack.start_worker(dataclasses.replace(options, task_queue=queues[name]))
                await bench.batch("pipeline", 20, None, 8)
                console.log(f"round {r + 1} of {args.rounds}: {name}")
                bursts[name].append(await bench.batch("pipeline", args.burst, None, args.concurrency))
                await stack.stop_worker(worker)

    def median(name: str, figure: Callable[[dict[str, Any]], float | None]) -> float | None:
        values = [v for f in bursts[name] if (v := figure(f)) is not None]
        return statistics.median(values) if values else None

    figures: dict[str, Callable[[dict[str, Any]], float | None]] = {
        "per s": lambda f: f["makespan_per_s"],
        "cpu ms": lambda f: f["cpu_ms_per_item"].get("total"),
        "worker": lambda f: f["cpu_ms_per_item"].get("worker"),
        "temporal": lambda f: f["cpu_ms_per_item"].get("temporal"),
        "pg": lambda f: f["cpu_ms_per_item"].get("postgres"),
        "gc %": lambda f: share * 100 if (share := f.get("gc", {}).get("worker", {}).get("paused_share")) else None,
    }
    medians = {name: {k: median(name, get) for k, get in figures.items()} for name in sides}
    ratios = {k: ratio_of(medians[other][k], medians["default"][k]) for k in figures}
    rows = [[name, *(" ".join(fmt(get(f), 1) for f in bursts[name]) for get in figures.values())] for name in sides]
    rows.append(["median ratio", *(fmt(ratios[k], 2) for k in figures)])
    table(
        f"paired bursts of {args.burst} ({args.concurrency} callers) on fresh workers, {args.rounds} rounds in turn",
        ["worker", *figures],
        rows,
        caption="each cell: one figure per round; per s: first submit to last acknowledgement; cpu ms: CPU "
        "milliseconds per ticket (all processes, then by process); gc %: the share of the burst the worker stood "
        "still for Python's cycle collector; ratio: variant / default",
    )
    return {
        "params": {k: v for k, v in vars(args).items() if k != "keep"},
        "before_commit": before,
        "bursts": bursts,
        "medians": medians,
        "ratios": ratios,
    }


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.paired or args.before:
        results = asyncio.run(paired(args))
        name = args.paired or f"before-{results['before_commit'][:10]}"
        write_results(f"intake-paired-{name}", results)
    else:
        write_results("intake", asyncio.run(run(args)))


if __name__ == "__main__":
    main()
