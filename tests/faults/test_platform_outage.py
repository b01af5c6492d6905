"""Telegram and WeChat out for a minute under load: everything delivered afterwards, once, in
order per chat.

Production's shape: PostgreSQL and Redis of the test's own, `redesk run` with the Telegram
webhook and WeChat (safe mode, encrypted callbacks) on in the same deployment, `redesk worker`
and `redesk scheduler`. The fake Bot API and the fake WeChat API run in the test process.

Once a resident on each platform has been answered (the clients are made, WeChat's access token
is shared through Redis), residents on both platforms write three messages each, one round at
the start of each phase of a one-minute outage of both platforms' APIs, timed with the test
clock (a few latecomers write for the first time when the timeouts start):

1. 20 s of server errors: HTTP 500 (WeChat: HTTP 500, then errcode -1 "system busy");
2. 20 s of timeouts: each call is held longer than redesk's client waits for it (Telegram 15 s,
   WeChat 10 s) and then refused, so nothing is acted on (a platform that acts on a call the
   client gave up on is the unknowable window, not this test's subject);
3. 20 s of rate limiting: Telegram HTTP 429 with retry_after, WeChat errcode 45009.

Each message makes a request; its receipt must reach the resident exactly once, and a chat's
receipts must arrive in the order of its request numbers. What redesk sent is read from the
calls the fakes answered successfully, where the resident would see it.
"""

from __future__ import annotations

import itertools
import re
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.fakes.telegram import FakeTelegram
from tests.fakes.wechat import Callback, FakeWeChat, new_openid
from tests.faults.conftest import PRODUCTION, RECEIPT, Desk, database_state, open_desk, query
from tests.faults.servers import PostgresServer, RedisServer

#: Residents on Telegram and on WeChat.
TELEGRAM_RESIDENTS = 40
WECHAT_RESIDENTS = 40

#: Messages each resident writes: one at the start of each phase of the outage.
MESSAGES = 3

#: Residents on each platform who write for the first time when the timeouts start (their
#: first receipt meets a timeout on its first attempt).
LATECOMERS = 2

#: Seconds of each phase of the outage (three phases: a minute in all).
PHASE_SECONDS = 20.0

#: Seconds the fakes hold a call in the timeout phase: longer than redesk's Bot API read
#: timeout (15 s, bot/channels/telegram.py) and its WeChat client timeout (10 s,
#: bot/channels/wechat.py), so every such call times out in redesk.
HANG_SECONDS = 25.0

#: retry_after of the Bot API's 429s in the rate-limit phase: Telegram's shortest (and its most
#: common for a short flood), so a row meets as many 429s in the phase as the worker can send.
RETRY_AFTER = 1

#: "The next n calls" of a fault that lasts until the phase ends (cleared then).
UNTIL_CLEARED = 1_000_000

#: Threads of the worker (REDESK_WORKER_THREADS).
WORKER_THREADS = 4

#: Threads posting WeChat callbacks at once.
POSTING_THREADS = 16

#: Seconds one callback POST may take, and between two attempts of one not answered "success".
POST_TIMEOUT = 15.0
POST_RETRY_PAUSE = 0.5

#: Attempts of one callback POST before the test gives up (a bound for broken builds only).
POST_ATTEMPTS = 120

#: A request number in a message.
NUMBER = re.compile(r"【(SQ-\d{8}-\d{4,})】")

#: The WeChat API path of customer-service messages.
CUSTOM_SEND = "message/custom/send"

#: A chat: (channel, its id on the channel).
Chat = tuple[str, str]


# --- the platforms' outage ---------------------------------------------------------------


def server_errors(telegram: FakeTelegram, wechat: FakeWeChat, *, busy: bool) -> None:
    """Every call answers HTTP 500 without acting (WeChat with `busy`: errcode -1)."""
    telegram.clear_faults()
    wechat.clear_faults()
    telegram.fail_next(UNTIL_CLEARED, 500, "Internal Server Error")
    if busy:
        wechat.fail_next(UNTIL_CLEARED, errcode=-1)
    else:
        wechat.fail_next(UNTIL_CLEARED, 500)


