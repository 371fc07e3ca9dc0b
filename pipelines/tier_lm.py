"""A tier's dspy.LM: the request settings each call of it gets unless the call sets its own."""

from __future__ import annotations

import dspy

from pipelines.adapter import STOP_MARKER


def lm_settings(tier) -> dict:
    """The request settings of a tier's dspy.LM: what a call gets unless it sets its own."""
    wants_logprobs = tier.is_local or tier.model.startswith("fake/")
    return {"temperature": tier.setting("temperature"), "max_tokens": tier.setting("max_tokens"),
            "stop": tier.setting("stop") or [STOP_MARKER],
            **({"logprobs": True, "top_logprobs": 1} if wants_logprobs else {})}


def tier_lm(tier, engine) -> dspy.LM:
    """A tier's dspy.LM over `engine` (dspy's own cache off: the engine caches, prices and logs every call)."""
    return dspy.LM(tier.model, engine=engine, cache=False, num_retries=0, **lm_settings(tier))
