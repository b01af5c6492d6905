"""A worker killed (SIGKILL) with hundreds of requests in flight, then started again.

Production's shape: PostgreSQL and Redis of the test's own, `redesk run` (Telegram webhook),
one `redesk worker` (4 threads) and `redesk scheduler`. 500 residents write at once; when the
first receipts have gone out, the worker is killed without warning, and a new one is started.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tests.faults.conftest import (
    PRODUCTION,
    assert_each_stored_and_answered_once,
    database_state,
    open_desk,
    pending_receipt_chats,
)
from tests.faults.servers import PostgresServer, RedisServer

#: Residents writing at once.
RESIDENTS = 500

#: Receipts delivered before the worker is killed.
KILL_AFTER = 60

#: Seconds the fake Bot API holds back its answer to the sends under way at the kill.
SLOW_ANSWER = 5.0

#: Threads of the worker (REDESK_WORKER_THREADS); at most this many sends can be in flight.
WORKER_THREADS = 4


def test_a_killed_worker_loses_nothing_and_its_successor_answers_everyone_once(
    tmp_path: Path,
    postgres_server: PostgresServer,
    redis_server: RedisServer,
    figures: dict[str, Any],
) -> None:
    with open_desk(
        tmp_path,
        postgres_server.url,
        redis_server.url,
        processes=PRODUCTION,
        extra_env={"REDESK_WORKER_THREADS": str(WORKER_THREADS)},
    ) as desk:
        # Given 500 residents whose messages were all accepted by the webhook
        residents = desk.residents(RESIDENTS)
        updates = desk.reports(residents, "{index}号楼门口的路灯不亮了，晚上很黑")
        desk.post_all(updates)
        assert desk.statuses == {200: RESIDENTS}, desk.statuses

        # When the worker is killed while it is answering them, with sends under way: the
        # Bot API has taken the next messages and holds its answers back, so the worker dies
        # between the platform taking a receipt and its own commit
        desk.wait_delivered(KILL_AFTER)
        desk.hold_next_answers(WORKER_THREADS, SLOW_ANSWER)
        desk.deployment.kill("worker")
        killed_at = time.monotonic()
        time.sleep(1.0)  # calls the worker sent before it died reach the fake's record
        at_kill = database_state(desk.database_url)
        delivered = desk.receipts()
        # Receipts the platform got whose row the dead worker could not mark sent: nothing
        # can tell whether they arrived (the Bot API has no idempotency key).
        unconfirmed = {
            chat for chat in pending_receipt_chats(desk.database_url) if delivered[chat] > 0
        }
        assert at_kill["outbox_pending"] + at_kill["inbox_pending"] > 0, (
            "the worker was killed with nothing in flight",
            at_kill,
        )

        # And a new worker is started
        desk.deployment.start("worker", name="worker-restarted")
        restarted_at = time.monotonic()
        recovery = desk.wait_until(
            "every resident answered, nothing pending", lambda: desk.settled(residents)
        )

        # Then every message made exactly one request, and every resident got exactly one
        # receipt, except those sent in the instant the worker died (sent again: at least
        # once), which are at most one per worker thread
        counts = assert_each_stored_and_answered_once(desk, residents, may_repeat=unconfirmed)
        repeated = {resident["id"] for resident in residents if desk.receipts()[resident["id"]] > 1}
        assert repeated == unconfirmed
        assert 1 <= len(unconfirmed) <= WORKER_THREADS, unconfirmed
        log = (desk.deployment.directory / "worker-restarted.log").read_text()
        assert "Traceback" not in log, log[-5000:]

    figures.update(counts)
    figures.update(
        {
            "receipts_before_kill": sum(delivered.values()),
            "inbox_pending_at_kill": at_kill["inbox_pending"],
            "outbox_pending_at_kill": at_kill["outbox_pending"],
            "sent_in_the_instant_of_the_kill": len(unconfirmed),
            "seconds_from_restart_to_all_answered": round(recovery, 1),
            "seconds_from_kill_to_restart": round(restarted_at - killed_at, 1),
        }
    )
