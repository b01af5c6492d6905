"""PostgreSQL stopped for 30 seconds under load, then started again.

Production's shape: a PostgreSQL server and a Redis of the test's own, `redesk run` (Telegram
webhook), `redesk worker` and `redesk scheduler`. Residents keep writing while the database is
stopped the hard way (`pg_ctl stop -m immediate`: every backend ends at once, like a crash; the
next start recovers from the write-ahead log).
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from tests.faults.conftest import (
    PRODUCTION,
    assert_each_stored_and_answered_once,
    database_state,
    open_desk,
)
from tests.faults.servers import PostgresServer, RedisServer

#: Residents writing, one message each.
RESIDENTS = 300

#: Seconds between two residents starting to write (the load lasts about a minute).
PAUSE = 0.2

#: Receipts delivered before the database is stopped.
STOP_AFTER = 40

#: Sends whose answer the fake Bot API holds back, and for how many seconds.
SLOW_SENDS = 3
SLOW_ANSWER = 4.0

#: Seconds the database stays stopped.
DOWN_FOR = 30.0


def test_while_postgresql_is_down_webhooks_answer_503_and_everything_is_done_once_after(
    tmp_path: Path,
    postgres_server: PostgresServer,
    redis_server: RedisServer,
    figures: dict[str, Any],
) -> None:
    with open_desk(tmp_path, postgres_server.url, redis_server.url, processes=PRODUCTION) as desk:
        # Given residents writing one after another, each update posted until it is accepted
        residents = desk.residents(RESIDENTS)
        updates = desk.reports(residents, "{index}号楼电梯停了，老人下不了楼")
        finished = desk.post_in_background(updates, pause=PAUSE)

        # When PostgreSQL is stopped in the middle of it, while sends are under way: the Bot
        # API has taken the next messages but its answers are slow, so the worker learns
        # that they were sent only after the database went away
        desk.wait_delivered(STOP_AFTER)
        desk.hold_next_answers(SLOW_SENDS, SLOW_ANSWER)
        before_stop = Counter(desk.statuses)
        postgres_server.stop("immediate")
        stopped_at = time.monotonic()
        taken_before_stop = desk.delivered()

        # Then, while it is down, the webhook answers 503 (Telegram will retry) and the
        # health check says the service is unavailable
        probe = desk.fake.text_update(desk.fake.user(999_001, "探测"), "数据库停了吗")
        status, _ = desk.fake.post_webhook(desk.webhook_url, probe, secret_token=desk.secret)
        assert status == 503, status
        with httpx.Client(base_url=desk.deployment.base_url, timeout=10) as http:
            assert http.get("/healthz").status_code == 503
        time.sleep(max(0.0, DOWN_FOR - (time.monotonic() - stopped_at)))
        during = Counter(desk.statuses) - before_stop

        # When it is started again
        postgres_server.start()
        started_at = time.monotonic()
        finished()
        desk.wait_until("every resident answered, nothing pending", lambda: desk.settled(residents))
        recovery = time.monotonic() - started_at

        # Then every resident's message is stored once and answered once, nothing is left
        # half-written (each request has its submit event and its one receipt row), and no
        # process gave up
        counts = assert_each_stored_and_answered_once(desk, residents)
        assert set(desk.statuses) <= {200, 503}, desk.statuses
        assert during[503] > 0, during
        assert database_state(desk.database_url)["requests"] == RESIDENTS
        assert all(process.poll() is None for process in desk.deployment.processes.values()), (
            desk.deployment.logs()
        )

    figures.update(counts)
    figures.update(
        {
            "webhook_posts_answered_503_while_down": during[503],
            "webhook_posts_answered_200": desk.statuses[200],
            "seconds_down": round(started_at - stopped_at, 1),
            "receipts_taken_by_the_api_before_the_stop": taken_before_stop,
            "seconds_from_restart_to_all_answered": round(recovery, 1),
        }
    )
