"""Optuna study: storage (a URL; default a SQLite file under .tierwise/), resume, the search loop."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import warnings

import optuna

from optimizers.space import suggest_policy, uniform_params
from pipelines.errors import ConfigError
from pipelines.policy import Policy

optuna.logging.set_verbosity(optuna.logging.WARNING)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def default_storage() -> str:
    path = Path(".tierwise").resolve() / "studies.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def _sampler(seed: int) -> optuna.samplers.TPESampler:
    with warnings.catch_warnings():  # multivariate/group are "experimental" in optuna 5, and they work
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, n_startup_trials=20)


def open_study(name: str, storage: str | None, seed: int) -> optuna.Study:
    try:
        return optuna.create_study(
            study_name=name, storage=storage or default_storage(), load_if_exists=True,
            directions=["maximize", "minimize"],  # quality up, cost per 1k queries down
            sampler=_sampler(seed),
        )
    except (ValueError, ImportError, optuna.exceptions.StorageInternalError) as e:
        raise ConfigError(f"--storage {storage!r}: cannot open Optuna storage ({e})") from None


def completed(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]


def run_search(study: optuna.Study, evaluate: Callable[[Policy], tuple[float, float]], predictors: list[str],
               tier_names: list[str], estimators: list[str], n_trials: int,
               on_trial: Callable | None = None, max_rungs: int = 3, seeds: list[dict] = (),
               suggest: Callable = suggest_policy) -> int:
    """Run trials until the study holds `n_trials` complete ones (a resumed study continues where it
    stopped). Uniform single-tier policies are enqueued first so the front always holds the
    baselines, then `seeds` (warm starts, as Optuna params). `suggest(trial, predictors, tier_names,
    estimators, max_rungs)` draws a policy (the space: optimizers.space). Returns the number of trials run now."""
    done = completed(study)
    if not done:
        for params in [uniform_params(predictors, tier) for tier in tier_names] + list(seeds):
            study.enqueue_trial(params, skip_if_exists=True)
    remaining = max(n_trials - len(done), 0)

    def objective(trial):
        policy = suggest(trial, predictors, tier_names, estimators, max_rungs)
        quality, cost_per_1k = evaluate(policy)
        trial.set_user_attr("policy", policy.to_dict())
        return quality, cost_per_1k

    callbacks = [lambda s, t: on_trial(s, t)] if on_trial else []
    if remaining:
        study.optimize(objective, n_trials=remaining, callbacks=callbacks, catch=())
    return remaining


def run_search_buffered(study: optuna.Study, evaluate: Callable[[Policy], tuple[float, float]],
                        predictors: list[str], tier_names: list[str], estimators: list[str], n_trials: int,
                        seed: int, on_trial: Callable | None = None, max_rungs: int = 3, batch: int = 25,
                        seeds: list[dict] = (), suggest: Callable = suggest_policy) -> int:
    """run_search in memory, persisting to `study` every `batch` trials in one transaction.

    Scoring a trial from recorded outcomes takes milliseconds; SQLite's commits per trial (about a
    dozen) would otherwise dominate. A killed run loses at most one batch of trials: never a paid
    call, since those live in the cache and the outcome table. Returns the number of trials run now."""
    scratch = open_study(study.study_name, optuna.storages.InMemoryStorage(), seed)
    stored = completed(study)
    scratch.add_trials(stored)
    target = len(stored)
    while target < n_trials:
        target = min(target + batch, n_trials)
        before = len(completed(scratch))
        run_search(scratch, evaluate, predictors, tier_names, estimators, target, on_trial, max_rungs, seeds, suggest)
        write_trials(study, completed(scratch)[before:])
    return max(n_trials - len(stored), 0)


def write_trials(study: optuna.Study, trials: list) -> None:
    """Persist finished trials. On a relational storage (the default SQLite file) all of them go in one
    transaction: Optuna's add_trials opens and commits one per trial, which costs more than the whole
    in-memory search. Other storages, or an Optuna without these internals, take add_trials."""
    if not trials:
        return
    backend = getattr(study._storage, "_backend", study._storage)
    try:
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session

        batched = isinstance(backend, optuna.storages.RDBStorage) and hasattr(backend, "_get_prepared_new_trial")
    except (ImportError, AttributeError):
        batched = False
    if not batched:
        study.add_trials(trials)
        return
    for t in trials:
        t._validate()
    with _create_scoped_session(backend.scoped_session) as session:  # rolls back as a whole on failure
        models.StudyModel.find_or_raise_by_id(study._study_id, session, for_update=True)
        for t in trials:
            backend._get_prepared_new_trial(study._study_id, t, session)
