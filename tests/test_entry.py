"""How a resident reaches a centre, on SQLite and PostgreSQL: workflow/centres.py, the choice a
resident who came through no centre is asked (and the request it keeps), 切换, and the web
desk's entry (`POST /api/web/session {"centre": CODE}`, a link opened by an identity that
exists). Telegram's /start CODE and WeChat's QR scenes are in test_telegram.py and
test_wechat.py."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func
from sqlmodel import Session, select

from bot import dispatch
from bot.handlers import centres as handlers_centres
from bot.handlers.centres import CHOOSE_DIALOGUE
from bot.runtime import Runtime
from bot.texts import text as catalogue
from storage import queries
from storage.db import session_scope
from storage.models import Centre, InboxMessage, Person, Role, utcnow
from tests.utils.app import TestClient
from tests.utils.harness import Desk, Identity
from tests.utils.network import Network, add_network, deactivate
from workflow import centres

#: Codes and names that must find nothing, and change nothing.
HOSTILE = [
    "x' OR '1'='1",
    "chunxi'; DROP TABLE centres; --",
    "<script>alert(1)</script>",
    "%",
    "_",
    "chunx%",
    "A" * 33,
    "chunxi" * 500,
    "\u202echunxi",
    "",
    "   ",
]


@pytest.fixture
def network(runtime: Runtime) -> Network:
    """The default centre and a district with three centres under it (all active)."""
    return add_network(runtime.engine)


def centre_of(runtime: Runtime, person_id: int) -> int | None:
    """A person's centre, fresh."""
    with Session(runtime.engine) as session:
        person = session.get(Person, person_id)
        assert person is not None
        return person.centre_id


def people_count(runtime: Runtime) -> int:
    with Session(runtime.engine) as session:
        return int(session.exec(select(func.count()).select_from(Person)).one())


def resident(desk: Desk, name: str = "张三") -> Identity:
    """A web resident who came through no centre."""
    identity = desk.identity(name)
    assert identity.person().centre_id is None
    return identity


# --- workflow/centres.py ----------------------------------------------------------------------


def test_a_centre_is_found_by_its_code_in_any_case_or_by_its_exact_name(
    runtime: Runtime, network: Network
) -> None:
    with Session(runtime.engine) as session:
        # When a centre is looked up by its code, in any case, or by its exact name
        found = [
            centres.find_centre(session, typed)
            for typed in ("chunxi", "CHUNXI", " ChunXi ", "春熙路商圈党群服务中心")
        ]

    # Then each finds it
    assert [centre.id if centre else None for centre in found] == [network.chunxi] * 4


@pytest.mark.parametrize("typed", HOSTILE)
def test_codes_and_names_with_sql_html_wildcards_or_of_any_length_find_no_centre(
    runtime: Runtime, network: Network, typed: str
) -> None:
    with Session(runtime.engine) as session:
        assert centres.find_centre(session, typed) is None
        assert centres.by_code(session, typed) is None
        # And the table is intact
        assert len(session.exec(select(Centre)).all()) == 5


def test_an_inactive_centre_is_found_neither_by_code_nor_by_name(
    runtime: Runtime, network: Network
) -> None:
    # Given a centre that was deactivated
    deactivate(runtime.engine, "chunxi")

    with Session(runtime.engine) as session:
        # Then neither its code nor its name finds it
        assert centres.find_centre(session, "chunxi") is None
        assert centres.find_centre(session, "春熙路商圈党群服务中心") is None


def test_a_name_two_active_centres_share_finds_neither(runtime: Runtime, network: Network) -> None:
    # Given a second centre with the name of another
    with session_scope(runtime.engine) as session:
        queries.add_centre(
            session=session, code="chunxi-2", name="春熙路商圈党群服务中心", level="商圈"
        )

    with Session(runtime.engine) as session:
        # Then the name finds neither, and each code its own
        assert centres.find_centre(session, "春熙路商圈党群服务中心") is None
        chunxi = centres.find_centre(session, "chunxi")
        assert chunxi is not None and chunxi.id == network.chunxi


