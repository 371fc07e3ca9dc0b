"""Quality metrics shared by task pipelines: each returns a number in [0, 1]."""

from __future__ import annotations

import re


def normalize_label(value, allowed: tuple[str, ...]) -> str:
    """Map a model's free-text label onto one allowed label ('' when none fits).
    Small models add punctuation, capitals or a sentence; the first allowed label named wins."""
    text = str(value or "").strip().lower().replace("-", "_")
    text = re.sub(r"[^a-z0-9_ ]", " ", text)
    if text.strip() in allowed:
        return text.strip()
    hits = [(m.start(), label) for label in allowed for m in [re.search(rf"\b{re.escape(label)}\b", text)] if m]
    if not hits:  # "product question" for product_question
        hits = [(m.start(), label) for label in allowed
                for m in [re.search(rf"\b{re.escape(label.replace('_', ' '))}\b", text)] if m]
    return min(hits)[1] if hits else ""


def label_match(predicted, gold: str, allowed: tuple[str, ...]) -> float:
    return float(normalize_label(predicted, allowed) == gold)


def exact_match(predicted, gold) -> float:
    return float(str(predicted or "").strip().lower() == str(gold).strip().lower())


_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def parse_number(value) -> float | None:
    """The last number in a text ('The answer is 1,250.' -> 1250.0), or None."""
    found = _NUMBER.findall(str(value or ""))
    if not found:
        return None
    try:
        return float(found[-1].replace(",", ""))
    except ValueError:
        return None


def numeric_match(predicted, gold, tolerance: float = 1e-6) -> float:
    number = parse_number(predicted)
    return float(number is not None and abs(number - float(gold)) <= tolerance * max(1.0, abs(float(gold))))
