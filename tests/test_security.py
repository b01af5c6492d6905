"""Security: who may do what (every role x command x state, through the web API), what a
requester can see, web sessions, flooding, the desk page and its headers, production secrets,
what reaches the logs. docs/reliability.md tells the attack each test stands for.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import logging
import os
import random
import re
import string
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import dramatiq
import pytest
import time_machine
from sqlalchemy import func, update
from sqlmodel import Session, select

from admin_scripts import cli
from admin_scripts.cli import Exit, main
from bot import dispatch, server, wake
from bot import runtime as bot_runtime
from bot.app import STATIC_DIR, create_app
from bot.channels import telegram, wechat
from bot.channels.telegram import TelegramSender
from bot.runtime import Runtime
from bot.texts import text as catalogue
from storage import queries
from storage.db import get_engine, session_scope
from storage.models import (
    AdminAudit,
    Attachment,
    Event,
    InboxMessage,
    InboxStatus,
    OutboxMessage,
    OutboxStatus,
    Person,
    Request,
    Role,
    WebSession,
    utcnow,
)
from storage.settings import (
    MIN_SECRET_BITS,
    REDACTED,
    Settings,
    entropy_bits,
    get_settings,
)
from tests.fakes.telegram import FakeTelegram
from tests.fakes.wechat import FakeWeChat
from tests.utils.app import TestClient
from tests.utils.harness import Desk
from tests.utils.server import serving, wait_until
from tests.utils.settings import load_all, make_settings, telegram_of, wechat_of
from tests.utils.telegram import SECRET, QuickLimiter, TelegramDesk
from workflow import service
from workflow.errors import TransitionNotAllowed
from workflow.machine import Action, State, transition
from workflow.permissions import may_view, permitted

#: Any CJK character: answers are sentences in Simplified Chinese.
CHINESE = re.compile(r"[\u4e00-\u9fff]")

#: The departments of every story here.
RIGHT, OTHER = "城管执法", "市场监管"


# --- helpers --------------------------------------------------------------------------------


def auth(token: str) -> dict[str, str]:
    """The Authorization header for a token."""
    return {"Authorization": f"Bearer {token}"}


def new_token(client: TestClient, name: str = "") -> str:
    """A new web chat identity's token, made through the API."""
    response = client.post("/api/web/session", json={"name": name} if name else {})
    assert response.status_code == 201, response.text
    token: str = response.json()["token"]
    return token


def say(client: TestClient, token: str, text: str) -> Any:
    """POSTs typed text as that identity (a fresh client message id each time)."""
    return client.post(
        "/api/web/messages", json={"id": uuid.uuid4().hex, "text": text}, headers=auth(token)
    )


def read(client: TestClient, token: str, after: int = 0) -> list[dict[str, Any]]:
    """The identity's messages after `after`, without waiting."""
    response = client.get(f"/api/web/messages?after={after}&wait=0", headers=auth(token))
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["messages"]
    return found


def person_of(runtime: Runtime, token: str) -> Person:
    """The person row behind a web token."""
    with Session(runtime.engine) as session:
        person = queries.person_for_web_token(session=session, token=token, now=utcnow())
        assert person is not None
        return person


def requests_of(runtime: Runtime, person_id: int) -> list[Request]:
    """The person's requests, oldest first."""
    with Session(runtime.engine) as session:
        return list(
            session.exec(
                select(Request).where(Request.requester_id == person_id).order_by(Request.id)
            ).all()
        )  # type: ignore[arg-type]


def inbox_count(runtime: Runtime, chat_id: str | None = None) -> int:
    """How many inbox rows are stored (of one chat)."""
    with Session(runtime.engine) as session:
        statement = select(func.count()).select_from(InboxMessage)
        if chat_id is not None:
            statement = statement.where(InboxMessage.chat_id == chat_id)
        return int(session.exec(statement).one())


def runtime_with(settings: Settings, **changes: Any) -> Runtime:
    """A runtime on the same database with some settings changed."""
    changed = settings.model_copy(update=changes)
    return Runtime(settings=changed, engine=get_engine(changed.database_url))


def with_departments(runtime: Runtime) -> Desk:
    """A harness with the two departments and a catch-all category routed to the committee."""
    desk = Desk(runtime)
    desk.add_department(RIGHT)
    desk.add_department(OTHER)
    desk.add_category("其他", [], fallback=True)
    return desk


def bind(
    client: TestClient, desk: Desk, token: str, role: str, department: str | None = None
) -> None:
    """Binds a web identity with an invitation code, typed through the API."""
    assert say(client, token, f"绑定 {desk.invite(role, department)}").status_code == 202
    desk.work()
    assert "绑定成功" in read(client, token)[-1]["text"]


# --- 1. the permission matrix ---------------------------------------------------------------


#: Chat command -> (the workflow action it attempts, the line typed; None: 查询, a view).
COMMANDS: dict[str, tuple[Action | None, str]] = {
    "受理": (Action.ACCEPT, "受理 {n}"),
    "转单": (Action.FORWARD, f"转单 {{n}} {RIGHT}"),
    "驳回": (Action.REJECT, "驳回 {n} 不属于受理范围"),
    "接收": (Action.TAKE, "接收 {n}"),
    "退单": (Action.RETURN, "退单 {n} 不属于本部门职责"),
    "撤回转单": (Action.RECALL, "撤回转单 {n}"),
    "办结": (Action.COMPLETE, "办结 {n} 已处理完毕"),
    "回单": (Action.APPROVE, "回单 {n}"),
    "返工": (Action.SEND_BACK, "返工 {n} 请补充现场照片"),
    "评价": (Action.RATE, "评价 {n} 已解决 满意"),
    "撤销": (Action.CANCEL, "撤销 {n}"),
    "补充": (Action.SUPPLEMENT, "补充 {n} 晚上七点以后最明显"),
    "查询": (None, "查询 {n}"),
}

#: The request text of the matrix (a 查询 that may see the request shows it).
MATRIX_TEXT = "幸福里小区门口的路灯坏了"


@dataclass
class Actor:
    """One identity of the matrix: its token, person, and role as permitted() sees it."""

    label: str
    token: str
    person_id: int
    chat_id: str
    role: str
    department_id: int | None = None
    owner: bool = False


@dataclass
class Cast:
    """Everyone of the matrix, on one runtime."""

    runtime: Runtime
    client: TestClient
    desk: Desk
    actors: list[Actor] = field(default_factory=list)
    departments: dict[str, int] = field(default_factory=dict)
    setups: Iterator[int] = field(default_factory=itertools.count)

    def actor(self, label: str) -> Actor:
        return next(actor for actor in self.actors if actor.label == label)

    def person(self, session: Session, label: str) -> Person:
        person = session.get(Person, self.actor(label).person_id)
        assert person is not None
        return person

    def bring_to(self, state: State) -> str:
        """A fresh request of the owner, moved to `state` with workflow.service."""
        with session_scope(self.runtime.engine) as session:
            tx = self.runtime.tx(session, f"setup:{next(self.setups)}")
            number = service.submit(tx, self.person(session, "owner"), MATRIX_TEXT).number
            worker = self.person(session, "worker")
            staff = self.person(session, "staff of the right department")
            if state is State.HANDLING:
                service.accept(tx, worker, number)
            if state in (
                State.FORWARDED,
                State.DEPT_HANDLING,
                State.REVIEW,
                State.REPLIED,
                State.CLOSED,
            ):
                service.forward(tx, worker, number, RIGHT)
            if state in (State.DEPT_HANDLING, State.REVIEW, State.REPLIED, State.CLOSED):
                service.take(tx, staff, number)
            if state in (State.REVIEW, State.REPLIED, State.CLOSED):
                service.complete(tx, staff, number, "已更换灯泡")
            if state in (State.REPLIED, State.CLOSED):
                service.approve(tx, worker, number)
            if state is State.CLOSED:
                service.rate(tx, self.person(session, "owner"), number, True, "满意")
            if state is State.REJECTED:
                service.reject(tx, worker, number, "不属于受理范围")
            if state is State.CANCELLED:
                service.cancel(tx, self.person(session, "owner"), number)
            # What the setup told people is not delivered: each command's answer is then the
            # newest message its identity reads.
            session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.idempotency_key.startswith("setup:"))  # type: ignore[attr-defined]
                .where(OutboxMessage.status == OutboxStatus.PENDING)  # type: ignore[arg-type]
                .values(status=OutboxStatus.SKIPPED)
            )
        assert self.desk.request(number).state == state
        return number

    def command(self, actor: Actor, line: str) -> None:
        """`actor` types `line` through the web API; its inbox is then handled and its own
        messages delivered, synchronously, with the functions the actors call."""
        response = say(self.client, actor.token, line)
        assert response.status_code == 202, response.text
        dispatch.process_chat(self.runtime, "web", actor.chat_id)
        with Session(self.runtime.engine) as session:
            pending = queries.next_outbox_for(session=session, person_id=actor.person_id)
        if pending is not None and pending.id is not None:
            dispatch.deliver(self.runtime, pending.id)


