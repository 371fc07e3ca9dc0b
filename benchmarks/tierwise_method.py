"""tierwise in the routing benchmark, used as a user would: `replay fit` on the training half, `replay apply`
of the written artifact on the test half. Only the public entry points (ReplayOptions, fit, apply) and the
artifact are touched, so the same code measures today's optimizer and a changed one.

One fit per quality floor (the objective's --min-quality); all fits of a split share one SQLite study, so
the search runs once and later floors only re-choose. The floors: the two targets (95% of the best model's
training quality; parity, within 1 point) plus extra floors for the curve (fractions of the way from the
cheapest model's training quality to the best's), each applied to the test half to give one curve point.
"""

from __future__ import annotations

import time
from pathlib import Path

from benchmarks.bench_tables import Table, write_long
from optimizers.replay import ReplayOptions, apply, fit
from optimizers.select import Objective


def run(train: Table, test: Table, floors: dict[str, float], strong_model: str, trials: int, seed: int,
        tmp: Path, safety_z: float | None = None, plugins: tuple[str, ...] = ()) -> dict[str, dict]:
    """{floor name: {"point": (cost per 1k, share calling strong_model, quality) on test, "policy", "fit_s"}}."""
    train_csv, test_csv = write_long(train, tmp / "train.csv"), write_long(test, tmp / "test.csv")
    storage = f"sqlite:///{tmp / 'studies.db'}"
    out = {}
    for name, floor in floors.items():
        artifact = tmp / f"policy-{name}.json"
        started = time.perf_counter()
        options = ReplayOptions(str(train_csv), Objective(min_quality=min(max(floor, 0.0), 1.0)), holdout=0.0,
                                trials=trials, seed=seed, storage=storage, out=str(artifact), plugins=plugins)
        if safety_z is not None:
            options.safety_z = safety_z
        fitted = fit(options)
        fit_s = time.perf_counter() - started
        decisions = apply(str(artifact), str(test_csv), signals=plugins).decisions
        n = len(decisions)
        point = (sum(d.cost_usd for d in decisions) / n * 1000,
                 sum(strong_model in d.models_called for d in decisions) / n,
                 sum(d.score for d in decisions) / n)
        out[name] = {"point": point, "policy": fitted.summary["policy"], "fit_s": fit_s,
                     "train_quality": fitted.summary["dev"]["quality"]}
    return out
