"""Channel-neutral conversation logic: one Inbound in, workflow commands and replies out."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func
from sqlmodel import col, select

from bot.handlers import centres, common, department, resident, smalltalk, worker
from bot.handlers.commands import Command, parse, start_payload
from bot.inbound import Inbound
from bot.texts import describe_attachments
from storage.models import InboxMessage, Person, Role
from storage.settings import get_settings
from workflow import service
from workflow.errors import WorkflowError
from workflow.service import Tx

logger = logging.getLogger(__name__)

Handler = Callable[[Tx, Person, Command], None]

#: Command name -> handler. Rights are checked by the workflow, so a requester trying 受理
#: reaches the same code and is refused there (and the refusal is recorded).
HANDLERS: dict[str, Handler] = {
    "bind": common.bind,
    "status": common.status,
    "complete": common.complete,
    "supplement": resident.supplement,
    "cancel": resident.cancel,
    "rate": resident.rate,
    "accept": worker.accept,
    "forward": worker.forward,
    "recall": worker.recall,
    "reject": worker.reject,
    "refer": worker.refer,
    "assign": worker.assign,
    "approve": worker.approve,
    "send_back": worker.send_back,
    "take": department.take,
    "return": department.return_,
    "switch": centres.switch,
    "browse": centres.browse,
}


#: Media, a location or a contact card sent this many minutes after a request is attached
#: to it.
ATTACH_WINDOW_MINUTES = 10.0

#: The window REDESK_FLOOD_PER_MINUTE counts a chat's messages in.
FLOOD_WINDOW = timedelta(minutes=1)

#: Commands that add to a request and so count toward REDESK_FLOOD_PER_MINUTE like a new
#: request; the others (查询, 撤销, ...) are answered during a flood.
FLOOD_COUNTED: frozenset[str] = frozenset({"supplement"})


def flood_checked_here() -> frozenset[str]:
    """Channels limited here (`Channel.flood_checked_by_handlers`); the web API refuses a
    flood at the door (429) instead. The registry is imported here: it imports the channel
    packages, which import this one."""
    from bot.channels import registry

    return registry.flood_checked()


@dataclass
class Outcome:
    """How handling went: the error answered (if any)."""

    error: WorkflowError | None = None


def handle(tx: Tx, person: Person, inbound: Inbound, natural_key: str) -> Outcome:
    """Answers one inbound message: runs its command, continues a dialogue, or submits."""
    command: Command | None = None
    try:
        if inbound.edit_of is not None:
            if not _flooded(tx, person, inbound, natural_key):
                _edited(tx, person, inbound)
            return Outcome()
        if inbound.own_phone is not None:
            _own_phone(tx, person, inbound.own_phone)
            if not inbound.attachments and not inbound.text.strip():
                return Outcome()
        if inbound.attachments and person.role == Role.REQUESTER:
            _media(tx, person, inbound, natural_key)
            return Outcome()
        if inbound.intake is not None:
            worker.intake(tx, person, inbound.intake, natural_key)
            return Outcome()
        if inbound.unsupported:
            common.reply(tx, person, "error.unsupported")
            return Outcome()
        if inbound.scene is not None and not inbound.text:
            # The web desk opened by a centre's link (/desk?centre=CODE) for an identity
            # that exists already.
            centres.followed_link(tx, person, inbound.scene)
            return Outcome()
        command = parse(inbound.text)
        if command is not None:
            pending = _pending_text(person)
            if not centres.choosing(person) or command.name == "abort":
                # The centre choice keeps its request through other commands (帮助, 查询, 切换).
                _clear_dialogue(tx, person)
            payload = start_payload(inbound.text) if command.name == "help" else None
            if payload is not None:
                if not centres.start(tx, person, payload):
                    common.help_(tx, person)
            elif command.name == "register":
                _register(tx, person, command, pending, inbound, natural_key)
            elif command.name == "bind":
                common.bind(tx, person, command, address=inbound.address)
            elif command.name not in FLOOD_COUNTED or not _flooded(
                tx, person, inbound, natural_key
            ):
                _run(tx, person, command)
            return Outcome()
        if centres.choosing(person) and centres.answer(tx, person, inbound.text):
            return Outcome()
        if person.dialogue and person.dialogue.get("command") == REGISTER_DIALOGUE:
            pending = _pending_text(person, joinable_at=tx.now)
            _clear_dialogue(tx, person)
            if not _flooded(tx, person, inbound, natural_key):
                _free_text(tx, person, inbound, pending)
            return Outcome()
        if person.dialogue:
            command = _continue_dialogue(tx, person, inbound.text)
            if command is not None and (
                command.name not in FLOOD_COUNTED or not _flooded(tx, person, inbound, natural_key)
            ):
                _run(tx, person, command)
            return Outcome()
        if person.role == Role.REQUESTER:
            if not _flooded(tx, person, inbound, natural_key):
                _free_text(tx, person, inbound)
        else:
            common.help_(tx, person)
    except WorkflowError as error:
        common.report_error(tx, person, error, command)
        return Outcome(error)
    return Outcome()


#: The dialogue a too-short text opens: it holds the text until 登记 or a fuller description.
REGISTER_DIALOGUE = "register"

#: A too-short text is joined to the next text only if that comes within this time; later, the
#: next text stands alone (登记 still registers the waiting text).
JOIN_WINDOW = timedelta(minutes=30)

#: What each kind of small talk is answered with.
SMALL_TALK_REPLIES: dict[smalltalk.Kind, str] = {
    smalltalk.Kind.GREETING: "smalltalk.greeting",
    smalltalk.Kind.THANKS: "smalltalk.thanks",
    smalltalk.Kind.ACK: "smalltalk.ack",
    smalltalk.Kind.EMPTY: "smalltalk.empty",
}


def _free_text(tx: Tx, person: Person, inbound: Inbound, pending: str = "") -> None:
    """A requester's text outside a command: small talk, a question, or a new request.

    `pending` is a too-short text sent before; the new text completes it, unless the new
    text is small talk itself (then the short text is dropped, as the person moved on).
    """
    text = inbound.text
    if not text.strip():
        # Nothing at all: the workflow's own answer (内容不能为空).
        service.submit(tx, person, text, origin=inbound.origin)
        return
    rule = smalltalk.current_rule()
    kind = rule.classify(text)
    if kind in SMALL_TALK_REPLIES:
        _small_talk(tx, person, kind)
        return
    candidate = f"{pending} {text.strip()}" if pending else text
    if rule.classify(candidate) is smalltalk.Kind.SHORT:
        service.check_text(tx, candidate)
        person.dialogue = {
            "command": REGISTER_DIALOGUE,
            "text": candidate.strip(),
            "at": tx.now.isoformat(),
        }
        tx.session.add(person)
        common.reply(tx, person, "smalltalk.too_short", text=candidate.strip())
        return
    centres.submit_or_ask(tx, person, candidate, origin=inbound.origin)


def _small_talk(tx: Tx, person: Person, kind: smalltalk.Kind) -> None:
    """Answers small talk; nothing is stored but the answer (no request, no event)."""
    logger.info("Small talk (%s) from a %s chat answered without a request", kind, person.channel)
    if kind is smalltalk.Kind.THANKS:
        # Thanks after an answer (回单): the rating it waits for is offered, nothing reopens.
        waiting = next((r for r in service.my_requests(tx, person) if r.state == "replied"), None)
        if waiting is not None:
            common.reply(tx, person, "smalltalk.thanks_rate", number=waiting.number)
            return
    common.reply(tx, person, SMALL_TALK_REPLIES[kind])


def _pending_text(person: Person, *, joinable_at: datetime | None = None) -> str:
    """The too-short text an open 登记 dialogue holds, or "".

    With `joinable_at`, only a text kept within JOIN_WINDOW before that moment counts: a
    description sent the next day is a request of its own, not the end of an old word.
    """
    dialogue = person.dialogue or {}
    if dialogue.get("command") != REGISTER_DIALOGUE:
        return ""
    if joinable_at is not None:
        try:
            kept = datetime.fromisoformat(str(dialogue.get("at")))
        except ValueError:
            return ""
        if kept.tzinfo is None or joinable_at - kept > JOIN_WINDOW:
            return ""
    return str(dialogue.get("text") or "")


def _register(
    tx: Tx, person: Person, command: Command, pending: str, inbound: Inbound, natural_key: str
) -> None:
    """登记 [内容]: registers the text as it is (the content given, else the short text
    waiting in the dialogue), whatever its length."""
    if person.role != Role.REQUESTER:
        common.reply(tx, person, "error.role_no_request")
        return
    text = " ".join(part for part in (command.first, command.rest) if part) or pending
    if not text:
        common.reply(tx, person, "error.nothing_to_register")
        return
    if not _flooded(tx, person, inbound, natural_key):
        centres.submit_or_ask(tx, person, text, origin=inbound.origin)


def _edited(tx: Tx, person: Person, inbound: Inbound) -> None:
    """An edited message: a supplement to the request it created (other edits are ignored)."""
    assert inbound.edit_of is not None
    request = service.request_from_origin(tx, person, inbound.edit_of)
    if request is not None and inbound.text.strip():
        service.supplement(tx, person, request.number, f"（修改后）{inbound.text.strip()}")
        common.reply(tx, person, "reply.supplemented", number=request.number)


def _own_phone(tx: Tx, person: Person, phone: str) -> None:
    """The person shared their own contact card: its number is their phone from now on."""
    person.phone = phone.strip()[:30]
    tx.session.add(person)
    common.reply(tx, person, "reply.phone_saved", phone=person.phone)


def _media(tx: Tx, person: Person, inbound: Inbound, natural_key: str) -> None:
    """Media with a caption is a new request; without one, it joins a request just sent."""
    recent = None
    if not inbound.text.strip():
        recent = service.recent_open_request(tx, person, ATTACH_WINDOW_MINUTES)
    described = describe_attachments(inbound.attachments)
    if _flooded(tx, person, inbound, natural_key):
        return
    text = inbound.text.strip() or described
    if centres.holding(person):
        # A request waits for the centre choice: the media join it.
        centres.keep(tx, person, text, attachments=inbound.attachments, origin=inbound.origin)
        return
    if recent is not None:
        service.supplement(tx, person, recent.number, described, attachments=inbound.attachments)
        common.reply(tx, person, "reply.supplemented", number=recent.number)
        return
    centres.submit_or_ask(tx, person, text, attachments=inbound.attachments, origin=inbound.origin)


def flood_limit() -> int:
    """REDESK_FLOOD_PER_MINUTE of this process (0: no limit)."""
    return get_settings().flood_per_minute


def _flooded(tx: Tx, person: Person, inbound: Inbound, natural_key: str) -> bool:
    """Whether this message would make one request, supplement, edit or media too many for
    its chat this minute.

    Counts the chat's inbox rows received in the minute before this one (from the database,
    so it holds however many workers there are, and however late the message is handled).
    The first message over the limit is answered with a request to slow down; the later ones
    of the flood are kept in the inbox but answered with nothing, so a flood cannot make
    redesk flood the chat back. Other commands (查询, 撤销, ...) are still answered.
    """
    limit = flood_limit()
    if limit <= 0 or inbound.channel not in flood_checked_here() or person.role != Role.REQUESTER:
        # Staff (bound by invitation) are not limited, as on the web API.
        return False
    channel, _, key = natural_key.partition(":")
    row = tx.session.exec(
        select(InboxMessage).where(InboxMessage.channel == channel, InboxMessage.natural_key == key)
    ).first()
    if row is None or row.id is None:
        return False
    earlier = tx.session.execute(
        select(func.count())
        .select_from(InboxMessage)
        .where(
            col(InboxMessage.channel) == row.channel,
            col(InboxMessage.chat_id) == row.chat_id,
            col(InboxMessage.id) < row.id,
            col(InboxMessage.received_at) > row.received_at - FLOOD_WINDOW,
        )
    ).scalar_one()
    if earlier < limit:
        return False
    if earlier == limit:
        common.reply(tx, person, "error.flooded", limit=limit)
        logger.info(
            "A %s chat went over REDESK_FLOOD_PER_MINUTE; no more requests from it this minute",
            channel,
        )
    return True


def _run(tx: Tx, person: Person, command: Command) -> None:
    if command.name in ("help", "unknown"):
        common.help_(tx, person)
    elif command.name == "abort":
        common.reply(tx, person, "reply.dialogue_cancelled")
    elif command.name == "inbox":
        common.todo(tx, person, command.first)
    elif command.name in common.TEXT_ARGUMENT and command.first and not command.rest:
        _open_dialogue(tx, person, command)
    else:
        HANDLERS[command.name](tx, person, command)


def _open_dialogue(tx: Tx, person: Person, command: Command) -> None:
    """Asks for the missing free-text argument, after checking the command could succeed."""
    from workflow import service
    from workflow.machine import Action

    action = Action(command.name)
    request = service.check(tx, person, action, command.first)
    if centres.holding(person):
        # The open centre choice holds a request not filed yet: another dialogue would
        # replace it and the request would be lost, so the choice is asked first.
        centres.ask(tx, person, dict(person.dialogue or {}), "centre.intro_first")
        return
    person.dialogue = {"command": command.name, "number": request.number}
    tx.session.add(person)
    common.reply(tx, person, f"ask.{command.name}", number=request.number)


def _continue_dialogue(tx: Tx, person: Person, text: str) -> Command | None:
    dialogue = person.dialogue or {}
    _clear_dialogue(tx, person)
    if text.strip() in ("取消", "/abort"):
        common.reply(tx, person, "reply.dialogue_cancelled")
        return None
    return Command(str(dialogue.get("command")), str(dialogue.get("number")), text.strip())


def _clear_dialogue(tx: Tx, person: Person) -> None:
    if person.dialogue is not None:
        person.dialogue = None
        tx.session.add(person)