def cast_of(runtime: Runtime, client: TestClient) -> Cast:
    """The owner, another requester, a worker, a leader, staff of two departments and the
    committee group, each a web identity (staff bound by invitation codes typed in the chat)."""
    desk = with_departments(runtime)
    cast = Cast(runtime, client, desk)
    with Session(runtime.engine) as session:
        for name in (RIGHT, OTHER):
            found = queries.get_department_by_name(session=session, name=name)
            assert found is not None and found.id is not None
            cast.departments[name] = found.id
    plan: list[tuple[str, str, str | None]] = [
        ("owner", "requester", None),
        ("another requester", "requester", None),
        ("worker", "worker", None),
        ("leader", "leader", None),
        ("staff of the right department", "department", RIGHT),
        ("staff of another department", "department", OTHER),
        ("committee group", "group", None),
    ]
    for label, role, department in plan:
        token = new_token(client, label)
        if role in ("worker", "leader", "department"):
            bind(client, desk, token, role, department)
        person = person_of(runtime, token)
        if role == "group":
            # A group never binds (it is REDESK_TELEGRAM_COMMITTEE_CHAT): its role is set.
            with session_scope(runtime.engine) as session:
                session.execute(
                    update(Person)
                    .where(Person.id == person.id)  # type: ignore[arg-type]
                    .values(role=Role.GROUP)
                )
        assert person.id is not None
        cast.actors.append(
            Actor(
                label,
                token,
                person.id,
                person.external_id,
                role,
                cast.departments.get(department or ""),
                label == "owner",
            )
        )
    return cast


def expected_outcome(action: Action, request: Request, actor: Actor) -> State | None:
    """The state the command leads to by permitted() and the transition table; None: refused.

    Department staff pressing 办结 on a forwarded card take it first (接收, then 办结).
    """
    state = State(request.state)
    in_department = actor.role == "department" and actor.department_id == request.department_id
    steps = [action]
    if action is Action.COMPLETE and state is State.FORWARDED and in_department:
        steps = [Action.TAKE, Action.COMPLETE]
    for step in steps:
        # One centre holds everything here: every worker and leader is of it.
        if not permitted(
            step,
            state,
            role=actor.role,
            is_requester=actor.owner,
            in_department=in_department,
            in_centre=True,
            overseeing=actor.role == "leader",
        ):
            return None
        try:
            state = transition(state, step, with_department=request.department_id is not None)
        except TransitionNotAllowed:
            return None
    return state


def row_of(request: Request) -> dict[str, Any]:
    """Every column of a request row."""
    return request.model_dump()


def events_after(runtime: Runtime, number: str, after: int) -> list[Event]:
    """The request's events with an id above `after`."""
    with Session(runtime.engine) as session:
        request = queries.get_request_by_number(session=session, number=number)
        assert request is not None and request.id is not None
        return [
            event
            for event in queries.events_of_request(session=session, request_id=request.id)
            if (event.id or 0) > after
        ]


def last_event_id(runtime: Runtime) -> int:
    """The newest event's id."""
    with Session(runtime.engine) as session:
        return int(session.exec(select(func.max(Event.id))).one() or 0)


def test_every_role_command_and_state_is_allowed_exactly_as_the_permission_table_says(
    settings: Settings, stub_broker: dramatiq.Broker
) -> None:
    # Given every kind of identity on the web desk (no flood limit: this is about rights)
    runtime = runtime_with(settings, flood_per_minute=0)
    with TestClient(create_app(runtime)) as client:
        cast = cast_of(runtime, client)
        seen = {actor.label: len(read(client, actor.token)) for actor in cast.actors}
        mismatches: list[str] = []
        cases = 0

        for state in State:
            number = cast.bring_to(state)
            for actor, (word, (action, line)) in itertools.product(cast.actors, COMMANDS.items()):
                cases += 1
                before = cast.desk.request(number)
                first_new_event = last_event_id(runtime)

                # When the identity types the command through the web API
                cast.command(actor, line.format(n=number))

                # Then it acted exactly when permitted() and the transition table allow it
                after = cast.desk.request(number)
                replies = read(client, actor.token, seen[actor.label])
                seen[actor.label] += len(replies)
                answer = replies[-1]["text"] if replies else "(no answer)"
                case = f"{state.value:>13} | {actor.label:<30} | {word}"
                if action is None:
                    visible = may_view(
                        role=actor.role,
                        is_requester=actor.owner,
                        in_department=actor.role == "department"
                        and actor.department_id == before.department_id,
                        in_centre=True,
                        overseeing=actor.role == "leader",
                    )
                    shown = MATRIX_TEXT in answer and number in answer
                    unknown = answer == catalogue("error.unknown_request", number=number)
                    if (visible and not shown) or (not visible and not unknown):
                        mismatches.append(
                            f"{case}: expected {'shown' if visible else 'unknown'}"
                            f", answered {answer[:60]!r}"
                        )
                    if row_of(after) != row_of(before):
                        mismatches.append(f"{case}: a view changed the request")
                    continue
                target = expected_outcome(action, before, actor)
                acted = [
                    event
                    for event in events_after(runtime, number, first_new_event)
                    if event.outcome == "ok" and event.actor_id == actor.person_id
                ]
                changed = bool(acted) or row_of(after) != row_of(before)
                if target is None and changed:
                    mismatches.append(
                        f"{case}: expected refused, but it acted ({before.state} -> {after.state})"
                    )
                elif target is None and not CHINESE.search(answer):
                    mismatches.append(f"{case}: refused without an answer")
                elif target is not None and (not acted or after.state != target):
                    mismatches.append(
                        f"{case}: expected {before.state} -> {target.value}, got "
                        f"{after.state}; answered {answer[:60]!r}"
                    )
                if changed:
                    # The request moved on: the next command starts from a fresh one.
                    number = cast.bring_to(state)

    assert cases == len(State) * len(cast.actors) * len(COMMANDS)
    assert not mismatches, f"{len(mismatches)} of {cases} cases differ:\n" + "\n".join(mismatches)


# --- 2. what a requester can see; web sessions ---------------------------------------------


#: A well-formed number nobody was given.
UNKNOWN = "SQ-20000101-0001"


def only_answer(client: TestClient, desk: Desk, token: str, line: str) -> dict[str, Any]:
    """Types `line`, handles it, and returns the one answer."""
    before = len(read(client, token))
    assert say(client, token, line).status_code == 202
    desk.work()
    answers = read(client, token, before)
    assert len(answers) == 1, answers
    return answers[0]


def test_a_requester_asking_about_another_s_number_is_answered_exactly_like_an_unknown_one(
    client: TestClient, runtime: Runtime
) -> None:
    # Given B's request
    desk = with_departments(runtime)
    token_a, token_b = new_token(client, "甲"), new_token(client, "乙")
    assert say(client, token_b, "乙家楼下的噪音太大ZX81").status_code == 202
    desk.work()
    theirs = desk.requests()[-1]

    for line in ("查询 {n}", "/status {n}", "查询{n}"):
        # When A asks about B's number, and about a number nobody was given
        refused = only_answer(client, desk, token_a, line.format(n=theirs.number))
        unknown = only_answer(client, desk, token_a, line.format(n=UNKNOWN))

        # Then both answers are the same sentence, and say nothing of the request
        assert refused["text"].replace(theirs.number, UNKNOWN) == unknown["text"], line
        assert refused["buttons"] == unknown["buttons"] == []
        assert "没有找到" in refused["text"] and "ZX81" not in refused["text"]

    # And B's request is as it was
    assert row_of(desk.request(theirs.number)) == row_of(theirs)


def test_a_requester_acting_on_another_s_number_learns_nothing_of_the_request(
    client: TestClient, runtime: Runtime
) -> None:
    # Given B's request, already forwarded to a department
    desk = with_departments(runtime)
    token_a, token_b = new_token(client, "甲"), new_token(client, "乙")
    assert say(client, token_b, "乙家楼下的噪音太大ZX81").status_code == 202
    desk.work()
    number = desk.requests()[-1].number
    with session_scope(runtime.engine) as session:
        worker = Person(channel="web", external_id="matrix-worker", role=Role.WORKER)
        session.add(worker)
        session.flush()
        service.forward(runtime.tx(session, "setup:forward"), worker, number, RIGHT)
    theirs = desk.request(number)

    unknown_number = "SQ-20000101-0001"
    for line in (f"撤销 {number}", f"补充 {number} 我也听到了", f"评价 {number} 已解决 满意"):
        # When A tries to act on it, and on a number nobody was given
        answer = only_answer(client, desk, token_a, line)
        unknown = only_answer(client, desk, token_a, line.replace(number, unknown_number))

        # Then A is answered exactly as for the unknown number: A learns neither its text,
        # nor its state, nor its department, nor even that it exists
        assert answer["text"] == unknown["text"].replace(unknown_number, number), answer
        assert answer.get("buttons") == unknown.get("buttons")
        for secret in ("ZX81", "噪音", RIGHT, "已转单", "转单"):
            assert secret not in answer["text"], (line, answer)

    # And B's request is as it was; each attempt is on record as refused
    assert row_of(desk.request(number)) == row_of(theirs)
    refused = [e.action for e in desk.events(number) if e.outcome == "refused"]
    assert refused == ["cancel", "supplement", "rate"]


