"""Prometheus metrics: counters kept by this process, and gauges read at scrape time from the
database (requests, backlog, failed inbox rows) and Redis (the scheduler's heartbeat)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlmodel import Session

from bot import scheduler, wake
from bot.runtime import Runtime
from storage import queries

logger = logging.getLogger(__name__)

REGISTRY = CollectorRegistry()

#: Inbound messages accepted over HTTP, by channel and outcome (stored, duplicate, refused).
INBOUND = Counter(
    "redesk_inbound_messages_total",
    "Inbound messages by channel and outcome",
    ["channel", "outcome"],
    registry=REGISTRY,
)


class DatabaseCollector(Collector):
    """Requests by state, the unfinished inbox/outbox backlog, failed inbox rows by channel
    and whether a scheduler runs, read at scrape time."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """Reads the gauges."""
        with Session(self.runtime.engine) as session:
            states = queries.count_requests_by_state(session=session)
            backlog = queries.count_backlog(session=session)
            failed = queries.count_failed_inbox(session=session)
        by_state = GaugeMetricFamily("redesk_requests", "Requests by state", labels=["state"])
        for state, count in sorted(states.items()):
            by_state.add_metric([state], count)
        yield by_state
        pending = GaugeMetricFamily("redesk_backlog", "Unfinished rows", labels=["queue"])
        for queue, count in backlog.items():
            pending.add_metric([queue], count)
        yield pending
        unparsed = GaugeMetricFamily(
            "redesk_inbox_failed",
            "Inbox rows kept as failed (unparseable or given up), "
            "by channel; `redesk inbox failed` lists them",
            labels=["channel"],
        )
        for channel, count in sorted(failed.items()):
            unparsed.add_metric([channel], count)
        yield unparsed
        polls = GaugeMetricFamily(
            "redesk_web_polls_open",
            "Long polls (GET /api/web/messages) this process holds "
            "open; REDESK_WEB_POLLS_TOTAL caps them",
        )
        polls.add_metric([], wake.HUB.open_polls())
        yield polls
        yield from self._scheduler()

    def _scheduler(self) -> Iterator[GaugeMetricFamily]:
        """redesk_scheduler_missing, and how long ago a scheduler held the lease."""
        redis_url = self.runtime.settings.redis_url
        seen: scheduler.Seen | None = None
        if redis_url:
            try:
                seen = scheduler.last_seen(redis_url)
            except Exception:
                logger.warning("Metrics: Redis does not answer; the scheduler counts as missing")
                seen = scheduler.Seen(age=None)
        # On the embedded default the scheduler is a thread of `redesk run`: never missing.
        missing = GaugeMetricFamily(
            "redesk_scheduler_missing",
            "1 when no scheduler has held the lease for "
            f"{scheduler.MISSING_AFTER_SECONDS:g} s (nothing re-enqueues unfinished work)",
        )
        missing.add_metric([], 1 if seen is not None and seen.missing else 0)
        yield missing
        if seen is not None and seen.age is not None:
            age = GaugeMetricFamily(
                "redesk_scheduler_lease_age_seconds",
                "Seconds since a scheduler last held the lease",
            )
            age.add_metric([], seen.age)
            yield age


def render_metrics(runtime: Runtime) -> bytes:
    """The Prometheus text exposition of every metric."""
    # The gauges are read from this runtime's database only; a collector registered globally
    # per runtime would repeat them (and keep stale databases) once a second app exists.
    gauges = CollectorRegistry()
    gauges.register(DatabaseCollector(runtime))
    return generate_latest(REGISTRY) + generate_latest(gauges)
