"""`ticketflow`: run the embedded stack or a worker, and open, inspect and work tickets."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import re
import sys
import tomllib
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from starter.access_cli import AsOption, cli_viewer, denied
from starter.client import (
    AccessDenied,
    InvalidTransition,
    TicketClient,
    TicketError,
    TicketNotFound,
    TicketValidationError,
)
from starter.codec_server import codec_server
from starter.dashboards_cli import dashboards_app
from starter.quarantine_cli import quarantine_app
from starter.reports import report
from starter.serving import Stoppable
from ticketflow import event_loop
from ticketflow.access import Viewer
from ticketflow.codec import CodecKeyError
from ticketflow.config import Settings, settings_problems
from ticketflow.models import Priority, RateRequest, Status, TicketState
from ticketflow.temporal import runtime

app = typer.Typer(
    help="ticketflow: every help-desk ticket a durable Temporal workflow.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)
T = TypeVar("T")

# --- plumbing -----------------------------------------------------------------------------------------


def _run(factory: Callable[[TicketClient], Awaitable[T]], viewer: Viewer | None = None) -> T:
    settings = Settings()

    async def go() -> T:
        try:
            client = await TicketClient.connect(
                settings.temporal_address, settings.temporal_namespace, settings.task_queue, viewer=viewer
            )
        except ConnectionError as err:
            err_console.print(f"[red]error:[/] {err}\n(is `ticketflow dev` or a Temporal server running?)")
            raise typer.Exit(1) from None
        return await factory(client)

    try:
        return asyncio.run(go())
    except TicketValidationError as err:
        err_console.print(f"[red]invalid input:[/] {err}")
        raise typer.Exit(2) from None
    except TicketNotFound as err:
        err_console.print(f"[red]not found:[/] {err}")
        raise typer.Exit(1) from None
    except InvalidTransition as err:
        err_console.print(f"[red]not allowed:[/] {err}")
        raise typer.Exit(1) from None
    except AccessDenied as err:
        raise denied(err) from None
    except (TicketError, ValueError) as err:
        err_console.print(f"[red]error:[/] {err}")
        raise typer.Exit(1) from None


def _print_state(state: TicketState, as_json: bool = False) -> None:
    if as_json:
        console.print_json(state.model_dump_json())
        return
    t = Table(show_header=False, box=None, pad_edge=False)
    t.add_column(style="bold")
    t.add_column()
    rows: list[tuple[str, Any]] = [
        ("ticket", state.ticket_id),
        ("status", state.status),
        ("channel", state.channel),
        ("department", state.department),
        ("category", state.category),
        ("priority", state.priority),
        ("language", state.language),
        ("tier", state.tier),
        ("queue", state.queue),
        ("assignee", state.assignee),
        ("created", state.created_at),
        ("first response", state.first_response_at),
        ("resolved", state.resolved_at),
        ("SLA breached", state.sla_breached),
        ("messages", state.messages),
    ]
    for k, v in rows:
        t.add_row(k, "-" if v is None else str(v))
    console.print(t)
    if state.sla or state.tier_clock:
        from datetime import UTC, datetime

        now = datetime.now(UTC)
        sla = Table(title="clocks")
        cal = state.policy.calendar if state.policy and state.sla_v2 else None
        for col in ("clock", "counts", "target", "elapsed", "state", "due at (UTC)", "breached"):
            sla.add_column(col)
        clocks = list(state.sla.values()) + ([state.tier_clock] if state.tier_clock else [])
        for c in clocks:
            st = "met" if c.fulfilled_at else ("paused" if c.paused else "running")
            due = c.due_at(cal)
            sla.add_row(
                c.metric,
                "business hours" if c.business else "calendar",
                str(timedelta(seconds=c.target_seconds)),
                str(timedelta(seconds=int(c.elapsed(now, cal)))),
                st,
                f"{due:%Y-%m-%d %H:%M:%S}" if due else "-",
                "yes" if c.breached else "no",
            )
        console.print(sla)
    if state.categorisation_reasons:
        console.print("[bold]why:[/] " + "; ".join(state.categorisation_reasons))
    for h in state.held:
        console.print(f"[bold]held[/] {h.note.template} to {h.note.to} until {h.release_at:%Y-%m-%d %H:%M} UTC")
    for e in state.escalations:
        console.print(
            f"[bold]escalated[/] {e.from_tier} -> {e.to_tier} ({e.cause}) at {e.at:%Y-%m-%d %H:%M}: {e.reason}"
        )
    for r in state.ratings:
        console.print(f"[bold]rated[/] {r.raw} (score {r.score}) for resolution {r.resolution} by {r.agent}")


_DURATION = re.compile(r"^(\d+)\s*([smhd])$")


def parse_duration(value: str) -> timedelta:
    m = _DURATION.match(value.strip())
    if not m:
        raise typer.BadParameter(f"{value!r} is not a duration like 30m, 2h, 1d")
    n, unit = int(m.group(1)), m.group(2)
    units = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
    return timedelta(**{units[unit]: n})


# --- running things ------------------------------------------------------------------------------------


@app.command()
def dev(
    demo: Annotated[int, typer.Option(help="Submit N realistic tickets and work some of them.")] = 0,
    seed: Annotated[int | None, typer.Option(help="Random seed for the demo (default: new tickets each run).")] = None,
    ui_port: Annotated[int, typer.Option(help="Temporal UI port.")] = 8233,
) -> None:
    """Run everything locally: Temporal dev server, PostgreSQL, SMTP sink, worker and metrics."""
    from starter.dev import run_dev

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(run_dev(Settings(), console, demo=demo, seed=seed or random.randrange(1 << 30), ui_port=ui_port))
    except (RuntimeError, ConnectionError, TimeoutError, FileNotFoundError) as err:
        err_console.print(f"[red]ticketflow dev failed:[/] {err}")
        raise typer.Exit(1) from None


def _serve(label: str, start: Callable[[TicketClient, Settings], Awaitable[Stoppable]], where: str) -> None:
    from starter.serving import serve_until_signal

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings()
    console.print(f"{label} on {where.format(s=settings)}; Ctrl-C stops it")
    try:
        asyncio.run(serve_until_signal(settings, lambda tickets: start(tickets, settings)))
    except ConnectionError as err:
        err_console.print(f"[red]{label} cannot start:[/] {err}")
        raise typer.Exit(1) from None


@app.command("http-intake")
def http_intake() -> None:
    """Run the HTTP intake (POST /tickets) for web forms, chat and APIs (TICKETFLOW_INTAKE_HTTP_*)."""
    from starter.http_intake import HttpIntakeServer

    _serve(
        "http intake",
        lambda tickets, s: HttpIntakeServer(tickets, s.intake_http_host, s.intake_http_port).start(),
        "http://{s.intake_http_host}:{s.intake_http_port}/tickets",
    )


@app.command("mail-intake")
def mail_intake() -> None:
    """Run the inbound SMTP server that turns mail into tickets and replies (TICKETFLOW_INTAKE_SMTP_*)."""
    from starter.mail_intake import MailIntakeServer

    settings = Settings()
    if settings.intake_metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings.intake_metrics_port, addr=settings.metrics_host)
    _serve(
        "mail intake",
        lambda tickets, s: MailIntakeServer(tickets, s.intake_smtp_host, s.intake_smtp_port).start(),
        "smtp://{s.intake_smtp_host}:{s.intake_smtp_port}",
    )


@app.command("survey-pages")
def survey_pages() -> None:
    """Serve the CSAT survey pages behind the signed links (TICKETFLOW_SURVEY_*)."""
    from starter.survey_pages import SurveyServer

    settings = Settings()
    if settings.survey_secret is None:
        err_console.print("TICKETFLOW_SURVEY_SECRET is not set: it must be the workers' survey key", markup=False)
        raise typer.Exit(2)
    secret = settings.survey_secret.get_secret_value().encode("utf-8")
    _serve(
        "survey pages",
        lambda tickets, s: SurveyServer(
            tickets, secret, s.policy().csat, s.survey_http_host, s.survey_http_port
        ).start(),
        "http://{s.survey_http_host}:{s.survey_http_port}/survey/...",
    )


@app.command()
def worker() -> None:
    """Run a worker against TICKETFLOW_TEMPORAL_ADDRESS and DATABASE_URL (production mode)."""
    from worker import run_worker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings()
    try:
        settings.policy()  # a broken policy file stops here, with every problem named
    except (ValidationError, tomllib.TOMLDecodeError, OSError) as err:
        # plain text, not rich: it would wrap the path
        typer.echo(f"worker cannot start: the policy file {settings.config_file} is invalid:\n{err}", err=True)
        raise typer.Exit(2) from None
    try:
        event_loop.run(run_worker(settings), settings.event_loop)
    except event_loop.EventLoopUnavailable as err:
        typer.echo(f"worker cannot start: {err}", err=True)
        raise typer.Exit(2) from None
    except ConnectionError as err:
        err_console.print(f"[red]worker cannot start:[/] {err}")
        raise typer.Exit(1) from None
    except CodecKeyError as err:
        typer.echo(f"worker cannot start: TICKETFLOW_CODEC_KEYS: {err}", err=True)
        raise typer.Exit(2) from None


@app.command()
def schema(
    output: Annotated[Path, typer.Option(help="Folder for the JSON Schema files.")] = Path("schemas"),
) -> None:
    """Write the JSON Schemas of the workflow input, every update and the state query."""
    from ticketflow.schemas import write_schemas

    for path in write_schemas(output):
        console.print(str(path))


@app.command("register-search-attributes")
def register_search_attributes_command() -> None:
    """Register ticketflow's search attributes on the Temporal namespace (idempotent)."""
    from starter.admin import register_search_attributes

    added = _run(lambda c: register_search_attributes(c.client))
    console.print(f"registered: {', '.join(added)}" if added else "all search attributes already registered")


