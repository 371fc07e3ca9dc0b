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
               on_trial: Callable | None = None, max_rungs: int = 3) -> int:
    """Run trials until the study holds `n_trials` complete ones (a resumed study continues where it
    stopped). Uniform single-tier policies are enqueued first so the front always holds the
    baselines. Returns the number of trials run now."""
    done = completed(study)
    if not done:
        for tier in tier_names:
            study.enqueue_trial(uniform_params(predictors, tier), skip_if_exists=True)
    remaining = max(n_trials - len(done), 0)

    def objective(trial):
        policy = suggest_policy(trial, predictors, tier_names, estimators, max_rungs)
        quality, cost_per_1k = evaluate(policy)
        trial.set_user_attr("policy", policy.to_dict())
        return quality, cost_per_1k

    callbacks = [lambda s, t: on_trial(s, t)] if on_trial else []
    if remaining:
        study.optimize(objective, n_trials=remaining, callbacks=callbacks, catch=())
    return remaining