def test_the_choice_offers_the_top_centres_then_the_active_children_of_one(
    runtime: Runtime, network: Network
) -> None:
    # Given one of the district's centres is inactive
    deactivate(runtime.engine, "hejiang")

    with Session(runtime.engine) as session:
        # Then the top is the default centre and the district; under it, its active centres
        assert [c.id for c in centres.choices(session)] == [network.default, network.district]
        assert [c.id for c in centres.choices(session, network.district)] == [
            network.chunxi,
            network.shuyuan,
        ]
        assert centres.choices(session, network.chunxi) == []


def test_the_centres_under_an_inactive_one_are_offered_at_the_top(
    runtime: Runtime, network: Network
) -> None:
    # Given the district is deactivated, its centres not
    deactivate(runtime.engine, "jinjiang")

    with Session(runtime.engine) as session:
        # Then they are offered at the top, so that every active centre can be chosen
        assert [c.id for c in centres.choices(session)] == [
            network.default,
            network.chunxi,
            network.shuyuan,
            network.hejiang,
        ]


def test_only_a_resident_without_an_active_centre_among_several_needs_to_choose(
    runtime: Runtime, desk: Desk
) -> None:
    # Given a resident and a worker, on a single-centre install
    person = resident(desk)
    worker = desk.worker()

    def must_choose() -> tuple[bool, bool]:
        someone, staff = person.person(), worker.person()
        with Session(runtime.engine) as session:
            return centres.needs_choice(session, someone), centres.needs_choice(session, staff)

    # Then nobody needs to choose
    assert must_choose() == (False, False)

    # When a network of centres is added
    network = add_network(runtime.engine)

    # Then the resident without a centre must choose, the worker not
    assert must_choose() == (True, False)

    # And once the resident has a centre, not any more, until that centre is deactivated
    with session_scope(runtime.engine) as session:
        row = session.get(Person, person.person_id)
        assert row is not None
        row.centre_id = network.chunxi
        session.add(row)
    assert must_choose() == (False, False)
    deactivate(runtime.engine, "chunxi")
    assert must_choose() == (True, False)


def test_entering_by_a_code_places_a_resident_and_leaves_staff_and_unknown_codes_alone(
    runtime: Runtime, desk: Desk, network: Network
) -> None:
    # Given a resident and a worker (of the default centre)
    person = resident(desk)
    worker = desk.worker()
    worker_centre = worker.person().centre_id

    with session_scope(runtime.engine) as session:
        tx = runtime.tx(session, "test:enter")
        someone = session.get(Person, person.person_id)
        staff = session.get(Person, worker.person_id)
        assert someone is not None and staff is not None

        # When each enters by codes, known, unknown and hostile
        entered = centres.enter(tx, someone, "CHUNXI")
        unknown = [centres.enter(tx, someone, code) for code in ("nowhere", *HOSTILE, None)]
        staff_entered = centres.enter(tx, staff, "shuyuan")

    # Then the resident belongs to the centre the known code names, whatever came after
    assert entered is not None and entered.id == network.chunxi
    assert unknown == [None] * (len(HOSTILE) + 2)
    assert centre_of(runtime, person.person_id) == network.chunxi
    # And the worker keeps the centre of their role (the code's centre is still named)
    assert staff_entered is not None and staff_entered.id == network.shuyuan
    assert centre_of(runtime, worker.person_id) == worker_centre


# --- the choice -------------------------------------------------------------------------------


def test_on_a_single_centre_install_a_request_is_filed_at_once_with_no_question(
    desk: Desk,
) -> None:
    # Given only the default centre
    person = resident(desk)

    # When a resident writes a request
    [receipt] = person.send("小区门口的路灯坏了")

    # Then it is filed at once, in the default centre, with today's receipt
    assert "已受理登记" in receipt.text
    [request] = desk.requests()
    assert person.person().dialogue is None
    assert request.centre_id == desk_default(desk)


def desk_default(desk: Desk) -> int:
    with Session(desk.runtime.engine) as session:
        centre_id = queries.default_centre(session=session).id
        assert centre_id is not None
        return centre_id


