"""Receiving WeChat callbacks in plain and safe mode.

`parse_callback` checks the signature (constant time) and the timestamp (replays older than five
minutes are refused), refuses XML with a DOCTYPE or entities, decrypts a safe-mode body, and
returns the message's natural key (MsgId; FromUserName+CreateTime+Event for events), the chat
(the sender's openid) and the inner XML. The shared nonce memory (bot.channels.callbacks
`check_nonce`) refuses a (timestamp, nonce) already seen with another body (the plain-mode
signature does not cover the body). The endpoints (the shared `receive` flow) store the
message in the inbox and answer "success" at once; everything else goes out later as
customer-service messages. `to_inbound` turns a stored message into the channel-neutral Inbound.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from dataclasses import dataclass
from typing import Any

from sqlmodel import Session
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from wechatpy import parse_message
from wechatpy.crypto import PrpCrypto
from wechatpy.events import (
    BaseEvent,
    ClickEvent,
    ScanEvent,
    SubscribeEvent,
    SubscribeScanEvent,
    SubscribeScanProductEvent,
    UnsubscribeEvent,
)
from wechatpy.messages import (
    ImageMessage,
    LinkMessage,
    LocationMessage,
    ShortVideoMessage,
    TextMessage,
    VideoMessage,
    VoiceMessage,
)

from bot.channels.callbacks import (
    CallbackRefused,
    check_fresh,
    field,
    receive,
    refused,
    safe_xml,
    same,
)
from bot.channels.wechat.menu import MENU_HELP, MENU_MINE, MENU_REPORT
from bot.channels.wechat.settings import CHANNEL, wechat_settings
from bot.http import runtime_of
from bot.inbound import Inbound
from storage import queries
from storage.settings import Settings

logger = logging.getLogger(__name__)


#: Largest callback body accepted, in bytes.
CALLBACK_BODY_LIMIT = 1024 * 1024

#: What WeChat's callback is answered with once the message is stored.
SUCCESS = "success"


#: wechatpy's events of someone starting to follow the account: a plain subscribe, one by
#: scanning a parametric QR code (EventKey qrscene_<scene>, which wechatpy turns into
#: SubscribeScanEvent) and one from a product page (SubscribeScanProductEvent). None of the
#: latter two is a subclass of SubscribeEvent, hence the tuple. They are welcomed.
FOLLOW_EVENTS: tuple[type[BaseEvent], ...] = (
    SubscribeEvent,
    SubscribeScanEvent,
    SubscribeScanProductEvent,
)

#: Events handled in the person's order; every other event wechatpy knows (VIEW, LOCATION
#: reports, card, invoice, device and verification notices ...) is stored as done and ignored.
HANDLED_EVENTS: tuple[type[BaseEvent], ...] = (
    *FOLLOW_EVENTS,
    ScanEvent,
    UnsubscribeEvent,
    ClickEvent,
)

#: Longest entry scene kept (WeChat's scene_str is at most 64 characters).
MAX_SCENE = 64

#: Voice Format -> content type (the file's extension comes from it).
VOICE_TYPES: dict[str, str] = {
    "amr": "audio/amr",
    "speex": "audio/speex",
    "mp3": "audio/mpeg",
    "silk": "audio/silk",
}


@dataclass(frozen=True)
class Parsed:
    """A verified, decrypted callback."""

    natural_key: str
    #: The sender's openid, or None for what is stored and ignored (VIEW clicks and the like).
    chat: str | None
    xml: str
    #: The QR code scene a subscribe or SCAN event names, if any.
    scene: str | None = None


# --- receiving ------------------------------------------------------------------------------


def signature(*parts: str) -> str:
    """WeChat's signature: SHA-1 of the sorted parts, concatenated."""
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()


def check_request(settings: Settings, params: dict[str, str], *, now: float | None = None) -> None:
    """Checks the plain signature and the timestamp of a callback or verification request.

    Raises:
        CallbackRefused: 403 for a bad signature, a stale timestamp (replay) or no channel.
    """
    own = wechat_settings(settings)
    token = own.token or ""
    if not own.enabled or not token:
        raise CallbackRefused(403, "wechat is off")
    timestamp, nonce = params.get("timestamp", ""), params.get("nonce", "")
    if not same(params.get("signature", ""), signature(token, timestamp, nonce)):
        raise CallbackRefused(403, "bad signature")
    check_fresh(params, now=now)