def timeouts(telegram: FakeTelegram, wechat: FakeWeChat) -> None:
    """Every call is held HANG_SECONDS (redesk times out), then refused without acting."""
    telegram.clear_faults()
    wechat.clear_faults()
    telegram.delay_next(UNTIL_CLEARED, HANG_SECONDS, before=True)
    telegram.fail_next(UNTIL_CLEARED, 500, "Internal Server Error")
    wechat.delay_next(UNTIL_CLEARED, HANG_SECONDS, before=True)
    wechat.fail_next(UNTIL_CLEARED, 500)


def rate_limited(telegram: FakeTelegram, wechat: FakeWeChat) -> None:
    """Every send answers Telegram 429 (retry_after) / WeChat 45009 without acting."""
    telegram.clear_faults()
    wechat.clear_faults()
    telegram.force_429(RETRY_AFTER, PHASE_SECONDS)
    wechat.fail_next(UNTIL_CLEARED, errcode=45009)


def wait_for_clock(instant: float) -> None:
    """Waits until time.monotonic() reaches `instant` (times the phases; asserts nothing)."""
    while (left := instant - time.monotonic()) > 0:
        time.sleep(min(left, 0.5))


# --- residents writing -------------------------------------------------------------------


def post_callback(wechat: FakeWeChat, url: str, callback: Callback) -> int:
    """POSTs a callback like WeChat: again until it is answered "success"; the attempts."""
    seen: list[Any] = []
    for attempt in range(1, POST_ATTEMPTS + 1):
        try:
            answer: Any = wechat.post_callback(url, callback, timeout=POST_TIMEOUT)
        except OSError as exc:
            answer = repr(exc)
        if answer == (200, b"success"):
            return attempt
        seen.append(answer)
        time.sleep(POST_RETRY_PAUSE)
    raise AssertionError(f"callback {callback.msg_id} never accepted: {seen[-5:]}")


def post_round(
    desk: Desk,
    wechat: FakeWeChat,
    telegram_updates: list[dict[str, Any]],
    callbacks: list[Callback],
) -> None:
    """Posts one message of every resident, Telegram and WeChat at once; returns when every
    one was accepted (so a resident's next message is posted after this one)."""
    finished = desk.post_in_background(telegram_updates)
    url = f"{desk.deployment.base_url}/wechat"
    with ThreadPoolExecutor(POSTING_THREADS) as pool:
        attempts = list(pool.map(lambda callback: post_callback(wechat, url, callback), callbacks))
    finished()
    assert len(attempts) == len(callbacks)


@dataclass(frozen=True)
class Resident:
    """A resident on Telegram (`user` set) or WeChat, and the rounds they write in."""

    channel: str
    chat: str
    index: int
    rounds: range
    user: dict[str, Any] | None = None

    @property
    def key(self) -> Chat:
        """Their chat."""
        return self.channel, self.chat

    def words(self, number: int) -> str:
        """What they write in round `number`."""
        return f"{self.index}号楼门口的路灯不亮了，晚上很黑（第{number}轮）"


_indexes = itertools.count()


def residents(
    desk: Desk, on_telegram: int, on_wechat: int, rounds: range, *, first_id: int = 500_000
) -> list[Resident]:
    """`on_telegram` residents on Telegram (user ids from `first_id`) and `on_wechat` on
    WeChat (fresh openids), each writing one message in every round of `rounds`."""
    found = [
        Resident("telegram", str(user["id"]), next(_indexes), rounds, user)
        for user in desk.residents(on_telegram, first_id)
    ]
    found += [Resident("wechat", new_openid(), next(_indexes), rounds) for _ in range(on_wechat)]
    return found


# --- what redesk did ---------------------------------------------------------------------


def receipt_numbers(telegram: FakeTelegram, wechat: FakeWeChat) -> dict[Chat, list[str]]:
    """Chat -> numbers of the receipts the fakes delivered to it, in delivery order."""
    found: dict[Chat, list[str]] = {}
    for call in telegram.sent():
        message = str(call.params.get("text") or "")
        if call.method == "sendMessage" and RECEIPT in message:
            found.setdefault(("telegram", str(call.chat_id)), []).append(number_of(message))
    for openid, message in ((sent.openid, sent.body) for sent in wechat.sent()):
        content = str(((message or {}).get("text") or {}).get("content") or "")
        if RECEIPT in content:
            found.setdefault(("wechat", str(openid)), []).append(number_of(content))
    return found


