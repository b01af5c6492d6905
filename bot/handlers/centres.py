"""Centres on the chat side: the choice a resident who came through no centre is asked before
their first request is filed, 切换, and the answers to entering a centre through a link, a
Telegram deep link or a WeChat QR code.

The choice is a dialogue (`Person.dialogue`) that keeps the request the resident sent, with its
attachments, until they pick a centre; the kept request is then filed in the same transaction
as the reply that picked, so an inbox row handled twice cannot file it twice. With a single
active centre nobody is ever asked and nothing here changes what people see.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from bot.handlers.commands import Command
from bot.handlers.common import reply
from bot.texts import buttonless_channels, inline
from storage import queries
from storage.models import Centre, Person, Role
from workflow import centres, service
from workflow.service import Tx

#: The dialogue of the choice: {"command": CHOOSE_DIALOGUE, "parent": centre id or None,
#: "options": [centre ids as numbered], "text": the kept request (if any), "attachments",
#: "origin", "at"}.
CHOOSE_DIALOGUE = "choose_centre"

#: Replies that pick the centre whose children are listed ("就选这里").
HERE_WORDS: frozenset[str] = frozenset({"就选这里", "选这里", "这里", "就这里"})

#: Longest part of a bad reply or an unknown code repeated in the answer.
SHOWN = 40

#: Longest number taken as an option's number (a longer one is no option).
MAX_OPTION_DIGITS = 4


def choosing(person: Person) -> bool:
    """Whether the person's open dialogue is the centre choice."""
    return bool(person.dialogue) and (person.dialogue or {}).get("command") == CHOOSE_DIALOGUE


def holding(person: Person) -> bool:
    """Whether the choice is open with a request kept in it."""
    return choosing(person) and bool((person.dialogue or {}).get("text"))


def _kept(person: Person) -> dict[str, Any]:
    """The open choice dialogue (a copy), or a new one."""
    if choosing(person):
        return dict(person.dialogue or {})
    return {"command": CHOOSE_DIALOGUE}


def _shown(typed: str) -> str:
    """What someone typed, as an answer may repeat it: on one line, cut to SHOWN characters."""
    return inline(typed)[:SHOWN]


def _clear(tx: Tx, person: Person) -> None:
    if person.dialogue is not None:
        person.dialogue = None
        tx.session.add(person)


# --- filing, or keeping until the choice ------------------------------------------------------


def submit_or_ask(
    tx: Tx,
    person: Person,
    text: str,
    *,
    attachments: Sequence[dict[str, Any]] = (),
    origin: str | None = None,
) -> None:
    """Files a resident's request, or, while they have no centre among several, keeps it and
    asks them to choose (a request kept already is joined by this one)."""
    if not holding(person) and not centres.needs_choice(tx.session, person):
        service.submit(tx, person, text, attachments=attachments, origin=origin)
        return
    keep(tx, person, text, attachments=attachments, origin=origin)


def keep(
    tx: Tx,
    person: Person,
    text: str,
    *,
    attachments: Sequence[dict[str, Any]] = (),
    origin: str | None = None,
) -> None:
    """Keeps a request in the choice dialogue (joined to one kept already) and asks again.

    Raises:
        InvalidInput: The request (with the one kept) is empty or too long; nothing is kept.
    """
    dialogue = _kept(person)
    earlier = str(dialogue.get("text") or "")
    joined = service.check_text(tx, "\n".join(part for part in (earlier, text.strip()) if part))
    dialogue.update(
        text=joined,
        attachments=[*(dialogue.get("attachments") or []), *(dict(a) for a in attachments)],
        origin=dialogue.get("origin") or origin,
        at=tx.now.isoformat(),
    )
    ask(tx, person, dialogue, "centre.intro_kept")


def file_kept(tx: Tx, person: Person) -> bool:
    """Files the request the choice kept, if any (the person has their centre now).

    Returns:
        Whether a request was filed.
    """
    if not choosing(person):
        return False
    dialogue = dict(person.dialogue or {})
    _clear(tx, person)
    text = str(dialogue.get("text") or "")
    if not text:
        return False
    service.submit(
        tx,
        person,
        text,
        attachments=list(dialogue.get("attachments") or []),
        origin=dialogue.get("origin"),
    )
    return True


# --- the choice ---------------------------------------------------------------------------------


def _level(tx: Tx, parent_id: int | None) -> tuple[Centre | None, list[Centre]]:
    """The centre whose children are offered (None: the top) and the centres offered.

    At the top, a single centre with centres under it is opened at once: a question with one
    answer is no question.
    """
    here: Centre | None = None
    if parent_id is not None:
        found = queries.get_centre(session=tx.session, centre_id=parent_id)
        if found is not None and found.active:
            here = found
    if here is not None:
        return here, centres.choices(tx.session, here.id)
    options = centres.choices(tx.session)
    while len(options) == 1 and centres.has_children(tx.session, options[0]):
        here = options[0]
        options = centres.choices(tx.session, here.id)
    return here, options


