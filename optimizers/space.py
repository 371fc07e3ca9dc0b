"""The policy search space, define-by-run: per predictor a ladder (an increasing sequence of tiers),
a confidence estimator when the ladder escalates, and one threshold per escalating rung."""

from __future__ import annotations

from itertools import combinations

import numpy as np

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
    """Optuna params of the policy that runs every predictor on one tier (enqueued as baselines). The
    shape is fixed too, for the routed space (suggest_routed_policy); suggest_policy never reads it."""
    return {**{f"{name}:shape": "cascade" for name in predictors}, **{f"{name}:ladder": tier for name in predictors}}


def escalation_seeds(predictors: list[str], tier_names: list[str], estimators: list[str],
                     thresholds: tuple[float, ...] = (0.5, 0.7, 0.85)) -> list[dict]:
    """Warm starts: the top tier everywhere, except one predictor (then all of them at once) starting on a
    cheaper tier and escalating to the top, for each estimator at a few thresholds. Matching the top
    tier's quality for less means such ladders; TPE refines them, but starting from scratch it can miss
    them: on the full support set a fresh 600-trial search chose a policy saving 8%, a seeded one 22%
    (both within noise of flagship-only on the holdout; measured)."""
    top = tier_names[-1]
    everywhere_top = uniform_params(predictors, top)
    groups = [[name] for name in predictors] + ([list(predictors)] if len(predictors) > 1 else [])
    seeds = []
    for tier in tier_names[:-1]:
        for estimator in estimators:
            for threshold in thresholds:
                for group in groups:
                    params = dict(everywhere_top)
                    for name in group:
                        params.update({f"{name}:ladder": f"{tier}>{top}", f"{name}:estimator": estimator,
                                       f"{name}:t0": threshold})
                    seeds.append(params)
    return seeds


def committee_seeds(predictors: list[str], tier_names: list[str]) -> list[dict]:
    """Warm starts for committees: every pair of tiers below the top one answers, and the pair's answer
    stands when the two agree (estimator "committee"); otherwise the top tier answers. One predictor at
    a time (the others on the top tier), then all of them at once."""
    top = tier_names[-1]
    everywhere_top = uniform_params(predictors, top)
    groups = [[name] for name in predictors] + ([list(predictors)] if len(predictors) > 1 else [])
    seeds = []
    for low, high in combinations(tier_names[:-1], 2):
        for group in groups:
            params = dict(everywhere_top)
            for name in group:
                params.update({f"{name}:ladder": f"{low}>{high}>{top}", f"{name}:estimator": "committee",
                               f"{name}:t0": 0.5, f"{name}:t1": 0.5})
            seeds.append(params)
    return seeds


# --- routing (replay): plain routers, plain cascades and routed cascades in one search ------------

SHAPES = ("cascade", "router", "routed")
ALL = "all"  # a router's candidate set: every model


def relative_costs(mean_costs: dict[str, float]) -> dict[str, float]:
    """Each tier's mean cost per call relative to the dearest tier's (all 0 when nothing costs anything):
    the `costs` a route trades predicted quality against."""
    top = max(mean_costs.values(), default=0.0)
    return {t: float(c / top) if top > 0 else 0.0 for t, c in mean_costs.items()}


