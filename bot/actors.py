"""dramatiq actors: handle_inbound, deliver, sweep.

They live in bot/ (not workflow/) because they call the channel adapters; workflow stays free
of platform code. Every actor is idempotent: dramatiq delivers at least once.
"""

from __future__ import annotations

import logging

import dramatiq

from bot import dispatch
from bot.channels.registry import CHANNELS
from bot.runtime import get_runtime
from workflow import broker as broker_module

logger = logging.getLogger(__name__)

broker_module.current()

#: Retries of a failed actor run, with exponential backoff between 0.5 s and 1 min.
MAX_RETRIES = 20
MIN_BACKOFF_MS = 500
MAX_BACKOFF_MS = 60_000


@dramatiq.actor(
    queue_name="inbound",
    max_retries=MAX_RETRIES,
    min_backoff=MIN_BACKOFF_MS,
    max_backoff=MAX_BACKOFF_MS,
)
def handle_inbound(channel: str, chat_id: str) -> None:
    """Handles every pending inbox message of one chat, in order, then enqueues deliveries."""
    runtime = get_runtime()
    with_media: list[int] = []
    written = dispatch.process_chat(runtime, channel, chat_id, seen_media=with_media)
    enqueue_deliveries(written)
    if with_media:
        fetch_media.send()


@dramatiq.actor(
    queue_name="maintenance",
    max_retries=MAX_RETRIES,
    min_backoff=MIN_BACKOFF_MS,
    max_backoff=MAX_BACKOFF_MS,
)
def fetch_media() -> None:
    """Downloads media not fetched yet (WeChat keeps them three days)."""
    dispatch.fetch_media(get_runtime())


@dramatiq.actor(
    queue_name="outbound",
    max_retries=MAX_RETRIES,
    min_backoff=MIN_BACKOFF_MS,
    max_backoff=MAX_BACKOFF_MS,
)
def deliver(outbox_id: int) -> None:
    """Sends the recipient's due messages in order; schedules itself again for what must wait."""
    retry_in = dispatch.deliver(get_runtime(), outbox_id)
    if retry_in is not None:
        deliver.send_with_options(args=(outbox_id,), delay=int(retry_in * 1000))


@dramatiq.actor(queue_name="maintenance", max_retries=0)
def tick() -> None:
    """Reminders, escalations, the digest and auto-close that are due (each done once)."""
    enqueue_deliveries(dispatch.tick(get_runtime()))


@dramatiq.actor(queue_name="maintenance", max_retries=0)
def sweep() -> None:
    """Re-enqueues inbox and outbox rows left unfinished (a crash, an emptied Redis)."""
    chats, outbox = dispatch.stale_work(get_runtime())
    for channel, chat_id in chats:
        handle_inbound.send(channel, chat_id)
    enqueue_deliveries(outbox)
    settings = get_runtime().settings
    if any(channel.has_media(settings) for channel in CHANNELS):
        fetch_media.send()
    if chats or outbox:
        logger.info("Sweep re-enqueued %d chats and %d deliveries", len(chats), len(outbox))


def enqueue_inbound(channel: str, chat_id: str) -> None:
    """Asks a worker to handle a chat's new message; the sweeper covers a failed enqueue."""
    try:
        handle_inbound.send(channel, chat_id)
    except Exception:  # the row is stored; the sweeper will enqueue it
        logger.warning("Could not enqueue inbound work for a %s chat", channel, exc_info=True)


def enqueue_deliveries(outbox_ids: list[int]) -> None:
    """Asks workers to deliver new outbox rows, one job per recipient."""
    try:
        for outbox_id in dispatch.first_per_person(get_runtime(), outbox_ids):
            deliver.send(outbox_id)
    except Exception:  # the rows are stored; the sweeper will enqueue them
        logger.warning("Could not enqueue %d deliveries", len(outbox_ids), exc_info=True)


__all__ = [
    "deliver",
    "enqueue_deliveries",
    "enqueue_inbound",
    "fetch_media",
    "tick",
    "handle_inbound",
    "sweep",
]
