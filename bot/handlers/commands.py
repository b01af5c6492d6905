"""Chat commands: the words and slash aliases of DESIGN §5, and how a line is split."""

from __future__ import annotations

import re
from dataclasses import dataclass

_WHITESPACE = re.compile(r"\s+")

#: Command word or slash alias -> command name.
COMMANDS: dict[str, str] = {
    "帮助": "help",
    "/help": "help",
    "/start": "help",
    "绑定": "bind",
    "/bind": "bind",
    "查询": "status",
    "/status": "status",
    "补充": "supplement",
    "/add": "supplement",
    "撤销": "cancel",
    "/cancel": "cancel",
    "评价": "rate",
    "/rate": "rate",
    "待办": "inbox",
    "/inbox": "inbox",
    "受理": "accept",
    "/accept": "accept",
    "转单": "forward",
    "/forward": "forward",
    "撤回转单": "recall",
    "/recall": "recall",
    "驳回": "reject",
    "/reject": "reject",
    "上报": "refer",
    "/escalate": "refer",
    "下派": "assign",
    "/assign": "assign",
    "办结": "complete",
    "/done": "complete",
    "回单": "approve",
    "/approve": "approve",
    "返工": "send_back",
    "/sendback": "send_back",
    "接收": "take",
    "/take": "take",
    "退单": "return",
    "/return": "return",
    "取消": "abort",
    "/abort": "abort",
    "登记": "register",
    "/register": "register",
    "切换": "switch",
    "/switch": "switch",
    "/centres": "browse",
}

#: The slash command a Telegram deep link (t.me/<bot>?start=CODE) sends as "/start CODE".
START = "/start"


@dataclass(frozen=True)
class Command:
    """A parsed command line."""

    name: str
    #: The first argument (usually a request number), or "".
    first: str
    #: Everything after the first argument, or "".
    rest: str


def parse(text: str) -> Command | None:
    """The command on a line, or None when the line is not a command.

    `受理 SQ-20260101-0001`, `/accept@redesk_bot SQ-20260101-0001` and `受理SQ-...` (no space
    after a Chinese command word) are all understood. A line starting with "/" that is no known
    command parses as the command "unknown".
    """
    stripped = text.strip()
    if not stripped:
        return None
    head, tail = _split(stripped)
    head = head.split("@", 1)[0] if head.startswith("/") else head
    name = COMMANDS.get(head.lower() if head.startswith("/") else head)
    if name is None and not head.startswith("/"):
        # A Chinese command word glued to its argument: 查询SQ-20260101-0001.
        for word, command in COMMANDS.items():
            if (
                not word.startswith("/")
                and head.startswith(word)
                and len(head) > len(word)
                and head[len(word) :].upper().startswith("SQ-")
            ):
                name, tail = command, head[len(word) :] + (" " + tail if tail else "")
                break
    if name is None:
        return Command("unknown", "", "") if head.startswith("/") else None
    first, rest = _split(tail.strip())
    return Command(name, first, rest)


def _split(text: str) -> tuple[str, str]:
    """The first word and the rest (any whitespace, newlines included, separates them)."""
    parts = _WHITESPACE.split(text, maxsplit=1)
    return parts[0], (parts[1].strip() if len(parts) > 1 else "")


def start_payload(text: str) -> str | None:
    """The payload of a "/start <payload>" line (a Telegram deep link), or None.

    `/start` alone, `/start@redesk_bot` and every other line have none.
    """
    head, tail = _split(text.strip())
    if head.split("@", 1)[0].lower() != START:
        return None
    return tail.strip() or None
