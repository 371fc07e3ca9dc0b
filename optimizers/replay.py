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

from optimizers.preflight import check_seed
from optimizers.replay_eval import (LadderRun, Signals, agreement_confidence, cross_fitted_confidence,
                                    learned_confidence, run_ladder_vectorized)
from optimizers.replay_signals import NONE, ReplayScorer, feature_names, feature_row, text_features
from optimizers.signal_plugins import BUILT_IN, resolve
from optimizers.replay_table import OutcomeMatrix, load_outcomes
from optimizers.routing import (answer_scores, cross_fitted_answer_scores, fit_answer_model,
                                fit_cross_fitted_router, folds_of)
from pipelines.routing import Router, default_block, input_features
from optimizers.select import PARITY_TOLERANCE, SAFETY_Z, Candidate, Objective, choose
from optimizers.summary import block as block_of, build_summary, few_rows_note, gap_note, paired_gap, split_rows
from pipelines import artifact
from pipelines.errors import ArtifactError, ConfigError, DatasetError
from pipelines.policy import Policy
from pipelines.tiers import Catalog, Tier

PREDICTOR = "answer"
# The router's lambda is the knob that moves along its cost-quality curve; 7 warm-start values left
# LLMRouter's 95% and parity points on the same lambda (0.1) on 2 splits of 5: 25 cover the curve.
ROUTER_LAMBDAS = 25
SIGNALS_VERSION = "replay-signals-5"  # part of the study name: a change of features (5: of the split) starts a new study
ESTIMATOR_DOCS = {
    "agreement": "1.0 when this rung's answer says the same as the previous answered rung's (choice letter, "
                 "final number, code, or normalized text); 0.0 otherwise and at the first rung",
    "learned": "per-model logistic scorer over answer-level features (length, refusals, hedges, commitment), "
               "the router's predicted score for the model on this input, opt-in plug-ins, and agreement with "
               "the previous answered rung; fitted on training rows",
    "route": "a routed policy starts at the rung with the best router prediction - lambda * relative cost; "
             "the router (per model: kNN + ridge over the input embedding, averaged with a TF-IDF logistic "
             "word head) is stored under replay.router",
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
    safety_z: float = SAFETY_Z  # standard errors a quality target must be cleared by
    score_max: float | None = None  # divide scores by this (judge scores, e.g. 10)
    clip_scores: bool = False  # clip scores into [0, 1] instead of refusing the table
    plugins: tuple[str, ...] = ()  # opt-in signal plug-ins, built in or the user's (optimizers.signal_plugins)
    features: str | None = None  # the router's input feature block (default: the local embedding)
    tolerance: float = PARITY_TOLERANCE


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
    router: Router = None
    hold_predicted: np.ndarray = None


def split_ids(matrix: OutcomeMatrix, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rows = [{"id": rid, "i": i} for i, rid in enumerate(matrix.ids)]
    dev, hold = split_rows(rows, holdout, seed)
    return np.array([r["i"] for r in dev], int), np.array([r["i"] for r in hold], int)


def _study_name(matrix: OutcomeMatrix, digest: str, options: ReplayOptions, block: str) -> str:
    """The table's content (table_digest: inputs and answers too, which the routers and signals read) and
    every option that changes what a trial scores."""
    settings = json.dumps([SIGNALS_VERSION, digest, options.seed, options.holdout, options.max_rungs,
                           plugin_fingerprints(options.plugins), block])
    return f"replay-{Path(matrix.source).stem}-{hashlib.sha256(settings.encode()).hexdigest()[:12]}"


def plugin_fingerprints(plugins) -> list[str]:
    """Each plug-in's spec, and a user's function by its code: a changed check scores trials differently."""
    return [resolve(spec).fingerprint for spec in plugins]


def best_model(matrix: OutcomeMatrix, dev_idx: np.ndarray) -> str:
    """The reference: the best mean score on the training ids a model answered (a flagship that timed out on
    some ids is still the flagship; those ids leave the comparison), among models that answered at least half
    of them; ties go to the cheaper."""
    answered = matrix.present[dev_idx]
    n = np.maximum(answered.sum(axis=0), 1)
    means = (matrix.score[dev_idx] * answered).sum(axis=0) / n
    costs = (matrix.cost[dev_idx] * answered).sum(axis=0) / n
    covered = [j for j in range(len(matrix.models)) if answered[:, j].mean() >= 0.5] or range(len(matrix.models))
    return matrix.models[min(covered, key=lambda j: (-means[j], costs[j]))]


def _catalog(matrix: OutcomeMatrix) -> Catalog:
    from pipelines.tiers import price_map

    tiers = []
    for model in matrix.models:
        price = matrix.prices.get(model) or price_map(model)
        source = "price map (shipped with dspy)" if price else "recorded cost_usd (no per-token price known)"
        tiers.append(Tier(model, model, *(price or (0.0, 0.0)), {}, source))
    return Catalog(tiers)


def fit(options: ReplayOptions, on_trial=None) -> Fitted:
    import optuna

    from optimizers.space import relative_costs, routing_seeds, suggest_routed_policy, warm_start_prefix
    from optimizers.study import completed, open_study, run_search, write_trials

    objective = options.objective
    check_seed(options.seed)
    for spec in options.plugins:
        resolve(spec)  # an unknown or broken plug-in fails before any work
    matrix = load_outcomes(options.outcomes, options.score_max, options.clip_scores)
    out_path = artifact.check_destination(options.out or f"{Path(matrix.source).stem}.replay.tierwise.json",
                                          example="table.replay.tierwise.json")
    if len(matrix.models) < 2:
        raise ConfigError(f"{matrix.source}: one model ({matrix.models[0]}): a policy chooses among two or more")
    if not (matrix.present.sum(axis=1) >= 2).any():
        raise DatasetError(f"{matrix.source}: no id has scored answers from two models, so there is nothing to "
                           "compare: every model's rows must use the same ids for the same query")
    digest = table_digest(matrix)  # of the table as given: `apply` on it recognizes the fitted holdout
    if objective.match_tier is not None and objective.match_tier not in matrix.models:
        raise ConfigError(f"--match-tier {objective.match_tier!r} is not a model of {matrix.source}; "
                          f"models: {', '.join(matrix.models)}")
    dev_idx, hold_idx = split_ids(matrix, options.holdout, options.seed)
    if len(dev_idx) < 2:
        raise ConfigError(f"only {len(dev_idx)} training ids after the holdout split; use more rows or a smaller "
                          "--holdout")
    index = {m: j for j, m in enumerate(matrix.models)}
    reference_name = objective.match_tier or best_model(matrix, dev_idx)
    ref = index[reference_name]
    kept = matrix.present[:, ref]
    if not kept.all():  # a reference must be scored on every id it is compared on
        matrix = matrix.dropping_ids_without(reference_name)
        dev_idx, hold_idx = split_ids(matrix, options.holdout, options.seed)
    block = options.features or default_block()
    X = input_features(matrix.inputs, block)
    dev, hold = matrix.subset(dev_idx), matrix.subset(hold_idx)
    dev_ids = dev.ids
    router, dev_pred = fit_cross_fitted_router(X[dev_idx], dev.score, dev.present, matrix.models, block,
                                               folds_of(dev_ids, options.seed), dev.inputs)
    hold_pred = router.predict(X[hold_idx], texts=hold.inputs) if len(hold_idx) else np.zeros((0, len(matrix.models)))
    answer_model = fit_answer_model(dev.outputs, dev.score, dev.present)
    dev_sig = Signals.of(dev, dev_pred, cross_fitted_answer_scores(dev.outputs, dev.score, dev.present,
                                                                   folds_of(dev_ids, options.seed)), options.plugins)
    hold_sig = Signals.of(hold, hold_pred, answer_scores(answer_model, hold.outputs), options.plugins)
    names = feature_names(options.plugins)

    def new_scorer() -> ReplayScorer:
        return ReplayScorer(matrix.models, features=names)

    scorer = new_scorer().fit(dev_sig.base, dev_sig.agree, dev.score, dev.present)
    has_text = any(o.strip() for row in matrix.outputs for o in row)
    dev_conf = {"learned": cross_fitted_confidence(new_scorer, dev_sig, dev.score, dev_ids, options.seed)}
    hold_conf = {"learned": learned_confidence(scorer, hold_sig)}
    if has_text:  # without answer text no two answers can agree
        dev_conf["agreement"], hold_conf["agreement"] = agreement_confidence(dev_sig), agreement_confidence(hold_sig)
    estimators = sorted(dev_conf)

    def run_dev(policy: Policy) -> LadderRun:
        return run_ladder_vectorized(policy[PREDICTOR], index, dev_conf, dev.score, dev.cost, dev.present, dev_pred)

    def evaluate_dev(policy: Policy) -> tuple[float, float]:
        run = run_dev(policy)
        return float(run.score.mean()), float(run.cost.mean() * 1000)

    mean_cost = np.array([dev.cost[dev.present[:, j], j].mean() if dev.present[:, j].any() else 0.0
                          for j in range(len(matrix.models))])
    route_costs = relative_costs(dict(zip(matrix.models, mean_cost)))

    def suggest(trial, predictors, tier_names, estimators_, max_rungs):
        return suggest_routed_policy(trial, predictors, tier_names, estimators_, max_rungs, route_costs)

    # Trials take microseconds here, so a SQLite round trip per trial would dominate: search in memory
    # (seeded with the stored trials, so a rerun resumes), then write the new trials in one pass.
    study = open_study(_study_name(matrix, digest, options, block), options.storage, options.seed)
    # TPE without group decomposition: the shapes make the space conditional, and decomposing it into
    # groups costs more per trial than everything else in a replay trial (measured: 2x the old space).
    scratch = optuna.create_study(study_name=study.study_name, storage=optuna.storages.InMemoryStorage(),
                                  directions=["maximize", "minimize"],
                                  sampler=optuna.samplers.TPESampler(seed=options.seed, multivariate=True,
                                                                     n_startup_trials=20))
    stored = completed(study)
    scratch.add_trials(stored)
    warm = routing_seeds(PREDICTOR, matrix.models, reference_name, estimators, ROUTER_LAMBDAS)
    ran = run_search(scratch, evaluate_dev, [PREDICTOR], matrix.models, estimators, options.trials,
                     on_trial=on_trial, max_rungs=options.max_rungs, suggest=suggest,
                     seeds=warm_start_prefix(warm, max(options.trials // 3, len(matrix.models))))
    write_trials(study, completed(scratch)[len(stored):])

    cands = [Candidate(str(t.number), Policy.from_dict(t.user_attrs["policy"]), t.values[0], t.values[1])
             for t in completed(study)]
    reference = Candidate(reference_name, Policy.uniform([PREDICTOR], reference_name), float(dev.score[:, ref].mean()),
                          float(dev.cost[:, ref].mean() * 1000), dev.score[:, ref])

    def row_scores(c: Candidate) -> np.ndarray:
        return run_dev(c.policy).score

    guarded = objective.max_cost_per_1k is None  # a quality target (floor or tie) is guarded by training noise
    chosen, info = choose(cands, objective, reference, row_scores=row_scores if guarded else None,
                          z=options.safety_z, tolerance=options.tolerance)
    policy = chosen.policy
    dev_run = run_dev(policy)
    hold_run = run_ladder_vectorized(policy[PREDICTOR], index, hold_conf, hold.score, hold.cost, hold.present,
                                     hold_pred)

    baselines = {m: {"dev": block_of(dev.score[:, j], dev.cost[:, j]),
                     "holdout": block_of(hold.score[:, j], hold.cost[:, j], with_ci=True, seed=options.seed)}
                 for j, m in enumerate(matrix.models)}
    hold_block = block_of(hold_run.score, hold_run.cost, with_ci=True, seed=options.seed)
    notes = list(matrix.notes) + few_rows_note(len(dev_idx), len(hold_idx), "training ids")
    if options.score_max is not None:
        notes.append(f"scores divided by --score-max {options.score_max:g}")
        notes.extend(scale_note(matrix, options.score_max))
    if not info["feasible"]:
        notes.append("no searched policy met the objective on the training rows; the closest one was chosen")
    if guarded and objective.min_quality is not None:
        notes.append(f"quality floor checked against training quality minus {options.safety_z:g} paired standard "
                     f"error(s) of the gap to {reference_name}-only and the selection optimism "
                     f"{info.get('optimism', 0.0):.4f} (the chosen policy: {dev_run.score.mean():.4f} on training "
                     f"ids, {info.get('margin', 0.0):.4f} subtracted, floor {objective.min_quality:g})")
    elif guarded:
        notes.append(f"'at {reference_name}'s quality' = the paired training gap minus {options.safety_z:g} standard "
                     f"error(s) and the selection optimism {info.get('optimism', 0.0):.4f} is >= -{options.tolerance:g} "
                     f"({info.get('margin', 0.0):.4f} subtracted for the chosen policy)")
    gap = paired_gap(hold_run.score, hold.score[:, ref], options.seed)
    if len(hold_idx):
        notes.append(gap_note(gap, reference_name, info["noise"], "training"))
    else:
        notes.append("--holdout 0: no held-out rows, the numbers above are training numbers only")
    notes.append("dev numbers use cross-fitted (out-of-fold) router predictions and learned confidences; holdout "
                 "uses the router and scorer fitted on all training rows")
    chosen = " (--features)" if options.features else "" if block == "embedding" else \
        " (the embedding model is not installed)"
    notes.append(f"router input features: {block}{chosen}")
    if not has_text:
        notes.append("the table has no answer text: estimator 'agreement' unavailable, 'learned' sees inputs only")
    if options.plugins:
        own = [spec for spec in options.plugins if spec not in BUILT_IN]
        notes.append(f"task-specific signals on (--signals {','.join(options.plugins)}): the learned confidence also "
                     "reads them, on this table and wherever the policy is applied"
                     + (f"; give `replay apply` and `report` --signals {','.join(own)} too" if own else ""))
    if not matrix.cost.any():
        notes.append("every cost in the table is 0: there is nothing to save, so every policy ties on cost; give "
                     "cost_usd, or prompt_tokens/completion_tokens of priced models")

    summary = build_summary(
        task=f"replay:{Path(matrix.source).name}", objective=objective.describe(reference_name),
        artifact=str(out_path), policy=policy.describe(), dev=block_of(dev_run.score, dev_run.cost),
        holdout=hold_block, baselines=baselines, reference=reference_name, paid_calls=0,
        full_matrix_calls=int(matrix.present.sum()), trials=len(completed(study)), spent_usd=0.0,
        trials_run_now=ran, noise=info["noise"], holdout_vs_reference=gap, study=study.study_name,
        storage=options.storage or "default (.tierwise/studies.db)", notes=notes,
    )
    pp = policy[PREDICTOR]
    needs_router = pp.route is not None or pp.estimator == "learned"
    body = artifact.build(
        task_source=None, program=None, catalog=_catalog(matrix), policy=policy, scorers={PREDICTOR: scorer},
        summary=summary, metrics={"dev": summary["dev"], "holdout": hold_block},
        extra={"replay": {"models": matrix.models, "predictor": PREDICTOR, "estimators": ESTIMATOR_DOCS,
                          "features": ["model_position", *names], "signals_version": SIGNALS_VERSION,
                          "plugins": list(options.plugins), "plugin_code": plugin_fingerprints(options.plugins),
                          "score_max": options.score_max,
                          "clip_scores": options.clip_scores,
                          "router": router.to_dict() if needs_router else None,
                          "answer_model": answer_model if needs_router else None,
                          "outcomes": str(Path(matrix.source).resolve()), "table_digest": digest,
                          "answer_text": has_text,
                          "split": {"dev": [matrix.ids[i] for i in dev_idx],
                                    "holdout": [matrix.ids[i] for i in hold_idx], "seed": options.seed,
                                    "holdout_fraction": options.holdout}}})
    artifact.save(body, out_path)
    return Fitted(summary, policy, matrix, dev_idx, hold_idx, dev_run, hold_run, scorer, study, router, hold_pred)


# --- apply ---------------------------------------------------------------------------------------


@dataclass
class Decision:
    id: str
    final_model: str
    models_called: list[str]
    cost_usd: float
    score: float | None  # None: the table has no scores
    without_row: list[str] = field(default_factory=list)  # models called that the table has no answer of


def read_replay_artifact(path) -> tuple[dict, Policy, ReplayScorer | None]:
    """The body, policy and scorer, every part `apply` reads checked: a hand-edited artifact (its checksum
    recomputed) is a one-line error, not a traceback."""
    body = artifact.read(path)
    replay = body.get("replay")
    if not isinstance(replay, dict) or "models" not in replay:
        raise ArtifactError(f"{path}: not a replay policy (made by `cli.py optimize`? run it with `cli.py run`)")
    try:
        policy = Policy.from_dict(body["policy"]).validate(replay["models"])
        policy[replay["predictor"]]  # noqa: B018 - the predictor the ladder is read for
        scorer_data = body.get("scorers", {}).get(replay["predictor"])
        scorer = ReplayScorer.from_dict(scorer_data) if scorer_data else None
        score_max = replay.get("score_max")
        if score_max is not None and not (isinstance(score_max, (int, float)) and score_max > 0):
            raise ValueError(f"score_max {score_max!r}")
        holdout = replay["split"]["holdout"]
        if not isinstance(holdout, list):
            raise TypeError("split.holdout is not a list")
        if replay.get("answer_model"):
            answer_scores(replay["answer_model"], [["" for _ in replay["models"]]])
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise ArtifactError(f"{path}: malformed replay policy ({type(e).__name__}: {e})") from None
    return body, policy, scorer


@dataclass
class Applied:
    decisions: list[Decision]  # one per id, in table order
    body: dict  # the artifact
    notes: list[str]  # what the table left out, and what the policy could not read in it
    fitted_table: bool  # the table is the one the policy was fitted on: its holdout ids are the fitted holdout
    matrix: OutcomeMatrix | None = None  # the table as read

    @property
    def fitted_holdout(self) -> list[Decision]:
        held = set(self.body["replay"]["split"]["holdout"]) if self.fitted_table else set()
        return [d for d in self.decisions if d.id in held]


def apply(policy_path, outcomes_path, score_max: float | None = None, unscored_table: bool = False,
          signals: tuple[str, ...] = ()) -> Applied:
    """Each id climbs the policy's ladder through pipelines.cascade.run_ladder itself; a cell the table lacks
    is a failed rung, and an id whose every rung failed scores 0 with final_model ''. `score_max` divides this
    table's scores (default: what the policy was fitted with). `unscored_table`: a table without a score column
    (logs nobody labelled) is read too: each decision's models and cost, its score None. `signals`: the user's
    signal plug-ins the policy was fitted with (the artifact names them; it never imports them itself)."""
    from pipelines.cascade import RungOutcome, run_ladder
    from pipelines.errors import AllRungsFailed
    from optimizers.replay_signals import answers_agree

    body, policy, scorer = read_replay_artifact(policy_path)
    replay = body["replay"]
    if score_max is not None:
        replay = {**replay, "score_max_fitted": replay.get("score_max"), "score_max": score_max}
    pp = policy[replay["predictor"]]
    plugins = tuple(replay.get("plugins") or ())
    changed = checked_plugins(plugins, replay.get("plugin_code"), tuple(signals), policy_path)
    matrix = load_outcomes(outcomes_path, replay.get("score_max"), bool(replay.get("clip_scores")), unscored_table)
    missing = [m for m in pp.ladder if m not in matrix.models]
    if missing:
        raise DatasetError(f"{outcomes_path}: the policy's ladder needs models {missing}, which the table lacks "
                           f"(it has {', '.join(matrix.models)})")
    if pp.estimator == "agreement" and judged_without_text(pp, matrix):
        raise DatasetError(f"{outcomes_path}: the policy escalates when two models' answers disagree, and this table "
                           f"has no answer text on {', '.join(pp.ladder[:-1])}: every id would climb to "
                           f"{pp.ladder[-1]}; add an output column")
    column = {m: j for j, m in enumerate(matrix.models)}
    position = {m: j for j, m in enumerate(replay["models"])}  # the scorer's and router's model positions
    predicted = _router_predictions(replay, matrix.inputs, policy_path)
    answer_model = replay.get("answer_model")
    by_position = [[row[column[m]] if m in column else "" for m in replay["models"]] for row in matrix.outputs]
    answer_scored = answer_scores(answer_model, by_position) if answer_model else None
    decisions = []
    for q, rid in enumerate(matrix.ids):
        called: list[str] = []
        answered: list[str] = []

        def answer(tier, q=q, called=called, answered=answered):
            j = column[tier]
            called.append(tier)
            if not matrix.present[q, j]:
                return RungOutcome(tier=tier, outputs=None, error="no answer in the table",
                                   cost_usd=float(matrix.cost[q, j]))
            prev = answered[-1] if answered else None
            out = matrix.outputs[q][j]
            agrees = prev is not None and answers_agree(out, matrix.outputs[q][column[prev]])
            answered.append(tier)
            own = [float(predicted[q, position[tier]]) if predicted is not None else 0.0,
                   float(answer_scored[q, position[tier]]) if answer_scored is not None else 0.0]
            feats = feature_row(position[tier], [*text_features(matrix.inputs[q], out, plugins), *own],
                                position[prev] if prev else NONE, agrees)
            return RungOutcome(tier=tier, outputs={"answer": out}, scores={"agreement": float(agrees)},
                               features=feats, cost_usd=float(matrix.cost[q, j]))

        rung_scores = [float(predicted[q, position[t]]) for t in pp.ladder] if predicted is not None else None
        try:
            final, _ = run_ladder(replay["predictor"], pp, answer, replay["models"], use_fallback=False,
                                  scorer=scorer, predicted=rung_scores)
            tier, score = final.tier, float(matrix.score[q, column[final.tier]])
        except AllRungsFailed:
            tier, score = "", 0.0
        score = score if matrix.scored else None
        decisions.append(Decision(rid, tier, list(called), float(sum(matrix.cost[q, column[t]] for t in called)),
                                  score, [t for t in called if not matrix.present[q, column[t]]]))
    notes = list(matrix.notes) + _apply_notes(replay, pp, matrix, decisions)
    notes += [f"signal plug-in {spec}: its code changed since the fit; the policy's confidence was fitted on what "
              "the old code said" for spec in changed]
    return Applied(decisions, body, notes, replay.get("table_digest") == table_digest(matrix), matrix)


def reference_comparison(applied: Applied) -> dict | None:
    """The policy against its reference model alone (the model the fit compared it to) on the ids that model
    answered: both qualities, both costs per 1k and the saving. None when the table lacks that model."""
    matrix, reference = applied.matrix, applied.body.get("summary", {}).get("reference")
    if matrix is None or reference not in matrix.models:
        return None
    j = matrix.models.index(reference)
    rows = [(q, d) for q, d in enumerate(applied.decisions) if matrix.present[q, j]]
    if not rows:
        return None
    ref_cost = float(np.mean([matrix.cost[q, j] for q, _ in rows]))
    policy_cost = float(np.mean([d.cost_usd for _, d in rows]))
    scored = matrix.scored
    return {"reference": reference, "n": len(rows),
            "quality": float(np.mean([d.score for _, d in rows])) if scored else None, "cost_per_1k": 1000 * policy_cost,
            "reference_quality": float(np.mean([matrix.score[q, j] for q, _ in rows])) if scored else None,
            "reference_cost_per_1k": 1000 * ref_cost,
            "saving_pct": 100 * (1 - policy_cost / ref_cost) if ref_cost > 0 else None}


def judged_without_text(pp, matrix: OutcomeMatrix) -> bool:
    """The ladder has rungs whose answers a confidence reads (all but the top), and the table holds no answer
    text on any of them."""
    judged = [matrix.models.index(m) for m in pp.ladder[:-1]]
    return bool(judged) and not any(row[j].strip() for row in matrix.outputs for j in judged)


def checked_plugins(fitted: tuple[str, ...], fitted_code, given: tuple[str, ...], policy_path) -> list[str]:
    """The user's plug-ins the policy reads must be given (`--signals`) as they were fitted; returns those whose
    code changed since the fit (a note: the scorer was fitted on what the old code said)."""
    own = [spec for spec in fitted if spec not in BUILT_IN]
    missing = [spec for spec in own if spec not in given]
    if missing:
        raise ConfigError(f"{policy_path} was fitted with signal plug-in(s) {', '.join(missing)}; pass --signals "
                          f"{','.join(own)} to apply it (an artifact never imports the code it names)")
    extra = [spec for spec in given if spec not in fitted]
    if extra:
        raise ConfigError(f"--signals {', '.join(extra)}: {policy_path} was not fitted with it "
                          f"(its plug-ins: {', '.join(fitted) or 'none'})")
    code = dict(zip(fitted, fitted_code or []))
    return [spec for spec in own if spec in code and resolve(spec).fingerprint != code[spec]]


def _apply_notes(replay: dict, pp, matrix: OutcomeMatrix, decisions: list[Decision]) -> list[str]:
    notes = []
    if replay.get("score_max") is not None and matrix.scored:
        fitted = replay.get("score_max_fitted", replay["score_max"])
        if fitted == replay["score_max"]:
            notes.append(f"scores divided by --score-max {fitted:g}, as when the policy was fitted")
        else:
            notes.append(f"scores divided by --score-max {replay['score_max']:g}, given here (the policy was fitted "
                         + (f"with --score-max {fitted:g})" if fitted is not None else "on scores in [0, 1])"))
        notes.extend(scale_note(matrix, replay["score_max"]))
    unanswered = sum(not d.final_model for d in decisions)
    if unanswered:
        notes.append(f"{unanswered} of {len(decisions)} ids had no " + ("scored answer on any rung the policy called: "
                     "each scores 0" if matrix.scored else "answer on any rung the policy called"))
    if replay.get("router") and not any(text.strip() for text in matrix.inputs):
        notes.append("the policy's router reads each query's input text, which this table lacks: it routes every "
                     "query as an empty input; add an input column")
    # 'learned' reads answer text with the input (replay_eval); 'agreement' without text was refused in apply
    if pp.estimator == "learned" and judged_without_text(pp, matrix):
        fitted_with = " (it was fitted on a table with answer text)" if replay.get("answer_text") else ""
        notes.append(f"the policy's '{pp.estimator}' confidence reads answer text, which this table lacks on "
                     f"{', '.join(pp.ladder[:-1])}: it judges the inputs alone{fitted_with}; add an output column")
    return notes


def scale_note(matrix: OutcomeMatrix, score_max: float) -> list[str]:
    """--score-max on a table already on [0, 1]: every quality, and the 0.01 of a parity tie, shrink by it."""
    top = matrix.score[matrix.present].max(initial=0.0)
    if score_max > 1 and 0 < top <= 1 / score_max + 1e-12:
        return [f"every score of this table was at most 1 before the division by --score-max {score_max:g}: if it "
                f"is already on [0, 1], these qualities are {score_max:g} times too low (and a 0.01 tie "
                f"{score_max:g} times looser); leave --score-max out"]
    return []


def table_digest(matrix: OutcomeMatrix) -> str:
    """What an outcome table holds (ids, models, inputs, scores, costs, answers), as a short hash."""
    digest = hashlib.sha256(json.dumps([matrix.ids, matrix.models, matrix.inputs, matrix.outputs]).encode())
    for array in (matrix.score, matrix.cost, matrix.present):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def _router_predictions(replay: dict, inputs: list[str], where) -> np.ndarray | None:
    """(n, models) router predictions for the table's inputs, or None when the policy stored no router."""
    data = replay.get("router")
    if not data:
        return None
    try:
        router = Router.from_dict(data)
    except (KeyError, TypeError, ValueError) as e:
        raise ArtifactError(f"{where}: malformed router ({type(e).__name__}: {e})") from None
    return router.predict_texts(inputs)


def decision_stats(decisions: list[Decision]) -> dict:
    """n, quality (None when the table has no scores) and cost per 1k of the decisions."""
    scores = [d.score for d in decisions]
    if decisions and scores[0] is None:
        return {**block_of([0.0] * len(decisions), [d.cost_usd for d in decisions]), "quality": None}
    return block_of(scores, [d.cost_usd for d in decisions])


def write_decisions(applied: Applied, path) -> Path:
    """One row per id: the model whose answer was used, the models called in order, cost, score, segment."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    segment = dict(zip(applied.matrix.ids, applied.matrix.segments))
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "final_model", "models_called", "models_without_row", "cost_usd", "score", "segment"])
        for d in applied.decisions:
            writer.writerow([d.id, d.final_model, ";".join(d.models_called), ";".join(d.without_row), repr(d.cost_usd),
                             "" if d.score is None else repr(d.score), segment[d.id]])
    return path
