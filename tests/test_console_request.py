"""The console's request page API: a request in full for those who may see it, its actions as
the chat commands take them, refusals in chat's words, attachments only in scope."""

from __future__ import annotations

from typing import Any

import pytest
from sqlmodel import Session
from starlette.testclient import TestClient

from bot.handlers import common
from bot.handlers.commands import Command
from bot.runtime import Runtime
from storage.models import Attachment, Event, OutboxMessage, Person, Request
from tests.utils.centres import Tree, place
from tests.utils.console_request import (
    ORIGIN,
    Signed,
    act,
    as_user,
    attach,
    sign_in,
    state_of,
)
from tests.utils.world import Cast, World
from workflow import service
from workflow.machine import State


def _detail(client: TestClient, signed: Signed | None, number: str) -> Any:
    as_user(client, signed)
    return client.get(f"/api/console/requests/{number}")


def _walk_in(world: World, worker: Person, text: str = "楼道灯不亮") -> str:
    """A walk-in's request registered by `worker`, with the walk-in's name and phone."""
    walk_in = world.person(name="", channel="desk")
    request = world.do(
        service.submit,
        walk_in,
        text,
        contact_name="王小明",
        contact_phone="13812345678",
        registered_by=worker,
    )
    return str(request.number)


def _counts(world: World) -> tuple[int, int, int]:
    """Requests' ok events, outbox rows and requests: what a refusal leaves alone."""
    ok_events = sum(1 for event in world.events() if event.outcome == "ok")
    return ok_events, world.count(OutboxMessage), world.count(Request)


# --- reading ------------------------------------------------------------------------------


def test_a_worker_reads_a_new_request_with_its_deadlines_history_and_actions(
    client: TestClient, runtime: Runtime, cast: Cast
) -> None:
    # Given a resident's new request
    number = cast.submit("我家门口的路灯坏了，电话13900001111")
    worker = sign_in(runtime, cast.worker)

    # When a worker of the centre opens it
    response = _detail(client, worker, number)

    # Then it is all there, the requester unmasked (the worker holds it, as the cards show it)
    assert response.status_code == 200
    data = response.json()
    assert data["number"] == number
    assert (data["state"], data["state_label"]) == ("new", "待受理")
    assert data["text"] == "我家门口的路灯坏了，电话13900001111"
    assert data["category"] == "市政设施"
    assert data["requester"] == {"name": "张三", "phone": None, "masked": False}
    response_due = data["deadlines"]["response"]
    assert response_due["running"] is True and response_due["seconds_left"] != 0
    assert [event["action"] for event in data["events"]] == ["submit"]
    assert data["events"][0]["who"]["label"] == "张三 · 群众"
    assert data["events"][0]["from_label"] is None and data["events"][0]["to_label"] == "待受理"
    # and the actions of a new request for the committee, in SPEC order, with their choices
    actions = {item["action"]: item for item in data["actions"]}
    # (no 上报: the only centre has none above it)
    assert list(actions) == ["accept", "forward", "reject", "note"]
    assert [d["name"] for d in actions["forward"]["departments"]] == ["城管执法", "市场监管"]
    assert actions["reject"]["field"] == "text" and actions["reject"]["ask"] == "原因"
    assert actions["note"]["label"] == "内部备注"


def test_department_staff_are_offered_take_return_and_complete_on_a_forwarded_request(
    client: TestClient, runtime: Runtime, cast: Cast
) -> None:
    number = cast.bring(State.FORWARDED)

    data = _detail(client, sign_in(runtime, cast.staff), number).json()

    assert [item["action"] for item in data["actions"]] == ["take", "return", "complete"]
    assert data["department"] == "城管执法"


def test_nobody_who_only_oversees_is_offered_an_action(
    client: TestClient, runtime: Runtime, tree: Tree
) -> None:
    number = tree.submit()

    data = _detail(client, sign_in(runtime, tree.d_leader), number).json()

    assert data["actions"] == []


