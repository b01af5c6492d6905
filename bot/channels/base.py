"""The channel contract: what a platform (Telegram, WeChat, WeCom, the web desk, ...)
implements once, and what the dispatcher, the server, the handlers, the catalogue, the exports
and the CLI read from it through the one registry (bot/channels/registry.py, `CHANNELS`).

A channel subclasses `Channel` and overrides what it needs; every hook has a no-op default
(the model is dramatiq's Middleware). Its settings are a `ChannelSettings` model read from its
own REDESK_<NAME>_* variables and the same .env file as the rest of the settings.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from sqlmodel import Session

from bot.texts import Rendered
from storage.models import Attachment, OutboxMessage, Person
from storage.settings import Section, Settings

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

    from bot.handlers import Outcome
    from bot.inbound import Inbound
    from bot.runtime import Runtime
    from workflow.service import Tx


class SendError(Exception):
    """Base class for failures to send."""


class TransientSendError(SendError):
    """Try again later (network error, 5xx, rate limit); `retry_after` seconds if known."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentSendError(SendError):
    """Never try again (a malformed message, a rejected request)."""


class Unreachable(SendError):
    """The person cannot be reached on this channel any more (blocked, unsubscribed)."""


class ChannelError(Exception):
    """A channel cannot start (a refused token, an unreachable platform): one line that says
    what to fix; `redesk run` stops with it."""


class CommandFailed(ChannelError):
    """A channel's own CLI verb failed: one line, and the `redesk` exit code to end with."""

    #: The exit codes a verb may end with (those of admin_scripts.cli.Exit).
    FAILURE = 1
    CONFIG = 3
    UNAVAILABLE = 5

    def __init__(self, message: str, code: int = FAILURE) -> None:
        super().__init__(message)
        self.code = code


@runtime_checkable
class Pacer(Protocol):
    """A sender that waits for its platform's rate limits outside the delivery transaction."""

    def pace(self, person: Person, row: OutboxMessage) -> float | None:
        """Waits until `row` may be sent (called with no transaction open).

        Returns:
            None when `row` may go now; else seconds after which to try again (a wait too
            long to spend holding a worker thread).
        """


class Sender(Protocol):
    """Sends one rendered outbox message to a person of the sender's channel."""

    def send(self, session: Session, person: Person, message: Rendered, row: OutboxMessage) -> None:
        """Sends `message`; a sender writing to the database uses `session` (same commit).

        Raises:
            TransientSendError, PermanentSendError, Unreachable.
        """


class ChannelSettings(Section):
    """A channel's own settings. Subclasses set `model_config`'s env_prefix (REDESK_<NAME>_)
    and say when the channel is on; `secrets` and `check_production` (storage.settings.Section)
    name what production refuses as a placeholder and what the logs mask."""

    @property
    def enabled(self) -> bool:
        """Whether these settings switch the channel on."""
        return False


def http_url(value: str) -> str:
    """A platform API's base URL, checked (http:// or https://) and without a trailing slash:
    the `api_url` validator of the channels' settings (`field_validator("api_url")(http_url)`).

    Raises:
        ValueError: not an http(s):// URL.
    """
    if not value.startswith(("https://", "http://")):
        raise ValueError("must be an http(s):// URL")
    return value.rstrip("/")


#: What `start` prints through: one line for the operator.
Say = Callable[[str], None]


class Stoppable(Protocol):
    """Something a channel started (a poller thread) and stops at shutdown."""

    def stop(self) -> None:
        """Stops it and waits for it to finish."""


