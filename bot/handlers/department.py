"""What department staff do: 接收 and 退单 (办结 is shared, in common)."""

from __future__ import annotations

from bot.handlers.commands import Command
from bot.handlers.common import reply
from storage.models import Person
from workflow import service
from workflow.service import Tx


def take(tx: Tx, person: Person, command: Command) -> None:
    """接收 <编号>."""
    request = service.take(tx, person, command.first)
    reply(tx, person, "reply.taken", number=request.number)


def return_(tx: Tx, person: Person, command: Command) -> None:
    """退单 <编号> <原因>."""
    request = service.return_(tx, person, command.first, command.rest)
    reply(tx, person, "reply.returned", number=request.number)
