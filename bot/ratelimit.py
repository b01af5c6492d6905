"""Sending rate limits shared by every process: reserve a slot, wait, then send.

Telegram allows about one message per second to a private chat, twenty a minute to a group and
thirty a second overall. A sender asks the limiter for one slot on each key the message uses
(`telegram_slots`); the limiter books the earliest instant at which all of them are free and
says how long to wait. Bookings are never moved or taken back, so a caller that waits its turn
always gets its slot and concurrent callers together never exceed the rates.

Each key keeps the instants booked on it, not just "the next free instant": a chat waiting for
its own one-second slot must not hold back the global schedule for every other chat, so a
later booking may take an earlier gap on a key, as long as it stays one interval away from
every other booking there.
"""

from __future__ import annotations

import bisect
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import redis

logger = logging.getLogger(__name__)

#: The key every Telegram message uses: about 30 messages per second overall.
TELEGRAM_GLOBAL_KEY = "tg:global"

#: Seconds between two messages of the bot as a whole (30 a second).
TELEGRAM_GLOBAL_INTERVAL = 1 / 30

#: Seconds between two messages to one private chat (1 a second).
TELEGRAM_PRIVATE_INTERVAL = 1.0

#: Seconds between two messages to one group chat (20 a minute).
TELEGRAM_GROUP_INTERVAL = 60 / 20

#: Redis keeps a key this long past its last booking (milliseconds), then forgets it.
EXPIRY_MARGIN_MS = 1000

#: The local limiter forgets idle keys at most this often (seconds).
LOCAL_SWEEP_EVERY = 60.0

#: Microseconds in a second: the limiters keep time in integer microseconds.
US = 1_000_000


class RateLimiter(Protocol):
    """Books sending slots so that every key keeps its minimum interval between sends."""

    def reserve_at(self, slots: Sequence[tuple[str, float]]) -> float:
        """Books one send on every key of `slots` and returns when it may happen.

        Args:
            slots: (key, interval in seconds) pairs; one send uses one slot on each key.

        Returns:
            The booked instant in seconds on the limiter's own clock (Unix time for Redis,
            `time.monotonic` for the local limiter).
        """
        ...

    def reserve(self, slots: Sequence[tuple[str, float]]) -> float:
        """Books one send on every key of `slots`.

        Args:
            slots: (key, interval in seconds) pairs; one send uses one slot on each key.

        Returns:
            Seconds to wait before sending; 0.0 when the message can go at once.
        """
        ...

    def try_reserve(self, slots: Sequence[tuple[str, float]], within: float) -> tuple[bool, float]:
        """Books one send on every key of `slots` only if it may happen within `within` s.

        A caller that would have to wait longer comes back later instead of holding a thread
        (and a slot nobody uses meanwhile).

        Returns:
            (booked, seconds to wait): when not booked, the seconds until the earliest slot
            as things stand now (a later caller may take it first).
        """
        ...

    def cooldown(self, key: str, seconds: float) -> None:
        """Books nothing on `key` earlier than `seconds` from now (a 429's retry_after)."""
        ...


def telegram_slots(chat_id: int | str) -> list[tuple[str, float]]:
    """The slots one Telegram message to `chat_id` uses.

    Args:
        chat_id: Telegram chat id; positive for a private chat, negative for a group or
            channel.

    Returns:
        The global slot and the chat's slot.
    """
    chat = str(chat_id).strip()
    interval = TELEGRAM_GROUP_INTERVAL if chat.startswith("-") else TELEGRAM_PRIVATE_INTERVAL
    return [(TELEGRAM_GLOBAL_KEY, TELEGRAM_GLOBAL_INTERVAL), (f"tg:chat:{chat}", interval)]


def make_limiter(redis_url: str | None) -> RateLimiter:
    """The limiter for this deployment: shared through Redis if there is one.

    Without Redis there is a single process; make one limiter per process and share it.

    Args:
        redis_url: REDESK_REDIS_URL, or None for the embedded default.
    """
    if redis_url:
        return RedisRateLimiter(redis_url)
    return LocalRateLimiter()


def _slots_us(slots: Iterable[tuple[str, float]]) -> dict[str, int]:
    """Key -> interval in whole microseconds (rounded up, so never faster than asked).

    A key named twice keeps its longest interval.
    """
    merged: dict[str, int] = {}
    for key, interval in slots:
        if not interval > 0:
            raise ValueError(f"Can't limit {key!r} to an interval of {interval} seconds.")
        merged[key] = max(merged.get(key, 0), math.ceil(interval * US))
    return merged


