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
    #: Media and locations, as dicts of attachment fields (kind, file_id, latitude, ...).
    attachments: list[dict[str, Any]] = field(default_factory=list)
    #: The platform sent something redesk does not handle (kept, answered politely).
    unsupported: bool = False
    #: The platform message this is ("<chat>:<message id>"), where the platform has edits.
    origin: str | None = None
    #: For an edited message: the origin of the message that was edited.
    edit_of: str | None = None
    #: For a pressed platform button: the callback to answer and the card to edit.
    callback: Callback | None = None
    #: The person's own chat with the bot changed: True when they blocked the bot or left,
    #: False when they (re)started it; None for an ordinary message.
    left: bool | None = None
    #: The person shared their own contact card: their phone number (kept on the person).
    own_phone: str | None = None
    #: The entry scene the message came through (a WeChat parametric QR code's scene).
    scene: str | None = None
    #: A follower scanned a QR code again (WeChat SCAN): answered with a welcome back.
    rescanned: bool = False
    #: A platform notice with nothing to answer (a WeChat event redesk does not act on).
    ignored: bool = False
    #: Where the message came from, where the channel knows more than the chat (the web
    #: client's address); "" otherwise.
    address: str = ""
    #: Channel-specific details only that channel's own hooks read (e.g. the task id of a
    #: pressed WeCom card).
    platform: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Callback:
    """A pressed button on a platform that answers presses (Telegram callback queries)."""

    id: str
    #: The button's token (resolved to its action by the channel before handling).
    token: str
    chat_id: str
    message_id: int
    #: The text of the card the button is under.
    message_text: str
