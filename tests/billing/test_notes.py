"""The catalogue of notes: every entry readable in both languages; a note survives the trip to a PDF worker."""

from __future__ import annotations

import pickle
import re
import string

import pytest

from billing.notes import CATALOGUE, Note, codes_of, localize, note


def fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


@pytest.mark.parametrize("code", sorted(CATALOGUE))
def test_every_entry_reads_in_chinese_with_the_english_parameters(code: str) -> None:
    entry = CATALOGUE[code]
    assert fields(entry.zh) <= fields(entry.en), code
    words = re.sub(r"\{[^}]*\}", "", entry.zh)
    assert not re.search(r"[A-Za-z]{3,}", words), f"{code}: English left in {entry.zh!r}"
    assert re.search(r"[\u4e00-\u9fff]", words), code


def test_a_note_is_its_english_text_and_keeps_its_code_through_pickle() -> None:
    made = note("bills.blocked", reasons=[note("bills.no_readings", point="V03-IN"), note("bills.low_coverage", point="V02-IN", coverage="50%", min="90%", gaps=1)])
    assert made == "no readings queried for V03-IN; V02-IN coverage 50% below 90% (1 gap(s)): fill or estimate the gaps (VEE) and rerun"
    again = pickle.loads(pickle.dumps(made))
    assert isinstance(again, Note) and again == made and again.ref() == made.ref()
    codes = codes_of([again, "a note of an older ledger"])
    assert list(codes) == [made]
    assert localize(made, codes, "zh") == "未查询到 V03-IN 的读数；V02-IN 数据覆盖率 50%，低于 90%（1 处缺测）：请补测或估算缺测数据（数据核查）后重新计费"
    assert localize("a note of an older ledger", codes, "zh") == "a note of an older ledger"
    broken = {made: {"code": "bills.blocked", "params": {"reasons": [{"code": "no.such.code", "params": {}}]}}}
    assert localize(made, broken, "zh") == made  # a part the catalogue does not know: shown as stored
