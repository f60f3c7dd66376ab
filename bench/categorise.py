"""Categorisation speed on one core: tickets per second classified by the keyword rules and by the learned
model, on the multilingual data set (../shared/datasets/tickets-multilang.csv; the demo's samples without it).

Rows: the rules alone (ticketflow.rules.categorise, as the categorise activity calls it), the activity's whole
CPU path without the database (validating the stored row, then the rules), the model's prediction for one
ticket as the activity asks for it (three targets), the same in batches (what batching would buy), and the
model + rules together. The model is trained in the run on 80% of the rows and timed on the other 20%.

    .venv/bin/python -m bench.categorise --size small    # about 1 minute
    .venv/bin/python -m bench.categorise --size full     # about 3 minutes
"""

from __future__ import annotations

import argparse
import os
import random
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import ROOT, busy_warning, console, fmt, table, write_results
from starter.demo import SAMPLES
from ticketflow.config import default_config
from ticketflow.models import TicketIn
from ticketflow.rules import categorise

DATASET = ROOT.parent / "shared" / "datasets" / "tickets-multilang.csv"
SIZES: dict[str, dict[str, Any]] = {"small": {"seconds": 2.0}, "full": {"seconds": 15.0}}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=sorted(SIZES), default="small")
    p.add_argument("--seconds", type=float, help="how long each measurement runs")
    p.add_argument("--dataset", type=Path, default=DATASET)
    p.add_argument("--batch", type=int, default=64, help="batch size of the batched model row")
    args = p.parse_args(argv)
    for k, v in SIZES[args.size].items():
        if getattr(args, k, None) is None:
            setattr(args, k, v)
    return args


def rows_from(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, str]], str]:
    """Ticket rows as the categorise activity rebuilds them from PostgreSQL, and the labelled examples."""
    if path.exists():
        from activities.classifier import read_examples

        examples = read_examples(path)
        texts = [(e.text.split("\n", 1)[0], e.text.split("\n", 1)[-1]) for e in examples]
        labels = [e.labels for e in examples]
        source = str(path)
    else:
        texts = [(subject, body) for _, subject, body in SAMPLES]
        labels = []
        source = "the demo's samples (no data set at " + str(path) + ")"
    rows = []
    for i, (subject, body) in enumerate(texts):
        rows.append(
            {
                "subject": " ".join(subject.split())[:200] or "(no subject)",
                "body": body or subject,
                "channel": "email",
                "customer": {"name": f"Customer {i}", "email": f"c{i}@example.com", "type": "regular"},
            }
        )
    return rows, labels, source


def measure(
    name: str, items: Sequence[Any], fn: Callable[[Any], object], seconds: float, per_call: int = 1
) -> dict[str, Any]:
    """Calls fn over items (cycling) for about `seconds`; tickets per second of CPU time on this core."""
    fn(items[0])  # warm caches (compiled patterns, lazy imports)
    n, i = 0, 0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    while time.perf_counter() - wall0 < seconds:
        fn(items[i % len(items)])
        i += 1
        n += per_call
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return {
        "name": name,
        "tickets": n,
        "per_s_cpu": n / cpu if cpu else None,
        "per_s_wall": n / wall,
        "us_per_ticket_cpu": 1e6 * cpu / n if n else None,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    busy_warning()
    # one core: numerical libraries read these when first imported (scikit-learn is imported below)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    with_core = sorted(os.sched_getaffinity(0))[0]
    os.sched_setaffinity(0, {with_core})
    config = default_config()
    rows, labels, source = rows_from(args.dataset)
    tickets = [TicketIn.model_validate(r) for r in rows]
    at = datetime.now(UTC)
    console.log(f"{len(tickets)} tickets from {source}, pinned to CPU {with_core}")

    results = [
        measure("rules", tickets, lambda t: categorise(t, config, None, first_time=False, at=at), args.seconds),
        measure(
            "activity path without the database (validate row + rules)",
            rows,
            lambda r: categorise(TicketIn.model_validate(r), config, None, first_time=False, at=at),
            args.seconds,
        ),
    ]
    training: dict[str, Any] = {}
    if labels:
        from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

        from activities.classifier import Example, TicketClassifier

        order = list(range(len(rows)))
        random.Random(7).shuffle(order)
        cut = int(0.8 * len(order))
        train = [Example(f"{rows[i]['subject']}\n{rows[i]['body']}", labels[i]) for i in order[:cut]]
        held_out = [tickets[i] for i in order[cut:]]
        texts = [f"{t.subject}\n{t.body}" for t in held_out]
        with threadpool_limits(1):
            t0 = time.process_time()
            model = TicketClassifier.train(train)
            training = {"examples": len(train), "cpu_seconds": time.process_time() - t0}
            console.log(f"model trained on {len(train)} tickets in {training['cpu_seconds']:.1f} s of CPU")
            results.append(measure("model, one ticket (3 targets)", texts, model.predict, args.seconds))
            batches = [texts[i : i + args.batch] for i in range(0, len(texts) - args.batch + 1, args.batch)] or [texts]

            def batched(batch: list[str]) -> None:
                for m in model.models.values():
                    m.predict_proba(batch)

            results.append(
                measure(
                    f"model, batches of {len(batches[0])}", batches, batched, args.seconds, per_call=len(batches[0])
                )
            )
            results.append(
                measure(
                    "model + rules (the activity with a model)",
                    held_out,
                    lambda t: categorise(t, config, model.predict(f"{t.subject}\n{t.body}"), first_time=False, at=at),
                    args.seconds,
                )
            )
    table(
        "categorisation on one core",
        ["what", "tickets/s", "µs per ticket", "tickets timed"],
        [[r["name"], fmt(r["per_s_cpu"], 0), fmt(r["us_per_ticket_cpu"], 0), fmt(r["tickets"])] for r in results],
        caption="per second of CPU time of this process, pinned to one core",
    )
    return {"size": args.size, "dataset": source, "tickets": len(tickets), "training": training, "results": results}


def main(argv: list[str] | None = None) -> None:
    write_results("categorise", run(parse(argv)))


if __name__ == "__main__":
    main()
