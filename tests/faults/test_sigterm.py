"""`redesk run` stopped with SIGTERM in the middle of a load, then started again.

The issue's requirement: "`redesk run` stopped with SIGTERM mid-load -> in-flight HTTP
requests finish, nothing lost". Residents write through the real webhook from many connections
at once, the way Telegram delivers updates (each POST is repeated until it is answered 200).
While they write, `redesk run` is sent SIGTERM: it must exit 0, every POST it had in flight must
be answered 200 (or must not have reached it at all: refused or reset before the server took it,
so the client retries), and after a restart every update is stored once and every resident
answered once.

Two shapes: production's (PostgreSQL, Redis, `redesk worker` and `redesk scheduler` beside
`redesk run`), and the embedded default (SQLite, `redesk run` alone with its in-process queue
worker and scheduler, whose queued jobs are lost with the process and recovered by the sweep).

Every attempt of every POST is recorded (start, end, status, why it got no answer), so the
attempts in flight at the signal are told apart from the others.
"""

from __future__ import annotations

import http.client
import threading
import time
import urllib.error
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.faults.conftest import (
    PRODUCTION,
    SETTLE_TIMEOUT,
    Desk,
    assert_each_stored_and_answered_once,
    database_state,
    open_desk,
    query,
)
from tests.faults.servers import PostgresServer, RedisServer

#: Residents writing at once (one update each).
RESIDENTS = 400

#: Residents of the embedded default: SQLite takes one writer at a time, so its in-process
#: worker answers about half as fast; fewer keep the test short (a small centre's load).
EMBEDDED_RESIDENTS = 200

#: Connections posting at once (Telegram opens up to 40 per webhook).
THREADS = 24

#: Why an attempt got no answer that is safe: the server had not taken the request.
NOT_TAKEN = frozenset({"refused", "reset"})

#: The embedded default's sweep, faster than its defaults (15 s interval, 10 s grace) only to
#: keep the test short: jobs the in-process queue held at shutdown are gone with the process,
#: and the restarted `redesk run` finds their rows with its sweep.
FAST_SWEEP = {"REDESK_SWEEP_INTERVAL": "3", "REDESK_SWEEP_GRACE": "5"}


@dataclass(frozen=True)
class Attempt:
    """One webhook POST of one update."""

    update_id: int
    #: time.monotonic() when it was started and when it ended.
    started: float
    ended: float
    #: The HTTP status; 0 when nothing answered.
    status: int
    #: Why nothing answered: refused, reset, timeout or other: ...; "" when answered.
    failure: str


def _failure(exc: BaseException) -> str:
    """What kind of "no answer" `exc` is."""
    reason: object = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, ConnectionRefusedError):
        return "refused"
    if isinstance(
        reason,
        ConnectionResetError
        | BrokenPipeError
        | ConnectionAbortedError
        | http.client.RemoteDisconnected,
    ):
        return "reset"
    if isinstance(reason, TimeoutError):
        return "timeout"
    return f"other: {type(reason).__name__}: {reason}"


@dataclass
class RecordingDesk(Desk):
    """A Desk whose post records every attempt, and tells when N updates are accepted."""

    attempts: list[Attempt] = field(default_factory=list)
    _accepted: int = 0
    _changed: threading.Condition = field(default_factory=threading.Condition)

    @classmethod
    def of(cls, desk: Desk) -> RecordingDesk:
        return cls(desk.deployment, desk.fake, desk.secret, desk.database_url)

    def attempted(
        self, update: dict[str, Any], started: float, status: int, failure: BaseException | None
    ) -> None:
        """Records the attempt (and counts its status, as Desk does)."""
        attempt = Attempt(
            update["update_id"],
            started,
            time.monotonic(),
            status,
            _failure(failure) if failure is not None else "",
        )
        with self._changed:
            self.attempts.append(attempt)
            self.statuses[status] += 1
            self._accepted += status == 200
            self._changed.notify_all()

    def wait_accepted(self, count: int) -> None:
        """Returns once `count` updates were answered 200 (bounded for broken builds)."""
        with self._changed:
            assert self._changed.wait_for(lambda: self._accepted >= count, SETTLE_TIMEOUT), (
                f"{count} updates not accepted: {self.statuses}\n{self.deployment.logs()}"
            )

    def recorded(self) -> list[Attempt]:
        with self._changed:
            return list(self.attempts)


