"""Prometheus metrics: counters kept by this process, and gauges read from the database."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlmodel import Session

from bot.runtime import Runtime
from storage import queries

REGISTRY = CollectorRegistry()

#: Inbound messages accepted over HTTP, by channel and outcome (stored, duplicate, refused).
INBOUND = Counter(
    "redesk_inbound_messages_total", "Inbound messages by channel and outcome",
    ["channel", "outcome"], registry=REGISTRY,
)


class DatabaseCollector(Collector):
    """Requests by state and the unfinished inbox/outbox backlog, read at scrape time."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """Reads the gauges."""
        with Session(self.runtime.engine) as session:
            states = queries.count_requests_by_state(session=session)
            backlog = queries.count_backlog(session=session)
        by_state = GaugeMetricFamily("redesk_requests", "Requests by state", labels=["state"])
        for state, count in sorted(states.items()):
            by_state.add_metric([state], count)
        yield by_state
        pending = GaugeMetricFamily("redesk_backlog", "Unfinished rows", labels=["queue"])
        for queue, count in backlog.items():
            pending.add_metric([queue], count)
        yield pending


def render_metrics(runtime: Runtime) -> bytes:
    """The Prometheus text exposition of every metric."""
    # The gauges are read from this runtime's database only; a collector registered globally
    # per runtime would repeat them (and keep stale databases) once a second app exists.
    gauges = CollectorRegistry()
    gauges.register(DatabaseCollector(runtime))
    return generate_latest(REGISTRY) + generate_latest(gauges)
