"""The fake Telegram Bot API (tests/fakes/telegram.py), driven by the real python-telegram-bot."""

from __future__ import annotations

import asyncio
import datetime as dtm
import json
import threading
import urllib.request
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import telegram
from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.error import (
    BadRequest,
    Conflict,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TimedOut,
)
from telegram.ext import Application, CallbackQueryHandler, ContextTypes, MessageHandler, filters
from telegram.request import HTTPXRequest
from telegram.warnings import PTBDeprecationWarning

from tests.fakes.telegram import Call, FakeTelegram, UploadedFile, render_text


@pytest.fixture(autouse=True)
def _ptb_timedelta(monkeypatch: pytest.MonkeyPatch) -> None:
    # Without it RetryAfter (and Voice.duration, ...) warn, and filterwarnings=error turns the
    # warning into the exception. See the module docstring of the fake.
    monkeypatch.setenv("PTB_TIMEDELTA", "true")


@pytest.fixture
def fake() -> Iterator[FakeTelegram]:
    with FakeTelegram(limits_enabled=False) as server:
        yield server
    assert server.errors == []


@pytest.fixture
async def bot(fake: FakeTelegram) -> AsyncIterator[telegram.Bot]:
    async with telegram.Bot(**fake.bot_kwargs()) as client:
        yield client


def keyboard(*pairs: tuple[str, str]) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup([[InlineKeyboardButton(t, callback_data=d) for t, d in pairs]])


# --------------------------------------------------------------------------- basics


async def test_get_me_and_the_base_urls(fake: FakeTelegram, bot: telegram.Bot) -> None:
    me = await bot.get_me()
    assert (me.id, me.is_bot, me.username, me.first_name) == (123456, True, "redesk_bot", "redesk")
    assert bot.base_url == f"{fake.url}/bot{fake.token}"
    assert fake.url.startswith("http://127.0.0.1:")
    assert fake.count("getMe") == 2  # `async with bot` called it once too


async def test_a_wrong_token_is_unauthorized(fake: FakeTelegram) -> None:
    with pytest.raises(InvalidToken):
        async with telegram.Bot("999:WRONG", base_url=f"{fake.url}/bot"):
            pass
    assert [call.status for call in fake.calls if call.method == "getMe"] == [401]


async def test_ptb_sends_urlencoded_posts_with_string_values(
    fake: FakeTelegram, bot: telegram.Bot
) -> None:
    await bot.send_message(42, "hello", reply_markup=keyboard(("Yes", "y")))
    call = fake.sent(42)[0]
    assert call.content_type == "application/x-www-form-urlencoded"
    # The fake turned chat_id "42" and the reply_markup JSON string back into values.
    assert call.params["chat_id"] == 42
    assert call.params["reply_markup"] == {
        "inline_keyboard": [[{"text": "Yes", "callback_data": "y"}]]
    }


