"""bot/texts: every catalogue sentence renders, shows the request's number, and its buttons
send commands the chat understands."""

from __future__ import annotations

import re
import string
from typing import Any

import pytest
from sqlmodel import Session, select

from bot.handlers.commands import parse
from bot.texts import (
    ACTION_LABELS,
    BODIES,
    BUTTONS,
    QUOTE_MARK,
    QUOTED_PARAMS,
    QUOTING_KEYS,
    STATE_LABELS,
    TEXTS,
    Rendered,
    inline,
    quote,
    render,
    text,
)
from storage.models import OutboxMessage, Request
from tests.utils.harness import Desk
from workflow.machine import Action, State

NUMBER = "SQ-20260101-0042"

#: Parameters as the workflow and the handlers pass them.
TYPICAL: dict[str, Any] = {
    "number": NUMBER,
    "category": "市政设施",
    "response_due": "2026-01-02 18:00",
    "resolution_due": "2026-01-08 18:00",
    "department": "城管执法",
    "departments": ["城管执法", "春熙路街道"],
    "reason": "不属于本部门",
    "result": "已更换灯泡",
    "rating": "已解决 满意",
    "text": "我家门口的路灯坏了",
    "requester": "张三",
    "phone": "13800000000",
    "channel": "web",
    "by": "王书记",
    "released": 1,
    "walk_ins": 2,
    "numbers": f"{NUMBER}、SQ-20260101-0002",
    "supplement": "晚上七点以后最明显",
    "action": "受理",
    "contact_name": "李四",
    "contact_phone": "13900000000",
    "inner": "requester.accepted",
    "role_label": "党务工作者",
    "account": "li",
    "department_part": "",
    "help": "帮助说明",
    "length": 2001,
    "limit": 2000,
    "state_label": "待受理",
    "action_label": "受理",
    "example": f"办结 {NUMBER}",
    "name": "不存在的部门",
    "field": "text",
    "staff_note": "",
    "which": "办结",
    "minutes": 30,
    "days": 7,
    "due": "2026-01-08 18:00",
    "holders": "城管执法：李科长",
    "day": "2026-01-05",
    "sections": {"new": ["SQ-20260105-0001 路灯坏了"], "overdue": []},
    "role": "worker",
    "title": "您最近的诉求：",
    "items": [[NUMBER, "new", "我家门口的路灯坏了"]],
    "state": "new",
    "created": "2026-01-01 10:00",
    "history": [["2026-01-01 10:00", "submit", "", "张三 · 群众"]],
    "page": 1,
    "pages": 2,
    "total": 11,
    "todo": [
        ["new", 10, 1, [[NUMBER, "我家门口的路灯坏了", "01-02 18:00", False]]],
        ["review", 1, 2, []],
        ["mine", 0, 2, []],
    ],
    "buttons": True,
    "centre": "锦江区党群服务中心",
    "centres": [["春熙社区", "c1"], ["东风社区", "c2"]],
    "names": "春熙社区、东风社区",
}

# The centre choice and the entry answers (bot/handlers/centres.py).
TYPICAL |= {
    "centre": "春熙路商圈党群服务中心",
    "code": "chunxi",
    "typed": "nowhere",
    "parent": "锦江区党群服务中心",
    "intro": "centre.intro_kept",
    "options": [
        ["春熙路商圈党群服务中心", "chunxi", False],
        ["锦江区党群服务中心", "jinjiang", True],
    ],
    "here": ["锦江区党群服务中心", "jinjiang"],
    "kept": True,
}

# The time bank's refusals (hours, as format_hours writes them).
TYPICAL |= {"cap": "12", "already": "11.5", "asked": "1", "balance": "0.5", "needed": "2"}

#: Keys whose message is about one request.
ABOUT_A_REQUEST = [
    key
    for key in TEXTS
    if key.split(".")[0] in ("requester", "card", "worker", "desk", "ask")
    or (
        key.startswith("reply.")
        and key
        not in (
            "reply.bound",
            "reply.linked",
            "reply.dialogue_cancelled",
            "reply.no_requests",
            "reply.empty_todo",
            "reply.phone_saved",
        )
    )
    or key in ("error.transition", "error.not_yours", "error.unknown_request")
]