def newest_inbox_id(url: str) -> int:
    """The id of the newest inbox row (0 when there is none); ids only grow."""
    return int(query(url, "SELECT coalesce(max(id), 0) FROM inbox")[0][0])


def inbox_ids(url: str) -> dict[int, int]:
    """update_id -> inbox row id of every stored Telegram update."""
    rows = query(url, "SELECT natural_key, id FROM inbox WHERE channel = 'telegram'")
    return {int(key): int(row_id) for key, row_id in rows}


def stop_mid_load_and_restart(
    desk: RecordingDesk,
    residents: list[dict[str, Any]],
    *,
    signal_when: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Posts one update per resident from THREADS connections; once a third are accepted
    (and `signal_when()` holds, when given) SIGTERMs `redesk run`, checks that it exited 0,
    starts it again, and waits for the load to be accepted and answered.

    Returns:
        The durations of the run, and what check_in_flight needs (when the signal was sent,
        when the process had exited, the newest inbox row then).
    """
    updates = desk.reports(residents, "{index}号楼楼道的灯坏了，晚上看不见台阶")
    finished = desk.post_in_background(updates, threads=THREADS)

    desk.wait_accepted(len(residents) // 3)
    if signal_when is not None:
        desk.wait_until("the moment to send SIGTERM", signal_when)
    accepted_before = desk.statuses[200]
    signalled_at = time.monotonic()
    code = desk.deployment.terminate("run")
    exited_at = time.monotonic()
    at_exit = database_state(desk.database_url)
    receipts_at_exit = desk.delivered()
    newest_before_restart = newest_inbox_id(desk.database_url)
    assert code == 0, f"redesk run exited {code} on SIGTERM\n{desk.deployment.logs()}"

    desk.deployment.start("run", name="run-restarted")
    desk.deployment.wait_until_healthy()
    restarted_at = time.monotonic()
    finished()
    accepted_at = time.monotonic()
    desk.wait_until("every resident answered, nothing pending", lambda: desk.settled(residents))
    settled_at = time.monotonic()
    return {
        "code": code,
        "signalled_at": signalled_at,
        "exited_at": exited_at,
        "accepted_before": accepted_before,
        "at_exit": at_exit,
        "receipts_at_exit": receipts_at_exit,
        "newest_before_restart": newest_before_restart,
        "seconds_from_signal_to_exit": round(exited_at - signalled_at, 2),
        "seconds_from_exit_to_healthy": round(restarted_at - exited_at, 2),
        "seconds_from_healthy_to_all_accepted": round(accepted_at - restarted_at, 2),
        "seconds_from_healthy_to_all_answered": round(settled_at - restarted_at, 2),
    }


def check_in_flight(desk: RecordingDesk, run: dict[str, Any]) -> dict[str, int]:
    """Every attempt got 200 or no answer at all (never a 5xx, never a hang); those in flight
    at the signal were answered 200 or had not been taken by the stopping server; what the
    stopping server stored is exactly what it answered 200. Returns the figures."""
    attempts = desk.recorded()
    signalled_at = run["signalled_at"]
    wrong = [
        a
        for a in attempts
        if a.status not in (0, 200) or (a.status == 0 and a.failure not in NOT_TAKEN)
    ]
    assert not wrong, (
        f"attempts neither answered 200 nor refused: {wrong[:20]}\n{desk.deployment.logs()}"
    )
    in_flight = [a for a in attempts if a.started < signalled_at <= a.ended]
    assert in_flight, "no POST was in flight at the signal: the test proved nothing"
    finished = [a for a in in_flight if a.status == 200]
    not_taken = [a for a in in_flight if a.status == 0]
    # What the stopping server stored (rows written before the restart: ids only grow) is
    # what it answered 200: every update answered before it exited was stored by it, and
    # every update it stored was answered 200 to an attempt started before it exited (an
    # answer read after the exit can only be the stopping server's if the attempt started
    # before it; the two bounds leave no room for an update taken and left unanswered).
    stored = inbox_ids(desk.database_url)
    stored_by_old = {
        update_id for update_id, row in stored.items() if row <= run["newest_before_restart"]
    }
    surely_old = {a.update_id for a in attempts if a.status == 200 and a.ended <= run["exited_at"]}
    maybe_old = {a.update_id for a in attempts if a.status == 200 and a.started <= run["exited_at"]}
    assert surely_old <= stored_by_old, (
        f"answered, not stored: {sorted(surely_old - stored_by_old)[:20]}"
    )
    assert stored_by_old <= maybe_old, (
        f"stored, not answered: {sorted(stored_by_old - maybe_old)[:20]}"
    )
    assert not {a.update_id for a in not_taken} & stored_by_old
    refused = [a for a in attempts if a.failure == "refused"]
    reset = [a for a in attempts if a.failure == "reset"]
    return {
        "posts_in_flight_at_signal": len(in_flight),
        "answered_200_after_signal_started_before": len(finished),
        "in_flight_not_taken_retried": len(not_taken),
        "accepted_before_signal": run["accepted_before"],
        "attempts": len(attempts),
        "attempts_refused": len(refused),
        "attempts_reset": len(reset),
        "stored_by_stopped_run": len(stored_by_old),
        "stored_by_restarted_run": len(stored) - len(stored_by_old),
    }


def timings(run: dict[str, Any]) -> dict[str, float]:
    """The durations of `run` (figures only, never asserted)."""
    return {key: value for key, value in run.items() if key.startswith("seconds_")}


def test_sigterm_mid_load_finishes_in_flight_posts_and_loses_nothing(
    tmp_path: Path,
    postgres_server: PostgresServer,
    redis_server: RedisServer,
    figures: dict[str, Any],
) -> None:
    with open_desk(tmp_path, postgres_server.url, redis_server.url, processes=PRODUCTION) as opened:
        desk = RecordingDesk.of(opened)
        # Given 400 residents writing at once through 24 connections
        residents = desk.residents(RESIDENTS)

        # When `redesk run` gets SIGTERM once a third of their updates are accepted
        # And is started again while the residents' webhooks keep retrying
        run = stop_mid_load_and_restart(desk, residents)

        # Then it exited 0 (checked in stop_mid_load_and_restart)
        # And every POST in flight at the signal was answered 200 or never taken
        in_flight = check_in_flight(desk, run)
        # And every update made exactly one request, every resident got exactly one receipt
        counts = assert_each_stored_and_answered_once(desk, residents)
        for name in ("run-restarted", "worker", "scheduler"):
            log = (desk.deployment.directory / f"{name}.log").read_text()
            assert "Traceback" not in log, f"{name}: {log[-5000:]}"

    figures.update(counts)
    figures.update(in_flight)
    figures["exit_code"] = run["code"]
    figures.update(timings(run))


def test_sigterm_mid_load_on_the_embedded_default_loses_nothing(
    tmp_path: Path,
    figures: dict[str, Any],
) -> None:
    with open_desk(
        tmp_path,
        f"sqlite:///{tmp_path / 'redesk.db'}",
        None,
        processes=(("run", "run"),),
        extra_env=FAST_SWEEP,
    ) as opened:
        desk = RecordingDesk.of(opened)
        # Given 200 residents writing at once through 24 connections to `redesk run` alone
        residents = desk.residents(EMBEDDED_RESIDENTS)

        # When it gets SIGTERM once a third of their updates are accepted and its in-process
        # worker is answering them
        # And is started again while the residents' webhooks keep retrying
        run = stop_mid_load_and_restart(desk, residents, signal_when=lambda: desk.delivered() > 0)
        at_exit = run["at_exit"]
        assert at_exit["inbox_pending"] + at_exit["outbox_pending"] > 0, (
            "nothing was left unfinished at the signal: the test proved nothing",
            at_exit,
        )

        # Then it exited 0, every POST in flight at the signal was answered 200 or never taken
        in_flight = check_in_flight(desk, run)
        # And what its in-process queue held at the signal was found by the restarted one's
        # sweep: every update made exactly one request, every resident got exactly one receipt
        counts = assert_each_stored_and_answered_once(desk, residents)
        log = (desk.deployment.directory / "run-restarted.log").read_text()
        assert "Traceback" not in log, log[-5000:]

    figures.update(counts)
    figures.update(in_flight)
    figures.update(
        {
            "exit_code": run["code"],
            "receipts_delivered_at_exit": run["receipts_at_exit"],
            "inbox_pending_at_exit": at_exit["inbox_pending"],
            "outbox_pending_at_exit": at_exit["outbox_pending"],
        }
    )
    figures.update(timings(run))
