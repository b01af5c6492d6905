"""Sending on WeCom: texts (split at WeCom's 2,048 bytes), template cards with buttons, card
updates (a press's ResponseCode, or the code message/send returned for a card refresh), within
WeCom's per-member limit for all processes together (bot.ratelimit), 5xx and network errors
tried again without sending a part twice.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

import requests
from sqlmodel import Session

from bot import cards as stored_cards
from bot.channels.base import PermanentSendError, TransientSendError, Unreachable
from bot.channels.split import split_text
from bot.channels.wecom import cards
from bot.channels.wecom.client import (
    ERR_FREQUENCY,
    ERR_NO_SUCH_USER,
    ERR_NOBODY_VALID,
    ERR_NOT_IN_APP,
    ERR_SYSTEM_BUSY,
    ApiError,
    WeComClient,
    get_client,
)
from bot.channels.wecom.settings import wecom_settings
from bot.ratelimit import RateLimiter, make_limiter
from bot.texts import Rendered
from storage import queries
from storage.models import OutboxMessage, Person
from storage.settings import Settings
from workflow.cards import REFRESH_KEY

logger = logging.getLogger(__name__)


#: Longest text of one message (UTF-8 bytes; WeCom truncates longer ones).
MAX_MESSAGE = 2048

#: WeCom's limit: messages to one member from one app per minute ...
MEMBER_PER_MINUTE = 30
#: ... booked this much further apart, so that jitter never makes a 31st.
MEMBER_MARGIN = 1.05

#: Seconds to wait after WeCom's frequency limit (45009).
FREQUENCY_BACKOFF = 60.0

#: `pace` books a slot only if it comes within this many seconds.
PACE_WITHIN = 0.25

#: The outbox key of a card update after a press (params: response_code, replace_name).
UPDATE_KEY = "wecom.update"

#: The channel_state key prefix (then ".<outbox id>") of a card's task id and the
#: response_code message/send returned (used once, by the card's refresh).
CARD_STATE_KEY = "wecom.card"

#: Errors of a member who cannot be reached through the app.
UNREACHABLE: frozenset[int] = frozenset({ERR_NOBODY_VALID, ERR_NO_SUCH_USER, ERR_NOT_IN_APP})


def member_slots(userid: str) -> list[tuple[str, float]]:
    """The limiter slot of one message to member `userid`."""
    return [(f"wecom:member:{userid}", 60.0 / MEMBER_PER_MINUTE * MEMBER_MARGIN)]


class WeComSender:
    """Sends outbox messages through the app's message/send and update_template_card."""

    def __init__(self, settings: Settings, limiter: RateLimiter | None = None) -> None:
        self.settings = settings
        self.agent_id = wecom_settings(settings).agent_id or 0
        self.limiter = limiter or make_limiter(settings.redis_url)
        self._local = threading.local()

    @property
    def client(self) -> WeComClient:
        """This process's client."""
        return get_client(self.settings)

    # --- pacing ---------------------------------------------------------------------------

    def pace(self, person: Person, row: OutboxMessage) -> float | None:
        """Books and waits for the member's slot of `row`'s first message, with no
        transaction open; returns the seconds to come back after when it is further off."""
        if row.key in (UPDATE_KEY, REFRESH_KEY):
            return None
        booked, wait = self.limiter.try_reserve(member_slots(person.external_id), PACE_WITHIN)
        if not booked:
            return wait
        if wait > 0:
            time.sleep(wait)
        self._local.paced = person.external_id
        return None

    def _wait_slot(self, userid: str) -> None:
        if getattr(self._local, "paced", None) == userid:
            self._local.paced = None
            return
        wait = self.limiter.reserve(member_slots(userid))
        if wait > 0:
            time.sleep(wait)

    # --- sending --------------------------------------------------------------------------

    def send(self, session: Session, person: Person, message: Rendered, row: OutboxMessage) -> None:
        """Sends one outbox message (its parts in order; a retry continues where it stopped)."""
        if row.key == UPDATE_KEY:
            self._update(
                person.external_id,
                str(row.params.get("response_code") or ""),
                {"button": {"replace_name": message.text[:40] or "已处理"}},
            )
            return
        if row.key == REFRESH_KEY:
            self._refresh(session, person, row)
            return
        steps: list[tuple[str, Any]] = []
        groups = cards.chunks(list(message.buttons))
        if not groups or not cards.fits(message.text):
            steps += [
                ("text", part) for part in split_text(message.text, MAX_MESSAGE, unit="bytes")
            ]
        steps += [("card", (index, group)) for index, group in enumerate(groups)]
        done = int(row.params.get("_parts_sent", 0))
        for index in range(done, len(steps)):
            kind, value = steps[index]
            try:
                if kind == "text":
                    self._message(person.external_id, "text", {"content": value})
                else:
                    self._send_card(
                        session, person, message, row, value[0], value[1], record=len(groups) == 1
                    )
            except _MaybeSent:
                # The call reached WeCom but its answer was lost: counted as sent, never
                # sent twice.
                logger.warning("A WeCom message may have gone out unanswered; not resent")
            except (TransientSendError, Unreachable):
                row.params = {**row.params, "_parts_sent": index}
                raise
            row.params = {**row.params, "_parts_sent": index + 1}

    def _send_card(
        self,
        session: Session,
        person: Person,
        message: Rendered,
        row: OutboxMessage,
        index: int,
        group: list[Any],
        *,
        record: bool,
    ) -> None:
        assert row.id is not None
        task = cards.task_id(row.id, index)
        card = cards.template_card(session, person, message, task, group)
        answer = self._message(person.external_id, "template_card", card)
        if not record:
            return
        queries.set_channel_state(
            session=session,
            key=f"{CARD_STATE_KEY}.{row.id}",
            value=json.dumps({"task_id": task, "response_code": answer.get("response_code") or ""}),
        )
        stored_cards.record(
            session, person, row, message.text, list(message.buttons), chat_id=person.external_id
        )

    def _refresh(self, session: Session, person: Person, row: OutboxMessage) -> None:
        """Updates a stale card with the code its message/send returned: the current state
        under its text and only the buttons still possible."""
        stale = stored_cards.update_for(session, person, row)
        if stale is None:
            return
        key = f"{CARD_STATE_KEY}.{stale.card.outbox_id}"
        state = json.loads(queries.get_channel_state(session=session, key=key) or "{}")
        code = str(state.get("response_code") or "")
        if not code:
            # Used already (the card was refreshed once): WeCom takes no second update.
            stale.applied(session)
            return
        buttons = list(stale.message.buttons)[: cards.MAX_BUTTONS]
        if buttons:
            card = cards.template_card(session, person, stale.message, state["task_id"], buttons)
            self._update(person.external_id, code, {"template_card": card})
        else:
            line = stale.message.text.splitlines()[-1]
            self._update(person.external_id, code, {"button": {"replace_name": line[:40]}})
        queries.set_channel_state(
            session=session, key=key, value=json.dumps({**state, "response_code": ""})
        )
        stale.applied(session)

    def _message(self, userid: str, msgtype: str, content: dict[str, Any]) -> dict[str, Any]:
        """message/send to one member, within their limit."""
        self._wait_slot(userid)
        body = {"touser": userid, "msgtype": msgtype, "agentid": self.agent_id, msgtype: content}
        answer = self._call("message/send", body)
        if answer.get("invaliduser"):
            raise Unreachable(f"WeCom: {userid} is not a member of the app")
        return answer

    def _update(self, userid: str, code: str, change: dict[str, Any]) -> None:
        """update_template_card for the member who holds the card; an unusable code (used,
        expired) is logged, not retried."""
        body = {"userids": [userid], "agentid": self.agent_id, "response_code": code, **change}
        try:
            self._call("message/update_template_card", body)
        except (PermanentSendError, Unreachable) as exc:
            logger.warning("A WeCom card could not be updated: %s", exc)
        except _MaybeSent:
            return

    def _call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """One POST with WeCom's errors mapped to send errors."""
        try:
            answer: dict[str, Any] = self.client.call("POST", path, body=body)
            return answer
        except ApiError as exc:
            code = exc.errcode
            if code == ERR_FREQUENCY:
                raise TransientSendError(
                    f"WeCom 45009: {exc.errmsg}", retry_after=FREQUENCY_BACKOFF
                ) from None
            if code in UNREACHABLE:
                raise Unreachable(str(exc)) from None
            if code is None or code == ERR_SYSTEM_BUSY:
                raise TransientSendError(str(exc)) from None
            raise PermanentSendError(str(exc)) from None
        except requests.ReadTimeout:
            raise _MaybeSent() from None
        except requests.RequestException as exc:
            raise TransientSendError(f"WeCom: {type(exc).__name__}") from None


class _MaybeSent(Exception):
    """A call went out and its answer never came (a read timeout)."""
