"""`ticketflow dashboards publish`: upload the checked-in dashboards to a Grafana someone else runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit, urlunsplit

import typer
from grafana_client.api import GrafanaApi
from rich.console import Console
from rich.table import Table
from rich.text import Text

import dashboards
from dashboards.publish import PublishError, load_dashboards, postgres_datasource, prometheus_datasource, publish

DEFAULT_DIR = Path(dashboards.__file__).resolve().parent

dashboards_app = typer.Typer(
    help="Grafana dashboards: publish the checked-in dashboards through Grafana's HTTP API.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@dashboards_app.callback()
def _group() -> None:
    """Keep `publish` a subcommand: a Typer app with one command and no callback would run it as the app itself."""


_ACTION_STYLE = {"created": "green", "updated": "yellow", "unchanged": "dim"}


def _grafana_url(url: str) -> str:
    """Check the URL and end a sub-path with "/": grafana-client appends "api" to the path without a slash."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise typer.BadParameter(f"{url!r} is not an http(s) URL such as http://127.0.0.1:3000", param_hint="--url")
    path = parts.path if parts.path.endswith("/") or not parts.path else parts.path + "/"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def _credential(token: str | None, basic_auth: str | None) -> str | tuple[str, str]:
    """Exactly one of a service-account token or user:password, so which one was used is never a guess."""
    if token and basic_auth:
        raise typer.BadParameter("give either --token or --basic-auth, not both", param_hint="--token")
    if token:
        return token
    if basic_auth:
        user, sep, password = basic_auth.partition(":")
        if not sep or not user:
            raise typer.BadParameter("expected user:password", param_hint="--basic-auth")
        return (user, password)
    raise typer.BadParameter(
        "pass --token (or TICKETFLOW_GRAFANA_TOKEN) or --basic-auth user:password", param_hint="--token"
    )


@dashboards_app.command("build")
def build_command() -> None:
    """Regenerate the dashboard JSON files from dashboards/definitions.py (a test fails when they are stale)."""
    from dashboards.generate import HERE, render, write

    written = write()
    for path in written:
        typer.echo(f"wrote {path}")
    typer.echo(f"{len(render())} dashboards in {HERE}, {len(written)} changed")


@dashboards_app.command("publish")
def publish_command(
    url: Annotated[str, typer.Option(envvar="TICKETFLOW_GRAFANA_URL", help="Grafana's root URL.")],
    token: Annotated[
        str | None, typer.Option(envvar="TICKETFLOW_GRAFANA_TOKEN", help="Service-account token.", show_default=False)
    ] = None,
    basic_auth: Annotated[
        str | None,
        typer.Option(
            "--basic-auth",
            envvar="TICKETFLOW_GRAFANA_BASIC_AUTH",
            help="user:password instead of a token.",
            show_default=False,
        ),
    ] = None,
    folder: Annotated[
        str, typer.Option(help="uid (and title) of the folder that holds the dashboards.")
    ] = "ticketflow",
    create_folder: Annotated[bool, typer.Option(help="Create the folder when it is missing.")] = False,
    datasources: Annotated[
        bool, typer.Option(help="Also create or update the Prometheus and PostgreSQL data sources (needs Admin).")
    ] = False,
    force_datasources: Annotated[
        bool,
        typer.Option(
            "--force-datasources",
            help="Update the data sources even when they look current: the only way to push a new PostgreSQL "
            "password, which Grafana never returns for comparison.",
        ),
    ] = False,
    prometheus_url: Annotated[
        str, typer.Option(help="Prometheus URL as Grafana reaches it.")
    ] = "http://prometheus:9090",
    postgres_host: Annotated[str, typer.Option(help="PostgreSQL host:port as Grafana reaches it.")] = "postgres:5432",
    postgres_db: Annotated[str, typer.Option(help="PostgreSQL database.")] = "ticketflow",
    postgres_user: Annotated[str, typer.Option(help="PostgreSQL user.")] = "ticketflow",
    postgres_password: Annotated[
        str | None,
        typer.Option(envvar="TICKETFLOW_GRAFANA_PG_PASSWORD", help="PostgreSQL password.", show_default=False),
    ] = None,
    directory: Annotated[
        Path, typer.Option("--dir", help="Directory of dashboard JSON models.", file_okay=False)
    ] = DEFAULT_DIR,
) -> None:
    """Publish every dashboard in --dir to Grafana; writes only what differs, so re-running changes nothing."""
    base_url = _grafana_url(url)
    credential = _credential(token, basic_auth)
    if (datasources or force_datasources) and postgres_password is None:
        raise typer.BadParameter(
            "--datasources needs --postgres-password (or TICKETFLOW_GRAFANA_PG_PASSWORD)", param_hint="--datasources"
        )
    try:
        models = load_dashboards(directory)
        if not models:
            raise PublishError(f"no *.json dashboards in {directory}")
        managed = None
        if datasources or force_datasources:
            managed = [
                prometheus_datasource(prometheus_url),
                postgres_datasource(postgres_host, postgres_db, postgres_user, postgres_password),
            ]
        api: GrafanaApi = GrafanaApi.from_url(base_url, credential=credential)
        report = publish(
            api,
            models,
            folder_uid=folder,
            folder_title=folder,
            create_folder=create_folder,
            datasources=managed,
            force_datasources=force_datasources,
        )
    except PublishError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None

    table = Table(title=Text(f"Grafana at {api.client.url.removesuffix('/api')}"))
    for column in ("kind", "uid", "title", "result"):
        table.add_column(column)
    for change in report.changes:
        table.add_row(
            change.kind, Text(change.uid), Text(change.title), Text(change.action, style=_ACTION_STYLE[change.action])
        )
    console = Console()
    console.print(table)
    console.print(Text(f"{report.changed} changed, {len(report.changes) - report.changed} unchanged"))
