"""The workbench's words: Chinese first, English by the language switch (a ``lang`` cookie).

Crop classes come from billing/notes.py and bill items from billing/pdf.py, so a page and a
printed bill say the same; so do the bills' notes (billing.notes.localize, the ``note`` filter).
"""

from __future__ import annotations

from billing.notes import CLASSES
from billing.pdf import ITEMS, TEXT

LANGS = ("zh", "en")

WORDS: dict[str, dict[str, str]] = {
    "zh": {
        "app": "灌区水费工作台", "public": "水务公开", "runs": "计费批次", "vee": "数据核查", "audit": "审计记录",
        "sign_in": "登录", "sign_out": "退出", "user": "用户名", "password": "密码", "bad_login": "用户名或密码错误，或账户已暂时锁定（连续失败 5 次锁定 15 分钟）",
        "start_run": "新建计费批次", "season": "灌溉季", "from": "开始时间", "to": "结束时间", "or_window": "或按时段",
        "start": "开始计费", "status": "状态", "created": "创建时间", "window": "计量时段", "tariff": "水价方案", "total": "合计 (元)",
        "draft": "草稿", "approved": "已审核", "issued": "已出具", "open": "打开", "bills": "账单", "bill": "账单", "township": "乡镇", "unit": "用水单位",
        "volume": "用水量 (m³)", "quota": "定额 (m³)", "blocked": "暂停", "approve": "审核通过", "issue": "出具账单", "note": "备注",
        "events": "操作记录", "action": "操作", "who": "操作人", "when": "时间", "lines": "账单明细", "line": "行号", "class": "作物类别",
        "item": "项目", "band": "档次", "rate": "单价 (元/m³)", "amount": "金额 (元)", "explain": "追溯", "paid": "已缴费", "mark_paid": "登记缴费",
        "adjust": "调整（更正已出具账单）", "reason": "原因", "save": "保存", "diff": "与上一批次（同一时段）比较", "change": "变化 (元)",
        "no_previous": "同一时段没有更早的批次。", "arithmetic": "计算", "allocations": "用水量分摊", "point": "计量点", "method": "方法",
        "weight": "权重", "coverage": "数据覆盖率", "estimated": "估算比例", "readings": "读数", "gaps": "缺测段", "flags": "标记",
        "findings": "核查发现", "estimates": "估算", "edits": "人工修正", "add_edit": "录入修正水量", "rule": "规则", "detail": "说明",
        "charge": "水费", "subsidy": "精准补贴", "reward": "节水奖励", "adjustments": "调整", "notice": "用水公示", "print": "打印公示表 (PDF)",
        "no_issued": "尚无已出具的账单。", "error": "出错了", "back": "返回", "language": "English", "downloads": "下载",
        "four_eyes": "审核须由另一人完成：批次创建人不能审核自己的批次", "forbidden": "您的角色无权执行此操作", "csrf": "表单已过期或来源不明，请刷新页面后重试",
        "sign_in_needed": "请先登录", "pending_adjustments": "待计入的调整", "role": "角色", "run": "批次", "village_notice": "村级用水公示表", "households": "农户用水明细",
        "running": "正在计费，已用时", "ev:created": "创建", "ev:approved": "审核通过", "ev:issued": "出具", "ev:paid": "缴费", "ev:adjustment": "调整",
    },
    "en": {
        "app": "Irrigation billing workbench", "public": "Public water-use notice", "runs": "Billing runs", "vee": "VEE queue", "audit": "Audit trail",
        "sign_in": "Sign in", "sign_out": "Sign out", "user": "User", "password": "Password", "bad_login": "Wrong user or password, or the account is locked for now (5 failures lock it for 15 minutes)",
        "start_run": "Start a billing run", "season": "Season", "from": "From", "to": "To", "or_window": "or a window",
        "start": "Start", "status": "Status", "created": "Created", "window": "Window", "tariff": "Tariff", "total": "Total (yuan)",
        "draft": "draft", "approved": "approved", "issued": "issued", "open": "open", "bills": "Bills", "bill": "Bill", "township": "Township", "unit": "Unit",
        "volume": "Use (m³)", "quota": "Quota (m³)", "blocked": "blocked", "approve": "Approve", "issue": "Issue", "note": "Note",
        "events": "Events", "action": "Action", "who": "Who", "when": "When", "lines": "Lines", "line": "Line", "class": "Crop class",
        "item": "Item", "band": "Band", "rate": "Rate (yuan/m³)", "amount": "Amount (yuan)", "explain": "explain", "paid": "paid", "mark_paid": "Record payment",
        "adjust": "Adjustment (corrects an issued bill)", "reason": "Reason", "save": "Save", "diff": "Against the previous run of the same window", "change": "Change (yuan)",
        "no_previous": "No earlier run of this window.", "arithmetic": "Arithmetic", "allocations": "Allocation of the unit's volume", "point": "Point", "method": "Method",
        "weight": "Weight", "coverage": "Coverage", "estimated": "Estimated", "readings": "Readings", "gaps": "Gaps", "flags": "Flags",
        "findings": "VEE findings", "estimates": "Estimates", "edits": "Manual edits", "add_edit": "Record an edited volume", "rule": "Rule", "detail": "Detail",
        "charge": "Charges", "subsidy": "Subsidies", "reward": "Rewards", "adjustments": "Adjustments", "notice": "Water-use notice", "print": "Print the notice (PDF)",
        "no_issued": "No bills issued yet.", "error": "Error", "back": "Back", "language": "中文", "downloads": "Downloads",
        "four_eyes": "Four eyes: the run's creator cannot approve it; another approver must", "forbidden": "Your role may not do this", "csrf": "The form expired or came from elsewhere; reload the page and try again",
        "sign_in_needed": "Please sign in", "pending_adjustments": "Pending adjustments", "role": "Role", "run": "Run", "village_notice": "Village water-use notice", "households": "Households",
        "running": "Billing, running for", "ev:created": "created", "ev:approved": "approved", "ev:issued": "issued", "ev:paid": "paid", "ev:adjustment": "adjustment",
    },
}


def words(lang: str) -> dict[str, str]:
    """The page words of ``lang``, with the bill items and crop classes of the printed bill."""
    lang = lang if lang in LANGS else "zh"
    return (WORDS[lang] | {f"item:{k}": v for k, v in ITEMS[lang].items()} | {f"class:{k}": v for k, v in CLASSES[lang].items()}
            | {"loss_line": TEXT[lang]["loss_line"]})
