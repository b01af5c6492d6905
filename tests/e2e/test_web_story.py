"""Whole stories over HTTP against a real `redesk run` (SQLite, embedded worker).

The server, the worker and the two departments' staff are shared by the module; every story
has its own resident(s) and its own request, so no story depends on another.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.client import Message, WebChat
from tests.e2e.conftest import CITY, ESTATE, Deployment, Team, bind_team


@pytest.fixture(scope="module")
def team(sqlite_deployment: Deployment) -> Iterator[Team]:
    """A worker, 城管执法 staff and 物业服务中心 staff, bound on the module's server."""
    with sqlite_deployment.http() as http:
        yield bind_team(sqlite_deployment, http)


def submit(resident: WebChat, text: str, category: str) -> str:
    """The resident reports `text`; returns the number of the receipt (接单)."""
    resident.send(text)
    receipt = resident.wait_for("已受理登记", f"类别：{category}")
    assert f"查询 {receipt.number}" in receipt.actions
    return receipt.number


def rate_and_check_closed(resident: WebChat, number: str, result: str, label: str) -> Message:
    """The resident gets `result` with rating buttons, rates `label`, and 查询 says 已办结;
    returns that 查询's answer."""
    reply = resident.wait_for(f"【{number}】您的诉求已办结", result)
    assert len(reply.buttons) == 6 and label in reply.labels
    resident.press(reply.action(label))
    resident.wait_for(f"【{number}】感谢您的评价")
    status = resident.ask(f"查询 {number}", f"【{number}】已办结")
    assert f"办理结果：{result}" in status.text
    return status


def test_a_request_goes_from_intake_to_closed_via_forwarding(team: Team) -> None:
    # Given a resident
    resident = team.resident("张三")

    # When they report a broken street lamp
    number = submit(resident, "我家楼下的路灯坏了，晚上很黑", "市政设施")

    # Then the worker gets a card with the committee's buttons
    card = team.worker.wait_for(f"【{number}】新诉求", "路灯坏了")
    assert card.labels == ["受理", "转单", "驳回"]

    # When the worker presses 转单, then the department's button
    team.worker.press(card.action("转单"))
    picker = team.worker.wait_for(f"【{number}】请选择转交的部门")
    team.worker.press(picker.action(CITY))
    team.worker.wait_for(f"【{number}】已转交「{CITY}」")
    resident.wait_for(f"【{number}】您的诉求已转交「{CITY}」")

    # And the department's staff presses 接收 and reports the result
    forwarded = team.city.wait_for(f"【{number}】转单", action=f"接收 {number}")
    team.city.press(forwarded.action("接收"))
    team.city.wait_for(f"【{number}】已接收")
    resident.wait_for(f"【{number}】「{CITY}」已接收")
    team.city.send(f"办结 {number} 已更换灯泡，恢复照明")
    team.city.wait_for(f"【{number}】已办结，待党委审核")

    # And the worker approves the answer (回单)
    review = team.worker.wait_for(f"【{number}】待审核回单", "已更换灯泡")
    team.worker.press(review.action("回单"))
    team.worker.wait_for(f"【{number}】已回单")

    # Then the resident gets the result, rates it, and the request is closed
    rate_and_check_closed(resident, number, "已更换灯泡，恢复照明", "已解决 · 满意")
    team.worker.wait_for(f"【{number}】群众已评价：已解决 满意")


def test_the_committee_handles_a_request_itself(team: Team) -> None:
    # Given a resident's request
    resident = team.resident("李四")
    number = submit(resident, "人行道的地砖松动了，老人容易绊倒", "市政设施")
    card = team.worker.wait_for(f"【{number}】新诉求")

    # When the worker accepts it (做单)
    team.worker.press(card.action("受理"))
    accepted = team.worker.wait_for(f"【{number}】已受理（做单）")
    resident.wait_for(f"【{number}】党委已受理您的诉求")

    # And reports the result through the 办结 button and its question
    team.worker.press(accepted.action("办结"))
    team.worker.wait_for(f"【{number}】请输入办理结果")
    team.worker.send("已联系施工队重新铺设地砖")
    team.worker.wait_for(f"【{number}】已办结，待党委审核")

    # And approves it
    review = team.worker.wait_for(f"【{number}】待审核回单", "党委")
    team.worker.press(review.action("回单"))

    # Then the resident rates it and it is closed
    rate_and_check_closed(resident, number, "已联系施工队重新铺设地砖", "已解决 · 基本满意")


