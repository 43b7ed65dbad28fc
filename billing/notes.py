"""What a bill says to its reader: the catalogue of notes (code -> English and Chinese), and its money lines.

A note is made where its rule is (the tariff, the bills, allocation, VEE) by its code and
parameters::

    note("tariff.over_quota", use="8874", quota="8571.360")

and is a ``str``: its English text, which is what the bill file, the ledger and the API store (the
same bytes as before notes had codes). It also knows its code and parameters; a document keeps them
in ``note_codes`` (English text -> code and parameters), and a page or a printed bill shows the note
in the reader's language with :func:`localize`. A text without a known code (a document of an older
ledger) is shown as stored.

:func:`money_lines` is the one rule for the lines a reader is shown: a subsidy or reward line of
0.00 yuan is no money line; when it is zero because it was refused, the bill's note says why
(:func:`refusals`). The stored document keeps every line (each traces to readings).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

CREDITS = ("subsidy", "reward")


@dataclass(frozen=True)
class Entry:
    en: str
    zh: str
    refuses: frozenset[str] = frozenset()  # the credit kinds a bill with this note does not get


def _refusing(*kinds: str) -> frozenset[str]:
    return frozenset(kinds)


CATALOGUE: dict[str, Entry] = {
    # billing.tariff
    "tariff.no_quota": Entry("no quota for {season_kind} season: all use billed in the top band", "本季无定额：全部用水按最高档计价"),
    "tariff.no_water": Entry("no water used: no charge, no subsidy, no reward", "本期未用水：无水费、无补贴、无奖励", _refusing(*CREDITS)),
    "tariff.over_quota": Entry("use {use} m3 exceeds quota {quota} m3: subsidy and reward refused",
                               "用水量 {use} m³ 超过定额 {quota} m³：不享受精准补贴和节水奖励", _refusing(*CREDITS)),
    "tariff.unpaid_fees": Entry("unpaid fees from an earlier bill: precise subsidy refused", "有往期欠费：不享受精准补贴", _refusing("subsidy")),
    "tariff.subsidy_flat": Entry("{crop_class} within quota: {volume} m3 x flat {rate}/m3", "{crop_class}定额内用水 {volume} m³ × 补贴 {rate} 元/m³"),
    "tariff.subsidy_cost": Entry("{crop_class} within quota: {volume} m3 x {gaps} = {rate}/m3",
                                 "{crop_class}定额内用水 {volume} m³ × 成本与执行价之差 {gaps} = {rate} 元/m³"),
    "tariff.reward": Entry("water saved below quota: {volume} m3 x {rate}/m3", "定额内节约用水 {volume} m³ × {rate} 元/m³"),
    "tariff.buy_back": Entry("saved quota bought back: {volume} m3 x {rate}/m3", "节余定额回购 {volume} m³ × {rate} 元/m³"),
    "tariff.fixed": Entry("two-part price: {per_mu}/mu x {area} mu", "两部制水价：{per_mu} 元/亩 × {area} 亩"),
    "tariff.fixed_share": Entry("two-part price: {per_mu}/mu x {area} mu x {share} of the season",
                                "两部制水价：{per_mu} 元/亩 × {area} 亩 × 灌溉季的 {share}"),
    "tariff.budget_cut": Entry("{what} budget {budget} < claims {claimed}: {rule}, paid {paid} of {claim}",
                               "{what}预算 {budget} 元 < 申请合计 {claimed} 元：{rule}，实付 {paid} 元（应得 {claim} 元）"),
    "tariff.budget_pro_rata": Entry("{what} claims {claimed} exceed the season budget {budget}: paid pro rata {share}",
                                    "{what}申请合计 {claimed} 元超过本季预算 {budget} 元：按比例 {share} 支付"),
    "tariff.budget_priority": Entry("{what} claims {claimed} exceed the season budget {budget}: paid by priority {order}",
                                    "{what}申请合计 {claimed} 元超过本季预算 {budget} 元：按优先顺序（{order}）支付"),
    # billing.bills
    "bills.quota_share": Entry("quota for this window: {share} of the season quota (its share of the season's irrigation rounds)",
                               "本期定额为灌溉季定额的 {share}（按本期所含灌溉轮次折算）"),
    "bills.loss_parent": Entry("loss below {where}, borne by {below}", "{where} 以下的输水损失，由 {below} 承担"),
    "bills.loss_share": Entry("share of the loss below {where} ({below}) by {method}, weight {weight}",
                              "分摊 {where}（{below}）以下的输水损失，按{method}，权重 {weight}"),
    "bills.adjustment": Entry("#{id} corrects {bill}: {reason}", "第 {id} 号调整，更正账单 {bill}：{reason}"),
    "bills.blocked": Entry("{reasons}: fill or estimate the gaps (VEE) and rerun", "{reasons}：请补测或估算缺测数据（数据核查）后重新计费"),
    "bills.no_readings": Entry("no readings queried for {point}", "未查询到 {point} 的读数"),
    "bills.low_coverage": Entry("{point} coverage {coverage} below {min} ({gaps} gap(s))", "{point} 数据覆盖率 {coverage}，低于 {min}（{gaps} 处缺测）"),
    # billing.allocation, billing.vee (run notes: the run manifest's allocation_notes and vee.estimates)
    "allocation.metered_by_area": Entry("point {point}: allocation 'metered' but not every sharing unit has its own meter; split by area",
                                        "计量点 {point}：规定按计量水量分摊，但并非每个共用单位都有自己的水表，改按面积分摊"),
    "vee.balance_estimate": Entry("{point}: estimated from the balance of reach {canal}/{reach} ({others}) less expected seepage: "
                                  "{volume} m3 instead of the {measured} m3 measured at {coverage} coverage",
                                  "{point}：按渠段 {canal}/{reach}（{others}）的水量平衡扣除预计渗漏估算为 {volume} m³，"
                                  "实测 {measured} m³（数据覆盖率 {coverage}）"),
}

CLASSES = {"zh": {"grain": "粮食作物", "cash": "经济作物", "aquaculture": "水产养殖", "other": "其他", "": ""},
           "en": {"grain": "grain", "cash": "cash crops", "aquaculture": "aquaculture", "other": "other", "": ""}}
# parameter values that are words, not figures: shown in the reader's language
VALUES_ZH = CLASSES["zh"] | {"subsidy": "精准补贴", "reward": "节水奖励", "pro rata": "按比例分配", "priority": "按优先顺序分配",
                             "metered": "计量水量", "area": "面积", "quota": "定额", "file order": "文件顺序"}
WORD_PARAMS = frozenset({"crop_class", "what", "rule", "method", "order"})


Param = str | tuple["Note", ...]  # a formatted value, or notes of their own (joined by "; ")


class Note(str):
    """A note: its English text (what documents store), its code and its parameters (already formatted)."""

    code: str
    params: dict[str, Param]

    def __new__(cls, code: str, params: Mapping[str, object]) -> Note:
        kept: dict[str, Param] = {k: tuple(v) if isinstance(v, list | tuple) else str(v) for k, v in params.items()}
        made = super().__new__(cls, CATALOGUE[code].en.format(**{k: "; ".join(v) if isinstance(v, tuple) else v for k, v in kept.items()}))
        made.code, made.params = code, kept
        return made

    def __reduce__(self) -> tuple[Any, ...]:  # bills are rendered in worker processes
        return Note, (self.code, self.params)

    def ref(self) -> dict[str, Any]:
        return {"code": self.code, "params": {k: [n.ref() for n in v] if isinstance(v, tuple) else v for k, v in self.params.items()}}


def note(code: str, **params: object) -> Note:
    """The note ``code`` of the catalogue with its parameters (values as they are to read; a list: notes)."""
    return Note(code, params)


def codes_of(texts: Iterable[str]) -> dict[str, dict[str, Any]]:
    """``note_codes`` of a document: each coded note's English text -> its code and parameters."""
    return {str(t): t.ref() for t in texts if isinstance(t, Note)}


