"""Waiting connections and waking them: the web API's long polls, woken when a message is
delivered to their identity, and the console's live streams, woken when a request changed.

A waiting connection waits on an asyncio event of its own instead of asking the database again
and again. The web sender's delivery wakes the polls of its recipient (notify); a unit of work
that changed or created a request wakes every live stream (notify_changed), which then looks
at the database to see whether the change is one of its user's. Both wake directly when the
work runs in this process (the embedded default), and through Redis pub/sub when
REDESK_REDIS_URL is set, so a `redesk run` process wakes when a `redesk worker` on another
machine commits. A notification that gets lost only delays the answer until the connection's
fallback check.

The caps on open polls are counted per process: each copy of `redesk run` keeps its own.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import redis

logger = logging.getLogger(__name__)

#: The Redis pub/sub channel delivery notifications go through; the message is a person id.
WAKE_CHANNEL = "redesk:web:wake"

#: The Redis pub/sub channel of "a request changed" (the message says nothing more).
CHANGE_CHANNEL = "redesk:requests:changed"

#: Seconds a subscriber waits before connecting again after losing Redis.
RECONNECT_PAUSE = 1.0


class TooManyPolls(Exception):
    """The identity (or the process as a whole) already holds as many polls as allowed."""


@dataclass(eq=False)
class Waiter:
    """One waiting long poll: its event and the loop the event belongs to."""

    loop: asyncio.AbstractEventLoop
    event: asyncio.Event = field(default_factory=asyncio.Event)

    def wake(self) -> None:
        """Sets the event from any thread."""
        try:
            self.loop.call_soon_threadsafe(self.event.set)
        except RuntimeError:
            # The loop is closed: its poll is gone with it.
            pass


class PollHub:
    """The long polls open in this process, by person id; safe to use from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[int, set[Waiter]] = {}
        self._total = 0

    def open_polls(self, person_id: int | None = None) -> int:
        """How many polls are open: for one person, or in all."""
        with self._lock:
            if person_id is None:
                return self._total
            return len(self._waiters.get(person_id, ()))

    @contextmanager
    def hold(self, person_id: int, *, per_identity: int, total: int) -> Iterator[Waiter]:
        """Registers a poll for `person_id` while the block runs.

        Raises:
            TooManyPolls: The person already holds `per_identity` polls, or the process
                `total` (0 switches a cap off).
        """
        waiter = Waiter(asyncio.get_running_loop())
        with self._lock:
            held = self._waiters.setdefault(person_id, set())
            if (per_identity > 0 and len(held) >= per_identity) or (
                total > 0 and self._total >= total
            ):
                if not held:
                    del self._waiters[person_id]
                raise TooManyPolls
            held.add(waiter)
            self._total += 1
        try:
            yield waiter
        finally:
            with self._lock:
                held = self._waiters.get(person_id, set())
                held.discard(waiter)
                if not held:
                    self._waiters.pop(person_id, None)
                self._total -= 1

    def wake(self, person_id: int) -> None:
        """Wakes every poll of `person_id` in this process."""
        with self._lock:
            waiters = list(self._waiters.get(person_id, ()))
        for waiter in waiters:
            waiter.wake()

    def wake_all(self) -> None:
        """Wakes every poll (the server is stopping)."""
        with self._lock:
            waiters = [w for held in self._waiters.values() for w in held]
        for waiter in waiters:
            waiter.wake()


#: The polls of this process: the web routes register here, deliveries wake them.
HUB = PollHub()

#: The console's live streams of this process, by account id: a changed request wakes all.
CHANGES = PollHub()


def wake_all() -> None:
    """Wakes every waiting connection of this process (the server is stopping)."""
    HUB.wake_all()
    CHANGES.wake_all()


class Subscriber:
    """A daemon thread that turns Redis wake messages into wake-ups of this process's polls
    (WAKE_CHANNEL) and streams (CHANGE_CHANNEL)."""

    def __init__(self, redis_url: str, hub: PollHub, changes: PollHub) -> None:
        self._redis_url = redis_url
        self._hub = hub
        self._changes = changes
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="wake", daemon=True)

    def start(self) -> None:
        """Starts listening."""
        self.thread.start()

    def stop(self) -> None:
        """Asks the thread to stop (it notices within a second)."""
        self._stop.set()

    def _run(self) -> None:
        import redis

        while not self._stop.is_set():
            client: redis.Redis = redis.Redis.from_url(self._redis_url)
            pubsub = client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call,unused-ignore]
            try:
                pubsub.subscribe(WAKE_CHANNEL, CHANGE_CHANNEL)
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message is None:
                        continue
                    if message.get("channel") in (CHANGE_CHANNEL, CHANGE_CHANNEL.encode()):
                        self._changes.wake_all()
                        continue
                    data = message.get("data")
                    try:
                        person_id = int(data)
                    except (TypeError, ValueError):
                        continue
                    self._hub.wake(person_id)
            except redis.RedisError as exc:
                # Polls and streams fall back to their slow check meanwhile.
                logger.warning("Wake subscription lost (%s); reconnecting", type(exc).__name__)
                self._stop.wait(RECONNECT_PAUSE)
            finally:
                pubsub.close()
                client.close()


_subscribers: dict[str, Subscriber] = {}
_subscribers_lock = threading.Lock()


def listen(redis_url: str | None) -> None:
    """Makes sure this process hears the wake messages of `redis_url` (once per URL)."""
    if not redis_url:
        return
    with _subscribers_lock:
        if redis_url not in _subscribers:
            subscriber = Subscriber(redis_url, HUB, CHANGES)
            _subscribers[redis_url] = subscriber
            subscriber.start()


_publishers: dict[str, redis.Redis] = {}
_publishers_lock = threading.Lock()


def notify(redis_url: str | None, person_id: int) -> None:
    """Tells every process that a message for `person_id` was delivered (after the commit).

    Never raises: a lost notification only delays the polls until their fallback check.
    """
    HUB.wake(person_id)
    _publish(redis_url, WAKE_CHANNEL, str(person_id))


def notify_changed(redis_url: str | None) -> None:
    """Tells every process that a request changed or was made (after the commit): the
    console's live streams look whether it is one their user sees.

    Never raises: a lost notification only delays the streams until their fallback check.
    """
    CHANGES.wake_all()
    _publish(redis_url, CHANGE_CHANNEL, "1")


def _publish(redis_url: str | None, channel: str, message: str) -> None:
    if not redis_url:
        return
    import redis

    try:
        with _publishers_lock:
            client = _publishers.get(redis_url)
            if client is None:
                client = _publishers[redis_url] = redis.Redis.from_url(redis_url, socket_timeout=2)
        client.publish(channel, message)
    except redis.RedisError as exc:
        logger.warning("Could not publish a wake-up on %s (%s)", channel, type(exc).__name__)
