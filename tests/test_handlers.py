"""The chat side: every command of DESIGN §5, by role, typed and pressed, as conversations."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import pytest
from sqlmodel import Session, func, select

from admin_scripts import stats
from admin_scripts.stats import Period
from bot.texts import text as catalogue
from storage import queries
from storage.db import session_scope
from storage.models import OutboxMessage, Person, utcnow
from tests.utils.centres import add_district, place
from tests.utils.harness import Desk, Identity, Message

NUMBER_RE = re.compile(r"SQ-\d{8}-\d{4,}")
MALFORMED = "SQ-123"
UNKNOWN = "SQ-20200101-9999"


@dataclass
class Office:
    """A committee with two workers, two departments with one staff member each, and two
    residents."""

    desk: Desk
    worker: Identity
    colleague: Identity
    staff: Identity
    other_staff: Identity
    resident: Identity
    neighbour: Identity

    def submit(self, text: str = "我家门口的路灯坏了", who: Identity | None = None) -> str:
        """A new request from the resident (or `who`); its number, from the receipt."""
        receipt = (who or self.resident).send(text)
        assert len(receipt) == 1, [m.text for m in receipt]
        found = NUMBER_RE.search(receipt[0].text)
        assert found is not None
        self.drain()
        return found.group()

    def drain(self) -> None:
        """Forgets what everyone received so far."""
        for identity in self.everyone():
            identity.new_messages()

    def everyone(self) -> list[Identity]:
        return [
            self.worker,
            self.colleague,
            self.staff,
            self.other_staff,
            self.resident,
            self.neighbour,
        ]

    def state(self, number: str) -> str:
        return self.desk.request(number).state

    def forwarded(self, number: str) -> str:
        """Brings a new request to FORWARDED (at 城管执法)."""
        self.worker.send(f"转单 {number} 城管执法")
        self.drain()
        return number

    def dept_handling(self, number: str) -> str:
        """Brings a new request to DEPT_HANDLING (at 城管执法)."""
        self.forwarded(number)
        self.staff.send(f"接收 {number}")
        self.drain()
        return number

    def handling(self, number: str) -> str:
        """Brings a new request to HANDLING (by the worker)."""
        self.worker.send(f"受理 {number}")
        self.drain()
        return number

    def review(self, number: str, *, by_department: bool = True) -> str:
        """Brings a new request to REVIEW."""
        if by_department:
            self.dept_handling(number)
            self.staff.send(f"办结 {number} 已更换灯泡")
        else:
            self.handling(number)
            self.worker.send(f"办结 {number} 党委已协调处理")
        self.drain()
        return number

    def replied(self, number: str) -> str:
        """Brings a new request to REPLIED."""
        self.review(number)
        self.worker.send(f"回单 {number}")
        self.drain()
        return number


@pytest.fixture
def office(desk: Desk) -> Office:
    desk.add_department("城管执法")
    desk.add_department("春熙路街道", kind="街道")
    desk.add_category("市政设施", ["路灯"], response_hours=8)
    desk.add_category("其他", [], fallback=True)
    built = Office(
        desk=desk,
        worker=desk.worker("王书记"),
        colleague=desk.worker("李干事"),
        staff=desk.staff("城管执法", "赵科长"),
        other_staff=desk.staff("春熙路街道", "钱主任"),
        resident=desk.identity("张三"),
        neighbour=desk.identity("李四"),
    )
    built.drain()
    return built


def texts(messages: list[Message]) -> str:
    return "\n---\n".join(message.text for message in messages)


def only(messages: list[Message]) -> Message:
    assert len(messages) == 1, texts(messages)
    return messages[0]


def outbox_count(desk: Desk) -> int:
    with Session(desk.runtime.engine) as session:
        return int(session.exec(select(func.count()).select_from(OutboxMessage)).one())


def outbox_recipients_after(desk: Desk, count: int) -> set[int]:
    """Who the outbox rows written after the first `count` are addressed to."""
    with Session(desk.runtime.engine) as session:
        rows = session.exec(select(OutboxMessage).order_by(OutboxMessage.id)).all()  # type: ignore[arg-type]
        return {row.person_id for row in rows[count:]}


# --- help and roles -----------------------------------------------------------------------


def test_help_for_a_requester_explains_submitting_and_following_a_request(office: Office) -> None:
    reply = only(office.resident.send("帮助"))

    assert "直接发送文字" in reply.text and "查询" in reply.text and "评价" in reply.text
    assert "受理 <编号>" not in reply.text


def test_help_for_a_worker_lists_the_committee_commands(office: Office) -> None:
    reply = only(office.worker.send("帮助"))

    for word in ("待办", "受理 <编号>", "转单 <编号> <部门>", "驳回", "回单", "返工"):
        assert word in reply.text
    assert "接收 <编号>" not in reply.text


def test_help_for_department_staff_names_their_department(office: Office) -> None:
    reply = only(office.staff.send("帮助"))

    assert "城管执法" in reply.text
    assert "接收 <编号>" in reply.text and "退单" in reply.text
    assert "受理 <编号>" not in reply.text


def test_help_differs_for_requester_worker_and_department(office: Office) -> None:
    helps = {only(who.send("/help")).text for who in (office.resident, office.worker, office.staff)}

    assert len(helps) == 3


def test_an_unknown_slash_command_gets_the_help_of_the_role(office: Office) -> None:
    assert only(office.resident.send("/frobnicate")).text == only(office.resident.send("帮助")).text
    assert only(office.worker.send("/frobnicate")).text == only(office.worker.send("帮助")).text
    assert only(office.staff.send("/nope@redesk_bot")).text == only(office.staff.send("帮助")).text


@pytest.mark.parametrize("who", ["worker", "staff"])
def test_free_text_from_staff_gets_help_and_no_request(office: Office, who: str) -> None:
    # Given a worker or department staff member
    identity: Identity = getattr(office, who)

    # When they write free text
    reply = only(identity.send("我家门口的路灯坏了"))

    # Then they get their help, and nothing is submitted
    assert reply.text == only(identity.send("帮助")).text
    assert office.desk.requests() == []


# --- binding ------------------------------------------------------------------------------


def test_binding_a_worker_code_gives_the_role_and_shows_the_worker_help(desk: Desk) -> None:
    identity = desk.identity("新人")

    reply = only(identity.send(f"绑定 {desk.invite('worker')}"))

    assert "绑定成功" in reply.text and "党务工作者" in reply.text and "受理 <编号>" in reply.text
    assert identity.person().role == "worker"


def test_binding_a_department_code_names_the_department(desk: Desk) -> None:
    desk.add_department("城管执法")
    identity = desk.identity()

    reply = only(identity.send(f"/bind {desk.invite('department', '城管执法').lower()}"))

    assert "部门工作人员（城管执法）" in reply.text
    person = identity.person()
    assert person.role == "department" and person.department_id is not None


def test_an_unknown_invitation_code_is_refused(desk: Desk) -> None:
    identity = desk.identity()

    reply = only(identity.send("绑定 NOPE-1234-ZZZZ"))

    assert reply.text == catalogue("error.invitation_invalid")
    assert identity.person().role == "requester"


def test_a_used_invitation_code_is_refused_the_second_time(desk: Desk) -> None:
    # Given a code someone already bound with
    code = desk.invite("worker")
    desk.identity().send(f"绑定 {code}")
    latecomer = desk.identity()

    # When someone else tries it
    reply = only(latecomer.send(f"绑定 {code}"))

    # Then it is refused like an unknown code, and they stay a requester
    assert reply.text == catalogue("error.invitation_invalid")
    assert latecomer.person().role == "requester"


def test_an_expired_invitation_code_is_refused(desk: Desk) -> None:
    with session_scope(desk.runtime.engine) as session:
        queries.add_invitation(
            session=session,
            code="0BADC0DE1234",
            role="worker",
            department_id=None,
            expires_at=utcnow() - timedelta(minutes=1),
        )
    identity = desk.identity()

    reply = only(identity.send("绑定 0BAD-C0DE-1234"))

    assert reply.text == catalogue("error.invitation_invalid")
    assert identity.person().role == "requester"


def test_binding_without_a_code_explains_how(desk: Desk) -> None:
    reply = only(desk.identity().send("绑定"))

    assert "绑定 邀请码" in reply.text


# --- submitting ---------------------------------------------------------------------------


def test_a_requester_s_free_text_becomes_a_request_with_number_category_and_due_time(
    office: Office,
) -> None:
    # When a resident writes free text
    receipt = only(office.resident.send("我家门口的路灯坏了"))

    # Then they get a receipt with the number, category and expected response time
    [request] = office.desk.requests()
    assert request.number in receipt.text
    assert "类别：市政设施" in receipt.text
    assert re.search(r"预计响应时间：\d{4}-\d{2}-\d{2} \d{2}:\d{2} 前", receipt.text)
    assert receipt.actions == [f"查询 {request.number}"]
    assert request.state == "new" and request.text == "我家门口的路灯坏了"
    # And both workers get a card to act on, staff nothing yet
    for worker in (office.worker, office.colleague):
        card = only(worker.new_messages())
        assert request.number in card.text and "张三" in card.text
        assert card.actions == [
            f"受理 {request.number}",
            f"转单 {request.number}",
            f"驳回 {request.number}",
        ]
    assert office.staff.new_messages() == []


def test_text_without_a_matching_keyword_goes_to_the_fallback_category(office: Office) -> None:
    receipt = only(office.resident.send("想咨询一下社保政策"))

    assert "类别：其他" in receipt.text


@pytest.mark.parametrize("text", ["", "   \n  "])
def test_empty_text_is_refused_and_nothing_is_stored(office: Office, text: str) -> None:
    reply = only(office.resident.send(text))

    assert "内容不能为空" in reply.text
    assert office.desk.requests() == []


def test_text_over_the_limit_gets_the_limit_and_nothing_is_stored(office: Office) -> None:
    reply = only(office.resident.send("路" * 2001))

    assert "2001" in reply.text and "2000 字以内" in reply.text
    assert office.desk.requests() == []
    assert office.worker.new_messages() == []


def test_text_at_the_limit_is_accepted(office: Office) -> None:
    office.resident.send("路" * 2000)

    assert len(office.desk.requests()) == 1


# --- 查询 ----------------------------------------------------------------------------------


def test_status_without_a_number_lists_only_the_requester_s_own_requests(
    office: Office,
) -> None:
    # Given two requests of the resident and one of a neighbour
    first = office.submit("路灯坏了")
    second = office.submit("下水道堵了")
    theirs = office.submit("噪音扰民", who=office.neighbour)

    # When the resident asks without a number
    reply = only(office.resident.send("查询"))

    # Then both of theirs are listed, newest first, and not the neighbour's
    assert reply.text.index(second) < reply.text.index(first)
    assert theirs not in reply.text
    assert "待受理" in reply.text


def test_status_without_a_number_before_any_request_says_there_is_none(office: Office) -> None:
    assert "还没有提交过诉求" in only(office.resident.send("/status")).text


def test_status_with_a_number_shows_state_and_history(office: Office) -> None:
    # Given a request forwarded and taken
    number = office.dept_handling(office.submit())

    # When the requester asks about it (glued, as people type)
    reply = only(office.resident.send(f"查询{number.lower()}"))

    # Then they see its state, department and history
    assert number in reply.text
    assert "部门办理中" in reply.text and "承办部门：城管执法" in reply.text
    assert "办理记录" in reply.text
    for label in ("接单", "转单：城管执法", "接收"):
        assert label in reply.text


def test_status_from_the_receipt_button_shows_the_request(office: Office) -> None:
    receipt = only(office.resident.send("路灯坏了"))

    reply = only(office.resident.press(receipt.actions[0]))

    assert reply.text.startswith(f"【{NUMBER_RE.search(receipt.text).group()}】待受理")  # type: ignore[union-attr]


def test_status_of_another_requester_s_request_is_answered_like_an_unknown_number(
    office: Office,
) -> None:
    # Given the neighbour's request
    theirs = office.submit("噪音扰民", who=office.neighbour)

    # When the resident asks about it, and about a number that does not exist
    refused = only(office.resident.send(f"查询 {theirs}")).text
    unknown = only(office.resident.send(f"查询 {UNKNOWN}")).text

    # Then both answers say "没有找到", identically, and reveal nothing of the request
    assert "没有找到" in refused
    assert refused.replace(theirs, UNKNOWN) == unknown
    assert "噪音" not in refused


def test_status_of_a_malformed_number_says_it_was_not_found(office: Office) -> None:
    reply = only(office.resident.send(f"查询 {MALFORMED}"))

    assert f"没有找到编号为「{MALFORMED}」" in reply.text and "格式如" in reply.text


def test_department_staff_see_only_requests_of_their_department(office: Office) -> None:
    number = office.forwarded(office.submit())

    assert "已转单" in only(office.staff.send(f"查询 {number}")).text
    assert "没有找到" in only(office.other_staff.send(f"查询 {number}")).text


def test_a_worker_s_status_without_a_number_is_their_to_do_list(office: Office) -> None:
    number = office.submit()

    reply = only(office.worker.send("查询"))

    assert "待办诉求（共 1 件" in reply.text and number in reply.text


def test_a_worker_can_see_any_request(office: Office) -> None:
    number = office.submit()

    assert "我家门口的路灯坏了" in only(office.colleague.send(f"查询 {number}")).text


# --- 待办 ----------------------------------------------------------------------------------


def test_a_worker_s_inbox_lists_new_requests_and_those_in_review(office: Office) -> None:
    # Given a new request, one in review, and one forwarded
    new = office.submit("路灯坏了")
    review = office.review(office.submit("下水道堵了"))
    forwarded = office.forwarded(office.submit("井盖丢了"))

    # When the worker asks for the to-do list
    reply = only(office.worker.send("待办"))

    # Then it lists what waits for the committee
    assert "待办诉求（共 2 件" in reply.text
    assert new in reply.text and review in reply.text
    assert forwarded not in reply.text


def test_a_worker_s_inbox_includes_what_they_handle_but_not_a_colleague_s(office: Office) -> None:
    number = office.handling(office.submit())

    assert number in only(office.worker.send("/inbox")).text
    assert "暂无待办" in only(office.colleague.send("/inbox")).text


def test_a_department_s_inbox_lists_what_was_forwarded_to_it(office: Office) -> None:
    forwarded = office.forwarded(office.submit("路灯坏了"))
    taken = office.dept_handling(office.submit("路灯又坏了"))

    reply = only(office.staff.send("待办"))

    assert forwarded in reply.text and taken in reply.text
    assert "暂无待办" in only(office.other_staff.send("待办")).text


def test_a_requester_has_no_inbox(office: Office) -> None:
    assert "没有权限" in only(office.resident.send("待办")).text


# --- 做单: the committee handles it itself ------------------------------------------------


def test_the_committee_handles_a_request_itself_from_card_to_closed(office: Office) -> None:
    office.resident.send("我家门口的路灯坏了")
    number = office.desk.requests()[0].number
    card = office.worker.last()
    office.drain()

    # When the worker presses 受理 on the card
    reply = only(office.worker.press(card.actions[0]))

    # Then it is being handled, the requester and the colleague are told
    assert number in reply.text and "已受理" in reply.text
    assert reply.actions == [f"办结 {number}", f"转单 {number}"]
    assert "党委已受理" in only(office.resident.new_messages()).text
    assert only(office.colleague.new_messages()).text == f"【{number}】王书记已受理。"
    assert office.state(number) == "handling"

    # When the worker presses 办结 and types the result
    ask = only(office.worker.press(reply.actions[0]))
    assert "请输入办理结果" in ask.text
    done = office.worker.send("已联系物业更换灯泡\n并加装了声控开关")

    # Then it waits for review; every worker gets the review card, the requester nothing yet
    assert "待党委审核" in done[-1].text
    assert [f"回单 {number}", f"返工 {number}"] in [m.actions for m in done]
    assert office.state(number) == "review"
    review = only(office.colleague.new_messages())
    assert "党委" in review.text and "声控开关" in review.text
    assert review.actions == [f"回单 {number}", f"返工 {number}"]
    assert office.resident.new_messages() == []

    # When the colleague approves (回单)
    assert "已回单" in only(office.colleague.press(review.actions[0])).text

    # Then the requester gets the result and the rating buttons; the worker hears who acted
    answer = only(office.resident.new_messages())
    assert "已联系物业更换灯泡\n并加装了声控开关" in answer.text
    assert f"评价 {number} 已解决 满意" in answer.actions
    assert "李干事已回单" in only(office.worker.new_messages()).text

    # When the requester rates it solved and satisfied
    thanks = only(office.resident.press(f"评价 {number} 已解决 满意"))

    # Then it is closed and the workers are told
    assert "已办结" in thanks.text and "已解决 满意" in thanks.text
    assert office.state(number) == "closed"
    assert "群众已评价" in only(office.worker.new_messages()).text
    assert [e.action for e in office.desk.events(number)] == [
        "submit",
        "accept",
        "complete",
        "approve",
        "rate",
    ]


# --- 转单, 接收, 退单 -----------------------------------------------------------------------


def test_forward_without_a_department_offers_buttons_and_pressing_one_forwards(
    office: Office,
) -> None:
    number = office.submit()
    card = office.worker.last()

    # When the worker presses 转单 on the card
    picker = only(office.worker.press(card.actions[1]))

    # Then every active department is offered, and nothing has moved yet
    assert number in picker.text
    assert picker.actions == [f"转单 {number} 城管执法", f"转单 {number} 春熙路街道"]
    assert office.state(number) == "new"

    # When they press one
    reply = only(office.worker.press(picker.actions[0]))

    # Then it is forwarded: the worker, the requester (to whom), the staff and colleagues hear
    assert "已转交「城管执法」" in reply.text
    assert office.state(number) == "forwarded"
    assert "已转交「城管执法」办理" in only(office.resident.new_messages()).text
    staff_card = only(office.staff.new_messages())
    assert number in staff_card.text and "王书记转交「城管执法」" in staff_card.text
    assert staff_card.actions == [f"接收 {number}", f"退单 {number}", f"办结 {number}"]
    assert office.other_staff.new_messages() == []
    assert "王书记已转单至城管执法" in only(office.colleague.new_messages()).text


def test_forward_to_an_unknown_department_lists_the_departments(office: Office) -> None:
    number = office.submit()

    reply = only(office.worker.send(f"转单 {number} 环保局"))

    assert "没有名为「环保局」的部门" in reply.text and "城管执法、春熙路街道" in reply.text
    assert office.state(number) == "new"


def test_forward_without_departments_tells_the_worker_to_ask_the_admin(desk: Desk) -> None:
    worker = desk.worker()
    resident = desk.identity()
    resident.send("路灯坏了")
    number = desk.requests()[0].number
    worker.new_messages()

    reply = only(worker.send(f"转单 {number}"))

    assert "还没有可转交的部门" in reply.text and reply.actions == []


def test_forward_to_a_department_without_staff_warns_the_worker(office: Office) -> None:
    office.desk.add_department("环保局")
    number = office.submit()

    reply = only(office.worker.send(f"转单 {number} 环保局"))

    assert "暂无绑定的工作人员" in reply.text
    assert office.state(number) == "forwarded"


def test_department_staff_take_a_forwarded_request_and_the_requester_is_told(
    office: Office,
) -> None:
    number = office.forwarded(office.submit())
    card = office.staff.last()

    reply = only(office.staff.press(card.actions[0]))

    assert "已接收" in reply.text and reply.actions == [f"办结 {number}", f"退单 {number}"]
    assert office.state(number) == "dept_handling"
    assert "「城管执法」已接收您的诉求" in only(office.resident.new_messages()).text


def test_staff_of_another_department_cannot_take_it(office: Office) -> None:
    number = office.forwarded(office.submit())

    reply = only(office.other_staff.send(f"接收 {number}"))

    assert number in reply.text and "不由您负责" in reply.text and "接收" in reply.text
    assert office.state(number) == "forwarded"
    refused = [e for e in office.desk.events(number) if e.outcome == "refused"]
    assert [(e.action, e.actor_id) for e in refused] == [("take", office.other_staff.person_id)]


def test_staff_completing_before_taking_take_it_on_the_way(office: Office) -> None:
    number = office.forwarded(office.submit())

    reply = only(office.staff.send(f"办结 {number} 已修好"))

    assert reply.text == f"【{number}】已办结，待党委审核后回复群众。"
    assert office.state(number) == "review"


def test_staff_of_another_department_completing_a_forwarded_request_are_refused(
    office: Office,
) -> None:
    number = office.forwarded(office.submit())

    reply = only(office.other_staff.send(f"办结 {number} 已修好"))

    assert reply.text == f"【{number}】该诉求不由您负责，不能执行「办结」。"
    assert office.state(number) == "forwarded"


def test_a_return_then_a_forward_to_another_department(office: Office) -> None:
    number = office.dept_handling(office.submit())

    # When the staff press 退单 and give the reason
    ask = only(office.staff.press(f"退单 {number}"))
    assert "请输入退单原因" in ask.text
    reply = only(office.staff.send("属于街道管辖"))

    # Then it is back with the committee, every worker gets the card with the reason
    assert "已退单" in reply.text
    assert office.state(number) == "new"
    for worker in (office.worker, office.colleague):
        card = only(worker.new_messages())
        assert "「城管执法」退单" in card.text and "属于街道管辖" in card.text
        assert f"转单 {number}" in card.actions

    # When a worker forwards it to the street office
    office.worker.send(f"转单 {number} 春熙路街道")

    # Then the street office gets it and the requester hears where it went
    assert f"接收 {number}" in only(office.other_staff.new_messages()).actions
    assert "「春熙路街道」" in office.resident.last().text
    assert office.desk.request(number).department_id is not None
    assert "接收" in only(office.other_staff.send(f"接收 {number}")).text
    assert office.state(number) == "dept_handling"


# --- 撤回转单 ------------------------------------------------------------------------------


def test_a_worker_recalls_an_automatic_forward_and_forwards_it_elsewhere(office: Office) -> None:
    # Given a category that forwards to 城管执法 by itself, and a request that falls in it
    office.desk.add_category("占道经营", ["摊贩"], department="城管执法")
    receipt, told = office.resident.send("春熙路街道办门口有摊贩占道")
    number = receipt.number
    assert "已转交「城管执法」办理" in told.text
    office.drain()
    assert office.state(number) == "forwarded"
    card = office.worker.last()
    assert "已按类别自动转交「城管执法」" in card.text

    # When the worker presses 撤回 on the card
    reply = only(office.worker.press(card.action("撤回")))

    # Then it is back with the committee, with the committee's buttons to act again
    assert reply.text == f"【{number}】已撤回转单，诉求回到待受理，可重新转单、受理或驳回。"
    assert reply.actions == [f"受理 {number}", f"转单 {number}", f"驳回 {number}"]
    assert office.state(number) == "new"
    assert office.desk.request(number).department_id is None
    # And 城管执法's staff are told not to take it, a colleague hears who took it back
    notice = only(office.staff.new_messages())
    assert notice.text == (
        f"【{number}】王书记已撤回转交「城管执法」的这件诉求，本部门无需接收和办理。"
    )
    assert notice.actions == []
    assert "撤回转单" in only(office.colleague.new_messages()).text
    assert office.resident.new_messages() == []

    # When the worker forwards it to the street office right after
    forwarded = only(office.worker.press(f"转单 {number} 春熙路街道"))

    # Then the street office gets the card and can take it; 城管执法 hears nothing more
    assert "已转交「春熙路街道」" in forwarded.text
    assert f"接收 {number}" in only(office.other_staff.new_messages()).actions
    assert office.staff.new_messages() == []
    assert "「春熙路街道」" in office.resident.last().text
    assert "已接收" in only(office.other_staff.send(f"接收 {number}")).text
    assert office.state(number) == "dept_handling"
    assert [e.action for e in office.desk.events(number) if e.outcome == "ok"] == [
        "submit",
        "forward",
        "recall",
        "forward",
        "take",
    ]


def test_the_worker_s_forward_reply_offers_to_take_it_back_and_slash_recall_does(
    office: Office,
) -> None:
    # Given a request the worker forwarded by hand
    number = office.submit()
    reply = only(office.worker.send(f"转单 {number} 城管执法"))
    assert reply.actions == [f"撤回转单 {number}"]
    office.drain()

    # When a colleague types the slash alias
    answer = only(office.colleague.send(f"/recall {number.lower()}"))

    # Then it is recalled like the button does it, and the staff and the worker hear of it
    assert "已撤回转单" in answer.text
    assert office.state(number) == "new"
    assert "李干事已撤回转交「城管执法」" in only(office.staff.new_messages()).text
    assert "撤回转单" in only(office.worker.new_messages()).text


def test_a_recall_after_the_department_took_it_is_answered_with_the_state(
    office: Office,
) -> None:
    # Given a request 城管执法 has taken
    number = office.dept_handling(office.submit())

    # When the worker tries to take it back
    reply = only(office.worker.send(f"撤回转单 {number}"))

    # Then the answer names the state, nothing changes and nobody else hears anything
    assert reply.text == f"【{number}】诉求当前状态为「部门办理中」，不能撤回转单。"
    assert office.state(number) == "dept_handling"
    assert office.staff.new_messages() == []
    assert office.resident.new_messages() == []


@pytest.mark.parametrize("who", ["staff", "other_staff", "resident"])
def test_department_staff_and_the_requester_cannot_recall(office: Office, who: str) -> None:
    # Given a request forwarded to 城管执法
    number = office.forwarded(office.submit())
    identity: Identity = getattr(office, who)

    # When its department's staff, another department's, or its requester try to take it back
    reply = only(identity.send(f"撤回转单 {number}"))

    # Then they have no right to, it stays with 城管执法, and the attempt is on record
    assert "您没有权限执行「撤回转单」" in reply.text
    assert office.state(number) == "forwarded"
    assert office.desk.request(number).department_id is not None
    refused = [e for e in office.desk.events(number) if e.outcome == "refused"]
    assert [(e.action, e.actor_id) for e in refused] == [("recall", identity.person_id)]
    assert office.worker.new_messages() == []


def test_the_department_s_old_card_does_nothing_after_a_recall(office: Office) -> None:
    # Given a request forwarded to 城管执法, whose staff still have its card, taken back
    number = office.forwarded(office.submit())
    card = office.staff.last()
    office.worker.send(f"撤回转单 {number}")
    office.drain()

    # When the staff press 接收 or 办结 on the old card
    take = only(office.staff.press(card.action("接收")))
    complete = only(office.staff.press(card.action("办结")))

    # Then it is no longer theirs, and the request stays with the committee
    assert take.text == f"【{number}】该诉求不由您负责，不能执行「接收」。"
    assert complete.text == f"【{number}】该诉求不由您负责，不能执行「办结」。"
    assert office.state(number) == "new"
    assert office.desk.request(number).department_id is None
    assert office.worker.new_messages() == []


def test_a_recall_without_a_number_asks_for_one(office: Office) -> None:
    reply = only(office.worker.send("撤回转单"))

    assert "请附上诉求编号" in reply.text and "撤回转单 SQ-20260101-0001" in reply.text


# --- 驳回 ----------------------------------------------------------------------------------


def test_a_reject_tells_the_requester_the_reason_and_the_colleague_who_acted(
    office: Office,
) -> None:
    number = office.submit()

    reply = only(office.worker.send(f"驳回 {number} 属于司法诉讼范围"))

    assert "已驳回" in reply.text
    assert office.state(number) == "rejected"
    told = only(office.resident.new_messages())
    assert "不予受理" in told.text and "属于司法诉讼范围" in told.text
    assert "王书记已驳回" in only(office.colleague.new_messages()).text


# --- dialogues ----------------------------------------------------------------------------


@dataclass(frozen=True)
class DialogueCase:
    """A command whose free text may come in the next message."""

    word: str
    prompt: str
    actor: str
    prepare: Callable[[Office, str], object]
    state_after: str


DIALOGUES = [
    DialogueCase("驳回", "请输入驳回原因", "worker", lambda o, n: None, "rejected"),
    DialogueCase("办结", "请输入办理结果", "staff", Office.dept_handling, "review"),
    DialogueCase("返工", "请输入返工原因", "worker", Office.review, "dept_handling"),
    DialogueCase("退单", "请输入退单原因", "staff", Office.forwarded, "new"),
    DialogueCase("补充", "请输入补充内容", "resident", lambda o, n: None, "new"),
]


@pytest.mark.parametrize("case", DIALOGUES, ids=[case.word for case in DIALOGUES])
def test_a_command_without_its_text_asks_for_it_and_the_next_message_completes_it(
    office: Office, case: DialogueCase
) -> None:
    # Given a request in the state the command needs
    number = office.submit()
    case.prepare(office, number)
    actor: Identity = getattr(office, case.actor)
    before = office.state(number)

    # When the command comes without its text
    ask = only(actor.send(f"{case.word} {number}"))

    # Then it asks for it, and nothing has changed yet
    assert ask.text.startswith(f"【{number}】{case.prompt}")
    assert office.state(number) == before
    assert actor.person().dialogue is not None

    # When the next message comes
    only(actor.send("现场情况\n与描述不符"))

    # Then the command is completed with it, and no request was submitted from that text
    assert office.state(number) == case.state_after
    assert office.desk.events(number)[-1].note == "现场情况\n与描述不符"
    assert len(office.desk.requests()) == 1
    assert actor.person().dialogue is None


@pytest.mark.parametrize("case", DIALOGUES, ids=[case.word for case in DIALOGUES])
def test_cancel_aborts_a_dialogue_and_nothing_changes(office: Office, case: DialogueCase) -> None:
    number = office.submit()
    case.prepare(office, number)
    actor: Identity = getattr(office, case.actor)
    before = office.state(number)
    events = len(office.desk.events(number))
    actor.send(f"{case.word} {number}")

    reply = only(actor.send("取消"))

    assert reply.text == "已取消。"
    assert office.state(number) == before
    assert len(office.desk.events(number)) == events
    assert actor.person().dialogue is None
    # And the next free text is no longer taken as the missing argument
    follow = only(actor.send("路灯还是不亮"))
    assert office.state(number) == before
    expected = "诉求已受理登记" if case.actor == "resident" else "放弃正在填写的指令"
    assert expected in follow.text


def test_a_command_sent_during_a_dialogue_replaces_it(office: Office) -> None:
    first = office.submit("路灯坏了")
    second = office.submit("下水道堵了")
    office.worker.send(f"驳回 {first}")

    # When the worker sends another command instead of the reason
    office.worker.send(f"受理 {second}")
    office.worker.send("随便说点什么")

    # Then the other command ran, the dialogue is gone, and the first request is untouched
    assert office.state(second) == "handling"
    assert office.state(first) == "new"
    assert office.worker.person().dialogue is None


def test_a_dialogue_is_not_opened_when_the_command_could_not_succeed(office: Office) -> None:
    number = office.submit()

    reply = only(office.worker.send(f"返工 {number}"))

    assert "当前状态为「待受理」，不能返工" in reply.text
    assert office.worker.person().dialogue is None


# --- refusals -----------------------------------------------------------------------------


def test_a_resident_trying_to_accept_is_refused_recorded_and_nothing_else_happens(
    office: Office,
) -> None:
    # Given a new request
    number = office.submit()
    outbox_before = outbox_count(office.desk)

    # When a resident tries 受理 on it
    reply = only(office.neighbour.send(f"受理 {number}"))

    # Then they are refused in plain words
    assert "您没有权限执行「受理」" in reply.text
    # And the refusal is recorded, the state is unchanged, and only the resident was answered
    assert office.state(number) == "new"
    refused = [e for e in office.desk.events(number) if e.outcome == "refused"]
    assert [(e.action, e.actor_id, e.from_state) for e in refused] == [
        ("accept", office.neighbour.person_id, "new")
    ]
    assert outbox_recipients_after(office.desk, outbox_before) == {office.neighbour.person_id}
    for identity in (office.worker, office.colleague, office.staff, office.resident):
        assert identity.new_messages() == []


def test_a_resident_trying_to_accept_an_unknown_number_is_refused_the_same_way(
    office: Office,
) -> None:
    reply = only(office.resident.send(f"受理 {UNKNOWN}"))

    assert "您没有权限执行「受理」" in reply.text


def test_department_staff_cannot_do_the_committee_s_work(office: Office) -> None:
    number = office.submit()

    assert "没有权限执行「受理」" in only(office.staff.send(f"受理 {number}")).text
    assert "没有权限执行「转单」" in only(office.staff.send(f"转单 {number} 春熙路街道")).text
    assert office.state(number) == "new"


def test_a_command_in_the_wrong_state_names_the_state_in_chinese(office: Office) -> None:
    number = office.handling(office.submit())

    reply = only(office.colleague.send(f"受理 {number}"))

    assert reply.text == f"【{number}】诉求当前状态为「办理中（党委做单）」，不能受理。"


def test_pressing_an_old_button_twice_is_answered_with_the_state(office: Office) -> None:
    number = office.review(office.submit())
    office.worker.press(f"回单 {number}")
    office.drain()

    reply = only(office.colleague.press(f"回单 {number}"))

    assert "当前状态为「已回单，待评价」，不能回单" in reply.text
    assert office.resident.new_messages() == []


def test_a_command_without_a_number_asks_for_one(office: Office) -> None:
    reply = only(office.worker.send("受理"))

    assert "请附上诉求编号" in reply.text and "受理 SQ-20260101-0001" in reply.text


@pytest.mark.parametrize("number", [MALFORMED, UNKNOWN])
def test_a_bad_number_is_answered_with_not_found(office: Office, number: str) -> None:
    reply = only(office.worker.send(f"受理 {number}"))

    assert f"没有找到编号为「{number}」的诉求" in reply.text


# --- requesters: 补充, 撤销, 评价, 重办 ------------------------------------------------------


def test_a_supplement_reaches_the_department_holding_the_request(office: Office) -> None:
    number = office.forwarded(office.submit())

    reply = only(office.resident.send(f"补充 {number} 晚上七点以后最明显"))

    assert "补充信息已收到" in reply.text
    assert "晚上七点以后最明显" in only(office.staff.new_messages()).text
    assert office.worker.new_messages() == [] and office.other_staff.new_messages() == []
    assert "补充：晚上七点以后最明显" in only(office.resident.send(f"查询 {number}")).text


def test_a_supplement_of_a_new_request_reaches_every_worker(office: Office) -> None:
    number = office.submit()

    office.resident.send(f"/add {number} 在三号楼门口")

    assert "在三号楼门口" in only(office.worker.new_messages()).text
    assert "在三号楼门口" in only(office.colleague.new_messages()).text


def test_the_requester_cancels_and_whoever_holds_it_is_told(office: Office) -> None:
    number = office.dept_handling(office.submit())

    reply = only(office.resident.send(f"撤销 {number}"))

    assert "已撤销" in reply.text
    assert office.state(number) == "cancelled"
    assert "群众已撤销" in only(office.staff.new_messages()).text
    assert office.other_staff.new_messages() == []


def test_another_requester_cannot_cancel(office: Office) -> None:
    number = office.submit()

    reply = only(office.neighbour.send(f"撤销 {number}"))
    unknown = only(office.neighbour.send("撤销 SQ-20000101-0001"))

    # Answered exactly as a number nobody was given: not even its existence is confirmed
    assert reply.text == unknown.text.replace("SQ-20000101-0001", number)
    assert office.state(number) == "new"


def test_a_closed_request_cannot_be_cancelled(office: Office) -> None:
    number = office.replied(office.submit())
    office.resident.send(f"评价 {number} 已解决 基本满意")

    reply = only(office.resident.send(f"撤销 {number}"))

    assert "当前状态为「已办结」，不能撤销" in reply.text


def test_a_rating_without_answers_asks_with_buttons(office: Office) -> None:
    number = office.replied(office.submit())

    ask = only(office.resident.send(f"评价 {number}"))

    assert number in ask.text and len(ask.actions) == 6


@pytest.mark.parametrize("answers", ["很好", "已解决 非常满意", "满意 已解决", "已解决 满意 谢谢"])
def test_a_rating_with_other_words_gets_the_rating_format(office: Office, answers: str) -> None:
    number = office.replied(office.submit())

    reply = only(office.resident.send(f"评价 {number} {answers}"))

    assert "评价格式" in reply.text
    assert office.state(number) == "replied"


def test_not_satisfied_reopens_the_request_for_the_committee(office: Office) -> None:
    # Given a request answered by the department
    number = office.replied(office.submit())

    # When the requester presses 未解决 · 不满意
    told = only(office.resident.press(f"评价 {number} 未解决 不满意"))

    # Then it is reopened (重办): the requester is told, every worker gets a card
    assert "重办" in told.text
    request = office.desk.request(number)
    assert request.state == "new" and request.reopen_count == 1
    assert request.department_id is None and request.result is None
    card = only(office.worker.new_messages())
    assert "重办" in card.text and "未解决 不满意" in card.text
    assert f"受理 {number}" in card.actions

    # And the committee can handle it again
    office.worker.send(f"受理 {number}")
    assert office.state(number) == "handling"


def test_solved_but_not_satisfied_also_reopens(office: Office) -> None:
    number = office.replied(office.submit())

    office.resident.send(f"评价 {number} 已解决 不满意")

    assert office.state(number) == "new"


@pytest.mark.parametrize("answers", ["已解决 满意", "未解决 不满意"])
def test_a_rating_before_the_answer_is_refused_by_state(office: Office, answers: str) -> None:
    number = office.submit()

    reply = only(office.resident.send(f"评价 {number} {answers}"))

    # The refusal names what the requester did (评价), whatever the answer would lead to
    assert reply.text == f"【{number}】诉求当前状态为「待受理」，不能评价。"
    assert office.state(number) == "new"


# --- 返工 ----------------------------------------------------------------------------------


def test_send_back_returns_the_request_to_the_department(office: Office) -> None:
    number = office.review(office.submit())

    reply = only(office.worker.send(f"返工 {number} 请附现场照片"))

    assert "已返工" in reply.text
    assert office.state(number) == "dept_handling"
    card = only(office.staff.new_messages())
    assert "请附现场照片" in card.text and card.actions == [f"办结 {number}"]
    assert "王书记已返工" in only(office.colleague.new_messages()).text
    assert office.resident.new_messages() == []
    # And the department can complete it again
    office.staff.send(f"办结 {number} 已补拍照片")
    assert office.state(number) == "review"


def test_the_requester_s_history_hides_internal_steps_that_staff_still_see(
    office: Office,
) -> None:
    # Given a request sent back once (返工) with an internal reason and a first result
    number = office.review(office.submit())
    office.worker.send(f"返工 {number} 请附现场照片")
    office.drain()

    # When the resident and the worker look it up
    resident_view = only(office.resident.send(f"查询 {number}")).text
    worker_view = only(office.worker.send(f"查询 {number}")).text

    # Then the resident sees where it went but not the reason or the unreviewed result
    assert "城管执法" in resident_view
    assert "请附现场照片" not in resident_view and "返工" not in resident_view
    assert "办结" not in resident_view.split("办理记录：")[1]
    # And the worker sees the whole history
    assert "请附现场照片" in worker_view and "返工" in worker_view


def test_send_back_returns_the_request_to_the_worker_who_handled_it(office: Office) -> None:
    number = office.review(office.submit(), by_department=False)

    office.colleague.send(f"/sendback {number} 结果不完整")

    assert office.state(number) == "handling"
    # The handler gets the card alone, not also the colleagues' "who acted" notice
    [card] = office.worker.new_messages()
    assert "结果不完整" in card.text and "李干事" in card.text
    assert card.actions == [f"办结 {number}"]
    assert office.staff.new_messages() == []


# --- the reception desk -------------------------------------------------------------------


def test_a_worker_registers_a_walk_in_and_relays_each_step(office: Office) -> None:
    # When the worker registers a walk-in at the reception desk
    received = office.worker.intake("刘大爷", "13800000000", "楼道路灯不亮")

    # Then the request is stored for the walk-in, and the receipt comes to the registrar
    [request] = office.desk.requests()
    relayed = received[0]
    assert request.channel == "desk" and request.contact_name == "刘大爷"
    assert request.number in relayed.text
    assert "刘大爷 13800000000，请电话告知" in relayed.text
    card = only(office.colleague.new_messages())
    assert "刘大爷 13800000000" in card.text and "接待台" in card.text

    # When the colleague accepts it
    office.colleague.send(f"受理 {request.number}")

    # Then the registrar is asked to tell the walk-in
    relay = [m for m in office.worker.new_messages() if "请电话告知" in m.text]
    assert len(relay) == 1 and "党委已受理" in relay[0].text


def test_the_registrar_rates_for_the_walk_in_from_the_relayed_buttons(office: Office) -> None:
    # Given a walk-in's request answered by the committee
    office.worker.intake("刘大爷", "13800000000", "楼道路灯不亮")
    number = office.desk.requests()[0].number
    office.review(number, by_department=False)

    # When the answer is approved
    office.colleague.send(f"回单 {number}")

    # Then the registrar gets the result to phone through, with the rating buttons
    [relay] = [m for m in office.worker.new_messages() if "请电话告知" in m.text]
    assert "党委已协调处理" in relay.text and len(relay.actions) == 6

    # And pressing the walk-in's answer closes it
    office.worker.press(f"评价 {number} 已解决 基本满意")
    assert office.state(number) == "closed"


def test_a_resident_cannot_use_the_reception_desk(office: Office) -> None:
    reply = only(office.resident.intake("刘大爷", "13800000000", "楼道路灯不亮"))

    assert "只有已绑定的党务工作者" in reply.text
    assert office.desk.requests() == []
    with Session(office.desk.runtime.engine) as session:
        assert session.exec(select(Person).where(Person.channel == "desk")).all() == []


def test_an_empty_walk_in_request_is_refused(office: Office) -> None:
    reply = only(office.worker.intake("刘大爷", "", "  "))

    assert "内容不能为空" in reply.text
    assert office.desk.requests() == []


# --- small talk ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("你好", "直接发送文字描述即可"),
        ("您好！", "直接发送文字描述即可"),
        ("在吗？", "直接发送文字描述即可"),
        ("谢谢", "不客气"),
        ("谢谢 🙏", "不客气"),
        ("好的，谢谢！", "不客气"),
        ("好的", "好的。"),
        ("收到", "好的。"),
        ("ＯＫ", "好的。"),
        ("👍", "请用文字描述您遇到的问题"),
        ("。。。？！", "请用文字描述您遇到的问题"),
    ],
)
def test_small_talk_is_answered_kindly_and_makes_no_request(
    office: Office,
    text: str,
    answer: str,
) -> None:
    # Given no request yet
    outbox_before = outbox_count(office.desk)
    events_before = len(office.desk.events())

    # When the resident sends a greeting, thanks, an acknowledgement or only emoji
    reply = only(office.resident.send(text))

    # Then they get one kind answer and nothing else is made: no request, no event, no card
    assert answer in reply.text
    assert "SQ-" not in reply.text
    assert office.desk.requests() == [] and len(office.desk.events()) == events_before
    assert outbox_recipients_after(office.desk, outbox_before) == {office.resident.person_id}
    assert office.worker.new_messages() == []


def test_thanks_after_an_answer_offers_the_rating_and_reopens_nothing(office: Office) -> None:
    # Given a request answered (回单) and waiting for the resident's rating
    number = office.replied(office.submit())
    events = len(office.desk.events(number))

    # When the resident says thank you
    reply = only(office.resident.send("谢谢你们！"))

    # Then they are thanked back and offered the rating; the request stays where it was
    assert "不客气" in reply.text and number in reply.text
    assert f"评价 {number} 已解决 满意" in reply.actions
    assert office.state(number) == "replied"
    assert len(office.desk.events(number)) == events
    assert len(office.desk.requests()) == 1
    assert office.worker.new_messages() == [] and office.staff.new_messages() == []


def test_statistics_never_count_small_talk(office: Office) -> None:
    # Given one real request, then small talk and a short text never registered
    number = office.submit("路灯坏了")
    office.replied(number)
    for text in ("你好", "在吗", "谢谢！", "好的", "收到", "👍", "停水"):
        office.resident.send(text)
    office.neighbour.send("您好")

    # When the statistics are computed over everything
    totals = stats.compute(office.desk.runtime.engine, Period(), now=utcnow()).totals

    # Then only the one request is received, answered and in the 响应率 denominator
    assert totals.counts["received"] == 1
    assert totals.rates["response_rate"].denominator == 1
    assert [r.number for r in office.desk.requests()] == [number]


@pytest.mark.parametrize("text", ["路灯坏了", "漏水了", "停电了！"])
def test_short_real_requests_still_become_requests(office: Office, text: str) -> None:
    reply = only(office.resident.send(text))

    assert "已受理登记" in reply.text
    assert [r.text for r in office.desk.requests()] == [text]


def test_a_too_short_text_is_asked_about_and_the_button_registers_it_as_it_is(
    office: Office,
) -> None:
    # When the resident sends a text too short to act on
    question = only(office.resident.send("停水"))

    # Then they are asked to describe it, with a button to register it anyway; no request yet
    assert "请描述您遇到的问题" in question.text and "「停水」" in question.text
    assert question.action("按原文登记") == "登记"
    assert office.desk.requests() == [] and office.worker.new_messages() == []

    # When they press the button
    receipt = only(office.resident.press(question.action("按原文登记")))

    # Then exactly that text becomes a request, and the workers get its card
    assert "已受理登记" in receipt.text
    assert [r.text for r in office.desk.requests()] == ["停水"]
    assert "停水" in office.worker.last().text


def test_a_description_after_a_too_short_text_completes_it_into_one_request(
    office: Office,
) -> None:
    # Given a text too short to act on
    office.resident.send("路灯")

    # When the resident describes it
    receipt = only(office.resident.send("3号楼门口不亮"))

    # Then one request holds both
    assert "已受理登记" in receipt.text
    assert [r.text for r in office.desk.requests()] == ["路灯 3号楼门口不亮"]
    assert office.resident.person().dialogue is None


def test_a_description_long_after_a_too_short_text_stands_alone(office: Office) -> None:
    # Given a text too short to act on, kept 31 minutes ago
    office.resident.send("路灯")
    with session_scope(office.desk.runtime.engine) as session:
        person = session.get(Person, office.resident.person_id)
        assert person is not None and person.dialogue is not None
        person.dialogue = {**person.dialogue, "at": (utcnow() - timedelta(minutes=31)).isoformat()}
        session.add(person)

    # When the resident writes a request of its own
    only(office.resident.send("楼下的井盖丢了"))

    # Then it is not joined to the old word
    assert [r.text for r in office.desk.requests()] == ["楼下的井盖丢了"]


def test_small_talk_after_a_too_short_text_drops_it(office: Office) -> None:
    # Given a text too short to act on
    office.resident.send("停水")

    # When the resident says 好的 instead of describing it, then presses 登记
    ack = only(office.resident.send("好的"))
    after = only(office.resident.send("登记"))

    # Then 好的 is answered as small talk and nothing was waiting any more
    assert "好的。" in ack.text
    assert "没有待登记的内容" in after.text
    assert office.desk.requests() == []


def test_register_with_content_registers_it_whatever_its_length(office: Office) -> None:
    receipt = only(office.resident.send("登记 停电"))

    assert "已受理登记" in receipt.text
    assert [r.text for r in office.desk.requests()] == ["停电"]


def test_cancel_drops_a_short_text_waiting_to_be_registered(office: Office) -> None:
    # Given a text too short to act on
    events_before = len(office.desk.events())
    office.resident.send("停水")

    # When the resident cancels and then presses 登记
    cancelled = only(office.resident.send("取消"))
    after = only(office.resident.send("登记"))

    # Then nothing is registered
    assert "已取消" in cancelled.text
    assert "没有待登记的内容" in after.text
    assert office.desk.requests() == [] and len(office.desk.events()) == events_before


def test_staff_cannot_register_a_request_of_their_own(office: Office) -> None:
    reply = only(office.worker.send("登记 楼道灯坏了"))

    assert "工作人员身份不能直接提交诉求" in reply.text
    assert office.desk.requests() == []


# --- 待办 pages ----------------------------------------------------------------------------


def test_the_to_do_list_shows_true_counts_a_page_at_a_time_with_a_more_button(
    office: Office,
) -> None:
    # Given 12 new requests and one waiting for 回单 review (the newest of all)
    numbers = [office.submit(f"{index}号楼的路灯坏了") for index in range(12)]
    review = office.review(office.submit("下水道堵了"))

    # When the worker asks for the to-do list
    first = only(office.worker.send("待办"))

    # Then every section has its true count, and the page shows 10 lines and 更多
    assert "待办诉求（共 13 件，第 1/2 页）" in first.text
    assert "待受理（12 件）" in first.text and "待审核回单（1 件）" in first.text
    assert "我在办（0 件）" in first.text
    assert sum(number in first.text for number in numbers) == 10
    assert review not in first.text and "见第 2 页" in first.text
    assert first.action("更多") == "待办 2"

    # When they press 更多
    second = only(office.worker.press(first.action("更多")))

    # Then the rest is there, the review among it, and no 更多 any more
    assert "第 2/2 页" in second.text
    assert sum(number in second.text for number in numbers) == 2 and review in second.text
    assert "更多" not in second.labels


def test_each_to_do_line_offers_its_actions(office: Office) -> None:
    # Given a new request, one in review and one the worker handles
    new = office.submit("路灯坏了")
    review = office.review(office.submit("下水道堵了"))
    mine = office.handling(office.submit("井盖丢了"))

    # When the worker and the department staff ask for their lists
    actions = only(office.worker.send("待办")).actions
    taken = office.dept_handling(office.submit("路灯又坏了"))
    staff_actions = only(office.staff.send("待办")).actions

    # Then each line has the buttons of its section
    assert {f"受理 {new}", f"转单 {new}", f"驳回 {new}"} <= set(actions)
    assert {f"回单 {review}", f"返工 {review}"} <= set(actions)
    assert {f"办结 {mine}", f"转单 {mine}"} <= set(actions)
    assert f"受理 {review}" not in actions
    assert {f"办结 {taken}", f"退单 {taken}"} <= set(staff_actions)


def test_pressing_a_to_do_button_acts_on_that_request(office: Office) -> None:
    number = office.submit("路灯坏了")
    listing = only(office.worker.send("待办"))

    office.worker.press(listing.action(f"受理 {number.partition('-')[2][4:]}"))

    assert office.state(number) == "handling"


@pytest.mark.parametrize("argument", ["3", "0", "abc", "99999999999"])
def test_a_to_do_page_that_does_not_exist_gets_the_page_count(
    office: Office,
    argument: str,
) -> None:
    office.submit()

    reply = only(office.worker.send(f"待办 {argument}"))

    assert "共 1 页" in reply.text and "SQ-" not in reply.text


def test_a_requester_has_no_to_do_pages_either(office: Office) -> None:
    assert "没有权限" in only(office.resident.send("待办 2")).text


# --- who did each step ---------------------------------------------------------------------


def test_a_worker_s_history_names_who_did_each_step(office: Office) -> None:
    # Given a request forwarded by the worker and taken by the department's staff
    number = office.dept_handling(office.submit())

    # When the colleague and the resident look it up
    staff_view = only(office.colleague.send(f"查询 {number}")).text
    resident_view = only(office.resident.send(f"查询 {number}")).text

    # Then each staff history line names its actor and role (the department for its staff)
    assert "接单（张三 · 群众）" in staff_view
    assert "转单（王书记 · 党务工作者）：城管执法" in staff_view
    assert "接收（赵科长 · 城管执法）" in staff_view
    # And the resident's history names nobody
    assert "王书记" not in resident_view and "赵科长" not in resident_view


# --- 上报 and 下派 ---------------------------------------------------------------------------


@dataclass
class Network:
    """District D over C1, C2 and B, with a web worker in C1, D and C2 and a resident of C1."""

    desk: Desk
    c1: Identity
    d: Identity
    c2: Identity
    resident: Identity
    ids: dict[str, int]

    def new_request(self) -> str:
        number = self.resident.send("小区门口的路灯坏了")[-1].number
        for identity in (self.c1, self.d, self.c2):
            identity.new_messages()
        return number

    def up(self, number: str) -> None:
        """C1's worker sends `number` up to the district."""
        self.c1.send(f"上报 {number} 涉及多个社区")
        self.d.new_messages()


