"""Redis killed and started again empty in the middle of a load.

Production's shape: PostgreSQL and Redis of the test's own, `redesk run` (Telegram webhook),
`redesk worker` and `redesk scheduler`. Redis holds the queues, the delayed deliveries, the
scheduler's lease and the Bot API rate limits; all of it is lost. The database is the record:
the sweeper finds every unfinished inbox and outbox row and enqueues it again.
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
)
from tests.faults.servers import PostgresServer, RedisServer

#: Residents writing, one message each.
RESIDENTS = 300

#: Seconds between two residents starting to write.
PAUSE = 0.05

#: Receipts delivered before Redis is killed.
KILL_AFTER = 40

#: Seconds Redis stays away.
DOWN_FOR = 3.0


def test_redis_restarted_empty_mid_load_loses_nothing_and_repeats_nothing(
    tmp_path: Path,
    postgres_server: PostgresServer,
    redis_server: RedisServer,
    figures: dict[str, Any],
) -> None:
    with open_desk(tmp_path, postgres_server.url, redis_server.url, processes=PRODUCTION) as desk:
        # Given residents writing one after another
        residents = desk.residents(RESIDENTS)
        updates = desk.reports(residents, "{index}号楼的垃圾三天没人清运了")
        finished = desk.post_in_background(updates, pause=PAUSE)

        # When Redis is killed while the worker is answering them, and comes back empty
        desk.wait_delivered(KILL_AFTER)
        keys_before_kill = redis_server.keys()
        redis_server.kill()
        killed_at = time.monotonic()
        at_kill = database_state(desk.database_url)
        time.sleep(DOWN_FOR)
        redis_server.start()
        restarted_at = time.monotonic()
        finished()
        desk.wait_until("every resident answered, nothing pending", lambda: desk.settled(residents))
        recovery = time.monotonic() - restarted_at

        # Then the webhook accepted every update at the first try, even while Redis was away
        # (the row is stored first; the lost enqueue is the sweeper's to repeat)
        assert desk.statuses == {200: RESIDENTS}, desk.statuses

        # And every message made one request and got one receipt: nothing lost with the
        # queues, nothing repeated when the sweeper enqueued it again
        counts = assert_each_stored_and_answered_once(desk, residents)
        # (a new redis-server process that keeps nothing on disk: all it held was lost)
        assert keys_before_kill > 0 and redis_server.starts == 2
        assert at_kill["inbox_pending"] + at_kill["outbox_pending"] > 0, at_kill
        log = (desk.deployment.directory / "worker.log").read_text(errors="replace")
        assert "Sweep re-enqueued" in log, log[-5000:]
        assert all(process.poll() is None for process in desk.deployment.processes.values()), (
            desk.deployment.logs()
        )

    figures.update(counts)
    figures.update(
        {
            "redis_keys_lost": keys_before_kill,
            "inbox_pending_at_kill": at_kill["inbox_pending"],
            "outbox_pending_at_kill": at_kill["outbox_pending"],
            "seconds_redis_away": round(restarted_at - killed_at, 1),
            "seconds_from_restart_to_all_answered": round(recovery, 1),
        }
    )