class LocalRateLimiter:
    """A limiter for one process, safe to share between its threads."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        """Creates an empty limiter.

        Args:
            clock: Monotonic seconds; tests may pass a fake one.
        """
        self._clock = clock
        self._lock = threading.Lock()
        #: key -> booked instants in microseconds, sorted.
        self._booked: dict[str, list[int]] = {}
        #: key -> its interval in microseconds, as last asked (to forget idle keys).
        self._intervals: dict[str, int] = {}
        #: key -> no booking before this instant in microseconds.
        self._cooldowns: dict[str, int] = {}
        self._last_sweep = 0

    def _now(self) -> int:
        return round(self._clock() * US)

    def reserve_at(self, slots: Sequence[tuple[str, float]]) -> float:
        """See `RateLimiter.reserve_at`; the clock is `time.monotonic`."""
        return self._reserve(slots)[0] / US

    def reserve(self, slots: Sequence[tuple[str, float]]) -> float:
        """See `RateLimiter.reserve`."""
        at, now, _ = self._reserve(slots)
        return (at - now) / US

    def try_reserve(self, slots: Sequence[tuple[str, float]], within: float) -> tuple[bool, float]:
        """See `RateLimiter.try_reserve`."""
        at, now, booked = self._reserve(slots, math.floor(within * US))
        return booked, (at - now) / US

    def cooldown(self, key: str, seconds: float) -> None:
        """See `RateLimiter.cooldown`."""
        with self._lock:
            until = self._now() + math.ceil(seconds * US)
            if until > self._cooldowns.get(key, 0):
                self._cooldowns[key] = until

    def _reserve(
        self, slots: Sequence[tuple[str, float]], within: int | None = None
    ) -> tuple[int, int, bool]:
        """Books the slots unless that is more than `within` microseconds away.

        Returns:
            (earliest instant, now, booked), the instants in microseconds.
        """
        intervals = _slots_us(slots)
        with self._lock:
            now = self._now()
            self._sweep(now)
            at = max([now, *(self._cooldowns.get(key, 0) for key in intervals)])
            for key, interval in intervals.items():
                booked = self._booked.setdefault(key, [])
                # Bookings at or before now - interval can no longer be in the way.
                del booked[: bisect.bisect_right(booked, now - interval)]
                self._intervals[key] = interval
            moved = True
            while moved:
                moved = False
                for key, interval in intervals.items():
                    booked = self._booked[key]
                    # The latest booking before at + interval is in the way if it is
                    # after at - interval; the earliest possible instant is then one
                    # interval after it.
                    index = bisect.bisect_left(booked, at + interval)
                    if index and booked[index - 1] > at - interval:
                        at = booked[index - 1] + interval
                        moved = True
            if within is not None and at - now > within:
                return at, now, False
            for key in intervals:
                bisect.insort(self._booked[key], at)
            return at, now, True

    def _sweep(self, now: int) -> None:
        """Forgets keys with nothing booked or cooling down (called with the lock held)."""
        if now - self._last_sweep < LOCAL_SWEEP_EVERY * US:
            return
        self._last_sweep = now
        for key, booked in list(self._booked.items()):
            if not booked or booked[-1] + self._intervals[key] <= now:
                del self._booked[key]
                del self._intervals[key]
        for key, until in list(self._cooldowns.items()):
            if until <= now:
                del self._cooldowns[key]


#: KEYS: per slot its bookings (a sorted set) then its cooldown (a string), in that order.
#: ARGV: per slot its interval in microseconds, then the expiry margin in milliseconds, then
#: the longest wait to book in microseconds (-1: any).
#: Returns {earliest instant, now, 1 if booked else 0}, instants in microseconds on the Redis
#: server's clock. Scripts
#: replicate their effects (Redis >= 5), so TIME may be called before the writes.
_RESERVE_LUA = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local n = #ARGV - 2
local within = tonumber(ARGV[n + 2])
local intervals = {}
local at = now
for i = 1, n do
    local interval = tonumber(ARGV[i])
    intervals[i] = interval
    -- Bookings at or before now - interval can no longer be in the way.
    redis.call('ZREMRANGEBYSCORE', KEYS[2 * i - 1], '-inf', string.format('%d', now - interval))
    local cooling = tonumber(redis.call('GET', KEYS[2 * i]) or '0')
    if cooling > at then
        at = cooling
    end
end
local moved = true
while moved do
    moved = false
    for i = 1, n do
        local interval = intervals[i]
        -- The latest booking within one interval of at, if any, pushes at past it.
        local hit = redis.call('ZREVRANGEBYSCORE', KEYS[2 * i - 1],
            '(' .. string.format('%d', at + interval),
            '(' .. string.format('%d', at - interval), 'WITHSCORES', 'LIMIT', 0, 1)
        if #hit > 0 then
            at = tonumber(hit[2]) + interval
            moved = true
        end
    end
end
if within >= 0 and at - now > within then
    return {at, now, 0}
end
local member = string.format('%d', at)
for i = 1, n do
    local key = KEYS[2 * i - 1]
    redis.call('ZADD', key, member, member)
    local last = redis.call('ZREVRANGE', key, 0, 0, 'WITHSCORES')
    local ttl = math.ceil((tonumber(last[2]) + intervals[i] - now) / 1000)
    redis.call('PEXPIRE', key, string.format('%d', ttl + tonumber(ARGV[n + 1])))
end
return {at, now, 1}
"""