class Channel:
    """One platform redesk talks on. Subclasses set the class attributes and override the
    hooks they need; `name` and `to_inbound` are required."""

    #: The channel's name: stored on people, inbox and outbox rows (never changed once used).
    name: ClassVar[str]
    #: What people read for the channel (histories, exports, statistics).
    label: ClassVar[str]
    #: The channel's settings model, or None for a channel that needs none (the web desk).
    settings_model: ClassVar[type[ChannelSettings] | None] = None
    #: Catalogue entries the channel adds (keys "<name>.*"), merged into bot/texts.py's.
    texts: ClassVar[Mapping[str, str]] = {}
    #: Whether its messages can carry buttons; without, messages carry command texts to copy.
    buttons: ClassVar[bool] = True
    #: Whether a delivered card can be updated in place (bot/cards.py records its cards); a
    #: card refresh for a channel without is skipped unsent.
    cards: ClassVar[bool] = False
    #: Whether the handlers limit floods (REDESK_FLOOD_PER_MINUTE) of this channel; a channel
    #: that refuses a flood at the door itself (the web API's 429) says False.
    flood_checked_by_handlers: ClassVar[bool] = True
    #: Outbox keys that answer a press or edit a card rather than write to the person's own
    #: chat: they go out even when that chat is closed.
    not_to_chat: ClassVar[frozenset[str]] = frozenset()

    # --- settings ---------------------------------------------------------------------------

    def settings(self, settings: Settings) -> ChannelSettings | None:
        """The channel's settings, read once per process settings (None without a model)."""
        if self.settings_model is None:
            return None
        return settings.section(self.settings_model)

    def enabled(self, settings: Settings) -> bool:
        """Whether the channel is on; a channel without settings is always on."""
        own = self.settings(settings)
        return own is None or own.enabled

    def describe(self, settings: Settings) -> str:
        """The line `redesk run` prints about the channel (after "channel <name>: ")."""
        return "on" if self.enabled(settings) else "off"

    # --- receiving --------------------------------------------------------------------------

    def routes(self) -> Sequence[BaseRoute]:
        """The HTTP routes the channel serves (webhooks, callbacks); bot.app mounts them only
        while the channel is on (off, their paths answer 404)."""
        return ()

    def to_inbound(self, chat_id: str, payload: dict[str, Any]) -> Inbound:
        """Turns a stored inbox row's payload into the channel-neutral Inbound."""
        raise NotImplementedError

    # --- around the handlers ----------------------------------------------------------------

    def prepare(self, tx: Tx, person: Person, inbound: Inbound) -> Inbound | None:
        """The Inbound to handle, or None when the channel answered it itself (a pressed
        button resolved or refused, a follow event welcomed)."""
        return inbound

    def finish(self, tx: Tx, person: Person, inbound: Inbound, outcome: Outcome) -> None:
        """What the channel does once the handlers are done (answer a press, edit a card)."""

    # --- sending ----------------------------------------------------------------------------

    def sender(self, runtime: Runtime) -> Sender | None:
        """The channel's sender (the dispatcher makes it once per settings), or None when the
        channel is off."""
        return None

    def has_media(self, settings: Settings) -> bool:
        """Whether the channel has attachments to download (see `fetch_media`)."""
        return False

    def fetch_media(self, settings: Settings, attachment: Attachment) -> str:
        """Downloads one attachment; returns its stored path, or bot.media.MEDIA_GONE.

        Raises:
            TransientSendError: The platform could not be reached; try again later.
        """
        raise NotImplementedError

    # --- lifecycle --------------------------------------------------------------------------

    def start(
        self, runtime: Runtime, say: Say, enqueue: Callable[[str, str], None]
    ) -> Stoppable | None:
        """Starts what the channel runs beside the server (`redesk run` only): token checks,
        webhook registration, a poller handing chats to `enqueue(channel, chat_id)`.

        By default it says the channel's `describe` line; a channel that overrides it says
        its own line once started.

        Raises:
            ChannelError: the channel cannot run as configured (the server does not start).
        """
        say(f"channel {self.name}: {self.describe(runtime.settings)}")
        return None

    def close(self) -> None:
        """Releases the channel's clients (connection pools) at shutdown or between tests."""

    def commands(self) -> Any | None:
        """A typer.Typer of the channel's own CLI verbs (`redesk <name> ...`), or None."""
        return None
