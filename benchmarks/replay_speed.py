"""How long `replay fit` takes on a 1,000-query x 11-model table with 300 trials (median of 3 runs).

    PYTHONPATH=. python benchmarks/replay_speed.py [--queries 1000] [--models 11] [--trials 300] [--runs 3]

The table is random but structured: each query has a difficulty, each model a skill and a price
(pricier models are more skilled); a model is right with probability sigmoid(4 * (skill - difficulty)).
Right answers state the true number; wrong ones a nearby wrong number, sometimes with a hedge, so
agreement and the learned scorer carry real but imperfect signal. Each run uses a fresh SQLite storage
(the default kind), so nothing is resumed; the time covers loading, signals, scorers, search, holdout
check and writing the artifact.
"""

from __future__ import annotations

import argparse
import os
import csv
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from optimizers.replay import ReplayOptions, fit  # noqa: E402
from optimizers.select import Objective  # noqa: E402


def synthesize(path: Path, queries: int, models: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    skill = np.linspace(-1.0, 1.5, models)
    price = 0.0001 * 2.0 ** np.arange(models)  # USD per call, doubling per tier
    difficulty = rng.normal(0.2, 0.8, queries)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "input", "model", "output", "score", "cost_usd"])
        for i in range(queries):
            a, b, c = rng.integers(2, 500, 3)
            truth = int(a * b - c)
            question = f"A crate holds {a} boxes of {b} items; {c} items are removed. How many remain?"
            for j in range(models):
                right = rng.random() < 1 / (1 + np.exp(-4 * (skill[j] - difficulty[i])))
                if right:
                    output = f"{a} * {b} = {a * b}. {a * b} - {c} = {truth}.\n#### {truth}"
                else:
                    wrong = truth + int(rng.integers(1, 40)) * int(rng.choice([-1, 1]))
                    hedge = "Perhaps " if rng.random() < 0.5 else ""
                    output = f"{hedge}{a} * {b} = {a * b + int(rng.integers(-5, 6))}. So about {wrong}.\n#### {wrong}"
                cost = price[j] * (1 + 0.2 * rng.random())
                w.writerow([f"q{i:05d}", question, f"model-{j:02d}", output, int(right), f"{cost:.8f}"])
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--models", type=int, default=11)
    parser.add_argument("--trials", type=int, default=300)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="tierwise-speed-"))
    table = synthesize(tmp / "synthetic.csv", args.queries, args.models)
    times, cpu = [], []
    for run in range(args.runs):
        started, cpu_started = time.perf_counter(), time.process_time()
        fitted = fit(ReplayOptions(str(table), Objective(), holdout=0.3, trials=args.trials, seed=0,
                                   storage=f"sqlite:///{tmp / f'run{run}.db'}", out=str(tmp / f"policy{run}.json")))
        times.append(time.perf_counter() - started)
        cpu.append(time.process_time() - cpu_started)
        s = fitted.summary
        print(f"run {run + 1}: {times[-1]:.1f} s wall, {cpu[-1]:.1f} s CPU   trials {s['trials']}   holdout quality {s['holdout']['quality']:.3f} "
              f"at ${s['holdout']['cost_per_1k']:.4f}/1k vs {s['reference']} "
              f"{s['baselines'][s['reference']]['holdout']['quality']:.3f} at "
              f"${s['baselines'][s['reference']]['holdout']['cost_per_1k']:.4f}/1k   policy {s['policy']['answer']}")
    print(f"{args.queries} queries x {args.models} models, {args.trials} trials: median {statistics.median(times):.1f} s "
          f"over {args.runs} runs (min {min(times):.1f}, max {max(times):.1f}); median CPU {statistics.median(cpu):.1f} s; "
          f"load average at the end {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
