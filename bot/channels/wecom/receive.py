"""Receiving WeCom callbacks (always encrypted).

`parse_callback` refuses XML with a DOCTYPE or entities (before any other parser sees it),
checks the msg_signature over the Encrypt element and the timestamp (older or newer than five
minutes is a replay), decrypts with wechatpy's WeChatCrypto (which refuses another corp's
ReceiveId), checks the inner ToUserName is this corp, and returns the message's natural key
(MsgId; FromUserName+CreateTime+Event+EventKey for events; TaskId+EventKey+presser for a
template_card_event), the chat (the member's UserID) and the inner XML. The shared nonce
memory (bot.channels.callbacks) refuses a (timestamp, nonce) already seen with another body.
The endpoint (the shared `receive` flow) stores the message in the inbox and only then
answers "" (WeCom's "no passive reply").
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import requests
from sqlmodel import Session
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from wechatpy.enterprise.crypto import WeChatCrypto
from wechatpy.enterprise.events import register_event
from wechatpy.enterprise.messages import ImageMessage, TextMessage, VoiceMessage
from wechatpy.enterprise.parser import parse_message
from wechatpy.events import BaseEvent
from wechatpy.fields import IntegerField, StringField

from bot.channels.callbacks import (
    CallbackRefused,
    check_fresh,
    field,
    receive,
    refused,
    safe_xml,
    same,
)
from bot.channels.wecom.client import NAME_TIMEOUT, ApiError, get_client
from bot.channels.wecom.settings import CHANNEL, wecom_settings
from bot.http import runtime_of
from bot.inbound import Callback, Inbound
from storage import queries
from storage.db import session_scope
from storage.settings import Settings

if TYPE_CHECKING:
    from bot.runtime import Runtime

logger = logging.getLogger(__name__)


#: Largest callback body accepted, in bytes.
CALLBACK_BODY_LIMIT = 256 * 1024

#: Longest UserID (WeCom's are at most 64 bytes).
MAX_USERID = 64

#: What a callback is answered with once stored (no passive reply).
SUCCESS = ""

#: The Event of a pressed template card button.
CARD_EVENT = "template_card_event"


@register_event(CARD_EVENT)
class TemplateCardEvent(BaseEvent):  # type: ignore[misc]
    """模板卡片事件推送: a member pressed a button of a template card the app sent."""

    agent = IntegerField("AgentID", 0)
    event = CARD_EVENT
    key = StringField("EventKey")
    task_id = StringField("TaskId")
    card_type = StringField("CardType")
    response_code = StringField("ResponseCode")


@dataclass(frozen=True)
class Parsed:
    """A verified, decrypted callback."""

    natural_key: str
    #: The member's UserID, or None for what is stored and ignored.
    chat: str | None
    xml: str
    #: The member's name from user/get, when redesk has none for them yet.
    name: str = ""


def _crypto(settings: Settings) -> WeChatCrypto:
    own = wecom_settings(settings)
    if not own.enabled:
        raise CallbackRefused(403, "wecom is off")
    return WeChatCrypto(own.token, own.aes_key, own.corp_id)


def check_params(params: dict[str, str], *, now: float | None = None) -> None:
    """Checks the shape of the signed parameters and the timestamp.

    Raises:
        CallbackRefused: 403 for a missing or malformed nonce or timestamp, or a stale one.
    """
    if not params.get("msg_signature"):
        raise CallbackRefused(403, "no msg_signature")
    check_fresh(params, now=now)


def verify_url(settings: Settings, params: dict[str, str], *, now: float | None = None) -> str:
    """The decrypted echostr of WeCom's URL verification.

    Raises:
        CallbackRefused: 403 for a bad signature, a stale timestamp or another corp's echostr.
    """
    crypto = _crypto(settings)
    check_params(params, now=now)
    try:
        echo = crypto.check_signature(
            params["msg_signature"], params["timestamp"], params["nonce"], params.get("echostr", "")
        )
    except Exception:  # bad signature, bad padding, another corp
        raise CallbackRefused(403, "bad msg_signature or echostr") from None
    return str(echo)


def parse_callback(
    settings: Settings, params: dict[str, str], body: bytes, *, now: float | None = None
) -> Parsed:
    """A callback's natural key, chat and inner XML, after every check.

    Raises:
        CallbackRefused: 403 (msg_signature, replay, another corp), 400 (malformed or
            hostile XML, missing fields).
    """
    crypto = _crypto(settings)
    check_params(params, now=now)
    # defusedxml first: wechatpy's own parsing (xmltodict) would expand entities.
    outer = safe_xml(body)
    if outer.tag != "xml" or not field(outer, "Encrypt"):
        raise CallbackRefused(400, "no Encrypt element")
    try:
        inner = str(
            crypto.decrypt_message(
                body.decode("utf-8"), params["msg_signature"], params["timestamp"], params["nonce"]
            )
        )
    except UnicodeDecodeError:
        raise CallbackRefused(400, "not UTF-8") from None
    except Exception as exc:  # wechatpy raises many kinds
        name = type(exc).__name__
        if name == "InvalidSignatureException":
            raise CallbackRefused(403, "bad msg_signature") from None
        if name == "InvalidCorpIdException":
            raise CallbackRefused(403, "another corp's message") from None
        raise CallbackRefused(400, "body does not decrypt") from None
    root = safe_xml(inner)
    own = wecom_settings(settings)
    if root.tag != "xml":
        raise CallbackRefused(400, "not a WeCom message")
    if not same(field(root, "ToUserName"), own.corp_id or ""):
        raise CallbackRefused(403, "another corp's message")
    sender, kind, created = (
        field(root, "FromUserName"),
        field(root, "MsgType").lower(),
        field(root, "CreateTime"),
    )
    if not sender or not kind or not created.isdigit() or len(sender) > MAX_USERID:
        raise CallbackRefused(400, "missing fields")
    message = _parse(inner)
    if kind == "event":
        event = field(root, "Event").lower()
        if not event:
            raise CallbackRefused(400, "missing fields")
        if isinstance(message, TemplateCardEvent):
            task_id = field(root, "TaskId")
            if not task_id:
                raise CallbackRefused(400, "missing fields")
            key = f"card:{task_id}:{sender}:{field(root, 'EventKey')[:40]}"
        else:
            key = f"{sender}:{created}:{event}:{field(root, 'EventKey')[:60]}"
        chat = sender if isinstance(message, TemplateCardEvent) else None
    else:
        msg_id = field(root, "MsgId")
        if not msg_id.isdigit():
            raise CallbackRefused(400, "missing fields")
        key, chat = msg_id, sender
    return Parsed(natural_key=key[:200], chat=chat, xml=inner)


def _parse(xml: str) -> Any:
    """wechatpy's message or event object of an XML body already checked by defusedxml."""
    try:
        return parse_message(xml)
    except Exception:  # xmltodict and wechatpy's fields raise many kinds
        raise CallbackRefused(400, "not a WeCom message") from None


