"""Every user-facing sentence, in one catalogue (zh_CN), and the rendering of outbox messages.

Messages are stored in the outbox as a catalogue key with parameters and rendered here at
delivery, so the workflow never holds a sentence and a wording change reaches queued messages.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: How each state is called in messages.
STATE_LABELS: dict[str, str] = {
    "new": "待受理",
    "handling": "办理中（党委做单）",
    "forwarded": "已转单，待部门接收",
    "dept_handling": "部门办理中",
    "review": "待审核回单",
    "replied": "已回单，待评价",
    "closed": "已办结",
    "rejected": "不予受理",
    "cancelled": "已撤销",
}

#: How each action is called in messages.
ACTION_LABELS: dict[str, str] = {
    "submit": "接单",
    "accept": "受理",
    "forward": "转单",
    "reject": "驳回",
    "refer": "上报",
    "assign": "下派",
    "take": "接收",
    "return": "退单",
    "recall": "撤回转单",
    "release": "收回",
    "complete": "办结",
    "approve": "回单",
    "send_back": "返工",
    "rate": "评价",
    "reopen": "重办",
    "auto_close": "自动办结",
    "cancel": "撤销",
    "supplement": "补充",
    "comment": "备注",
    "remind": "提醒",
    "escalate": "督办",
    "inbox": "查看待办",
    "intake": "接待台登记",
}

#: How each role is called.
ROLE_LABELS: dict[str, str] = {
    "requester": "群众",
    "worker": "党务工作者",
    "leader": "党委负责人",
    "department": "部门工作人员",
    "admin": "管理员",
}

HELP_REQUESTER = """您好，这里是党群服务中心诉求受理平台。
直接发送文字，即可提交一件诉求（接单），我们会告诉您编号和预计响应时间。
常用指令：
· 查询 [编号] —— 查看诉求进度（不带编号则列出您最近的诉求）
· 补充 <编号> <内容> —— 补充说明
· 撤销 <编号> —— 撤销诉求
· 登记 <内容> —— 内容很短时，按原文登记为诉求
· 评价 <编号> 已解决/未解决 满意/基本满意/不满意 —— 对回单进行评价
· 绑定 <邀请码> —— 工作人员绑定身份
· 帮助 —— 显示本说明"""

#: The help's line on 切换, shown to residents while several centres are active.
HELP_REQUESTER_SWITCH = "· 切换 [中心名称或代码] —— 更换受理您今后诉求的党群服务中心"

HELP_WORKER = """您好，{role}！新诉求会以卡片形式推送给您。
· 待办 [页码] —— 待受理、待审核回单及您正在办理的诉求，按时限先后分页
· 受理 <编号> —— 党委直接做单
· 转单 <编号> <部门> —— 转交部门办理（不带部门则列出可选部门）
· 撤回转单 <编号> —— 部门尚未接收时撤回转单，可改转其他部门
· 驳回 <编号> <原因> —— 不予受理
· 上报 <编号> <原因> —— 超出本中心职权，上报上级中心办理
· 下派 <编号> <中心> —— 交下级中心办理（不带中心则列出可选中心）
· 办结 <编号> <结果> —— 报告办理结果
· 回单 <编号> —— 审核通过，把结果回复群众
· 返工 <编号> <原因> —— 审核不通过，退回重新办理
· 查询 <编号> —— 查看诉求详情和办理记录
· 取消 —— 放弃正在填写的指令"""

HELP_DEPARTMENT = """您是{department}的工作人员。转交给本部门的诉求会推送给您。
· 待办 [页码] —— 本部门待接收、办理中的诉求，按时限先后分页
· 接收 <编号> —— 接收诉求
· 退单 <编号> <原因> —— 不属于本部门，退回党委
· 办结 <编号> <结果> —— 报告办理结果，由党委审核后回复群众
· 查询 <编号> —— 查看诉求详情和办理记录
· 取消 —— 放弃正在填写的指令"""

#: Fixed sentences, by key.
TEXTS: dict[str, str] = {
    # requester notices
    "requester.receipt": (
        "【{number}】您的诉求已受理登记（接单）。\n类别：{category}\n预计响应时间：{response_due} 前\n"
        "我们会在每个环节通知您。发送「查询 {number}」可随时查看进度。"
    ),
    "requester.accepted": "【{number}】党委已受理您的诉求，正在办理中。",
    "requester.forwarded": "【{number}】您的诉求已转交「{department}」办理。",
    "requester.taken": "【{number}】「{department}」已接收您的诉求，正在办理。",
    "requester.rejected": "【{number}】很抱歉，您的诉求不予受理。\n原因：{reason}",
    "requester.replied": (
        "【{number}】您的诉求已办结，办理结果如下：\n{result}\n\n"
        "请对办理结果进行评价：问题是否已解决？是否满意？"
    ),
    "requester.closed": "【{number}】感谢您的评价（{rating}），本诉求已办结。",
    "requester.reopened": "【{number}】收到您的评价，诉求已重新办理（重办），我们会尽快处理。",
    "requester.cancelled": "【{number}】您的诉求已撤销。",
    "requester.referred": "【{number}】您的诉求已上报「{centre}」办理，我们会继续告诉您办理进展。",
    "requester.assigned": "【{number}】您的诉求已交由「{centre}」办理，我们会继续告诉您办理进展。",
    # cards for workers and departments
    "card.new": (
        "【{number}】新诉求 · {category}\n{text}\n—— 来自：{requester}{phone_part}（{channel_label}）\n"
        "响应时限：{response_due}　办结时限：{resolution_due}"
    ),
    "card.auto_forwarded": (
        "【{number}】新诉求 · {category}，已按类别自动转交「{department}」\n{text}\n"
        "—— 来自：{requester}{phone_part}\n办结时限：{resolution_due}"
    ),
    "card.forwarded": (
        "【{number}】转单 · {category}（{by}转交「{department}」）\n{text}\n"
        "—— 来自：{requester}{phone_part}\n办结时限：{resolution_due}"
    ),
    "card.referred": (
        "【{number}】上报 · {category}（{centre} {by}上报）\n上报原因：{reason}\n{text}\n"
        "—— 来自：{requester}{phone_part}（{channel_label}）\n"
        "响应时限：{response_due}　办结时限：{resolution_due}"
    ),
    "card.assigned": (
        "【{number}】下派 · {category}（{centre} {by}下派）\n{text}\n"
        "—— 来自：{requester}{phone_part}（{channel_label}）\n"
        "响应时限：{response_due}　办结时限：{resolution_due}"
    ),
    "card.returned": (
        "【{number}】「{department}」退单，诉求回到待受理。\n原因：{reason}\n诉求内容：\n{text}"
    ),
    "dept.recalled": "【{number}】{by}已撤回转交「{department}」的这件诉求，本部门无需接收和办理。",
    "card.review": (
        "【{number}】待审核回单（{department} · {by} 办结）\n诉求：\n{text}\n办理结果：{result}"
    ),
    "card.sent_back": "【{number}】回单被返工（{by}），请重新办理。\n原因：{reason}",
    "card.supplemented": "【{number}】群众补充了信息：\n{supplement}",
    "card.cancelled": "【{number}】群众已撤销该诉求，无需继续办理。",
    "card.reopened": (
        "【{number}】重办：群众评价为「{rating}」，诉求回到待受理。\n诉求内容：\n{text}"
    ),
    "worker.acted": "【{number}】{by}已{action}。",
    "card.released": (
        "【{number}】{by}的角色已撤销，其办理中的这件诉求已收回，回到待受理，请重新受理、转单或驳回。\n"
        "诉求内容：{text}\n—— 来自：{requester}{phone_part}\n办结时限：{resolution_due}"
    ),
    "committee.revoked": (
        "{by}的角色已撤销：{released}件办理中的诉求已收回待受理，"
        "{walk_ins}件接待台代登记的诉求改由全体党务工作者联系群众、代为补充、撤销或评价。涉及编号：{numbers}"
    ),
    "worker.rated": "【{number}】群众已评价：{rating}，诉求办结。",
    "remind.unacted": "【{number}】新诉求已超过{minutes}个工作分钟无人处理，请及时受理、转单或驳回：\n{text}"
    "\n响应时限：{response_due}",
    "remind.response_soon": "【{number}】响应时限即将到期（{response_due}），请尽快处理：\n{text}",
    "remind.response_due": "【{number}】已超过响应时限（{response_due}）仍未处理，已报告领导督办：\n{text}",
    "remind.resolution_soon": "【{number}】办结时限即将到期（{resolution_due}），请抓紧办理：\n{text}",
    "remind.resolution_due": "【{number}】已超过办结时限（{resolution_due}），已报告领导督办，请立即办理："
    "\n{text}",
    "escalate.overdue": "【{number}】督办：已超过{which}时限（{due}）。\n{text}\n当前处理：{holders}",
    "requester.auto_closed": "【{number}】办理结果已回复您{days}天，未收到评价，诉求已自动办结。"
    "如问题仍未解决，欢迎再次反映。",
    "desk.relay": "【{number}】接待台登记的群众 {contact_name} {contact_phone}，请电话告知：\n{inner_text}",
    # replies to the actor
    "reply.accepted": "【{number}】已受理（做单）。办理完成后请发送「办结 {number} 结果」。",
    "reply.forwarded": "【{number}】已转交「{department}」。{staff_note}",
    "reply.recalled": "【{number}】已撤回转单，诉求回到待受理，可重新转单、受理或驳回。",
    "reply.rejected": "【{number}】已驳回，群众会收到原因。",
    "reply.referred": "【{number}】已上报「{centre}」，该中心的党务工作者会收到这件诉求。",
    "reply.assigned": "【{number}】已下派「{centre}」，该中心的党务工作者会收到这件诉求。",
    "reply.approved": "【{number}】已回单，群众会收到办理结果并被邀请评价。",
    "reply.sent_back": "【{number}】已返工，办理人会收到原因。",
    "reply.taken": "【{number}】已接收。办理完成后请发送「办结 {number} 结果」。",
    "reply.returned": "【{number}】已退单，诉求回到党委。",
    "reply.completed": "【{number}】已办结，待党委审核后回复群众。",
    "reply.supplemented": "【{number}】补充信息已收到，已转告办理人员。",
    "reply.bound": "绑定成功！您的身份是：{role_label}{department_part}。\n\n{help}",
    "reply.linked": (
        "关联成功！此聊天账号已关联到工作台账号 {account}（{role_label}{department_part}），"
        "在这里的操作与工作台相同。\n\n{help}"
    ),
    "reply.dialogue_cancelled": "已取消。",
    "reply.phone_saved": "已记录您的手机号 {phone}，办理人员需要时会与您联系。",
    "error.stale_button": "这个按钮已失效，请使用最新消息中的按钮或发送文字指令。",
    "tg.pressed": "已收到",
    "wechat.welcome": "欢迎关注党群服务中心！有困难、诉求或建议，直接发送文字（可附图片、语音、位置）即可，"
    "我们会为您登记编号并跟进办理。",
    "wechat.welcome_back": "欢迎回来！有困难、诉求或建议，直接发送文字（可附图片、语音、位置）即可；"
    "发送「查询」可查看您的诉求。",
    "wechat.report": "请直接发送您要反映的问题，可附图片、语音和位置。",
    "wechat.commands": "复制下列指令回复即可办理：",
    "wechat.template_status": "有新进展",
    "line.acted": "—— {by} 已{action}（当前状态：{state}）",
    "card.refreshed": "【{number}】诉求有新进展，当前状态：{state}",
    "line.state": "—— 诉求已有进展（当前状态：{state}），以下为仍可办理的操作",
    "line.done": "—— 已处理（当前状态：{state}）",
    "line.attachments": "附件：{items}",
    "reply.no_requests": "您还没有提交过诉求。直接发送文字即可提交。",
    "reply.empty_todo": "暂无待办诉求。",
    "error.todo_page": "请发送「待办」查看第 1 页，或「待办 <页码>」查看其他页（共 {pages} 页）。",
    # small talk: answered kindly, no request is made
    "smalltalk.greeting": (
        "您好！这里是党群服务中心诉求受理平台。有困难、诉求或建议，直接发送文字描述即可"
        "（可附图片、位置），我们会登记编号并跟进办理。发送「帮助」查看全部指令。"
    ),
    "smalltalk.thanks": "不客气！如还有其他问题，随时发送给我们。",
    "smalltalk.thanks_rate": (
        "不客气！【{number}】的办理结果已回复您，如方便，请评价：问题是否已解决？是否满意？"
    ),
    "smalltalk.ack": "好的。如有需要，直接发送文字描述您遇到的问题即可。",
    "smalltalk.empty": (
        "您好！如有困难、诉求或建议，请用文字描述您遇到的问题（可附图片、位置），"
        "我们会登记编号并跟进办理。"
    ),
    "smalltalk.too_short": (
        "请描述您遇到的问题：发生了什么、在什么地方，以便我们登记办理。\n"
        "如需就按「{text}」登记为诉求，请发送「登记」。"
    ),
    "error.nothing_to_register": "没有待登记的内容。请直接发送文字描述您遇到的问题。",
    "ask.reject": "【{number}】请输入驳回原因（发送「取消」放弃）：",
    "ask.refer": "【{number}】请输入上报原因（发送「取消」放弃）：",
    "ask.assign": "【{number}】请选择或输入下派的中心（发送「取消」放弃）：{names}",
    "ask.complete": "【{number}】请输入办理结果（发送「取消」放弃）：",
    "ask.send_back": "【{number}】请输入返工原因（发送「取消」放弃）：",
    "ask.return": "【{number}】请输入退单原因（发送「取消」放弃）：",
    "ask.supplement": "【{number}】请输入补充内容（发送「取消」放弃）：",
    "ask.forward": "【{number}】请选择转交的部门：",
    "ask.forward_none": "【{number}】还没有可转交的部门，请管理员先添加部门。",
    "ask.rate": "【{number}】请评价：问题是否已解决？是否满意？",
    # errors
    "error.unknown_request": "没有找到编号为「{number}」的诉求，请检查编号（格式如 SQ-20260101-0001）。",
    "error.missing_number": "请附上诉求编号，例如：{example}",
    "error.not_permitted": "您没有权限执行「{action_label}」。如您是工作人员，请先发送「绑定 邀请码」。",
    "error.not_yours": "【{number}】该诉求不由您负责，不能执行「{action_label}」。",
    "error.transition": "【{number}】诉求当前状态为「{state_label}」，不能{action_label}。",
    "error.empty": "内容不能为空，请输入文字。",
    "error.too_long": "内容过长（{length} 字），请控制在 {limit} 字以内，可分多次「补充」。",
    "error.reason_required": "请填写原因。",
    "error.result_required": "请填写办理结果。",
    "error.content_required": "请填写补充内容。",
    "error.satisfaction": "评价格式：评价 <编号> 已解决/未解决 满意/基本满意/不满意",
    "error.unknown_department": "没有名为「{name}」的部门。可选部门：{departments}",
    "error.no_parent": "【{number}】本中心没有上级中心，不能上报。",
    "error.no_children": "【{number}】本中心没有下级中心，不能下派。",
    "error.unknown_child_centre": "【{number}】「{name}」不是本中心的下级中心。可选：{centres}",
    "error.unknown_centre": "没有名称或代码为「{name}」的服务中心，请核对后重试。",
    "error.link_refused": (
        "此聊天账号已有自己的工作身份，不能再关联到其他工作台账号。如需合并，请联系管理员。"
    ),
    "error.invitation_invalid": "邀请码无效、已使用或已过期，请核对后重试，或向管理员申请新的邀请码。",
    "error.bind_refused": "绑定失败次数过多，请一小时后再试，或向管理员申请新的邀请码。",
    "error.bind_usage": "请发送「绑定 邀请码」，邀请码由管理员提供。",
    "error.desk_not_worker": "只有已绑定的党务工作者可以在接待台代群众登记诉求。",
    "error.role_no_request": "工作人员身份不能直接提交诉求。如需代群众登记，请使用接待台登记。",
    "error.unsupported": "暂不支持这种消息，请发送文字、图片、语音、视频、文件或位置。",
    "error.internal": "抱歉，系统处理您的消息时出错，工作人员已收到通知。请稍后再试。",
    "error.flooded": "您发送消息过于频繁（每分钟最多 {limit} 条），之后的新诉求、补充和图片等暂不处理，请稍候约一分钟再发送。已登记的诉求不受影响，查询等命令照常答复。",
    # centres: how a resident reaches one (bot/handlers/centres.py)
    "centre.entered": "欢迎来到「{centre}」！您的诉求将由该中心受理，直接发送文字描述即可。",
    "centre.switched": "已切换到「{centre}」，今后提交的诉求由该中心受理（已提交的诉求不变）。",
    "centre.chosen": "已选择「{centre}」，正在为您登记诉求。",
    "centre.staff_fixed": "工作人员的所属中心由其身份决定，不能切换。如需调整，请联系管理员。",
    "centre.only_one": "本平台只有「{centre}」一个党群服务中心，您的诉求均由其受理。",
    "centre.intro_kept": "您的诉求已收到。请先选择受理诉求的党群服务中心，选定后立即为您登记：",
    "centre.intro_switch": "请选择党群服务中心：",
    "centre.intro_first": "您刚才的诉求还在等待登记，请先选择受理诉求的党群服务中心，再继续其他操作：",
    "centre.intro_unknown": "没有找到「{typed}」党群服务中心（代码或名称有误，或已停用）。请选择党群服务中心：",
    "centre.intro_bad": "没有「{typed}」这一选项。请选择党群服务中心：",
    "centre.intro_children": "「{parent}」下设以下党群服务中心，请选择：",
    "centre.here": "就选这里（{parent}）",
    "centre.how": "回复序号、名称或代码即可；发送「取消」放弃。",
    "centre.how_kept": "回复序号、名称或代码即可；发送「取消」放弃本次登记。",
    "wechat.welcome_centre": "欢迎关注「{centre}」！有困难、诉求或建议，直接发送文字（可附图片、语音、位置）即可，"
    "我们会为您登记编号并跟进办理。",
    "wechat.welcome_back_centre": "欢迎来到「{centre}」！有困难、诉求或建议，直接发送文字（可附图片、语音、位置）即可；"
    "发送「查询」可查看您的诉求。",
    "api.unknown_centre": "没有找到代码为「{code}」的党群服务中心（链接有误，或该中心已停用）。",
    # web API errors (HTTP answers)
    "api.bad_json": "请求格式错误：需要 JSON 对象。",
    "api.bad_field": "请求格式错误：{field}",
    "api.unauthorized": "身份无效或已过期，请重新创建身份。",
    "api.too_large": "请求内容过大。",
    "api.unavailable": "服务暂时不可用，请稍后重试。",
    "api.metrics_unauthorized": "需要有效的监控令牌（Authorization: Bearer）。",
    "api.metrics_local_only": "未设置监控令牌时，生产环境仅允许本机访问监控指标。",
    "api.rate_limited": "您发送消息过于频繁（每分钟最多 {limit} 条），这条消息未被接收，请稍候约一分钟再发送。已提交的诉求不受影响。",
    "api.sessions_limited": "新建会话过于频繁（同一网络每分钟最多 {limit} 个），请稍候再试。",
    "api.too_many_polls": "同时打开的连接过多，请关闭多余的页面后稍候重试。",
    "api.bad_content_type": "请求格式错误：需要 JSON（Content-Type: application/json）。",
    # console: staff accounts, login and sessions (bot/console/auth.py)
    "console.login_required": "请先登录。",
    "console.csrf": "请求来源无法确认（跨站请求或页面已过期），请刷新页面后重试。",
    "console.bad_login": "用户名或密码错误。",
    "console.login_limited": "登录失败次数过多，请在 {minutes} 分钟后再试。",
    "console.setup_invalid": "设置密码链接无效、已使用或已过期，请向管理员申请新的链接。",
    "console.password_too_short": "密码至少需要 {limit} 个字符。",
    "console.password_all_digits": "密码不能全是数字。",
    "console.password_is_username": "密码不能与用户名相同。",
    "console.password_too_long": "密码不能超过 {limit} 个字符。",
    "console.unknown_identity": "没有找到这个已关联的聊天账号。",
    "console.not_found": "没有找到该页面或内容。",
    # console: a request's page (bot/console/request.py)
    "console.note_label": "内部备注",
    "console.ask.reason": "原因",
    "console.ask.result": "办理结果",
    "console.ask.note": "备注内容（仅工作人员可见）",
    "console.ask.department": "转交部门",
    "console.ask.centre": "下派中心",
    "console.department_required": "请选择要转交的部门。",
    "console.centre_required": "请选择要下派的下级中心。",
    "console.unknown_action": "不支持的操作「{action}」。",
    "console.attachment_gone": "该附件已无法获取（平台已删除或尚未下载）。",
    "reply.noted": "【{number}】已添加内部备注，仅工作人员可见。",
    # console: the leaders' dashboard and downloads (bot/console/dashboard.py)
    "dashboard.title": "数据看板 · 工作台",
    "dashboard.forbidden": "数据看板仅对党委负责人和管理员开放。",
    "dashboard.back_to_queue": "返回待办队列",
    "dashboard.bad_date": "日期格式错误（{field}），请使用 YYYY-MM-DD。",
    "dashboard.bad_period": "结束日期早于开始日期。",
    "dashboard.bad_by": "分组方式无效，可选：category、department、worker、day、week、month、centre。",
    "dashboard.bad_trend": "趋势粒度无效，可选：day、week、month。",
    "dashboard.by_and_trend": "分组方式与趋势粒度不一致，请只指定其中一个。",
    "dashboard.bad_format": "下载格式无效，可选：csv、xlsx。",
    "dashboard.no_centre": "没有找到该中心，或不在您的管辖范围内。",
    "dashboard.unknown_filter": "没有找到该类别或部门。",
    "dashboard.too_many_rows": "数据超过 Excel 单表行数上限，请缩短时间段或改用 CSV。",
    # console queue (/console, /api/console/requests, /api/console/stream)
    "queue.bad_tab": "没有这个标签页：{typed}",
    "queue.bad_state": "没有这个状态：{typed}",
    "queue.bad_page": "页码应为 1 以上的整数：{typed}",
    "queue.bad_per_page": "每页条数应为 1 到 {limit} 之间的整数：{typed}",
    "queue.bad_date": "日期格式错误（应为 YYYY-MM-DD）：{typed}",
    "queue.bad_range": "开始日期不能晚于结束日期。",
    "queue.bad_overdue": "超期筛选只能是 1（仅超期）或 0（未超期）：{typed}",
    "queue.bad_channel": "没有这个渠道：{typed}",
    "queue.bad_centre": "没有这个党群服务中心，或它不在您的范围内：{typed}",
    "queue.bad_category": "没有这个类别：{typed}",
    "queue.bad_department": "没有这个部门：{typed}",
    "queue.bad_query": "搜索内容过长（最多 {limit} 个字）。",
    "queue.no_queue": "您的角色没有待办队列。",
    "queue.too_many_streams": "同时打开的实时更新连接过多，请关闭多余的页面后稍候重试。",
    # time bank (时间银行, workflow/timebank.py): its refusals; hours are shown as minutes / 60
    "timebank.self_credit": "不能为自己记录或调整志愿服务时长（谁记录谁证明）。",
    "timebank.day_cap": (
        "超过每日志愿服务时长上限：每人每天最多 {cap} 小时，"
        "今天已确认 {already} 小时，本次 {asked} 小时。"
    ),
    "timebank.balance_short": "时长余额不足：当前余额 {balance} 小时，需要 {needed} 小时。",
    "timebank.out_of_stock": "“{name}”已兑换完。",
    "timebank.reward_unavailable": "没有可兑换的“{name}”。",
    "timebank.already_given": "这次兑换已经发放过了。",
    "timebank.bad_minutes": "时长应大于 0，且最多 {limit} 小时。",
    "timebank.reason_required": "请写明调整原因（最多 {limit} 个字）。",
    "timebank.not_permitted": "只有本中心（或上级中心）的党务工作者可以确认时长或登记发放。",
}

#: The console queue's tabs: committee (worker, leader, admin) and department staff.
QUEUE_TAB_LABELS: dict[str, str] = {
    "todo_accept": "待受理",
    "review": "待审核回单",
    "mine": "我在办",
    "forwarded": "已转单",
    "overdue": "超期",
    "all": "全部",
}
DEPARTMENT_QUEUE_TAB_LABELS: dict[str, str] = {
    "forwarded": "待接收",
    "dept_handling": "办理中",
    "overdue": "超期",
    "all": "全部",
}

#: Marks every line of someone else's words in a message to staff: no line of theirs can then
#: start like one of the message's own lines (—— 来自：…, 办结时限：…, 复制下列指令…).
QUOTE_MARK = "│ "

#: Characters that change how the text around them is shown without being seen themselves:
#: bidi marks, embeddings, overrides and isolates, zero-width characters, the BOM.
INVISIBLE = re.compile("[\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]")

#: Line breaks other than "\n" (CR, CRLF, vertical tab, form feed, NEL, file/group/record
#: separators, U+2028 and U+2029): each becomes one "\n", so it is quoted like any line.
LINE_BREAKS = re.compile("\r\n|[\r\u000b\u000c\u001c-\u001e\u0085\u2028\u2029]")

#: Other control characters (tab and newline are kept).
CONTROLS = re.compile("[\u0000-\u0008\u000e-\u001f\u007f-\u009f]")

#: Messages to staff that show someone else's words in QUOTED_PARAMS, each on lines of its own.
QUOTING_KEYS: frozenset[str] = frozenset(
    {
        "card.new",
        "card.auto_forwarded",
        "card.forwarded",
        "card.referred",
        "card.assigned",
        "card.returned",
        "card.review",
        "card.supplemented",
        "card.reopened",
        "remind.unacted",
        "remind.response_soon",
        "remind.response_due",
        "remind.resolution_soon",
        "remind.resolution_due",
        "escalate.overdue",
    }
)

#: Parameters that hold a resident's own words as a block: quoted line by line.
QUOTED_PARAMS: frozenset[str] = frozenset({"text", "supplement"})

#: Parameters that hold names and short values someone chose (a display name, a phone typed
#: at the desk): shown on one line, whatever they contain.
INLINE_PARAMS: frozenset[str] = frozenset(
    {
        "requester",
        "phone",
        "contact_name",
        "contact_phone",
        "by",
        "holders",
        "rating",
    }
)


def clean(words: str) -> str:
    """`words` without invisible and control characters, every line break a plain "\n"."""
    return CONTROLS.sub("", INVISIBLE.sub("", LINE_BREAKS.sub("\n", words)))


def quote(words: str) -> str:
    """Someone else's words as a quoted block: every line cleaned and marked with QUOTE_MARK."""
    return "\n".join(QUOTE_MARK + line.rstrip() for line in clean(words).strip("\n").split("\n"))