#: Placeholders render() fills in itself, from other parameters.
DERIVED = {"phone_part", "channel_label", "inner_text"}


def placeholders(template: str) -> set[str]:
    """The names a format string refers to."""
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


@pytest.mark.parametrize("key", sorted(TEXTS))
def test_every_sentence_renders_with_typical_parameters(key: str) -> None:
    # Given the parameters the code passes
    missing = placeholders(TEXTS[key]) - set(TYPICAL) - DERIVED

    # When it is rendered
    rendered = render(key, TYPICAL)

    # Then every placeholder was known and filled in
    assert not missing, f"{key} refers to {missing}"
    assert rendered.text.strip()
    assert "{" not in rendered.text and "}" not in rendered.text


@pytest.mark.parametrize("key", sorted(TEXTS))
def test_every_sentence_renders_through_text_too(key: str) -> None:
    assert "{" not in text(key, **TYPICAL)


@pytest.mark.parametrize("key", sorted(BODIES))
def test_every_assembled_body_renders(key: str) -> None:
    rendered = render(key, TYPICAL)

    assert rendered.text.strip()


@pytest.mark.parametrize("key", ABOUT_A_REQUEST)
def test_every_message_about_a_request_shows_its_number(key: str) -> None:
    assert NUMBER in render(key, TYPICAL).text


def test_the_status_message_shows_number_state_and_history() -> None:
    rendered = render(
        "reply.status",
        {
            **TYPICAL,
            "history": [
                ["2026-01-01 10:00", "submit", ""],
                ["2026-01-01 11:00", "forward", "城管执法"],
            ],
        },
    )

    assert NUMBER in rendered.text
    assert "待受理" in rendered.text
    assert "· 2026-01-01 11:00 转单：城管执法" in rendered.text


def test_the_status_history_names_each_step_s_actor_and_reads_older_rows_too() -> None:
    # Given a history line with its actor and one queued before lines named one
    rendered = render(
        "reply.status",
        {
            **TYPICAL,
            "history": [
                ["2026-01-01 10:00", "submit", ""],
                ["2026-01-01 11:00", "forward", "城管执法", "王书记 · 党务工作者"],
            ],
        },
    )

    # Then both render, the second naming who forwarded it
    assert "· 2026-01-01 10:00 接单\n" in rendered.text
    assert "· 2026-01-01 11:00 转单（王书记 · 党务工作者）：城管执法" in rendered.text


def test_a_to_do_page_shows_each_section_with_its_true_count() -> None:
    rendered = render("reply.todo", TYPICAL)

    assert rendered.text.startswith("待办诉求（共 11 件，第 1/2 页）")
    assert "待受理（10 件）：" in rendered.text
    assert f"【{NUMBER}】限 01-02 18:00　我家门口的路灯坏了" in rendered.text
    assert "待审核回单（1 件）：\n  见第 2 页" in rendered.text
    assert "我在办（0 件）：\n  无" in rendered.text


def test_a_to_do_page_with_buttons_has_line_actions_and_more() -> None:
    rendered = render("reply.todo", TYPICAL)

    assert [b.label for b in rendered.buttons] == [
        "受理 0101-0042",
        "转单 0101-0042",
        "驳回 0101-0042",
        "更多",
    ]
    assert rendered.buttons[-1].action == "待办 2"
    assert "发送「待办 2」" not in rendered.text


def test_a_to_do_page_without_buttons_writes_out_the_next_page_command() -> None:
    # Given a channel without buttons (WeChat)
    rendered = render("reply.todo", {**TYPICAL, "buttons": False})

    # Then no line carries commands to copy, and the next page is named in the text
    assert rendered.buttons == []
    assert rendered.text.endswith("发送「待办 2」查看下一页。")


def test_an_overdue_to_do_line_says_so() -> None:
    todo = [["new", 1, 1, [[NUMBER, "路灯坏了", "01-02 18:00", True]]]]

    rendered = render("reply.todo", {**TYPICAL, "todo": todo, "pages": 1, "total": 1})

    assert f"【{NUMBER}】已超期 限 01-02 18:00" in rendered.text
    assert "更多" not in [b.label for b in rendered.buttons]


