"""Coordinate refinement of the chosen point: per predictor, every ladder x estimator x threshold at the
quantiles of that rung's confidences, chosen by the objective's own rule."""

import numpy as np

from optimizers.refine import alternatives, quantile_thresholds, refine
from optimizers.select import PARITY_TOLERANCE, Candidate, Objective
from pipelines.policy import Policy, PredictorPolicy

N = 200
TIERS = ["cheap", "mid", "top"]
PRICE = {"cheap": 1.0, "mid": 3.0, "top": 10.0}


def _world():
    """Two predictors on N rows. The top tier is always right. 'a': the mid tier is right exactly where its
    confidence is >= 0.6 (70% of rows); the cheap tier is right nowhere. 'b': the cheap tier is right where
    its confidence is >= 0.5 (half the rows)."""
    rng = np.random.default_rng(0)
    conf = {("a", "mid"): rng.uniform(0.3, 1.0, N), ("a", "cheap"): rng.uniform(0, 1, N),
            ("b", "cheap"): rng.uniform(0, 1, N), ("b", "mid"): rng.uniform(0, 1, N)}
    right = {("a", "mid"): conf[("a", "mid")] >= 0.6, ("a", "cheap"): np.zeros(N, bool),
             ("b", "cheap"): conf[("b", "cheap")] >= 0.5, ("b", "mid"): conf[("b", "mid")] >= 0.5}
    for name in "ab":
        right[(name, "top")], conf[(name, "top")] = np.ones(N, bool), np.ones(N)
    return conf, right


def _evaluate(conf, right):
    def run(policy: Policy):
        score, cost = np.zeros(N), np.zeros(N)
        for name, pp in policy.predictors.items():
            done = np.zeros(N, bool)
            got = np.zeros(N)
            for i, tier in enumerate(pp.ladder):
                live = ~done
                cost[live] += PRICE[tier]
                accept = live & ((i == len(pp.ladder) - 1) | (conf[(name, tier)] >= pp.thresholds[i]
                                                             if i < len(pp.thresholds) else True))
                got[accept] = right[(name, tier)][accept]
                done |= accept
            score += got / len(policy.predictors)
        return score, cost / 1000
    return run


def test_quantile_thresholds_lie_where_the_confidences_are():
    values = np.linspace(0.2, 0.6, 101)
    cuts = quantile_thresholds(values, 5)
    assert cuts == sorted(cuts) and len(cuts) == 5
    assert cuts[0] >= 0.2 and cuts[-1] <= 0.6  # not a fixed 0.5 / 0.7 / 0.85 grid
    assert quantile_thresholds([None, float("nan")], 5) == [0.5]


def test_alternatives_cover_every_ladder_and_estimator():
    options = alternatives(TIERS, ["logprob_mean", "learned"], lambda tier, est: np.linspace(0, 1, 50))
    ladders = {">".join(o.ladder) for o in options}
    assert ladders == {"cheap", "mid", "top", "cheap>mid", "cheap>top", "mid>top", "cheap>mid>top"}
    assert sum(o.ladder == ["mid", "top"] for o in options) == 2 * 8  # estimators x pair thresholds
    assert sum(len(o.ladder) == 3 for o in options) == 2 * 4 * 4
    for o in options:
        o.validate("a", TIERS)
    assert not any(o.route for o in options)


def _reference(evaluate) -> Candidate:
    """Every predictor on the top tier, with its per-row scores."""
    top = Policy({"a": PredictorPolicy(["top"]), "b": PredictorPolicy(["top"])})
    ref_scores, ref_costs = evaluate(top)
    return Candidate("top", top, 1.0, float(ref_costs.mean() * 1000), ref_scores, ref_costs)


def test_a_committee_alternative_has_one_threshold_between_disagree_and_agree():
    options = alternatives(TIERS, ["committee"], lambda tier, est: [0.0, 1.0, 1.0])
    committees = [o for o in options if o.estimator == "committee"]
    assert committees and all(o.thresholds == [0.5] * (len(o.ladder) - 1) for o in committees)
    assert len(committees) == len([o for o in options if len(o.ladder) > 1])  # one per ladder


def test_refine_finds_the_cheap_cascade_of_each_predictor_and_keeps_the_tie():
    conf, right = _world()
    evaluate = _evaluate(conf, right)
    reference = _reference(evaluate)
    ref_cost = reference.cost_per_1k

    def options(name):
        return alternatives(TIERS, ["logprob_mean"], lambda tier, est: conf[(name, tier)])

    refined = refine(reference, Objective(), reference, ["a", "b"], options, evaluate, PARITY_TOLERANCE)
    chosen = refined.candidate.policy
    # a: mid, escalating below 0.6 (cheap is never right); b: cheap first, escalating below 0.5
    assert chosen["a"].ladder[-2:] == ["mid", "top"] and chosen["a"].thresholds[-1] >= 0.6 - 1e-9
    assert chosen["b"].ladder[0] == "cheap" and chosen["b"].thresholds[0] >= 0.5 - 1e-9
    scores, costs = evaluate(chosen)
    assert scores.mean() == 1.0  # the tie holds: nothing is lost on any row
    assert costs.mean() * 1000 < 0.75 * ref_cost
    assert len(refined.evaluated) >= 2 * len(options("a"))


