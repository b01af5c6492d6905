"""The main story in production's shape: PostgreSQL, Redis, and `redesk run` next to a separate
`redesk worker` and `redesk scheduler` (the server only stores and enqueues; the worker answers).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import (
    CITY,
    HEALTH_ATTEMPTS,
    HEALTH_PAUSE,
    Deployment,
    Team,
    base_env,
    bind_team,
    serve,
)


@pytest.fixture(scope="module")
def team(redis_deployment: Deployment) -> Iterator[Team]:
    """A worker and department staff, bound on the module's deployment."""
    with redis_deployment.http() as http:
        yield bind_team(redis_deployment, http)


def test_the_server_reports_redis_in_its_health(team: Team) -> None:
    response = team.http.get("/healthz")

    assert response.status_code == 200
    health = response.json()
    assert {key: health[key] for key in ("status", "database", "redis", "scheduler")} == {
        "status": "ok",
        "database": "ok",
        "redis": "ok",
        "scheduler": "ok",
    }


def test_a_request_goes_from_intake_to_closed_via_forwarding_through_redis(team: Team) -> None:
    # Given a resident
    resident = team.resident("张三")

    # When they report a broken street lamp
    resident.send("我家楼下的路灯坏了，晚上很黑")
    receipt = resident.wait_for("已受理登记", "类别：市政设施")
    number = receipt.number

    # Then the worker gets a card; they press 转单, then the department's button
    card = team.worker.wait_for(f"【{number}】新诉求", "路灯坏了")
    assert card.labels == ["受理", "转单", "驳回"]
    team.worker.press(card.action("转单"))
    team.worker.press(team.worker.wait_for(f"【{number}】请选择转交的部门").action(CITY))
    resident.wait_for(f"【{number}】您的诉求已转交「{CITY}」")

    # And the department's staff takes it and reports the result
    forwarded = team.city.wait_for(f"【{number}】转单", action=f"接收 {number}")
    team.city.press(forwarded.action("接收"))
    team.city.wait_for(f"【{number}】已接收")
    team.city.send(f"办结 {number} 已更换灯泡，恢复照明")

    # And the worker approves the answer (回单)
    review = team.worker.wait_for(f"【{number}】待审核回单", "已更换灯泡")
    team.worker.press(review.action("回单"))

    # Then the resident gets the result with rating buttons and closes the request
    reply = resident.wait_for(f"【{number}】您的诉求已办结", "已更换灯泡，恢复照明")
    assert len(reply.buttons) == 6
    resident.press(reply.action("已解决 · 满意"))
    resident.wait_for(f"【{number}】感谢您的评价")
    resident.ask(f"查询 {number}", f"【{number}】已办结")
    team.worker.wait_for(f"【{number}】群众已评价：已解决 满意")

    # And the metrics count it as closed
    metrics = team.http.get("/metrics").text
    assert 'redesk_requests{state="closed"} 1.0' in metrics


#: What `redesk run` and `redesk worker` log when no scheduler holds the lease.
NO_SCHEDULER = "WARNING bot.scheduler: No `redesk scheduler` has held the lease for ever"


def wait_for_log(deployment: Deployment, name: str, needle: str) -> None:
    """Waits (a bounded number of looks) until process NAME has logged `needle`."""
    path = deployment.directory / f"{name}.log"
    for _ in range(HEALTH_ATTEMPTS):
        if path.exists() and needle in path.read_text(errors="replace"):
            return
        time.sleep(HEALTH_PAUSE)
    raise AssertionError(f"redesk {name} never logged {needle!r}\n{deployment.logs()}")


def scheduler_health(http: httpx.Client, wanted: str) -> dict[str, object]:
    """GET /healthz until its "scheduler" is `wanted` (a bounded number of looks)."""
    health: dict[str, object] = {}
    for _ in range(HEALTH_ATTEMPTS):
        response = http.get("/healthz")
        assert response.status_code == 200, response.text
        health = response.json()
        if health["scheduler"] == wanted:
            return health
        time.sleep(HEALTH_PAUSE)
    raise AssertionError(f"/healthz never said scheduler {wanted!r}: {health}")


def test_without_a_scheduler_run_and_worker_warn_and_healthz_says_it_until_one_starts(
    tmp_path: Path, redis_url: str
) -> None:
    # Given production's shape on an empty Redis, `redesk worker` and `redesk run` started
    # without `redesk scheduler`
    env = base_env(tmp_path, f"sqlite:///{tmp_path / 'redesk.db'}")
    env["REDESK_REDIS_URL"] = redis_url
    deployment = Deployment(tmp_path, env)
    deployment.cli("db", "upgrade")
    running = serve(deployment, "worker", "run")
    next(running)
    try:
        # Then both warn that nothing re-enqueues unfinished work
        wait_for_log(deployment, "worker", NO_SCHEDULER)
        wait_for_log(deployment, "run", NO_SCHEDULER)

        # And /healthz answers 200 (the processes are alive) but says it is missing
        with deployment.http() as http:
            health = http.get("/healthz")
            assert health.status_code == 200
            assert health.json()["scheduler"] == "missing"
            assert "redesk_scheduler_missing 1.0" in http.get("/metrics").text

            # When a scheduler starts, Then it is seen
            deployment.start("scheduler")
            # (it renews every second; rounded, that is 0 or 1 s ago)
            assert scheduler_health(http, "ok")["scheduler_seen_seconds_ago"] in (0, 1)
            assert "redesk_scheduler_missing 0.0" in http.get("/metrics").text
    finally:
        # (serve stops every process and checks each shut down cleanly)
        next(running, None)