def test_a_department_hands_a_request_back_and_it_goes_to_another(team: Team) -> None:
    # Given a request forwarded to 城管执法
    resident = team.resident("王五")
    number = submit(resident, "单元楼的电梯经常停在半路", "物业小区")
    team.worker.wait_for(f"【{number}】新诉求")
    team.worker.send(f"转单 {number} {CITY}")
    team.city.wait_for(f"【{number}】转单", action=f"退单 {number}")

    # When its staff hands it back (退单) with a reason
    team.city.press(f"退单 {number}")
    team.city.wait_for(f"【{number}】请输入退单原因")
    team.city.send("电梯归物业管理，不属于城管")
    team.city.wait_for(f"【{number}】已退单")

    # Then the worker gets it back with the reason and the committee's buttons
    returned = team.worker.wait_for(f"【{number}】「{CITY}」退单", "不属于城管")
    assert returned.labels == ["受理", "转单", "驳回"]

    # When the worker forwards it to 物业服务中心, which handles it
    team.worker.send(f"转单 {number} {ESTATE}")
    team.worker.wait_for(f"【{number}】已转交「{ESTATE}」")
    forwarded = team.estate.wait_for(f"【{number}】转单", action=f"接收 {number}")
    team.estate.press(forwarded.action("接收"))
    team.estate.wait_for(f"【{number}】已接收")
    team.estate.send(f"办结 {number} 已请电梯公司检修")
    team.worker.press(team.worker.wait_for(f"【{number}】待审核回单", ESTATE).action("回单"))

    # Then the first department can no longer act on it
    team.city.send(f"接收 {number}")
    team.city.wait_for("该诉求不由您负责", "接收")

    # And the resident closes it
    rate_and_check_closed(resident, number, "已请电梯公司检修", "已解决 · 满意")


def test_a_worker_rejects_a_request_with_a_reason(team: Team) -> None:
    # Given a resident's request
    resident = team.resident("赵六")
    number = submit(resident, "希望增加一个篮球场", "意见建议")
    card = team.worker.wait_for(f"【{number}】新诉求")

    # When the worker presses 驳回 and gives the reason
    team.worker.press(card.action("驳回"))
    team.worker.wait_for(f"【{number}】请输入驳回原因")
    team.worker.send("该地块已规划为绿地，无法建设")
    team.worker.wait_for(f"【{number}】已驳回")

    # Then the resident gets the reason, and 查询 says 不予受理
    rejected = resident.wait_for(f"【{number}】很抱歉，您的诉求不予受理")
    assert "原因：该地块已规划为绿地，无法建设" in rejected.text
    resident.ask(f"查询 {number}", f"【{number}】不予受理")


def test_a_resident_cancels_their_request(team: Team) -> None:
    # Given a resident's request the worker has accepted
    resident = team.resident("孙七")
    number = submit(resident, "路口的井盖松了，车过会响", "市政设施")
    team.worker.press(team.worker.wait_for(f"【{number}】新诉求").action("受理"))
    resident.wait_for(f"【{number}】党委已受理您的诉求")

    # When the resident cancels it (撤销)
    resident.send(f"撤销 {number}")

    # Then they are told, the worker handling it is told, and 查询 says 已撤销
    resident.wait_for(f"【{number}】您的诉求已撤销")
    team.worker.wait_for(f"【{number}】群众已撤销该诉求")
    resident.ask(f"查询 {number}", f"【{number}】已撤销")

    # And the worker can no longer complete it
    team.worker.send(f"办结 {number} 已处理")
    team.worker.wait_for(f"【{number}】诉求当前状态为「已撤销」，不能办结")


def test_a_worker_sends_a_result_back_for_rework(team: Team) -> None:
    # Given a request 城管执法 has completed
    resident = team.resident("周八")
    number = submit(resident, "小区门口排水不畅，一下雨就积水", "市政设施")
    team.worker.wait_for(f"【{number}】新诉求")
    team.worker.send(f"转单 {number} {CITY}")
    team.city.press(team.city.wait_for(f"【{number}】转单").action("接收"))
    team.city.send(f"办结 {number} 已查看")
    first = team.worker.wait_for(f"【{number}】待审核回单", "已查看")

    # When the worker sends it back (返工) with a reason
    team.worker.press(first.action("返工"))
    team.worker.wait_for(f"【{number}】请输入返工原因")
    team.worker.send("只查看不够，请疏通后再回复")
    team.worker.wait_for(f"【{number}】已返工")

    # Then the staff gets the reason and completes it again
    sent_back = team.city.wait_for(f"【{number}】回单被返工", "请疏通后再回复")
    team.city.press(sent_back.action("办结"))
    team.city.wait_for(f"【{number}】请输入办理结果")
    team.city.send("已疏通排水管，雨后无积水")

    # And the worker approves the new result, which is what the resident gets
    second = team.worker.wait_for(f"【{number}】待审核回单", "已疏通排水管")
    team.worker.press(second.action("回单"))
    rate_and_check_closed(resident, number, "已疏通排水管，雨后无积水", "已解决 · 满意")
    answers = [text for text in resident.texts() if "您的诉求已办结" in text]
    assert len(answers) == 1 and "已查看" not in answers[0]


