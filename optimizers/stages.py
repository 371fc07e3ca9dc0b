"""One compile, in stages: record -> search -> choose -> check on holdout -> artifact.

`cli.py optimize` (optimizers.live) and `TierOptimizer.compile` (optimizers.tier_optimizer) both build a
`Job` and call `run(job)`; each stage is a function of what the stages before it produced, so another
front end (replay) can reuse the ones that fit it.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from optimizers import preflight
from optimizers.outcomes import OutcomeTable, RowResult, evaluate, fit_scorers, row_errors
from optimizers.program_output import ProgramOutput
from optimizers.recording import record_baselines
from optimizers import semantic_search
from optimizers.select import PARITY_TOLERANCE, SAFETY_Z, Candidate, Objective, choose
from optimizers.input_routers import fit_input_routers
from optimizers.refine import alternatives, refine
from optimizers.routing import folds_of
from optimizers.space import (committee_seeds, escalation_seeds, relative_costs, routing_seeds, suggest_policy,
                              suggest_routed_policy, uniform_params)
from optimizers.study import completed, open_study, run_search_buffered
from optimizers.summary import block, build_summary, few_rows_note, gap_note, paired_gap, split_rows
from pipelines import artifact, paths
from pipelines.answer_checks import AnswerChecks
from pipelines.artifact import program_fingerprint
from pipelines.cache import CallCache
from pipelines.cascade import score_of
from pipelines.code_fingerprint import code_fingerprint
from pipelines.confidence import same_answer
from pipelines.errors import ConfigError
from pipelines.ledger import Ledger
from pipelines.policy import Policy
from pipelines.runtime import Runtime
from pipelines.stores import is_sql_url, redact
from pipelines.tiers import Catalog

DEFAULT_TRIALS = 600  # on the full support set, 200 TPE trials missed the best ladders that 800 found (measured)
DEFAULT_HOLDOUT = 0.3


@dataclass
class Job:
    """Everything one compile needs, however it was asked for."""

    task: object  # pipelines.tasks.Task or pipelines.programs.ExampleTask
    rows: list[dict]
    catalog: Catalog
    objective: Objective = field(default_factory=Objective)
    trials: int = DEFAULT_TRIALS
    seed: int = 0
    budget_usd: float | None = None
    holdout: float = DEFAULT_HOLDOUT
    holdout_rows: list[dict] | None = None  # an explicit valset; else `holdout` of `rows` is held out
    storage: str | None = None  # Optuna storage URL; default a SQLite file in work_dir
    work_dir: Path = paths.WORK_DIR
    out: str | None = None  # the artifact path the summary names
    dataset: str | None = None  # where the rows came from, for the artifact
    scripts: dict | None = None  # fake/ tiers (tests)
    concurrency: int = 1  # calls at once while recording outcomes (optimizers.recording)
    semantic_cache: bool = False  # also search a semantic cache for the predictors the task declares eligible
    semantic_settings: dict | None = None  # that declaration when it does not come from the task (TierOptimizer)
    refine: bool = True  # refine the chosen point one predictor at a time (optimizers.refine)
    rows_available: int | None = None  # the labeled rows there were before `--limit` sampled `rows`
    allow_incomplete: bool = False  # compile on the rows every tier answered when some tier had an outage
    notes: list[str] = field(default_factory=list)  # said by whoever asked for the compile (TierOptimizer)


@dataclass
class Session:
    """What the stages share: the split, the runtime, the program and its outcome table."""

    job: Job
    dev: list[dict]
    hold: list[dict]
    runtime: Runtime
    program: object
    predictors: list[str]
    study_name: str
    storage: str
    table: OutcomeTable
    # Distinct calls of every tier's uniform run on every row: rows x predictors x tiers when each predictor
    # is called once per row, more when a program calls one several times (once per item of a list).
    matrix_calls: int = 0
    notes: list[str] = field(default_factory=list)  # the job's, and what recording left out (--allow-incomplete)

    def evaluate(self, policy: Policy, rows: list[dict], scorers=None, routers=None) -> list[RowResult]:
        return evaluate(self.job.task, self.program, policy, rows, self.table, self.job.catalog.names, scorers,
                        routers)

    def split(self, results: list[RowResult]) -> tuple[list[RowResult], list[RowResult]]:
        by_id = {r.row_id: r for r in results}
        return [by_id[str(r["id"])] for r in self.dev], [by_id[str(r["id"])] for r in self.hold]


@dataclass
class Searched:
    study: object
    ran: int
    scorers: dict
    estimators: list[str]
    routers: dict = field(default_factory=dict)  # predictor -> pipelines.routing.InputRouter


@dataclass
class Chosen:
    candidate: Candidate
    info: dict
    reference: str


@dataclass
class Checked:
    dev: dict
    holdout: dict
    baselines: dict
    gap: dict
    notes: list[str]
    results: list[RowResult]  # the chosen policy on dev + holdout rows


@dataclass
class Result:
    summary: dict
    body: dict  # the artifact (without checksum)
    policy: Policy
    study: object
    scorers: dict


# Part of the study name: a change of the searched space or of how a trial is scored starts a new study
# (Optuna refuses a parameter whose choices changed; old trials' scores would mislead the sampler).
# Recorded outcomes are kept either way. 2: the committee estimator and the learned scorer's ladder features.
# 3: a predictor writing several fields or a reasoning gets a larger max_tokens (pipelines.cascade.answer_budget).
SEARCH_VERSION = "3"


def study_name(task, program, catalog, dev, hold, seed: int, holdout: float, checks=None) -> str:
    """One study per compile: a rerun of the same compile continues it; an edited dev set (labels included),
    input list, metric or answer check is another compile, whose trials must not be read as this one's."""
    rows = sorted(json.dumps(r, sort_keys=True, default=str) for r in dev + hold)
    ident = json.dumps({"task": task.source, "fp": program_fingerprint(program),
                        "tiers": [t.identity() for t in catalog], "prices": [t.prices() for t in catalog],
                        "rows": hashlib.sha256("\n".join(rows).encode()).hexdigest(),
                        "scoring": scoring_fingerprint(task), "seed": seed, "holdout": holdout,
                        "search": SEARCH_VERSION, **({"checks": checks.describe()} if checks else {})},
                       sort_keys=True)
    return f"{task.name}-{hashlib.sha256(ident.encode()).hexdigest()[:12]}"


