"""The CLI's `--as` option: whose departments `list`, `show` and `report` are limited to.

It scopes what is shown; it does not authenticate anyone (see ticketflow.access and the README).
"""

from __future__ import annotations

from typing import Annotated

import typer

from ticketflow.access import UnknownViewer, Viewer, resolve_viewer
from ticketflow.config import Config, Settings

AS_HELP = (
    "Show only what this agent (id or e-mail) or department lead (address) may see: their departments' "
    "tickets. Default: $TICKETFLOW_AS. With neither (or empty) you act as the operator and see every ticket."
)
AsOption = Annotated[str | None, typer.Option("--as", metavar="AGENT", help=AS_HELP)]


def cli_viewer(as_: str | None, settings: Settings, config: Config | None = None) -> Viewer:
    """The viewer of `--as` or TICKETFLOW_AS; no identity reads no policy, so operators see no change."""
    identity = as_ if as_ is not None else settings.viewer
    if identity is None or not identity.strip():
        return Viewer.operator()
    try:
        policy = config if config is not None else settings.policy()
    except (OSError, ValueError) as err:  # a missing file, bad TOML or a policy that does not validate
        typer.echo(f"error: cannot load the policy to look up {identity!r}: {err}", err=True)
        raise typer.Exit(1) from None
    try:
        return resolve_viewer(policy, identity)
    except UnknownViewer as err:
        typer.echo(f"error: --as: {err}", err=True)
        raise typer.Exit(2) from None


def denied(message: object) -> typer.Exit:
    """Print an access refusal the same way in every command; the caller raises what this returns."""
    typer.echo(f"access denied: {message}", err=True)
    return typer.Exit(1)