def test_on_wechat_the_register_button_becomes_the_command_to_send() -> None:
    from bot.channels.wechat import commands_footer

    shown = commands_footer(render("smalltalk.too_short", {"text": "停水"}))

    assert "「停水」" in shown and "请发送「登记」" in shown
    assert shown.endswith("\n登记")


def test_a_listing_shows_each_number() -> None:
    rendered = render(
        "reply.listing",
        {
            "title": "t",
            "items": [
                ["SQ-20260101-0001", "new", "a"],
                ["SQ-20260101-0002", "closed", "b"],
            ],
        },
    )

    assert "SQ-20260101-0001" in rendered.text and "SQ-20260101-0002" in rendered.text
    assert "已办结" in rendered.text


def test_help_differs_by_role() -> None:
    requester = render("help", {"role": "requester"}).text
    worker = render("help", {"role": "worker"}).text
    leader = render("help", {"role": "leader"}).text
    staff = render("help", {"role": "department", "department": "城管执法"}).text

    assert len({requester, worker, staff}) == 3
    assert "党委负责人" in leader
    assert "城管执法" in staff and "接收" in staff
    assert "受理" in worker and "转单" in worker
    assert "评价" in requester


def test_a_desk_relay_wraps_the_inner_message_and_keeps_its_buttons() -> None:
    rendered = render("desk.relay", {**TYPICAL, "inner": "requester.replied"})

    assert "李四" in rendered.text and "13900000000" in rendered.text
    assert "已更换灯泡" in rendered.text
    assert f"评价 {NUMBER} 已解决 满意" in [b.action for b in rendered.buttons]


def test_every_state_and_action_has_a_label() -> None:
    assert set(STATE_LABELS) == {state.value for state in State}
    assert {action.value for action in Action} <= set(ACTION_LABELS)


#: The commands each message's buttons send.
EXPECTED_BUTTONS: dict[str, set[str]] = {
    "card.new": {"accept", "forward", "reject"},
    "card.referred": {"accept", "forward", "reject"},
    "card.assigned": {"accept", "forward", "reject"},
    "ask.assign": {"assign"},
    "card.returned": {"accept", "forward", "reject"},
    "card.released": {"accept", "forward", "reject"},
    "card.reopened": {"accept", "forward", "reject"},
    "card.forwarded": {"take", "return", "complete"},
    "card.auto_forwarded": {"recall"},
    "reply.forwarded": {"recall"},
    "reply.recalled": {"accept", "forward", "reject"},
    "card.review": {"approve", "send_back"},
    "card.sent_back": {"complete"},
    "reply.accepted": {"complete", "forward"},
    "reply.taken": {"complete", "return"},
    "requester.replied": {"rate"},
    "ask.rate": {"rate"},
    "ask.forward": {"forward"},
    "requester.receipt": {"status"},
    "smalltalk.thanks_rate": {"rate"},
    "smalltalk.too_short": {"register"},
    "reply.todo": {"accept", "forward", "reject", "inbox"},
}

#: Buttons whose command names no request: 登记 (the pending text), 更多 (the next page).
NO_NUMBER = {"register", "inbox"}

# The centre choice: its buttons name centres (切换 CODE, /centres CODE), not requests.
EXPECTED_BUTTONS["centre.choose"] = {"switch", "browse"}
NO_NUMBER |= {"switch", "browse"}


def test_every_message_with_buttons_is_listed_here() -> None:
    assert set(BUTTONS) == set(EXPECTED_BUTTONS)


@pytest.mark.parametrize("key", sorted(EXPECTED_BUTTONS))
def test_button_actions_parse_back_to_their_commands(key: str) -> None:
    # When the buttons are rendered and their actions parsed as chat text
    rendered: Rendered = render(key, TYPICAL)
    commands = [parse(button.action) for button in rendered.buttons]

    # Then each is a known command on the message's request
    assert rendered.buttons
    assert all(command is not None for command in commands)
    assert {command.name for command in commands if command} == EXPECTED_BUTTONS[key]
    assert all(
        command.first == NUMBER for command in commands if command and command.name not in NO_NUMBER
    )