def suggest_routed_policy(trial, predictors: list[str], tier_names: list[str], estimators: list[str],
                          max_rungs: int, route_costs: dict) -> Policy:
    """One of three shapes per predictor, so the search (and the Pareto front it feeds) holds the best
    of each: "cascade" (start cheapest, climb on confidence), "router" (start at the rung with the best
    predicted score - lambda * relative cost, keep its answer), "routed" (start as a router, then climb
    as a cascade). `route_costs`: tier -> average cost relative to the dearest tier."""
    chosen = {}
    for name in predictors:
        shape = trial.suggest_categorical(f"{name}:shape", SHAPES)
        if shape == "cascade":
            chosen[name] = suggest_policy(trial, [name], tier_names, estimators, max_rungs)[name]
            continue
        multi = [option for option in ladders(tier_names, max_rungs) if ">" in option]
        if shape == "router":
            option = trial.suggest_categorical(f"{name}:router_ladder", [ALL, *multi])
            ladder = list(tier_names) if option == ALL else option.split(">")
        else:
            ladder = trial.suggest_categorical(f"{name}:routed_ladder", multi).split(">")
        route = {"lambda": trial.suggest_float(f"{name}:{shape}_lambda", 1e-3, 10.0, log=True),
                 "costs": [float(route_costs[t]) for t in ladder]}
        if shape == "router":
            chosen[name] = PredictorPolicy(ladder, "none", [0.0] * (len(ladder) - 1), route)
            continue
        estimator = trial.suggest_categorical(f"{name}:routed_estimator", estimators)
        thresholds = [trial.suggest_float(f"{name}:routed_t{i}", 0.0, 1.0) for i in range(len(ladder) - 1)]
        chosen[name] = PredictorPolicy(ladder, estimator, thresholds, route)
    return Policy(chosen)


def routing_seeds(predictor: str, tier_names: list[str], anchor: str, estimators: list[str],
                  router_lambdas: int = 7) -> list[dict]:
    """Warm starts over every shape: each model alone, routers over all models along a grid of
    `router_lambdas` values of lambda; then, from each cheaper tier (cheapest first) to `anchor` (the
    reference model), cascades at a few thresholds and a routed cascade; then cheapest > middle > anchor.
    A caller keeping fewer cuts them with warm_start_prefix."""
    p = predictor
    seeds = [{f"{p}:shape": "cascade", f"{p}:ladder": tier} for tier in tier_names]  # each model alone
    seeds += [{f"{p}:shape": "router", f"{p}:router_ladder": ALL, f"{p}:router_lambda": float(lam)}
              for lam in np.logspace(-3, 1, router_lambdas)]
    cheaper = [t for t in tier_names[:tier_names.index(anchor)]] or [t for t in tier_names if t != anchor][:1]
    estimator = "learned" if "learned" in estimators else estimators[0]
    for tier in cheaper:
        pair = ">".join(sorted([tier, anchor], key=tier_names.index))
        seeds += [{f"{p}:shape": "cascade", f"{p}:ladder": pair, f"{p}:estimator": estimator, f"{p}:t0": t}
                  for t in (0.5, 0.7, 0.85)]
        seeds += [{f"{p}:shape": "cascade", f"{p}:ladder": pair, f"{p}:estimator": e, f"{p}:t0": 0.5}
                  for e in estimators if e != estimator]
        seeds.append({f"{p}:shape": "routed", f"{p}:routed_ladder": pair, f"{p}:routed_lambda": 0.1,
                      f"{p}:routed_estimator": estimator, f"{p}:routed_t0": 0.7})
    if len(cheaper) >= 2:
        three = ">".join([cheaper[0], cheaper[len(cheaper) // 2], anchor])
        seeds.append({f"{p}:shape": "cascade", f"{p}:ladder": three, f"{p}:estimator": estimator,
                      f"{p}:t0": 0.7, f"{p}:t1": 0.7})
    return seeds


def warm_start_prefix(seeds: list[dict], keep: int) -> list[dict]:
    """`keep` of `seeds`, in order when all fit; otherwise taken in turn from each kind (a model alone, a router, a
    cascade, a routed cascade), each kind in its own order: cut as a plain prefix, 60 trials kept 20 seeds, all of
    them single models and routers, and a search that TPE did not steer there never tried a cascade (a table whose
    cheap answers pass a user's check, tests/test_signal_plugins.py: 0% saved at 60 trials, now 33% as at 300)."""
    if keep >= len(seeds):
        return list(seeds)
    kinds: dict[tuple, list[dict]] = {}
    for params in seeds:
        kinds.setdefault(_kind(params), []).append(params)
    queues, taken = list(kinds.values()), []
    while len(taken) < keep:
        for queue in queues:
            if queue and len(taken) < keep:
                taken.append(queue.pop(0))
    return taken


def _kind(params: dict) -> tuple:
    shape = next(v for k, v in params.items() if k.endswith(":shape"))
    return shape, any(k.endswith(":estimator") for k in params)
