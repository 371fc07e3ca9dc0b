"""Optimizer speed: trials per second once every outcome is recorded, and paid calls per trial.

With scripted fake tiers (tests/fakes.py: "small" right on simple rows, "big" always right) on the support task:

1. cold run: optimizers.live.optimize(...) in a fresh work dir -> paid calls (summary["paid_calls"]),
   trials, paid calls per trial, wall time.
2. warm rerun: optimize(...) again over the same work dir (disk cache + outcome table) with a fresh study
   -> every trial runs again, paid calls should be 0.
3. the search alone: set up what a compile has before its search stage (optimizers.stages.prepare and
   record: runtime over the warm cache,
   OutcomeTable, the uniform baselines evaluated so the table is in memory, fitted scorers), then time
   optimizers.study.run_search(study, evaluate_dev, ...) as optimizers.stages.search calls it, on a
   fresh study each repetition. Trials/s = trials / seconds; median of --reps (default 3). Three storages
   interleaved: SQLite written per trial, SQLite written in batches (run_search_buffered: what optimize()
   runs), and in-memory only, to show what storage costs.

Usage:  PYTHONPATH=. python benchmarks/optimizer_speed.py [--trials 40] [--cold-trials 30] [--reps 3] [--limit N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import optuna  # noqa: E402

from optimizers.live import OptimizeOptions, load_rows, optimize  # noqa: E402
from optimizers.outcomes import fit_scorers  # noqa: E402
from optimizers.stages import Job, Silent, prepare, record  # noqa: E402
from optimizers.study import run_search, run_search_buffered  # noqa: E402
from pipelines.policy import Policy  # noqa: E402
from pipelines.tasks import load_task  # noqa: E402
from pipelines.tiers import load_catalog  # noqa: E402
from tests.fakes import support_script, write_tiers  # noqa: E402


def options(tmp: Path, trials: int, storage: str, limit: int | None) -> OptimizeOptions:
    return OptimizeOptions(task="support", tiers=str(tmp / "tiers.toml"), scripts={"*": support_script()},
                           work_dir=tmp / "work", storage=storage, out=str(tmp / "out.json"), trials=trials,
                           limit=limit)


def search_setup(opts: OptimizeOptions):
    """What a compile holds when its search starts (optimizers.stages: prepare, record, the scorers), over
    the warm work dir."""
    task = load_task(opts.task)
    catalog = load_catalog(opts.tiers)
    job = Job(task=task, rows=load_rows(task, opts), catalog=catalog, holdout=opts.holdout, seed=opts.seed,
              work_dir=opts.work_dir, storage=opts.storage, scripts=opts.scripts)
    session = prepare(job)
    record(session, Silent())
    scorers = fit_scorers(task, session.table, session.dev, catalog.names, seed=opts.seed)
    estimators = ["logprob_mean", "logprob_min"] + (["learned"] if scorers else [])

    def evaluate_dev(policy: Policy) -> tuple[float, float]:
        results = session.evaluate(policy, session.dev, scorers)
        return float(np.mean([r.score for r in results])), float(np.mean([r.cost_usd for r in results]) * 1000)

    return (session.runtime, session.table.budget, evaluate_dev, session.predictors, catalog.names, estimators,
            len(session.dev))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=40, help="trials per timed search")
    ap.add_argument("--cold-trials", type=int, default=30, help="trials of the cold and warm optimize() runs")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--limit", type=int, default=None, help="use N dataset rows (default: all)")
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="tw-optspeed-"))
    write_tiers(tmp)
    db = tmp / "s.db"

    t0 = time.perf_counter()
    cold = optimize(options(tmp, args.cold_trials, f"sqlite:///{db}", args.limit))
    cold_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    warm = optimize(options(tmp, args.cold_trials, f"sqlite:///{tmp / 's2.db'}", args.limit))
    warm_s = time.perf_counter() - t0

    opts = options(tmp, args.trials, "", args.limit)
    runtime, budget, evaluate_dev, predictors, tier_names, estimators, n_dev = search_setup(opts)
    # "buffered" is what optimize() runs: the search in memory, trials persisted to SQLite every 25.
    rates = {"sqlite": [], "buffered": [], "memory": []}
    for rep in range(args.reps):
        order = list(rates)[rep % 3:] + list(rates)[:rep % 3]
        for kind in order:
            storage = None if kind == "memory" else f"sqlite:///{tmp / f'search-{kind}{rep}.db'}"
            study = optuna.create_study(  # as optimizers.study.open_study, a fresh study each time
                study_name=f"bench-{kind}-{rep}", storage=storage, directions=["maximize", "minimize"],
                sampler=optuna.samplers.TPESampler(seed=rep, multivariate=True, group=True, n_startup_trials=20))
            t0 = time.perf_counter()
            if kind == "buffered":
                ran = run_search_buffered(study, evaluate_dev, predictors, tier_names, estimators, args.trials, rep)
            else:
                ran = run_search(study, evaluate_dev, predictors, tier_names, estimators, args.trials)
            elapsed = time.perf_counter() - t0
            rates[kind].append(ran / elapsed)
            print(f"  rep {rep + 1} {kind}: {ran} trials in {elapsed:.1f}s = {ran / elapsed:.2f} trials/s",
                  file=sys.stderr, flush=True)
    runtime.close()

    print(f"\nOptimizer speed, support task, fake scripted tiers ({', '.join(tier_names)}), "
          f"{n_dev} dev rows, {len(predictors)} predictors")
    print(f"cold run : {cold['trials']} trials, {cold['paid_calls']} paid calls "
          f"(full matrix {cold['full_matrix_calls']}), {cold['paid_calls'] / cold['trials']:.1f} paid calls/trial, "
          f"{cold_s:.1f}s wall")
    print(f"warm rerun (same cache and outcome table, fresh study): {warm['trials']} trials, "
          f"{warm['paid_calls']} paid calls, {warm['paid_calls'] / warm['trials']:.1f} paid calls/trial, {warm_s:.1f}s wall")
    print(f"search alone ({args.trials} trials per rep, every outcome recorded; paid calls during search: "
          f"{budget.paid_calls}):")
    for kind, xs in rates.items():
        print(f"  {kind:6} storage: trials/s median {statistics.median(xs):.2f} of {args.reps} "
              f"({', '.join(f'{x:.2f}' for x in xs)})")
    base = statistics.median(rates["sqlite"])
    print(f"  ratio to per-trial sqlite: buffered (what optimize() runs) "
          f"{statistics.median(rates['buffered']) / base:.2f}x, memory {statistics.median(rates['memory']) / base:.2f}x")


if __name__ == "__main__":
    main()
