"""What requesters do: supplement, cancel, rate (free text becomes a request in the router)."""

from __future__ import annotations

from bot.handlers.commands import Command
from bot.handlers.common import reply
from storage.models import Person
from workflow import service
from workflow.errors import InvalidInput
from workflow.machine import Action
from workflow.service import Tx

#: Accepted spellings of the two rating answers.
SOLVED_WORDS: dict[str, bool] = {"已解决": True, "解决": True, "未解决": False, "没解决": False}


def supplement(tx: Tx, person: Person, command: Command) -> None:
    """补充 <编号> <内容>."""
    request = service.supplement(tx, person, command.first, command.rest)
    reply(tx, person, "reply.supplemented", number=request.number)


def cancel(tx: Tx, person: Person, command: Command) -> None:
    """撤销 <编号> (the workflow tells the requester)."""
    service.cancel(tx, person, command.first)


def rate(tx: Tx, person: Person, command: Command) -> None:
    """评价 <编号> 已解决/未解决 满意/基本满意/不满意; without the answers, asks with buttons."""
    words = command.rest.replace("·", " ").split()
    if not words:
        request = service.check(tx, person, Action.RATE, command.first)
        reply(tx, person, "ask.rate", number=request.number)
        return
    if len(words) != 2 or words[0] not in SOLVED_WORDS:
        raise InvalidInput("satisfaction")
    service.rate(tx, person, command.first, SOLVED_WORDS[words[0]], words[1])
