"""A policy is data: per predictor, a ladder of tiers, a confidence estimator and one threshold per
rung that may escalate. The optimizer searches it, the artifact stores it, the runtime executes it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from pipelines.errors import ConfigError

ESTIMATORS = ("logprob_mean", "logprob_min", "agreement", "committee", "self_report", "learned", "none")
# "committee": a rung's confidence is 1.0 when its answer says the same as the previous answered rung's,
# else 0.0 (the first answered rung scores 0.0 and escalates). The first two rungs of a ladder thus act
# as a committee of two cheaper tiers whose agreement accepts, with no extra call beyond the two answers
# (pipelines.cascade.run_ladder). "agreement" instead samples the same tier again.


def _number(value, what: str) -> float:
    """A number as the file holds it: a quoted "0.5" is an edit, not a threshold."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{what} must be a number, got {value!r}")
    return float(value)


@dataclass
class PredictorPolicy:
    ladder: list[str]  # start tier first, then escalation tiers
    estimator: str = "none"
    thresholds: list[float] = field(default_factory=list)  # accept rung i when confidence >= thresholds[i]
    # Routing (pipelines.routing): {"lambda": x, "costs": [relative cost per rung]}. The query starts at
    # the rung with the best predicted score - lambda * cost, then climbs as a cascade. With estimator
    # "none" the routed rung's answer stands (a plain router); a failed rung still climbs.
    route: dict | None = None
    # Semantic cache (pipelines.semantic_cache), opt-in: {"threshold": t, "ttl_s": s, "max_entries": n,
    # "entities": [regex]}. A close enough earlier request (same guarded entities) answers first.
    semantic: dict | None = None

    def validate(self, name: str, tier_names: list[str] | None = None) -> None:
        where = f"policy for predictor {name!r}"
        if not self.ladder:
            raise ConfigError(f"{where}: empty ladder")
        if len(set(self.ladder)) != len(self.ladder):
            raise ConfigError(f"{where}: a tier appears twice in ladder {self.ladder}")
        if tier_names is not None:
            unknown = [t for t in self.ladder if t not in tier_names]
            if unknown:
                raise ConfigError(f"{where}: unknown tiers {unknown}; catalog has {tier_names}")
        if self.estimator not in ESTIMATORS:
            raise ConfigError(f"{where}: unknown estimator {self.estimator!r}; one of {ESTIMATORS}")
        if len(self.thresholds) != len(self.ladder) - 1:
            raise ConfigError(f"{where}: {len(self.ladder)} rungs need {len(self.ladder) - 1} thresholds, "
                              f"got {len(self.thresholds)}")
        if any(not 0.0 <= t <= 1.0 for t in self.thresholds):
            raise ConfigError(f"{where}: thresholds must lie in [0, 1]")
        if len(self.ladder) > 1 and self.estimator == "none" and self.route is None:
            raise ConfigError(f"{where}: a ladder of several tiers needs a confidence estimator or a route")
        if self.route is not None:
            try:
                lam, costs = float(self.route["lambda"]), [float(c) for c in self.route["costs"]]
            except (KeyError, TypeError, ValueError):
                raise ConfigError(f"{where}: a route needs a number 'lambda' and a list 'costs'") from None
            if len(costs) != len(self.ladder) or lam < 0 or any(c < 0 for c in costs):
                raise ConfigError(f"{where}: a route needs lambda >= 0 and one cost >= 0 per rung")
        if self.semantic is not None:
            from pipelines.semantic_cache import validate_settings

            validate_settings(self.semantic, where)


@dataclass
class Policy:
    predictors: dict[str, PredictorPolicy]
    fallback: bool = True  # on failure of every rung, try the catalog's remaining tiers

    def __getitem__(self, name: str) -> PredictorPolicy:
        return self.predictors[name]

    def validate(self, tier_names: list[str] | None = None) -> "Policy":
        for name, p in self.predictors.items():
            p.validate(name, tier_names)
        return self

    def to_dict(self) -> dict:
        def entry(p: PredictorPolicy) -> dict:  # an unrouted, uncached policy is written as before either existed
            return {k: v for k, v in asdict(p).items() if k not in ("route", "semantic") or v is not None}

        return {"predictors": {k: entry(v) for k, v in self.predictors.items()}, "fallback": self.fallback}

    @classmethod
    def from_dict(cls, data: dict) -> "Policy":
        try:
            predictors = {name: PredictorPolicy(list(p["ladder"]), p.get("estimator", "none"),
                                                [_number(t, f"predictor {name!r}'s threshold")
                                                 for t in p.get("thresholds", [])], p.get("route"), p.get("semantic"))
                          for name, p in data["predictors"].items()}
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ConfigError(f"policy is malformed: {e}") from None
        fallback = data.get("fallback", True)
        if not isinstance(fallback, bool):
            raise ConfigError(f"policy is malformed: fallback must be true or false, got {fallback!r}")
        return cls(predictors, fallback).validate()

    @classmethod
    def uniform(cls, predictor_names, tier: str) -> "Policy":
        return cls({name: PredictorPolicy([tier]) for name in predictor_names})

    def describe(self) -> dict:
        """The summary shape: {predictor: {ladder, estimator, thresholds}}."""
        out = {k: {"ladder": v.ladder, "estimator": v.estimator, "thresholds": [round(t, 4) for t in v.thresholds]}
               for k, v in self.predictors.items()}
        for k, v in self.predictors.items():
            if v.route is not None:
                out[k]["route_lambda"] = round(float(v.route["lambda"]), 4)
            if v.semantic is not None:
                out[k]["semantic_threshold"] = round(float(v.semantic["threshold"]), 4)
        return out
