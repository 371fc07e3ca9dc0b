"""A request's tier trail: one Step per rung a call climbed (and per call of a predictor built at run time),
collected in the context variable that the request (or a compile's row) sets."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass


@dataclass
class Step:
    """One entry of a call's tier trail."""

    predictor: str
    rung: int
    tier: str
    confidence: float | None
    threshold: float | None
    decision: str  # accepted | escalated | failed | fallback | semantic_hit | semantic_miss | run_time
    cost_usd: float
    error: str = ""
    tokens: int = 0
    latency_s: float = 0.0
    matched: str = ""  # a semantic-cache lookup: the id of the stored request that answered (or the nearest one)
    matched_text: str = ""  # and that request's text, which a reader can compare with this one
    call: int = 0  # which call of its predictor in the request (a program may call one per item of a list)


trail_var: contextvars.ContextVar[list | None] = contextvars.ContextVar("tierwise_trail", default=None)


def next_call(trail: list | None, predictor: str) -> int:
    """The ordinal of a new call of `predictor` in this request's trail: its earlier calls' steps are there."""
    if not trail:
        return 0
    return len({step.call for step in trail if step.predictor == predictor})
