"""Reading typed answers out of small models' free text.

A signature's output annotation is a contract: `Literal[...]` names the allowed labels, and a
pydantic-validated type (`Annotated[str, AfterValidator(fn)]`) says what a well-formed answer is. An
answer that breaks the contract is not an answer: the adapter raises a parse error, and the cascade
treats the rung as failed and climbs (deterministic fallback). That is the cheapest confidence signal
there is: a 135M model asked for an intent often writes a sentence, and no threshold is needed to
see that a sentence is not a label. Task metrics read answers with the same functions (label_match,
numeric_match): answer matching is part of the run time, which never imports metrics/.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, get_args, get_origin


def match_label(value, allowed: tuple[str, ...]) -> str:
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
    """1.0 when the free-text label reads as `gold`, else 0.0 (tasks' metrics read labels as the runtime does)."""
    return float(match_label(predicted, allowed) == gold)


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


def field_type(info):
    """A signature field's full type: pydantic keeps `Annotated` validators apart, in `metadata`."""
    return Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation


def parse_typed(text: str, annotation):
    """`text` read as `annotation`; raises ValueError when it does not fit."""
    if annotation is str or annotation is None:
        return text
    if get_origin(annotation) is Annotated:  # plain text in, validators applied
        from pydantic import TypeAdapter

        return TypeAdapter(annotation).validate_python(parse_typed(text, get_args(annotation)[0]))
    if get_origin(annotation) is Literal and all(isinstance(a, str) for a in get_args(annotation)):
        label = match_label(text, get_args(annotation))
        if not label:
            raise ValueError(f"not one of {list(get_args(annotation))}: {text[:60]!r}")
        return label
    from dspy.adapters.utils import parse_value  # dspy's own typed parsing: pydantic validation

    return parse_value(text, annotation)
