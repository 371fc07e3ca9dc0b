"""The search space's warm starts: escalation ladders to the top tier are tried before TPE explores."""

import optuna

from optimizers.space import committee_seeds, escalation_seeds, suggest_policy
from optimizers.study import completed, run_search


def test_escalation_seeds_cover_each_predictor_then_all_of_them():
    seeds = escalation_seeds(["classify", "extract"], ["cheap", "mid", "flagship"], ["logprob_mean", "learned"],
                             thresholds=(0.5, 0.7))
    assert len(seeds) == 2 * 2 * 2 * 3  # cheaper tiers x estimators x thresholds x (each predictor, both)
    shapes = {"classify:shape": "cascade", "extract:shape": "cascade"}  # fixed for the routed space
    only_extract = {**shapes, "classify:ladder": "flagship", "extract:ladder": "mid>flagship",
                    "extract:estimator": "learned", "extract:t0": 0.7}
    both = {**shapes, "classify:ladder": "cheap>flagship", "classify:estimator": "logprob_mean", "classify:t0": 0.5,
            "extract:ladder": "cheap>flagship", "extract:estimator": "logprob_mean", "extract:t0": 0.5}
    assert only_extract in seeds and both in seeds


def test_run_search_tries_baselines_then_seeds_first():
    tiers, predictors, estimators = ["cheap", "mid", "flagship"], ["classify", "extract"], ["logprob_mean"]
    seeds = escalation_seeds(predictors, tiers, estimators)
    seen = []

    def evaluate(policy):
        seen.append(policy.to_dict())
        return 0.5, 1.0

    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.TPESampler(seed=0))
    run_search(study, evaluate, predictors, tiers, estimators, n_trials=len(tiers) + len(seeds) + 3, seeds=seeds)
    trials = completed(study)
    # suggest_policy reads no shape: the fixed shape params of the seeds are not among a trial's params
    without_shape = [{k: v for k, v in s.items() if not k.endswith(":shape")} for s in seeds]
    assert [t.params for t in trials[:3]] == [{"classify:ladder": t, "extract:ladder": t} for t in tiers]
    assert [t.params for t in trials[3:3 + len(seeds)]] == without_shape
    first_seed = suggest_policy(optuna.trial.FixedTrial(seeds[0]), predictors, tiers, estimators)
    assert seen[3] == first_seed.to_dict()


def test_committee_seeds_pair_two_cheaper_tiers_below_the_top():
    tiers, predictors = ["cheap", "mid", "big", "flagship"], ["classify", "extract"]
    seeds = committee_seeds(predictors, tiers)
    assert len(seeds) == 3 * 3  # pairs below the top (cheap-mid, cheap-big, mid-big) x (each predictor, both)
    policies = [suggest_policy(optuna.trial.FixedTrial(s), predictors, tiers, ["logprob_mean", "committee"]) for s in seeds]
    classify_only = policies[0]
    assert classify_only["classify"].ladder == ["cheap", "mid", "flagship"]
    assert classify_only["classify"].estimator == "committee" and classify_only["classify"].thresholds == [0.5, 0.5]
    assert classify_only["extract"].ladder == ["flagship"]
    assert all(p[name].ladder[-1] == "flagship" for p in policies for name in predictors)
    assert committee_seeds(predictors, ["cheap", "flagship"]) == []  # one tier below the top: no pair