def localize(text: str, codes: Mapping[str, Any] | None, lang: str) -> str:
    """A stored note in ``lang``: by its code in the document's ``note_codes``; as stored without one."""
    if lang != "zh":
        return text
    shown = _chinese((codes or {}).get(text))
    return text if shown is None else shown


def _chinese(ref: Any) -> str | None:
    entry = CATALOGUE.get(ref.get("code", "")) if isinstance(ref, Mapping) else None
    if entry is None:
        return None
    params: dict[str, str] = {}
    for key, value in ref.get("params", {}).items():
        if isinstance(value, list):
            parts = [_chinese(part) for part in value]
            if None in parts:
                return None
            params[key] = "；".join(p for p in parts if p is not None)
        else:
            params[key] = VALUES_ZH.get(value, value) if key in WORD_PARAMS else value
    try:
        return entry.zh.format(**params)
    except (KeyError, IndexError):  # parameters of another version of the catalogue
        return None


def note_codes(document: Mapping[str, Any]) -> Mapping[str, Any]:
    return document.get("note_codes") or {}


def is_money_line(kind: str, amount: Decimal | str) -> bool:
    """A subsidy or reward line of 0.00 yuan is not a money line to print (it stays in the stored bill)."""
    return not (kind in CREDITS and Decimal(amount) == 0)


def money_lines(lines: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """A stored bill's lines a reader is shown (see :func:`is_money_line`)."""
    return [ln for ln in lines if is_money_line(ln["kind"], ln["amount"])]


def refusals(document: Mapping[str, Any], kind: str) -> list[str]:
    """The bill's notes (English, as stored) that refuse it credits of ``kind`` (subsidy, reward)."""
    codes = note_codes(document)
    return [n for n in document.get("notes", []) if kind in _entry_of(codes.get(n)).refuses]


def _entry_of(ref: Any) -> Entry:
    return CATALOGUE.get(ref.get("code", ""), _NONE) if isinstance(ref, Mapping) else _NONE


_NONE = Entry("", "")