def test_json_bodies_and_get_query_strings_are_accepted(fake: FakeTelegram) -> None:
    base = f"{fake.url}/bot{fake.token}"
    request = urllib.request.Request(
        f"{base}/sendMessage",
        data=json.dumps({"chat_id": "7", "text": "json"}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        body = json.load(response)
    assert body["ok"] and body["result"]["text"] == "json"
    with urllib.request.urlopen(f"{base}/GETME", timeout=5) as response:  # case-insensitive
        assert json.load(response)["result"]["username"] == "redesk_bot"
    with urllib.request.urlopen(f"{base}/sendMessage?chat_id=7&text=q", timeout=5) as response:
        assert json.load(response)["result"]["text"] == "q"
    assert fake.texts(7) == ["json", "q"]


# --------------------------------------------------------------------------- sending and editing


async def test_send_message_returns_a_full_message(fake: FakeTelegram, bot: telegram.Bot) -> None:
    first = await bot.send_message(42, "办结了吗？", reply_markup=keyboard(("是", "done:1")))
    second = await bot.send_message(42, "second")
    assert first.text == "办结了吗？"
    assert first.chat.id == 42 and first.chat.type == "private"
    assert first.from_user is not None and first.from_user.username == "redesk_bot"
    assert first.reply_markup is not None
    assert first.reply_markup.inline_keyboard[0][0].callback_data == "done:1"
    assert second.message_id > first.message_id
    assert fake.texts(42) == ["办结了吗？", "second"]
    assert fake.buttons(fake.sent(42)[0]) == [("是", "done:1")]
    assert [c.method for c in fake.sent()] == ["sendMessage", "sendMessage"]


async def test_group_chats_are_supergroups(fake: FakeTelegram, bot: telegram.Bot) -> None:
    message = await bot.send_message(-100123, "new request")
    assert message.chat.type == "supergroup" and message.chat.title
    group = fake.group(-1005, "居委会")
    message = await bot.send_message(group["id"], "hi")
    assert message.chat.title == "居委会"


async def test_edit_message_text(fake: FakeTelegram, bot: telegram.Bot) -> None:
    sent = await bot.send_message(42, "old", reply_markup=keyboard(("A", "a")))
    edited = await bot.edit_message_text(
        "new", chat_id=42, message_id=sent.message_id, reply_markup=keyboard(("B", "b"))
    )
    assert isinstance(edited, telegram.Message)
    assert edited.text == "new" and edited.edit_date is not None
    assert fake.last_message(42)["text"] == "new"  # type: ignore[index]
    with pytest.raises(BadRequest, match="not modified"):
        await bot.edit_message_text(
            "new", chat_id=42, message_id=sent.message_id, reply_markup=keyboard(("B", "b"))
        )
    # Without reply_markup Telegram removes the inline keyboard: that is a modification.
    await bot.edit_message_text("new", chat_id=42, message_id=sent.message_id)
    assert "reply_markup" not in fake.last_message(42)  # type: ignore[operator]
    with pytest.raises(BadRequest, match="(?i)message to edit not found"):
        await bot.edit_message_text("x", chat_id=42, message_id=9999)
    assert len(fake.edits(42)) == 2


async def test_too_long_text_is_a_bad_request(fake: FakeTelegram, bot: telegram.Bot) -> None:
    await bot.send_message(42, "字" * 4096)
    with pytest.raises(BadRequest, match="(?i)message is too long"):
        await bot.send_message(42, "字" * 4097)
    with pytest.raises(BadRequest, match="(?i)message text is empty"):
        await bot.send_message(42, " ")
    assert len(fake.sent(42)) == 1
    assert fake.count("sendMessage", ok=False) == 2


async def test_parse_modes_are_checked_like_telegram(fake: FakeTelegram, bot: telegram.Bot) -> None:
    message = await bot.send_message(42, "<b>SQ-1</b> a &lt; b", parse_mode="HTML")
    assert message.text == "SQ-1 a < b"
    with pytest.raises(BadRequest, match="(?i)can't parse entities"):
        await bot.send_message(42, "a < b", parse_mode="HTML")
    with pytest.raises(BadRequest, match="(?i)can't parse entities"):
        await bot.send_message(42, "SQ-20240101-0001.", parse_mode="MarkdownV2")
    message = await bot.send_message(42, r"*SQ\-1* done\.", parse_mode="MarkdownV2")
    assert message.text == "SQ-1 done."
    assert render_text("[link](https://x.org) `a_b`", "Markdown") == "link a_b"


async def test_callback_data_over_64_bytes_is_refused(bot: telegram.Bot) -> None:
    with pytest.raises(BadRequest) as caught:
        await bot.send_message(42, "x", reply_markup=keyboard(("A", "受理" * 11)))
    assert caught.value.message == "Button_data_invalid"  # PTB's str.capitalize() at work


async def test_media_and_location(fake: FakeTelegram, bot: telegram.Bot) -> None:
    photo = await bot.send_photo(42, b"\x89PNG fake", caption="现场")
    assert photo.photo and photo.caption == "现场"
    call = fake.sent(42)[-1]
    assert call.content_type == "multipart/form-data"
    assert isinstance(call.params["photo"], UploadedFile)
    assert call.params["photo"].content == b"\x89PNG fake"

    user = fake.user(7, "Ann")
    voice_id = fake.voice_update(user)["message"]["voice"]["file_id"]
    voice = await bot.send_voice(42, voice_id)  # forwarding a resident's voice by file_id
    assert voice.voice is not None and voice.voice.file_id == voice_id
    video = await bot.send_video(42, b"\0\0\0\x18ftyp")
    assert video.video is not None
    document = await bot.send_document(42, b"a,b\n", filename="export.csv")
    assert document.document is not None and document.document.file_name == "export.csv"
    location = await bot.send_location(42, latitude=31.23, longitude=121.47)
    assert location.location is not None and location.location.latitude == pytest.approx(31.23)
    assert [c.method for c in fake.sent(42)] == [
        "sendPhoto",
        "sendVoice",
        "sendVideo",
        "sendDocument",
        "sendLocation",
    ]
    with pytest.raises(BadRequest, match="(?i)wrong file identifier"):
        await bot.send_photo(42, "no-such-file-id")


async def test_get_file_and_download(fake: FakeTelegram, bot: telegram.Bot) -> None:
    fake.add_file("doc-1", b"%PDF-1.4 hello")
    file = await bot.get_file("doc-1")
    assert file.file_size == 14 and file.file_path is not None
    assert file.file_path.startswith(f"{fake.url}/file/bot{fake.token}/")
    assert bytes(await file.download_as_bytearray()) == b"%PDF-1.4 hello"
    assert fake.count("downloadFile", ok=True) == 1

    user = fake.user(7)
    update = Update.de_json(fake.photo_update(user, content=b"big jpeg"), bot)
    assert update.message is not None
    largest = await update.message.photo[-1].get_file()
    assert bytes(await largest.download_as_bytearray()) == b"big jpeg"
    with pytest.raises(BadRequest):
        await bot.get_file("unknown")


# --------------------------------------------------------------------------- updates


async def test_long_poll_returns_a_queued_update(fake: FakeTelegram, bot: telegram.Bot) -> None:
    user = fake.user(7, "Ann", "ann")
    poll = asyncio.create_task(bot.get_updates(timeout=5))
    assert await fake.wait_for_async(lambda f: f.waiting_polls == 1)
    assert not poll.done()
    fake.queue_update(fake.text_update(user, "楼道灯坏了"))
    updates = await asyncio.wait_for(poll, 2)
    assert len(updates) == 1
    message = updates[0].message
    assert message is not None and message.text == "楼道灯坏了"
    assert message.from_user is not None and message.from_user.username == "ann"
    assert message.chat.type == "private" and message.chat.id == 7
    # Confirming drops it; an empty poll with timeout 0 answers at once.
    assert await bot.get_updates(offset=updates[0].update_id + 1, timeout=0) == ()
    assert fake.pending_updates() == []


async def test_every_update_builder_parses(fake: FakeTelegram, bot: telegram.Bot) -> None:
    user = fake.user(7, "Ann")
    group = fake.group()
    sent = await bot.send_message(7, "accept?", reply_markup=keyboard(("OK", "ok:1")))
    text = fake.text_update(user, "hello")
    built = [
        text,
        fake.command_update(user, "bind", "ABC123"),
        fake.command_update(user, "help", chat=group, mention=True),
        fake.photo_update(user, caption="look"),
        fake.voice_update(user, duration=4),
        fake.video_update(user),
        fake.document_update(user),
        fake.location_update(user, 31.2, 121.5),
        fake.edited_text_update(text, "hello again"),
        fake.callback_update(user, "ok:1", fake.sent(7)[0]),
        fake.text_update(user, "in the group", chat=group),
        fake.channel_post_update("news"),
        fake.poll_update(),
        fake.my_chat_member_update(user),
    ]
    for update in built:
        fake.queue_update(update)
    updates = await bot.get_updates(timeout=1)
    assert [u.update_id for u in updates] == [u["update_id"] for u in built]
    assert len({u.update_id for u in updates}) == len(built)
    (
        plain,
        bind,
        help_,
        photo,
        voice,
        video,
        document,
        location,
        edited,
        callback,
        in_group,
        post,
        poll,
        member,
    ) = updates
    assert plain.message is not None and plain.message.text == "hello"
    assert bind.message is not None
    assert bind.message.parse_entities(["bot_command"]) == {bind.message.entities[0]: "/bind"}
    assert help_.message is not None and help_.message.text == "/help@redesk_bot"
    assert help_.message.chat.type == "supergroup"
    assert photo.message is not None and len(photo.message.photo) == 3
    assert photo.message.photo[0].file_size < photo.message.photo[-1].file_size  # type: ignore[operator]
    assert voice.message is not None and voice.message.voice is not None
    assert voice.message.voice.duration == dtm.timedelta(seconds=4)
    assert video.message is not None and video.message.video is not None
    assert document.message is not None and document.message.document is not None
    assert location.message is not None and location.message.location is not None
    assert edited.edited_message is not None
    assert edited.edited_message.message_id == plain.message.message_id
    assert edited.edited_message.text == "hello again" and edited.edited_message.edit_date
    assert callback.callback_query is not None and callback.callback_query.data == "ok:1"
    assert callback.callback_query.message is not None
    assert callback.callback_query.message.message_id == sent.message_id
    assert in_group.effective_chat is not None and in_group.effective_chat.id == group["id"]
    assert post.channel_post is not None and post.channel_post.text == "news"
    assert poll.poll is not None
    assert member.my_chat_member is not None
    assert member.my_chat_member.new_chat_member.status == "kicked"


async def test_reactions_need_allowed_updates(fake: FakeTelegram, bot: telegram.Bot) -> None:
    user = fake.user(7)
    fake.queue_update(fake.message_reaction_update(user, 1))
    assert await bot.get_updates(timeout=0) == ()  # not delivered by default, like Telegram
    fake.queue_update(fake.message_reaction_update(user, 1, "🔥"))
    updates = await bot.get_updates(timeout=0, allowed_updates=Update.ALL_TYPES)
    assert updates[0].message_reaction is not None


async def test_answer_callback_query(fake: FakeTelegram, bot: telegram.Bot) -> None:
    user = fake.user(7)
    sent = await bot.send_message(7, "pick", reply_markup=keyboard(("A", "a")))
    update = fake.callback_update(user, "a", sent.to_dict())
    query_id = update["callback_query"]["id"]
    assert await bot.answer_callback_query(query_id, text="已受理") is True
    with pytest.raises(BadRequest, match="(?i)query is too old"):
        await bot.answer_callback_query(query_id)  # answered already
    with pytest.raises(BadRequest, match="(?i)query is too old"):
        await bot.answer_callback_query("123")
    answers = fake.callback_answers()
    assert len(answers) == 1 and answers[0].params["text"] == "已受理"


async def test_webhook_and_get_updates_conflict(fake: FakeTelegram, bot: telegram.Bot) -> None:
    assert await bot.set_webhook(
        "https://desk.example/telegram/webhook",
        secret_token="s3cret",
        allowed_updates=["message", "callback_query"],
    )
    assert fake.webhook["secret_token"] == "s3cret"
    info = await bot.get_webhook_info()
    assert info.url == "https://desk.example/telegram/webhook"
    assert info.allowed_updates == ("message", "callback_query")
    with pytest.raises(Conflict, match="webhook is active"):
        await bot.get_updates()
    assert await bot.delete_webhook()
    assert await bot.get_updates(timeout=0) == ()


async def test_a_second_poller_ends_the_first(fake: FakeTelegram, bot: telegram.Bot) -> None:
    # (One Bot cannot poll twice at once: its getUpdates pool has one connection, so PTB itself
    # raises TimedOut("Pool timeout"). Two running instances are the real-world case.)
    async with telegram.Bot(**fake.bot_kwargs()) as other:
        first = asyncio.create_task(bot.get_updates(timeout=5))
        assert await fake.wait_for_async(lambda f: f.waiting_polls == 1)
        second = asyncio.create_task(other.get_updates(timeout=2))
        with pytest.raises(Conflict, match="terminated by other getUpdates"):
            await asyncio.wait_for(first, 3)
        fake.queue_update(fake.text_update(fake.user(7), "x"))
        assert len(await asyncio.wait_for(second, 3)) == 1


def test_post_webhook_sends_what_telegram_sends(fake: FakeTelegram) -> None:
    received: list[tuple[str | None, dict[str, Any]]] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.headers.get("X-Telegram-Bot-Api-Secret-Token"), json.loads(body)))
            self.send_response(200 if received[-1][0] == "s3cret" else 403)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/telegram/webhook"
        update = fake.text_update(fake.user(7), "hi")
        urllib.request.urlopen(
            urllib.request.Request(  # setWebhook like the app would
                f"{fake.url}/bot{fake.token}/setWebhook",
                data=f"url={url}&secret_token=s3cret".encode(),
                method="POST",
            ),
            timeout=5,
        ).close()
        assert fake.post_webhook(None, update) == (200, "ok")  # registered url and secret
        assert fake.post_webhook(url, update, "wrong")[0] == 403
        assert fake.post_webhook(url, update, None)[0] == 403
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert [secret for secret, _ in received] == ["s3cret", "wrong", None]
    assert received[0][1] == update
    assert [status for _, _, status in fake.webhook_posts] == [200, 403, 403]