def test_no_login_is_answered_401_and_the_page_sends_to_the_login(
    client: TestClient, cast: Cast
) -> None:
    number = cast.submit()

    assert _detail(client, None, number).status_code == 401
    page = client.get(f"/console/requests/{number}", follow_redirects=False)
    assert page.status_code == 303
    assert page.headers["location"].startswith("/console/login?next=")


def test_the_page_is_served_to_a_signed_in_worker(
    client: TestClient, runtime: Runtime, cast: Cast
) -> None:
    number = cast.submit()
    as_user(client, sign_in(runtime, cast.worker))

    page = client.get(f"/console/requests/{number}")

    assert page.status_code == 200
    assert '<script src="/static/console/request.js" defer></script>' in page.text
    assert "<script>" not in page.text and "style=" not in page.text


@pytest.mark.parametrize("number", ["SQ-20990101-0001", "nonsense", "SQ-2026"])
def test_an_unknown_or_malformed_number_is_404(
    client: TestClient, runtime: Runtime, cast: Cast, number: str
) -> None:
    response = _detail(client, sign_in(runtime, cast.worker), number)

    assert response.status_code == 404
    assert response.json()["error"] == "unknown_request"
    assert "没有找到编号为" in response.json()["message"]


def test_a_worker_outside_the_centre_gets_404_for_reading_and_acting(
    client: TestClient, runtime: Runtime, tree: Tree
) -> None:
    # Given a request of C1
    number = tree.submit()
    before = _counts(tree.world)
    outsider = sign_in(runtime, tree.c2_worker)

    # When C2's worker reads or accepts it: the same answer as for a number nobody was given
    assert _detail(client, outsider, number).status_code == 404
    response = act(client, outsider, number, "accept")
    assert response.status_code == 404
    assert (
        response.json()["message"]
        == f"没有找到编号为「{number}」的诉求，请检查编号（格式如 SQ-20260101-0001）。"
    )
    missing = act(client, outsider, number, "forward", department="")
    assert missing.status_code == 404

    # Then nothing changed
    assert state_of(runtime, number) == "new"
    assert _counts(tree.world) == before


def test_department_staff_get_404_for_another_departments_request(
    client: TestClient, runtime: Runtime, cast: Cast
) -> None:
    # Given a request forwarded to 城管执法
    number = cast.bring(State.FORWARDED)
    before = _counts(cast.world)
    other = sign_in(runtime, cast.market_staff)

    # Then 市场监管's staff neither see it nor take it
    assert _detail(client, other, number).status_code == 404
    assert act(client, other, number, "take").status_code == 404
    assert act(client, other, number, "complete", text="已处理").status_code == 404
    assert state_of(runtime, number) == "forwarded"
    assert _counts(cast.world) == before


# --- masking ------------------------------------------------------------------------------


def test_the_requester_is_masked_for_those_who_only_oversee_the_request(
    client: TestClient, runtime: Runtime, tree: Tree
) -> None:
    # Given a walk-in's request at C1 with a name and a phone
    number = _walk_in(tree.world, tree.c1_worker, "楼道灯不亮，王小明的电话13812345678")
    admin = tree.world.person("admin", name="区管理员")
    place(tree.world.engine, admin.id or 0, tree.district)

    # When C1's worker, the district's leader and the district's admin read it
    holder = _detail(client, sign_in(runtime, tree.c1_worker2), number).json()
    leader = _detail(client, sign_in(runtime, tree.d_leader), number).json()
    admin_view = _detail(client, sign_in(runtime, admin), number).json()

    # Then the worker (whom the cards go to) reads them, those above read them masked, in
    # the fields, the text and the history alike
    assert holder["requester"] == {"name": "王小明", "phone": "13812345678", "masked": False}
    for masked in (leader, admin_view):
        assert masked["requester"] == {"name": "王*", "phone": "138****5678", "masked": True}
        assert masked["text"] == "楼道灯不亮，王*的电话138****5678"
        notes = " ".join(event["note"] or "" for event in masked["events"])
        assert "13812345678" not in notes and "王小明" not in notes
        assert masked["actions"] == []
    assert "13812345678" in " ".join(event["note"] or "" for event in holder["events"])


