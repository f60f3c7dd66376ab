"""The worker's pauses for Python's cycle collector, as a histogram by generation.

A collection stops every thread of the process, so workflow activations and activities wait it out alike.
A full (generation 2) collection walks every tracked object, and with the strict sandbox each cached
workflow holds its own copy of the workflow module: at the default cache of 1,000 that is about 500,000
objects, and the worker paused 0.6 s every 10-15 s under load (0.25 s with the shared sandbox, the
default). That is what intake's p99 latency was made of (README, Performance), so the pauses are
exported beside the latency they cause; prometheus-client's own `python_gc_*` series count collections
but not how long they stop the process.
"""

from __future__ import annotations

import gc
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator

from prometheus_client.metrics_core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

NAME = "ticketflow_worker_gc_pause_seconds"
DOC = "How long each of the cycle collector's runs stopped the worker, by generation (2: a full collection)"
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
GENERATIONS = 3


class GcPauses(Collector):
    """Counts kept in plain lists of numbers by the collector's callback, read by the scrape.

    The callback takes no lock: it runs inside whichever thread's allocation set off the collection, and a
    lock that this very thread already held (a metric's, mid-update) would never be released. Updating a list
    item is atomic under the GIL, and a scrape that lands between a pause's count and its sum is off by that
    one pause until the next scrape.
    """

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self._started = [0.0] * GENERATIONS
        self._counts = [[0] * (len(BUCKETS) + 1) for _ in range(GENERATIONS)]  # the last one: above every bound
        self._sums = [0.0] * GENERATIONS
        self._registries: list[CollectorRegistry] = []

    def callback(self, phase: str, info: dict[str, int]) -> None:
        generation = info["generation"]
        if phase == "start":
            self._started[generation] = self._clock()
            return
        pause = self._clock() - self._started[generation]
        self._counts[generation][bisect_left(BUCKETS, pause)] += 1
        self._sums[generation] += pause

    def install(self) -> GcPauses:
        if self.callback not in gc.callbacks:
            gc.callbacks.append(self.callback)
        return self

    def export(self, registry: CollectorRegistry) -> None:
        """Measure from now on, and serve the histogram in `registry` (once, however often asked)."""
        self.install()
        if not any(r is registry for r in self._registries):
            registry.register(self)
            self._registries.append(registry)

    def uninstall(self) -> None:
        if self.callback in gc.callbacks:
            gc.callbacks.remove(self.callback)

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(NAME, DOC, labels=["generation"])
        for generation in range(GENERATIONS):
            counts, total = list(self._counts[generation]), self._sums[generation]
            cumulative, buckets = 0, []
            for bound, n in zip((*BUCKETS, float("inf")), counts, strict=True):
                cumulative += n
                buckets.append(("+Inf" if bound == float("inf") else str(bound), cumulative))
            family.add_metric([str(generation)], buckets, sum_value=total)
        yield family


GC_PAUSES = GcPauses()  # the worker process's one measure (worker.metrics_registry exports it)
