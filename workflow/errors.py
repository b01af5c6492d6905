"""The workflow's error hierarchy."""

from __future__ import annotations

from collections.abc import Sequence


class WorkflowError(Exception):
    """Base class for all workflow errors."""


class TransitionNotAllowed(WorkflowError):
    """The action cannot happen in the request's current state."""

    def __init__(self, action: str, state: str) -> None:
        super().__init__(f"Can't {action} when in {state}.")
        self.action = action
        self.state = state


class NotPermitted(WorkflowError):
    """The actor may not perform this action on this request."""

    def __init__(self, action: str, reason: str = "role") -> None:
        super().__init__(f"Not permitted to {action} ({reason}).")
        self.action = action
        self.reason = reason


class UnknownRequest(WorkflowError):
    """No request has this number (or the number is malformed)."""

    def __init__(self, number: str) -> None:
        super().__init__(f"Unknown request {number!r}.")
        self.number = number


class InvalidInput(WorkflowError):
    """An argument is missing, too long or not one of the allowed values."""

    def __init__(self, what: str, **params: object) -> None:
        super().__init__(f"Invalid input: {what}.")
        self.what = what
        self.params = params


class UnknownDepartment(WorkflowError):
    """No active department of this name serves the request's centre."""

    def __init__(self, name: str, choices: Sequence[str] | None = None) -> None:
        super().__init__(f"Unknown department {name!r}.")
        self.name = name
        #: The names that would have been accepted; None: not known (every active one).
        self.choices = list(choices) if choices is not None else None


class UnknownCentre(WorkflowError):
    """No active centre answers to this code or name (for 下派: no direct, active child of the
    request's centre does)."""

    def __init__(self, typed: str, choices: Sequence[str] = ()) -> None:
        super().__init__(f"Unknown centre {typed!r}.")
        #: What the user typed.
        self.typed = typed
        #: The names that would have been accepted (shown in the answer), if known.
        self.choices = list(choices)


class BindRefused(WorkflowError):
    """Too many failed 绑定 from this person or address: refused without reading the code."""

    def __init__(self) -> None:
        super().__init__("Too many failed binds.")


class LinkRefused(WorkflowError):
    """A chat identity that holds a role of its own, or is an account's person, cannot be
    linked to another account."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"Link refused: {reason}.")
        self.reason = reason


class InvitationInvalid(WorkflowError):
    """The invitation code is unknown, used or expired."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"Invitation {reason}.")
        self.reason = reason


# --- time bank (时间银行) ----------------------------------------------------------------------


class TimeBankError(WorkflowError):
    """Base class of the time bank's refusals: each changes nothing."""


class SelfCredit(TimeBankError):
    """Nobody records hours to, or corrects, their own account."""

    def __init__(self) -> None:
        super().__init__("Nobody credits themselves.")


class DailyCapExceeded(TimeBankError):
    """The confirmation would take the person's hours of one day over the cap."""

    def __init__(self, cap: int, already: int, asked: int) -> None:
        super().__init__(f"Day cap of {cap} minutes: {already} already confirmed, {asked} asked.")
        #: All three in minutes.
        self.cap = cap
        self.already = already
        self.asked = asked


class BalanceShort(TimeBankError):
    """The volunteer's balance does not cover the redemption or the negative adjustment."""

    def __init__(self, balance: int, needed: int) -> None:
        super().__init__(f"Balance {balance} minutes, {needed} needed.")
        #: Both in minutes.
        self.balance = balance
        self.needed = needed


class OutOfStock(TimeBankError):
    """None of the reward is left."""

    def __init__(self, name: str) -> None:
        super().__init__(f"{name!r} is out of stock.")
        self.name = name


class RewardUnavailable(TimeBankError):
    """The reward is disabled, or not in the catalogue at all."""

    def __init__(self, name: str) -> None:
        super().__init__(f"No reward {name!r} on offer.")
        self.name = name


class AlreadyGiven(TimeBankError):
    """The redemption was handed over already."""

    def __init__(self, redemption_id: int) -> None:
        super().__init__(f"Redemption {redemption_id} was given already.")
        self.redemption_id = redemption_id
