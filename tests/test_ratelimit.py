"""The rate limiters: the schedule they book, alone and under concurrency, in-process and in
Redis.

Assertions are on the booked schedule (arithmetic on the returned instants), never on how
long anything took.
"""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from bot.ratelimit import (
    TELEGRAM_GLOBAL_INTERVAL,
    TELEGRAM_GLOBAL_KEY,
    LocalRateLimiter,
    RateLimiter,
    RedisRateLimiter,
    make_limiter,
    telegram_slots,
)

#: Slack for float arithmetic on instants kept in whole microseconds.
EXACT = 1e-5

#: Slack between a wait and the schedule: the time spent between two calls of one test.
CALLS = 0.25

#: Only the global key, as a message that uses no chat slot.
GLOBAL = [(TELEGRAM_GLOBAL_KEY, TELEGRAM_GLOBAL_INTERVAL)]


@pytest.fixture(params=["local", "redis"])
def limiter(request: pytest.FixtureRequest) -> Iterator[RateLimiter]:
    """Every test using it runs on the in-process limiter and on the Redis one."""
    if request.param == "local":
        yield LocalRateLimiter()
        return
    shared = RedisRateLimiter(request.getfixturevalue("redis_url"))
    yield shared
    shared.close()


def assert_spaced(instants: list[float], interval: float) -> None:
    """Asserts the instants are distinct and at least `interval` apart."""
    ordered = sorted(instants)
    assert len(set(ordered)) == len(ordered)
    gaps = [later - earlier for earlier, later in zip(ordered, ordered[1:], strict=False)]
    assert min(gaps) >= interval - EXACT


def test_telegram_slots_use_the_global_key_and_the_chats_own() -> None:
    assert telegram_slots(42) == [("tg:global", 1 / 30), ("tg:chat:42", 1.0)]
    assert telegram_slots("42") == [("tg:global", 1 / 30), ("tg:chat:42", 1.0)]
    assert telegram_slots(-1001234) == [("tg:global", 1 / 30), ("tg:chat:-1001234", 3.0)]


def test_make_limiter_shares_through_redis_only_when_there_is_one(redis_url: str) -> None:
    assert isinstance(make_limiter(None), LocalRateLimiter)
    assert isinstance(make_limiter(""), LocalRateLimiter)
    shared = make_limiter(redis_url)
    assert isinstance(shared, RedisRateLimiter)
    shared.close()


def test_an_interval_must_be_positive(limiter: RateLimiter) -> None:
    with pytest.raises(ValueError, match="Can't limit 'tg:chat:1'"):
        limiter.reserve([("tg:chat:1", 0.0)])


def test_the_first_message_can_be_sent_at_once(limiter: RateLimiter) -> None:
    assert limiter.reserve(telegram_slots(1)) == 0.0


def test_a_second_message_to_a_private_chat_is_booked_a_second_later(
    limiter: RateLimiter,
) -> None:
    # Given a message booked for a private chat
    first = limiter.reserve_at(telegram_slots(1))
    # When two more are booked
    second = limiter.reserve_at(telegram_slots(1))
    wait = limiter.reserve(telegram_slots(1))
    # Then they are one second apart in the schedule
    assert second - first == pytest.approx(1.0, abs=EXACT)
    assert wait == pytest.approx(2.0, abs=CALLS)
    assert wait <= 2.0


def test_a_second_message_to_a_group_is_booked_three_seconds_later(
    limiter: RateLimiter,
) -> None:
    assert limiter.reserve(telegram_slots(-5)) == 0.0
    assert limiter.reserve(telegram_slots(-5)) == pytest.approx(3.0, abs=CALLS)
    third = limiter.reserve_at(telegram_slots(-5))
    fourth = limiter.reserve_at(telegram_slots(-5))
    assert fourth - third == pytest.approx(3.0, abs=EXACT)