# --- tickets -------------------------------------------------------------------------------------------


@app.command("open")
def open_ticket(
    subject: Annotated[str | None, typer.Option()] = None,
    body: Annotated[str | None, typer.Option()] = None,
    name: Annotated[str | None, typer.Option(help="Customer name.")] = None,
    email: Annotated[str | None, typer.Option(help="Customer email.")] = None,
    channel: Annotated[str, typer.Option()] = "api",
    customer_type: Annotated[str, typer.Option("--type", help="regular, vip, partner or reseller.")] = "regular",
    region: Annotated[str | None, typer.Option()] = None,
    language: Annotated[str | None, typer.Option()] = None,
    external_id: Annotated[str | None, typer.Option(help="External message id (deduplicates).")] = None,
    tag: Annotated[list[str] | None, typer.Option(help="Tag (repeatable).")] = None,
    json_file: Annotated[
        Path | None, typer.Option("--json", help="Read the whole ticket as JSON from a file, or - for stdin.")
    ] = None,
) -> None:
    """Open a ticket (validated before anything starts)."""
    if json_file is not None:
        try:
            text = sys.stdin.read() if str(json_file) == "-" else json_file.read_text("utf-8")
            payload: dict[str, Any] = json.loads(text)
        except OSError as err:
            typer.echo(f"invalid input: cannot read {json_file}: {err.strerror or err}", err=True)
            raise typer.Exit(2) from None
        except UnicodeDecodeError:
            typer.echo(f"invalid input: {json_file} is not UTF-8 text", err=True)
            raise typer.Exit(2) from None
        except (json.JSONDecodeError, RecursionError, ValueError) as err:
            reason = "nested too deeply" if isinstance(err, RecursionError) else str(err)
            typer.echo(f"invalid input: not JSON: {reason}"[:300], err=True)
            raise typer.Exit(2) from None
    else:
        customer = {
            k: v
            for k, v in {
                "name": name,
                "email": email,
                "type": customer_type,
                "region": region,
                "language": language,
            }.items()
            if v is not None
        }
        payload = {
            "subject": subject,
            "body": body,
            "customer": customer,
            "channel": channel,
            "external_message_id": external_id,
            "tags": tag or [],
        }
        payload = {k: v for k, v in payload.items() if v is not None}
    opened = _run(lambda c: c.open(payload))
    if opened.duplicate:
        console.print(f"ticket [bold]{opened.ticket_id}[/] already exists for this message (not opened twice)")
    else:
        console.print(f"opened ticket [bold]{opened.ticket_id}[/] (workflow {opened.workflow_id})")