def test_an_unsolved_rating_reopens_the_request_until_it_is_solved(team: Team) -> None:
    # Given a request the committee handled and answered
    resident = team.resident("吴九")
    number = submit(resident, "独居老人家里没人看护，想申请助餐", "为老助残")
    team.worker.press(team.worker.wait_for(f"【{number}】新诉求").action("受理"))
    team.worker.send(f"办结 {number} 已登记助餐服务")
    team.worker.press(team.worker.wait_for(f"【{number}】待审核回单").action("回单"))
    reply = resident.wait_for(f"【{number}】您的诉求已办结", "已登记助餐服务")

    # When the resident says it is not solved and not satisfied
    resident.press(reply.action("未解决 · 不满意"))

    # Then it is redone (重办): the resident is told and the worker gets a new card
    resident.wait_for(f"【{number}】收到您的评价，诉求已重新办理")
    card = team.worker.wait_for(f"【{number}】重办", "未解决 不满意")
    assert card.labels == ["受理", "转单", "驳回"]
    resident.ask(f"查询 {number}", f"【{number}】待受理")

    # When the worker handles it again
    team.worker.press(card.action("受理"))
    team.worker.wait_for(f"【{number}】已受理（做单）")
    team.worker.send(f"办结 {number} 已安排志愿者每天送餐上门")
    team.worker.press(team.worker.wait_for(f"【{number}】待审核回单", "送餐上门").action("回单"))

    # Then the resident gets the new result and closes it
    status = rate_and_check_closed(resident, number, "已安排志愿者每天送餐上门", "已解决 · 满意")
    assert "重办" in status.text.split("办理记录：")[1]


def test_a_resident_cannot_accept_someone_elses_request(team: Team) -> None:
    # Given one resident's request
    owner = team.resident("郑十")
    number = submit(owner, "护栏被撞歪了", "市政设施")
    team.worker.wait_for(f"【{number}】新诉求")

    # When another resident tries to accept it (受理)
    other = team.resident("冒名者")
    other.send(f"受理 {number}")

    # Then they are refused and cannot even see it
    other.wait_for("您没有权限执行「受理」")
    other.ask(f"查询 {number}", f"没有找到编号为「{number}」的诉求")

    # And nothing changed: the worker's 查询 still shows it waiting
    status = team.worker.ask(f"查询 {number}", f"【{number}】待受理")
    history = status.text.split("办理记录：")[1].strip().splitlines()
    assert len(history) == 1 and "接单" in history[0]
    assert not any("党委已受理" in text for text in owner.texts())


def test_a_message_sent_twice_with_the_same_id_makes_one_request(team: Team) -> None:
    # Given a resident
    resident = team.resident("钱十一")

    # When their client sends the same message twice (a retry)
    first = resident.send("楼道的灯坏了一个月了", client_id="retry-1")
    second = resident.send("楼道的灯坏了一个月了", client_id="retry-1")

    # Then both are accepted with the same id, and one request is made
    assert first == second == "retry-1"
    number = resident.wait_for("已受理登记").number
    listing = resident.ask("查询", "您最近的诉求")
    assert listing.text.count("【SQ-") == 1 and number in listing.text
    assert sum("已受理登记" in text for text in resident.texts()) == 1
    metrics = team.http.get("/metrics").text
    assert 'redesk_inbound_messages_total{channel="web",outcome="duplicate"}' in metrics


def test_a_worker_registers_a_walk_in_at_the_reception_desk(team: Team) -> None:
    # When the worker registers a walk-in's request
    team.worker.intake(name="陈阿姨", phone="13800001234", text="想咨询一下流动党员怎么办理报到")

    # Then the worker gets the receipt to relay by phone, and a card as for any request
    relay = team.worker.wait_for("接待台登记的群众 陈阿姨 13800001234", "已受理登记")
    number = relay.number
    assert "类别：政策咨询" in relay.text
    card = team.worker.wait_for(f"【{number}】新诉求", "陈阿姨")
    assert "接待台" in card.text

    # And later steps are relayed to the worker too
    team.worker.press(card.action("受理"))
    team.worker.wait_for(f"【{number}】接待台登记的群众 陈阿姨", "党委已受理您的诉求")