# --- acting -------------------------------------------------------------------------------


def _events(world: World, number: str) -> list[Event]:
    return [event for event in world.events(number) if event.outcome == "ok"]


def test_a_worker_accepts_completes_and_approves_from_the_page(
    client: TestClient, runtime: Runtime, cast: Cast
) -> None:
    number = cast.submit()
    worker = sign_in(runtime, cast.worker)

    accepted = act(client, worker, number, "accept")
    assert accepted.status_code == 200
    assert accepted.json() == {
        "number": number,
        "state": "handling",
        "state_label": "办理中（党委做单）",
        "message": f"【{number}】已受理（做单）。办理完成后请发送「办结 {number} 结果」。",
    }
    assert cast.world.request(number).handler_id == cast.worker.id

    completed = act(client, worker, number, "complete", text="已联系路灯所修复")
    assert completed.status_code == 200 and completed.json()["state"] == "review"
    approved = act(client, worker, number, "approve")
    assert approved.status_code == 200 and approved.json()["state"] == "replied"

    # The actions are the chat's: their events carry the actor, the result is the request's
    history = _events(cast.world, number)
    assert [event.action for event in history] == ["submit", "accept", "complete", "approve"]
    assert {event.actor_id for event in history[1:]} == {cast.worker.id}
    assert cast.world.request(number).result == "已联系路灯所修复"
    # and the requester is told in their chat; the worker's answers went to the page only,
    # while the card in the worker's chat is brought up to date
    keys = [(row.person_id, row.key) for row in cast.world.outbox()]
    assert (cast.requester.id, "requester.replied") in keys
    mine = [key for person_id, key in keys if person_id == cast.worker.id]
    assert not [key for key in mine if key.startswith("reply.")]
    assert "card.refresh" in mine


def test_forward_recall_and_forward_again_with_the_picker(
    client: TestClient, runtime: Runtime, cast: Cast
) -> None:
    number = cast.submit()
    worker = sign_in(runtime, cast.worker)

    forwarded = act(client, worker, number, "forward", department="城管执法")
    assert forwarded.status_code == 200 and forwarded.json()["state"] == "forwarded"
    assert "城管执法" in forwarded.json()["message"]
    assert act(client, worker, number, "recall").json()["state"] == "new"
    again = act(client, worker, number, "forward", department="市场监管")
    assert again.json()["state"] == "forwarded"
    assert cast.world.request(number).department_id == cast.market.id


def test_department_staff_take_return_and_complete(
    client: TestClient, runtime: Runtime, cast: Cast
) -> None:
    staff = sign_in(runtime, cast.staff)
    number = cast.bring(State.FORWARDED)
    assert act(client, staff, number, "take").json()["state"] == "dept_handling"
    assert act(client, staff, number, "return", text="不属于本部门").json()["state"] == "new"

    # 办结 on a forwarded request takes it first, as in chat
    other = cast.bring(State.FORWARDED)
    done = act(client, staff, other, "complete", text="已修复")
    assert done.status_code == 200 and done.json()["state"] == "review"
    assert [event.action for event in _events(cast.world, other)][-2:] == ["take", "complete"]


def test_reject_and_send_back_need_a_reason(
    client: TestClient, runtime: Runtime, cast: Cast
) -> None:
    worker = sign_in(runtime, cast.worker)
    number = cast.submit()

    missing = act(client, worker, number, "reject", text="  ")
    assert missing.status_code == 400
    assert missing.json() == {"error": "invalid_input", "message": "请填写原因。"}
    assert state_of(runtime, number) == "new"
    assert (
        act(client, worker, number, "reject", text="不属于受理范围").json()["state"] == "rejected"
    )

    review = cast.bring(State.REVIEW)
    sent_back = act(client, worker, review, "send_back", text="照片不清楚")
    assert sent_back.json()["state"] == "handling"


