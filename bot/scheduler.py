"""The scheduler: enqueues the periodic work (the sweep, and the tick of reminders); sends
nothing itself.

Exactly one scheduler acts at a time: with Redis, a scheduler acts only while it holds a lease
(a key with a random token and a short expiry, renewed on every loop); a second one started
elsewhere waits and takes over within the lease's time if the first one dies. On the embedded
default the scheduler is a thread of `redesk run`, alone by construction. Even if two acted at
once, each reminder would still be sent once (workflow/reminders.py claims a key per reminder).
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from typing import Protocol

logger = logging.getLogger(__name__)

#: The Redis key of the lease.
LEASE_KEY = "redesk:scheduler:lease"

#: How long a lease lasts without renewal (seconds).
LEASE_SECONDS = 15.0

#: The scheduler's loop wakes up this often (seconds).
LOOP_SECONDS = 1.0

#: Renews the lease if we hold it, or takes it if nobody does; 1 if we hold it after.
_HOLD_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return 1
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
    return 1
end
return 0
"""

#: Gives the lease up if we hold it.
_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


class Leadership(Protocol):
    """Whether this scheduler may act now."""

    def hold(self) -> bool:
        """Takes or renews the right to act; whether this scheduler has it."""

    def release(self) -> None:
        """Gives the right up (on shutdown)."""


class Alone:
    """The embedded default: the only scheduler there is."""

    def hold(self) -> bool:
        """Always."""
        return True

    def release(self) -> None:
        """Nothing to give up."""


class RedisLease:
    """A lease in Redis shared by every scheduler of a deployment."""

    def __init__(self, redis_url: str, *, key: str = LEASE_KEY,
                 seconds: float = LEASE_SECONDS) -> None:
        import redis

        self._client = redis.Redis.from_url(redis_url)
        self._key = key
        self._ttl_ms = int(seconds * 1000)
        self._token = secrets.token_hex(16)
        self._hold = self._client.register_script(_HOLD_LUA)
        self._release = self._client.register_script(_RELEASE_LUA)
        self.holding = False

    def hold(self) -> bool:
        """See `Leadership.hold`; a Redis error means not holding it (act on no stale lease)."""
        try:
            held = bool(self._hold(keys=[self._key], args=[self._token, self._ttl_ms]))
        except Exception:  # noqa: BLE001 - Redis down: another scheduler may hold it
            logger.warning("Scheduler lease: Redis does not answer", exc_info=True)
            held = False
        if held != self.holding:
            logger.info("Scheduler %s", "acts (lease taken)" if held else "waits (lease lost)")
        self.holding = held
        return held

    def release(self) -> None:
        """See `Leadership.release`."""
        try:
            self._release(keys=[self._key], args=[self._token])
        except Exception:  # noqa: BLE001 - the lease expires by itself
            logger.warning("Scheduler lease: could not release", exc_info=True)
        self.holding = False
        self._client.close()


def run(
    *,
    stop: threading.Event,
    leadership: Leadership,
    jobs: list[tuple[float, Callable[[], object]]],
    clock: Callable[[], float] = time.monotonic,
    loop_seconds: float = LOOP_SECONDS,
) -> None:
    """Runs `jobs` ((interval in seconds, enqueue function)) while holding the leadership,
    until `stop` is set. A job that fails to enqueue (the broker is down) is tried again on
    the next loop."""
    due = [0.0] * len(jobs)
    try:
        while not stop.is_set():
            if leadership.hold():
                now = clock()
                for index, (interval, enqueue) in enumerate(jobs):
                    if now < due[index]:
                        continue
                    try:
                        enqueue()
                    except Exception:  # noqa: BLE001 - a broker outage must not end it
                        logger.warning("Could not enqueue a periodic job", exc_info=True)
                        continue
                    due[index] = now + interval
            stop.wait(loop_seconds)
    finally:
        leadership.release()