def ask(tx: Tx, person: Person, dialogue: dict[str, Any], intro: str, typed: str = "") -> None:
    """Opens (or reopens) the choice at the dialogue's level and asks."""
    here, options = _level(tx, dialogue.get("parent"))
    opened = centres.with_children(tx.session, options)
    person.dialogue = {
        **dialogue,
        "command": CHOOSE_DIALOGUE,
        "parent": here.id if here else None,
        "options": [centre.id for centre in options],
    }
    tx.session.add(person)
    reply(
        tx,
        person,
        "centre.choose",
        intro=intro,
        typed=typed,
        parent=here.name if here else "",
        options=[[centre.name, centre.code, centre.id in opened] for centre in options],
        here=[here.name, here.code] if here else None,
        kept=bool(dialogue.get("text")),
        buttons=person.channel not in buttonless_channels(),
    )


def _fold(typed: str) -> str:
    """A reply as compared: full-width forms folded (１ -> 1), outer spaces removed."""
    return unicodedata.normalize("NFKC", typed).strip()


def _looks_like_a_reply(typed: str) -> bool:
    """Whether a text that picks nothing was still meant as an answer (a number, 就选这里)."""
    folded = _fold(typed)
    return folded.isdigit() or folded in HERE_WORDS


def _active(tx: Tx, centre_id: Any) -> Centre | None:
    if not isinstance(centre_id, int):
        return None
    found = queries.get_centre(session=tx.session, centre_id=centre_id)
    return found if found is not None and found.active else None


def _match(tx: Tx, dialogue: dict[str, Any], typed: str) -> Centre | None:
    """The centre a reply picks: by its number, 就选这里, a listed name or code, or any active
    centre's code or name."""
    folded = _fold(typed)
    if not folded:
        return None
    here = _active(tx, dialogue.get("parent"))
    ids = [i for i in dialogue.get("options") or [] if isinstance(i, int)]
    if folded in HERE_WORDS:
        return here
    if folded.isdigit():
        if len(folded) > MAX_OPTION_DIGITS:
            return None
        number = int(folded)
        if 1 <= number <= len(ids):
            return _active(tx, ids[number - 1])
        return here if number == len(ids) + 1 else None
    listed = [c for c in (*(_active(tx, i) for i in ids), here) if c is not None]
    for centre in listed:
        if centre.code.lower() == folded.lower() or centre.name == folded:
            return centre
    return centres.find_centre(tx.session, folded)


def answer(tx: Tx, person: Person, text: str) -> bool:
    """A message while the choice is open.

    Returns:
        True when it was the answer (a pick, or a bad reply answered with the choice again);
        False when the choice is dropped and the message is to be handled as any other (it
        kept no request and the text picks nothing: e.g. the resident wrote their request).
    """
    dialogue = dict(person.dialogue or {})
    if person.role != Role.REQUESTER or not centres.several_active(tx.session):
        # They became staff, or only one centre is left: nothing to choose any more.
        if person.role == Role.REQUESTER:
            file_kept(tx, person)
        _clear(tx, person)
        return False
    picked = _match(tx, dialogue, text)
    if picked is None:
        if dialogue.get("text") or _looks_like_a_reply(text):
            ask(tx, person, dialogue, "centre.intro_bad", typed=_shown(text))
            return True
        _clear(tx, person)
        return False
    pick(tx, person, dialogue, picked)
    return True


def pick(tx: Tx, person: Person, dialogue: dict[str, Any], centre: Centre) -> None:
    """A centre was picked: one with centres under it lists them (and 就选这里); any other,
    or the one whose children are listed, is chosen."""
    if centre.id != dialogue.get("parent") and centre.id in centres.with_children(
        tx.session, [centre]
    ):
        ask(tx, person, {**dialogue, "parent": centre.id}, "centre.intro_children")
        return
    choose(tx, person, dialogue, centre)


def choose(tx: Tx, person: Person, dialogue: dict[str, Any], centre: Centre) -> None:
    """The resident belongs to `centre` from now on; the request the choice kept is filed."""
    centres.move(tx, person, centre)
    person.dialogue = {**dialogue, "command": CHOOSE_DIALOGUE}
    if dialogue.get("text"):
        reply(tx, person, "centre.chosen", centre=centre.name)
        file_kept(tx, person)
    else:
        _clear(tx, person)
        reply(tx, person, "centre.switched", centre=centre.name)


# --- commands -------------------------------------------------------------------------------------


def _only_one(tx: Tx, person: Person, typed: str) -> None:
    """切换 on a single-centre install: there is nothing to choose."""
    only = centres.only_centre(tx.session)
    found = centres.find_centre(tx.session, typed) if typed else None
    if found is not None and found.id == only.id:
        centres.move(tx, person, found)
        reply(tx, person, "centre.switched", centre=found.name)
        return
    reply(tx, person, "centre.only_one", centre=only.name)