def number_of(message: str) -> str:
    """The request number a message is about."""
    found = NUMBER.search(message)
    assert found, message
    return found.group(1)


def requests_by_chat(url: str) -> dict[Chat, list[tuple[str, str]]]:
    """Chat -> (number, text) of every request its resident made, oldest first."""
    found: dict[Chat, list[tuple[str, str]]] = {}
    for channel, chat, number, words_ in query(
        url,
        "SELECT p.channel, p.external_id, r.number, r.text FROM requests r "
        "JOIN people p ON p.id = r.requester_id ORDER BY r.id",
    ):
        found.setdefault((str(channel), str(chat)), []).append((number, words_))
    return found


def outbox_attempts(url: str) -> int:
    """The most attempts any outbox row took."""
    return int(query(url, "SELECT coalesce(max(attempts), 0) FROM outbox")[0][0])


def failed_calls(
    calls: list[Any], phases: list[tuple[str, float, float]], wanted: Callable[[Any], bool]
) -> dict[str, int]:
    """Phase name -> calls `wanted` that arrived in that phase and were answered an error."""
    counts: Counter[str] = Counter()
    for call in calls:
        if not wanted(call) or call.ok:
            continue
        for name, start, end in phases:
            if start <= call.at < end:
                counts[name] += 1
    return {name: counts[name] for name, _, _ in phases}


