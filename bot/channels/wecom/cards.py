"""Rendered messages with buttons as WeCom template cards (card_type button_interaction).

The main title is the message's first line (the number and category); lines naming a
deadline ("响应时限：...　办结时限：...") become the card's key-value lines; the rest is the
card's text. Each button's key is a one-time button token (storage's button_tokens), so a
forged key resolves to nothing. WeCom takes at most six buttons a card: more (a department
picker) go out as several cards.
"""

from __future__ import annotations

import secrets
from typing import Any

from sqlmodel import Session

from bot.texts import Button, Rendered
from storage import queries
from storage.models import Person, utcnow

#: Buttons of one button_interaction card (WeCom's limit).
MAX_BUTTONS = 6
#: Characters WeCom shows of a main title, its description and the card's text.
MAX_TITLE = 36
MAX_SUB_TITLE = 112
#: Characters of a button's text, a key-value line's key and its value.
MAX_BUTTON_TEXT = 10
MAX_KEY = 5
MAX_VALUE = 26
#: Key-value lines of one card.
MAX_LINES = 6

#: Separator of the deadlines on one line of the catalogue ("响应时限：...　办结时限：...").
_SPACE = "\u3000"


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def task_id(outbox_id: int, index: int) -> str:
    """A new card's task id: its outbox row and part, and a random tail (task ids are never
    reused by an app)."""
    return f"rd{outbox_id}_{index}_{secrets.token_hex(6)}"


def outbox_of(task: str) -> int | None:
    """The outbox row a card of `task_id` was sent for."""
    parts = task.split("_")
    if len(parts) != 3 or not parts[0].startswith("rd") or not parts[0][2:].isdigit():
        return None
    return int(parts[0][2:])


def chunks(buttons: list[Button]) -> list[list[Button]]:
    """The buttons by card."""
    return [buttons[i : i + MAX_BUTTONS] for i in range(0, len(buttons), MAX_BUTTONS)]


def layout(text: str) -> tuple[str, list[tuple[str, str]], str]:
    """The title, the deadline lines (key, value) and the remaining text of a message."""
    lines = [line for line in text.splitlines() if line.strip()]
    title = lines[0] if lines else ""
    pairs: list[tuple[str, str]] = []
    rest: list[str] = []
    for line in lines[1:]:
        if "时限：" in line:
            for piece in line.split(_SPACE):
                key, _, value = piece.partition("：")
                if value:
                    pairs.append((key.strip(), value.strip()))
        else:
            rest.append(line)
    return title, pairs[:MAX_LINES], "\n".join(rest)


def fits(text: str) -> bool:
    """Whether the whole of `text` is shown on a card (else it goes out as a text first)."""
    title, pairs, rest = layout(text)
    return (
        len(title) <= MAX_TITLE
        and len(rest) <= MAX_SUB_TITLE
        and all(len(key) <= MAX_KEY and len(value) <= MAX_VALUE for key, value in pairs)
    )


def button_list(session: Session, person: Person, buttons: list[Button]) -> list[dict[str, Any]]:
    """The card's buttons, each keyed by a new one-time token for `person`."""
    assert person.id is not None
    now = utcnow()
    result = []
    for button in buttons:
        token = secrets.token_urlsafe(12)
        queries.add_button_token(
            session=session, token=token, person_id=person.id, action=button.action, at=now
        )
        result.append({"text": _cut(button.label, MAX_BUTTON_TEXT), "style": 1, "key": token})
    return result


def template_card(
    session: Session, person: Person, message: Rendered, task: str, buttons: list[Button]
) -> dict[str, Any]:
    """The button_interaction card of `message` with `buttons`."""
    title, pairs, rest = layout(message.text)
    card: dict[str, Any] = {
        "card_type": "button_interaction",
        "main_title": {"title": _cut(title or "党群服务中心", MAX_TITLE)},
        "task_id": task,
        "button_list": button_list(session, person, buttons),
    }
    if rest:
        card["sub_title_text"] = _cut(rest, MAX_SUB_TITLE)
    if pairs:
        card["horizontal_content_list"] = [
            {"keyname": _cut(key, MAX_KEY), "value": _cut(value, MAX_VALUE)} for key, value in pairs
        ]
    return card