# --------------------------------------------------------------------------- limits and faults


async def test_per_chat_limit_answers_retry_after() -> None:
    with FakeTelegram(per_chat_interval=1.0) as fake:
        async with telegram.Bot(**fake.bot_kwargs()) as bot:
            await bot.send_message(42, "one")
            with pytest.raises(RetryAfter) as caught:
                await bot.send_message(42, "two")
            assert caught.value.retry_after == dtm.timedelta(seconds=1)  # timedelta: PTB_TIMEDELTA
            await bot.send_message(43, "another chat is fine")
    assert fake.texts(42) == ["one"]
    [refused] = [call for call in fake.calls if call.method == "sendMessage" and not call.ok]
    assert refused.chat_id == 42
    assert refused.status == 429 and refused.description == "Too Many Requests: retry after 1"


async def test_without_ptb_timedelta_a_429_surfaces_as_a_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PTB_TIMEDELTA")
    with FakeTelegram() as fake:
        fake.force_429(3, duration=5)
        async with telegram.Bot(**fake.bot_kwargs()) as bot:
            with pytest.raises(PTBDeprecationWarning):  # filterwarnings=error at work
                await bot.send_message(42, "x")


async def test_group_and_global_limits() -> None:
    with FakeTelegram(per_chat_interval=0, group_per_minute=3, global_per_second=5) as fake:
        async with telegram.Bot(**fake.bot_kwargs()) as bot:
            for n in range(3):
                await bot.send_message(-100123, f"g{n}")
            with pytest.raises(RetryAfter) as caught:
                await bot.send_message(-100123, "g3")
            assert (
                dtm.timedelta(seconds=55) <= caught.value.retry_after <= dtm.timedelta(seconds=60)
            )
            await bot.send_message(1, "p1")
            await bot.send_message(2, "p2")
            with pytest.raises(RetryAfter):  # 5 within one second over all chats
                await bot.send_message(3, "p3")
    assert len(fake.sent()) == 5