def test_refer_goes_up_and_assign_goes_down_the_tree(
    client: TestClient, runtime: Runtime, tree: Tree
) -> None:
    number = tree.submit()
    c1_worker = sign_in(runtime, tree.c1_worker)
    offered_up = [a["action"] for a in _detail(client, c1_worker, number).json()["actions"]]
    assert "refer" in offered_up
    referred = act(client, c1_worker, number, "refer", text="需区级协调")
    assert referred.status_code == 200 and referred.json()["state"] == "new"
    assert tree.held_by(number) == tree.district.id

    district = sign_in(runtime, tree.d_worker)
    offered = {a["action"]: a for a in _detail(client, district, number).json()["actions"]}
    assert [c["code"] for c in offered["assign"]["centres"]] == ["C1", "C2", "B"]
    unknown = act(client, district, number, "assign", centre="X9")
    assert unknown.status_code == 400 and "不是本中心的下级中心" in unknown.json()["message"]
    assigned = act(client, district, number, "assign", centre="C2")
    assert assigned.status_code == 200
    assert tree.held_by(number) == tree.c2.id


def test_an_internal_note_is_shown_to_staff_and_never_to_the_resident(
    client: TestClient, runtime: Runtime, cast: Cast
) -> None:
    # Given a worker's internal note on a request
    number = cast.submit()
    noted = act(client, sign_in(runtime, cast.worker), number, "note", text="电话联系过，周五上门")
    assert noted.status_code == 200
    assert noted.json()["state"] == "new"
    assert noted.json()["message"] == f"【{number}】已添加内部备注，仅工作人员可见。"

    # Then staff read it, marked internal
    seen = _detail(client, sign_in(runtime, cast.worker2), number).json()["events"]
    assert (seen[-1]["action"], seen[-1]["note"], seen[-1]["internal"]) == (
        "comment",
        "电话联系过，周五上门",
        True,
    )
    # and the resident's 查询 shows neither the step nor its note
    cast.world.do(common.status, cast.requester, Command("status", number, ""))
    [(_, key, params)] = [row for row in cast.world.queued if row[0] == cast.requester.id]
    assert key == "reply.status"
    assert "周五上门" not in str(params["history"])
    assert [line[1] for line in params["history"]] == ["submit"]
    # and nobody was sent a message about it
    assert [row.key for row in cast.world.outbox() if row.key == "reply.noted"] == []


def test_an_empty_note_is_refused(client: TestClient, runtime: Runtime, cast: Cast) -> None:
    number = cast.submit()

    refused = act(client, sign_in(runtime, cast.worker), number, "note", text="")

    assert refused.status_code == 400
    assert refused.json()["message"] == "内容不能为空，请输入文字。"


# --- refusals -----------------------------------------------------------------------------


def test_the_wrong_role_is_refused_403_in_chats_words_and_nothing_changes(
    client: TestClient, runtime: Runtime, cast: Cast
) -> None:
    number = cast.bring(State.FORWARDED)
    before = _counts(cast.world)

    # A worker tries the department's 接收
    refused = act(client, sign_in(runtime, cast.worker), number, "take")

    assert refused.status_code == 403
    assert refused.json()["error"] == "not_permitted"
    assert "您没有权限执行「接收」" in refused.json()["message"]
    assert state_of(runtime, number) == "forwarded"
    assert _counts(cast.world) == before
    # and the refusal is recorded, as chat records it
    assert cast.world.events(number)[-1].outcome == "refused"


def test_department_staff_cannot_accept_their_own_departments_request(
    client: TestClient, runtime: Runtime, cast: Cast
) -> None:
    number = cast.bring(State.FORWARDED)

    refused = act(client, sign_in(runtime, cast.staff), number, "accept")

    assert refused.status_code == 403
    assert state_of(runtime, number) == "forwarded"