def test_a_resident_without_a_centre_chooses_one_and_the_kept_request_is_filed_there(
    desk: Desk, network: Network
) -> None:
    # Given several centres and a resident who came through none
    person = resident(desk)

    # When they write a request
    [question] = person.send("小区门口的路灯坏了，晚上很黑")

    # Then nothing is filed yet: they are asked to choose among the top centres
    assert desk.requests() == []
    assert question.text.startswith(catalogue("centre.intro_kept"))
    assert "1. 党群服务中心" in question.text
    assert "2. 锦江区党群服务中心" in question.text
    assert question.labels == ["党群服务中心", "锦江区党群服务中心"]
    assert question.actions == ["切换 default", "/centres jinjiang"]

    # When they answer with the district's number
    [children] = person.send("2")

    # Then its centres are listed, with 就选这里
    assert desk.requests() == []
    lines = children.text.splitlines()
    assert lines[0] == catalogue("centre.intro_children", parent="锦江区党群服务中心")
    assert lines[1:5] == [
        "1. 春熙路商圈党群服务中心",
        "2. 书院街社区党群服务中心",
        "3. 合江亭社区党群服务中心",
        "4. 就选这里（锦江区党群服务中心）",
    ]
    assert children.labels[-1] == "就选这里"

    # When they choose the first
    chosen, receipt = person.send("１")

    # Then the kept request is filed there, once, and the dialogue is closed
    assert chosen.text == catalogue("centre.chosen", centre="春熙路商圈党群服务中心")
    assert "已受理登记" in receipt.text
    [request] = desk.requests()
    assert request.text == "小区门口的路灯坏了，晚上很黑"
    assert request.centre_id == network.chunxi
    assert person.person().centre_id == network.chunxi
    assert person.person().dialogue is None

    # And their next request goes there with no question
    [next_receipt] = person.send("楼道里的垃圾没人清理")
    assert "已受理登记" in next_receipt.text
    assert [r.centre_id for r in desk.requests()] == [network.chunxi, network.chunxi]


@pytest.mark.parametrize(
    ("replies", "expected"),
    [
        (["锦江区党群服务中心", "就选这里"], "district"),
        (["JINJIANG", "4"], "district"),
        (["2", "shuyuan"], "shuyuan"),
        (["2", "合江亭社区党群服务中心"], "hejiang"),
        (["Hejiang"], "hejiang"),
        (["党群服务中心"], "default"),
        (["1"], "default"),
    ],
)
def test_a_reply_by_number_name_or_code_picks_the_centre(
    desk: Desk, network: Network, replies: list[str], expected: str
) -> None:
    # Given a resident asked to choose for their request
    person = resident(desk)
    person.send("小区门口的路灯坏了")

    # When they reply
    for reply in replies:
        person.send(reply)

    # Then the request is filed in the centre they picked
    [request] = desk.requests()
    assert request.centre_id == getattr(network, expected)


@pytest.mark.parametrize("bad", ["9", "0", "99999999999", "不知道", "就选这里", *HOSTILE[:-2]])
def test_a_bad_reply_is_answered_with_the_choice_again_and_loses_nothing(
    desk: Desk, network: Network, bad: str
) -> None:
    # Given a resident asked to choose for their request
    person = resident(desk)
    person.send("小区门口的路灯坏了")

    # When they reply with something that picks nothing
    [again] = person.send(bad)

    # Then they are told, on one line and briefly, and asked again; nothing is filed
    first = again.text.splitlines()[0]
    assert first.startswith("没有「") and first.endswith("这一选项。请选择党群服务中心：")
    assert len(first) < 80
    assert "2. 锦江区党群服务中心" in again.text
    assert desk.requests() == []
    assert person.person().dialogue is not None

    # And a good reply still files the kept request, once
    person.send("chunxi")
    [request] = desk.requests()
    assert (request.text, request.centre_id) == ("小区门口的路灯坏了", network.chunxi)


