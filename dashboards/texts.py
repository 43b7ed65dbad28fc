"""Dashboard titles and labels by locale, from the data file ``texts.yaml`` beside this module."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml

from canalflow.errors import CanalflowError

LOCALES = ("en", "zh")
TEXTS_FILE = Path(__file__).with_name("texts.yaml")


class TextsError(CanalflowError, ValueError):
    pass


@cache
def load_texts(path: Path = TEXTS_FILE) -> dict[str, dict[str, str]]:
    """Load and check the texts file: every key needs a string in every locale."""
    try:
        data: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise TextsError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise TextsError(f"{path}: expected a mapping of key -> {{en: ..., zh: ...}}")
    for key, entry in data.items():
        missing = [loc for loc in LOCALES if not isinstance(entry, dict) or not isinstance(entry.get(loc), str)]
        if missing:
            raise TextsError(f"{path}: key {key!r} has no text for locale(s) {', '.join(missing)}")
    return data


class Texts:
    """``t("overview.title")`` -> the title in the chosen locale; ``{name}`` fields formatted."""

    def __init__(self, locale: str) -> None:
        if locale not in LOCALES:
            raise TextsError(f"unknown locale {locale!r}: use one of {', '.join(LOCALES)}")
        self.locale = locale
        self._texts = load_texts()

    def __call__(self, key: str, **fields: object) -> str:
        entry = self._texts.get(key)
        if entry is None:
            raise TextsError(f"{TEXTS_FILE}: no text for key {key!r}")
        return entry[self.locale].format(**fields)