def member_name(settings: Settings, session: Session, userid: str) -> str:
    """The member's name from user/get, when redesk has none for them yet ("" otherwise, and
    when WeCom does not answer: the name is only a courtesy)."""
    person = queries.find_person(session=session, channel=CHANNEL, external_id=userid)
    if person is not None and person.display_name:
        return ""
    try:
        answer = get_client(settings).call(
            "GET", "user/get", params={"userid": userid}, timeout=NAME_TIMEOUT
        )
    except (ApiError, requests.RequestException) as exc:
        logger.info("WeCom user/get gave no name (%s)", type(exc).__name__)
        return ""
    return str(answer.get("name") or "")[:100]


def store_callback(session: Session, parsed: Parsed) -> bool:
    """Stores a parsed callback in the inbox (with its member's name, if found); False for a
    repeat (WeCom's retry)."""
    payload = {"xml": parsed.xml, **({"name": parsed.name} if parsed.name else {})}
    inbox_id = queries.add_inbox(
        session=session,
        channel=CHANNEL,
        natural_key=parsed.natural_key,
        chat_id=parsed.chat or "-",
        payload=payload,
        status="pending" if parsed.chat else "done",
    )
    return inbox_id is not None


def to_inbound(chat_id: str, payload: dict[str, Any]) -> Inbound:
    """An inbox row's message as the channel-neutral Inbound."""
    message = parse_message(payload["xml"])
    base: dict[str, Any] = {
        "channel": CHANNEL,
        "chat_id": chat_id,
        "display_name": str(payload.get("name") or ""),
    }
    if isinstance(message, TextMessage):
        return Inbound(**base, text=message.content or "")
    if isinstance(message, ImageMessage):
        return Inbound(
            **base,
            attachments=[{"kind": "photo", "file_id": message.media_id, "url": message.image}],
        )
    if isinstance(message, VoiceMessage):
        return Inbound(
            **base,
            attachments=[{"kind": "voice", "file_id": message.media_id, "mime_type": "audio/amr"}],
        )
    if isinstance(message, TemplateCardEvent):
        code = message.response_code or ""
        return Inbound(
            **base,
            pressed=True,
            callback=Callback(
                id=code, token=message.key or "", chat_id=chat_id, message_id=0, message_text=""
            ),
            platform={"task_id": message.task_id or "", "response_code": code},
        )
    if isinstance(message, BaseEvent):
        return Inbound(**base, ignored=True)
    return Inbound(**base, unsupported=True)


def with_name(runtime: Runtime, parsed: Parsed) -> Parsed:
    """The callback with its member's name (user/get), when it has a member redesk has no
    name for."""
    if parsed.chat is None:
        return parsed
    with session_scope(runtime.engine) as session:
        name = member_name(runtime.settings, session, parsed.chat)
    return dataclasses.replace(parsed, name=name)


async def verify(request: Request) -> Response:
    """GET /wecom: WeCom's URL verification; answers the decrypted echostr as plain text."""
    runtime = runtime_of(request)
    try:
        echo = verify_url(runtime.settings, dict(request.query_params))
    except CallbackRefused as exc:
        return refused(CHANNEL, "WeCom", "verification", exc)
    return PlainTextResponse(echo)


async def callback(request: Request) -> Response:
    """POST /wecom: checks, decrypts and stores the message, then answers "".

    403 for a bad msg_signature, a replay (stale timestamp, or a timestamp and nonce already
    seen with another body) and another corp's message; 413 over the body limit; 400 for
    malformed or hostile XML; 503 when it cannot be stored (WeCom retries). A retry of a
    stored message is answered "" and changes nothing. WeCom's nonces have their own space
    in the nonce memory the WeChat channel shares.
    """
    return await receive(
        request,
        channel=CHANNEL,
        label="WeCom",
        limit=CALLBACK_BODY_LIMIT,
        check=lambda _settings, params: check_params(params),
        parse=parse_callback,
        store=store_callback,
        success=SUCCESS,
        complete=with_name,
        nonce_key=lambda nonce: f"wecom:{nonce}",
    )


#: The routes of the WeCom channel.
ROUTES: tuple[Route, ...] = (
    Route("/wecom", verify, methods=["GET"]),
    Route("/wecom", callback, methods=["POST"]),
)