def test_a_minute_of_platform_outage_is_delivered_after_once_and_in_order_per_chat(
    tmp_path: Path,
    postgres_server: PostgresServer,
    redis_server: RedisServer,
    figures: dict[str, Any],
) -> None:
    with (
        FakeWeChat(safe=True) as wechat,
        open_desk(
            tmp_path,
            postgres_server.url,
            redis_server.url,
            processes=PRODUCTION,
            extra_env={**wechat.settings_env(), "REDESK_WORKER_THREADS": str(WORKER_THREADS)},
        ) as desk,
    ):
        telegram = desk.fake
        everyone = [
            # One resident on each platform writes before the outage (round 0) ...
            *residents(desk, 1, 1, range(0, 1), first_id=499_999),
            # ... the load writes at the start of each phase of the outage (rounds 1-3) ...
            *residents(desk, TELEGRAM_RESIDENTS, WECHAT_RESIDENTS, range(1, MESSAGES + 1)),
            # ... and latecomers write for the first time when the timeouts start.
            *residents(desk, LATECOMERS, LATECOMERS, range(2, MESSAGES + 1), first_id=600_000),
        ]
        expected = {
            resident.key: [resident.words(number) for number in resident.rounds]
            for resident in everyone
        }

        def post_message(number: int) -> None:
            writing = [resident for resident in everyone if number in resident.rounds]
            post_round(
                desk,
                wechat,
                [
                    telegram.text_update(resident.user, resident.words(number))
                    for resident in writing
                    if resident.user is not None
                ],
                [
                    wechat.text(resident.chat, resident.words(number))
                    for resident in writing
                    if resident.user is None
                ],
            )

        # Given a desk that answered a resident on each platform (clients made, WeChat's
        # access token fetched and shared through Redis)
        post_message(0)
        first = [resident.key for resident in everyone if 0 in resident.rounds]
        desk.wait_until(
            "the receipts before the outage",
            lambda: all(receipt_numbers(telegram, wechat).get(chat) for chat in first),
        )

        # When both platforms' APIs fail for a minute, 20 s of server errors, 20 s of
        # timeouts, 20 s of rate limiting, and the residents write at the start of each
        # phase (a resident's messages posted in order: the next once the last was accepted)
        started = time.monotonic()
        server_errors(telegram, wechat, busy=False)
        post_message(1)
        wait_for_clock(started + PHASE_SECONDS / 2)
        server_errors(telegram, wechat, busy=True)
        wait_for_clock(started + PHASE_SECONDS)
        timeouts(telegram, wechat)
        post_message(2)
        wait_for_clock(started + 2 * PHASE_SECONDS)
        rate_limited(telegram, wechat)
        post_message(3)
        wait_for_clock(started + 3 * PHASE_SECONDS)
        telegram.clear_faults()
        wechat.clear_faults()
        ended = time.monotonic()
        at_end = database_state(desk.database_url)

        # Then, once the platforms answer again, redesk finishes everything it has to do
        def settled() -> bool:
            state = database_state(desk.database_url)
            return bool(state["inbox_pending"] == 0 and state["outbox_pending"] == 0)

        recovery = desk.wait_until("nothing pending in the inbox and the outbox", settled)
        got = receipt_numbers(telegram, wechat)
        stored = requests_by_chat(desk.database_url)
        state = database_state(desk.database_url)
        most_attempts = outbox_attempts(desk.database_url)

        phases = [
            ("500", started, started + PHASE_SECONDS),
            ("timeout", started + PHASE_SECONDS, started + 2 * PHASE_SECONDS),
            ("429", started + 2 * PHASE_SECONDS, ended),
        ]
        sent_messages = sum(len(messages) for messages in expected.values())
        numbers = {chat: [number for number, _ in stored.get(chat, [])] for chat in expected}
        duplicates = sum(
            count - 1
            for chat in expected
            for count in Counter(got.get(chat, [])).values()
            if count > 1
        )
        lost = sum(
            1 for chat in expected for number in numbers[chat] if number not in got.get(chat, [])
        )
        out_of_order = [
            chat for chat in expected if list(dict.fromkeys(got.get(chat, []))) != numbers[chat]
        ]
        figures.update(
            {
                "residents": len(expected),
                "messages_sent": sent_messages,
                "requests_stored": sum(len(found) for found in stored.values()),
                "receipts_delivered": sum(len(got.get(chat, [])) for chat in expected),
                "duplicates": duplicates,
                "lost": lost,
                "chats_out_of_order": len(out_of_order),
                "sends_answered_ok_during_outage": sum(
                    1
                    for at in [
                        *(call.at for call in telegram.sent()),
                        *(call.at for call in wechat.sent()),
                    ]
                    if started <= at < ended
                ),
                "inbox_pending_at_outage_end": at_end["inbox_pending"],
                "outbox_pending_at_outage_end": at_end["outbox_pending"],
                "telegram_failed_calls": failed_calls(
                    telegram.calls, phases, lambda call: call.method == "sendMessage"
                ),
                "wechat_failed_calls": failed_calls(
                    wechat.calls, phases, lambda call: call.path == CUSTOM_SEND
                ),
                "most_attempts_of_an_outbox_row": most_attempts,
                "outbox_failed": state["outbox_failed"],
                "seconds_of_outage": round(ended - started, 1),
                "seconds_from_outage_end_to_all_delivered": round(recovery, 1),
                "seconds_from_outage_end_to_last_receipt": {
                    "telegram": round(max(call.at for call in telegram.sent()) - ended, 1),
                    "wechat": round(max(call.at for call in wechat.sent()) - ended, 1),
                },
            }
        )

        # And every message made exactly one request, in the order it was written
        texts = {chat: [words_ for _, words_ in stored.get(chat, [])] for chat in expected}
        wrong = {chat: texts[chat] for chat in expected if texts[chat] != expected[chat]}
        assert not wrong, (
            f"{len(wrong)} chats whose requests are not their messages: {list(wrong.items())[:5]}"
        )
        assert len(stored) == len(expected), sorted(set(stored) - set(expected))

        # And every request's receipt reached its resident exactly once, in the order of the
        # chat's request numbers
        assert (lost, duplicates) == (0, 0), {
            chat: (got.get(chat), numbers[chat])
            for chat in expected
            if got.get(chat) != numbers[chat]
        }
        assert not out_of_order, {chat: (got.get(chat), numbers[chat]) for chat in out_of_order[:5]}

        # And nothing is left pending or given up in the inbox or the outbox
        assert (state["inbox_pending"], state["inbox_failed"]) == (0, 0), state
        assert (state["outbox_pending"], state["outbox_failed"]) == (0, 0), state

        # And the outage was real: the receipts waited for it, and each phase's calls failed
        assert at_end["outbox_pending"] > 0, at_end
        assert all(figures["telegram_failed_calls"].values()), figures
        assert all(figures["wechat_failed_calls"].values()), figures
        assert not wechat.errors, wechat.errors
        for name in ("run", "worker", "scheduler"):
            log = (desk.deployment.directory / f"{name}.log").read_text(errors="replace")
            assert "Traceback" not in log, f"{name}.log:\n{log[-5000:]}"