def switch(tx: Tx, person: Person, command: Command) -> None:
    """切换 [名称或代码]: moves a resident for their future requests; alone, shows the choice.
    Staff cannot: their centre is their role's."""
    if person.role != Role.REQUESTER:
        reply(tx, person, "centre.staff_fixed")
        return
    typed = " ".join(part for part in (command.first, command.rest) if part)
    if not centres.several_active(tx.session):
        _only_one(tx, person, typed)
        return
    dialogue = _kept(person)
    if not typed:
        intro = "centre.intro_kept" if dialogue.get("text") else "centre.intro_switch"
        ask(tx, person, {**dialogue, "parent": None}, intro)
        return
    centre = centres.find_centre(tx.session, typed)
    if centre is None:
        ask(tx, person, {**dialogue, "parent": None}, "centre.intro_unknown", typed=_shown(typed))
        return
    choose(tx, person, dialogue, centre)


def browse(tx: Tx, person: Person, command: Command) -> None:
    """/centres [代码] (the choice's buttons): the centres under one (or the top), to choose."""
    if person.role != Role.REQUESTER:
        reply(tx, person, "centre.staff_fixed")
        return
    if not centres.several_active(tx.session):
        _only_one(tx, person, "")
        return
    dialogue = _kept(person)
    if not command.first:
        intro = "centre.intro_kept" if dialogue.get("text") else "centre.intro_switch"
        ask(tx, person, {**dialogue, "parent": None}, intro)
        return
    centre = centres.by_code(tx.session, command.first)
    if centre is None:
        ask(
            tx,
            person,
            {**dialogue, "parent": None},
            "centre.intro_unknown",
            typed=_shown(command.first),
        )
        return
    pick(tx, person, {**dialogue, "parent": None}, centre)


# --- entry points ---------------------------------------------------------------------------------


class Arrival(StrEnum):
    """What an entry point's code did."""

    #: A resident now belongs to the centre.
    ENTERED = "entered"
    #: Staff followed a centre's link: they keep their role's centre.
    STAFF = "staff"
    #: The code names no active centre.
    UNKNOWN = "unknown"
    #: The entry point carried no code.
    NONE = "none"


@dataclass(frozen=True)
class Entry:
    """The outcome of an entry point: what happened, and the centre it named (if any)."""

    arrival: Arrival
    centre: Centre | None = None
    #: The code as an answer may repeat it.
    shown: str = ""


def arrive(tx: Tx, person: Person, code: str | None) -> Entry:
    """Someone came through an entry point that carried `code` (nothing is answered here)."""
    if code is None or not code.strip():
        return Entry(Arrival.NONE)
    centre = centres.enter(tx, person, code)
    if centre is None:
        return Entry(Arrival.UNKNOWN, shown=_shown(code))
    if person.role != Role.REQUESTER:
        return Entry(Arrival.STAFF, centre)
    return Entry(Arrival.ENTERED, centre)


def ask_after_unknown(tx: Tx, person: Person, entry: Entry) -> bool:
    """A resident's entry code named no centre while several are active: they are told so and
    offered the choice. Returns False (nothing answered) otherwise: a single-centre install
    ignores codes as it always did."""
    if (
        entry.arrival is not Arrival.UNKNOWN
        or person.role != Role.REQUESTER
        or not centres.several_active(tx.session)
    ):
        return False
    ask(tx, person, {**_kept(person), "parent": None}, "centre.intro_unknown", typed=entry.shown)
    return True


def start(tx: Tx, person: Person, payload: str) -> bool:
    """/start CODE (a Telegram deep link): the resident enters that centre and is welcomed.

    Returns:
        Whether it was answered in full here; False: the help follows, as for a plain /start
        (also for staff, and for a code a single-centre install does not know).
    """
    entry = arrive(tx, person, payload)
    if entry.arrival is Arrival.ENTERED and entry.centre is not None:
        reply(tx, person, "centre.entered", centre=entry.centre.name)
        # A request kept for the choice is filed there now (then no help follows).
        return file_kept(tx, person)
    return ask_after_unknown(tx, person, entry)


def followed_link(tx: Tx, person: Person, code: str) -> None:
    """A web identity that exists already opened /desk?centre=CODE: a resident moves there
    for the requests they file from now on; staff are told theirs is their role's."""
    entry = arrive(tx, person, code)
    if entry.arrival is Arrival.ENTERED and entry.centre is not None:
        reply(tx, person, "centre.switched", centre=entry.centre.name)
        file_kept(tx, person)
    elif entry.arrival is Arrival.STAFF:
        reply(tx, person, "centre.staff_fixed")
    elif not ask_after_unknown(tx, person, entry):
        reply(tx, person, "api.unknown_centre", code=entry.shown)