def test_an_action_the_state_does_not_allow_is_409_with_the_state(
    client: TestClient, runtime: Runtime, cast: Cast
) -> None:
    number = cast.bring(State.HANDLING)
    before = _counts(cast.world)

    refused = act(client, sign_in(runtime, cast.worker), number, "accept")

    assert refused.status_code == 409
    assert refused.json() == {
        "error": "transition",
        "message": f"【{number}】诉求当前状态为「办理中（党委做单）」，不能受理。",
    }
    assert _counts(cast.world) == before


def test_a_leader_above_the_centre_is_refused_acting_on_what_they_oversee(
    client: TestClient, runtime: Runtime, tree: Tree
) -> None:
    number = tree.submit()

    refused = act(client, sign_in(runtime, tree.d_leader), number, "accept")

    assert refused.status_code == 403
    assert refused.json()["error"] == "not_yours"
    assert state_of(runtime, number) == "new"


def test_an_unknown_department_lists_the_choices(
    client: TestClient, runtime: Runtime, cast: Cast
) -> None:
    number = cast.submit()
    worker = sign_in(runtime, cast.worker)

    unknown = act(client, worker, number, "forward", department="不存在的部门")
    missing = act(client, worker, number, "forward")

    assert unknown.status_code == 400
    assert (
        unknown.json()["message"] == "没有名为「不存在的部门」的部门。可选部门：城管执法、市场监管"
    )
    assert missing.status_code == 400
    assert missing.json()["message"] == "请选择要转交的部门。"
    assert state_of(runtime, number) == "new"


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({"action": "fly"}, 400, "unknown_action"),
        ({"action": ["accept"]}, 400, "unknown_action"),
        ({}, 400, "unknown_action"),
        ({"action": "reject", "text": 42}, 400, "bad_field"),
        ({"action": "rate"}, 400, "unknown_action"),
        ([1, 2], 400, "bad_json"),
    ],
)
def test_malformed_bodies_are_refused_and_change_nothing(
    client: TestClient,
    runtime: Runtime,
    cast: Cast,
    body: Any,
    status: int,
    error: str,
) -> None:
    number = cast.submit()
    signed = sign_in(runtime, cast.worker)
    as_user(client, signed)
    before = _counts(cast.world)

    response = client.post(
        f"/api/console/requests/{number}/actions", json=body, headers=signed.headers()
    )

    assert (response.status_code, response.json()["error"]) == (status, error)
    assert response.json()["message"]
    assert _counts(cast.world) == before


def test_a_form_post_and_a_too_long_text_are_refused(
    client: TestClient, runtime: Runtime, cast: Cast
) -> None:
    number = cast.submit()
    signed = sign_in(runtime, cast.worker)
    as_user(client, signed)

    form = client.post(
        f"/api/console/requests/{number}/actions",
        content="action=accept",
        headers=signed.headers(**{"Content-Type": "application/x-www-form-urlencoded"}),
    )
    long = act(client, signed, number, "reject", text="长" * 5000)

    assert form.status_code == 415
    assert long.status_code == 400 and "内容过长" in long.json()["message"]
    assert state_of(runtime, number) == "new"


@pytest.mark.parametrize(
    "headers",
    [
        {},  # neither Origin nor a CSRF token
        {"Origin": ORIGIN},  # no CSRF token
        {"Origin": "https://evil.example", "X-CSRF-Token": "<the session's>"},
        {"Origin": ORIGIN, "X-CSRF-Token": "wrong"},
    ],
)
def test_cross_site_and_csrf_less_posts_are_refused(
    client: TestClient, runtime: Runtime, cast: Cast, headers: dict[str, str]
) -> None:
    number = cast.submit()
    signed = sign_in(runtime, cast.worker)
    as_user(client, signed)
    sent = {k: (signed.csrf if v == "<the session's>" else v) for k, v in headers.items()}

    response = client.post(
        f"/api/console/requests/{number}/actions", json={"action": "accept"}, headers=sent
    )

    assert response.status_code == 403
    assert response.json()["error"] == "csrf"
    assert state_of(runtime, number) == "new"