@pytest.fixture
def network(desk: Desk) -> Network:
    with session_scope(desk.runtime.engine) as session:
        centres = add_district(session)
        ids = {code: int(centre.id or 0) for code, centre in centres.items()}
    people = {}
    for name, code in [("c1", "C1"), ("d", "D"), ("c2", "C2")]:
        people[name] = desk.worker(f"{code}工作者")
        place(desk.runtime.engine, people[name].person_id, centres[code])
    resident = desk.identity("张三")
    place(desk.runtime.engine, resident.person_id, centres["C1"])
    return Network(desk, resident=resident, ids=ids, **people)


@pytest.mark.parametrize("word", ["上报", "/escalate"])
def test_a_worker_refers_a_request_to_the_centre_above_by_word_or_slash(
    network: Network, word: str
) -> None:
    # Given a request of C1
    number = network.new_request()

    # When C1's worker sends it up with a reason
    replies = network.c1.send(f"{word} {number} 涉及多个社区")

    # Then they are told where it went, the district's worker gets it, the resident is told
    assert replies[-1].text == catalogue(
        "reply.referred", number=number, centre="锦江区党群服务中心"
    )
    assert network.desk.request(number).centre_id == network.ids["D"]
    assert any("涉及多个社区" in m.text for m in network.d.new_messages())
    assert network.resident.new_messages()[-1].text == catalogue(
        "requester.referred", number=number, centre="锦江区党群服务中心"
    )


