"""The scheduler: enqueues the periodic work (the sweep, and the tick of reminders); sends
nothing itself.

Exactly one scheduler acts at a time: with Redis, a scheduler acts only while it holds a lease
(a key with a random token and a short expiry, renewed on every loop); a second one started
elsewhere waits and takes over within the lease's time if the first one dies. On the embedded
default the scheduler is a thread of `redesk run`, alone by construction. Even if two acted at
once, each reminder would still be sent once (workflow/reminders.py claims a key per reminder).

Every renewal also writes a heartbeat next to the lease (Redis's own clock, so machines whose
clocks differ agree): `last_seen` reads it, GET /healthz and /metrics report a scheduler that
has not held the lease for MISSING_AFTER_SECONDS, and `Watch` makes `redesk run` and
`redesk worker` log a warning then. Without a scheduler nothing re-enqueues work a Redis lost.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

logger = logging.getLogger(__name__)

#: The Redis key of the lease.
LEASE_KEY = "redesk:scheduler:lease"

#: How long a lease lasts without renewal (seconds).
LEASE_SECONDS = 15.0

#: The scheduler's loop wakes up this often (seconds).
LOOP_SECONDS = 1.0

#: Suffix of the heartbeat key (the lease's key, then this): when a scheduler last held it,
#: in milliseconds of Redis's clock. It has no expiry, so a long absence stays visible.
HEARTBEAT_SUFFIX = ":heartbeat"

#: A scheduler that has not held the lease for this many seconds is reported missing: well
#: past a lease's life, so a standby taking over a dead scheduler's lease is not reported.
MISSING_AFTER_SECONDS = 60.0

#: How often `Watch` looks for a scheduler (seconds).
WATCH_SECONDS = 30.0

#: Renews the lease if we hold it, or takes it if nobody does; 1 if we hold it after. Holding
#: it writes the heartbeat (KEYS[2]) with Redis's time.
_HOLD_LUA = """
local held = 0
if redis.call('GET', KEYS[1]) == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    held = 1
elseif redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
    held = 1
end
if held == 1 then
    local now = redis.call('TIME')
    redis.call('SET', KEYS[2], tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000))
end
return held
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

    def __init__(
        self, redis_url: str, *, key: str = LEASE_KEY, seconds: float = LEASE_SECONDS
    ) -> None:
        import redis

        self._client = redis.Redis.from_url(redis_url)
        self._key = key
        self._heartbeat = key + HEARTBEAT_SUFFIX
        self._ttl_ms = int(seconds * 1000)
        self._token = secrets.token_hex(16)
        self._hold = self._client.register_script(_HOLD_LUA)
        self._release = self._client.register_script(_RELEASE_LUA)
        self.holding = False

    def hold(self) -> bool:
        """See `Leadership.hold`; a Redis error means not holding it (act on no stale lease)."""
        try:
            held = bool(
                self._hold(keys=[self._key, self._heartbeat], args=[self._token, self._ttl_ms])
            )
        except Exception:
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
        except Exception:
            logger.warning("Scheduler lease: could not release", exc_info=True)
        self.holding = False
        self._client.close()


@dataclass(frozen=True)
class Seen:
    """When a scheduler last held the lease, as seen from Redis."""

    #: Seconds since then; None: no scheduler ever held it (no heartbeat in Redis).
    age: float | None

    @property
    def missing(self) -> bool:
        """Whether no scheduler has held the lease for MISSING_AFTER_SECONDS."""
        return self.age is None or self.age > MISSING_AFTER_SECONDS

    def describe(self) -> str:
        """How long ago, in words (for logs)."""
        return "ever (no heartbeat in Redis)" if self.age is None else f"{self.age:.0f} s"


def last_seen(redis_url: str, *, key: str = LEASE_KEY) -> Seen:
    """Reads the heartbeat of the deployment's schedulers.

    Raises:
        redis.RedisError: Redis did not answer.
    """
    import redis

    client = redis.Redis.from_url(redis_url, socket_timeout=2)
    try:
        pipeline = client.pipeline(transaction=False)
        pipeline.get(key + HEARTBEAT_SUFFIX)
        pipeline.time()
        beat, (seconds, micros) = pipeline.execute()
    finally:
        client.close()
    if beat is None:
        return Seen(age=None)
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    return Seen(age=max(now_ms - int(beat), 0) / 1000)


class Watch(threading.Thread):
    """Looks for a scheduler every WATCH_SECONDS in the processes that rely on one (`redesk
    run` and `redesk worker` with Redis); warns once when there is none, and says when one is
    back."""

    def __init__(
        self, redis_url: str, *, key: str = LEASE_KEY, every: float = WATCH_SECONDS
    ) -> None:
        super().__init__(name="scheduler-watch", daemon=True)
        self._redis_url = redis_url
        self._key = key
        self._every = every
        self.stopping = threading.Event()
        #: Whether the last look found none (a warning was logged).
        self.warned = False

    def check(self) -> Seen | None:
        """One look; logs on a change. None: Redis did not answer (nothing is concluded)."""
        try:
            seen = last_seen(self._redis_url, key=self._key)
        except Exception:
            logger.warning("Cannot tell whether a scheduler runs: Redis does not answer")
            return None
        if seen.missing and not self.warned:
            logger.warning(
                "No `redesk scheduler` has held the lease for %s: work left unfinished (e.g. "
                "by a Redis restarted empty) is not re-enqueued and no reminders are sent. "
                "Run one `redesk scheduler` next to the workers.",
                seen.describe(),
            )
        elif not seen.missing and self.warned:
            logger.info("A scheduler holds the lease again (%s ago)", seen.describe())
        self.warned = seen.missing
        return seen

    def run(self) -> None:
        """Looks at once, then every `every` seconds until stopped."""
        while True:
            self.check()
            if self.stopping.wait(self._every):
                return

    def stop(self) -> None:
        """Asks the watch to stop."""
        self.stopping.set()


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
                    except Exception:
                        logger.warning("Could not enqueue a periodic job", exc_info=True)
                        continue
                    due[index] = now + interval
            stop.wait(loop_seconds)
    finally:
        leadership.release()