def test_committee_cards_offer_refer_and_assign_only_where_the_centre_can_move_requests() -> None:
    # Given a card of a centre with one above it and centres below it, and one with neither
    moving = render("card.new", {**TYPICAL, "can_refer": True, "can_assign": True})
    single = render("card.new", TYPICAL)

    # Then the first offers 上报 and 下派 after the usual three, the second only the three
    assert [b.label for b in moving.buttons] == ["受理", "转单", "驳回", "上报", "下派"]
    assert [b.action for b in moving.buttons][3:] == [f"上报 {NUMBER}", f"下派 {NUMBER}"]
    assert [b.label for b in single.buttons] == ["受理", "转单", "驳回"]


def test_assign_buttons_name_each_child_centre_and_send_its_code() -> None:
    rendered = render("ask.assign", TYPICAL)

    parsed = [parse(button.action) for button in rendered.buttons]
    assert [command.name for command in parsed if command] == ["assign", "assign"]
    assert [command.rest for command in parsed if command] == ["c1", "c2"]
    assert [button.label for button in rendered.buttons] == ["春熙社区", "东风社区"]
    assert "春熙社区、东风社区" in rendered.text


def test_forward_buttons_name_each_department() -> None:
    rendered = render("ask.forward", TYPICAL)

    parsed = [parse(button.action) for button in rendered.buttons]
    assert [command.rest for command in parsed if command] == ["城管执法", "春熙路街道"]
    assert [button.label for button in rendered.buttons] == ["城管执法", "春熙路街道"]


def test_rating_buttons_offer_every_answer_once() -> None:
    rendered = render("requester.replied", TYPICAL)

    answers = [parse(button.action).rest for button in rendered.buttons]  # type: ignore[union-attr]
    assert len(answers) == len(set(answers)) == 6
    assert "未解决 不满意" in answers


def _story(desk: Desk) -> None:
    """A day at the desk touching most messages: forwarding, returning, review, rework,
    reopening, supplements, cancellation and a walk-in."""
    desk.add_department("城管执法")
    desk.add_department("春熙路街道")
    desk.add_category("市政设施", ["路灯"])
    desk.add_category("其他", [], fallback=True)
    worker = desk.worker("王书记")
    desk.worker("李干事")
    staff = desk.staff("城管执法", "赵科长")
    resident = desk.identity("张三")

    resident.send("我家门口的路灯坏了")
    first = desk.requests()[-1].number
    resident.send(f"补充 {first} 晚上最明显")
    worker.send(f"转单 {first} 城管执法")
    staff.send(f"退单 {first} 不属于本部门")
    worker.send(f"转单 {first}")
    worker.press(f"转单 {first} 城管执法")
    staff.press(f"接收 {first}")
    staff.send(f"办结 {first} 已更换灯泡")
    worker.send(f"返工 {first} 请附照片")
    staff.send(f"办结 {first} 已更换灯泡，附照片")
    worker.press(f"回单 {first}")
    resident.press(f"评价 {first} 未解决 不满意")
    worker.send(f"受理 {first}")
    worker.send(f"办结 {first} 党委协调处理完毕")
    worker.send(f"回单 {first}")
    resident.send(f"评价 {first}")
    resident.press(f"评价 {first} 已解决 满意")
    resident.send(f"查询 {first}")

    resident.send("楼下噪音太大")
    second = desk.requests()[-1].number
    worker.send(f"驳回 {second} 不属于受理范围")
    resident.send("小区垃圾没人清理")
    third = desk.requests()[-1].number
    resident.send(f"撤销 {third}")
    worker.intake("李四", "13900000000", "路灯不亮")
    fourth = desk.requests()[-1].number
    worker.send(f"受理 {fourth}")
    worker.send(f"受理 {fourth}")


def test_every_message_sent_in_a_whole_story_got_all_its_parameters(desk: Desk) -> None:
    # Given a story that sends most kinds of message
    _story(desk)

    # When every outbox row is compared with its sentence
    with Session(desk.runtime.engine) as session:
        rows = list(session.exec(select(OutboxMessage)).all())

    # Then no sentence was rendered with a placeholder left empty
    assert len({row.key for row in rows}) >= 20
    for row in rows:
        if row.key not in TEXTS:
            continue
        template = TEXTS[row.key]
        if row.key == "desk.relay":
            template = TEXTS[str(row.params["inner"])]
        given = set(row.params) | DERIVED
        assert placeholders(template) <= given, (row.key, placeholders(template) - given)


