"""WeChat's work around the handlers: follow, QR code scans, unsubscribe, the 我要反映 click, and
the customer-service window.
"""

from __future__ import annotations

import logging

from bot.channels.wechat.settings import CHANNEL
from bot.handlers import Outcome, centres
from bot.inbound import Inbound
from storage.models import Person
from workflow.service import Tx

logger = logging.getLogger(__name__)


class WeChatHooks:
    """Subscribe (plain or by QR code), SCAN, unsubscribe, the 我要反映 click, and the
    customer-service window."""

    def prepare(self, tx: Tx, person: Person, inbound: Inbound) -> Inbound | None:
        """The Inbound to handle, or None when the channel answered it itself."""
        if inbound.ignored:
            return None
        person.last_inbound_at = tx.now
        person.window_sent = 0
        if inbound.scene:
            # The last entry the person came through (a centre's QR code poster).
            person.scene = inbound.scene
            person.scene_at = tx.now
        tx.session.add(person)
        if inbound.rescanned:
            # A centre's QR code scanned by a follower: a resident moves to that centre.
            entry = centres.arrive(tx, person, inbound.scene)
            if entry.arrival is centres.Arrival.ENTERED and entry.centre is not None:
                tx.notify(person, "wechat.welcome_back_centre", centre=entry.centre.name)
                centres.file_kept(tx, person)
            elif not centres.ask_after_unknown(tx, person, entry):
                tx.notify(person, "wechat.welcome_back")
            return None
        if inbound.left is True:
            person.unreachable = True
            return None
        if inbound.left is False:
            # Following, plainly or by a centre's QR code (qrscene_CODE).
            entry = centres.arrive(tx, person, inbound.scene)
            if entry.arrival is centres.Arrival.ENTERED and entry.centre is not None:
                tx.notify(person, "wechat.welcome_centre", centre=entry.centre.name)
                if centres.file_kept(tx, person):
                    return None
            else:
                tx.notify(person, "wechat.welcome")
                if centres.ask_after_unknown(tx, person, entry):
                    return None
            return Inbound(channel=CHANNEL, chat_id=inbound.chat_id, text="帮助", pressed=True)
        if inbound.pressed and not inbound.text:
            tx.notify(person, "wechat.report")
            return None
        return inbound

    def finish(self, tx: Tx, person: Person, inbound: Inbound, outcome: Outcome) -> None:
        """Nothing to do after the handlers on WeChat (no cards to edit)."""
