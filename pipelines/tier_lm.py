"""A tier's dspy.LM: the request settings each call of it gets unless the call sets its own, and the
call's price in dspy's history (dspy prices litellm's calls, not a custom engine's)."""

from __future__ import annotations

import dspy

from pipelines.adapter import STOP_MARKER
from pipelines.engine import PRICE_KEY


def lm_settings(tier) -> dict:
    """The request settings of a tier's dspy.LM: what a call gets unless it sets its own."""
    wants_logprobs = tier.is_local or tier.model.startswith("fake/")
    return {"temperature": tier.setting("temperature"), "max_tokens": tier.setting("max_tokens"),
            "stop": tier.setting("stop") or [STOP_MARKER],
            **({"logprobs": True, "top_logprobs": 1} if wants_logprobs else {})}


class TierLM(dspy.LM):
    """dspy.LM whose history entries carry the call's price, as litellm's do: `lm.history[-1]["cost"]`
    is what the call costs in production (cached or not), `cost_details` names the tier and the hit."""

    def update_history(self, entry):
        priced = _price_of(entry.get("response"))
        if priced is not None and entry.get("cost") is None:
            entry = {**entry, "cost": priced["cost_usd"],
                     "cost_details": {"kind": "tierwise", "tier": priced["tier"], "cache_hit": priced["cache_hit"]}}
        super().update_history(entry)


def _price_of(response) -> dict | None:
    responses = response if isinstance(response, (list, tuple)) else (response,)
    prices = [(getattr(r, "provider_data", None) or {}).get(PRICE_KEY) for r in responses]
    if not prices or any(p is None for p in prices):
        return None
    return {"cost_usd": sum(p["cost_usd"] for p in prices), "tier": prices[-1]["tier"],
            "cache_hit": all(p["cache_hit"] for p in prices)}


def tier_lm(tier, engine) -> dspy.LM:
    """A tier's dspy.LM over `engine` (dspy's own cache off: the engine caches, prices and logs every call)."""
    return TierLM(tier.model, engine=engine, cache=False, num_retries=0, **lm_settings(tier))
