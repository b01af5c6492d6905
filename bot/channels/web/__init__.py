"""The web channel: chat identities with bearer tokens, messages read by long polling.

- receive: identities, the POST /api/web/messages body, `to_inbound`, and WebSender (a
  delivery is a row the identity's long poll reads).

The web API's endpoints are the desk's own and live in bot/app.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bot.channels.base import Channel, Sender
from bot.channels.web.receive import (
    CHANNEL,
    MAX_CENTRE,
    MAX_CLIENT_ID,
    BadMessage,
    WebSender,
    create_identity,
    parse_body,
    to_inbound,
)

if TYPE_CHECKING:
    from bot.runtime import Runtime


class WebChannel(Channel):
    """The web desk: always on, buttons and cards, floods refused at the door (429)."""

    name = CHANNEL
    label = "网页"
    buttons = True
    cards = True
    flood_checked_by_handlers = False

    def to_inbound(self, chat_id: str, payload: dict[str, Any]) -> Any:
        """The stored message as an Inbound (receive.to_inbound)."""
        return to_inbound(chat_id, payload)

    def sender(self, runtime: Runtime) -> Sender | None:
        """A WebSender: the message is stored for the identity's long poll."""
        return WebSender()


__all__ = [
    "CHANNEL",
    "MAX_CENTRE",
    "MAX_CLIENT_ID",
    "BadMessage",
    "WebChannel",
    "WebSender",
    "create_identity",
    "parse_body",
    "to_inbound",
]