def parse_callback(settings: Settings, params: dict[str, str], body: bytes) -> Parsed:
    """A callback's natural key, chat and inner XML, after every check.

    Raises:
        CallbackRefused: 403 (signature, msg_signature, replay), 400 (malformed or hostile XML,
            a body that does not decrypt, missing fields).
    """
    check_request(settings, params)
    root = safe_xml(body)
    own = wechat_settings(settings)
    if own.aes_key:
        if params.get("encrypt_type") != "aes":
            raise CallbackRefused(400, "plain body in safe mode")
        encrypted = field(root, "Encrypt")
        if not encrypted:
            raise CallbackRefused(400, "no Encrypt element")
        expected = signature(
            own.token or "", params.get("timestamp", ""), params.get("nonce", ""), encrypted
        )
        if not same(params.get("msg_signature", ""), expected):
            raise CallbackRefused(403, "bad msg_signature")
        inner = decrypt(settings, encrypted)
        root = safe_xml(inner)
    else:
        try:
            inner = body.decode("utf-8")
        except UnicodeDecodeError:
            raise CallbackRefused(400, "not UTF-8") from None
    if root.tag != "xml":
        raise CallbackRefused(400, "not a WeChat message")
    sender, kind, created = (
        field(root, "FromUserName"),
        field(root, "MsgType").lower(),
        field(root, "CreateTime"),
    )
    if not sender or not kind or not created.isdigit() or len(sender) > 128:
        raise CallbackRefused(400, "missing fields")
    scene: str | None = None
    if kind == "event" or kind.startswith("device_"):
        # Device notices (device_text, device_event) are events to wechatpy as well.
        event = field(root, "Event").lower() or (kind if kind != "event" else "")
        if not event:
            raise CallbackRefused(400, "missing fields")
        # FromUserName + CreateTime (DESIGN §2), with the event and its key, so that two
        # different menu clicks within one second are two messages (a double tap is one).
        key = f"{sender}:{created}:{event}:{field(root, 'EventKey')[:60]}"
        message = _parse(inner)
        chat = sender if isinstance(message, HANDLED_EVENTS) else None
        scene = scene_of(message)
    else:
        msg_id = field(root, "MsgId")
        if not msg_id.isdigit():
            raise CallbackRefused(400, "missing fields")
        key, chat = msg_id, sender
    return Parsed(natural_key=key[:200], chat=chat, xml=inner, scene=scene)


def _parse(xml: str) -> Any:
    """wechatpy's message or event object of an XML body already checked by defusedxml."""
    try:
        return parse_message(xml)
    except Exception:  # xmltodict and wechatpy's fields raise many kinds
        raise CallbackRefused(400, "not a WeChat message") from None


def scene_of(message: Any) -> str | None:
    """The parametric QR code scene a subscribe (qrscene_<scene>) or SCAN (<scene>) names.

    A product-page subscribe's EventKey (scanbarcode|..., scanimage|...) names a product, not
    an entry, and gives None.
    """
    if isinstance(message, SubscribeScanEvent | ScanEvent):
        scene = (message.scene_id or "").strip()
        return scene[:MAX_SCENE] or None
    return None


def decrypt(settings: Settings, encrypted: str) -> str:
    """A safe-mode message's inner XML.

    Raises:
        CallbackRefused: 400 when it does not decrypt or was meant for another account.
    """
    try:
        return str(
            PrpCrypto(_aes_key(settings)).decrypt(encrypted, wechat_settings(settings).app_id)
        )
    except Exception:  # wechatpy raises anything from bad padding to bad app id
        raise CallbackRefused(400, "body does not decrypt") from None


def _aes_key(settings: Settings) -> bytes:
    return base64.b64decode((wechat_settings(settings).aes_key or "") + "=")


