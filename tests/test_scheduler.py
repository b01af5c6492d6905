"""The scheduler: one acts at a time (a lease in Redis), enqueueing the periodic jobs."""

from __future__ import annotations

import threading

import redis

from bot.scheduler import Alone, RedisLease, run


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

    threads = [threading.Thread(target=run, kwargs={
        "stop": stop, "leadership": lease(redis_url),
        "jobs": [(3600.0, lambda name=name: job(name))], "loop_seconds": 0.01,
    }) for name in ("a", "b")]
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
