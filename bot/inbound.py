"""The channel-neutral form of one inbound message."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Intake:
    """A walk-in's request registered at the reception desk by a worker."""

    name: str
    phone: str
    text: str


@dataclass(frozen=True)
class Inbound:
    """What someone sent, whatever the platform: typed text, a pressed button or a desk form."""

    channel: str
    chat_id: str
    text: str = ""
    #: True when the text came from a button (its action), not typed.
    pressed: bool = False
    intake: Intake | None = None
    display_name: str = ""
    #: Media and locations (later channels); kept as plain dicts.
    attachments: list[dict[str, Any]] = field(default_factory=list)
    #: The platform sent something redesk does not handle (kept, answered politely).
    unsupported: bool = False
