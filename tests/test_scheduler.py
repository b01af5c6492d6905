"""The scheduler: one acts at a time (a lease in Redis), enqueueing the periodic jobs."""

from __future__ import annotations

import logging
import threading

import pytest
import redis

from bot.scheduler import (
    HEARTBEAT_SUFFIX,
    MISSING_AFTER_SECONDS,
    Alone,
    RedisLease,
    Watch,
    last_seen,
    run,
)


def lease(url: str, seconds: float = 15.0) -> RedisLease:
    return RedisLease(url, key="redesk:test:scheduler", seconds=seconds)


def test_one_scheduler_holds_the_lease_and_another_takes_over_when_it_stops(
    redis_url: str,
) -> None:
    redis.Redis.from_url(redis_url).delete("redesk:test:scheduler")
    first, second = lease(redis_url), lease(redis_url)

    assert first.hold() is True
    assert second.hold() is False
    assert first.hold() is True  # renewing
    first.release()
    assert second.hold() is True
    second.release()


def test_a_dead_schedulers_lease_expires(redis_url: str) -> None:
    connection = redis.Redis.from_url(redis_url)
    connection.delete("redesk:test:scheduler")
    first, second = lease(redis_url, seconds=0.2), lease(redis_url, seconds=0.2)
    assert first.hold() is True

    # When the first stops renewing (it died), the key expires by itself
    connection.pexpire("redesk:test:scheduler", 1)
    while connection.exists("redesk:test:scheduler"):
        threading.Event().wait(0.01)

    assert second.hold() is True
    second.release()


def test_two_schedulers_running_enqueue_the_jobs_of_one(redis_url: str) -> None:
    redis.Redis.from_url(redis_url).delete("redesk:test:scheduler")
    enqueued: list[str] = []
    stop = threading.Event()
    loops = threading.Semaphore(0)

    def job(name: str) -> None:
        enqueued.append(name)
        loops.release()

    threads = [
        threading.Thread(
            target=run,
            kwargs={
                "stop": stop,
                "leadership": lease(redis_url),
                "jobs": [(3600.0, lambda name=name: job(name))],
                "loop_seconds": 0.01,
            },
        )
        for name in ("a", "b")
    ]
    for thread in threads:
        thread.start()
    assert loops.acquire(timeout=30)
    # Both loop many times meanwhile; the hourly job was enqueued by one of them, once
    stop.wait(0.3)
    stop.set()
    for thread in threads:
        thread.join()

    assert len(enqueued) == 1


def test_a_broker_outage_is_retried_on_the_next_loop() -> None:
    attempts: list[int] = []
    stop = threading.Event()

    def flaky() -> None:
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError("broker down")
        stop.set()

    run(stop=stop, leadership=Alone(), jobs=[(3600.0, flaky)], loop_seconds=0.001)

    assert len(attempts) == 3


# --- the heartbeat ----------------------------------------------------------------------------


def test_holding_the_lease_writes_a_heartbeat_that_last_seen_reads(redis_url: str) -> None:
    # Given no scheduler ever ran on this Redis
    assert last_seen(redis_url, key="redesk:test:scheduler").age is None
    assert last_seen(redis_url, key="redesk:test:scheduler").missing

    # When one holds the lease
    first, second = lease(redis_url), lease(redis_url)
    assert first.hold()
    # (one that waits for the lease writes no heartbeat)
    assert not second.hold()

    # Then it has just been seen, by Redis's clock
    seen = last_seen(redis_url, key="redesk:test:scheduler")
    assert seen.age is not None and 0 <= seen.age < MISSING_AFTER_SECONDS
    assert not seen.missing

    # And the heartbeat outlives the lease, so a long absence stays visible
    first.release()
    assert redis.Redis.from_url(redis_url).exists("redesk:test:scheduler" + HEARTBEAT_SUFFIX)
    second.release()


def test_the_watch_warns_once_while_no_scheduler_holds_the_lease_and_says_when_one_is_back(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a worker's look-out and no scheduler
    watch = Watch(redis_url, key="redesk:test:scheduler")
    caplog.set_level(logging.INFO, logger="bot.scheduler")

    # When it looks twice
    first, again = watch.check(), watch.check()

    # Then it warned once, naming what is at stake and what to run
    assert first is not None and first.missing and again is not None and again.missing
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "No `redesk scheduler` has held the lease for ever" in warnings[0]
    assert "not re-enqueued" in warnings[0]

    # When a scheduler takes the lease and the watch looks again
    scheduler = lease(redis_url)
    assert scheduler.hold()
    caplog.clear()
    back = watch.check()

    # Then it says so, and warns no more
    assert back is not None and not back.missing
    assert [r.getMessage() for r in caplog.records][0].startswith(
        "A scheduler holds the lease again"
    )
    assert not any(r.levelno == logging.WARNING for r in caplog.records)
    scheduler.release()


def test_the_watch_concludes_nothing_when_redis_does_not_answer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given a look-out on a Redis that does not answer
    watch = Watch("redis://127.0.0.1:1/0")

    # When it looks, Then it cannot tell, and says that rather than "missing"
    assert watch.check() is None
    assert not watch.warned
    assert "Cannot tell whether a scheduler runs" in caplog.text
