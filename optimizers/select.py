"""Choosing the operating point from the evaluated policies, and the statistics around it."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pipelines.errors import ConfigError


# A quality target must hold at the one-sided 95% lower confidence bound: the candidate's quality minus
# 1.645 standard errors of its per-row difference to the reference. Among hundreds of searched
# policies the cheapest one clearing a target by its raw score is the luckiest on these rows; at one
# standard error a support policy that tied flagship-only on 55 dev rows lost 0.12 on the holdout, and
# the GSM8K replay point missed its floor on 2 of 5 splits (benchmarks/README.md).
SAFETY_Z = 1.645
# "At the reference's quality" (the default objective, --match-tier): a paired tie within 1 point, for the
# live optimizer and replay alike (see choose).
PARITY_TOLERANCE = 0.01


@dataclass
class Objective:
    """What the user asked for. Default: lowest cost whose quality is at least the reference's
    (flagship-only unless `match_tier`), within the dev set's noise."""

    min_quality: float | None = None
    match_tier: str | None = None
    max_cost_per_1k: float | None = None

    def __post_init__(self):
        if sum(x is not None for x in (self.min_quality, self.match_tier, self.max_cost_per_1k)) > 1:
            raise ConfigError("give at most one of --min-quality, --match-tier, --max-cost-per-1k")
        if self.min_quality is not None and not 0 <= self.min_quality <= 1:
            raise ConfigError(f"--min-quality must lie in [0, 1], got {self.min_quality}")
        if self.max_cost_per_1k is not None and not 0 <= self.max_cost_per_1k < float("inf"):
            raise ConfigError(f"--max-cost-per-1k must be a finite amount >= 0, got {self.max_cost_per_1k}")

    def describe(self, reference: str) -> str:
        if self.min_quality is not None:
            return f"lowest cost with quality >= {self.min_quality:g}"
        if self.max_cost_per_1k is not None:
            return f"highest quality with cost per 1k <= {self.max_cost_per_1k:g}"
        return f"lowest cost at {reference}-only quality (a paired tie on dev, within {PARITY_TOLERANCE:g})"


@dataclass
class Candidate:
    key: str  # trial number or baseline name
    policy: object
    quality: float
    cost_per_1k: float
    scores: np.ndarray | None = None  # per-row metric values
    row_costs: np.ndarray | None = None  # per-row cost in USD, where known (optimizers.refine)


def standard_error(scores) -> float:
    scores = np.asarray(scores, float)
    if len(scores) < 2:
        return 0.0
    return float(scores.std(ddof=1) / math.sqrt(len(scores)))


def pareto_front(cands: list[Candidate]) -> list[Candidate]:
    """Candidates no other beats on both quality (higher) and cost (lower)."""
    ordered = sorted(cands, key=lambda c: (c.cost_per_1k, -c.quality))
    front, best_q = [], -math.inf
    for c in ordered:
        if c.quality > best_q + 1e-12:
            front.append(c)
            best_q = c.quality
    return front


def choose(cands: list[Candidate], objective: Objective, reference: Candidate,
           row_scores=None, z: float = SAFETY_Z, tolerance: float | None = None) -> tuple[Candidate, dict]:
    """The chosen candidate and how: {'target_quality', 'noise', 'feasible', 'margin'}.

    With `row_scores(candidate) -> per-row scores` (aligned with reference.scores), a quality target is
    met only with a margin: the candidate's quality minus `z` standard errors of its per-row difference
    to the reference. The margin is small for a policy that answers like the reference and grows with
    how often it answers differently.

    `tolerance` (with row_scores) defines "at the reference's quality" (default objective, --match-tier)
    as a paired tie: the one-sided lower bound of the per-row difference to the reference, mean minus
    `z` standard errors, is at least -tolerance. The reference ties itself (difference 0), and so can a
    policy that answers differently on some rows, when it is right there at least as often."""
    if tolerance is not None and row_scores is not None and reference.scores is not None \
            and objective.min_quality is None and objective.max_cost_per_1k is None:
        return _choose_tie(cands, reference, row_scores, z, tolerance)
    noise = standard_error(reference.scores) if reference.scores is not None else 0.0
    if objective.max_cost_per_1k is not None:
        feasible = [c for c in cands if c.cost_per_1k <= objective.max_cost_per_1k + 1e-12]
        info = {"target_quality": None, "noise": noise, "feasible": bool(feasible)}
        if not feasible:
            return min(cands, key=lambda c: (c.cost_per_1k, -c.quality)), info
        return max(feasible, key=lambda c: (round(c.quality, 12), -c.cost_per_1k)), info
    target = objective.min_quality if objective.min_quality is not None else reference.quality - noise
    feasible = sorted((c for c in cands if c.quality >= target - 1e-12), key=lambda c: (c.cost_per_1k, -c.quality))
    info = {"target_quality": target, "noise": noise, "feasible": bool(feasible), "margin": 0.0}
    if not feasible:
        return max(cands, key=lambda c: (c.quality, -c.cost_per_1k)), info
    if row_scores is None or reference.scores is None:
        return feasible[0], info
    for c in feasible:  # cheapest first; the reference itself has margin 0, so one always qualifies
        margin = z * standard_error(np.asarray(row_scores(c), float) - reference.scores)
        if c.quality - margin >= target - 1e-12:
            info["margin"] = margin
            return c, info
    return reference, info


def _choose_tie(cands, reference, row_scores, z, tolerance) -> tuple[Candidate, dict]:
    noise = standard_error(reference.scores)
    info = {"target_quality": reference.quality - tolerance, "noise": noise, "feasible": True, "margin": 0.0,
            "tolerance": tolerance}
    near = [c for c in cands if c.quality >= reference.quality - tolerance - 1e-12]  # a bound never beats its mean
    for c in sorted(near, key=lambda c: (c.cost_per_1k, -c.quality)):
        diff = np.asarray(row_scores(c), float) - reference.scores
        margin = z * standard_error(diff)
        if diff.mean() - margin >= -tolerance - 1e-12:
            info["margin"] = margin
            return c, info
    return reference, info


def bootstrap_ci(scores, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> list[float]:
    scores = np.asarray(scores, float)
    if len(scores) == 0:
        return [float("nan"), float("nan")]
    rng = np.random.default_rng(seed)
    means = scores[rng.integers(0, len(scores), size=(n_boot, len(scores)))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return [float(lo), float(hi)]


def savings_pct(cost: float, reference_cost: float) -> float:
    return 0.0 if reference_cost <= 0 else 100.0 * (1 - cost / reference_cost)