#: KEYS[1]: the cooldown string; ARGV: seconds in microseconds, expiry margin in milliseconds.
_COOLDOWN_LUA = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local free_at = now + tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if free_at > current then
    local ttl = math.ceil(tonumber(ARGV[1]) / 1000) + tonumber(ARGV[2])
    redis.call('SET', KEYS[1], string.format('%d', free_at), 'PX', string.format('%d', ttl))
end
return free_at
"""


class RedisRateLimiter:
    """A limiter shared by every process using the same Redis.

    One Lua script books all keys of a send atomically, on the Redis server's clock, so
    processes on different machines agree on the schedule. Keys expire a little after their
    last booking or cooldown, so Redis keeps nothing for idle chats.
    """

    def __init__(self, redis_url: str, prefix: str = "redesk:rl:") -> None:
        """Connects to Redis (lazily, on first use) and registers the scripts.

        Args:
            redis_url: Where the shared Redis is.
            prefix: Prepended to every limiter key.
        """
        import redis

        self._prefix = prefix
        self._client: redis.Redis = redis.Redis.from_url(redis_url)
        self._reserve_script = self._client.register_script(_RESERVE_LUA)
        self._cooldown_script = self._client.register_script(_COOLDOWN_LUA)

    def close(self) -> None:
        """Closes the connections to Redis."""
        self._client.close()

    def reserve_at(self, slots: Sequence[tuple[str, float]]) -> float:
        """See `RateLimiter.reserve_at`; the clock is the Redis server's Unix time."""
        return self._reserve(slots)[0] / US

    def reserve(self, slots: Sequence[tuple[str, float]]) -> float:
        """See `RateLimiter.reserve`."""
        at, now, _ = self._reserve(slots)
        return (at - now) / US

    def try_reserve(self, slots: Sequence[tuple[str, float]], within: float) -> tuple[bool, float]:
        """See `RateLimiter.try_reserve`."""
        at, now, booked = self._reserve(slots, math.floor(within * US))
        return booked, (at - now) / US

    def cooldown(self, key: str, seconds: float) -> None:
        """See `RateLimiter.cooldown`."""
        self._cooldown_script(
            keys=[self._cooldown_key(key)],
            args=[math.ceil(seconds * US), EXPIRY_MARGIN_MS],
        )

    def _cooldown_key(self, key: str) -> str:
        return f"{self._prefix}cooldown:{key}"

    def _slots_key(self, key: str) -> str:
        return f"{self._prefix}slots:{key}"

    def _reserve(
        self, slots: Sequence[tuple[str, float]], within: int | None = None
    ) -> tuple[int, int, bool]:
        """See `LocalRateLimiter._reserve`."""
        intervals = _slots_us(slots)
        keys: list[str] = []
        for key in intervals:
            keys += [self._slots_key(key), self._cooldown_key(key)]
        at, now, booked = self._reserve_script(
            keys=keys,
            args=[*intervals.values(), EXPIRY_MARGIN_MS, -1 if within is None else within],
        )
        if booked and at > now:
            logger.debug("Send on %s booked %d us ahead", list(intervals), at - now)
        return int(at), int(now), bool(booked)
