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
from tests.utils.centres import add_district, place
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


# --- centres: a request that moves to another centre -------------------------------------------


def _network(desk: Desk) -> dict[str, Any]:
    """District D over C1 and C2 (and the 商圈 B); two web workers of C1, one of D and one of
    C2, and a resident of C1."""
    with session_scope(desk.runtime.engine) as session:
        centres = add_district(session)
    people: dict[str, Any] = {"centres": centres}
    for name, code in [("c1", "C1"), ("c1b", "C1"), ("d", "D"), ("c2", "C2")]:
        identity = desk.worker(f"{name}工作者")
        place(desk.runtime.engine, identity.person_id, centres[code])
        people[name] = identity
    resident = desk.identity("张三")
    place(desk.runtime.engine, resident.person_id, centres["C1"])
    people["resident"] = resident
    return people


def test_a_card_offers_refer_where_there_is_a_centre_above_and_assign_where_there_are_below(
    desk: Desk,
) -> None:
    # Given a network, and a resident of C1 writing in
    net = _network(desk)
    number = net["resident"].send("路灯坏了")[-1].number

    # Then C1's workers' card offers 上报 (the district is above) but no 下派 (nothing below)
    card = card_of(net["c1"])
    assert card.labels == ["受理", "转单", "驳回", "上报"]
    # And nobody of another centre got a card
    assert not [m for m in net["d"].new_messages() if number in m.text]
    assert not [m for m in net["c2"].new_messages() if number in m.text]


def test_when_a_request_goes_up_the_old_centres_cards_go_stale_and_the_new_centre_gets_one(
    desk: Desk,
) -> None:
    # Given C1's two workers with the card of a new request
    net = _network(desk)
    number = net["resident"].send("路灯坏了")[-1].number
    other_card = card_of(net["c1b"])

    # When one of them sends it up to the district, giving the reason when asked
    net["c1"].press(f"上报 {number}")
    net["c1"].send("涉及多个社区")

    # Then the other worker's card keeps none of its buttons: C1 no longer holds the request
    [update] = updates_of(net["c1b"], other_card)
    assert update.labels == []
    assert update.text.endswith(catalogue("line.done", state="待受理"))
    # And the district's worker gets the card, with 下派 (it has centres below) and no 上报
    card = card_of(net["d"], heading="上报")
    assert card.labels == ["受理", "转单", "驳回", "下派"]
    assert "春熙社区" in card.text and "涉及多个社区" in card.text

    # When the district assigns it to C2
    net["d"].press(f"下派 {number} C2")

    # Then the district's card goes stale in turn, and C2's worker has it
    [d_update] = updates_of(net["d"], card)
    assert d_update.labels == []
    assert card_of(net["c2"], heading="下派").labels == ["受理", "转单", "驳回", "上报"]
    assert desk.request(number).centre_id == net["centres"]["C2"].id
