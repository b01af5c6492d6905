"""Cards that went stale (workflow/cards.py, bot/cards.py) on the web channel, on SQLite and
PostgreSQL: when a request moves on, a card that offered actions no longer possible gets an
update message naming its seq, delivered in order through the recipient's outbox."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session, select

from bot import dispatch
from bot.channels import web
from bot.runtime import Runtime
from bot.texts import text as catalogue
from storage import queries
from storage.db import session_scope
from storage.models import CardMessage, OutboxMessage, OutboxStatus
from tests.utils.app import TestClient
from tests.utils.harness import Desk, Identity, Message
from workflow import service
from workflow.cards import REFRESH_KEY

#: The line under a card whose request is being handled by the committee.
HANDLING = catalogue("line.state", state="办理中（党委做单）")


def card_of(identity: Identity, heading: str = "新诉求") -> Message:
    """The newest message of `identity` containing `heading` that is not an update."""
    identity.new_messages()
    found = [m for m in identity.received if heading in m.text and m.updates is None]
    assert found, f"no {heading!r} card among {[m.text for m in identity.received]}"
    return found[-1]


def updates_of(identity: Identity, card: Message) -> list[Message]:
    """The update messages `identity` received for `card`, in order."""
    identity.new_messages()
    return [m for m in identity.received if m.updates == card.seq]


def store_only(identity: Identity, text: str) -> None:
    """Stores and handles `identity`'s message without delivering anything yet."""
    runtime = identity.desk.runtime
    with session_scope(runtime.engine) as session:
        queries.add_inbox(
            session=session,
            channel=web.CHANNEL,
            natural_key=f"{identity.chat_id}:{text}",
            chat_id=identity.chat_id,
            payload={"text": text},
        )
    dispatch.process_chat(runtime, web.CHANNEL, identity.chat_id)


def test_a_web_workers_card_is_updated_by_its_seq_when_another_worker_accepts(
    desk: Desk,
) -> None:
    # Given two web workers, each with the card of a new request
    first, second = desk.worker("王书记"), desk.worker("赵干事")
    resident = desk.identity("张三")
    number = resident.send("路灯坏了")[-1].number
    card = card_of(first)
    assert card.labels == ["受理", "转单", "驳回"]

    # When the second worker accepts it
    second.send(f"受理 {number}")

    # Then the first worker gets one update of that card: its text with the new state, and
    # only 转单 left; it comes before the notice of who acted
    [update] = updates_of(first, card)
    assert update.text == f"{card.text}\n\n{HANDLING}"
    assert update.labels == ["转单"] and update.actions == [f"转单 {number}"]
    after = [m.text for m in first.received if m.seq > update.seq]
    assert after == [catalogue("worker.acted", number=number, by="赵干事", action="受理")]


def test_the_web_api_names_the_updated_seq_only_on_update_messages(
    desk: Desk, client: TestClient
) -> None:
    # Given a worker's card, updated after another worker rejected the request
    first, second = desk.worker("王书记"), desk.worker("赵干事")
    number = desk.identity("张三").send("路灯坏了")[-1].number
    card = card_of(first)
    second.send(f"驳回 {number} 不属于受理范围")

    # When the first worker's page reads its messages
    response = client.get(
        "/api/web/messages?after=0&wait=0", headers={"Authorization": f"Bearer {first.token}"}
    )

    # Then the card is as it was sent (no "updates"), and the update names its seq, with the
    # state and no buttons
    assert response.status_code == 200
    messages: list[dict[str, Any]] = response.json()["messages"]
    [sent] = [m for m in messages if m["seq"] == card.seq]
    assert set(sent) == {"seq", "text", "buttons"}
    assert [b["label"] for b in sent["buttons"]] == ["受理", "转单", "驳回"]
    [update] = [m for m in messages if m.get("updates") == card.seq]
    assert update["buttons"] == []
    assert update["text"].endswith(catalogue("line.done", state="不予受理"))
    assert update["seq"] > card.seq


