"""The HTTP plumbing every platform fake shares: a real server on 127.0.0.1 in a thread.

A fake subclasses ``FakeServer`` and implements ``handle(request) -> Response``; the scaffold
runs a ``ThreadingHTTPServer`` on a free port (``start``/``stop`` or ``with``), reads the body
(Content-Length or chunked), answers with the fake's ``Response``, tracks open connections so
``stop`` ends long polls at once, keeps the call record and waits on it (``wait_for``), and keeps
scripted faults and delays (``Script``) that a fake takes per call::

    class FakeThing(FakeServer[Call]):
        thread_name = "fake-thing"

        def handle(self, request: Request) -> Response:
            fault = self.take(self._faults, request.path)
            ...
            self.record(Call(...))
            return Response.json({"ok": True})

The scaffold also holds the message crypto the WeChat and WeCom fakes share (``sha1_signature``,
``wx_encrypt``/``wx_decrypt``, ``aes_key_bytes``, ``random_aes_key``), written with
``cryptography`` directly (not with wechatpy's), so the product's use of wechatpy is checked
against an independent implementation; the rest is standard library. Bugs in a fake (an
exception escaping ``handle``) answer HTTP 500 and are collected in ``fake.errors``, so a test
can assert the fake stayed sound.
"""

from __future__ import annotations

import asyncio
import base64
import email.parser
import email.policy
import hashlib
import json
import os
import socket
import string
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Generic, Self, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

CallT = TypeVar("CallT")
ScriptT = TypeVar("ScriptT", bound="Script")


@dataclass(frozen=True)
class UploadedFile:
    """A file part of a multipart request."""

    filename: str | None
    content_type: str | None
    content: bytes = field(repr=False)


class BodyError(ValueError):
    """A request body that is not what its Content-Type says."""


@dataclass(frozen=True)
class Request:
    """One HTTP request as the fake sees it. ``path`` is URL-decoded, without the query."""

    method: str
    raw_path: str
    path: str
    query: dict[str, str]
    headers: Message
    body: bytes
    at: float

    @property
    def content_type(self) -> str:
        """The full Content-Type header ("" when absent)."""
        return str(self.headers.get("Content-Type", ""))

    @property
    def mime(self) -> str:
        """The Content-Type without parameters, lower case."""
        return self.content_type.split(";")[0].strip().lower()

    def json(self) -> Any:
        """The body decoded as UTF-8 JSON (whatever the Content-Type); None when empty."""
        if not self.body:
            return None
        try:
            return json.loads(self.body.decode("utf-8"))
        except ValueError:
            raise BodyError("body is not JSON") from None

    def form(self) -> dict[str, str]:
        """The body as application/x-www-form-urlencoded."""
        return dict(parse_qsl(self.body.decode("utf-8"), keep_blank_values=True))

    def multipart(self) -> dict[str, Any]:
        """The body as multipart/form-data: str fields and ``UploadedFile`` parts."""
        return parse_multipart(self.content_type, self.body)