@app.command()
def train(
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="Labelled CSV: subject, body, queue, priority, type.")
    ],
    output: Annotated[Path, typer.Option(help="Folder for the model (TICKETFLOW_MODEL_DIR).")],
) -> None:
    """Train the categorisation model (department/queue, priority, type) on labelled history."""
    from activities.classifier import TicketClassifier, read_examples

    examples = read_examples(file)
    path = TicketClassifier.train(examples).save(output)
    console.print(f"trained on {len(examples)} tickets -> {path}")


@app.command()
def evaluate(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False)],
    model: Annotated[Path | None, typer.Option(help="A trained model; without it, cross-validate on FILE.")] = None,
    folds: Annotated[int, typer.Option(min=2, max=20)] = 5,
    baselines: Annotated[bool, typer.Option(help="Also score the majority class and the rules alone.")] = False,
) -> None:
    """Score the model: accuracy and macro-F1 for queue (with a confusion matrix), priority and type."""
    from activities.classifier import TicketClassifier, format_scores, majority_baseline, read_examples
    from activities.classifier import evaluate as run

    examples = read_examples(file)
    scores = run(examples, TicketClassifier.load(model) if model else None, folds)
    typer.echo(format_scores(scores))  # plain text: "[queue]" is not markup
    if baselines:
        typer.echo("\n--- majority class ---\n" + format_scores(majority_baseline(examples), matrix_for=""))
        typer.echo("\n--- rules alone (department level) ---\n" + _rules_alone(examples))