def store_callback(session: Session, parsed: Parsed) -> bool:
    """Stores a parsed callback in the inbox; False for a repeat (WeChat's retry)."""
    inbox_id = queries.add_inbox(
        session=session,
        channel=CHANNEL,
        natural_key=parsed.natural_key,
        chat_id=parsed.chat or "-",
        payload={"xml": parsed.xml},
        status="pending" if parsed.chat else "done",
        scene=parsed.scene,
    )
    return inbox_id is not None


def to_inbound(chat_id: str, payload: dict[str, Any]) -> Inbound:
    """An inbox row's message as the channel-neutral Inbound."""
    message = parse_message(payload["xml"])
    base: dict[str, Any] = {"channel": CHANNEL, "chat_id": chat_id}
    if isinstance(message, TextMessage):
        return Inbound(**base, text=message.content or "", origin=f"wx:{message.id}")
    if isinstance(message, ImageMessage):
        return Inbound(
            **base,
            attachments=[{"kind": "photo", "file_id": message.media_id, "url": message.image}],
        )
    if isinstance(message, VoiceMessage):
        voice_format = (message.format or "amr").strip().lower()
        return Inbound(
            **base,
            text=(message.recognition or "").strip(),
            attachments=[
                {
                    "kind": "voice",
                    "file_id": message.media_id,
                    "mime_type": VOICE_TYPES.get(voice_format, f"audio/{voice_format}"),
                }
            ],
        )
    if isinstance(message, VideoMessage | ShortVideoMessage):
        return Inbound(**base, attachments=[{"kind": "video", "file_id": message.media_id}])
    if isinstance(message, LocationMessage):
        latitude, longitude = message.location
        return Inbound(
            **base,
            attachments=[
                {
                    "kind": "location",
                    "latitude": float(latitude),
                    "longitude": float(longitude),
                    "label": message.label or None,
                }
            ],
        )
    if isinstance(message, LinkMessage):
        parts = [message.title, message.description, message.url]
        return Inbound(**base, text="\n".join(part for part in parts if part))
    if isinstance(message, FOLLOW_EVENTS):
        return Inbound(**base, left=False, scene=scene_of(message))
    if isinstance(message, ScanEvent):
        return Inbound(**base, rescanned=True, scene=scene_of(message))
    if isinstance(message, UnsubscribeEvent):
        return Inbound(**base, left=True)
    if isinstance(message, ClickEvent):
        return Inbound(**base, text=_MENU_TEXT.get(message.key or "", "帮助"), pressed=True)
    if isinstance(message, BaseEvent):
        return Inbound(**base, ignored=True)
    return Inbound(**base, unsupported=True)


#: A menu click -> the command it stands for ("" asks for the request itself).
_MENU_TEXT: dict[str, str] = {MENU_REPORT: "", MENU_MINE: "查询", MENU_HELP: "帮助"}


async def verify(request: Request) -> Response:
    """GET /wechat: WeChat's server verification; echoes `echostr` when the signature holds."""
    runtime = runtime_of(request)
    params = dict(request.query_params)
    try:
        check_request(runtime.settings, params)
    except CallbackRefused as exc:
        return refused(CHANNEL, "WeChat", "verification", exc)
    return PlainTextResponse(params.get("echostr", "")[:200])


async def callback(request: Request) -> Response:
    """POST /wechat: checks, decrypts and stores the message, then answers "success".

    403 for a bad signature or msg_signature and for a replay (timestamp older than five
    minutes, or a timestamp and nonce already seen with another body), 413 over 1 MB, 400 for
    malformed or hostile XML, a body that does not decrypt or missing fields, 503 when it
    cannot be stored (WeChat retries). A retry of a stored message is answered "success" and
    changes nothing.
    """
    return await receive(
        request,
        channel=CHANNEL,
        label="WeChat",
        limit=CALLBACK_BODY_LIMIT,
        check=check_request,
        parse=parse_callback,
        store=store_callback,
        success=SUCCESS,
    )


#: The routes of the WeChat channel.
ROUTES: tuple[Route, ...] = (
    Route("/wechat", verify, methods=["GET"]),
    Route("/wechat", callback, methods=["POST"]),
)