def inline(words: str) -> str:
    """A name or short value on one line: cleaned, every run of whitespace one space."""
    return " ".join(clean(words).split())


#: What people read for the reception desk's walk-ins, which come through no channel.
DESK_LABEL = "接待台"


def channel_labels() -> dict[str, str]:
    """Channel name -> what people read for it: each channel's label, and the desk's.

    The registry is imported here, not at the top: the channel packages import this module.
    """
    from bot.channels import registry

    return {**registry.labels(), "desk": DESK_LABEL}


def buttonless_channels() -> frozenset[str]:
    """Channels without buttons: their messages carry command texts to copy instead."""
    from bot.channels import registry

    return registry.buttonless()


def _entry(key: str) -> str:
    """A catalogue sentence: bot/texts.py's own, or one a channel adds (`Channel.texts`)."""
    found = TEXTS.get(key)
    if found is not None:
        return found
    from bot.channels import registry

    return registry.texts()[key]


@dataclass(frozen=True)
class Button:
    """A button under a message: what it says and the command it sends."""

    label: str
    action: str

    def as_dict(self) -> dict[str, str]:
        """The JSON form of the web API."""
        return {"label": self.label, "action": self.action}


@dataclass(frozen=True)
class Rendered:
    """A message ready for a channel."""

    text: str
    buttons: list[Button] = field(default_factory=list)


