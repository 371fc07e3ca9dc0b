"""COMPILE TIME: policy search space, evaluation over recorded outcomes, Optuna study, selection, the
stages of a compile (`stages`), its two front ends (`live` for `cli.py optimize`, `TierOptimizer` for
Python) and the replay optimizer (`replay`). Production code never imports this.

    from optimizers import TierOptimizer
"""

import pipelines  # noqa: F401 - sets LITELLM_LOCAL_MODEL_COST_MAP (offline price maps) before dspy loads


def __getattr__(name):  # TierOptimizer loads dspy and optuna: only when asked for
    if name == "TierOptimizer":
        from optimizers.tier_optimizer import TierOptimizer

        return TierOptimizer
    raise AttributeError(f"module 'optimizers' has no attribute {name!r}")


__all__ = ["TierOptimizer"]
