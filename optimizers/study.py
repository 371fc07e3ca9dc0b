"""Optuna study: storage (a URL; default a SQLite file under .tierwise/), resume, the search loop."""

from __future__ import annotations

import contextlib
import fcntl
import os
import warnings
from pathlib import Path
from typing import Callable

import optuna

from optimizers.space import suggest_policy, uniform_params
from pipelines.errors import ConfigError
from pipelines.policy import Policy
from pipelines.stores import is_sql_url, optuna_url

optuna.logging.set_verbosity(optuna.logging.WARNING)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def default_storage(create: bool = True) -> str:
    path = Path(".tierwise").resolve() / "studies.db"
    if create:
        path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


STUDY_KEPT = "every paid call (.tierwise/cache) and every recorded outcome (.tierwise/outcomes)"
STUDY_REBUILT = "the study is rebuilt by scoring its trials again from the recorded outcomes, with no call paid again"


def _sampler(seed: int) -> optuna.samplers.TPESampler:
    with warnings.catch_warnings():  # multivariate/group are "experimental" in optuna 5, and they work
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, n_startup_trials=20)


def _sqlite_path(url: str) -> Path | None:
    """The database file of a sqlite URL (None for other schemes or an in-memory database)."""
    if not url.startswith("sqlite:///"):
        return None
    rest = url[len("sqlite:///"):].split("?")[0]
    return Path(rest) if rest and rest != ":memory:" else None


def check_storage(storage: str | None) -> None:
    """Refuse, before anything is paid for, a storage URL that cannot work: an unparsable URL, a scheme
    with no database driver, a SQLite file in a folder that cannot be written, or that is not a file."""
    if storage is None:
        return
    import sqlalchemy
    from sqlalchemy.engine import make_url

    where = f"--storage {_shown(storage)!r}"
    try:
        url = make_url(optuna_url(storage))
        url.get_dialect().import_dbapi()  # the driver itself, not only its name
        url.port  # noqa: B018 - parsed only when read: a port that is not a number raises here
    except ValueError:
        raise ConfigError(f"{where}: the port is not a number") from None
    except sqlalchemy.exc.NoSuchModuleError:  # a subclass of ArgumentError: first
        raise ConfigError(f"{where}: unknown database scheme {storage.split(':')[0]!r}; use sqlite:///FILE or a "
                          "SQLAlchemy URL whose driver is installed") from None
    except sqlalchemy.exc.ArgumentError:
        raise ConfigError(f"{where}: not a database URL (expected e.g. sqlite:///path/studies.db)") from None
    except ImportError as e:
        raise ConfigError(f"{where}: the database driver is not installed ({e.name or e})") from None
    path = _sqlite_path(storage)
    if path is None:
        return
    if path.is_dir():
        raise ConfigError(f"{where}: {path} is a directory; name the database file")
    folder = next((p for p in [path.parent, *path.parent.parents] if p.exists()), Path("/"))
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"{where}: cannot create {path} ({folder} is not a writable folder)")
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        raise ConfigError(f"{where}: {path} cannot be read and written")
    if path.exists() and not _sqlite_intact(path):
        raise ConfigError(corrupted_store_message(path, "Optuna study database", STUDY_KEPT, STUDY_REBUILT))


def _sqlite_intact(path: Path) -> bool:
    """SQLite's own quick check, read-only: found before anything is paid for, not after the recording."""
    import sqlite3

    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            return db.execute("PRAGMA quick_check").fetchone()[0] == "ok"
    except sqlite3.DatabaseError:
        return False


@contextlib.contextmanager
def _storage_lock(url):
    """Serialize, across processes, what must not interleave on one SQLite file: creating its tables
    (two fresh runs raced into `table studies already exists`) and counting-then-writing trials (two
    resumes of one study overshot --trials)."""
    path = _sqlite_path(url) if isinstance(url, str) else None
    if path is None:
        with _server_lock(url):
            yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextlib.contextmanager
def _server_lock(url):
    """The same serialization for workers on other machines: a PostgreSQL advisory lock (dropped by the
    server if its holder dies)."""
    if not is_sql_url(url):
        yield
        return
    from pipelines.stores import PostgresStore

    store = PostgresStore(url, "calls", "study lock")
    try:
        with store.claim("optuna-study-writes"):
            yield
    finally:
        store.close()


def corrupted_store_message(path, what: str, kept: str, rebuilt: str) -> str:
    return (f"{path}: the {what} is corrupted or not a database. Kept: {kept}. To recover, move it aside "
            f"(mv {path} {path}.corrupt) and rerun: {rebuilt}")


def open_study(name: str, storage, seed: int) -> optuna.Study:
    """The named study in `storage` (a URL, default .tierwise/studies.db, or an Optuna storage object),
    created if new. Storage problems are one ConfigError naming the URL or file and how to recover."""
    import sqlalchemy

    url = storage if storage is not None else default_storage()
    if isinstance(url, str):
        check_storage(url)
    try:
        with _storage_lock(url):
            return optuna.create_study(
                study_name=name, storage=optuna_url(url) if isinstance(url, str) else url, load_if_exists=True,
                directions=["maximize", "minimize"],  # quality up, cost per 1k queries down
                sampler=_sampler(seed),
            )
    except sqlalchemy.exc.DatabaseError as e:
        path = _sqlite_path(url) if isinstance(url, str) else None
        if path is not None and ("not a database" in str(e) or "malformed" in str(e)):
            raise ConfigError(corrupted_store_message(path, "Optuna study database", STUDY_KEPT, STUDY_REBUILT)) \
                from None
        raise ConfigError(f"--storage {_shown(url)!r}: cannot open Optuna storage "
                          f"({str(e.orig or e).splitlines()[0]})") from None
    except (ValueError, ImportError, optuna.exceptions.StorageInternalError) as e:
        raise ConfigError(f"--storage {_shown(storage)!r}: cannot open Optuna storage ({e})") from None


def _shown(storage):
    """A storage URL as an error message may show it: without its password."""
    from pipelines.stores import redact

    return redact(storage) if isinstance(storage, str) else storage


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
    call, since those live in the cache and the outcome table. Returns the number of trials run now.

    Workers searching one study (a shared --storage) exchange trials at each batch: what the others
    wrote since this worker's last write joins its sampler's history."""
    scratch = open_study(study.study_name, optuna.storages.InMemoryStorage(), seed)
    stored = completed(study)
    scratch.add_trials(stored)
    seen, written = len(stored), 0  # trials of `study` this worker's scratch holds (writes are serialized)
    url = getattr(getattr(study._storage, "_backend", study._storage), "url", None)
    while len(completed(scratch)) < n_trials:
        before = len(completed(scratch))
        run_search(scratch, evaluate, predictors, tier_names, estimators, min(before + batch, n_trials), on_trial,
                   max_rungs, seeds, suggest)
        fresh = completed(scratch)[before:]
        if not fresh:  # Optuna refused every value of the batch (NaN): more batches would spin for ever
            raise ConfigError(f"study {study.study_name}: every trial of a batch failed (a quality or cost that "
                              "is not a finite number); check the task's metric")
        with _storage_lock(url):  # another process may be resuming the same study: never pass n_trials
            now = completed(study)
            room = max(n_trials - len(now), 0)
            write_trials(study, fresh[:room])
        others, seen = now[seen:], len(now) + min(room, len(fresh))
        written += min(room, len(fresh))
        if room <= len(fresh):
            break
        scratch.add_trials(others)
    return written


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