def _rating_buttons(number: str) -> list[Button]:
    return [
        Button(f"{solved} · {level}", f"评价 {number} {solved} {level}")
        for solved in ("已解决", "未解决")
        for level in ("满意", "基本满意", "不满意")
    ]


def _committee_buttons(params: Mapping[str, Any]) -> list[Button]:
    """受理, 转单 and 驳回; 上报 where the centre has one above it, 下派 where it has
    centres below it (a single-centre install has neither)."""
    number = params["number"]
    buttons = [
        Button("受理", f"受理 {number}"),
        Button("转单", f"转单 {number}"),
        Button("驳回", f"驳回 {number}"),
    ]
    if params.get("can_refer"):
        buttons.append(Button("上报", f"上报 {number}"))
    if params.get("can_assign"):
        buttons.append(Button("下派", f"下派 {number}"))
    return buttons


#: Buttons that go with a message key, from its parameters.
BUTTONS: dict[str, Callable[[Mapping[str, Any]], list[Button]]] = {
    "card.new": _committee_buttons,
    "card.referred": _committee_buttons,
    "card.assigned": _committee_buttons,
    "card.returned": _committee_buttons,
    "card.released": _committee_buttons,
    "card.reopened": _committee_buttons,
    "card.forwarded": lambda p: [
        Button("接收", f"接收 {p['number']}"),
        Button("退单", f"退单 {p['number']}"),
        Button("办结", f"办结 {p['number']}"),
    ],
    "card.auto_forwarded": lambda p: [Button("撤回", f"撤回转单 {p['number']}")],
    "reply.forwarded": lambda p: [Button("撤回", f"撤回转单 {p['number']}")],
    "reply.recalled": _committee_buttons,
    "card.review": lambda p: [
        Button("回单", f"回单 {p['number']}"),
        Button("返工", f"返工 {p['number']}"),
    ],
    "card.sent_back": lambda p: [Button("办结", f"办结 {p['number']}")],
    "reply.accepted": lambda p: [
        Button("办结", f"办结 {p['number']}"),
        Button("转单", f"转单 {p['number']}"),
    ],
    "reply.taken": lambda p: [
        Button("办结", f"办结 {p['number']}"),
        Button("退单", f"退单 {p['number']}"),
    ],
    "requester.replied": lambda p: _rating_buttons(p["number"]),
    "ask.rate": lambda p: _rating_buttons(p["number"]),
    "ask.forward": lambda p: [
        Button(name, f"转单 {p['number']} {name}") for name in p.get("departments", [])
    ],
    "ask.assign": lambda p: [
        Button(str(name), f"下派 {p['number']} {code}") for name, code in p.get("centres", [])
    ],
    "requester.receipt": lambda p: [Button("查询进度", f"查询 {p['number']}")],
    "smalltalk.thanks_rate": lambda p: _rating_buttons(p["number"]),
    "smalltalk.too_short": lambda p: [Button("按原文登记", "登记")],
    "reply.todo": lambda p: _todo_buttons(p),
    "centre.choose": lambda p: _choice_buttons(p),
}