def test_a_card_still_in_the_outbox_when_its_request_moved_is_updated_right_after_it(
    desk: Desk,
) -> None:
    # Given a new request whose cards are not delivered yet
    first, second = desk.worker("王书记"), desk.worker("赵干事")
    resident = desk.identity("张三")
    store_only(resident, "路灯坏了")
    [request] = desk.requests()

    # When the second worker accepts it before anything was delivered, and then it all is
    store_only(second, f"受理 {request.number}")
    desk.work()

    # Then the first worker sees the card with its three buttons, then its update
    card = card_of(first)
    assert card.labels == ["受理", "转单", "驳回"]
    [update] = updates_of(first, card)
    assert update.seq == card.seq + 1 and update.labels == ["转单"]


def test_a_press_on_a_stale_web_card_answers_with_the_current_state_and_changes_nothing(
    desk: Desk,
) -> None:
    # Given a worker whose card went stale because another worker accepted the request
    first, second = desk.worker("王书记"), desk.worker("赵干事")
    number = desk.identity("张三").send("路灯坏了")[-1].number
    card = card_of(first)
    second.send(f"受理 {number}")
    assert [m.labels for m in updates_of(first, card)] == [["转单"]]
    events = len(desk.events(number))

    # When the first worker presses the card's old 受理 (a page that missed the update)
    answers = first.press(card.action("受理"))

    # Then the answer names the current state, and nothing else happens
    assert [m.text for m in answers] == [
        catalogue(
            "error.transition", number=number, state_label="办理中（党委做单）", action_label="受理"
        )
    ]
    request = desk.request(number)
    assert (request.state, request.handler_id) == ("handling", second.person().id)
    assert desk.events(number)[events:] == []


def test_an_auto_closed_answer_marks_the_requesters_rating_card_done(
    desk: Desk, runtime: Runtime
) -> None:
    # Given an answered request: the resident's result offers the rating buttons
    worker = desk.worker("王书记")
    resident = desk.identity("张三")
    number = resident.send("路灯坏了")[-1].number
    worker.send(f"受理 {number}")
    worker.send(f"办结 {number} 已修好")
    worker.send(f"回单 {number}")
    result = card_of(resident, "办理结果如下")
    assert len(result.buttons) == 6

    # When the tick closes it as nobody rated it
    with session_scope(runtime.engine) as session:
        tx = runtime.tx(session, "test:auto-close")
        service.auto_close(tx, service.load(tx, number), days=7)
    desk.work()

    # Then the rating card is marked done, and the receipt (查询进度 only) was never a card
    [update] = updates_of(resident, result)
    assert update.buttons == []
    assert update.text.endswith(catalogue("line.done", state="已办结"))
    receipt = card_of(resident, "已受理登记")
    assert updates_of(resident, receipt) == []
    with Session(runtime.engine) as session:
        kept = session.exec(
            select(CardMessage).where(CardMessage.person_id == resident.person_id)
        ).all()
    assert [(row.web_seq, row.open) for row in kept] == [(result.seq, False)]


def test_a_refresh_for_a_channel_without_cards_is_skipped_unsent(
    desk: Desk, runtime: Runtime
) -> None:
    # Given a WeChat worker (no buttons, no edits) with a card row not delivered yet
    with session_scope(runtime.engine) as session:
        person = queries.get_or_create_person(
            session=session, channel="wechat", external_id="openid-1"
        )
        person.role = "worker"
        session.add(person)
    store_only(desk.identity("张三"), "路灯坏了")
    [request] = desk.requests()
    worker = desk.worker("赵干事")

    # When a worker accepts the request while the WeChat card is still pending
    store_only(worker, f"受理 {request.number}")
    with Session(runtime.engine) as session:
        [refresh] = session.exec(
            select(OutboxMessage).where(
                OutboxMessage.key == REFRESH_KEY, OutboxMessage.person_id == person.id
            )
        ).all()
    assert refresh.id is not None
    with session_scope(runtime.engine) as session:
        # The card before it has given up (WeChat is off here, so it would wait otherwise).
        card = queries.get_outbox(session=session, outbox_id=int(refresh.params["card"]))
        assert card is not None and card.key == "card.new"
        card.status = OutboxStatus.FAILED
        session.add(card)
    dispatch.deliver(runtime, refresh.id)

    # Then the WeChat refresh is skipped without any call (WeChat is off here: trying to send
    # would have left it pending for when the channel is on)
    with Session(runtime.engine) as session:
        row = session.get(OutboxMessage, refresh.id)
        assert row is not None
        assert (row.status, row.last_error) == (OutboxStatus.SKIPPED, "no cards on this channel")