def test_a_requesters_web_token_opens_nothing(client: TestClient, cast: Cast) -> None:
    number = cast.submit()
    session = client.post("/api/web/session").json()
    client.cookies.clear()

    response = client.get(
        f"/api/console/requests/{number}",
        headers={"Authorization": f"Bearer {session['token']}"},
    )

    assert response.status_code == 401


# --- attachments --------------------------------------------------------------------------


def test_attachments_are_listed_and_served_only_in_scope(
    client: TestClient, runtime: Runtime, tree: Tree
) -> None:
    # Given a C1 request with a photo, a location and a voice message not fetched yet
    number = tree.submit()
    photo = attach(runtime, number, kind="photo", content=b"\x89PNG-bytes", mime_type="image/png")
    attach(runtime, number, kind="location", latitude=30.657, longitude=104.081, label="春熙路")
    attach(runtime, number, kind="voice", mime_type="audio/ogg")
    worker = sign_in(runtime, tree.c1_worker)

    # When C1's worker reads it
    items = _detail(client, worker, number).json()["attachments"]

    # Then each is described, with a URL once stored and a map link for the location
    assert [(i["kind"], i["media"], i["status"]) for i in items] == [
        ("photo", "image", "stored"),
        ("location", "location", "pending"),
        ("voice", "audio", "pending"),
    ]
    assert items[0]["url"] == f"/api/console/attachments/{photo}"
    assert (items[1]["latitude"], items[1]["longitude"]) == (30.657, 104.081)
    assert "mlat=30.657000&mlon=104.081000" in items[1]["map_url"]
    assert items[2]["url"] is None

    # and the file comes with its type, inline, not cached
    served = client.get(items[0]["url"])
    assert served.status_code == 200
    assert served.content == b"\x89PNG-bytes"
    assert served.headers["content-type"] == "image/png"
    assert served.headers["cache-control"] == "private, no-store"

    # but not for a worker of another centre, nor without a login, nor for unknown ids
    as_user(client, sign_in(runtime, tree.c2_worker))
    assert client.get(items[0]["url"]).status_code == 404
    assert client.get("/api/console/attachments/999999").status_code == 404
    as_user(client, None)
    assert client.get(items[0]["url"]).status_code == 401


def test_a_file_of_a_type_that_could_run_script_is_only_downloaded(
    client: TestClient, runtime: Runtime, cast: Cast
) -> None:
    number = cast.submit()
    html = attach(
        runtime,
        number,
        kind="document",
        content=b"<script>alert(1)</script>",
        mime_type="text/html",
        file_name="a.html",
    )
    svg = attach(runtime, number, kind="photo", content=b"<svg/>", mime_type="image/svg+xml")
    as_user(client, sign_in(runtime, cast.worker))

    for attachment_id in (html, svg):
        served = client.get(f"/api/console/attachments/{attachment_id}")
        assert served.headers["content-type"] == "application/octet-stream"
        assert served.headers["content-disposition"].startswith("attachment")


def test_a_stored_path_outside_the_media_directory_is_not_served(
    client: TestClient, runtime: Runtime, cast: Cast
) -> None:
    number = cast.submit()
    attachment_id = attach(runtime, number, kind="photo", mime_type="image/png")
    with Session(runtime.engine) as session:
        row = session.get(Attachment, attachment_id)
        assert row is not None
        row.stored_path = "../../../../etc/passwd"
        session.add(row)
        session.commit()
    as_user(client, sign_in(runtime, cast.worker))

    assert client.get(f"/api/console/attachments/{attachment_id}").status_code == 404
