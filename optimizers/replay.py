"""`cli.py replay fit` / `replay apply`: the policy search of `optimize`, scored from a recorded outcome
table instead of live calls. The recorded models play the tiers (cheapest first, by average cost); the
policy has one predictor, "answer". Costs nothing: every call in the table was already paid.

fit:   load -> split by id -> label-free signals -> learned scorer on the training rows (cross-fitted
       confidences for the search) -> Optuna search (optimizers.study) -> choose (optimizers.select;
       a --min-quality floor must hold with a margin of training noise, see select.choose)
       -> holdout check beside every single model -> artifact (pipelines.artifact).
apply: replays a fitted policy on a table through pipelines.cascade.run_ladder itself, one id at a
       time, and writes one decision per id.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from optimizers.replay_eval import (LadderRun, Signals, agreement_confidence, cross_fitted_confidence,
                                    learned_confidence, run_ladder_vectorized)
from optimizers.replay_signals import FEATURES, NONE, ReplayScorer, feature_row
from optimizers.replay_table import OutcomeMatrix, load_outcomes
from optimizers.select import SAFETY_Z, Candidate, Objective, choose
from optimizers.summary import block, build_summary, gap_note, paired_gap, split_rows
from pipelines import artifact
from pipelines.errors import ArtifactError, ConfigError, DatasetError
from pipelines.policy import Policy
from pipelines.tiers import Catalog, Tier

PREDICTOR = "answer"
SIGNALS_VERSION = "replay-signals-2"  # part of the study name: a change of features starts a new study
ESTIMATOR_DOCS = {
    "agreement": "1.0 when this rung's final number (or, without numbers, its normalized text) equals the "
                 "previous rung's; 0.0 otherwise and at rung 0",
    "learned": "per-model logistic scorer over text features of input and answer (including an exact "
               "re-check of every arithmetic claim in the answer and its use of the question's numbers) plus "
               "agreement with the previous rung; fitted on training rows",
}


@dataclass
class ReplayOptions:
    outcomes: str
    objective: Objective = field(default_factory=Objective)
    holdout: float = 0.3
    trials: int = 300
    seed: int = 0
    storage: str | None = None
    out: str | None = None
    max_rungs: int = 3
    safety_z: float = SAFETY_Z  # standard errors a --min-quality floor must be cleared by


@dataclass
class Fitted:
    """Everything a fit computed, for the CLI, the benchmark and tests."""

    summary: dict
    policy: Policy
    matrix: OutcomeMatrix
    dev_idx: np.ndarray
    hold_idx: np.ndarray
    dev_run: LadderRun
    hold_run: LadderRun
    scorer: ReplayScorer
    study: object


def split_ids(matrix: OutcomeMatrix, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rows = [{"id": rid, "i": i} for i, rid in enumerate(matrix.ids)]
    dev, hold = split_rows(rows, holdout, seed)
    return np.array([r["i"] for r in dev], int), np.array([r["i"] for r in hold], int)


def _study_name(matrix: OutcomeMatrix, options: ReplayOptions) -> str:
    digest = hashlib.sha256()
    for part in (SIGNALS_VERSION, json.dumps([matrix.ids, matrix.models, options.seed, options.holdout,
                                              options.max_rungs]),
                 matrix.score.tobytes(), matrix.cost.tobytes(), json.dumps(matrix.outputs).encode()):
        digest.update(part.encode() if isinstance(part, str) else part)
    return f"replay-{Path(matrix.source).stem}-{digest.hexdigest()[:12]}"


def _catalog(matrix: OutcomeMatrix) -> Catalog:
    from pipelines.tiers import _price_map

    tiers = []
    for model in matrix.models:
        price = matrix.prices.get(model) or _price_map(model)
        source = "price map (shipped with dspy)" if price else "recorded cost_usd (no per-token price known)"
        tiers.append(Tier(model, model, *(price or (0.0, 0.0)), {}, source))
    return Catalog(tiers)


def fit(options: ReplayOptions, on_trial=None) -> Fitted:
    import optuna

    from optimizers.study import completed, open_study, run_search, write_trials

    objective = options.objective
    matrix = load_outcomes(options.outcomes)
    if objective.match_tier is not None and objective.match_tier not in matrix.models:
        raise ConfigError(f"--match-tier {objective.match_tier!r} is not a model of {matrix.source}; "
                          f"models: {', '.join(matrix.models)}")
    dev_idx, hold_idx = split_ids(matrix, options.holdout, options.seed)
    if len(dev_idx) < 2:
        raise ConfigError(f"only {len(dev_idx)} training ids after the holdout split; use more rows or a smaller "
                          "--holdout")
    signals = Signals.of(matrix)
    dev_sig, hold_sig = signals.subset(dev_idx), signals.subset(hold_idx)
    dev_score, dev_cost = matrix.score[dev_idx], matrix.cost[dev_idx]
    scorer = ReplayScorer(matrix.models).fit(dev_sig.base, dev_sig.agree, dev_score)
    has_text = any(o.strip() for row in matrix.outputs for o in row)
    dev_conf = {"learned": cross_fitted_confidence(matrix.models, dev_sig, dev_score,
                                                   [matrix.ids[i] for i in dev_idx], options.seed)}
    hold_conf = {"learned": learned_confidence(scorer, hold_sig)}
    if has_text:  # without answer text no two answers can agree
        dev_conf["agreement"], hold_conf["agreement"] = agreement_confidence(dev_sig), agreement_confidence(hold_sig)
    estimators = sorted(dev_conf)
    index = {m: j for j, m in enumerate(matrix.models)}

    def evaluate_dev(policy: Policy) -> tuple[float, float]:
        run = run_ladder_vectorized(policy[PREDICTOR], index, dev_conf, dev_score, dev_cost)
        return float(run.score.mean()), float(run.cost.mean() * 1000)

    # Trials take microseconds here, so a SQLite round trip per trial would dominate: search in memory
    # (seeded with the stored trials, so a rerun resumes), then write the new trials in one pass.
    study = open_study(_study_name(matrix, options), options.storage, options.seed)
    scratch = open_study(study.study_name, optuna.storages.InMemoryStorage(), options.seed)
    stored = completed(study)
    scratch.add_trials(stored)
    ran = run_search(scratch, evaluate_dev, [PREDICTOR], matrix.models, estimators, options.trials,
                     on_trial=on_trial, max_rungs=options.max_rungs)
    write_trials(study, completed(scratch)[len(stored):])

    cands = [Candidate(str(t.number), Policy.from_dict(t.user_attrs["policy"]), t.values[0], t.values[1])
             for t in completed(study)]
    dev_means = dev_score.mean(axis=0)
    reference_name = objective.match_tier or min(matrix.models, key=lambda m: (-dev_means[index[m]],
                                                                              dev_cost[:, index[m]].mean()))
    ref = index[reference_name]
    reference = Candidate(reference_name, Policy.uniform([PREDICTOR], reference_name), float(dev_means[ref]),
                          float(dev_cost[:, ref].mean() * 1000), dev_score[:, ref])
    row_scores = None
    if objective.min_quality is not None:  # a quality floor: guard it against the noise of the training rows
        def row_scores(c: Candidate) -> np.ndarray:
            return run_ladder_vectorized(c.policy[PREDICTOR], index, dev_conf, dev_score, dev_cost).score
    chosen, info = choose(cands, objective, reference, row_scores=row_scores, z=options.safety_z)
    policy = chosen.policy
    dev_run = run_ladder_vectorized(policy[PREDICTOR], index, dev_conf, dev_score, dev_cost)
    hold_run = run_ladder_vectorized(policy[PREDICTOR], index, hold_conf, matrix.score[hold_idx],
                                     matrix.cost[hold_idx])

    baselines = {m: {"dev": block(dev_score[:, j], dev_cost[:, j]),
                     "holdout": block(matrix.score[hold_idx, j], matrix.cost[hold_idx, j], with_ci=True,
                                      seed=options.seed)}
                 for j, m in enumerate(matrix.models)}
    hold_block = block(hold_run.score, hold_run.cost, with_ci=True, seed=options.seed)
    notes = []
    if not info["feasible"]:
        notes.append("no searched policy met the objective on the training rows; the closest one was chosen")
    if row_scores is not None:
        notes.append(f"quality floor checked against training quality minus {options.safety_z:g} paired standard "
                     f"errors of the gap to {reference_name}-only (chosen policy: -{info.get('margin', 0.0):.4f})")
    gap = paired_gap(hold_run.score, matrix.score[hold_idx, ref], options.seed)
    if len(hold_idx):
        notes.append(gap_note(gap, reference_name, info["noise"], "training"))
    else:
        notes.append("--holdout 0: no held-out rows, the numbers above are training numbers only")
    notes.append("dev numbers use cross-fitted (out-of-fold) learned confidences; holdout uses the final scorer")
    if not has_text:
        notes.append("the table has no answer text: estimator 'agreement' unavailable, 'learned' sees inputs only")

    out_path = Path(options.out) if options.out else Path(f"{Path(matrix.source).stem}.replay.tierwise.json")
    summary = build_summary(
        task=f"replay:{Path(matrix.source).name}", objective=objective.describe(reference_name),
        artifact=str(out_path), policy=policy.describe(), dev=block(dev_run.score, dev_run.cost),
        holdout=hold_block, baselines=baselines, reference=reference_name, paid_calls=0,
        full_matrix_calls=matrix.n * len(matrix.models), trials=len(completed(study)), spent_usd=0.0,
        trials_run_now=ran, noise=info["noise"], holdout_vs_reference=gap, study=study.study_name,
        storage=options.storage or "default (.tierwise/studies.db)", notes=notes,
    )
    body = artifact.build(
        task_source=None, program=None, catalog=_catalog(matrix), policy=policy, scorers={PREDICTOR: scorer},
        summary=summary, metrics={"dev": summary["dev"], "holdout": hold_block},
        extra={"replay": {"models": matrix.models, "predictor": PREDICTOR, "estimators": ESTIMATOR_DOCS,
                          "features": ["model_position", *FEATURES], "signals_version": SIGNALS_VERSION,
                          "outcomes": matrix.source,
                          "split": {"dev": [matrix.ids[i] for i in dev_idx],
                                    "holdout": [matrix.ids[i] for i in hold_idx], "seed": options.seed,
                                    "holdout_fraction": options.holdout}}})
    artifact.save(body, out_path)
    return Fitted(summary, policy, matrix, dev_idx, hold_idx, dev_run, hold_run, scorer, study)


# --- apply ---------------------------------------------------------------------------------------


@dataclass
class Decision:
    id: str
    final_model: str
    models_called: list[str]
    cost_usd: float
    score: float


def read_replay_artifact(path) -> tuple[dict, Policy, ReplayScorer | None]:
    body = artifact.read(path)
    replay = body.get("replay")
    if not isinstance(replay, dict) or "models" not in replay:
        raise ArtifactError(f"{path}: not a replay policy (made by `cli.py optimize`? run it with `cli.py run`)")
    try:
        policy = Policy.from_dict(body["policy"]).validate(replay["models"])
        scorer_data = body.get("scorers", {}).get(replay["predictor"])
        scorer = ReplayScorer.from_dict(scorer_data) if scorer_data else None
    except (KeyError, TypeError, ValueError) as e:
        raise ArtifactError(f"{path}: malformed replay policy ({type(e).__name__}: {e})") from None
    return body, policy, scorer


def apply(policy_path, outcomes_path) -> tuple[list[Decision], dict]:
    """Decisions per id (in table order) and the artifact body."""
    from pipelines.cascade import RungOutcome, run_ladder
    from optimizers.replay_signals import answers_agree, text_features

    body, policy, scorer = read_replay_artifact(policy_path)
    replay = body["replay"]
    pp = policy[replay["predictor"]]
    matrix = load_outcomes(outcomes_path)
    missing = [m for m in pp.ladder if m not in matrix.models]
    if missing:
        raise DatasetError(f"{outcomes_path}: the policy's ladder needs models {missing}, which the table lacks "
                           f"(it has {', '.join(matrix.models)})")
    column = {m: j for j, m in enumerate(matrix.models)}
    position = {m: j for j, m in enumerate(replay["models"])}  # the scorer's model positions
    decisions = []
    for q, rid in enumerate(matrix.ids):
        called: list[str] = []

        def answer(tier, q=q, called=called):
            j = column[tier]
            prev = called[-1] if called else None
            out = matrix.outputs[q][j]
            agrees = prev is not None and answers_agree(out, matrix.outputs[q][column[prev]])
            called.append(tier)
            feats = feature_row(position[tier], text_features(matrix.inputs[q], out),
                                position[prev] if prev else NONE, agrees)
            return RungOutcome(tier=tier, outputs={"answer": out}, scores={"agreement": float(agrees)},
                               features=feats, cost_usd=float(matrix.cost[q, j]))

        final, _ = run_ladder(replay["predictor"], pp, answer, replay["models"], use_fallback=False, scorer=scorer)
        decisions.append(Decision(rid, final.tier, list(called), float(sum(matrix.cost[q, column[t]] for t in called)),
                                  float(matrix.score[q, column[final.tier]])))
    return decisions, body


def decision_stats(decisions: list[Decision]) -> dict:
    return block([d.score for d in decisions], [d.cost_usd for d in decisions])


def write_decisions(decisions: list[Decision], path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "final_model", "models_called", "cost_usd", "score"])
        for d in decisions:
            writer.writerow([d.id, d.final_model, ";".join(d.models_called), repr(d.cost_usd), repr(d.score)])
    return path