def test_refer_without_a_reason_asks_for_one(network: Network) -> None:
    number = network.new_request()

    asked = network.c1.send(f"上报 {number}")
    done = network.c1.send("超出社区职权")

    assert asked[-1].text == catalogue("ask.refer", number=number)
    assert done[-1].text.startswith(f"【{number}】已上报")
    assert network.desk.request(number).centre_id == network.ids["D"]


def test_refer_from_the_top_centre_says_there_is_none_above(network: Network) -> None:
    # Given a request already with the district (which has nothing above it)
    number = network.new_request()
    network.up(number)

    # When the district's worker tries to send it up
    replies = network.d.send(f"上报 {number} 再上报")

    # Then they are told so, and it stays
    assert replies[-1].text == catalogue("error.no_parent", number=number)
    assert network.desk.request(number).centre_id == network.ids["D"]


@pytest.mark.parametrize("command", ["上报 {n} 超出职权", "下派 {n} C2", "受理 {n}", "查询 {n}"])
def test_a_worker_of_a_sibling_centre_is_told_the_number_is_unknown(
    network: Network, command: str
) -> None:
    # Given a request of C1
    number = network.new_request()

    # When C2's worker tries it
    replies = network.c2.send(command.format(n=number))

    # Then it is as if the number did not exist, and nothing moved
    assert replies[-1].text == catalogue("error.unknown_request", number=number)
    request = network.desk.request(number)
    assert (request.centre_id, request.state) == (network.ids["C1"], "new")


