"""How many tokens a predictor may write on a tier: the tier's max_tokens bounds one short answer; a
predictor with several output fields, a structured one or a reasoning field needs more."""

from __future__ import annotations

from typing import Annotated, get_args, get_origin

import pydantic

from pipelines.confidence import REASONING_FIELDS

# A tier's max_tokens bounds one short output field (the local tiers': 24). A predictor that writes more
# gets that per output field (a structured one per part: each field of a pydantic model, STRUCTURED_PARTS
# for a list or dict), room for the field markers, and REASONING_TOKENS for a reasoning field
# (dspy.ChainOfThought), unless it sets its own: dspy.Predict(..., max_tokens=N) is used as it is.
REASONING_TOKENS = 256
MARKER_TOKENS = 12
STRUCTURED_PARTS = 4
MAX_BUDGET = 4096  # some APIs refuse a larger max_tokens; a predictor needing more says so itself
MORE_TOKENS = "give the predictor more, e.g. dspy.Predict(Signature, max_tokens=N) or dspy.ChainOfThought(Signature, max_tokens=N)"


def field_parts(annotation) -> int:
    """How many short answers one output field holds, for its token budget."""
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return max(len(annotation.model_fields), 1)
    origin = get_origin(annotation)
    if origin is Annotated:
        return field_parts(get_args(annotation)[0])
    return STRUCTURED_PARTS if origin in (list, dict, tuple, set) or annotation in (list, dict, tuple, set) else 1


def answer_budget(predictor, tier) -> int | None:
    """max_tokens for this predictor on `tier` when it needs more than the tier's own (None: the tier's)."""
    if "max_tokens" in (getattr(predictor, "config", None) or {}):
        return None
    per_field = tier.setting("max_tokens")
    outputs = predictor.signature.output_fields
    reasoning = sum(k in REASONING_FIELDS for k in outputs)
    parts = sum(field_parts(info.annotation) for k, info in outputs.items() if k not in REASONING_FIELDS)
    if not per_field or (len(outputs) <= 1 and not reasoning and parts <= 1):
        return None
    need = int(per_field) * max(parts, 1) + MARKER_TOKENS * (len(outputs) - 1) + REASONING_TOKENS * reasoning
    return max(min(need, MAX_BUDGET), int(per_field))
