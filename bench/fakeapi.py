"""The tests' fake Telegram Bot API (tests/fakes/telegram.py) in a process of its own.

Run as `python -m bench.fakeapi [--no-limits]`: prints `READY <url>`, then answers one command
per stdin line with one JSON line on stdout:

- `stats`: calls per method and status, and the first/last successful send (time.monotonic,
  which is the same clock in every process of the machine);
- `dump <path>`: writes every call as [method, chat_id, status, at] to <path> (JSON);
- `quit` (or end of input): stops.

A process of its own keeps the fake's HTTP threads off the load generator's interpreter lock.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
from collections import Counter
from typing import Any

from bench.common import ROOT, TOKEN


def _stats(fake: Any) -> dict[str, Any]:
    calls = fake.calls
    by: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    first = last = None
    for call in calls:
        statuses[call.status] += 1
        by[f"{call.method}:{call.status}"] += 1
        if call.method == "sendMessage" and call.status == 200:
            first = call.at if first is None else min(first, call.at)
            last = call.at if last is None else max(last, call.at)
    return {
        "calls": len(calls),
        "by": dict(by),
        "statuses": {str(k): v for k, v in statuses.items()},
        "sent": by.get("sendMessage:200", 0),
        "too_many": statuses.get(429, 0),
        "first_sent_at": first,
        "last_sent_at": last,
        "errors": len(fake.errors),
    }


def serve(limits: bool) -> int:
    """Runs the fake until `quit` or the end of stdin."""
    from tests.fakes.telegram import FakeTelegram

    fake = FakeTelegram(TOKEN, limits_enabled=limits)
    fake.start()
    print(f"READY {fake.url}", flush=True)
    try:
        for line in sys.stdin:
            command, _, argument = line.strip().partition(" ")
            if command == "stats":
                answer: Any = _stats(fake)
            elif command == "dump":
                rows = [[c.method, c.chat_id, c.status, c.at] for c in fake.calls]
                with open(argument, "w") as out:
                    json.dump(rows, out)
                answer = {"rows": len(rows)}
            elif command == "quit":
                break
            else:
                answer = {"error": f"unknown command {command!r}"}
            print(json.dumps(answer), flush=True)
    finally:
        fake.stop()
    return 0


class FakeApi:
    """Starts `python -m bench.fakeapi` and talks to it."""

    def __init__(self, *, limits: bool, log_path: Any) -> None:
        command = [sys.executable, "-m", "bench.fakeapi"] + ([] if limits else ["--no-limits"])
        self._log = open(log_path, "wb")
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            bufsize=1,
        )
        assert self.process.stdout is not None
        ready = self.process.stdout.readline().split()
        if not ready or ready[0] != "READY":
            raise RuntimeError(f"the fake Bot API did not start (see {log_path})")
        self.url = ready[1]
        self._lock = threading.Lock()

    def ask(self, command: str) -> dict[str, Any]:
        """Sends one command; returns its JSON answer."""
        assert self.process.stdin is not None and self.process.stdout is not None
        with self._lock:
            self.process.stdin.write(command + "\n")
            self.process.stdin.flush()
            answer: dict[str, Any] = json.loads(self.process.stdout.readline())
        return answer

    def stats(self) -> dict[str, Any]:
        """See `_stats`."""
        return self.ask("stats")

    def dump(self, path: Any) -> list[list[Any]]:
        """Every call as [method, chat_id, status, at]."""
        self.ask(f"dump {path}")
        with open(path) as source:
            rows: list[list[Any]] = json.load(source)
        return rows

    def close(self) -> None:
        """Stops the fake."""
        if self.process.poll() is None:
            try:
                assert self.process.stdin is not None
                self.process.stdin.write("quit\n")
                self.process.stdin.close()
            except OSError:
                pass
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()

    def __enter__(self) -> FakeApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.fakeapi")
    parser.add_argument(
        "--no-limits",
        action="store_true",
        help="answer every send (no 1/s per chat, 30/s overall 429s)",
    )
    sys.exit(serve(limits=not parser.parse_args().no_limits))
