"""Sending on WeChat: within 48 hours of the person's last message and at most 5 messages since,
a customer-service text; otherwise (or when WeChat answers 45015/45047) a template message, if
one is configured.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import Any

import requests
from sqlmodel import Session
from wechatpy.exceptions import APILimitedException, WeChatClientException

from bot.channels.base import PermanentSendError, TransientSendError, Unreachable
from bot.channels.split import split_text
from bot.channels.wechat.client import (
    ERR_INVALID_OPENID,
    ERR_OUT_OF_COUNT,
    ERR_OUT_OF_TIME,
    ERR_REQUIRE_SUBSCRIBE,
    ERR_SYSTEM_BUSY,
    RedeskWeChatClient,
    get_client,
)
from bot.channels.wechat.settings import wechat_settings
from bot.texts import Rendered, text
from storage.models import OutboxMessage, Person, utcnow
from storage.settings import Settings
from workflow import deadlines

logger = logging.getLogger(__name__)


#: WeChat's customer-service window: hours after the person's last message ...
WINDOW_HOURS = 48
#: ... and messages within it.
WINDOW_MESSAGES = 5

#: Longest text of one customer-service message (characters).
MAX_MESSAGE = 2000


#: Seconds to wait after WeChat's frequency limit (45009).
FREQUENCY_BACKOFF = 60.0


def commands_footer(message: Rendered) -> str:
    """The message's text with its buttons as commands to copy (WeChat has no buttons)."""
    if not message.buttons:
        return message.text
    lines = [button.action for button in message.buttons]
    return f"{message.text}\n\n{text('wechat.commands')}\n" + "\n".join(lines)


class WeChatSender:
    """Sends outbox messages as customer-service messages, or template messages outside the
    window."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @property
    def client(self) -> RedeskWeChatClient:
        """This process's client."""
        return get_client(self.settings)

    def send(self, session: Session, person: Person, message: Rendered, row: OutboxMessage) -> None:
        """Sends one outbox message (its parts in order; a retry continues where it stopped)."""
        parts = split_text(commands_footer(message), MAX_MESSAGE)
        done = int(row.params.get("_parts_sent", 0))
        if row.params.get("_template"):
            self._send_template(person, message, row)
            return
        for index in range(done, len(parts)):
            if not self._window_open(person):
                self._send_template(person, message, row)
                return
            part = parts[index]
            try:
                self._call(partial(self.client.message.send_text, person.external_id, part))
            except _WindowClosed:
                self._send_template(person, message, row)
                return
            except TransientSendError:
                row.params = {**row.params, "_parts_sent": index}
                raise
            person.window_sent += 1
            session.add(person)
            row.params = {**row.params, "_parts_sent": index + 1}

    def _window_open(self, person: Person) -> bool:
        seen = person.last_inbound_at
        if seen is None or person.window_sent >= WINDOW_MESSAGES:
            return False
        return (utcnow() - seen).total_seconds() < WINDOW_HOURS * 3600

    def _send_template(self, person: Person, message: Rendered, row: OutboxMessage) -> None:
        own = wechat_settings(self.settings)
        template = own.template_id
        if not template:
            raise PermanentSendError(
                "outside the 48-hour window and REDESK_WECHAT_TEMPLATE_ID is not set"
            )
        row.params = {**row.params, "_template": True}
        values = template_values(message, row)
        data = {field: {"value": values[name]} for field, name in own.template_fields.items()}
        try:
            self._call(
                partial(self.client.message.send_template, person.external_id, template, data)
            )
        except _WindowClosed as exc:
            raise PermanentSendError(str(exc)) from None

    def _call(self, request: Callable[[], Any]) -> Any:
        """One API call with WeChat's errors mapped to send errors."""
        try:
            return request()
        except APILimitedException as exc:
            raise TransientSendError(
                f"WeChat 45009: {exc.errmsg}", retry_after=FREQUENCY_BACKOFF
            ) from None
        except WeChatClientException as exc:
            code = exc.errcode
            if code in (ERR_OUT_OF_TIME, ERR_OUT_OF_COUNT):
                raise _WindowClosed(f"WeChat {code}: {exc.errmsg}") from None
            if code in (ERR_REQUIRE_SUBSCRIBE, ERR_INVALID_OPENID):
                raise Unreachable(f"WeChat {code}: {exc.errmsg}") from None
            if code is None or code == ERR_SYSTEM_BUSY:
                raise TransientSendError(f"WeChat: {exc.errmsg or 'HTTP error'}") from None
            raise PermanentSendError(f"WeChat {code}: {exc.errmsg}") from None
        except requests.RequestException as exc:
            raise TransientSendError(f"WeChat: {type(exc).__name__}") from None


class _WindowClosed(Exception):
    """WeChat refused a customer-service message: outside the window (45015 / 45047)."""


def template_values(message: Rendered, row: OutboxMessage) -> dict[str, str]:
    """What may fill a template's fields (REDESK_WECHAT_TEMPLATE_FIELDS)."""
    lines = [line for line in message.text.splitlines() if line.strip()]
    return {
        "title": (lines[0] if lines else "")[:60],
        "number": str(row.params.get("number") or "—"),
        "status": str(row.params.get("state_label") or text("wechat.template_status")),
        "text": "\n".join(lines[1:] or lines)[:180],
        "time": deadlines.format_local(utcnow()),
    }
