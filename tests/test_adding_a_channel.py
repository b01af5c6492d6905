"""docs/adding-a-channel.md tells the truth: its minimal example adapter, taken from the page
as it is, is a `Channel` of the current contract that stores before answering, refuses
without changing anything, and sends through its API."""

from __future__ import annotations

import importlib.util
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import dramatiq
import pytest
from sqlmodel import Session, select
from starlette.applications import Starlette

from bot.channels.base import Channel, ChannelSettings, TransientSendError
from bot.channels.registry import CHANNEL_CLASSES
from bot.inbound import Inbound
from bot.runtime import Runtime
from bot.texts import Rendered
from storage.models import InboxMessage, OutboxMessage, Person
from storage.settings import Settings
from tests.fakes.scaffold import FakeServer, Request, Response
from tests.utils.app import TestClient

DOC = Path(__file__).parents[1] / "docs" / "adding-a-channel.md"
SECRET = "echo-secret-0123456789"


def doc_blocks() -> list[str]:
    """The page's Python code blocks, in order."""
    return re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.DOTALL)


@pytest.fixture(scope="module")
def echo() -> Iterator[ModuleType]:
    """The page's example adapter, loaded as the module bot.channels.echo."""
    source = doc_blocks()[0]
    assert source.startswith("# bot/channels/echo/__init__.py")
    spec = importlib.util.spec_from_loader("bot.channels.echo", loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        exec(compile(source, str(DOC), "exec"), module.__dict__)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


@dataclass(frozen=True)
class Sent:
    user: str
    text: str


class FakeEcho(FakeServer[Sent]):
    """The example platform's API: POST /send, or 503 while `down`."""

    thread_name = "fake-echo"
    down = False

    def handle(self, request: Request) -> Response:
        if request.path != "/send" or request.method != "POST":
            return Response.json({"error": "not found"}, status=404)
        if self.down:
            return Response.json({"error": "down"}, status=503)
        body = request.json()
        self.record(Sent(user=str(body["user"]), text=str(body["text"])))
        return Response.json({"ok": True})


def test_the_registry_line_of_the_page_is_the_registry_s_format(echo: ModuleType) -> None:
    line = doc_blocks()[1].strip()
    assert line == '("bot.channels.echo:EchoChannel",)'
    module, name = line.strip('(",)').split(":")
    assert module == echo.__name__ and isinstance(getattr(echo, name)(), Channel)
    assert all(re.fullmatch(r"bot\.channels\.\w+:\w+Channel", spec) for spec in CHANNEL_CLASSES)


def test_the_example_is_a_channel_with_settings_of_its_own(
    echo: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    channel = echo.EchoChannel()
    assert isinstance(channel, Channel) and channel.name == "echo" and not channel.buttons
    assert issubclass(echo.EchoSettings, ChannelSettings)
    # Off without its secret, on with it, read from its own REDESK_ECHO_* variables.
    monkeypatch.delenv("REDESK_ECHO_SECRET", raising=False)
    off = Settings(_env_file=None)  # type: ignore[call-arg]
    assert not channel.enabled(off)
    assert channel.describe(off) == "off (set REDESK_ECHO_SECRET to switch it on)"
    monkeypatch.setenv("REDESK_ECHO_SECRET", SECRET)
    on = Settings(_env_file=None)  # type: ignore[call-arg]
    assert channel.enabled(on) and channel.describe(on) == "on, webhook /echo"
    own = channel.settings(on)
    assert own is not None and ("REDESK_ECHO_SECRET", SECRET, 16) in own.secrets()
    inbound = channel.to_inbound("u1", {"text": "路灯坏了"})
    assert inbound == Inbound(channel="echo", chat_id="u1", text="路灯坏了")


@pytest.fixture
def echo_app(
    echo: ModuleType,
    runtime: Runtime,
    stub_broker: dramatiq.Broker,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[TestClient]:
    monkeypatch.setenv("REDESK_ECHO_SECRET", SECRET)
    runtime = Runtime(settings=runtime.settings.model_copy(), engine=runtime.engine)
    app = Starlette(routes=list(echo.EchoChannel().routes()))
    app.state.runtime = runtime
    with TestClient(app) as client:
        yield client


def inbox(runtime: Runtime) -> list[InboxMessage]:
    with Session(runtime.engine) as session:
        return list(session.exec(select(InboxMessage).where(InboxMessage.channel == "echo")))


def test_the_example_stores_a_message_once_before_answering(
    echo_app: TestClient, runtime: Runtime, stub_broker: dramatiq.Broker
) -> None:
    message = {"id": "m1", "user": "u1", "text": "路灯坏了"}
    for _ in range(2):  # the platform retries
        answer = echo_app.post("/echo", json=message, headers={"x-echo-secret": SECRET})
        assert answer.status_code == 200 and answer.text == "ok"
    rows = inbox(runtime)
    assert [(row.natural_key, row.chat_id, row.payload) for row in rows] == [
        ("m1", "u1", {"text": "路灯坏了"})
    ]
    # The chat is handed to the workers once, for the new message only.
    assert sum(queue.qsize() for queue in stub_broker.queues.values()) == 1


@pytest.mark.parametrize(
    ("headers", "body", "status"),
    [
        ({}, b'{"id": "m1", "user": "u1", "text": "x"}', 403),
        ({"x-echo-secret": "wrong"}, b'{"id": "m1", "user": "u1", "text": "x"}', 403),
        ({"x-echo-secret": SECRET}, b"not json", 400),
        ({"x-echo-secret": SECRET}, b'{"user": "u1", "text": "x"}', 400),
        ({"x-echo-secret": SECRET}, b"x" * (64 * 1024 + 1), 413),
    ],
    ids=["no secret", "wrong secret", "not JSON", "no id", "too large"],
)
def test_the_example_refuses_without_storing(
    echo_app: TestClient,
    runtime: Runtime,
    stub_broker: dramatiq.Broker,
    headers: dict[str, str],
    body: bytes,
    status: int,
) -> None:
    answer = echo_app.post("/echo", content=body, headers=headers)
    assert answer.status_code == status
    assert inbox(runtime) == []
    assert sum(queue.qsize() for queue in stub_broker.queues.values()) == 0


def test_the_example_sender_sends_and_asks_for_a_retry_when_the_api_is_down(
    echo: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeEcho() as fake:
        monkeypatch.setenv("REDESK_ECHO_SECRET", SECRET)
        monkeypatch.setenv("REDESK_ECHO_API_URL", fake.url)
        settings = Settings(_env_file=None)  # type: ignore[call-arg]
        sender = echo.EchoSender(settings.section(echo.EchoSettings))
        person = Person(channel="echo", external_id="u1")
        row = OutboxMessage(idempotency_key="k", person_id=0, key="k")
        sender.send(None, person, Rendered(text="已受理"), row)
        assert fake.calls == [Sent(user="u1", text="已受理")]
        fake.down = True
        with pytest.raises(TransientSendError):
            sender.send(None, person, Rendered(text="已受理"), row)
        assert len(fake.calls) == 1
        assert fake.errors == []
