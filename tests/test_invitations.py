"""Invitation codes: their form, how typed codes are read, and 绑定 attacked by guessing,
through the web API and the chat harness. docs/reliability.md tells the attack each test
stands for.
"""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from typing import Any

import time_machine
from sqlmodel import Session, select

from bot.texts import text as catalogue
from storage import queries
from storage.db import session_scope
from storage.models import BindFailure, Invitation, Person, Role, utcnow
from tests.utils.app import TestClient
from tests.utils.harness import Desk, Identity
from workflow import invitations
from workflow.service import BIND_FAILURE_LIMIT, BIND_FAILURE_WINDOW

#: A code as shown: three groups of four from Crockford's base32 alphabet.
SHOWN = re.compile(r"[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}")


def failures(desk: Desk) -> list[BindFailure]:
    """Every failed 绑定 on record, oldest first."""
    with Session(desk.runtime.engine) as session:
        return list(session.exec(select(BindFailure).order_by(BindFailure.id)).all())  # type: ignore[arg-type]


def invitation_rows(desk: Desk) -> list[Invitation]:
    """Every invitation, oldest first."""
    with Session(desk.runtime.engine) as session:
        return list(session.exec(select(Invitation).order_by(Invitation.id)).all())  # type: ignore[arg-type]


def answer(identity: Identity, text: str) -> str:
    """What the identity is answered to `text` (exactly one message)."""
    [message] = identity.send(text)
    return message.text


# --- the form of a code ---------------------------------------------------------------------


def test_a_new_code_is_three_groups_of_four_from_the_unambiguous_alphabet() -> None:
    # When many codes are made
    codes = {invitations.new_code() for _ in range(500)}

    # Then each is shown as XXXX-XXXX-XXXX, no two alike, and it carries at least 60 bits
    assert all(SHOWN.fullmatch(code) for code in codes)
    assert len(codes) == 500
    assert len(invitations.ALPHABET) ** invitations.CODE_LENGTH >= 2**60
    assert not set("ILOU") & set(invitations.ALPHABET)
    # And every symbol of the alphabet turns up
    assert set("".join(codes).replace("-", "")) == set(invitations.ALPHABET)


def test_a_typed_code_is_read_whatever_its_case_separators_width_and_look_alikes() -> None:
    # Given a code as shown
    code = "7K3M-Q90D-21RT"

    # When it is typed in the ways people type it
    typed = [
        code,
        code.lower(),
        "7K3MQ90D21RT",
        "7K3M Q90D 21RT",
        "7k3m q9od 2lrt",
        "7K3M－Q9OD－2IRT",
        "７Ｋ３Ｍ　Ｑ９０Ｄ　２１ＲＴ",
        "7K3M_Q90D_21RT",
    ]

    # Then each is read as the same code
    assert {invitations.normalise(form) for form in typed} == {"7K3MQ90D21RT"}


def test_a_code_of_the_earlier_hex_form_reads_as_it_was_stored() -> None:
    assert invitations.normalise(" deadbeef ") == "DEADBEEF"


# --- binding ------------------------------------------------------------------------------


def test_a_code_binds_typed_in_lower_case_with_spaces_and_look_alikes(desk: Desk) -> None:
    # Given an invitation, typed the way someone reads it off paper
    code = desk.invite("worker")
    assert SHOWN.fullmatch(code)
    typed = code.lower().replace("-", " ").replace("0", "o").replace("1", "l")

    # When it is bound
    someone = desk.identity("王书记")
    reply = answer(someone, f"绑定 {typed}")

    # Then they are a worker, and only the normalised code's digest is stored
    assert "绑定成功" in reply and someone.person().role == Role.WORKER
    [row] = invitation_rows(desk)
    assert row.code_hash == queries.digest(code.replace("-", ""))
    assert code not in row.code_hash and row.used_at is not None


def test_a_code_of_the_earlier_form_still_binds_until_it_expires(desk: Desk) -> None:
    # Given two codes of the earlier form (8 hex digits), one expired
    with session_scope(desk.runtime.engine) as session:
        queries.add_invitation(
            session=session,
            code="DEADBEEF",
            role="worker",
            department_id=None,
            expires_at=utcnow() + timedelta(days=1),
        )
        queries.add_invitation(
            session=session,
            code="0BADF00D",
            role="worker",
            department_id=None,
            expires_at=utcnow() - timedelta(seconds=1),
        )
    current, late = desk.identity(), desk.identity()

    # When each is bound, typed in lower case
    bound, refused = answer(current, "绑定 deadbeef"), answer(late, "绑定 0badf00d")

    # Then the current one binds, the expired one is answered like any invalid code
    assert "绑定成功" in bound and current.person().role == Role.WORKER
    assert refused == catalogue("error.invitation_invalid")
    assert late.person().role == Role.REQUESTER


