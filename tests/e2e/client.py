"""A small web chat client for the end-to-end tests: one identity of the web desk API.

It speaks only HTTP (DESIGN §5): POST /api/web/session for a token, POST /api/web/messages to
type text or press a button, GET /api/web/messages?after=N&wait=S (long poll) to read.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.utils.harness import Message

#: Seconds one long poll may wait for a new message.
POLL_WAIT = 2.0

#: Long polls that may come back empty before a wait gives up (POLL_WAIT each: about 20 s).
EMPTY_POLLS = 10

#: Polls in all (empty or not) before a wait gives up, so a chatty identity cannot loop forever.
MAX_POLLS = 200

_ids = itertools.count(1)


@dataclass
class WebChat:
    """One web chat identity talking to a running redesk over HTTP."""

    http: httpx.Client
    token: str
    name: str = ""
    #: The highest seq read so far.
    after: int = 0
    #: Every message read, in order.
    received: list[Message] = field(default_factory=list)
    #: Seqs already returned by wait_for (so a second wait finds the next matching message).
    matched: set[int] = field(default_factory=set)

    @classmethod
    def open(cls, http: httpx.Client, name: str = "") -> WebChat:
        """A new identity (POST /api/web/session)."""
        response = http.post("/api/web/session", json={"name": name})
        assert response.status_code == 201, response.text
        return cls(http=http, token=response.json()["token"], name=name)

    @property
    def headers(self) -> dict[str, str]:
        """The bearer authorization of this identity."""
        return {"Authorization": f"Bearer {self.token}"}

    # --- writing ------------------------------------------------------------------------

    def post(self, body: Any) -> httpx.Response:
        """POSTs a raw body to /api/web/messages and returns the answer, whatever it is."""
        return self.http.post("/api/web/messages", json=body, headers=self.headers)

    def _accepted(self, body: dict[str, Any]) -> str:
        response = self.post(body)
        assert response.status_code == 202, f"{response.status_code}: {response.text}"
        client_id: str = response.json()["id"]
        return client_id

    def send(self, text: str, *, client_id: str | None = None) -> str:
        """Types `text`; returns the client message id."""
        return self._accepted({"id": client_id or f"{self.name}-t{next(_ids)}", "text": text})

    def press(self, action: str) -> str:
        """Presses a button (sends its action)."""
        return self._accepted({"id": f"{self.name}-b{next(_ids)}", "action": action})

    def intake(self, *, name: str, phone: str, text: str) -> str:
        """Registers a walk-in at the reception desk."""
        return self._accepted(
            {
                "id": f"{self.name}-d{next(_ids)}",
                "intake": {"name": name, "phone": phone, "text": text},
            }
        )

    # --- reading ------------------------------------------------------------------------

    def poll(self, wait: float = POLL_WAIT) -> list[Message]:
        """One long poll: the messages after the last one read (maybe none)."""
        response = self.http.get(
            "/api/web/messages",
            params={"after": self.after, "wait": wait},
            headers=self.headers,
            timeout=wait + 15,
        )
        assert response.status_code == 200, f"{response.status_code}: {response.text}"
        fresh = [
            Message(m["seq"], m["text"], m["buttons"], m.get("updates"))
            for m in response.json()["messages"]
        ]
        for message in fresh:
            assert message.seq > self.after, f"seq went back: {message.seq} after {self.after}"
            self.after = message.seq
        self.received.extend(fresh)
        return fresh

    def wait_for(self, *needles: str, action: str | None = None) -> Message:
        """The oldest message not yet waited for whose text holds every needle (and that has a
        button sending `action`, if given); long-polls until it arrives or the polls run out."""
        empty = 0
        for _ in range(MAX_POLLS):
            for message in self.received:
                if message.seq in self.matched or message.updates is not None:
                    # An update of an earlier card is not a new message.
                    continue
                if all(needle in message.text for needle in needles) and (
                    action is None or action in message.actions
                ):
                    self.matched.add(message.seq)
                    return message
            if empty >= EMPTY_POLLS:
                break
            if not self.poll():
                empty += 1
        raise AssertionError(
            f"{self.name or 'identity'} never received a message with {list(needles)}"
            + (f" and button {action!r}" if action else "")
            + ". Received:\n"
            + "\n---\n".join(f"#{m.seq} {m.text} {m.actions}" for m in self.received)
        )

    def ask(self, text: str, *needles: str) -> Message:
        """Types `text` and waits for the answer holding every needle."""
        self.send(text)
        return self.wait_for(*needles)

    def texts(self) -> list[str]:
        """The text of every message read so far (updates of earlier cards left out)."""
        return [message.text for message in self.received if message.updates is None]