def test_different_chats_share_only_the_global_key(limiter: RateLimiter) -> None:
    # Given a message booked for chat 1
    first = limiter.reserve_at(telegram_slots(1))
    # When chat 2 and then chat 1 again book one
    other = limiter.reserve_at(telegram_slots(2))
    again = limiter.reserve_at(telegram_slots(1))
    # Then chat 2 only waits for the global slot, chat 1 for its own second
    assert other - first == pytest.approx(1 / 30, abs=EXACT)
    assert again - first == pytest.approx(1.0, abs=EXACT)


def test_a_chat_waiting_for_its_own_slot_does_not_hold_back_the_others(
    limiter: RateLimiter,
) -> None:
    # Given five messages queued for one private chat (booked 0, 1, 2, 3, 4 s ahead)
    queued = [limiter.reserve_at(telegram_slots(1)) for _ in range(5)]
    # When another chat books a message
    other = limiter.reserve_at(telegram_slots(2))
    # Then it takes the first free global slot, not one after the queue
    assert other - queued[0] == pytest.approx(1 / 30, abs=EXACT)
    assert_spaced([*queued, other], 1 / 30)


def test_sixty_chats_are_spaced_by_the_global_interval(limiter: RateLimiter) -> None:
    # When sixty chats book one message each, then sixty others
    waits = [limiter.reserve(telegram_slots(chat)) for chat in range(60)]
    instants = [limiter.reserve_at(telegram_slots(chat)) for chat in range(100, 160)]
    # Then the k-th waits k/30 s: the schedule is spaced by the global interval exactly
    for k, wait in enumerate(waits):
        assert wait == pytest.approx(k / 30, abs=CALLS)
        assert wait <= k / 30 + EXACT
    for k, instant in enumerate(instants):
        # Intervals are rounded up to whole microseconds: 1/30 s is booked as 33334 us.
        assert instant - instants[0] == pytest.approx(k * 0.033334, abs=EXACT)


def test_a_cooldown_pushes_the_chats_next_message(limiter: RateLimiter) -> None:
    # Given Telegram answered 429 retry_after=5 for chat 1
    limiter.cooldown("tg:chat:1", 5)
    # When chat 1 and chat 2 book a message
    wait = limiter.reserve(telegram_slots(1))
    other = limiter.reserve(telegram_slots(2))
    # Then chat 1 waits out the cooldown and chat 2 does not
    assert wait == pytest.approx(5.0, abs=CALLS)
    assert wait <= 5.0
    assert other == 0.0


def test_a_shorter_cooldown_does_not_shorten_a_longer_one(limiter: RateLimiter) -> None:
    limiter.cooldown("tg:chat:1", 5)
    limiter.cooldown("tg:chat:1", 1)
    assert limiter.reserve(telegram_slots(1)) == pytest.approx(5.0, abs=CALLS)


def test_a_global_cooldown_pushes_every_chat(limiter: RateLimiter) -> None:
    limiter.cooldown(TELEGRAM_GLOBAL_KEY, 2)
    assert limiter.reserve(telegram_slots(1)) == pytest.approx(2.0, abs=CALLS)
    assert limiter.reserve(telegram_slots(-2)) == pytest.approx(2.0 + 1 / 30, abs=CALLS)