def test_the_choice_buttons_pick_and_open_the_centres_under_one(
    desk: Desk, network: Network
) -> None:
    # Given a resident asked to choose
    person = resident(desk)
    [question] = person.send("小区门口的路灯坏了")

    # When they press the district, then 就选这里
    [children] = person.press(question.action("锦江区党群服务中心"))
    assert children.actions == [
        "切换 chunxi",
        "切换 shuyuan",
        "切换 hejiang",
        "切换 jinjiang",
    ]
    person.press(children.action("就选这里"))

    # Then the request is filed in the district
    [request] = desk.requests()
    assert request.centre_id == network.district


def test_other_commands_keep_the_choice_and_cancel_drops_it(desk: Desk, network: Network) -> None:
    # Given a resident asked to choose for their request
    person = resident(desk)
    person.send("小区门口的路灯坏了")

    # When they ask for help and their requests meanwhile
    [help_text] = person.send("帮助")
    person.send("查询")

    # Then the help names 切换, and the choice still holds the request
    assert "切换" in help_text.text
    person.send("hejiang")
    assert [r.centre_id for r in desk.requests()] == [network.hejiang]

    # When another request is kept for a choice and they send 取消
    other = resident(desk, "李四")
    other.send("噪音扰民，每晚施工")
    [cancelled] = other.send("取消")

    # Then it is dropped, and a later number is no answer any more
    assert cancelled.text == catalogue("reply.dialogue_cancelled")
    assert other.person().dialogue is None
    other.send("1")
    assert len(desk.requests()) == 1


def test_a_command_that_asks_for_more_while_a_request_is_kept_asks_for_the_centre_first(
    desk: Desk, network: Network
) -> None:
    # Given a resident with a filed request, whose centre is deactivated since, and a new
    # request kept for the choice
    person = resident(desk)
    person.send("切换 hejiang")
    person.send("小区门口的路灯坏了")
    [filed] = desk.requests()
    deactivate(desk.runtime.engine, "hejiang")
    person.send("噪音扰民，每晚施工")
    assert handlers_centres.holding(person.person())

    # When they send 补充 with a number but no text (which would ask for the text)
    [answer] = person.send(f"补充 {filed.number}")

    # Then the choice is asked again and still holds the new request
    assert answer.text.startswith(catalogue("centre.intro_first"))
    assert handlers_centres.holding(person.person())
    assert len(desk.requests()) == 1

    # And once they choose, the kept request is filed there
    person.send("shuyuan")
    assert sorted(r.centre_id for r in desk.requests()) == sorted(
        [network.hejiang, network.shuyuan]
    )


def test_a_resident_of_a_deactivated_centre_files_in_the_one_centre_left_active(
    desk: Desk, network: Network
) -> None:
    # Given a resident of 合江亭, and every centre but the default one deactivated since
    person = resident(desk)
    person.send("切换 hejiang")
    for code in ("hejiang", "shuyuan", "chunxi", "jinjiang"):
        deactivate(desk.runtime.engine, code)

    # When they write a request
    person.send("小区门口的路灯坏了")

    # Then it is filed at once in the one active centre, not in the deactivated one
    [request] = desk.requests()
    assert request.centre_id == network.default
    assert not handlers_centres.choosing(person.person())


def test_a_register_while_the_choice_is_open_joins_the_kept_request(
    desk: Desk, network: Network
) -> None:
    # Given a resident asked to choose for their request
    person = resident(desk)
    person.send("小区门口的路灯坏了")

    # When they register more with 登记, then choose
    [again] = person.send("登记 已经三天了")
    assert again.text.startswith(catalogue("centre.intro_kept"))
    person.send("shuyuan")

    # Then one request holds both texts
    [request] = desk.requests()
    assert request.text == "小区门口的路灯坏了\n已经三天了"
    assert request.centre_id == network.shuyuan


