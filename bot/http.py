"""What every HTTP endpoint shares (the app's and the channels'): the body read within a limit,
the client's address behind trusted proxies, the process runtime, and handing a stored chat to
the workers.

It imports nothing of bot.app or of the channels, so a channel package's routes use it without an
import cycle.
"""

from __future__ import annotations

import asyncio
import ipaddress

from starlette.requests import Request

from bot.runtime import Runtime
from storage.settings import IPNetwork


class BodyTooLarge(Exception):
    """The request body is over the endpoint's limit."""


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing more than `limit` bytes without reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def runtime_of(request: Request) -> Runtime:
    """The runtime the app serving `request` was made for."""
    runtime: Runtime = request.app.state.runtime
    return runtime


async def enqueue_inbound(channel: str, chat_id: str) -> None:
    """Asks a worker to handle a chat whose new message was just stored.

    bot.actors is imported here, not at the top: it imports the dispatcher, which imports the
    registry and so every channel package, whose routes import this module.
    """
    from bot import actors

    await asyncio.to_thread(actors.enqueue_inbound, channel, chat_id)


def client_address(request: Request, trusted: tuple[IPNetwork, ...]) -> str:
    """The address of the client behind `request`.

    The peer's address, unless the peer is one of the `trusted` proxies: then the right-most
    address of X-Forwarded-For that is not a trusted proxy (addresses further left were
    written by the client itself and prove nothing). When every address is a trusted proxy,
    the left-most one.
    """
    peer = request.client.host if request.client is not None else ""
    if not _trusted(peer, trusted):
        return peer
    forwarded = [
        part.strip()
        for header in request.headers.getlist("x-forwarded-for")
        for part in header.split(",")
        if part.strip()
    ]
    for address in reversed(forwarded):
        if not _trusted(address, trusted):
            return address
    return forwarded[0] if forwarded else peer


def _trusted(address: str, trusted: tuple[IPNetwork, ...]) -> bool:
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        # Not an address (a test client's name, garbage in the header): never a proxy.
        return False
    return any(parsed in network for network in trusted)
