"""A small HTTP/1.1 load generator on raw asyncio streams (keep-alive connections).

httpx costs about a millisecond of CPU per request; on two shared cores that would take CPU
from the server under test. Writing prepared request bytes and reading the answer by its
Content-Length costs a fraction of that.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field


def post(
    path: str, body: bytes, headers: dict[str, str] | None = None, host: str = "127.0.0.1"
) -> bytes:
    """The bytes of one POST request with a JSON body."""
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
    ]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def get(path: str, host: str = "127.0.0.1") -> bytes:
    """The bytes of one GET request."""
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()


class Connection:
    """One keep-alive HTTP/1.1 connection; reconnects when the server closed it."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        """Sends a prepared request; returns (status, body)."""
        for attempt in range(2):
            if self._writer is None:
                self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
            assert self._reader is not None
            try:
                self._writer.write(raw)
                head = await self._reader.readuntil(b"\r\n\r\n")
            except (ConnectionError, asyncio.IncompleteReadError):
                self.close()
                if attempt:
                    raise
                continue
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ", 2)[1])
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            if headers.get("transfer-encoding", "").lower() == "chunked":
                body = b""
                while True:
                    size = int((await self._reader.readline()).split(b";")[0], 16)
                    chunk = await self._reader.readexactly(size + 2)
                    if size == 0:
                        break
                    body += chunk[:-2]
            else:
                body = await self._reader.readexactly(int(headers.get("content-length", "0")))
            if headers.get("connection", "").lower() == "close":
                self.close()
            return status, body
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Closes the socket (the next request opens a new one)."""
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None


@dataclass
class Result:
    """What a load run measured."""

    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    seconds: float = 0.0
    #: (index, scheduled or sent instant on time.monotonic) of every request sent.
    sent: list[tuple[int, float]] = field(default_factory=list)
    #: Highest number of requests waiting for an answer at once (open loop).
    most_in_flight: int = 0

    @property
    def count(self) -> int:
        """Requests answered."""
        return len(self.latencies)

    @property
    def per_second(self) -> float:
        """Answered requests per second."""
        return self.count / self.seconds if self.seconds else 0.0


async def closed_loop(
    host: str,
    port: int,
    make: Callable[[int], bytes],
    *,
    concurrency: int,
    seconds: float,
    warmup: float = 2.0,
    start: int = 0,
) -> Result:
    """`concurrency` clients each send a request as soon as the previous one is answered.

    Requests during the first `warmup` seconds are sent but not counted.
    """
    result = Result()
    counter = iter(range(start, 1 << 62))
    began = time.perf_counter()
    counting_from = began + warmup
    until = counting_from + seconds

    async def client() -> None:
        connection = Connection(host, port)
        try:
            while True:
                sent = time.perf_counter()
                if sent >= until:
                    return
                status, _ = await connection.request(make(next(counter)))
                if sent >= counting_from:
                    result.latencies.append(time.perf_counter() - sent)
                    result.statuses[status] += 1
        finally:
            connection.close()

    await asyncio.gather(*(client() for _ in range(concurrency)))
    result.seconds = time.perf_counter() - counting_from
    return result


async def open_loop(
    host: str,
    port: int,
    make: Callable[[int], bytes],
    *,
    rate: float,
    seconds: float,
    max_connections: int = 100,
    on_sent: Callable[[int, float], None] | None = None,
) -> Result:
    """Sends `rate` requests a second on schedule, whatever the answers take.

    Latency is measured from the scheduled instant (so a slow server is not hidden by a late
    send). At most `max_connections` requests are in flight; more wait for a free connection.
    `on_sent(index, scheduled)` is called as each request is scheduled (time.monotonic).
    """
    result = Result()
    idle: list[Connection] = []
    opened = 0
    free = asyncio.Semaphore(max_connections)
    in_flight = 0
    tasks = []
    total = int(rate * seconds)

    async def send(index: int, scheduled_perf: float) -> None:
        nonlocal opened, in_flight
        in_flight += 1
        result.most_in_flight = max(result.most_in_flight, in_flight)
        async with free:
            if idle:
                connection = idle.pop()
            else:
                opened += 1
                connection = Connection(host, port)
            try:
                status, _ = await connection.request(make(index))
            finally:
                idle.append(connection)
        in_flight -= 1
        result.latencies.append(time.perf_counter() - scheduled_perf)
        result.statuses[status] += 1

    began_perf = time.perf_counter()
    began_mono = time.monotonic()
    for index in range(total):
        offset = index / rate
        delay = began_perf + offset - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        result.sent.append((index, began_mono + offset))
        if on_sent is not None:
            on_sent(index, began_mono + offset)
        tasks.append(asyncio.create_task(send(index, began_perf + offset)))
    await asyncio.gather(*tasks)
    result.seconds = time.perf_counter() - began_perf
    for connection in idle:
        connection.close()
    return result