def test_web_tokens_are_random_distinct_and_stored_only_as_digests(
    client: TestClient, runtime: Runtime
) -> None:
    # When 100 web identities are made
    tokens = [new_token(client) for _ in range(100)]

    # Then every token is different and carries at least 128 random bits (urlsafe base64)
    assert len(set(tokens)) == 100
    for token in tokens:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        assert len(raw) * 8 >= 128, token
    # (no two share even a 32-bit prefix: they are not a counter or a timestamp)
    assert len({token[:6] for token in tokens}) == 100

    # And the database keeps only their SHA-256 digests, nowhere the token itself
    with Session(runtime.engine) as session:
        rows = session.exec(select(WebSession)).all()
        people = session.exec(select(Person)).all()
        stored = " ".join(
            str(value) for row in [*rows, *people] for value in row.model_dump().values()
        )
    assert {row.token_hash for row in rows} == {
        hashlib.sha256(token.encode()).hexdigest() for token in tokens
    }
    assert not any(token in stored for token in tokens)


def test_a_web_token_expires_after_redesk_web_session_days(
    settings: Settings, stub_broker: dramatiq.Broker
) -> None:
    # Given REDESK_WEB_SESSION_DAYS=2 and a token made now
    runtime = runtime_with(settings, web_session_days=2)
    start = utcnow()
    with (
        time_machine.travel(start, tick=False) as traveller,
        TestClient(create_app(runtime)) as client,
    ):
        token = new_token(client)

        # When a day and 23 hours have passed, it still works
        traveller.shift(timedelta(days=1, hours=23))
        assert client.get("/api/web/messages?wait=0", headers=auth(token)).status_code == 200
        assert say(client, token, "帮助").status_code == 202

        # Then, two days and a minute after it was made, it is refused, and stores nothing
        traveller.shift(timedelta(hours=1, minutes=1))
        stored = inbox_count(runtime)
        assert client.get("/api/web/messages?wait=0", headers=auth(token)).status_code == 401
        refused = say(client, token, "帮助")
        assert refused.status_code == 401
        assert refused.json()["error"] == catalogue("api.unauthorized")
        assert inbox_count(runtime) == stored


def test_one_identity_s_token_reads_and_writes_only_as_that_identity(
    client: TestClient, runtime: Runtime
) -> None:
    # Given A and B, each with a request and its receipt
    desk = with_departments(runtime)
    token_a, token_b = new_token(client, "甲"), new_token(client, "乙")
    person_b = person_of(runtime, token_b)
    assert say(client, token_a, "甲：路灯坏了AAA1").status_code == 202
    assert say(client, token_b, "乙：井盖丢了BBB2").status_code == 202
    desk.work()
    number_b = requests_of(runtime, person_b.id or 0)[0].number

    # When A reads its messages, from the very start
    seen_a = read(client, token_a, after=-1)

    # Then it gets its own receipt only, nothing of B's
    assert len(seen_a) == 1
    assert all(number_b not in m["text"] and "BBB2" not in m["text"] for m in seen_a)

    # And a body that names B's chat is still A's message (identity comes from the token)
    before_b = inbox_count(runtime, person_b.external_id)
    response = client.post(
        "/api/web/messages",
        headers=auth(token_a),
        json={
            "id": "impostor",
            "text": f"撤销 {number_b}",
            "chat_id": person_b.external_id,
            "person_id": person_b.id,
            "token": token_b,
        },
    )
    assert response.status_code == 202
    desk.work()
    assert inbox_count(runtime, person_b.external_id) == before_b
    assert desk.request(number_b).state == State.NEW


# --- 3. flooding ----------------------------------------------------------------------------


def test_a_web_requester_flooding_is_slowed_down_and_nobody_else_is_affected(
    client: TestClient, runtime: Runtime, stub_broker: dramatiq.Broker
) -> None:
    # Given a requester, a neighbour and a worker; REDESK_FLOOD_PER_MINUTE at its default
    limit = runtime.settings.flood_per_minute
    assert limit == 20
    desk = with_departments(runtime)
    with time_machine.travel(utcnow(), tick=False) as traveller:
        flooder, neighbour = new_token(client, "刷屏者"), new_token(client, "邻居")
        worker = new_token(client, "王书记")
        bind(client, desk, worker, "worker")

        # When the requester sends 100 messages within the same minute (the neighbour writes
        # halfway through, the worker presses on)
        answers = []
        for index in range(100):
            answers.append(
                client.post(
                    "/api/web/messages",
                    headers=auth(flooder),
                    json={"id": f"flood-{index}", "text": f"第{index}件：{index}号楼的楼道灯坏了"},
                )
            )
            if index == 50:
                assert say(client, neighbour, "邻居：小区门口积水严重").status_code == 202
        staff_answers = [say(client, worker, "待办").status_code for _ in range(limit + 5)]

        # Then the first 20 are accepted and every later one is refused with 429, a
        # Retry-After within the minute, and a polite sentence in Simplified Chinese
        assert [a.status_code for a in answers] == [202] * limit + [429] * (100 - limit)
        slow_down = answers[-1].json()["error"]
        assert slow_down == catalogue("api.rate_limited", limit=limit)
        assert CHINESE.search(slow_down) and "频繁" in slow_down
        assert 1 <= int(answers[-1].headers["Retry-After"]) <= 60
        # (staff, bound by invitation, are not limited)
        assert staff_answers == [202] * (limit + 5)

        # And a client's retry of a message already accepted is still acknowledged, once
        retry = client.post(
            "/api/web/messages",
            headers=auth(flooder),
            json={"id": "flood-3", "text": "第3件：3号楼的楼道灯坏了"},
        )
        assert retry.status_code == 202

        # And what was accepted becomes requests: all 20, each once; the neighbour's too
        desk.work()
        flooder_person = person_of(runtime, flooder)
        made = [r.text for r in requests_of(runtime, flooder_person.id or 0)]
        assert made == [f"第{i}件：{i}号楼的楼道灯坏了" for i in range(limit)]
        assert inbox_count(runtime, flooder_person.external_id) == limit
        neighbours = requests_of(runtime, person_of(runtime, neighbour).id or 0)
        assert [r.text for r in neighbours] == ["邻居：小区门口积水严重"]
        assert len(read(client, flooder)) == limit

        # And a minute later the requester may write again
        traveller.shift(timedelta(seconds=61))
        assert say(client, flooder, "第100件：楼道灯还是不亮").status_code == 202