class _Defaults(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return ""


def text(key: str, **params: Any) -> str:
    """One catalogue sentence with its parameters filled in (missing ones left empty)."""
    return _entry(key).format_map(_Defaults(params))


def render(key: str, params: Mapping[str, Any]) -> Rendered:
    """An outbox message's text and buttons."""
    values = _Defaults(params)
    for name in INLINE_PARAMS & values.keys():
        if isinstance(values[name], str):
            values[name] = inline(values[name])
    if key in QUOTING_KEYS:
        for name in QUOTED_PARAMS & values.keys():
            values[name] = quote(str(values[name]))
    values.setdefault("phone_part", f" {values['phone']}" if params.get("phone") else "")
    values.setdefault("channel_label", channel_labels().get(str(params.get("channel")), ""))
    if key == "desk.relay":
        inner = render(str(params["inner"]), {k: v for k, v in params.items() if k != "inner"})
        values["inner_text"] = inner.text
        return Rendered(_entry(key).format_map(values), inner.buttons)
    if key in BODIES:
        body = BODIES[key](params)
    else:
        body = _entry(key).format_map(values)
    if params.get("attachments"):
        body += "\n" + TEXTS["line.attachments"].format(
            items=describe_attachments(params["attachments"])
        )
    buttons = BUTTONS[key](params) if key in BUTTONS else []
    return Rendered(body, buttons)


#: How attachments are named in messages.
ATTACHMENT_LABELS: dict[str, str] = {
    "photo": "图片",
    "live_photo": "实况照片",
    "video": "视频",
    "video_note": "视频消息",
    "animation": "动图",
    "audio": "音频",
    "voice": "语音",
    "document": "文件",
    "location": "位置",
    "contact": "联系人",
}


def describe_attachments(attachments: Any) -> str:
    """A short text for attachments, e.g. "[图片][位置：春熙路]"."""
    parts = []
    for item in attachments or []:
        label = ATTACHMENT_LABELS.get(str(item.get("kind")), "附件")
        if item.get("kind") == "location":
            place = item.get("label") or f"{item.get('latitude')}, {item.get('longitude')}"
            label += f"：{place}"
        elif item.get("kind") == "contact" and item.get("label"):
            label += f"：{item['label']}"
        parts.append(f"[{label}]")
    return "".join(parts)


def _callback(params: Mapping[str, Any]) -> str:
    return render(
        str(params.get("message_key", "tg.pressed")), params.get("message_params") or {}
    ).text


def _help(params: Mapping[str, Any]) -> str:
    role = params.get("role", "requester")
    if role in ("worker", "leader"):
        return HELP_WORKER.format(role=ROLE_LABELS[role])
    if role == "department":
        return HELP_DEPARTMENT.format(department=params.get("department") or "部门")
    if params.get("centres"):
        # Several centres: residents may move (切换); a single-centre install reads as before.
        head, _, tail = HELP_REQUESTER.rpartition("\n· 绑定")
        return f"{head}\n{HELP_REQUESTER_SWITCH}\n· 绑定{tail}"
    return HELP_REQUESTER


def _status(params: Mapping[str, Any]) -> str:
    lines = [
        f"【{params['number']}】{STATE_LABELS.get(params['state'], params['state'])}",
        f"类别：{params.get('category', '其他')}　提交：{params.get('created')}",
        "诉求：",
        quote(str(params.get("text", ""))),
    ]
    if params.get("department"):
        lines.append(f"承办部门：{params['department']}")
    if params.get("result"):
        lines.append(f"办理结果：{params['result']}")
    if params.get("response_due"):
        lines.append(
            f"响应时限：{params['response_due']}　办结时限：{params.get('resolution_due')}"
        )
    history = params.get("history") or []
    if history:
        lines.append("办理记录：")
        for entry in history:
            # Rows queued before history lines named their actor have three fields.
            when, action, note = entry[:3]
            actor = entry[3] if len(entry) > 3 else ""
            label = ACTION_LABELS.get(action, action) + (f"（{actor}）" if actor else "")
            lines.append(f"· {when} {inline(label)}" + (f"：{inline(note)}" if note else ""))
    return "\n".join(lines)


def _listing(params: Mapping[str, Any]) -> str:
    title = params.get("title", "")
    lines = [title] if title else []
    for number, state, summary in params.get("items", []):
        lines.append(f"【{number}】{STATE_LABELS.get(state, state)}　{inline(summary)}")
    return "\n".join(lines)


def role_label(role: str, department: str = "") -> str:
    """How a role is called: "党务工作者"; a department's staff by the department when it is known."""
    if role == "department" and department:
        return f"{department}{ROLE_LABELS[role]}"
    return ROLE_LABELS.get(role, role)


def actor_label(name: str, role: str | None, department: str = "") -> str:
    """Who did a step, as staff read it in a history: "王书记 · 党务工作者"."""
    if role is None:
        return "系统"
    what = department if role == "department" and department else ROLE_LABELS.get(role, role)
    return f"{name} · {what}" if name else what


#: 待办 sections: name -> heading, and the command words each of its lines offers as buttons.
TODO_SECTIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "new": ("待受理", ("受理", "转单", "驳回")),
    "review": ("待审核回单", ("回单", "返工")),
    "mine": ("我在办", ("办结", "转单")),
    "forwarded": ("待接收", ("接收", "退单")),
    "dept_handling": ("办理中", ("办结", "退单")),
}