def test_refine_never_leaves_a_point_that_meets_the_objective_for_one_that_does_not():
    reference = _reference(_evaluate(*_world()))
    evaluate = _evaluate(*_world())

    def only_bad(name):  # every variant loses rows: the reference stays
        return [PredictorPolicy(["cheap"])]

    refined = refine(reference, Objective(), reference, ["a", "b"], only_bad, evaluate, PARITY_TOLERANCE)
    assert refined.candidate.policy.to_dict() == reference.policy.to_dict()


def _lucky_pool(n=160, variants=200, seed=1):
    """A reference right on 70% of rows, and cheaper variants that each answer differently on a fifth of the
    rows, losing there more often than they gain (true mean about -4 points)."""
    rng = np.random.default_rng(seed)
    ref_scores = (rng.uniform(size=n) < 0.7).astype(float)
    reference = Candidate("ref", "ref", ref_scores.mean(), 10.0, ref_scores, np.full(n, 0.010))
    pool = []
    for i in range(variants):
        scores = ref_scores.copy()
        differ = rng.uniform(size=n) < 0.2
        scores[differ] = (rng.uniform(size=differ.sum()) < 0.5).astype(float)  # coin flips where the ref is 70% right
        pool.append(Candidate(f"v{i}", f"v{i}", scores.mean(), 5.0 + i * 0.01, scores, np.full(n, 0.005 + i * 1e-5)))
    return reference, pool


def test_a_move_picked_for_its_luck_does_not_hold_out_of_fold(monkeypatch):
    # the out-of-fold check alone: choose's own selection-optimism guard would already refuse this move
    monkeypatch.setattr("optimizers.select.OPTIMISM_REPEATS", 0)
    from optimizers.refine import holds_out_of_fold
    from optimizers.select import choose

    reference, pool = _lucky_pool()
    folds = np.arange(len(reference.scores)) % 5
    picked, _ = choose(pool, Objective(), reference, row_scores=lambda c: c.scores, tolerance=PARITY_TOLERANCE)
    assert picked is not reference  # on all dev rows, some variant ties the reference by luck
    assert not holds_out_of_fold(pool, Objective(), reference, PARITY_TOLERANCE, folds)
    # a variant that answers like the reference for less holds wherever it is picked
    honest = Candidate("same", "same", reference.quality, 4.0, reference.scores.copy(), np.full(160, 0.004))
    assert holds_out_of_fold(pool + [honest], Objective(), reference, PARITY_TOLERANCE, folds)


def test_a_compile_whose_point_was_refined_records_and_reports_it(tmp_path, monkeypatch):
    # what is recorded and reported; on this small fake dev set choose's optimism guard keeps big alone
    monkeypatch.setattr("optimizers.select.OPTIMISM_REPEATS", 0)
    """Four trials (the two uniform baselines, two warm starts) leave the order-id predictor on the big tier;
    the refinement moves it to a small > big cascade (the scripted small tier is right, at confidence 0.95,
    on simple rows, and wrong at 0.4 elsewhere), and the artifact and its report show the refined point."""
    import json

    from metrics.report import load_report
    from optimizers.live import OptimizeOptions, optimize
    from tests.fakes import support_script, write_tiers

    out = tmp_path / "support.tierwise.json"
    summary = optimize(OptimizeOptions(task="support", tiers=str(write_tiers(tmp_path)), scripts={"*": support_script()},
                                       work_dir=tmp_path, storage=f"sqlite:///{tmp_path}/s.db", out=str(out), limit=40,
                                       trials=4, seed=0))
    assert {name: p["ladder"] for name, p in summary["policy"].items()} == {"classify": ["small", "big"],
                                                                           "extract": ["small", "big"]}
    assert summary["holdout_vs_reference"]["delta"] == 0.0 and summary["savings_pct"] > 30
    evaluation = json.loads(out.read_text())["evaluation"]
    refined = evaluation["trials"][-1]
    assert refined.get("refined") and evaluation["chosen_trial"] == str(refined["number"]) == "4"
    assert refined["policy"]["predictors"]["extract"]["ladder"] == ["small", "big"]
    trials = load_report(str(out)).tables["trials"]
    assert trials.loc[trials["chosen"], "number"].tolist() == [4]