async def test_force_429_and_limits_disabled() -> None:
    with FakeTelegram(limits_enabled=False) as fake:
        async with telegram.Bot(**fake.bot_kwargs()) as bot:
            for n in range(5):
                await bot.send_message(42, str(n))  # no spacing needed
            fake.force_429(7, duration=0.3)
            with pytest.raises(RetryAfter) as caught:
                await bot.send_message(42, "x")
            assert caught.value.retry_after == dtm.timedelta(seconds=7)
            await asyncio.sleep(0.35)
            await bot.send_message(42, "after")
    assert fake.texts(42)[-1] == "after"


async def test_blocked_chat_is_forbidden(fake: FakeTelegram, bot: telegram.Bot) -> None:
    fake.block(42)
    fake.block(-100123)
    with pytest.raises(Forbidden, match="blocked by the user"):
        await bot.send_message(42, "x")
    with pytest.raises(Forbidden, match="kicked"):
        await bot.send_message(-100123, "x")
    fake.unblock(42)
    await bot.send_message(42, "back")
    assert fake.texts(42) == ["back"]


async def test_server_errors_are_network_errors(fake: FakeTelegram, bot: telegram.Bot) -> None:
    fake.fail_next(1)
    with pytest.raises(NetworkError) as caught:
        await bot.send_message(42, "x")
    assert type(caught.value) is NetworkError  # no more specific class for a 500
    assert "Internal Server Error" in str(caught.value)
    fake.fail_next(1, status=502, description="Bad Gateway", methods=["sendMessage"])
    await bot.get_me()  # not a matching method: unaffected
    with pytest.raises(NetworkError):
        await bot.send_message(42, "x")
    await bot.send_message(42, "ok")
    assert fake.texts(42) == ["ok"]
    assert [c.status for c in fake.calls if c.method == "sendMessage"] == [500, 502, 200]