def scoring_fingerprint(task) -> list[str]:
    """The task's scoring parts (input names or inputs function, metric, predictor_correct) as source code;
    bytecode where the source cannot be read."""
    return [code_fingerprint(part) for part in task.scoring_parts()]


def prepare(job: Job) -> Session:
    """Check the tiers and the split, open the runtime and the outcome table (nothing paid yet)."""
    catalog = job.catalog
    if job.objective.match_tier is not None:
        catalog[job.objective.match_tier]  # noqa: B018 - raises ConfigError naming the catalog
    preflight.check_tiers(catalog, job.scripts)
    if job.holdout_rows is not None:
        dev, hold = list(job.rows), list(job.holdout_rows)
    else:
        dev, hold = split_rows(job.rows, job.holdout, job.seed)
    if len(dev) < 2:
        raise ConfigError(f"only {len(dev)} dev rows after the holdout split; use more rows or a smaller --holdout")
    work = paths.work_dir(job.work_dir)
    shared = job.storage if is_sql_url(job.storage) else None  # one URL for the study, cells, spend and cache
    program = job.task.build_program()
    preflight.check_program_settings(program)
    checks = AnswerChecks.of(getattr(job.task, "checks", None), f"{job.task.name}: checks").validate(
        [n for n, _ in program.named_predictors()], f"{job.task.name}: checks")
    runtime = Runtime(catalog, cache=CallCache(paths.cache_dir(work), url=shared),
                      ledger=Ledger(paths.ledger_file(work)), scripts=job.scripts, checks=checks)
    name = study_name(job.task, program, catalog, dev, hold, job.seed, job.holdout, checks)
    # --budget-usd holds for this compile (this study) across reruns, not per run.
    table = OutcomeTable(runtime, f"{job.task.source}|{program_fingerprint(program)}",
                         shared or paths.outcomes_dir(work),
                         job.budget_usd, budget_key=f"spent|{name}")
    return Session(job, dev, hold, runtime, program, [n for n, _ in program.named_predictors()], name,
                   job.storage or paths.study_storage(work), table, notes=list(job.notes))