def _rules_alone(examples: list[Any]) -> str:
    from activities.classifier import score
    from ticketflow.config import default_config
    from ticketflow.models import TicketIn
    from ticketflow.rules import categorise

    cfg = default_config()
    truth, predicted = [], []
    for e in examples:
        subject, _, body = e.text.partition("\n")
        t = TicketIn.model_validate(
            {
                "subject": subject[:500] or "-",
                "body": body or "-",
                "channel": "email",
                "customer": {"name": "x", "email": "x@example.com"},
            }
        )
        truth.append(cfg.classifier.queue_departments.get(e.labels["queue"], "?"))
        predicted.append(categorise(t, cfg).department)
    s = score("department", truth, predicted)
    return f"accuracy: {s.accuracy:.3f}\nmacro-F1: {s.macro_f1:.3f}"


@app.command("import")
def import_tickets(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="CSV export of another help desk.")],
    source: Annotated[str, typer.Option(help="Name of the source system (part of each imported id).")] = "helpdesk",
    mapping_file: Annotated[
        Path | None, typer.Option("--mapping", help="JSON column mapping (defaults read the common export).")
    ] = None,
    concurrency: Annotated[int, typer.Option(min=1, max=64)] = 8,
) -> None:
    """Migrate open tickets from a CSV export; re-run to resume, nothing is opened twice."""
    from starter.importer import ColumnMapping, import_csv

    raw = json.loads(mapping_file.read_text("utf-8")) if mapping_file else {}
    mapping = ColumnMapping.model_validate({"source": source, **raw})
    report = _run(lambda c: import_csv(c, file, mapping, concurrency=concurrency, console=console))
    t = Table(title=f"import of {file.name}")
    t.add_column("rows")
    t.add_column("opened", justify="right")
    t.add_column("already imported", justify="right")
    t.add_column("closed in source (skipped)", justify="right")
    t.add_column("rejected", justify="right")
    t.add_row(
        str(report.rows),
        str(report.opened),
        str(report.already_imported),
        str(report.skipped_closed),
        str(len(report.rejected)),
    )
    console.print(t)
    for row, reason in report.rejected[:50]:
        console.print(f"[yellow]row {row}[/]: {reason}")
    if len(report.rejected) > 50:
        console.print(f"... and {len(report.rejected) - 50} more rejected rows")


@app.command()
def show(ticket: str, as_json: Annotated[bool, typer.Option("--json")] = False, as_: AsOption = None) -> None:
    """Show a ticket's full state: routing, SLA clocks, escalations, ratings."""
    _print_state(_run(lambda c: c.get(ticket), cli_viewer(as_, Settings())), as_json)


@app.command()
def reply(
    ticket: str,
    agent: Annotated[str, typer.Option()],
    body: Annotated[str, typer.Option()],
    pend: Annotated[bool, typer.Option(help="Then wait on the customer.")] = False,
) -> None:
    """Reply to the customer as an agent."""
    _print_state(_run(lambda c: c.reply(ticket, agent, body, pend)))


