"""A first whole story through the harness, on both databases."""

from __future__ import annotations

from tests.utils.harness import Desk


def test_a_request_goes_from_intake_to_closed_via_forwarding(desk: Desk) -> None:
    # Given a department, a category, a worker and the department's staff
    desk.add_department("城管执法")
    desk.add_category("市政设施", ["路灯"])
    desk.add_category("其他", [], fallback=True)
    worker = desk.worker()
    staff = desk.staff("城管执法")
    resident = desk.identity("张三")

    # When the resident reports a broken street lamp
    receipt = resident.send("我家门口的路灯坏了")

    # Then they get a number and the worker gets a card
    assert len(receipt) == 1 and "市政设施" in receipt[0].text
    number = desk.requests()[0].number
    assert number in receipt[0].text
    card = worker.last()
    assert f"受理 {number}" in card.actions

    worker.send(f"转单 {number} 城管执法")
    assert f"接收 {number}" in staff.last().actions
    staff.press(f"接收 {number}")
    staff.send(f"办结 {number} 已更换灯泡")
    assert f"回单 {number}" in worker.last().actions
    worker.press(f"回单 {number}")
    reply = resident.last()
    assert "已更换灯泡" in reply.text
    resident.press(f"评价 {number} 已解决 满意")

    assert desk.request(number).state == "closed"
    assert [e.action for e in desk.events(number)] == [
        "submit",
        "forward",
        "take",
        "complete",
        "approve",
        "rate",
    ]