async def test_a_slow_answer_times_out_but_the_message_is_delivered(fake: FakeTelegram) -> None:
    request = HTTPXRequest(read_timeout=0.2)
    async with telegram.Bot(**fake.bot_kwargs(), request=request) as bot:
        fake.delay_next(1, 0.5, methods="sendMessage")
        with pytest.raises(TimedOut):
            await bot.send_message(42, "slow")
        assert await fake.wait_for_async(lambda f: f.texts(42) == ["slow"], 2)
        fake.delay_next(1, 0.5, methods="sendMessage", before=True)
        with pytest.raises(TimedOut):
            await bot.send_message(42, "late")
        assert fake.texts(42) == ["slow"]  # not yet: the request is still "on its way"
        assert await fake.wait_for_async(lambda f: f.texts(42) == ["slow", "late"], 2)


def test_wait_for_from_another_thread(fake: FakeTelegram) -> None:
    def later() -> None:
        urllib.request.urlopen(
            f"{fake.url}/bot{fake.token}/sendMessage?chat_id=5&text=hi", timeout=5
        ).close()

    timer = threading.Timer(0.05, later)
    timer.start()
    assert fake.wait_for(lambda f: f.texts(5) == ["hi"], timeout=3)
    assert not fake.wait_for(lambda f: f.count("sendPhoto") > 0, timeout=0.05)
    timer.join()
    assert isinstance(fake.sent(5)[0], Call)


async def test_ptb_application_polls_the_fake(fake: FakeTelegram) -> None:
    async def echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_message is not None
        await update.effective_message.reply_text(f"echo: {update.effective_message.text}")

    async def pressed(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.callback_query is not None
        await update.callback_query.answer("ok")
        await update.callback_query.edit_message_text("done")

    app = (
        Application.builder()
        .token(fake.token)
        .base_url(f"{fake.url}/bot")
        .base_file_url(f"{fake.url}/file/bot")
        .build()
    )
    app.add_handler(MessageHandler(filters.TEXT, echo))
    app.add_handler(CallbackQueryHandler(pressed))
    async with app:
        assert app.updater is not None
        await app.updater.start_polling(timeout=1)
        await app.start()
        user = fake.user(7, "Ann")
        fake.queue_update(fake.text_update(user, "hi"))
        assert await fake.wait_for_async(lambda f: f.texts(7) == ["echo: hi"])
        fake.queue_update(fake.callback_update(user, "x", fake.sent(7)[0]))
        assert await fake.wait_for_async(lambda f: len(f.edits(7)) == 1)
        await app.updater.stop()
        await app.stop()
    assert fake.messages(7)[0]["text"] == "done"
    assert len(fake.callback_answers()) == 1