def book_in_threads(limiter: RateLimiter, threads: int, each: int) -> list[float]:
    """Books `each` global slots in each of `threads` threads started together."""
    instants: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(threads)

    def book() -> None:
        start.wait()
        for _ in range(each):
            instant = limiter.reserve_at(GLOBAL)
            with lock:
                instants.append(instant)

    workers = [threading.Thread(target=book) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return instants


def test_concurrent_threads_never_share_or_crowd_a_slot(limiter: RateLimiter) -> None:
    # When eight threads book 200 global slots together
    instants = book_in_threads(limiter, threads=8, each=25)
    # Then there are 200 distinct instants, at least 1/30 s apart
    assert len(instants) == 200
    assert_spaced(instants, 1 / 30)


def book_in_a_process(redis_url: str, start: Any, results: Any) -> None:
    """A spawned process: books 100 global slots in 4 threads, puts the instants."""
    shared = RedisRateLimiter(redis_url)
    start.wait()
    instants = book_in_threads(shared, threads=4, each=25)
    shared.close()
    results.put(instants)


def test_concurrent_processes_never_share_or_crowd_a_slot(redis_url: str) -> None:
    # Given two separate processes on one Redis
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(2)
    results = context.Queue()
    processes = [
        context.Process(target=book_in_a_process, args=(redis_url, start, results))
        for _ in range(2)
    ]
    # When each books 100 global slots at the same time
    for process in processes:
        process.start()
    instants = [instant for _ in processes for instant in results.get(timeout=60)]
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    # Then the 200 instants on the Redis clock are distinct and at least 1/30 s apart
    assert len(instants) == 200
    assert_spaced(instants, 1 / 30)


def test_redis_keys_expire_soon_after_their_last_booking(redis_url: str) -> None:
    # Given a limiter that booked two messages to a group and cooled a chat down
    shared = RedisRateLimiter(redis_url, prefix="rl:")
    shared.reserve(telegram_slots(-7))
    shared.reserve(telegram_slots(-7))
    shared.cooldown("tg:chat:8", 4)
    shared.close()
    # Then every key it wrote expires a little after its last booking (the second message,
    # 3 s ahead, plus one interval) or its cooldown
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    ttls = {key: client.pttl(key) for key in client.keys("*")}
    client.close()
    assert set(ttls) == {"rl:slots:tg:global", "rl:slots:tg:chat:-7", "rl:cooldown:tg:chat:8"}
    assert 3000 < ttls["rl:slots:tg:global"] <= 1000 + 3000 + 34
    assert 3000 < ttls["rl:slots:tg:chat:-7"] <= 1000 + 6000
    assert 0 < ttls["rl:cooldown:tg:chat:8"] <= 1000 + 4000


def test_the_local_limiter_forgets_idle_keys() -> None:
    # Given a local limiter on a fake clock that booked messages to 100 chats
    now = [1000.0]
    local = LocalRateLimiter(clock=lambda: now[0])
    for chat in range(100):
        local.reserve(telegram_slots(chat))
    local.cooldown("tg:chat:1", 5)
    # When it books again after a quiet minute
    now[0] += 61
    assert local.reserve(telegram_slots(1)) == 0.0
    # Then only the keys of that message are left
    assert set(local._booked) == {"tg:global", "tg:chat:1"}
    assert local._cooldowns == {}


def test_try_reserve_books_a_slot_that_comes_soon_enough(limiter: RateLimiter) -> None:
    # Given a message booked for chat 1
    limiter.reserve(telegram_slots(1))
    # When chat 1 tries again within two seconds
    booked, wait = limiter.try_reserve(telegram_slots(1), 2.0)
    # Then the slot a second later is booked: a third message comes after it
    assert booked
    assert wait == pytest.approx(1.0, abs=CALLS)
    assert limiter.reserve(telegram_slots(1)) == pytest.approx(2.0, abs=CALLS)


def test_try_reserve_books_nothing_when_the_slot_is_further_off(limiter: RateLimiter) -> None:
    # Given a message booked for chat 1
    first = limiter.reserve_at(telegram_slots(1))
    # When chat 1 tries again but will wait at most a quarter second
    booked, wait = limiter.try_reserve(telegram_slots(1), 0.25)
    # Then nothing is booked, and it learns when its slot would be
    assert not booked
    assert wait == pytest.approx(1.0, abs=CALLS)
    assert wait <= 1.0
    # and the slot it did not take is still the next one, for chat 1 and the global schedule
    assert limiter.reserve_at(telegram_slots(1)) - first == pytest.approx(1.0, abs=EXACT)
    assert limiter.reserve_at(telegram_slots(2)) - first == pytest.approx(1 / 30, abs=EXACT)