def _short_number(number: str) -> str:
    """A number without its "SQ-YYYY" head (1202-0001), for button labels."""
    return number.partition("-")[2][4:] or number


def _todo(params: Mapping[str, Any]) -> str:
    page, pages = int(params.get("page", 1)), int(params.get("pages", 1))
    lines = [f"待办诉求（共 {params.get('total', 0)} 件，第 {page}/{pages} 页）"]
    for name, total, first_page, items in params.get("todo") or []:
        heading = TODO_SECTIONS.get(name, (name, ()))[0]
        lines.append(f"{heading}（{total} 件）：")
        if not total:
            lines.append("  无")
        elif not items:
            lines.append(f"  见第 {first_page} 页")
        for number, summary, due, overdue in items:
            mark = "已超期 " if overdue else ""
            lines.append(f"【{number}】{mark}限 {due}　{inline(summary)}")
    if page < pages and not params.get("buttons"):
        lines.append(f"发送「待办 {page + 1}」查看下一页。")
    return "\n".join(lines)


def _todo_buttons(params: Mapping[str, Any]) -> list[Button]:
    if not params.get("buttons"):
        return []
    buttons = [
        Button(f"{word} {_short_number(number)}", f"{word} {number}")
        for name, _total, _first, items in params.get("todo") or []
        for number, *_rest in items
        for word in TODO_SECTIONS.get(name, ("", ()))[1]
    ]
    page, pages = int(params.get("page", 1)), int(params.get("pages", 1))
    if page < pages:
        buttons.append(Button("更多", f"待办 {page + 1}"))
    return buttons


