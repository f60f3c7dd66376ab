"""The worker's collector pauses: measured by the interpreter's own collector, served by prometheus-client."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from activities.gc_pauses import NAME, GcPauses


class Clock:
    def __init__(self, *readings: float) -> None:
        self.readings: Iterator[float] = iter(readings)

    def __call__(self) -> float:
        return next(self.readings)


def value(registry: CollectorRegistry, suffix: str, **labels: str) -> float:
    got = registry.get_sample_value(f"{NAME}{suffix}", labels)
    assert got is not None, f"{NAME}{suffix} {labels} is not served"
    return got


def test_each_pause_lands_in_the_first_bucket_that_holds_it_and_in_its_generations_sum() -> None:
    # three pauses: 0.3 s and 0.25 s (exactly a bound: le is inclusive) of full collections, 0.002 s of a young one
    pauses = GcPauses(Clock(10.0, 10.3, 20.0, 20.25, 30.0, 30.002))
    registry = CollectorRegistry()
    registry.register(pauses)
    for generation in (2, 2, 0):
        pauses.callback("start", {"generation": generation, "collected": 0, "uncollectable": 0})
        pauses.callback("stop", {"generation": generation, "collected": 5, "uncollectable": 0})

    assert value(registry, "_count", generation="2") == 2
    assert value(registry, "_sum", generation="2") == pytest.approx(0.55)
    assert value(registry, "_bucket", generation="2", le="0.1") == 0
    assert value(registry, "_bucket", generation="2", le="0.25") == 1
    assert value(registry, "_bucket", generation="2", le="0.5") == 2
    assert value(registry, "_bucket", generation="2", le="+Inf") == 2
    assert value(registry, "_bucket", generation="0", le="0.001") == 0
    assert value(registry, "_bucket", generation="0", le="0.0025") == 1
    assert value(registry, "_count", generation="1") == 0  # every generation is served, at zero until it runs


def test_a_real_full_collection_is_measured_and_served_once_however_often_exported() -> None:
    pauses = GcPauses()
    registry = CollectorRegistry()
    pauses.export(registry)
    pauses.export(registry)  # the worker's registry is the process's: a second export must not register twice
    try:
        before = value(registry, "_count", generation="2")
        cycle: list[object] = []
        cycle.append(cycle)  # garbage only the cycle collector can free
        del cycle
        gc.collect(2)
        assert value(registry, "_count", generation="2") == before + 1
        assert value(registry, "_sum", generation="2") > 0
        assert generate_latest(registry).decode().count(f"# TYPE {NAME} histogram") == 1
    finally:
        pauses.uninstall()
    gc.collect(2)
    assert value(registry, "_count", generation="2") == before + 1  # uninstalled: no longer measured