@app.command()
def note(ticket: str, agent: Annotated[str, typer.Option()], body: Annotated[str, typer.Option()]) -> None:
    """Add an internal note (never sent to the customer)."""
    _print_state(_run(lambda c: c.note(ticket, agent, body)))


@app.command()
def assign(
    ticket: str, agent: str, actor: Annotated[str, typer.Option()], reason: Annotated[str, typer.Option()] = ""
) -> None:
    """Assign a ticket to an agent of its department."""
    _print_state(_run(lambda c: c.assign(ticket, actor, agent, reason)))


@app.command("customer-reply")
def customer_reply(ticket: str, body: Annotated[str, typer.Option()]) -> None:
    """Add a reply from the customer (reopens a resolved ticket)."""
    _print_state(_run(lambda c: c.customer_reply(ticket, body)))


@app.command()
def pend(ticket: str, agent: Annotated[str, typer.Option()], reason: Annotated[str, typer.Option()] = "") -> None:
    """Wait on the customer: SLA and tier clocks pause."""
    _print_state(_run(lambda c: c.pend(ticket, agent, reason)))


@app.command()
def resolve(ticket: str, agent: Annotated[str, typer.Option()], note: Annotated[str, typer.Option()] = "") -> None:
    """Resolve a ticket; the CSAT survey follows after the configured delay."""
    _print_state(_run(lambda c: c.resolve(ticket, agent, note)))


@app.command()
def reopen(ticket: str, actor: Annotated[str, typer.Option()], reason: Annotated[str, typer.Option()] = "") -> None:
    """Reopen a resolved ticket."""
    _print_state(_run(lambda c: c.reopen(ticket, actor, reason)))


@app.command()
def escalate(ticket: str, actor: Annotated[str, typer.Option()], reason: Annotated[str, typer.Option()]) -> None:
    """Move a ticket up one tier now, with a reason."""
    _print_state(_run(lambda c: c.escalate(ticket, actor, reason)))


@app.command()
def deescalate(ticket: str, actor: Annotated[str, typer.Option()], reason: Annotated[str, typer.Option()]) -> None:
    """Move a ticket down one tier, with a reason."""
    _print_state(_run(lambda c: c.deescalate(ticket, actor, reason)))


@app.command()
def priority(
    ticket: str,
    new: Annotated[Priority, typer.Argument(help="urgent, high, normal or low")],
    actor: Annotated[str, typer.Option()],
    reason: Annotated[str, typer.Option()] = "",
) -> None:
    """Change a ticket's priority; every SLA deadline is recomputed."""
    _print_state(_run(lambda c: c.change_priority(ticket, actor, new, reason)))


@app.command()
def transfer(
    ticket: str,
    department: str,
    actor: Annotated[str, typer.Option()],
    reason: Annotated[str, typer.Option()] = "",
) -> None:
    """Move a ticket to another department (re-routed; deadlines on its business hours)."""
    _print_state(_run(lambda c: c.transfer(ticket, actor, department, reason)))


@app.command("refresh-policy")
def refresh_policy(
    ticket: str, actor: Annotated[str, typer.Option()], reason: Annotated[str, typer.Option()] = ""
) -> None:
    """Apply the current policy file (targets, business hours) to a live ticket."""
    _print_state(_run(lambda c: c.refresh_policy(ticket, actor, reason)))


@app.command()
def rate(ticket: str, rating: str, comment: Annotated[str, typer.Option()] = "") -> None:
    """Record a CSAT rating: 1-5, good or bad."""
    value: int | str = int(rating) if rating.isascii() and rating.isdigit() and len(rating) < 4 else rating
    try:  # refuse a bad rating before connecting anywhere
        RateRequest(rating=value, comment=comment)
    except ValidationError as err:
        typer.echo(f"invalid input: {err.errors()[0]['msg']}", err=True)
        raise typer.Exit(2) from None
    _print_state(_run(lambda c: c.rate(ticket, value, comment)))