#: Digest sections, in order: parameter name -> heading.
DIGEST_SECTIONS: tuple[tuple[str, str], ...] = (
    ("new", "昨日以来新收"),
    ("due_today", "今日到期"),
    ("overdue", "已超期"),
    ("review", "待审核回单"),
    ("reopened", "重办中"),
)


def _digest(params: Mapping[str, Any]) -> str:
    sections = params.get("sections") or {}
    lines = [f"【每日待办提醒】{params.get('day', '')}"]
    for name, heading in DIGEST_SECTIONS:
        items = [str(item) for item in sections.get(name) or []]
        more = "……" in items
        count = f"{len(items) - 1}+" if more else str(len(items))
        lines.append(f"{heading}（{count}）：")
        lines += [f"  {item}" for item in items] or ["  无"]
    return "\n".join(lines)


def _choice(params: Mapping[str, Any]) -> str:
    """The centre choice: why it is asked, the numbered centres, "就选这里", how to answer."""
    lines = [text(str(params.get("intro", "centre.intro_switch")), **params)]
    options = params.get("options") or []
    for index, (name, _code, _children) in enumerate(options, start=1):
        lines.append(f"{index}. {inline(str(name))}")
    here = params.get("here")
    if here:
        lines.append(f"{len(options) + 1}. " + text("centre.here", parent=inline(str(here[0]))))
    lines.append(text("centre.how_kept" if params.get("kept") else "centre.how"))
    return "\n".join(lines)


