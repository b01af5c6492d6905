"""What a channel adapter provides to the dispatcher: sending a rendered message."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from sqlmodel import Session

from bot.texts import Rendered
from storage.models import OutboxMessage, Person


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

    def send(
        self, session: Session, person: Person, message: Rendered, row: OutboxMessage
    ) -> None:
        """Sends `message`; a sender writing to the database uses `session` (same commit).

        Raises:
            TransientSendError, PermanentSendError, Unreachable.
        """