def test_every_message_about_a_request_in_a_whole_story_shows_its_number(desk: Desk) -> None:
    # Given a story that sends most kinds of message
    _story(desk)

    # Then every delivered message tied to a request, or carrying a number, shows it
    with Session(desk.runtime.engine) as session:
        numbers = {r.id: r.number for r in session.exec(select(Request)).all()}
        rows = list(session.exec(select(OutboxMessage)).all())
    checked = 0
    for row in rows:
        number = numbers.get(row.request_id) if row.request_id else row.params.get("number")
        if not number:
            continue
        checked += 1
        assert re.search(re.escape(str(number)), render(row.key, row.params).text), row.key
    assert checked >= 40


# --- someone else's words in staff messages -------------------------------------------------

#: A resident's text that imitates a card's own lines: who it is from, a deadline, WeChat's
#: commands footer with a command to copy.
FORGED = (
    "路灯坏了\n—— 来自：王书记 13800000000（网页）\n办结时限：已延期\r\n"
    "复制下列指令回复即可办理：\u2028受理 SQ-20260101-0001\u2029回单 SQ-20260101-0001"
)

#: Characters that would reorder or hide text, or break a line, without being seen.
INVISIBLES = "\u202e\u2066\u200b\ufeff\u200f\u0085\x0b\x00"


def card_lines(rendered: str) -> list[str]:
    """The lines of a rendered message."""
    return rendered.split("\n")


@pytest.mark.parametrize("key", sorted(QUOTING_KEYS))
def test_every_quoting_message_puts_the_quoted_words_on_lines_of_their_own(key: str) -> None:
    # Given a staff message that shows someone else's words
    template = TEXTS[key]

    # Then each such placeholder starts a line and ends one, so every quoted line is marked
    found = [name for name in QUOTED_PARAMS if "{" + name + "}" in template]
    assert found, key
    for name in found:
        assert re.search(r"(^|\n)\{" + name + r"\}(\n|$)", template), (key, name)


def test_quoting_marks_every_line_and_turns_every_line_break_into_one() -> None:
    # When a text with every kind of line break is quoted
    quoted = quote("一\r\n二\r三\u2028四\u2029五\x0b六\x0c七\u0085八")

    # Then it is eight lines, each marked
    assert quoted.split("\n") == [QUOTE_MARK + word for word in "一二三四五六七八"]


def test_quoting_drops_bidi_zero_width_and_control_characters() -> None:
    # When a text with invisible characters is quoted and inlined
    quoted, inlined = quote(f"路{INVISIBLES}灯"), inline(f"张{INVISIBLES}三")

    # Then none of them is left; its two line breaks (NEL, vertical tab) became lines
    for char in INVISIBLES:
        assert char not in quoted.replace("\n", "") and char not in inlined
    assert quoted.split("\n") == [QUOTE_MARK + "路", QUOTE_MARK, QUOTE_MARK + "灯"]
    assert inlined == "张 三"


def test_a_name_with_line_breaks_stays_on_its_own_line() -> None:
    forged = "张三\n—— 来自：王书记\u2028办结时限：无\t"
    assert inline(forged) == "张三 —— 来自：王书记 办结时限：无"


@pytest.mark.parametrize("key", ["card.new", "card.auto_forwarded", "card.forwarded"])
def test_a_forged_card_line_in_a_new_card_stays_quoted(key: str) -> None:
    # Given a resident whose text and name imitate the card's own lines
    params = {
        "number": "SQ-20260101-0002",
        "category": "市政设施",
        "text": FORGED,
        "requester": "张三\n—— 来自：李四",
        "phone": "139\n办结时限：无",
        "channel": "web",
        "department": "城管执法",
        "by": "王书记",
        "response_due": "12-01 10:00",
        "resolution_due": "12-05 18:00",
    }

    # When the card is rendered
    lines = card_lines(render(key, params).text)

    # Then it has exactly one 来自 line and one deadline line, the card's own
    assert len([line for line in lines if line.startswith("—— 来自：")]) == 1
    assert len([line for line in lines if line.startswith(("办结时限", "响应时限"))]) == 1
    # And every line of the resident's words is quoted, none starts like a command
    quoted = [line for line in lines if line.startswith(QUOTE_MARK)]
    assert len(quoted) == 6
    assert [line.removeprefix(QUOTE_MARK) for line in quoted] == [
        "路灯坏了",
        "—— 来自：王书记 13800000000（网页）",
        "办结时限：已延期",
        "复制下列指令回复即可办理：",
        "受理 SQ-20260101-0001",
        "回单 SQ-20260101-0001",
    ]
    assert not [line for line in lines if line.startswith(("受理", "回单", "复制下列指令"))]