@dataclass
class Response:
    """What the fake answers."""

    status: int
    content_type: str
    payload: bytes
    headers: dict[str, str] = field(default_factory=dict)
    #: Close the connection without answering (a network fault as the client sees it).
    drop: bool = False

    @classmethod
    def json(
        cls,
        body: Any,
        status: int = 200,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> Response:
        """``body`` as UTF-8 JSON, non-ASCII left as is (as the platforms answer)."""
        return cls(
            status,
            content_type,
            json.dumps(body, ensure_ascii=False).encode("utf-8"),
            headers or {},
        )


@dataclass
class Script:
    """A scripted fault or delay: applies to the next ``remaining`` calls of ``targets``
    (None: the fake's default set)."""

    remaining: int
    targets: frozenset[str] | None


def parse_multipart(content_type: str, body: bytes) -> dict[str, Any]:
    """multipart/form-data fields (str) and files (``UploadedFile``) by name."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
    )
    if not message.is_multipart():
        raise BodyError("can't parse multipart/form-data body")
    params: dict[str, Any] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name:
            continue
        raw = part.get_payload(decode=True)
        payload = raw if isinstance(raw, bytes) else b""
        filename = part.get_filename()
        if filename is not None:
            params[str(name)] = UploadedFile(filename, part.get_content_type(), payload)
        else:
            params[str(name)] = payload.decode(part.get_content_charset() or "utf-8")
    return params


def targets(
    names: Iterable[str] | str | None, normalise: Callable[[str], str]
) -> frozenset[str] | None:
    """The ``targets`` of a ``Script`` from a name, names or None, each normalised."""
    if names is None:
        return None
    if isinstance(names, str):
        names = [names]
    return frozenset(normalise(name) for name in names)


# --------------------------------------------------------------------------- HTTP layer


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, fake: FakeServer[Any]):
        self.fake = fake
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if exc is not None and not isinstance(exc, OSError):  # OSError: the client went away
            self.fake.errors.append(exc)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # the base's name
        pass

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes; without this Nagle + delayed ACK cost 40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.fake._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.fake._track(self.connection, add=False)

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _serve(self) -> None:
        at = time.monotonic()
        body = self._read_body()
        parts = urlsplit(self.path)
        request = Request(
            self.command,
            self.path,
            unquote(parts.path),
            dict(parse_qsl(parts.query, keep_blank_values=True)),
            self.headers,
            body,
            at,
        )
        fake = self.server.fake
        try:
            response = fake.handle(request)
        except Exception as exc:  # a bug in the fake: answer 500, keep it for the test
            fake.errors.append(exc)
            response = Response(500, "text/plain", f"fake failed: {exc!r}".encode())
        if response.drop:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.payload)))
        self.end_headers()
        self.wfile.write(response.payload)
        self.wfile.flush()


# --------------------------------------------------------------------------- the base


class FakeServer(Generic[CallT]):
    """A platform fake's server half. Subclasses implement ``handle``; see the module docstring.

    Shared state a subclass uses: ``self._cond`` (a Condition over an RLock, guarding all the
    fake's state; ``record`` notifies it), ``self._stopping`` (set by ``stop``: wait on it
    instead of sleeping), ``self.errors``."""

    #: The server thread's name.
    thread_name = "fake-platform"

    def __init__(self) -> None:
        #: Exceptions raised inside the fake (its own bugs); tests assert it stays empty.
        self.errors: list[BaseException] = []
        self._cond = threading.Condition(threading.RLock())
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._calls: list[CallT] = []

    def handle(self, request: Request) -> Response:
        """Answers one request (called on a server thread)."""
        raise NotImplementedError

    def on_stop(self) -> None:
        """Called by ``stop`` before the server shuts down (e.g. to wake long polls)."""

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> Self:
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = _Server(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=self.thread_name,
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        self.on_stop()
        server.shutdown()
        server.server_close()
        with self._cond:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def started(self) -> bool:
        return self._server is not None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The server's base URL, http://127.0.0.1:PORT (no trailing slash)."""
        return f"http://127.0.0.1:{self.port}"

    def _track(self, connection: socket.socket, *, add: bool) -> None:
        with self._cond:
            if add:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    # ----------------------------------------------------------------- recording

    def record(self, call: CallT) -> None:
        """Appends ``call`` to the record and wakes ``wait_for``."""
        with self._cond:
            self._calls.append(call)
            self._cond.notify_all()

    @property
    def calls(self) -> list[CallT]:
        """A snapshot of every call so far, in arrival order."""
        with self._cond:
            return list(self._calls)

    def reset_calls(self) -> None:
        with self._cond:
            self._calls.clear()

    def wait_for(self, predicate: Callable[[Self], bool], timeout: float = 5.0) -> bool:
        """Waits (at most ``timeout`` s) until ``predicate(self)``; True if it became true."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if predicate(self):
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.05))

    async def wait_for_async(
        self,
        predicate: Callable[[Self], bool],
        timeout: float = 5.0,  # noqa: ASYNC109 - a bounded poll, same signature as wait_for
    ) -> bool:
        """``wait_for`` for code running in an event loop (does not block the loop)."""
        deadline = time.monotonic() + timeout
        while True:
            if predicate(self):
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.01)

    # ----------------------------------------------------------------- scripting

    def take(
        self,
        items: list[ScriptT],
        key: str,
        matches: Callable[[frozenset[str] | None, str], bool] | None = None,
    ) -> ScriptT | None:
        """The first scripted item matching ``key`` (counted down, removed when used up).
        ``matches(targets, key)`` defaults to "targets is None or key in targets"."""
        with self._cond:
            for item in items:
                if (
                    matches(item.targets, key)
                    if matches is not None
                    else item.targets is None or key in item.targets
                ):
                    item.remaining -= 1
                    if item.remaining <= 0:
                        items.remove(item)
                    return item
        return None

    def pause(self, seconds: float) -> None:
        """Sleeps ``seconds`` unless the fake stops first."""
        self._stopping.wait(seconds)


# --------------------------------------------------------------------------- message crypto

#: Letters and digits, of which the platforms' ids and tokens are made.
ALNUM = string.ascii_letters + string.digits


def sha1_signature(*parts: str) -> str:
    """WeChat's and WeCom's signature: sha1 of the sorted concatenation of ``parts``."""
    return hashlib.sha1("".join(sorted(parts)).encode("utf-8")).hexdigest()


def aes_key_bytes(encoding_aes_key: str) -> bytes:
    """The 32-byte AES key of a 43-character EncodingAESKey; ValueError for another."""
    key = base64.b64decode(encoding_aes_key + "=") if len(encoding_aes_key) == 43 else b""
    if len(key) != 32:
        raise ValueError("an EncodingAESKey has 43 characters and decodes to 32 bytes")
    return key


def random_aes_key() -> str:
    """A random 43-character EncodingAESKey."""
    return base64.b64encode(os.urandom(32)).decode("ascii").rstrip("=")


def wx_encrypt(
    key: bytes, message: bytes | str, receive_id: str, random: bytes | None = None
) -> str:
    """base64 of AES-256-CBC (IV = key[:16]) over 16 random bytes + 4-byte big-endian length +
    message + receive_id (WeChat's appid, WeCom's corp id), PKCS#7-padded to a multiple of 32."""
    data = message.encode("utf-8") if isinstance(message, str) else message
    prefix = os.urandom(16) if random is None else random
    if len(prefix) != 16:
        raise ValueError("random must be 16 bytes")
    plain = prefix + struct.pack(">I", len(data)) + data + receive_id.encode("utf-8")
    pad = 32 - len(plain) % 32
    plain += bytes([pad]) * pad
    encryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    return base64.b64encode(encryptor.update(plain) + encryptor.finalize()).decode("ascii")


def wx_decrypt(key: bytes, encrypted: str, error: type[Exception]) -> tuple[bytes, bytes]:
    """(message, receive_id) inside ``encrypted``; ``error`` if it is malformed (bad base64,
    length or padding) as the platform would refuse it."""
    try:
        raw = base64.b64decode(encrypted, validate=True)
    except ValueError:
        raise error("Encrypt is not base64") from None
    if not raw or len(raw) % 16:
        raise error("Encrypt is not a whole number of AES blocks")
    decryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).decryptor()
    plain = decryptor.update(raw) + decryptor.finalize()
    pad = plain[-1]
    if not 1 <= pad <= 32 or plain[-pad:] != bytes([pad]) * pad:
        raise error("bad PKCS#7 padding (the platform pads to 32 bytes)")
    plain = plain[:-pad]
    if len(plain) < 20:
        raise error("decrypted text is too short")
    (length,) = struct.unpack(">I", plain[16:20])
    if 20 + length > len(plain):
        raise error("message length is larger than the decrypted text")
    return plain[20 : 20 + length], plain[20 + length :]


def cdata(value: str) -> str:
    """``value`` as XML CDATA ("]]>" cannot appear inside one: split over two sections)."""
    return "<![CDATA[" + value.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def corrupt(value: str) -> str:
    """``value`` with its first character changed (a signature that does not match)."""
    return ("0" if value[0] != "0" else "1") + value[1:]
