"""A count on a series Prometheus has not scraped yet waits for the scrape that shows the series at zero
(activities.metrics.FirstScrape): otherwise increase() takes the series' first sample, count included, as
its baseline, and the dashboards never show that count. Checked against a real Prometheus server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter

from activities.health import Health, serve
from activities.metrics import FirstScrape
from starter.devstack import free_port
from tests.prom import PrometheusServer
from tests.test_e2e import poll


def counter() -> tuple[CollectorRegistry, Counter]:
    registry = CollectorRegistry()
    return registry, Counter("demo_tickets", "a ticket counter", ["category"], registry=registry)


def value(registry: CollectorRegistry, category: str) -> float | None:
    return registry.get_sample_value("demo_tickets_total", {"category": category})


def test_counts_apply_at_once_while_nothing_serves() -> None:
    registry, tickets = counter()
    FirstScrape().inc(tickets, category="billing")
    assert value(registry, "billing") == 1


def test_a_new_series_is_shown_at_zero_by_a_scrape_begun_after_it_before_its_count() -> None:
    registry, tickets = counter()
    gate = FirstScrape()
    gate.serving()
    before = gate.scrape_begins()  # a scrape in flight when the series appears may or may not show it
    gate.inc(tickets, category="billing")
    gate.inc(tickets, category="billing")
    assert value(registry, "billing") == 0
    gate.scrape_ends(before)
    assert value(registry, "billing") == 0
    after = gate.scrape_begins()
    gate.inc(tickets, category="billing")  # still unshown: held with the others
    gate.scrape_ends(after)
    assert value(registry, "billing") == 3
    gate.inc(tickets, category="billing")  # shown: no wait
    assert value(registry, "billing") == 4


def test_overlapping_scrapes_and_a_stop_release_what_is_held() -> None:
    registry, tickets = counter()
    gate = FirstScrape()
    gate.serving()
    gate.inc(tickets, category="returns")
    first = gate.scrape_begins()
    gate.inc(tickets, category="sales")  # created while scrape `first` runs
    second = gate.scrape_begins()
    gate.scrape_ends(second)  # began after both series: shows both at zero, though `first` is not finished
    assert (value(registry, "returns"), value(registry, "sales")) == (1, 1)
    gate.scrape_ends(first)
    gate.inc(tickets, category="outage")
    assert value(registry, "outage") == 0
    gate.stopped()  # nothing will scrape any more: held counts apply
    assert value(registry, "outage") == 1
    gate.inc(tickets, category="outage")
    assert value(registry, "outage") == 2


async def test_prometheus_counts_the_first_event_of_a_series_only_with_the_wait(tmp_path: Path) -> None:
    registry, tickets = counter()
    gate = FirstScrape()
    port = free_port()
    server = serve("127.0.0.1", port, registry, Health("postgresql://unused"), gate)
    prometheus = PrometheusServer(tmp_path, {"worker": f"127.0.0.1:{port}"}).start()
    started = datetime.now(UTC)
    try:
        assert await poll(prometheus.scraped, lambda jobs: jobs == {"worker"}, within=30) == {"worker"}
        # Both series are born with one count, one through the wait and one as prometheus-client would count it.
        gate.inc(tickets, category="billing")
        tickets.labels(category="outage").inc()

        async def most_increase() -> dict[str, float]:
            result = await prometheus.query_range(
                "increase(demo_tickets_total[1m])", started, datetime.now(UTC) + timedelta(seconds=1), step="1s"
            )
            return {s["metric"]["category"]: max(float(v[1]) for v in s["values"]) for s in result}

        most = await poll(most_increase, lambda m: m.get("billing", 0) >= 1 and "outage" in m, within=30)
        assert most.get("billing", 0) >= 1, f"the count waited for its zero, yet increase() missed it: {most}"
        assert await prometheus.value('demo_tickets_total{category="outage"}') == 1
        assert most["outage"] == 0, f"without the wait increase() cannot see a series' first count: {most}"
    finally:
        prometheus.stop()
        server.shutdown()


def test_a_process_nobody_scrapes_holds_a_count_no_longer_than_max_hold() -> None:
    registry, tickets = counter()
    now = [1000.0]
    gate = FirstScrape(max_hold=300, clock=lambda: now[0])
    gate.serving()
    gate.inc(tickets, category="billing")
    now[0] += 299
    gate.inc(tickets, category="sales")
    assert (value(registry, "billing"), value(registry, "sales")) == (0, 0)
    now[0] += 1  # billing is 300 s old: the next count of anything releases its count, sales' stays held
    gate.inc(tickets, category="returns")
    assert (value(registry, "billing"), value(registry, "sales"), value(registry, "returns")) == (1, 0, 0)
    now[0] += 300
    gate.inc(tickets, category="billing")  # its series is old: no wait, and the others' time is up too
    assert (value(registry, "billing"), value(registry, "sales"), value(registry, "returns")) == (2, 1, 1)
