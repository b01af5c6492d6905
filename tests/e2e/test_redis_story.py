"""The main story in production's shape: PostgreSQL, Redis, and `redesk run` next to a separate
`redesk worker` and `redesk scheduler` (the server only stores and enqueues; the worker answers).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.conftest import CITY, Deployment, Team, bind_team


@pytest.fixture(scope="module")
def team(redis_deployment: Deployment) -> Iterator[Team]:
    """A worker and department staff, bound on the module's deployment."""
    with redis_deployment.http() as http:
        yield bind_team(redis_deployment, http)


def test_the_server_reports_redis_in_its_health(team: Team) -> None:
    response = team.http.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "redis": "ok"}


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