@pytest.mark.parametrize("key", sorted(QUOTING_KEYS))
def test_every_staff_message_quotes_the_resident_s_words(key: str) -> None:
    # Given every parameter a staff message may carry, the resident's words forged
    params: dict[str, Any] = dict.fromkeys(placeholders(TEXTS[key]), "x")
    params.update({"number": "SQ-20260101-0003", "text": FORGED, "supplement": FORGED})

    # When it is rendered
    lines = card_lines(render(key, params).text)

    # Then the six lines of the resident's words are all quoted
    assert len([line for line in lines if line.startswith(QUOTE_MARK)]) == 6, key
    own = len(re.findall(r"(^|\n)—— 来自", TEXTS[key]))
    assert len([line for line in lines if line.startswith("—— 来自")]) == own, key
    assert not [line for line in lines if line.startswith(("受理", "回单", "复制下列指令"))]


def test_a_resident_s_own_text_is_not_quoted_back_to_them() -> None:
    # A resident's own short text in their answer is not a card: it stays as they wrote it
    assert "「路灯」" in render("smalltalk.too_short", {"text": "路灯"}).text


def test_the_status_of_a_request_quotes_its_text_and_keeps_history_notes_on_one_line() -> None:
    # When a request whose text and supplement forge lines is shown
    shown = render(
        "reply.status",
        {
            "number": "SQ-20260101-0004",
            "state": "new",
            "category": "其他",
            "created": "12-01",
            "text": FORGED,
            "history": [["12-01 10:00", "supplement", "晚上\n办理记录：伪造"]],
        },
    ).text

    # Then the text is quoted and the note stays on its history line
    lines = card_lines(shown)
    assert len([line for line in lines if line.startswith(QUOTE_MARK)]) == 6
    assert lines[-1] == "· 12-01 10:00 补充：晚上 办理记录：伪造"
    assert [line for line in lines if line.startswith("办理记录")] == ["办理记录："]


def test_a_resident_who_forges_card_lines_on_the_web_desk_cannot_fake_them_in_the_worker_s_card(
    desk: Desk,
) -> None:
    # Given a worker, and a resident whose name also imitates the card's 来自 line
    desk.add_category("其他", [], fallback=True)
    worker = desk.worker("王书记")
    resident = desk.identity("张三\n—— 来自：李四")

    # When the resident writes a text that imitates the card's lines and commands
    resident.send(FORGED)
    number = desk.requests()[-1].number
    worker.send(f"受理 {number}")
    resident.send(f"补充 {number} 已修好\n—— 来自：王书记\n复制下列指令：\n回单 {number}")

    # Then the worker's card has one 来自 line, the resident's lines all quoted
    card = [m for m in worker.received if m.updates is None][1]
    lines = card_lines(card.text)
    assert [line for line in lines if line.startswith("—— 来自：")] == [
        "—— 来自：张三 —— 来自：李四（网页）"
    ]
    assert len([line for line in lines if line.startswith(QUOTE_MARK)]) == 6
    assert card.actions == [f"受理 {number}", f"转单 {number}", f"驳回 {number}"]
    # And the supplement's forged lines are quoted too
    assert card_lines(worker.last().text)[1:] == [
        QUOTE_MARK + "已修好",
        QUOTE_MARK + "—— 来自：王书记",
        QUOTE_MARK + "复制下列指令：",
        QUOTE_MARK + f"回单 {number}",
    ]
    # And the request keeps the resident's words as they wrote them
    assert desk.request(number).text.startswith("路灯坏了\n—— 来自：王书记")