def test_a_resident_may_not_refer_or_assign(network: Network) -> None:
    number = network.new_request()

    refer = network.resident.send(f"上报 {number} 太慢了")
    assign = network.resident.send(f"下派 {number} C2")

    assert refer[-1].text == catalogue("error.not_permitted", action_label="上报")
    assert assign[-1].text == catalogue("error.not_permitted", action_label="下派")
    assert network.desk.request(number).centre_id == network.ids["C1"]


def test_assign_without_a_centre_offers_the_children_and_takes_the_name_typed(
    network: Network,
) -> None:
    # Given a request with the district
    number = network.new_request()
    network.up(number)

    # When the district's worker says 下派 without a centre
    asked = network.d.send(f"下派 {number}")

    # Then the children are offered, as buttons and by name
    assert asked[-1].labels == ["春熙社区", "东风社区", "春熙路商圈"]
    assert asked[-1].actions[1] == f"下派 {number} C2"
    assert "春熙社区、东风社区、春熙路商圈" in asked[-1].text

    # When they type a name
    done = network.d.send("东风社区")

    # Then it goes there, and C2's worker has it
    assert done[-1].text == catalogue("reply.assigned", number=number, centre="东风社区")
    assert network.desk.request(number).centre_id == network.ids["C2"]
    assert any(number in m.text for m in network.c2.new_messages())


@pytest.mark.parametrize("word", ["下派", "/assign"])
def test_assign_to_an_unknown_centre_names_the_children(network: Network, word: str) -> None:
    number = network.new_request()
    network.up(number)

    replies = network.d.send(f"{word} {number} 青羊区")

    assert replies[-1].text == catalogue(
        "error.unknown_child_centre",
        number=number,
        name="青羊区",
        centres="春熙社区、东风社区、春熙路商圈",
    )
    assert network.desk.request(number).centre_id == network.ids["D"]


def test_assign_from_a_centre_with_nothing_below_says_so(network: Network) -> None:
    number = network.new_request()

    typed = network.c1.send(f"下派 {number} C2")
    bare = network.c1.send(f"下派 {number}")

    assert typed[-1].text == catalogue("error.no_children", number=number)
    assert bare[-1].text == catalogue("error.no_children", number=number)
    assert network.desk.request(number).centre_id == network.ids["C1"]


def test_the_workers_help_names_refer_and_assign(network: Network) -> None:
    help_text = network.c1.send("帮助")[-1].text

    assert "上报 <编号> <原因>" in help_text and "下派 <编号> <中心>" in help_text
