"""Scale of open tickets: N open tickets, each with pending SLA and tier-escalation timers.

Measures, on one worker process:
- worker memory per open ticket, with the workflow cache's size and evictions (`--max-cached`, SDK default 1000);
- how intake latency (submit -> routed) moves as the number of open tickets grows (it should stay flat);
- timer-firing lateness when every deadline coincides: the benchmark's policy puts every department on one
  business calendar that is closed while the tickets come in and opens at one instant, so every ticket's first
  SLA reminder falls due at the same second (Monday 09:00 for a real help desk). Lateness is the audit row of
  that reminder against its due instant: when the worker's workflow task ran (`at`) and when the row was
  written (`bench_at`).
- what each process was doing meanwhile: CPU and RSS of the worker, the server, PostgreSQL, the relay and the
  driver, and PostgreSQL's autovacuum, sampled every 10 s (bench.common.Timeline), shown per intake block.

    .venv/bin/python -m bench.scale --size small                    # 300 tickets, about 3 minutes
    .venv/bin/python -m bench.scale --size full                     # 10,000 tickets at 15/s, about 25 minutes
    .venv/bin/python -m bench.scale --size full --tickets 50000 --resolution-factor 100   # about 2 hours
    .venv/bin/python -m bench.scale --size full --tickets 50000 --resolution-factor 100 --wave-minutes 20

Every ticket's resolution clock starts with its first-response clock, at `--resolution-factor` times its target,
so with the default of 2 each resolution reminder falls due `--fire-after` seconds after the first one and the
two waves overlap; the lateness table also counts every reminder written while the first wave drained.

The intake rate must stay below the pipeline's capacity (bench.intake), or the latency measured is queueing.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, get_args

import psycopg
from psycopg.rows import dict_row

from bench.common import (
    Stack,
    Timeline,
    WorkerOptions,
    busy_warning,
    console,
    fmt,
    gc_cells,
    metric,
    ms,
    rss_bytes,
    scrape,
    summary,
    table,
    write_results,
)
from bench.load import Submitted, pipeline_times, sdk_submitter, submit_all, tickets, wait_acknowledged
from starter.client import TicketClient
from ticketflow.calendar import BusinessCalendar, Interval, Weekday
from ticketflow.config import DEFAULT_SANDBOX, Config, SlaTarget, WorkflowSandbox, default_config
from ticketflow.models import Priority

SIZES: dict[str, dict[str, Any]] = {
    "small": {"tickets": 300, "rate": 10.0, "fire_after": 20.0, "margin": 20.0},
    "full": {"tickets": 10_000, "rate": 15.0, "fire_after": 60.0, "margin": 120.0},
}
TARGET_MINUTES = 480  # first response; the reminder fraction places the first reminder `fire_after` seconds in
WINDOW = timedelta(hours=12)  # the calendar's one opening, long enough for every clock of the run
CACHE_METRICS = (
    "temporal_sticky_cache_size",
    "temporal_sticky_cache_total_forced_eviction",
    "temporal_sticky_cache_miss",
)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=sorted(SIZES), default="small")
    p.add_argument("--tickets", type=int, help="open tickets")
    p.add_argument("--rate", type=float, help="intake rate, tickets per second (paced, below saturation)")
    p.add_argument("--fire-after", type=float, help="seconds from the opening to the first reminder of every ticket")
    p.add_argument("--margin", type=float, help="seconds between the end of intake (estimated) and the opening")
    p.add_argument(
        "--resolution-factor",
        type=float,
        default=2.0,
        help="resolution target as a multiple of the first-response target (2: its reminders fall due `fire-after`"
        " seconds after the first ones and compete with their wave; 100: none during the run)",
    )
    p.add_argument(
        "--wave-minutes",
        type=float,
        help="stop the wave this long after the deadline and report what was written by then (a 50,000-ticket wave"
        " takes about an hour)",
    )
    p.add_argument("--max-cached", type=int, default=1000, help="the worker's max_cached_workflows")
    p.add_argument(
        "--sandbox",
        choices=get_args(WorkflowSandbox),
        default=DEFAULT_SANDBOX,
        help="the worker's workflow sandbox (TICKETFLOW_WORKFLOW_SANDBOX, default %(default)s; off: unsandboxed)",
    )
    p.add_argument("--temporal-file", action="store_true", help="file-backed dev server (default: in memory)")
    p.add_argument("--keep", action="store_true", help="keep the work folder (logs, databases)")
    args = p.parse_args(argv)
    for k, v in SIZES[args.size].items():
        if getattr(args, k, None) is None:
            setattr(args, k, v)
    return args


def coinciding_policy(base: Config, opens_at: datetime, fire_after: float, resolution_factor: float = 2.0) -> Config:
    """Every department on one calendar, closed until `opens_at` (UTC) and open for 12 hours from then; every
    priority with the same business-hours targets, no overrides; the first reminder at `fire_after` seconds of
    business time. Tier budgets are long: the escalation timers are pending, not firing, during the run."""
    start = opens_at.astimezone(UTC)
    interval = Interval(start=start.time().replace(tzinfo=None), end=(start + WINDOW).time().replace(tzinfo=None))
    calendar = BusinessCalendar(timezone="UTC", weekly={list(Weekday)[start.weekday()]: [interval]})
    target = SlaTarget(
        first_response_minutes=TARGET_MINUTES,
        next_reply_minutes=TARGET_MINUTES,
        resolution_minutes=round(resolution_factor * TARGET_MINUTES),
    )
    sla = base.sla.model_copy(
        update={
            "targets": dict.fromkeys(Priority, target),
            "overrides": [],
            "hours": "business",
            "metric_hours": {},
            "reminder_fractions": [fire_after / (TARGET_MINUTES * 60)],
            "notify_out_of_hours": list(Priority),
            "escalate_on_breach": [],
        }
    )
    departments = {k: d.model_copy(update={"calendar": "bench_hours"}) for k, d in base.departments.items()}
    tiers = [t.model_copy(update={"budget_minutes": 600}) for t in base.tiers]
    return base.model_copy(
        update={
            "calendars": {**base.calendars, "bench_hours": calendar},
            "departments": departments,
            "sla": sla,
            "tiers": tiers,
        }
    )


def cache_sample(stack: Stack, pid: int) -> dict[str, Any]:
    sample = scrape(stack.worker_metrics.get(pid, 0))
    out: dict[str, Any] = {"rss_mib": rss_bytes(pid) / 2**20}
    for name in CACHE_METRICS:
        out[name.removeprefix("temporal_sticky_")] = metric(sample, name)
    return out


async def reminders(database_url: str, ids: list[str]) -> list[dict[str, Any]]:
    """The first first-response SLA event of each ticket (a reminder, or a breach that superseded it)."""
    async with await psycopg.AsyncConnection.connect(database_url, row_factory=dict_row) as conn:
        cur = await conn.execute(
            """
            SELECT DISTINCT ON (ticket_id) ticket_id, event, at, bench_at, detail
            FROM audit_log
            WHERE ticket_id = ANY(%s) AND event IN ('sla_reminder', 'sla_breach')
              AND detail->>'metric' = 'first_response'
            ORDER BY ticket_id, seq
            """,
            (ids,),
        )
        return await cur.fetchall()


async def written_by(database_url: str, ids: list[str], until: datetime) -> int:
    """Every SLA reminder and breach these tickets had written by `until`: the first-response wave and the
    resolution reminders that fall due while it drains compete for the same worker."""
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM audit_log WHERE ticket_id = ANY(%s) AND event IN ('sla_reminder', 'sla_breach')"
            " AND bench_at <= %s",
            (ids, until),
        )
        row = await cur.fetchone()
        return int(row[0]) if row else 0


async def count_reminders(database_url: str, ids: list[str]) -> int:
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cur = await conn.execute(
            "SELECT count(DISTINCT ticket_id) FROM audit_log WHERE ticket_id = ANY(%s)"
            " AND event IN ('sla_reminder', 'sla_breach') AND detail->>'metric' = 'first_response'",
            (ids,),
        )
        row = await cur.fetchone()
        return int(row[0]) if row else 0


async def run(args: argparse.Namespace) -> dict[str, Any]:
    busy_warning()
    n = args.tickets
    intake_s = n / args.rate
    opens_at = datetime.now(UTC) + timedelta(seconds=30 + 1.15 * intake_s + args.margin)
    opens_at = opens_at.replace(microsecond=0) + timedelta(seconds=1)
    due = opens_at + timedelta(seconds=args.fire_after)
    policy = coinciding_policy(default_config(), opens_at, args.fire_after, args.resolution_factor)
    console.log(
        f"{n} tickets at {args.rate:g}/s; the calendar opens at {opens_at:%H:%M:%S}, reminders due {due:%H:%M:%S}"
    )
    queue = f"scale-{uuid.uuid4().hex[:6]}"
    async with Stack(temporal_file=args.temporal_file, keep=args.keep) as stack:
        assert stack.client is not None
        worker = await stack.start_worker(
            WorkerOptions(task_queue=queue, config=policy, max_cached=args.max_cached, sandbox=args.sandbox)
        )
        tc = TicketClient(stack.client, queue)
        samples: list[dict[str, Any]] = [{"open": 0, **cache_sample(stack, worker.pid)}]
        timeline = Timeline(stack).start()

        items = tickets(n, "scale")
        submitted: list[Submitted] = []
        chunks = 10
        size = math.ceil(n / chunks)
        for c in range(chunks):
            chunk = items[c * size : (c + 1) * size]
            if not chunk:
                break
            submitted += await submit_all(chunk, sdk_submitter(tc), rate=args.rate, concurrency=256)
            samples.append({"open": len(submitted), **cache_sample(stack, worker.pid)})
            console.log(f"{len(submitted)} submitted; worker RSS {samples[-1]['rss_mib']:.0f} MiB")
        ids = [s.key for s in submitted if s.error is None]
        acked = await wait_acknowledged(stack.database_url, ids, within=300 + n / 5)
        settled = {"open": len(ids), **cache_sample(stack, worker.pid)}
        samples.append(settled)
        times = await pipeline_times(stack.database_url, ids)
        if datetime.now(UTC) > opens_at:
            console.print("[yellow]intake ran past the opening: the late tickets' reminders do not coincide[/]")

        wait = (due - datetime.now(UTC)).total_seconds()
        console.log(f"all acknowledged ({acked}/{len(ids)}); waiting {max(0, wait):.0f} s for the coinciding deadline")
        await asyncio.sleep(max(0.0, wait))
        deadline = time.monotonic() + (args.wave_minutes * 60 if args.wave_minutes else 300 + n / 5)
        fired = 0
        while time.monotonic() < deadline:
            fired = await count_reminders(stack.database_url, ids)
            if fired >= len(ids):
                break
            await asyncio.sleep(1.0)
        after_wave = {"open": len(ids), **cache_sample(stack, worker.pid)}
        rows = await reminders(stack.database_url, ids)
        last_first = max((r["bench_at"] for r in rows), default=due)
        in_wave = await written_by(stack.database_url, ids, last_first)
        await timeline.stop()

    # --- figures ---------------------------------------------------------------------------------------------
    task_late, written_late, coinciding = [], [], 0
    for r in rows:
        d = r["detail"]
        due_at = datetime.fromisoformat(d["due_at"])
        expected = due_at - timedelta(seconds=d["target_seconds"] * (1 - policy.sla.reminder_fractions[0]))
        coinciding += abs((expected - due).total_seconds()) < 0.001
        task_late.append((r["at"] - expected).total_seconds())
        written_late.append((r["bench_at"] - expected).total_seconds())
    last = max((r["bench_at"] for r in rows), default=None)
    wave_s = (last - due).total_seconds() if last else None
    lateness = {
        "fired": len(rows),
        "coinciding": coinciding,
        "superseded_by_breach": sum(r["event"] == "sla_breach" for r in rows),
        "task_lateness_s": summary(task_late),
        "written_lateness_s": summary(written_late),
        "wave_seconds": wave_s,
        "fired_per_s": len(rows) / wave_s if wave_s else None,
        "cut_short": len(rows) < len(ids),
        "whole_wave_estimate_s": len(ids) / (len(rows) / wave_s) if wave_s and rows else None,
        "all_written_in_wave": in_wave,
        "all_written_per_s": in_wave / wave_s if wave_s else None,
    }

    by_open = []
    for c in range(chunks):
        part = submitted[c * size : (c + 1) * size]
        if not part:
            break
        routed = [times.routed[s.key] - s.at for s in part if s.key in times.routed]
        ack = [times.acked[s.key] - s.at for s in part if s.key in times.acked]
        processes = timeline.between(min(s.at for s in part), max(s.at for s in part))
        by_open.append(
            {
                "open_before": c * size,
                "n": len(part),
                "routed_s": summary(routed),
                "acked_s": summary(ack),
                "processes": processes,
            }
        )
    wave_processes = timeline.between(due.timestamp(), last.timestamp()) if last else {}

    base_rss = samples[0]["rss_mib"]
    cached = min(len(ids), args.max_cached)
    memory = {
        "baseline_rss_mib": base_rss,
        "rss_after_intake_mib": settled["rss_mib"],
        "rss_after_wave_mib": after_wave["rss_mib"],
        "kib_per_open_ticket": (settled["rss_mib"] - base_rss) * 1024 / len(ids) if ids else None,
        "kib_per_cached_workflow": (settled["rss_mib"] - base_rss) * 1024 / cached if cached else None,
        "max_cached": args.max_cached,
        "sandbox": args.sandbox,
        "samples": [*samples, after_wave],
    }

    table(
        f"scale: worker memory and workflow cache, {len(ids):,} open tickets, max_cached_workflows={args.max_cached}, "
        f"sandbox {args.sandbox}",
        ["open tickets", "worker RSS MiB", "cache size", "forced evictions", "cache misses"],
        [
            [
                fmt(s["open"]),
                fmt(s["rss_mib"], 0),
                fmt(s["cache_size"], 0),
                fmt(s["cache_total_forced_eviction"], 0),
                fmt(s["cache_miss"], 0),
            ]
            for s in [*samples, after_wave]
        ],
        caption=f"{fmt(memory['kib_per_open_ticket'], 0)} KiB per open ticket, "
        f"{fmt(memory['kib_per_cached_workflow'], 0)} KiB per cached workflow (RSS growth over the baseline)",
    )
    table(
        "scale: intake latency as open tickets grow",
        ["open before", "n", "routed p50 ms", "p95", "p99", "acknowledged p50 ms", "p99", *CORE_COLUMNS],
        [
            [
                fmt(b["open_before"]),
                b["n"],
                ms(b["routed_s"]["p50"]),
                ms(b["routed_s"]["p95"]),
                ms(b["routed_s"]["p99"]),
                ms(b["acked_s"]["p50"]),
                ms(b["acked_s"]["p99"]),
                *core_cells(b["processes"]),
            ]
            for b in by_open
        ],
        caption="worker … driver: CPU cores each process used while the block was submitted (2 on this machine); "
        "autovac: PostgreSQL autovacuum and autoanalyze runs begun meanwhile; temporal MiB: the dev server's peak RSS; "
        "gc %: the share of the time the worker stood still for Python's cycle collector; full gc: its full "
        "collections, how many × how long each on average",
    )
    tl, wl = lateness["task_lateness_s"], lateness["written_lateness_s"]
    table(
        f"scale: {len(ids):,} tickets, first reminders written {lateness['fired']:,}, "
        f"of them due at the same instant {lateness['coinciding']:,}",
        ["lateness", "p50 ms", "p95 ms", "p99 ms", "max ms"],
        [
            ["workflow task ran", ms(tl["p50"]), ms(tl["p95"]), ms(tl["p99"]), ms(tl["max"])],
            ["audit row written", ms(wl["p50"]), ms(wl["p95"]), ms(wl["p99"]), ms(wl["max"])],
        ],
        caption=(
            f"cut short: the whole wave would take about {fmt(lateness['whole_wave_estimate_s'])} s; "
            if lateness["cut_short"]
            else ""
        )
        + f"{lateness['fired']:,} fired in {fmt(wave_s)} s ({fmt(lateness['fired_per_s'])}/s); "
        f"{lateness['superseded_by_breach']} superseded by their breach; with the resolution reminders due meanwhile "
        f"{fmt(lateness['all_written_in_wave'])} written ({fmt(lateness['all_written_per_s'])}/s); cores in the wave: "
        + ", ".join(f"{k} {v:.2f}" for k, v in wave_processes.get("cores", {}).items())
        + "; worker paused for the collector {}% of the wave, full collections {}".format(
            *gc_cells(wave_processes.get("gc", {}))
        ),
    )
    return {
        "size": args.size,
        "params": {k: v for k, v in vars(args).items() if k != "keep"},
        "tickets": len(ids),
        "errors": len(submitted) - len(ids),
        "acknowledged": acked,
        "memory": memory,
        "intake_by_open_tickets": by_open,
        "wave_processes": wave_processes,
        "timeline": timeline.samples,
        "routed_by_submit": [
            [round(x.at, 3), round(times.routed[x.key] - x.at, 3)] for x in submitted if x.key in times.routed
        ],
        "timer_lateness": lateness,
        "opens_at": opens_at.isoformat(),
        "due": due.isoformat(),
    }


CORE_COLUMNS = ["worker", "temporal", "pg", "driver", "autovac", "temporal MiB", "gc %", "full gc ms"]


def core_cells(p: dict[str, Any]) -> list[str]:
    cores = p.get("cores", {})
    return [
        *(fmt(cores.get(k), 2) for k in ("worker", "temporal", "postgres", "driver")),
        fmt(p.get("autovacuum_runs"), 0),
        fmt(p.get("max_rss_mib", {}).get("temporal"), 0),
        *gc_cells(p.get("gc", {})),
    ]


def main(argv: list[str] | None = None) -> None:
    write_results("scale", asyncio.run(run(parse(argv))))


if __name__ == "__main__":
    main()
