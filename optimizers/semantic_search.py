"""Searching the semantic cache's threshold with the rest of the policy (pipelines.semantic_cache).

A task opts in by declaring SEMANTIC_CACHE = {"predictors": [...], "entities": [regex, ...]}. For
those predictors a trial also draws "cache off" or "cache on at threshold t". Trials are scored as
production runs: the dev rows stream through the program in order, a fresh cache per trial, and a
hit counts as the stored answer (scored by the task's metric) at the lookup's cost, zero tokens.

Because the chooser accepts a point within the dev set's noise of the reference, a cache that costs a
little quality could pass it. `without_quality_loss` closes that: the chosen policy is compared row by
row with the same policy without the cache, and a threshold under which any row scores lower is
raised above that row's hit, until none does (or the cache is turned off).
"""

from __future__ import annotations

import copy

from pipelines.errors import ConfigError
from pipelines.policy import Policy
from pipelines.semantic_cache import SEMANTIC_TIER, compile_patterns

THRESHOLD_RANGE = (0.80, 1.0)
SEED_THRESHOLDS = (0.85, 0.90, 0.95)
MAX_RAISES = 50


def declared(task) -> dict:
    """The task's SEMANTIC_CACHE declaration ({} when it has none), checked."""
    module = getattr(task, "module", None)
    value = getattr(module, "SEMANTIC_CACHE", None) if module is not None else None
    return check_declaration(value, f"task {task.name}: SEMANTIC_CACHE") if value is not None else {}


def check_declaration(value, where: str) -> dict:
    """{"predictors": [names], "entities": [regex, ...]}: a non-empty list of predictor names and optional
    entity regexes (a string there would be read letter by letter), nothing else."""
    names = value.get("predictors") if isinstance(value, dict) else None
    if not isinstance(names, (list, tuple)) or not names or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"{where} must be a dict with 'predictors': a non-empty list of predictor names "
                          "(and optionally 'entities': a list of regexes)")
    unknown = sorted(set(value) - {"predictors", "entities"})
    entities = value.get("entities") or []
    if unknown or not isinstance(entities, (list, tuple)) or not all(isinstance(p, str) for p in entities):
        raise ConfigError(f"{where}: takes 'predictors' and 'entities' (a list of regexes); got "
                          f"{unknown or repr(entities)}")
    compile_patterns(entities, where)  # a bad regex fails here, before anything is paid
    return {"predictors": list(names), "entities": list(entities)}


def cache_param(name: str) -> str:
    return f"{name}:cache"


def suggest_semantic(trial, policy: Policy, settings: dict) -> Policy:
    """Add the cache choice of every declared predictor to a drawn policy. An enqueued trial (a baseline
    or a warm start) that does not name the choice runs without the cache: the front keeps the plain
    uniform baselines."""
    fixed = getattr(trial, "_fixed_params", None) or {}
    for name in settings.get("predictors", ()):
        if name not in policy.predictors or (fixed and cache_param(name) not in fixed):
            continue
        if trial.suggest_categorical(cache_param(name), ["off", "semantic"]) == "semantic":
            threshold = trial.suggest_float(f"{name}:semantic_t", *THRESHOLD_RANGE)
            policy.predictors[name].semantic = semantic_entry(threshold, settings)
    return policy


def semantic_entry(threshold: float, settings: dict) -> dict:
    entry = {"threshold": float(threshold)}
    if settings.get("entities"):
        entry["entities"] = list(settings["entities"])
    return entry


def seeds(settings: dict, top_params: dict) -> list[dict]:
    """The top tier everywhere (`top_params`) with the cache on at a few thresholds, for every declared
    predictor at once and for each alone."""
    names = list(settings.get("predictors", ()))
    if not names:
        return []
    groups = [names] + ([[n] for n in names] if len(names) > 1 else [])
    out = []
    for group in groups:
        for t in SEED_THRESHOLDS:
            params = {**top_params, **{cache_param(n): "off" for n in names}}
            for name in group:
                params.update({cache_param(name): "semantic", f"{name}:semantic_t": t})
            out.append(params)
    return out


def without_cache(policy: Policy) -> Policy:
    plain = copy.deepcopy(policy)
    for p in plain.predictors.values():
        p.semantic = None
    return plain


def without_quality_loss(policy: Policy, evaluate_rows) -> tuple[Policy, list[str]]:
    """`evaluate_rows(policy)` -> the dev rows' results (RowResult, with steps). Returns the policy with
    every threshold raised until no dev row scores lower than without the cache, and notes on what changed."""
    if all(p.semantic is None for p in policy.predictors.values()):
        return policy, []
    reference = [r.score for r in evaluate_rows(without_cache(policy))]
    policy, notes = copy.deepcopy(policy), []
    for _ in range(MAX_RAISES):
        results = evaluate_rows(policy)
        worse = [r for r, ref in zip(results, reference) if r.score < ref - 1e-9]
        if not worse:
            return policy, notes
        raise_to: dict[str, float] = {}
        for row in worse:
            for step in row.steps:
                if step.tier == SEMANTIC_TIER and step.decision == "semantic_hit":
                    raise_to[step.predictor] = max(raise_to.get(step.predictor, 0.0), float(step.confidence) + 1e-4)
        if not raise_to:  # a loss no hit explains (cannot happen: the misses run the same ladder)
            return without_cache(policy), notes + ["semantic cache turned off: it changed dev results"]
        for name, threshold in raise_to.items():
            pp = policy.predictors[name]
            old = pp.semantic["threshold"]
            if threshold > 1.0:
                pp.semantic = None
                notes.append(f"semantic cache of {name!r} turned off: a hit at similarity {threshold - 1e-4:.4f} "
                             "scored lower on dev than the ladder's own answer")
            else:
                pp.semantic["threshold"] = threshold
                notes.append(f"semantic threshold of {name!r} raised from {old:.4f} to {threshold:.4f}: a hit below "
                             "it scored lower on dev than the ladder's own answer")
    return without_cache(policy), notes + ["semantic cache turned off: thresholds kept losing dev quality"]


def unchosen_notes(policy: Policy, settings: dict, notes: list[str]) -> list[str]:
    """--semantic-cache asked for a cache the chosen point does without: say so, or the user reads silence as
    a cache in place."""
    said = " ".join(notes)
    return [f"semantic cache of {name!r} not chosen: the chosen point answers every dev row through its ladder "
            "(no cache threshold reached the objective at a lower cost)"
            for name in settings.get("predictors", ()) if name in policy.predictors
            and policy.predictors[name].semantic is None and f"semantic cache of {name!r} turned off" not in said]


def with_cache_choice(suggest, settings: dict):
    """A search space's `suggest` with the declared predictors' cache choice added."""
    def suggest_with_cache(trial, *args):
        return suggest_semantic(trial, suggest(trial, *args), settings)
    return suggest_with_cache