def record(session: Session, progress) -> dict[str, list[RowResult]]:
    """The uniform baselines on every row: this records the full matrix of cells the search reads (for
    programs whose predictors all read the example's inputs), up to job.concurrency calls at once.
    Returns each tier's per-row results, dev rows then holdout rows."""
    job = session.job
    rows = session.dev + session.hold
    # Workers sharing a storage URL walk the rows in their own random order: each pays mostly for cells no
    # other worker has reached and reads the rest from the shared cache (the claim keeps any call single).
    order = random.Random().sample(rows, len(rows)) if is_sql_url(job.storage) else rows
    probe = preflight.TierProbe(job.catalog, task_source=str(job.task.source),
                                stop_when_down=not job.allow_incomplete)
    # A tier done recording lets its local model go: the three need not be resident at once (main job peak
    # RSS, benchmarks/README.md). The search reads the table; a call it still needs loads the model again.
    results = record_baselines(job.task, session.program, job.catalog, order, session.table,
                               session.predictors, job.concurrency, progress, probe,
                               done=lambda tier, remaining: session.runtime.release_local_models([tier], remaining))
    if probe.gap_ids and job.allow_incomplete:
        rows = leave_out_gaps(session, probe)
        results = {tier: [r for r in found if r.row_id not in probe.gap_ids] for tier, found in results.items()}
    else:
        probe.check_complete()  # a tier that missed rows for a passing reason stops here, before the search
    session.matrix_calls = session.table.calls_recorded()
    top = job.catalog.names[-1]
    raised, first = row_errors(results[top])
    if raised and 2 * raised >= len(rows):  # not the tiers' answers: the task's own code (or its data)
        raise ConfigError(f"task {job.task.source}: the program or its metric raised on {raised} of {len(rows)} "
                          f"rows even with every predictor on {top}; first, row {first.row_id}: {first.error}. "
                          "Every paid call is cached: fix it and rerun")
    at = {str(r["id"]): i for i, r in enumerate(rows)}
    return {tier: sorted(found, key=lambda r: at[r.row_id]) for tier, found in results.items()}


def leave_out_gaps(session: Session, probe) -> list[dict]:
    """--allow-incomplete: the rows some tier could not answer (an outage, timeouts) leave the dev set and the
    holdout, so no baseline or policy is scored on a fallback's answer. Fewer rows are another compile: its
    own study (study_name reads the rows), so a later complete rerun does not mix trials scored on these."""
    job, gaps = session.job, probe.gap_ids
    dev = [r for r in session.dev if str(r["id"]) not in gaps]
    hold = [r for r in session.hold if str(r["id"]) not in gaps]
    if not dev or not hold:
        raise ConfigError(f"--allow-incomplete: {len(gaps)} rows had gaps, which leaves "
                          f"{len(dev)} dev and {len(hold)} holdout rows; rerun when the tiers answer again")
    session.dev, session.hold = dev, hold
    session.study_name = study_name(job.task, session.program, job.catalog, dev, hold, job.seed, job.holdout)
    session.notes += [f"--allow-incomplete: {probe.gap_line(tier)}" for tier in probe.unavailable_rows] + [
        f"--allow-incomplete: {len(gaps)} rows left out of {len(gaps) + len(dev) + len(hold)} (dev and holdout), "
        "so every number here is on the rows every tier answered; a rerun without the flag fills them in"]
    return dev + hold


