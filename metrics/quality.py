"""Quality metrics shared by task pipelines: each returns a number in [0, 1]."""

from __future__ import annotations

import re

# Metrics and the runtime's typed parsing read labels the same way.
from pipelines.answers import match_label as normalize_label  # noqa: F401


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