app.add_typer(dashboards_app, name="dashboards")
app.add_typer(quarantine_app, name="quarantine")
app.command("codec-server", help="Decrypt payloads for the Temporal UI/CLI of authorised operators.")(codec_server)
templates_app = typer.Typer(help="Email templates: check that every one renders in every language.")
app.add_typer(templates_app, name="templates")


@templates_app.command("check")
def templates_check(
    directory: Annotated[
        Path | None, typer.Option("--dir", help="A templates folder to check instead of the installed one")
    ] = None,
) -> None:
    """Render every template in every language with sample data (both survey scales); exit 1 on any problem."""
    from activities.mail import Templates
    from activities.template_check import check

    if directory is not None and not directory.is_dir():
        typer.echo(f"error: {directory} is not a folder of templates", err=True)
        raise typer.Exit(2)
    templates = Templates(directory)
    problems = check(templates, Settings().policy())
    for problem in problems:
        typer.echo(f"error: {problem}", err=True)
    if problems:
        raise typer.Exit(1)
    languages = templates.languages()
    typer.echo(f"{len(templates.names())} templates render in {len(languages)} languages: {', '.join(languages)}")


app.command("report", help="The department report from PostgreSQL (LiveAgent columns + SLA compliance).")(report)


@app.command("list")
def list_tickets(
    department: Annotated[str | None, typer.Option()] = None,
    status: Annotated[Status | None, typer.Option()] = None,
    priority: Annotated[Priority | None, typer.Option()] = None,
    tier: Annotated[int | None, typer.Option(min=1, max=4)] = None,
    min_tier: Annotated[int | None, typer.Option(min=1, max=4)] = None,
    breached: Annotated[bool | None, typer.Option("--breached/--not-breached")] = None,
    due_within: Annotated[str | None, typer.Option(help="SLA due within e.g. 30m, 2h.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10000)] = 50,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    as_: AsOption = None,
) -> None:
    """List tickets through Temporal visibility (search attributes)."""
    window = parse_duration(due_within) if due_within else None
    viewer = cli_viewer(as_, Settings())
    rows = _run(
        lambda c: c.list(
            limit=limit,
            department=department,
            status=status,
            priority=priority,
            tier=tier,
            min_tier=min_tier,
            breached=breached,
            due_within=window,
        ),
        viewer,
    )
    if as_json:
        console.print_json(json.dumps([r.model_dump(mode="json") for r in rows]))
        return
    t = Table(title=f"{len(rows)} tickets")
    t.add_column("ticket", no_wrap=True, min_width=12)
    for col in ("status", "department", "priority", "tier", "breached", "SLA due (UTC)", "channel", "opened (UTC)"):
        t.add_column(col, overflow="fold")
    for r in rows:
        t.add_row(
            r.ticket_id,
            r.status or "-",
            r.department or "-",
            r.priority or "-",
            str(r.tier or "-"),
            "yes" if r.sla_breached else "no",
            f"{r.sla_due_at:%m-%d %H:%M}" if r.sla_due_at else "-",
            r.channel or "-",
            f"{r.started_at:%m-%d %H:%M}",
        )
    console.print(t)


def main() -> None:
    """The `ticketflow` command: a bad TICKETFLOW_* setting is named, without a traceback (exit 2)."""
    try:
        app()
    except ValidationError as err:
        if err.title != Settings.__name__:
            raise
        typer.echo(settings_problems(err), err=True)
        raise SystemExit(2) from None
    except SystemExit as done:
        if runtime.cache_info().currsize:
            exit_without_teardown(done.code)
        raise


def exit_without_teardown(code: int | str | None) -> NoReturn:
    """Exit once a command that started the Temporal SDK's runtime is done, without the interpreter's teardown.

    The SDK's Rust threads can still touch the GIL while CPython finalizes, which aborts a finished command
    with "Fatal Python error: PyGILState_Release" and exit status -6 (temporalio/sdk-python#300, open; seen
    here on `ticketflow list`). Every command has finished its work and its own cleanup by now, and nothing
    registers atexit handlers, so the output is flushed and the process ends at once with the command's code."""
    if isinstance(code, str):
        print(code, file=sys.stderr)
    status = code if isinstance(code, int) else (0 if code is None else 1)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a reader gone, or a stream closed
            stream.flush()
    os._exit(status)


if __name__ == "__main__":
    main()
