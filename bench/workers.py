"""Horizontal scale on this machine: capacity with one worker process, then with two on the same task queues
(same dev server, same run), for the pipeline (routed and acknowledged) and the floor (an empty workflow).
Workflow tasks are CPU-bound under the GIL, so processes are the unit of scale; on a 2-core machine that also
runs the Temporal server, PostgreSQL and the driver, the second process can only use what they leave free.

    .venv/bin/python -m bench.workers --size small   # bursts of 150, about 2 minutes
    .venv/bin/python -m bench.workers --size full    # bursts of 2,000, about 10 minutes
"""

from __future__ import annotations

import argparse
import asyncio
import os
import uuid
from typing import Any

from bench.common import Stack, WorkerOptions, busy_warning, console, fmt, ms, table, write_results
from bench.intake import Intake

SIZES: dict[str, dict[str, Any]] = {"small": {"burst": 150}, "full": {"burst": 2000}}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=sorted(SIZES), default="small")
    p.add_argument("--burst", type=int, help="tickets (and floor workflows) per measurement")
    p.add_argument("--concurrency", type=int, default=64, help="callers submitting the burst")
    p.add_argument("--temporal-file", action="store_true", help="file-backed dev server (default: in memory)")
    p.add_argument("--keep", action="store_true", help="keep the work folder (logs, databases)")
    args = p.parse_args(argv)
    for k, v in SIZES[args.size].items():
        if getattr(args, k, None) is None:
            setattr(args, k, v)
    return args


async def run(args: argparse.Namespace) -> dict[str, Any]:
    busy_warning()
    queue, floor_queue = f"bench-{uuid.uuid4().hex[:6]}", f"floor-{uuid.uuid4().hex[:6]}"
    options = WorkerOptions(task_queue=queue, floor_queue=floor_queue)
    results: dict[int, dict[str, dict[str, Any]]] = {}
    async with Stack(temporal_file=args.temporal_file, keep=args.keep) as stack:
        bench = Intake(stack, queue, floor_queue)
        for processes in (1, 2):
            await stack.start_worker(options)
            console.log(
                f"{processes} worker process{'es' if processes > 1 else ''}: warming up, then bursts of {args.burst}"
            )
            for kind in ("floor", "pipeline"):
                await bench.batch(kind, 20 * processes, None, 8)
            results[processes] = {
                kind: await bench.batch(kind, args.burst, None, args.concurrency) for kind in ("floor", "pipeline")
            }

    rows = []
    for kind in ("floor", "pipeline"):
        one = results[1][kind]["makespan_per_s"] or 0.0
        for processes in (1, 2):
            f = results[processes][kind]
            cpu = f["cpu_ms_per_item"]
            workers = sum(v for k, v in cpu.items() if k.startswith("worker"))
            lat = f.get("latency_routed_s") or f["latency_done_s"]
            rows.append(
                [
                    kind,
                    processes,
                    fmt(f["makespan_per_s"]),
                    fmt((f["makespan_per_s"] or 0.0) / one if one else None, 2),
                    ms(lat["p50"]),
                    ms(lat["p99"]),
                    fmt(cpu.get("total"), 1),
                    fmt(workers, 1),
                    fmt(cpu.get("temporal"), 1),
                    fmt(cpu.get("postgres"), 1),
                ]
            )
    table(
        f"worker processes: bursts of {args.burst}, {args.concurrency} callers",
        ["kind", "processes", "per s", "vs 1", "p50 ms", "p99 ms", "cpu ms", "workers", "temporal", "pg"],
        rows,
        caption="cpu ms: CPU milliseconds per ticket (or floor workflow) by process; this machine has "
        f"{os.cpu_count()} CPUs",
    )
    scaling = {
        kind: (results[2][kind]["makespan_per_s"] or 0.0) / (results[1][kind]["makespan_per_s"] or 1.0)
        for kind in ("floor", "pipeline")
    }
    console.print(f"2 processes / 1: pipeline {scaling['pipeline']:.2f}, floor {scaling['floor']:.2f}")
    return {
        "size": args.size,
        "params": {k: v for k, v in vars(args).items() if k != "keep"},
        "by_processes": results,
        "scaling_2_over_1": scaling,
    }


def main(argv: list[str] | None = None) -> None:
    write_results("workers", asyncio.run(run(parse(argv))))


if __name__ == "__main__":
    main()