def test_a_telegram_requester_flooding_makes_no_more_requests_and_is_asked_once_to_slow_down(
    channels_on: Runtime, fake_telegram: FakeTelegram, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given REDESK_FLOOD_PER_MINUTE=20 in this process, a flooder and a neighbour on Telegram
    monkeypatch.setenv("REDESK_FLOOD_PER_MINUTE", "20")
    get_settings.cache_clear()
    try:
        runtime = channels_on
        tg = TelegramDesk(runtime, fake_telegram)
        with_departments(runtime)
        flooder, neighbour = fake_telegram.user(8001, "刷屏者"), fake_telegram.user(8002, "邻居")

        # When the flooder's 100 messages arrive within a minute, the neighbour's among them
        for index in range(100):
            tg.store(fake_telegram.text_update(flooder, f"第{index}件：{index}号楼的楼道灯坏了"))
            if index == 50:
                tg.store(fake_telegram.text_update(neighbour, "邻居：小区门口积水严重"))
        tg.work()

        # Then the first 20 became requests, in order; the rest none
        made = [r.text for r in tg.requests() if r.requester_id == tg.person(8001).id]
        assert made == [f"第{i}件：{i}号楼的楼道灯坏了" for i in range(20)]
        # And the flooder got 20 receipts and one polite request to slow down, nothing more
        texts = tg.texts(8001)
        assert len(texts) == 21
        assert texts[-1] == catalogue("error.flooded", limit=20)
        assert all("已受理登记" in text for text in texts[:20])
        # And every message is kept (handled, not dropped), the neighbour was answered
        assert all(row.status == InboxStatus.DONE for row in tg.inbox())
        assert len(tg.inbox()) == 101
        assert [r.text for r in tg.requests() if r.requester_id == tg.person(8002).id] == [
            "邻居：小区门口积水严重"
        ]
        assert "已受理登记" in tg.texts(8002)[-1]

        # And commands are still answered during the flood
        tg.say(flooder, "查询")
        assert "您最近的诉求" in tg.texts(8001)[-1]

        # And once the minute has passed, a message makes a request again
        with session_scope(runtime.engine) as session:
            session.execute(
                update(InboxMessage).values(received_at=utcnow() - timedelta(minutes=2))
            )
        tg.say(flooder, "楼道灯还是不亮")
        assert "已受理登记" in tg.texts(8001)[-1]
    finally:
        get_settings.cache_clear()


def people_count(runtime: Runtime) -> int:
    """How many people (chat identities) are stored."""
    with Session(runtime.engine) as session:
        return int(session.exec(select(func.count()).select_from(Person)).one())


def test_new_web_identities_are_limited_per_client_address_behind_a_trusted_proxy(
    settings: Settings, stub_broker: dramatiq.Broker
) -> None:
    # Given three new identities a minute per address, and the proxy 10.0.0.5 trusted
    runtime = runtime_with(settings, web_sessions_per_minute=3, trusted_proxies="10.0.0.0/8")
    app = create_app(runtime)
    with (
        TestClient(app, client=("10.0.0.5", 40000)) as proxy,
        TestClient(app, client=("192.0.2.1", 40001)) as direct,
    ):

        def via_proxy(forwarded: str) -> Any:
            return proxy.post("/api/web/session", json={}, headers={"X-Forwarded-For": forwarded})

        # When one resident behind the proxy asks for five identities
        answers = [via_proxy("203.0.113.7") for _ in range(5)]

        # Then three are made and the rest refused with 429, Retry-After and a sentence
        assert [a.status_code for a in answers] == [201] * 3 + [429] * 2
        assert answers[-1].json()["error"] == catalogue("api.sessions_limited", limit=3)
        assert 1 <= int(answers[-1].headers["Retry-After"]) <= 60
        made = people_count(runtime)
        assert made == 3

        # And writing a made-up address in front of the real one changes nothing
        spoofed = via_proxy("198.51.100.1, 203.0.113.7")
        assert spoofed.status_code == 429
        # (the proxy appends the address it saw; the left part is the client's own claim)
        assert via_proxy("203.0.113.7, 10.0.0.9").status_code == 429

        # And another resident behind the same proxy is not affected
        assert via_proxy("198.51.100.9").status_code == 201

        # When a client that is no trusted proxy sends X-Forwarded-For of its own
        direct_answers = [
            direct.post("/api/web/session", json={}, headers={"X-Forwarded-For": f"198.51.100.{n}"})
            for n in range(10, 15)
        ]

        # Then the header is ignored: the peer's own address is limited
        assert [a.status_code for a in direct_answers] == [201] * 3 + [429] * 2
        assert people_count(runtime) == made + 1 + 3


def test_the_limit_of_new_identities_is_shared_by_every_process_through_redis(
    settings: Settings, redis_url: str, stub_broker: dramatiq.Broker
) -> None:
    # Given two copies of redesk run sharing one Redis, three new identities a minute
    runtime = runtime_with(settings, redis_url=redis_url, web_sessions_per_minute=3)
    first, second = create_app(runtime), create_app(runtime)
    with (
        TestClient(first, client=("203.0.113.8", 1)) as one,
        TestClient(second, client=("203.0.113.8", 2)) as other,
    ):
        # When one address asks each copy in turn
        answers = [
            (one if n % 2 else other).post("/api/web/session", json={}).status_code
            for n in range(6)
        ]

    # Then three are made in all, not three per copy
    assert answers == [201] * 3 + [429] * 3
    assert people_count(runtime) == 3


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_concurrent_posts_of_one_identity_get_exactly_the_flood_limit_accepted(
    settings: Settings, stub_broker: dramatiq.Broker
) -> None:
    # Given a real server on PostgreSQL, a limit of five messages a minute and one resident
    import httpx

    runtime = runtime_with(settings, flood_per_minute=5)
    app = create_app(runtime)
    with serving(app) as base_url, httpx.Client(base_url=base_url, timeout=60) as http:
        token = http.post("/api/web/session", json={}).json()["token"]
        start = threading.Barrier(30)

        def post(index: int) -> int:
            start.wait()
            return http.post(
                "/api/web/messages",
                headers=auth(token),
                json={"id": f"race-{index}", "text": f"第{index}件：楼道灯坏了"},
            ).status_code

        # When thirty POSTs of that identity arrive at the same moment
        with ThreadPoolExecutor(max_workers=30) as pool:
            codes = list(pool.map(post, range(30)))

    # Then exactly five are accepted and stored, the rest refused
    assert sorted(codes) == [202] * 5 + [429] * 25
    assert inbox_count(runtime, person_of(runtime, token).external_id) == 5


def test_supplements_edits_and_photos_on_telegram_count_toward_the_flood_limit(
    channels_on: Runtime, fake_telegram: FakeTelegram, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given REDESK_FLOOD_PER_MINUTE=20 and a resident on Telegram with one request
    monkeypatch.setenv("REDESK_FLOOD_PER_MINUTE", "20")
    get_settings.cache_clear()
    try:
        runtime = channels_on
        tg = TelegramDesk(runtime, fake_telegram)
        with_departments(runtime)
        flooder = fake_telegram.user(8101, "刷屏者")
        first = fake_telegram.text_update(flooder, "3号楼楼道灯坏了，晚上很黑")
        tg.feed(first)
        number = tg.requests()[0].number

        # When 40 补充, 30 photos and 5 edits of the first message arrive within the minute
        for index in range(40):
            tg.store(fake_telegram.text_update(flooder, f"补充 {number} 第{index}条补充"))
        for _ in range(30):
            tg.store(fake_telegram.photo_update(flooder))
        for index in range(5):
            tg.store(fake_telegram.edited_text_update(first, f"3号楼楼道灯坏了 第{index}次修改"))
        tg.work()

        # Then only the first 19 supplements (20 messages with the request) were taken
        with Session(runtime.engine) as session:
            notes = [
                e.note
                for e in session.exec(
                    select(Event)
                    .where(Event.action == "supplement", Event.outcome == "ok")
                    .order_by(Event.id)
                )
            ]  # type: ignore[arg-type]
            attachments = session.exec(select(func.count()).select_from(Attachment)).one()
        assert notes == [f"第{index}条补充" for index in range(19)]
        # And no photo or edit made anything
        assert attachments == 0
        # And the resident heard one receipt per supplement and one request to slow down
        texts = tg.texts(8101)
        assert texts[1:] == [catalogue("reply.supplemented", number=number)] * 19 + [
            catalogue("error.flooded", limit=20)
        ]
        # And every message was kept and handled
        assert len(tg.inbox()) == 76
        assert all(row.status == InboxStatus.DONE for row in tg.inbox())

        # And 查询 is still answered during the flood
        tg.say(flooder, "查询")
        assert number in tg.texts(8101)[-1]
    finally:
        get_settings.cache_clear()


def test_supplements_and_pictures_on_wechat_count_toward_the_flood_limit(
    channels_on: Runtime,
    fake_wechat: FakeWeChat,
    stub_broker: dramatiq.Broker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given REDESK_FLOOD_PER_MINUTE=5 and a resident on WeChat (safe mode) with one request
    monkeypatch.setenv("REDESK_FLOOD_PER_MINUTE", "5")
    get_settings.cache_clear()
    try:
        runtime = channels_on
        desk = with_departments(runtime)
        openid = "o_flooding_resident"
        with TestClient(create_app(runtime)) as client:

            def post(callback: Any) -> None:
                answer = client.post(
                    "/wechat",
                    params=callback.params,
                    content=callback.body,
                    headers={"Content-Type": "text/xml"},
                )
                assert answer.text == "success"

            post(fake_wechat.text(openid, "和平路口井盖丢失，晚上很危险"))
            desk.work()
            number = desk.requests()[-1].number

            # When ten 补充 and five pictures arrive within the minute
            for index in range(10):
                post(fake_wechat.text(openid, f"补充 {number} 第{index}条补充"))
            for _ in range(5):
                post(fake_wechat.image(openid))
            desk.work()

        # Then only the first four supplements (five messages with the request) were taken
        with Session(runtime.engine) as session:
            notes = [
                e.note
                for e in session.exec(
                    select(Event)
                    .where(Event.action == "supplement", Event.outcome == "ok")
                    .order_by(Event.id)
                )
            ]  # type: ignore[arg-type]
            attachments = session.exec(select(func.count()).select_from(Attachment)).one()
        assert notes == [f"第{index}条补充" for index in range(4)]
        assert attachments == 0
        # And the resident heard four receipts and one request to slow down, nothing more
        assert fake_wechat.texts(openid)[1:] == [
            catalogue("reply.supplemented", number=number)
        ] * 4 + [catalogue("error.flooded", limit=5)]
    finally:
        get_settings.cache_clear()


# --- 3b. long polls --------------------------------------------------------------------------


def test_long_polls_are_capped_per_identity_and_in_all(
    settings: Settings, stub_broker: dramatiq.Broker
) -> None:
    # Given a real server allowing two open polls per identity and three in all
    import httpx

    runtime = runtime_with(settings, web_polls_per_identity=2, web_polls_total=3)
    app = create_app(runtime)
    # (the pool outlives the server: the held polls end when it stops)
    with (
        ThreadPoolExecutor(max_workers=4) as pool,
        serving(app) as base_url,
        httpx.Client(base_url=base_url, timeout=60) as http,
    ):
        tokens = [http.post("/api/web/session", json={}).json()["token"] for _ in range(3)]
        people = [person_of(runtime, token).id or 0 for token in tokens]

        def poll(token: str) -> httpx.Response:
            # A connection of its own, as each browser tab has.
            return httpx.get(
                f"{base_url}/api/web/messages?after=0&wait=30", headers=auth(token), timeout=60
            )

        # When one identity holds two polls
        held = [pool.submit(poll, tokens[0]) for _ in range(2)]
        wait_until(lambda: wake.HUB.open_polls(people[0]) == 2, "two polls open")

        # Then its third is refused at once with 429 and Retry-After
        third = poll(tokens[0])
        assert third.status_code == 429
        assert third.json()["error"] == catalogue("api.too_many_polls")
        assert int(third.headers["Retry-After"]) >= 1
        # And a short read (wait=0) is still answered
        assert http.get("/api/web/messages?wait=0", headers=auth(tokens[0])).status_code == 200

        # When another identity takes the third slot of the process
        held.append(pool.submit(poll, tokens[1]))
        wait_until(lambda: wake.HUB.open_polls() == 3, "three polls open")

        # Then a fourth poll, of a third identity, is refused too
        assert poll(tokens[2]).status_code == 429
        assert wake.HUB.open_polls() == 3

        # When the server stops, the held polls answer (empty) and free their slots
    assert [future.result().json() for future in held] == [{"messages": []}] * 3
    assert wake.HUB.open_polls() == 0


def test_a_waiting_long_poll_is_woken_by_the_delivery_of_a_message(
    settings: Settings, stub_broker: dramatiq.Broker
) -> None:
    # Given a real server whose polls never look at the database on their own in 30 s
    import httpx

    runtime = runtime_with(settings, web_poll_fallback=300.0)
    app = create_app(runtime)
    desk = with_departments(runtime)
    with (
        ThreadPoolExecutor(max_workers=1) as pool,
        serving(app) as base_url,
        httpx.Client(base_url=base_url, timeout=60) as http,
    ):
        token = http.post("/api/web/session", json={}).json()["token"]
        person_id = person_of(runtime, token).id or 0
        waiting = pool.submit(
            httpx.get,
            f"{base_url}/api/web/messages?after=0&wait=30",
            headers=auth(token),
            timeout=60,
        )
        wait_until(lambda: wake.HUB.open_polls(person_id) == 1, "the poll is open")

        # When the resident writes and the worker delivers the receipt
        assert (
            http.post(
                "/api/web/messages",
                headers=auth(token),
                json={"id": "w1", "text": "3号楼楼道灯坏了，晚上很黑"},
            ).status_code
            == 202
        )
        desk.work()

        # Then the waiting poll answers with it
        answer = waiting.result()
    assert answer.status_code == 200
    messages = answer.json()["messages"]
    assert len(messages) == 1 and "已受理登记" in messages[0]["text"]


# --- 4. the desk page: CSP, escaping, headers, cross-site posts -----------------------------


def csp_directives(header: str) -> dict[str, list[str]]:
    """A Content-Security-Policy header as directive -> sources."""
    directives: dict[str, list[str]] = {}
    for part in header.split(";"):
        words = part.split()
        if words:
            directives[words[0].lower()] = words[1:]
    return directives


def test_the_desk_page_forbids_inline_script_and_has_none(client: TestClient) -> None:
    response = client.get("/desk")

    # The policy: scripts only from the desk's own origin, no inline code, no eval, no frames
    policy = csp_directives(response.headers["content-security-policy"])
    scripts = policy.get("script-src", policy["default-src"])
    assert scripts == ["'self'"], scripts
    assert policy["default-src"] == ["'self'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["base-uri"] == ["'none'"]
    assert policy["form-action"] == ["'self'"]
    assert "'unsafe-inline'" not in policy.get("style-src", [])
    # And the page needs none: every script is a file, no event handler attribute
    html = response.text
    assert re.findall(r"<script\b[^>]*>", html) == ['<script src="/static/desk.js" defer>']
    assert all(
        not body.strip() for body in re.findall(r"<script\b[^>]*>(.*?)</script>", html, flags=re.S)
    )
    assert not re.search(r"\son[a-z]+\s*=", html, flags=re.I)
    assert "javascript:" not in html.lower()


def test_a_request_with_a_script_tag_is_data_in_the_api_and_text_on_the_page(
    client: TestClient, runtime: Runtime
) -> None:
    # Given a worker, and a resident whose request carries markup
    desk = with_departments(runtime)
    worker = new_token(client, "王书记")
    bind(client, desk, worker, "worker")
    resident = new_token(client, "某人")
    payload = '<script>alert(1)</script><img src=x onerror="alert(2)">路灯坏了'

    # When it is submitted and the worker gets the card
    assert say(client, resident, payload).status_code == 202
    desk.work()
    raw = client.get("/api/web/messages?after=1&wait=0", headers=auth(worker))

    # Then the API returns it as JSON data, unchanged and unescaped (escaping is the page's
    # business, and the page never parses it as HTML)
    assert raw.headers["content-type"].startswith("application/json")
    assert raw.headers["x-content-type-options"] == "nosniff"
    card = raw.json()["messages"][-1]["text"]
    assert payload in card
    assert desk.requests()[-1].text == payload

    # And desk.js puts every message, button label and notice into the page as text
    script = (STATIC_DIR / "desk.js").read_text(encoding="utf-8")
    for sink in (
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "DOMParser",
        "createContextualFragment",
        "eval(",
        "new Function",
        'setAttribute("on',
        "srcdoc",
    ):
        assert sink not in script, sink
    assert "if (text !== undefined && text !== null) node.textContent = text;" in script
    assert 'make("div", "bubble", entry.text)' in script  # bot and user messages
    assert 'make("button", "btn btn-action", b.label)' in script  # buttons
    assert 'make("span", null, entry.text)' in script  # notices (server error sentences)


#: Every kind of endpoint, and an answer of each kind (method, path, extra request arguments).
ENDPOINTS: list[tuple[str, str, dict[str, Any]]] = [
    ("GET", "/", {}),
    ("GET", "/desk", {}),
    ("GET", "/static/desk.js", {}),
    ("GET", "/static/desk.css", {}),
    ("POST", "/api/web/session", {"json": {}}),
    ("POST", "/api/web/session", {"data": {"name": "x"}}),
    ("GET", "/api/web/messages?wait=0", {"token": True}),
    ("GET", "/api/web/messages", {}),
    ("POST", "/api/web/messages", {"token": True, "json": {"text": "帮助"}}),
    ("POST", "/api/web/messages", {"token": True, "json": {"text": 5}}),
    ("POST", "/api/web/messages", {"json": {"text": "帮助"}}),
    ("DELETE", "/api/web/messages", {}),
    ("POST", "/telegram/webhook", {"json": {}}),
    ("GET", "/wechat", {}),
    ("POST", "/wechat", {"content": b"<xml/>"}),
    ("GET", "/healthz", {}),
    ("GET", "/metrics", {}),
    ("GET", "/no-such-page", {}),
]


def test_every_answer_carries_the_security_headers(client: TestClient) -> None:
    token = new_token(client)
    statuses = set()
    for method, path, options in ENDPOINTS:
        options = dict(options)
        headers = auth(token) if options.pop("token", False) else {}
        response = client.request(method, path, headers=headers, follow_redirects=False, **options)
        statuses.add(response.status_code)
        where = f"{method} {path} ({response.status_code})"
        assert "default-src 'self'" in response.headers.get("content-security-policy", ""), where
        assert response.headers.get("x-content-type-options") == "nosniff", where
        assert response.headers.get("x-frame-options") == "DENY", where
        assert response.headers.get("referrer-policy") == "no-referrer", where
        assert "set-cookie" not in response.headers, where
        assert "access-control-allow-origin" not in response.headers, where
    # (answers of every kind were seen: ok, redirect, client errors)
    # (a channel that is off serves no routes: its webhook answers 404, not 403)
    assert {200, 201, 202, 307, 400, 401, 404, 405, 415} <= statuses


def test_even_the_answer_to_an_unexpected_error_carries_the_security_headers(
    stub_broker: dramatiq.Broker,
) -> None:
    # Given an app whose database does not answer (/metrics then fails unexpectedly)
    url = "postgresql+psycopg://postgres@127.0.0.1:1/none"
    settings = Settings(database_url=url, redis_url=None, _env_file=None)  # type: ignore[call-arg]
    app = create_app(Runtime(settings=settings, engine=get_engine(url)))

    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/metrics")

    # Then Starlette's own 500 (answered outside the routes) has them too
    assert response.status_code == 500
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert "default-src 'self'" in response.headers["content-security-policy"]


def test_a_cross_site_form_post_is_refused(client: TestClient, runtime: Runtime) -> None:
    # Given a resident with a token the desk keeps in its own tab (never in a cookie)
    token = new_token(client, "张阿姨")
    evil = {"Origin": "https://evil.example", "Referer": "https://evil.example/page"}
    with Session(runtime.engine) as session:
        identities = len(session.exec(select(WebSession)).all())

    # When another site's page posts a form to the API (a browser sends no token with it)
    form = client.post(
        "/api/web/messages", data={"id": "x", "text": "撤销 SQ-20260101-0001"}, headers=evil
    )
    plain = client.post(
        "/api/web/messages",
        content=b'{"id": "y", "text": "hi"}',
        headers={**evil, "Content-Type": "text/plain"},
    )
    identity = client.post(
        "/api/web/session", content=b'{"name": "x"}', headers={**evil, "Content-Type": "text/plain"}
    )
    # (and even with the token, a form-encoded body is not the desk's JSON)
    with_token = client.post(
        "/api/web/messages", data={"text": "hi"}, headers={**evil, **auth(token)}
    )
    # (a preflight for a JSON post with the token is not answered with CORS permission)
    preflight = client.options(
        "/api/web/messages",
        headers={
            **evil,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )

    # Then all are refused, and nothing is stored or created
    assert form.status_code == 401 and plain.status_code == 401
    assert identity.status_code == 415 and with_token.status_code == 415
    assert CHINESE.search(identity.json()["error"])
    assert preflight.status_code >= 400
    assert "access-control-allow-origin" not in preflight.headers
    assert inbox_count(runtime) == 0
    with Session(runtime.engine) as session:
        assert len(session.exec(select(WebSession)).all()) == identities


# --- 5. production refuses placeholder secrets ----------------------------------------------


#: A production configuration with real-looking secrets (Telegram webhook, WeChat safe mode).
GOOD_PRODUCTION: dict[str, str] = {
    "REDESK_ENV": "production",
    "REDESK_PUBLIC_URL": "https://desk.example.org",
    "REDESK_TELEGRAM_TOKEN": "7212345678:AAF3kq9Zp0wXv2LmN8rT5yB1cD4eG7hJ6sU",
    "REDESK_TELEGRAM_WEBHOOK_SECRET": "Xq7-mB2_vR9kLp4Wz8Nc3Ht6Yj1Fs5Dg",
    "REDESK_WECHAT_APP_ID": "wx1a2b3c4d5e6f7a8b",
    "REDESK_WECHAT_APP_SECRET": "9f86d081884c7d659a2feaa0c55ad015",
    "REDESK_WECHAT_TOKEN": "Kf83jsQ0wPz71LmX",
    "REDESK_WECHAT_AES_KEY": "Zk3Qw9Lm2Xp8Rt5Yv1Bn7Cd4Fg6Hj0Ks3Mq9Wx2Ez5U",
}


@pytest.fixture
def production_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sqlite_template: Path
) -> Iterator[pytest.MonkeyPatch]:
    """A clean environment (no REDESK_* but a fresh SQLite file) run from an empty directory."""
    for name in list(os.environ):
        if name.startswith("REDESK_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REDESK_DATABASE_URL", f"sqlite:///{tmp_path / 'redesk.db'}")
    bot_runtime.reset()
    yield monkeypatch
    bot_runtime.reset()


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("REDESK_TELEGRAM_WEBHOOK_SECRET", "changeme"),
        ("REDESK_TELEGRAM_WEBHOOK_SECRET", "CHANGE_ME_PLEASE"),
        ("REDESK_TELEGRAM_WEBHOOK_SECRET", "s3cr3t-42"),
        ("REDESK_TELEGRAM_WEBHOOK_SECRET", ""),
        ("REDESK_TELEGRAM_TOKEN", "123456:ABC-DEF1234ghIkl-zyx57W2v1u123ew11"),
        ("REDESK_WECHAT_TOKEN", "changeme"),
        ("REDESK_WECHAT_TOKEN", "weixin"),
        ("REDESK_WECHAT_APP_SECRET", "your_app_secret"),
        ("REDESK_WECHAT_AES_KEY", "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"),
        ("REDESK_WECHAT_AES_KEY", "a" * 43),
        ("REDESK_DATABASE_URL", "postgresql+psycopg://redesk:secret@db.internal/redesk"),
        ("REDESK_METRICS_TOKEN", "changeme"),
        ("REDESK_METRICS_TOKEN", "prom-2026-x"),
        ("REDESK_TELEGRAM_WEBHOOK_SECRET", "1111111111111112"),
        ("REDESK_TELEGRAM_WEBHOOK_SECRET", "abcdefghijklmnop"),
        ("REDESK_WECHAT_TOKEN", "passwordpassword"),
        ("REDESK_WECHAT_TOKEN", "9876543210zyxwvu"),
        ("REDESK_WECHAT_APP_SECRET", "0123456789abcdef0123456789abcdef"),
        ("REDESK_WECHAT_AES_KEY", "abc123abc123abc123abc123abc123abc123abc123a"),
        ("REDESK_TELEGRAM_TOKEN", "7212345678:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB"),
        ("REDESK_DATABASE_URL", "postgresql+psycopg://redesk:postgres12345678@db/redesk"),
    ],
    ids=[
        "webhook-changeme",
        "webhook-change-me",
        "webhook-short",
        "webhook-missing",
        "telegram-sample-token",
        "wechat-token-changeme",
        "wechat-token-short",
        "wechat-appsecret-placeholder",
        "wechat-aes-sample",
        "wechat-aes-one-character",
        "database-password-secret",
        "metrics-token-placeholder",
        "metrics-token-short",
        "webhook-repeated-digit",
        "webhook-alphabet-run",
        "wechat-token-repeated-word",
        "wechat-token-descending-runs",
        "wechat-appsecret-runs",
        "wechat-aes-repeated-piece",
        "telegram-token-repeated-letter",
        "database-password-run",
    ],
)
def test_production_refuses_to_start_with_a_placeholder_or_missing_secret(
    production_env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    setting: str,
    value: str,
) -> None:
    # Given a production configuration with one secret that is a placeholder (or missing)
    for name, good in {**GOOD_PRODUCTION, setting: value}.items():
        production_env.setenv(name, good)

    def started(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("`redesk run` went on past its configuration checks")

    production_env.setattr(cli, "_prepare_database", started)

    # When `redesk run` starts
    code = main(["run"])

    # Then it stops at once with the configuration exit code and one line naming the setting
    assert code == Exit.CONFIG == 3
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert setting in lines[0]
    assert value not in lines[0] or not value, "the error must not echo the secret"


def test_production_refuses_to_start_wechat_in_plain_mode(
    production_env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given a production configuration with WeChat on but no EncodingAESKey (plain mode)
    for name, value in GOOD_PRODUCTION.items():
        production_env.setenv(name, value)
    production_env.delenv("REDESK_WECHAT_AES_KEY")

    def started(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("`redesk run` went on past its configuration checks")

    production_env.setattr(cli, "_prepare_database", started)

    # When `redesk run` starts
    code = main(["run"])

    # Then it stops with one line asking for safe mode
    assert code == Exit.CONFIG
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert "REDESK_WECHAT_AES_KEY is required for WeChat in production" in lines[0]

    # and development still runs plain mode (a test account, a local tunnel)
    production_env.setenv("REDESK_ENV", "development")
    assert wechat_of(load_all()).aes_key is None


def _random_of(alphabet: str, length: int, source: random.Random) -> str:
    return "".join(source.choice(alphabet) for _ in range(length))


def test_production_accepts_random_secrets_in_every_platform_s_format() -> None:
    # Given many random values of each platform's format (seeded: the same values each run)
    source = random.Random(20261202)
    letters = string.ascii_letters + string.digits
    formats = {
        "REDESK_TELEGRAM_TOKEN": lambda: (
            f"{source.randint(10**9, 8 * 10**9)}:AA" + _random_of(letters + "_-", 33, source)
        ),
        "REDESK_TELEGRAM_WEBHOOK_SECRET": lambda: _random_of(letters + "_-", 32, source),
        "REDESK_WECHAT_APP_SECRET": lambda: _random_of("0123456789abcdef", 32, source),
        "REDESK_WECHAT_TOKEN": lambda: _random_of(letters, 16, source),
        "REDESK_WECHAT_AES_KEY": lambda: _random_of(letters, 43, source),
    }
    for name, make in formats.items():
        for _ in range(300):
            value = make()
            # When production settings are made with it
            values = {
                key.removeprefix("REDESK_").lower(): good for key, good in GOOD_PRODUCTION.items()
            }
            values[name.removeprefix("REDESK_").lower()] = value
            # Then they are accepted
            settings = make_settings(_env_file=None, **values)
            telegram_of(settings).check_production()
            wechat_of(settings).check_production()
            assert settings.env == "production", (name, value)


def test_the_entropy_estimate_counts_what_cannot_be_guessed() -> None:
    # Runs, repeats and repeated pieces count once; random characters count in full
    assert entropy_bits("1111111111111112") < 16
    assert entropy_bits("abcdefghijklmnop") < 16
    assert entropy_bits("abc123abc123abc123") < MIN_SECRET_BITS
    assert entropy_bits("Kf83jsQ0wPz71LmX") > 90
    assert entropy_bits("") == 0


def test_production_accepts_real_secrets_and_development_accepts_placeholders(
    production_env: pytest.MonkeyPatch,
) -> None:
    for name, value in GOOD_PRODUCTION.items():
        production_env.setenv(name, value)
    assert load_all().env == "production"

    production_env.setenv("REDESK_ENV", "development")
    production_env.setenv("REDESK_TELEGRAM_WEBHOOK_SECRET", "changeme")
    production_env.setenv("REDESK_WECHAT_TOKEN", "changeme")
    assert telegram_of(load_all()).webhook_secret == "changeme"


# --- 6. what reaches the logs ---------------------------------------------------------------


@pytest.fixture
def fake_telegram(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeTelegram]:
    """The fake Bot API, limits far looser than the QuickLimiter's spacing."""
    # RetryAfter warns without it, and filterwarnings=error would turn a 429 into that warning.
    monkeypatch.setenv("PTB_TIMEDELTA", "true")
    server = FakeTelegram(
        per_chat_interval=0.005, group_per_minute=6000, global_per_second=6000
    ).start()
    try:
        yield server
    finally:
        telegram.close_clients()
        dispatch._lazy_senders.clear()
        server.stop()
    assert server.errors == []


@pytest.fixture
def fake_wechat() -> Iterator[FakeWeChat]:
    """The fake WeChat API; callbacks in safe mode (signed and AES-encrypted)."""
    server = FakeWeChat(safe=True).start()
    try:
        yield server
    finally:
        wechat.close_clients()
        dispatch._lazy_senders.clear()
        server.stop()
    assert server.errors == []


@pytest.fixture
def channels_on(
    db_url: str,
    fake_telegram: FakeTelegram,
    fake_wechat: FakeWeChat,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Runtime:
    """A runtime with the web desk, Telegram (webhook secret) and WeChat (safe mode) on, its
    settings read from the environment the way every redesk process reads them."""
    for name in list(os.environ):
        if name.startswith("REDESK_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    environment = {
        **fake_wechat.settings_env(),
        "REDESK_DATABASE_URL": db_url,
        "REDESK_TELEGRAM_TOKEN": fake_telegram.token,
        "REDESK_TELEGRAM_API_URL": fake_telegram.url,
        "REDESK_TELEGRAM_WEBHOOK_SECRET": SECRET,
        "REDESK_MEDIA_DIR": str(tmp_path / "media"),
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    settings = load_all()
    runtime = Runtime(settings=settings, engine=get_engine(db_url))
    sender = TelegramSender(settings, limiter=QuickLimiter())
    monkeypatch.setitem(dispatch.SENDERS, telegram.CHANNEL, sender)
    return runtime


def test_no_token_secret_code_phone_number_or_request_text_reaches_the_logs(
    channels_on: Runtime,
    fake_telegram: FakeTelegram,
    fake_wechat: FakeWeChat,
    stub_broker: dramatiq.Broker,
    caplog: pytest.LogCaptureFixture,
) -> None:
    runtime, tg_fake, wx_fake = channels_on, fake_telegram, fake_wechat
    tg = TelegramDesk(runtime, tg_fake)
    desk = with_departments(runtime)
    phone, walk_in_phone = "13912345678", "13787654321"
    tg_text = f"幸福里7号楼电梯困人XQ7Z，我的电话{phone}"
    wx_text = "和平路口井盖丢失WJ3K，请尽快处理"
    walk_in_text = "来访群众反映楼道堆物KV9P"
    caplog.set_level(logging.DEBUG)

    with TestClient(create_app(runtime)) as client:
        # A worker binds on the web desk and another on Telegram, with invitation codes
        worker = new_token(client, "王书记")
        code = desk.invite("worker")
        assert say(client, worker, f"绑定 {code}").status_code == 202
        tg_code = desk.invite("worker")
        tg_worker = tg_fake.user(7002, "李干事")
        tg.say(tg_worker, f"绑定 {tg_code}")
        desk.work()

        # A resident writes on Telegram through the webhook (and someone tries without the
        # secret); the worker accepts it
        resident = tg_fake.user(7001, "居民甲")
        update_body = tg_fake.text_update(resident, tg_text)
        headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
        assert (
            client.post("/telegram/webhook", json=update_body, headers=headers).status_code == 200
        )
        assert (
            client.post(
                "/telegram/webhook",
                json=update_body,
                headers={"X-Telegram-Bot-Api-Secret-Token": "wrong"},
            ).status_code
            == 403
        )
        desk.work()
        number = desk.requests()[-1].number
        assert say(client, worker, f"受理 {number}").status_code == 202

        # A resident writes on WeChat (a signed, encrypted callback; a replay with a bad
        # signature is refused), and the server verification is done once
        callback = wx_fake.text("o_resident_log_test", wx_text)
        assert (
            client.post(
                "/wechat",
                params=callback.params,
                content=callback.body,
                headers={"Content-Type": "text/xml"},
            ).text
            == "success"
        )
        forged = {**callback.params, "msg_signature": "0" * 40, "signature": "0" * 40}
        assert (
            client.post(
                "/wechat",
                params=forged,
                content=callback.body,
                headers={"Content-Type": "text/xml"},
            ).status_code
            == 403
        )
        verify = wx_fake.verify_params(echostr="echo-1")
        assert client.get("/wechat", params=verify).text == "echo-1"

        # The worker registers a walk-in with a phone number at the reception desk
        assert (
            client.post(
                "/api/web/messages",
                headers=auth(worker),
                json={
                    "id": "walk-in",
                    "intake": {"name": "李四", "phone": walk_in_phone, "text": walk_in_text},
                },
            ).status_code
            == 202
        )
        desk.work()

    # Then everything happened ...
    assert tg_text in {r.text for r in desk.requests()}
    assert wx_text in {r.text for r in desk.requests()}
    assert any(number in text for text in tg.texts(7001))
    assert wx_fake.texts("o_resident_log_test")
    cards = "\n".join(tg.texts(7002))
    assert "XQ7Z" in cards and "WJ3K" in cards and walk_in_phone in cards
    # ... and nothing secret or personal is in any log record, of any logger, at any level
    logged = caplog.text + "\n".join(
        f"{record.getMessage()} {record.exc_text or ''} {record.stack_info or ''}"
        for record in caplog.records
    )
    assert caplog.records, "the story logged nothing at all: is capture working?"
    secrets_and_data = {
        "Telegram bot token": tg_fake.token,
        "Telegram bot token secret part": tg_fake.token.split(":", 1)[1],
        "webhook secret": SECRET,
        "WeChat token": wechat_of(runtime.settings).token,
        "WeChat AES key": wechat_of(runtime.settings).aes_key,
        "WeChat AppSecret": wechat_of(runtime.settings).app_secret,
        "web bearer token": worker,
        "invitation code": code,
        "Telegram invitation code": tg_code,
        "phone number": phone,
        "walk-in phone number": walk_in_phone,
        "Telegram request text": "XQ7Z",
        "WeChat request text": "WJ3K",
        "walk-in request text": "KV9P",
    }
    leaked = [name for name, value in secrets_and_data.items() if value and value in logged]
    assert not leaked, f"in the logs: {leaked}"
    # (the HTTP clients did log their calls: redacted, not silenced)
    assert f"/bot{REDACTED}/sendMessage" in logged


def test_the_metrics_token_is_masked_in_the_logs(
    production_env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Given REDESK_METRICS_TOKEN in the environment, read the way every redesk process reads it
    token = "Pm7-qW2zX9kLr4Tb8Nc3"
    production_env.setenv("REDESK_METRICS_TOKEN", token)
    load_all()
    caplog.set_level(logging.DEBUG)
    # (uvicorn sets its loggers' levels whenever a server is configured, also in a test)
    caplog.set_level(logging.DEBUG, logger="uvicorn.error")

    # When something logs a scrape's Authorization header
    logging.getLogger("uvicorn.error").info("GET /metrics Authorization: Bearer %s", token)

    # Then the record carries the mask, not the token
    assert token not in caplog.text
    assert f"Bearer {REDACTED}" in caplog.text


# --- 7. /metrics ----------------------------------------------------------------------------


#: A metrics token as an operator would set it (long, random).
METRICS_TOKEN = "Xr4-Lm9_Qz2Wp7Kd1Vb8Nt5Hs3"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Basic {METRICS_TOKEN}"},
        {"Authorization": f"Bearer {METRICS_TOKEN[:-1]}"},
        {"Authorization": f"Bearer {METRICS_TOKEN}x"},
    ],
    ids=["none", "wrong", "basic-scheme", "prefix", "longer"],
)
def test_with_a_metrics_token_metrics_without_that_bearer_token_are_refused(
    settings: Settings, stub_broker: dramatiq.Broker, headers: dict[str, str]
) -> None:
    # Given REDESK_METRICS_TOKEN and a request on the desk
    runtime = runtime_with(settings, metrics_token=METRICS_TOKEN)
    with_departments(runtime).identity("张三").send("路灯坏了")
    with TestClient(create_app(runtime)) as client:
        # When /metrics is scraped without the right token
        refused = client.get("/metrics", headers=headers)

        # Then it answers 401 with a sentence and a Bearer challenge, and no figure
        assert refused.status_code == 401
        assert refused.json()["error"] == catalogue("api.metrics_unauthorized")
        assert refused.headers["WWW-Authenticate"].startswith("Bearer")
        assert "redesk_" not in refused.text

        # And with the right token it answers the figures
        allowed = client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        assert allowed.status_code == 200
        assert 'redesk_requests{state="new"} 1.0' in allowed.text


def test_the_metrics_token_is_compared_in_constant_time(
    settings: Settings, stub_broker: dramatiq.Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given REDESK_METRICS_TOKEN, and hmac.compare_digest watched
    import hmac

    from bot import app as app_module

    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def watched(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(app_module.hmac, "compare_digest", watched)
    runtime = runtime_with(settings, metrics_token=METRICS_TOKEN)
    with TestClient(create_app(runtime)) as client:
        # When a wrong token is tried
        assert client.get("/metrics", headers={"Authorization": "Bearer guess"}).status_code == 401

    # Then the token was checked by the constant-time comparison
    assert compared == [(b"guess", METRICS_TOKEN.encode())]


@pytest.mark.parametrize(
    ("address", "status"),
    [
        ("203.0.113.7", 403),
        ("10.0.0.5", 403),
        ("127.0.0.1", 200),
        ("::1", 200),
    ],
)
def test_in_production_without_a_token_metrics_answer_only_this_machine(
    settings: Settings, stub_broker: dramatiq.Broker, address: str, status: int
) -> None:
    # Given production without REDESK_METRICS_TOKEN
    runtime = runtime_with(settings, env="production", metrics_token=None)

    # When a client at `address` scrapes /metrics
    with TestClient(create_app(runtime), client=(address, 40000)) as client:
        response = client.get("/metrics")

    # Then only a client on this machine gets the figures; others a sentence saying why
    assert response.status_code == status
    if status == 403:
        assert response.json()["error"] == catalogue("api.metrics_local_only")
        assert "redesk_" not in response.text
    else:
        assert "redesk_requests" in response.text


def test_in_development_without_a_token_metrics_stay_open(
    settings: Settings, stub_broker: dramatiq.Broker
) -> None:
    # Given development (the default) without REDESK_METRICS_TOKEN
    runtime = runtime_with(settings, env="development", metrics_token=None)

    # When a client elsewhere scrapes /metrics
    with TestClient(create_app(runtime), client=("203.0.113.7", 40000)) as client:
        response = client.get("/metrics")

    # Then it answers: the embedded default listens on 127.0.0.1 only
    assert response.status_code == 200 and "redesk_requests" in response.text


@pytest.mark.parametrize(
    ("metrics_token", "env", "line"),
    [
        (
            METRICS_TOKEN,
            "production",
            "metrics: http://127.0.0.1:8000/metrics (REDESK_METRICS_TOKEN as Bearer token)",
        ),
        (
            None,
            "production",
            "warning: metrics: http://127.0.0.1:8000/metrics has no "
            "REDESK_METRICS_TOKEN: it answers only clients on this machine; keep the reverse proxy "
            "from routing /metrics, or set the token",
        ),
        (
            None,
            "development",
            "metrics: http://127.0.0.1:8000/metrics (open to whoever reaches the port)",
        ),
    ],
    ids=["token", "production-without-token", "development"],
)
def test_the_run_banner_says_how_metrics_are_guarded(
    settings: Settings,
    capsys: pytest.CaptureFixture[str],
    metrics_token: str | None,
    env: str,
    line: str,
) -> None:
    # Given the settings of `redesk run`
    configured = settings.model_copy(
        update={"metrics_token": metrics_token, "env": env, "host": "127.0.0.1", "port": 8000}
    )

    # When it prints its banner
    server.banner(configured, embedded=True, say=cli.say)

    # Then one line says how /metrics is guarded, and never shows the token
    out = capsys.readouterr().out
    assert line in out.splitlines()
    assert METRICS_TOKEN not in out


# --- 8. web logout and revoke ---------------------------------------------------------------


def test_logout_ends_that_token_only_and_it_is_refused_afterwards(
    client: TestClient, runtime: Runtime
) -> None:
    # Given a resident with two tabs (two identities) and a request sent from the first
    desk = with_departments(runtime)
    first, second = new_token(client, "张三"), new_token(client, "张三")
    assert say(client, first, "路灯坏了，晚上很黑").status_code == 202
    desk.work()
    assert read(client, first)

    # When the first logs out
    response = client.post("/api/web/logout", headers=auth(first))

    # Then it answers 204 with no body
    assert response.status_code == 204 and response.content == b""
    # And the token is refused from then on, for reading, writing, the role and logging out
    stored = inbox_count(runtime)
    assert client.get("/api/web/messages?wait=0", headers=auth(first)).status_code == 401
    assert say(client, first, "又坏了").status_code == 401
    assert client.get("/api/web/me", headers=auth(first)).status_code == 401
    again = client.post("/api/web/logout", headers=auth(first))
    assert again.status_code == 401
    assert again.json()["error"] == catalogue("api.unauthorized")
    assert inbox_count(runtime) == stored
    # And the other identity still works
    assert client.get("/api/web/messages?wait=0", headers=auth(second)).status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer not-a-token"},
        {"Authorization": "Basic dXNlcjpwdw=="},
    ],
    ids=["no-token", "unknown-token", "basic-scheme"],
)
def test_logout_without_a_valid_token_is_refused_and_ends_nothing(
    client: TestClient, runtime: Runtime, headers: dict[str, str]
) -> None:
    # Given a web identity
    token = new_token(client, "李四")
    with Session(runtime.engine) as session:
        before = [(row.id, row.expires_at) for row in session.exec(select(WebSession)).all()]

    # When someone logs out without its token
    response = client.post("/api/web/logout", headers=headers)

    # Then it is 401 with a sentence, and no token expired
    assert response.status_code == 401
    assert CHINESE.search(response.json()["error"])
    with Session(runtime.engine) as session:
        after = [(row.id, row.expires_at) for row in session.exec(select(WebSession)).all()]
    assert after == before
    assert client.get("/api/web/messages?wait=0", headers=auth(token)).status_code == 200


@pytest.fixture
def admin_cli(runtime: Runtime, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """The command line pointed at the database under test."""
    for name in list(os.environ):
        if name.startswith("REDESK_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REDESK_DATABASE_URL", runtime.settings.database_url)
    bot_runtime.reset()
    yield
    bot_runtime.reset()


def web_audits(runtime: Runtime) -> list[AdminAudit]:
    """The admin audit rows of `redesk web revoke`."""
    with Session(runtime.engine) as session:
        return list(session.exec(select(AdminAudit).where(AdminAudit.action == "web_revoke")).all())


def test_web_revoke_ends_every_token_of_that_identity_on_record_and_no_one_elses(
    client: TestClient, runtime: Runtime, admin_cli: None, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a resident abusing the desk, with a second token of the same identity, and
    # another resident
    desk = with_departments(runtime)
    abuser = new_token(client, "捣乱者")
    person = person_of(runtime, abuser)
    assert person.id is not None
    with session_scope(runtime.engine) as session:
        queries.add_web_session(
            session=session,
            token="second-device-token",
            person_id=person.id,
            expires_at=utcnow() + timedelta(days=3),
        )
    other = new_token(client, "王五")
    assert say(client, abuser, "骚扰内容一二三").status_code == 202
    desk.work()
    number = requests_of(runtime, person.id)[0].number

    # When the admin revokes the identity by its id
    code = main(["web", "revoke", str(person.id)])

    # Then both its tokens are refused from then on
    assert code == Exit.OK
    assert f"ended 2 web tokens of 捣乱者 (id {person.id}, requester)" in capsys.readouterr().out
    for token in (abuser, "second-device-token"):
        assert client.get("/api/web/messages?wait=0", headers=auth(token)).status_code == 401
        assert say(client, token, "再来一次").status_code == 401
    # And the other resident is not affected, and the request stays
    assert client.get("/api/web/messages?wait=0", headers=auth(other)).status_code == 200
    assert desk.request(number).state == State.NEW
    # And the revoke is on record: who, whom, how many tokens
    [audit] = web_audits(runtime)
    assert audit.actor == cli_admin_user()
    assert audit.detail == {"person": person.id, "name": "捣乱者", "role": "requester", "tokens": 2}

    # When it is revoked again, by name
    assert main(["web", "revoke", "捣乱者"]) == Exit.OK

    # Then nothing changed and nothing more is on record
    assert "has no valid web token; nothing changed" in capsys.readouterr().out
    assert len(web_audits(runtime)) == 1


def cli_admin_user() -> str:
    """Who the admin audit log names as the admin running the tests."""
    from admin_scripts import manage

    return manage.admin_user()


@pytest.mark.parametrize(
    ("who", "exit_code", "message"),
    [
        ("999999", Exit.NOT_FOUND, "No web identity has the id or name '999999'"),
        ("无此人", Exit.NOT_FOUND, "No web identity has the id or name '无此人'"),
        ("同名", Exit.USAGE, "2 web identities are called '同名'"),
        ("telegram", Exit.NOT_FOUND, "is a telegram identity, not a web one"),
    ],
    ids=["unknown-id", "unknown-name", "shared-name", "not-web"],
)
def test_web_revoke_of_someone_unknown_shared_or_not_on_the_web_changes_nothing(
    client: TestClient,
    runtime: Runtime,
    admin_cli: None,
    capsys: pytest.CaptureFixture[str],
    who: str,
    exit_code: Exit,
    message: str,
) -> None:
    # Given two web identities of the same name and one Telegram identity
    tokens = [new_token(client, "同名"), new_token(client, "同名")]
    with session_scope(runtime.engine) as session:
        telegram_person = queries.get_or_create_person(
            session=session, channel="telegram", external_id="8001", display_name="电报用户"
        )
        session.flush()
        telegram_id = telegram_person.id
    target = str(telegram_id) if who == "telegram" else who

    # When the admin revokes `who`
    code = main(["web", "revoke", target])

    # Then it exits with one line saying why, and every token still works, nothing on record
    assert code == exit_code
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    for token in tokens:
        assert client.get("/api/web/messages?wait=0", headers=auth(token)).status_code == 200
    assert web_audits(runtime) == []
