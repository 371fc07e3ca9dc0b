"""The policy search space, define-by-run: per predictor a ladder (an increasing sequence of tiers),
a confidence estimator when the ladder escalates, and one threshold per escalating rung."""

from __future__ import annotations

from itertools import combinations

from pipelines.policy import Policy, PredictorPolicy


def ladders(tier_names: list[str], max_rungs: int = 3) -> list[str]:
    """Every increasing sequence of tiers (cheap -> flagship order kept), as 'a>b' strings."""
    out = []
    for size in range(1, min(max_rungs, len(tier_names)) + 1):
        out += [">".join(c) for c in combinations(tier_names, size)]
    return out


def suggest_policy(trial, predictors: list[str], tier_names: list[str], estimators: list[str],
                   max_rungs: int = 3) -> Policy:
    options = ladders(tier_names, max_rungs)
    chosen = {}
    for name in predictors:
        ladder = trial.suggest_categorical(f"{name}:ladder", options).split(">")
        if len(ladder) == 1:
            chosen[name] = PredictorPolicy(ladder)
            continue
        estimator = trial.suggest_categorical(f"{name}:estimator", estimators)
        thresholds = [trial.suggest_float(f"{name}:t{i}", 0.0, 1.0) for i in range(len(ladder) - 1)]
        chosen[name] = PredictorPolicy(ladder, estimator, thresholds)
    return Policy(chosen)


def uniform_params(predictors: list[str], tier: str) -> dict:
    """Optuna params of the policy that runs every predictor on one tier (enqueued as baselines)."""
    return {f"{name}:ladder": tier for name in predictors}