def test_used_expired_and_unknown_codes_are_answered_alike(desk: Desk) -> None:
    # Given a used code, an expired one and one nobody was given
    used = desk.invite("worker")
    answer(desk.identity(), f"绑定 {used}")
    expired = desk.invite("leader")
    with session_scope(desk.runtime.engine) as session:
        row = session.exec(
            select(Invitation).where(
                Invitation.code_hash == queries.digest(invitations.normalise(expired))
            )
        ).one()
        row.expires_at = utcnow() - timedelta(seconds=1)
        session.add(row)
    unknown = invitations.new_code()

    # When three people try them
    tried = {reason: desk.identity() for reason in ("used", "expired", "unknown")}
    answers = {
        reason: answer(tried[reason], f"绑定 {code}")
        for reason, code in (("used", used), ("expired", expired), ("unknown", unknown))
    }

    # Then every answer is the same sentence, and nobody got a role
    assert set(answers.values()) == {catalogue("error.invitation_invalid")}
    assert all(person.person().role == Role.REQUESTER for person in tried.values())
    # And each failure is on record with its reason, never the code
    assert [(f.reason, f.channel) for f in failures(desk)] == [
        ("used", "web"),
        ("expired", "web"),
        ("unknown", "web"),
    ]
    assert [f.identity for f in failures(desk)] == [p.chat_id for p in tried.values()]
    assert not any(
        code.replace("-", "") in repr(f.model_dump())
        for f in failures(desk)
        for code in (used, expired, unknown)
    )


def test_after_five_failed_binds_a_person_is_refused_without_the_code_being_read(
    desk: Desk,
) -> None:
    # Given someone who guessed five codes wrong
    code = desk.invite("worker")
    guesser = desk.identity()
    for _ in range(BIND_FAILURE_LIMIT):
        assert answer(guesser, f"绑定 {invitations.new_code()}") == catalogue(
            "error.invitation_invalid"
        )

    # When they then send the right code
    refused = answer(guesser, f"绑定 {code}")

    # Then they are refused with the one answer for it, the code is not spent, nothing changed
    assert refused == catalogue("error.bind_refused")
    assert guesser.person().role == Role.REQUESTER
    assert [row.used_at for row in invitation_rows(desk)] == [None]
    # And the refusal is not a sixth failure (it read no code)
    assert len(failures(desk)) == BIND_FAILURE_LIMIT

    # When the window has passed
    with time_machine.travel(utcnow() + BIND_FAILURE_WINDOW + timedelta(seconds=1)):
        bound = answer(guesser, f"绑定 {code}")

    # Then the right code binds
    assert "绑定成功" in bound and guesser.person().role == Role.WORKER


def test_a_usage_error_is_no_failed_bind(desk: Desk) -> None:
    someone = desk.identity()
    assert answer(someone, "绑定") == catalogue("error.bind_usage")
    assert failures(desk) == []


# --- through the web API --------------------------------------------------------------------


def new_token(client: TestClient) -> str:
    """A new web chat identity, made through the API."""
    response = client.post("/api/web/session", json={})
    assert response.status_code == 201, response.text
    token: str = response.json()["token"]
    return token


def say(client: TestClient, desk: Desk, token: str, text: str) -> list[dict[str, Any]]:
    """POSTs typed text as that identity, works it through, and returns its messages."""
    headers = {"Authorization": f"Bearer {token}"}
    response = client.post(
        "/api/web/messages", json={"id": uuid.uuid4().hex, "text": text}, headers=headers
    )
    assert response.status_code == 202, response.text
    desk.work()
    read = client.get("/api/web/messages?after=0&wait=0", headers=headers)
    assert read.status_code == 200, read.text
    messages: list[dict[str, Any]] = read.json()["messages"]
    return messages


def test_guessing_codes_with_a_fresh_web_identity_for_each_guess_is_refused_by_address(
    client: TestClient,
    desk: Desk,
) -> None:
    # Given a valid invitation, and a guesser who makes a new web identity for every guess
    code = desk.invite("worker")
    for _ in range(BIND_FAILURE_LIMIT):
        messages = say(client, desk, new_token(client), f"绑定 {invitations.new_code()}")
        assert [m["text"] for m in messages] == [catalogue("error.invitation_invalid")]

    # When a sixth identity from the same address sends the right code
    token = new_token(client)
    messages = say(client, desk, token, f"绑定 {code}")

    # Then it is refused with the one answer, the code is not spent, nobody got a role
    assert [m["text"] for m in messages] == [catalogue("error.bind_refused")]
    assert [row.used_at for row in invitation_rows(desk)] == [None]
    with Session(desk.runtime.engine) as session:
        roles = set(session.exec(select(Person.role)).all())
    assert roles == {Role.REQUESTER}
    # And each failure is on record: the web channel, five identities, one client address
    recorded = failures(desk)
    assert len(recorded) == BIND_FAILURE_LIMIT
    assert {(f.channel, f.address, f.reason) for f in recorded} == {
        ("web", "web:testclient", "unknown")
    }
    assert len({f.identity for f in recorded}) == BIND_FAILURE_LIMIT

    # When someone on another address sends it
    colleague = desk.identity("王书记")

    # Then it binds
    assert "绑定成功" in answer(colleague, f"绑定 {code}")
    assert colleague.person().role == Role.WORKER