def search(session: Session, progress) -> Searched:
    """Fit input routers and learned confidence scorers on dev cells, then the Optuna search scored from
    the table over cascades, routers and routed cascades (optimizers.space.suggest_routed_policy)."""
    job = session.job
    names, top = job.catalog.names, job.catalog.flagship.name
    routers = fit_input_routers(job.task, session.table, session.dev, names, top, job.seed)
    scorers = fit_scorers(job.task, session.table, session.dev, names, routers, job.seed, session.runtime.checks)
    estimators = ["logprob_mean", "logprob_min"] + (["learned"] if scorers else []) + (
        ["committee"] if len(names) >= 3 else [])  # a committee needs two tiers below the top one
    study = open_study(session.study_name, session.storage, job.seed)

    def evaluate_dev(policy: Policy) -> tuple[float, float]:
        results = session.evaluate(policy, session.dev, scorers, routers)
        return float(np.mean([r.score for r in results])), float(np.mean([r.cost_usd for r in results]) * 1000)

    progress.stage("searching policies", total=job.trials, done=len(completed(study)))
    seeds = escalation_seeds(session.predictors, names, [e for e in estimators if e != "committee"])[: job.trials // 4]
    if "committee" in estimators:
        seeds += committee_seeds(session.predictors, names)
    suggest = suggest_policy
    if routers and set(routers) == set(session.predictors):
        costs = tier_costs(session.table, names)
        # Routers and routed cascades for one predictor at a time, the others on the top tier.
        seeds += [{**uniform_params([other for other in session.predictors if other != name], top), **params}
                  for name in session.predictors for params in routing_seeds(name, names, top, estimators)
                  if params[f"{name}:shape"] != "cascade"]

        def suggest(trial, predictors, tier_names, estimators_, max_rungs):
            return suggest_routed_policy(trial, predictors, tier_names, estimators_, max_rungs, costs)
    semantic = (job.semantic_settings or semantic_search.declared(job.task)) if job.semantic_cache else {}
    if semantic:  # the task opts predictors into the semantic cache: its threshold is searched too
        seeds += semantic_search.seeds(semantic, uniform_params(session.predictors, top))
        suggest = semantic_search.with_cache_choice(suggest, semantic)
    budget = session.table.budget
    ran = run_search_buffered(study, evaluate_dev, session.predictors, names, estimators, job.trials,
                              job.seed, on_trial=lambda s, t: progress.trial(s, t, budget), seeds=seeds,
                              suggest=suggest)
    return Searched(study, ran, scorers, estimators, routers)


def run_searched(session: Session, searched: Searched, policy: Policy, rows: list[dict]) -> list[RowResult]:
    """`policy` on `rows` from the outcome table, with the learned scorers and input routers the search fitted."""
    return session.evaluate(policy, rows, searched.scorers, searched.routers)


def tier_costs(table, tier_names: list[str]) -> dict[str, float]:
    """Each tier's mean recorded cost per call relative to the dearest tier's: what a route trades
    predicted quality against."""
    costs = {t: [c.outcome.cost_usd for c in table.cells.values() if c.tier == t] for t in tier_names}
    return relative_costs({t: float(np.mean(v)) if v else 0.0 for t, v in costs.items()})


def choose_point(session: Session, baseline_rows: dict, searched: Searched) -> Chosen:
    """The operating point among every complete trial (the baselines were enqueued first)."""
    objective, catalog = session.job.objective, session.job.catalog
    reference_name = objective.match_tier or catalog.flagship.name
    cands = [Candidate(str(t.number), Policy.from_dict(t.user_attrs["policy"]), t.values[0], t.values[1])
             for t in completed(searched.study)] + refined_by_others(searched.study, objective)
    ref_dev, _ = session.split(baseline_rows[reference_name])
    ref_scores = np.array([r.score for r in ref_dev])
    reference = Candidate(reference_name, Policy.uniform(session.predictors, reference_name),
                          float(ref_scores.mean()), float(np.mean([r.cost_usd for r in ref_dev]) * 1000), ref_scores)

    def dev_row_scores(candidate: Candidate) -> list[float]:
        return [r.score for r in run_searched(session, searched, candidate.policy, session.dev)]

    chosen, info = choose(cands, objective, reference, row_scores=dev_row_scores, tolerance=PARITY_TOLERANCE)
    chosen, info = refine_point(session, searched, chosen, info, reference)
    # A semantic threshold under which a dev row scores lower than the ladder's own answer is not kept.
    chosen.policy, info["semantic_notes"] = semantic_search.without_quality_loss(
        chosen.policy, lambda policy: run_searched(session, searched, policy, session.dev))
    job = session.job
    if job.semantic_cache:
        declared = job.semantic_settings or semantic_search.declared(job.task)
        info["semantic_notes"] += semantic_search.unchosen_notes(chosen.policy, declared, info["semantic_notes"])
    return Chosen(chosen, info, reference_name)


def refine_point(session: Session, searched: Searched, chosen: Candidate, info: dict,
                 reference: Candidate) -> tuple[Candidate, dict]:
    """Coordinate refinement of the chosen point (optimizers.refine), under the same objective and rule."""
    if not session.job.refine:
        return chosen, info
    names = session.job.catalog.names

    def evaluate(policy: Policy) -> tuple[np.ndarray, np.ndarray]:
        results = run_searched(session, searched, policy, session.dev)
        return np.array([r.score for r in results]), np.array([r.cost_usd for r in results])

    start = Candidate(chosen.key, chosen.policy, chosen.quality, chosen.cost_per_1k, *evaluate(chosen.policy))
    reference = Candidate(reference.key, reference.policy, reference.quality, reference.cost_per_1k, reference.scores,
                          evaluate(reference.policy)[1])

    def options(name: str):
        return alternatives(names, searched.estimators,
                            lambda tier, estimator: rung_confidences(session, searched, name, tier, estimator))

    folds = folds_of([str(r["id"]) for r in session.dev], session.job.seed)
    refined = refine(start, session.job.objective, reference, session.predictors, options, evaluate,
                     PARITY_TOLERANCE, folds)
    if refined.candidate is start:
        return chosen, info
    keep_refined(searched.study, session.job.objective, refined.candidate)
    return refined.candidate, {**info, **refined.info}


# Points refinement found after the search, kept on the study (not as trials: those count toward --trials), so that
# another objective choosing from the same study sees them too. Its own objective's rerun does not read them back:
# it chooses and refines as it did, and writes the same artifact.
REFINED_ATTR = "refined_points"


def _objective_key(objective) -> str:
    return json.dumps([objective.min_quality, objective.match_tier, objective.max_cost_per_1k])


def keep_refined(study, objective, candidate: Candidate) -> None:
    points = list(study.user_attrs.get(REFINED_ATTR, []))
    point = {"objective": _objective_key(objective), "policy": candidate.policy.to_dict(),
             "quality": float(candidate.quality), "cost_per_1k": float(candidate.cost_per_1k)}
    if point not in points:
        study.set_user_attr(REFINED_ATTR, points + [point])


def refined_by_others(study, objective) -> list[Candidate]:
    """The points other objectives' refinements kept on this study, as candidates."""
    mine = _objective_key(objective)
    return [Candidate(f"refined:{i}", Policy.from_dict(p["policy"]), p["quality"], p["cost_per_1k"])
            for i, p in enumerate(study.user_attrs.get(REFINED_ATTR, [])) if p["objective"] != mine]


def rung_confidences(session: Session, searched: Searched, name: str, tier: str, estimator: str) -> list:
    """The confidence `estimator` gives each recorded dev answer of predictor `name` on `tier`, read as the first
    answer of its request. (Adding its confidences after each cheaper answer spread the quantiles over more
    variants; the larger pool's selection optimism then turned down refinements that had held: full support
    set, seeds 0 and 1, 28.7% -> 15.7% and 30.4% -> 6.8% saved. Measured.)"""
    dev = {str(r["id"]) for r in session.dev}
    scorer, router = searched.scorers.get(name), searched.routers.get(name)
    out = []
    for cell in session.table.cells.values():
        if cell.predictor != name or cell.tier != tier or cell.row_id not in dev or not cell.outcome.ok:
            continue
        prior = router.predict_inputs(cell.inputs).get(tier) if router is not None else None
        out.append(score_of(cell.outcome, estimator, scorer, prior))
    return out


def fallback_rows(results: list[RowResult]) -> int:
    """Rows on which a tier outside the ladder answered (the deterministic fallback, rung -1, after every rung
    failed or was malformed): a one-tier baseline's quality counts those answers too."""
    return sum(any(s.rung == -1 and s.decision == "fallback" for s in r.steps) for r in results)


def check_holdout(session: Session, baseline_rows: dict, searched: Searched, chosen: Chosen) -> Checked:
    """The chosen point on the holdout rows, beside every uniform baseline, with the paired gap to the
    reference and its bootstrap CI."""
    seed = session.job.seed
    chosen_dev = run_searched(session, searched, chosen.candidate.policy, session.dev)
    chosen_hold = run_searched(session, searched, chosen.candidate.policy, session.hold)
    baselines = {}
    for tier, results in baseline_rows.items():
        d, h = session.split(results)
        baselines[tier] = {"dev": {**block([r.score for r in d], [r.cost_usd for r in d]),
                                   "fallback_rows": fallback_rows(d)},
                           "holdout": {**block([r.score for r in h], [r.cost_usd for r in h], with_ci=True, seed=seed),
                                       "fallback_rows": fallback_rows(h)}}
    notes = (session.notes + session.table.failure_notes(session.job.catalog.names)
             + list(chosen.info.get("semantic_notes", []))
             + few_rows_note(len(session.dev), len(session.hold)))
    for label, results in [*((f"{tier}-only", r) for tier, r in baseline_rows.items()),
                           ("the chosen policy", chosen_dev + chosen_hold)]:
        raised, first = row_errors(results)
        if raised:
            notes.append(f"under {label} the program or its metric raised on {raised} of {len(results)} rows "
                         f"(scored 0); first, row {first.row_id}: {first.error}")
    if not chosen.info["feasible"]:
        notes.append("no searched policy met the objective on dev; the closest one was chosen")
    _, ref_hold = session.split(baseline_rows[chosen.reference])  # the same holdout rows, in the same order
    gap = paired_gap([r.score for r in chosen_hold], [r.score for r in ref_hold], seed)
    notes.append(gap_note(gap, chosen.reference, chosen.info["noise"]))
    if "tolerance" in chosen.info:
        rule = (f"at {chosen.reference}-only quality means a paired tie on dev: the mean per-row difference minus "
                f"{SAFETY_Z:g} standard error(s) and the selection optimism "
                f"({chosen.info.get('optimism', 0.0):.3f}) is >= -{chosen.info['tolerance']:g}")
        if all(pp.ladder == [chosen.reference] for pp in chosen.candidate.policy.predictors.values()):
            more = "more labeled rows narrow the margin"
            unused = (session.job.rows_available or 0) - len(session.job.rows)
            if unused > 0:  # --limit sampled them: the rest are already labeled
                more += (f": this compile sampled {len(session.job.rows)} of {session.job.rows_available} rows; "
                         "without --limit it uses them all")
            notes.append(f"{rule}; no cheaper policy cleared that on these {len(session.dev)} dev rows, so "
                         f"{chosen.reference}-only stands ({more})")
        else:
            notes.append(f"{rule} (the chosen policy's margin: {chosen.info['margin']:.3f})")
    elif chosen.info.get("margin"):
        notes.append(f"chosen with a margin of {chosen.info['margin']:.3f} ({SAFETY_Z:g} standard error(s) of its "
                     f"per-row difference to {chosen.reference}-only on dev, plus the selection optimism "
                     f"{chosen.info.get('optimism', 0.0):.3f}) below its dev quality")
    return Checked(block([r.score for r in chosen_dev], [r.cost_usd for r in chosen_dev]),
                   block([r.score for r in chosen_hold], [r.cost_usd for r in chosen_hold], with_ci=True, seed=seed),
                   baselines, gap, notes, chosen_dev + chosen_hold)


def make_artifact(session: Session, baseline_rows: dict, searched: Searched, chosen: Chosen,
                  checked: Checked) -> Result:
    """The summary (`optimize --json`) and the artifact body that carries it."""
    job, table, study = session.job, session.table, searched.study
    budget = table.budget
    summary = build_summary(
        task=job.task.name, objective=job.objective.describe(chosen.reference), artifact=job.out,
        policy=chosen.candidate.policy.describe(), dev=checked.dev, holdout=checked.holdout,
        baselines=checked.baselines, reference=chosen.reference, paid_calls=budget.paid_calls,
        full_matrix_calls=session.matrix_calls,
        trials=len(completed(study)), spent_usd=budget.spent_usd, spent_usd_compile=budget.total_usd,
        trials_run_now=searched.ran, noise=chosen.info["noise"], holdout_vs_reference=checked.gap,
        study=study.study_name, storage=redact(job.storage or f"default ({paths.studies_db(job.work_dir)})"),
        cells_recorded=table.calls_recorded(), notes=checked.notes,
        **({"checks": session.runtime.checks.named()} if session.runtime.checks else {}),
    )
    body = artifact.build(
        task_source=job.task.source, program=job.task.build_program(), catalog=job.catalog,
        policy=chosen.candidate.policy, scorers=searched.scorers, routers=searched.routers, summary=summary,
        metrics={"dev": checked.dev, "holdout": checked.holdout},
        extra={"study": {"name": study.study_name, "storage": redact(job.storage or "default")},  # no password
               "dataset": job.dataset,
               **({"checks": session.runtime.checks.describe()} if session.runtime.checks else {}),
               "split": {"dev": [str(r["id"]) for r in session.dev],
                         "holdout": [str(r["id"]) for r in session.hold], "seed": job.seed},
               "evaluation": evaluation_record(session, checked.results, baseline_rows, study, chosen)})
    return Result(summary, body, chosen.candidate.policy, study, searched.scorers)


def run(job: Job, progress=None) -> Result:
    progress = progress or Silent()
    session = prepare(job)
    try:
        baseline_rows = record(session, progress)
        with ProgramOutput(paths.program_output_log(job.work_dir)) as output:
            searched = search(session, progress)
            chosen = choose_point(session, baseline_rows, searched)
            checked = check_holdout(session, baseline_rows, searched, chosen)
        note = output.note()
        if note:
            checked.notes.append(note)
        return make_artifact(session, baseline_rows, searched, chosen, checked)
    finally:
        session.runtime.close()


def _row_records(results, split_of) -> list[dict]:
    return [{"row_id": r.row_id, "segment": r.segment, "split": split_of[r.row_id], "score": r.score,
             "cost_usd": r.cost_usd, "latency_s": r.latency_s,
             "steps": [{"predictor": s.predictor, "call": s.call, "rung": s.rung, "tier": s.tier,
                        "confidence": s.confidence, "threshold": s.threshold, "decision": s.decision,
                        "cost_usd": s.cost_usd, "tokens": s.tokens, "error": s.error} for s in r.steps]}
            for r in results]


def evaluation_record(session: Session, chosen_results, baseline_rows, study, chosen: Chosen) -> dict:
    """What reports need, kept in the artifact: per-row results of the chosen policy and of each
    uniform baseline (with tier trails), per-cell correctness by tier, and every trial."""
    task, table = session.job.task, session.table
    split_of = {str(r["id"]): "dev" for r in session.dev} | {str(r["id"]): "holdout" for r in session.hold}
    by_id = {str(r["id"]): r for r in session.dev + session.hold}
    cells = []
    recorded = [cell for key, cell in sorted(table.cells.items()) if cell.row_id in by_id]
    verdicts = [task.predictor_correct(c.predictor, by_id[c.row_id], c.outcome.outputs) if c.outcome.ok else None
                for c in recorded]
    judged = {c.predictor for c, verdict in zip(recorded, verdicts) if verdict is not None}  # judged one by one
    top = session.job.catalog.names[-1]
    for cell, verdict in zip(recorded, verdicts):
        o, row_id, name, tier = cell.outcome, cell.row_id, cell.predictor, cell.tier
        correct = verdict if o.ok else (False if name in judged else None)  # a failure is wrong where judged
        top_cell = table.cell_on(cell, top)
        # whether it says what the top tier said: a per-predictor view where the task judges only the whole program
        agrees = same_answer(o.outputs, top_cell.outcome.outputs) if o.ok and top_cell and top_cell.outcome.ok else None
        cells.append({"row_id": row_id, "split": split_of[row_id], "segment": str(by_id[row_id].get("segment", "all")),
                      "predictor": name, "call": cell.call, "tier": tier, "ok": o.ok, "correct": correct,
                      "agrees_with_top": agrees,
                      "logprob_mean": o.scores.get("logprob_mean"), "logprob_min": o.scores.get("logprob_min"),
                      "cost_usd": o.cost_usd, "tokens": o.prompt_tokens + o.completion_tokens,
                      "latency_s": o.latency_s})
    trials = [{"number": t.number, "quality": t.values[0], "cost_per_1k": t.values[1],
               "policy": t.user_attrs.get("policy")} for t in completed(study)]
    chosen_key = chosen.candidate.key
    if chosen_key not in {str(t["number"]) for t in trials}:  # a refined point (optimizers.refine): listed after them
        number = max((t["number"] for t in trials), default=-1) + 1
        trials.append({"number": number, "quality": chosen.candidate.quality,
                       "cost_per_1k": chosen.candidate.cost_per_1k, "policy": chosen.candidate.policy.to_dict(),
                       "refined": True})
        chosen_key = str(number)
    return {"reference": chosen.reference, "chosen_trial": chosen_key, "tiers": session.job.catalog.names,
            "chosen": _row_records(chosen_results, split_of),
            "baselines": {tier: _row_records(results, split_of) for tier, results in baseline_rows.items()},
            "cells": cells, "trials": trials}


class Silent:
    """Progress that shows nothing (library use, tests)."""

    def stage(self, name, total, done=0):
        pass

    def advance(self, budget):
        pass

    def trial(self, study, trial, budget):
        pass