def test_the_reply_that_picks_files_the_request_once_even_when_its_handling_is_retried(
    desk: Desk, network: Network, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a resident asked to choose for their kept request, and a handler that fails once
    # right after filing it (a crash before the inbox row is done)
    person = resident(desk)
    person.send("小区门口的路灯坏了")
    real = handlers_centres.file_kept
    failures: list[int] = []

    def file_then_fail(tx: Any, someone: Person) -> bool:
        filed = real(tx, someone)
        if not failures:
            failures.append(1)
            raise RuntimeError("crash after filing")
        return filed

    monkeypatch.setattr(handlers_centres, "file_kept", file_then_fail)
    with session_scope(runtime.engine) as session:
        queries.add_inbox(
            session=session,
            channel="web",
            natural_key=f"{person.chat_id}:pick-1",
            chat_id=person.chat_id,
            payload={"text": "chunxi"},
        )

    # When the reply is handled, fails, and is handled again (the actor's retry)
    with pytest.raises(dispatch.InboxRetry):
        dispatch.process_chat(runtime, "web", person.chat_id)
    assert desk.requests() == []
    dispatch.process_chat(runtime, "web", person.chat_id)

    # And the same job is delivered once more, and the client posts the same reply again
    dispatch.process_chat(runtime, "web", person.chat_id)
    person.send("chunxi", client_id="pick-1")

    # Then the request is filed exactly once, in the centre picked, with one receipt
    [request] = desk.requests()
    assert request.centre_id == network.chunxi
    person.new_messages()
    receipts = [m for m in person.received if "已受理登记" in m.text]
    assert len(receipts) == 1


def test_small_talk_is_answered_without_asking_for_a_centre(desk: Desk, network: Network) -> None:
    person = resident(desk)

    [answer] = person.send("你好")

    assert answer.text == catalogue("smalltalk.greeting")
    assert person.person().dialogue is None


# --- 切换 ---------------------------------------------------------------------------------------


def test_switch_moves_a_resident_for_future_requests_only(desk: Desk, network: Network) -> None:
    # Given a resident of 春熙路 with a request there
    person = resident(desk)
    person.send("小区门口的路灯坏了")
    person.send("chunxi")

    # When they switch by name, then by code
    [by_name] = person.send("切换 书院街社区党群服务中心")
    assert by_name.text == catalogue("centre.switched", centre="书院街社区党群服务中心")
    [by_code] = person.send("切换 HEJIANG")
    assert by_code.text == catalogue("centre.switched", centre="合江亭社区党群服务中心")
    person.send("楼道里的垃圾没人清理")

    # Then the new request is filed in the last one; the first stays where it was
    assert [r.centre_id for r in desk.requests()] == [network.chunxi, network.hejiang]


def test_switch_alone_shows_the_choice_and_a_reply_moves_the_resident(
    desk: Desk, network: Network
) -> None:
    person = resident(desk)

    [question] = person.send("切换")
    assert question.text.startswith(catalogue("centre.intro_switch"))

    person.send("2")
    [moved] = person.send("就选这里")

    assert moved.text == catalogue("centre.switched", centre="锦江区党群服务中心")
    assert person.person().centre_id == network.district
    assert desk.requests() == []


def test_a_request_written_instead_of_answering_switch_is_kept_for_the_choice(
    desk: Desk, network: Network
) -> None:
    # Given a resident with no centre who opened the choice with 切换
    person = resident(desk)
    person.send("切换")

    # When they write their request instead of choosing
    [question] = person.send("小区门口的路灯坏了")

    # Then it is kept and they are asked again; choosing files it
    assert question.text.startswith(catalogue("centre.intro_kept"))
    person.send("chunxi")
    [request] = desk.requests()
    assert (request.text, request.centre_id) == ("小区门口的路灯坏了", network.chunxi)


@pytest.mark.parametrize("typed", ["nowhere", *HOSTILE[:-2]])
def test_switch_to_an_unknown_centre_is_answered_with_the_choice_and_moves_nobody(
    desk: Desk, network: Network, typed: str
) -> None:
    # Given a resident of 春熙路
    person = resident(desk)
    person.send("切换 chunxi")

    # When they switch to something that names no active centre
    [answer] = person.send(f"切换 {typed}")

    # Then they are told so (briefly, on one line) with the choice, and stay where they were
    first = answer.text.splitlines()[0]
    assert first.startswith("没有找到「") and len(first) < 100
    assert "2. 锦江区党群服务中心" in answer.text
    assert person.person().centre_id == network.chunxi


def test_switch_to_an_inactive_centre_is_refused(
    desk: Desk, network: Network, runtime: Runtime
) -> None:
    person = resident(desk)
    deactivate(runtime.engine, "shuyuan")

    [answer] = person.send("切换 shuyuan")

    assert answer.text.startswith(catalogue("centre.intro_unknown", typed="shuyuan"))
    assert person.person().centre_id is None


def test_staff_cannot_switch_their_centre_is_their_roles(desk: Desk, network: Network) -> None:
    # Given a worker
    worker = desk.worker()
    before = worker.person().centre_id

    # When they try 切换, with and without a centre, and the choice's command
    answers = [worker.send(text)[0].text for text in ("切换 chunxi", "切换", "/centres jinjiang")]

    # Then each is refused in plain words and their centre is unchanged
    assert answers == [catalogue("centre.staff_fixed")] * 3
    assert worker.person().centre_id == before
    assert worker.person().role == Role.WORKER


def test_switch_on_a_single_centre_install_says_there_is_only_one(desk: Desk) -> None:
    person = resident(desk)

    answers = [person.send(text)[0].text for text in ("切换 chunxi", "切换", "切换 default")]

    assert answers == [
        catalogue("centre.only_one", centre="党群服务中心"),
        catalogue("centre.only_one", centre="党群服务中心"),
        catalogue("centre.switched", centre="党群服务中心"),
    ]
    assert desk.requests() == []


# --- the web desk's entry ---------------------------------------------------------------------


def test_a_web_session_with_a_centre_makes_a_resident_of_it_who_is_never_asked(
    client: TestClient, runtime: Runtime, network: Network
) -> None:
    # When an identity is made from a centre's link
    response = client.post("/api/web/session", json={"name": "张三", "centre": "ChunXi"})

    # Then it belongs to that centre, and the answer names it
    assert response.status_code == 201
    body = response.json()
    assert body["centre"] == {"code": "chunxi", "name": "春熙路商圈党群服务中心"}
    person = person_of(runtime, body["token"])
    assert person.centre_id == network.chunxi

    # And its request is filed there with no question
    desk = Desk(runtime)
    identity = Identity(desk, body["token"], person.id or 0, person.external_id)
    [receipt] = identity.send("小区门口的路灯坏了")
    assert "已受理登记" in receipt.text
    assert [r.centre_id for r in desk.requests()] == [network.chunxi]


def person_of(runtime: Runtime, token: str) -> Person:
    with Session(runtime.engine) as session:
        person = queries.person_for_web_token(session=session, token=token, now=utcnow())
        assert person is not None
        return person


@pytest.mark.parametrize("code", ["nowhere", "hejiang", *HOSTILE[:-2]])
def test_a_web_session_with_an_unknown_or_inactive_centre_is_refused_and_makes_nobody(
    client: TestClient, runtime: Runtime, network: Network, code: str
) -> None:
    # Given an inactive centre
    deactivate(runtime.engine, "hejiang")
    before = people_count(runtime)

    # When an identity is asked for with a code of no active centre
    response = client.post("/api/web/session", json={"centre": code})

    # Then the answer is a 400 saying so, with the centres to choose from, and nobody is made
    if len(code) > 64:
        assert response.status_code == 400
        assert "centre" in response.json()["error"]
    else:
        assert response.status_code == 400
        body = response.json()
        assert body["error"].startswith("没有找到代码为「")
        assert len(body["error"]) < 120
        assert body["centres"] == [
            {"code": "default", "name": "党群服务中心"},
            {"code": "jinjiang", "name": "锦江区党群服务中心"},
        ]
    assert people_count(runtime) == before


@pytest.mark.parametrize("centre", [5, ["chunxi"], {"code": "chunxi"}, True])
def test_a_web_session_with_a_centre_that_is_no_string_is_refused(
    client: TestClient, runtime: Runtime, network: Network, centre: Any
) -> None:
    before = people_count(runtime)

    response = client.post("/api/web/session", json={"centre": centre})

    assert response.status_code == 400
    assert "centre" in response.json()["error"]
    assert people_count(runtime) == before


def test_a_web_session_with_a_centre_works_on_a_single_centre_install(
    client: TestClient, runtime: Runtime
) -> None:
    made = client.post("/api/web/session", json={"centre": "default"})
    refused = client.post("/api/web/session", json={"centre": "chunxi"})

    assert made.status_code == 201
    assert made.json()["centre"]["name"] == "党群服务中心"
    assert refused.status_code == 400


def test_an_identity_that_opens_another_centres_link_moves_there_for_new_requests_only(
    desk: Desk, network: Network
) -> None:
    # Given a resident of 春熙路 with a request there
    person = resident(desk)
    person.send("切换 chunxi")
    person.send("小区门口的路灯坏了")

    # When their page is opened by 书院街's link (the page posts {"centre": CODE})
    [moved] = person.post({"id": "link-1", "centre": "shuyuan"})

    # Then they are told, and their next request goes there; the first stays
    assert moved.text == catalogue("centre.switched", centre="书院街社区党群服务中心")
    person.send("楼道里的垃圾没人清理")
    assert [r.centre_id for r in desk.requests()] == [network.chunxi, network.shuyuan]


def test_a_link_opened_by_a_kept_requests_identity_files_it_in_that_centre(
    desk: Desk, network: Network
) -> None:
    person = resident(desk)
    person.send("小区门口的路灯坏了")

    person.post({"id": "link-1", "centre": "hejiang"})

    assert [r.centre_id for r in desk.requests()] == [network.hejiang]


def test_a_link_of_no_centre_is_answered_with_the_choice_and_a_staff_link_changes_nothing(
    desk: Desk, network: Network
) -> None:
    # Given a resident and a worker
    person = resident(desk)
    worker = desk.worker()
    before = worker.person().centre_id

    # When each page is opened by a link of no centre, and by a real one
    [unknown] = person.post({"id": "link-1", "centre": "<b>nowhere</b>"})
    [staff] = worker.post({"id": "link-2", "centre": "chunxi"})

    # Then the resident is told with the choice; the worker keeps their role's centre
    assert unknown.text.startswith(catalogue("centre.intro_unknown", typed="<b>nowhere</b>"))
    assert person.person().centre_id is None
    assert staff.text == catalogue("centre.staff_fixed")
    assert worker.person().centre_id == before


def test_a_link_of_no_centre_on_a_single_centre_install_gets_a_clear_answer(desk: Desk) -> None:
    person = resident(desk)

    [answer] = person.post({"id": "link-1", "centre": "nowhere"})

    assert answer.text == catalogue("api.unknown_centre", code="nowhere")
    assert person.person().dialogue is None


@pytest.mark.parametrize("centre", ["", "   ", "x" * 65, 7, None])
def test_a_web_message_with_a_malformed_centre_is_refused(
    client: TestClient, runtime: Runtime, centre: Any
) -> None:
    token = client.post("/api/web/session", json={}).json()["token"]

    response = client.post(
        "/api/web/messages",
        json={"id": "c1", "centre": centre},
        headers={"Authorization": f"Bearer {token}"},
    )

    assert response.status_code == 400
    with Session(runtime.engine) as session:
        assert session.exec(select(func.count()).select_from(InboxMessage)).one() == 0


def test_the_choice_dialogue_is_stored_as_the_persons_dialogue(
    desk: Desk, network: Network
) -> None:
    person = resident(desk)
    person.send("小区门口的路灯坏了")

    dialogue = person.person().dialogue

    assert dialogue is not None
    assert dialogue["command"] == CHOOSE_DIALOGUE
    assert dialogue["text"] == "小区门口的路灯坏了"
    assert dialogue["options"] == [network.default, network.district]
