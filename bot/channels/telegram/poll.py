"""getUpdates long polling (when redesk has no public URL for a webhook) and the committee group
chat.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from sqlmodel import Session

from bot.channels.telegram.client import ALLOWED_UPDATES, POLL_TIMEOUT, get_client
from bot.channels.telegram.receive import BadUpdate, classify, store_update
from bot.channels.telegram.settings import CHANNEL
from storage import queries
from storage.db import session_scope
from storage.models import Role

logger = logging.getLogger(__name__)

#: The channel_state key of the getUpdates offset.
OFFSET_KEY = "telegram.offset"


# --- polling and webhook ---------------------------------------------------------------------


class Poller(threading.Thread):
    """getUpdates long polling with the offset persisted, so a restart neither loses nor
    repeats updates (and a repeat would be deduplicated by update_id anyway)."""

    def __init__(self, runtime: Any, enqueue: Any) -> None:
        super().__init__(name="telegram-poller", daemon=True)
        self.runtime = runtime
        self.enqueue = enqueue
        self.stopping = threading.Event()

    def run(self) -> None:
        """Polls until stopped; network trouble is retried with backoff."""
        client = get_client(self.runtime.settings)
        backoff = 1.0
        while not self.stopping.is_set():
            try:
                with session_scope(self.runtime.engine) as session:
                    offset = int(queries.get_channel_state(session=session, key=OFFSET_KEY) or 0)
                updates = client.run(
                    client.get_raw_updates(
                        offset=offset,
                        long_poll=POLL_TIMEOUT,
                        allowed_updates=ALLOWED_UPDATES,
                    ),
                    timeout=POLL_TIMEOUT + 30,
                )
                self._store(updates)
                backoff = 1.0
            except Exception:  # the poller must outlive any failure
                logger.warning(
                    "Telegram polling failed; retrying in %.0f s", backoff, exc_info=True
                )
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, 60.0)

    def _store(self, updates: list[Any]) -> None:
        """Stores a getUpdates batch, each update on its own, and moves the offset past it."""
        if not updates:
            return
        chats: list[str] = []
        with session_scope(self.runtime.engine) as session:
            newest = -1
            for data in updates:
                update_id = data.get("update_id") if isinstance(data, dict) else None
                if isinstance(update_id, int) and not isinstance(update_id, bool):
                    # Even one that cannot be stored is confirmed: asking again gives it again.
                    newest = max(newest, update_id)
                try:
                    classified = classify(data)
                except BadUpdate as exc:
                    # Telegram never sends these; if it did, skipping is all that can be done.
                    logger.warning(
                        "getUpdates returned an item that cannot be stored (%s); skipped", exc
                    )
                    continue
                chat, is_new = store_update(session, data, classified)
                if chat and is_new:
                    chats.append(chat)
            if newest >= 0:
                queries.set_channel_state(session=session, key=OFFSET_KEY, value=str(newest + 1))
        for chat in dict.fromkeys(chats):
            self.enqueue(CHANNEL, chat)

    def stop(self) -> None:
        """Asks the poller to stop after the current long poll."""
        self.stopping.set()


def ensure_committee_chat(session: Session, chat_id: str) -> None:
    """The committee group chat as a person of role group (it receives the committee's cards)."""
    person = queries.get_or_create_person(
        session=session, channel=CHANNEL, external_id=str(chat_id), display_name="党委群"
    )
    if person.role != Role.GROUP:
        person.role = Role.GROUP
        session.add(person)