def _choice_buttons(params: Mapping[str, Any]) -> list[Button]:
    """One button per centre (one with centres under it opens them), and "就选这里"."""
    if not params.get("buttons"):
        return []
    buttons = [
        Button(str(name), f"/centres {code}" if children else f"切换 {code}")
        for name, code, children in params.get("options") or []
    ]
    here = params.get("here")
    if here:
        buttons.append(Button("就选这里", f"切换 {here[1]}"))
    return buttons


#: Messages whose body is assembled from structured parameters.
BODIES: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "help": _help,
    "reply.status": _status,
    "reply.listing": _listing,
    "reply.todo": _todo,
    "tg.callback": _callback,
    "tg.edit": lambda params: str(params.get("text", "")),
    # A card's update is assembled by its channel from the stored card (bot/cards.py);
    # this line is what the refresh says on its own (logs, a channel without cards).
    "card.refresh": lambda params: TEXTS["card.refreshed"].format(
        number=params.get("number", ""), state=state_label(str(params.get("state", "")))
    ),
    "digest": _digest,
    "centre.choose": _choice,
}


def state_label(state: str) -> str:
    """A state as people read it."""
    return STATE_LABELS.get(state, state)


def action_label(action: str) -> str:
    """An action as people read it."""
    return ACTION_LABELS.get(action, action)
