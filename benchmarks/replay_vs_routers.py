"""tierwise replay against published routing baselines on a recorded outcome table.

    PYTHONPATH=. python benchmarks/replay_vs_routers.py [TABLE ...] [--trials 300] [--seed 0]

Each table is split in half by id (optimizers.summary.split_rows): every method fits on one half and is
reported on the other. Operating points are chosen on the training half for the issue's target,
quality >= 95% of the best single model's training quality, at the lowest training cost.

Methods: each single model; random mixing (RouterBench's zero router: the straight line between
single models, read at tierwise's cost); a FrugalGPT-style two-model cascade (cheapest -> best model,
logistic scorer over TF-IDF of question + cheap answer, threshold chosen on train); a k-nearest-neighbour
router (TF-IDF over inputs, cosine, k=10, route to argmax of predicted score - lambda * cost); the oracle
(cheapest model that is right); tierwise (optimizers.replay.fit on the training half: the 95% target with
its default margin, the one-sided 95% lower confidence bound; the same target with the earlier 1-standard-
error margin, for comparison; and its default objective).

Curves, measured on the test half over each method's parameter sweep (tierwise: every trial of its
study), plus the cheapest single model (any router can send everything there). "weak" is the cheapest
model, "strong" the best single model (on train); hulls are the non-decreasing upper convex hulls of a
method's points (any two operating points can be mixed at random):
- AIQ (RouterBench): mean over cost in [weak's cost, strong's cost] of the (cost, quality) hull.
- APGR$ (cost axis): the same average of (hull quality - weak quality) / (strong quality - weak quality);
  equals (AIQ - q_weak) / (q_strong - q_weak).
- APGR (RouteLLM's definition, call-share axis): the average of that performance gap recovered over the
  share of queries that call the strong model, from 0 to 1, on the (share, quality) hull. RouteLLM
  reads its raw curve at 10 share levels; the hull here is an upper bound of that. Random mixing of
  weak and strong scores 0.5 on both axes; the two differ when the strong model is not the only cost
  (a cascade pays the weak model on every query).
- calls: share of test queries on which the operating point called the strong model.
- saving@100% / saving@95%: cost reduction vs the best single model at the lowest hull cost reaching
  its quality / 95% of it ("-" when the hull never gets there).

A table without cost_usd or token counts (MT-Bench keeps only judge scores) is priced from estimates,
see with_estimated_costs; the call-share APGR does not depend on them.
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from optimizers.replay import PREDICTOR, ReplayOptions, fit, split_ids  # noqa: E402
from optimizers.replay_eval import (Signals, agreement_confidence, learned_confidence,  # noqa: E402
                                    run_ladder_vectorized)
from optimizers.replay_table import OutcomeMatrix, load_outcomes  # noqa: E402
from optimizers.select import Objective  # noqa: E402
from optimizers.study import completed  # noqa: E402
from pipelines.policy import Policy  # noqa: E402

DEFAULT_TABLE = REPO.parent / "shared" / "data" / "routellm" / "gsm8k_outcomes.csv"
TARGET = 0.95
ASSUMED_COMPLETION_TOKENS = 400  # for tables without answers or token counts (MT-Bench answers run paragraphs)


# --- curve arithmetic ----------------------------------------------------------------------------


def hull(points) -> np.ndarray:
    """Non-decreasing upper convex hull of (x, quality) points (x: cost or share of strong calls), as
    vertices sorted by x."""
    top: dict[float, float] = {}  # only the best quality at each x can be on the upper hull
    for x, q in points:
        top[float(x)] = max(float(q), top.get(float(x), -np.inf))
    pts = sorted(top.items())
    upper: list[tuple[float, float]] = []
    for p in pts:
        while len(upper) >= 2 and _cross(upper[-2], upper[-1], p) >= 0:
            upper.pop()
        upper.append(p)
    best = max(range(len(upper)), key=lambda i: (upper[i][1], -upper[i][0]))
    return np.array(upper[:best + 1])


def _cross(o, a, b) -> float:
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def hull_at(h: np.ndarray, cost) -> np.ndarray:
    return np.interp(cost, h[:, 0], h[:, 1], left=np.nan, right=h[-1, 1])


def cost_to_reach(h: np.ndarray, quality: float) -> float | None:
    if h[-1, 1] < quality - 1e-12:
        return None
    i = int(np.argmax(h[:, 1] >= quality - 1e-12))
    if i == 0:
        return float(h[0, 0])
    (c0, q0), (c1, q1) = h[i - 1], h[i]
    return float(c0 + (quality - q0) * (c1 - c0) / (q1 - q0))


def aiq(h: np.ndarray, c_min: float, c_max: float) -> float:
    grid = np.linspace(c_min, c_max, 2001)
    values = hull_at(h, grid)
    return float(np.nanmean(values)) if np.isfinite(values).all() else float("nan")


# --- baselines -----------------------------------------------------------------------------------


def choose_on_train(train_points: list[tuple[float, float, float]], target: float) -> int:
    """Index of the cheapest (cost, share, quality) setting meeting the target on train (the best
    quality when none does)."""
    ok = [i for i, (c, _, q) in enumerate(train_points) if q >= target - 1e-12]
    if ok:
        return min(ok, key=lambda i: train_points[i][0])
    return max(range(len(train_points)), key=lambda i: train_points[i][2])


class FrugalCascade:
    """Cheapest model first; a TF-IDF logistic scorer on (question, cheap answer) decides escalation."""

    def __init__(self, cheap: int, strong: int):
        self.cheap, self.strong = cheap, strong

    def fit(self, m: OutcomeMatrix):
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        self.vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
        X = self.vec.fit_transform(self._texts(m))
        lo, hi = m.score.min(), m.score.max()
        y = m.score[:, self.cheap] - lo >= 0.5 * (hi - lo)  # "right": the upper half of the score range
        self.clf = LogisticRegression(C=1.0, max_iter=2000).fit(X, y) if 0 < y.sum() < len(y) else None
        return self

    def cross_fitted(self, m: OutcomeMatrix, seed: int, folds: int = 5) -> np.ndarray:
        """Out-of-fold confidences on the training half: in-sample TF-IDF scores are near-perfect
        and would pick a threshold that fails on new queries."""
        fold = np.random.default_rng(seed).integers(0, folds, m.n)
        conf = np.empty(m.n)
        for k in range(folds):
            part = FrugalCascade(self.cheap, self.strong).fit(m.subset(np.flatnonzero(fold != k)))
            conf[fold == k] = part.confidence(m.subset(np.flatnonzero(fold == k)))
        return conf

    def _texts(self, m):
        return [f"{q} || {row[self.cheap]}" for q, row in zip(m.inputs, m.outputs)]

    def confidence(self, m) -> np.ndarray:
        if self.clf is None:
            return np.ones(m.n)
        return self.clf.predict_proba(self.vec.transform(self._texts(m)))[:, 1]

    def run(self, m, conf, threshold) -> tuple[float, float, float]:
        accept = conf >= threshold
        score = np.where(accept, m.score[:, self.cheap], m.score[:, self.strong])
        cost = m.cost[:, self.cheap] + np.where(accept, 0.0, m.cost[:, self.strong])
        return float(cost.mean() * 1000), float(1 - accept.mean()), float(score.mean())


class KnnRouter:
    """Predicts each model's score on a query as the mean over its k nearest training queries."""

    def __init__(self, k: int = 10):
        self.k = k

    def fit(self, m: OutcomeMatrix):
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.vec = TfidfVectorizer(sublinear_tf=True)
        self.X = self.vec.fit_transform(m.inputs)
        self.score = m.score
        self.scale = float(m.cost.mean(axis=0).max()) or 1.0
        return self

    def predicted(self, m: OutcomeMatrix, exclude_self: bool) -> np.ndarray:
        sims = (self.vec.transform(m.inputs) @ self.X.T).toarray()
        if exclude_self:
            np.fill_diagonal(sims, -np.inf)
        nearest = np.argsort(-sims, axis=1)[:, :self.k]
        return self.score[nearest].mean(axis=1)  # (n, M)

    def run(self, m, predicted, lam, strong) -> tuple[float, float, float]:
        choice = np.argmax(predicted - lam * m.cost / self.scale, axis=1)
        rows = np.arange(m.n)
        return (float(m.cost[rows, choice].mean() * 1000), float((choice == strong).mean()),
                float(m.score[rows, choice].mean()))


# --- the benchmark -------------------------------------------------------------------------------


def write_table(m: OutcomeMatrix, path: Path) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "input", "model", "output", "score", "cost_usd", "segment"])
        for i, rid in enumerate(m.ids):
            for j, model in enumerate(m.models):
                w.writerow([rid, m.inputs[i], model, m.outputs[i][j], repr(float(m.score[i, j])),
                            repr(float(m.cost[i, j])), m.segments[i]])
    return path


def with_estimated_costs(table: Path, tmp: Path) -> tuple[Path, str | None]:
    """A CSV table that records neither cost_usd nor token counts, copied with an estimated cost per call:
    len(input) / 4 prompt tokens and ASSUMED_COMPLETION_TOKENS completion tokens at the model's price-map
    price (looked up under together_ai when the bare name has none, as the GSM8K table's Mixtral was
    priced). Other tables are returned as they are, with no note."""
    from pipelines.tiers import _price_map

    if table.suffix.lower() != ".csv":
        return table, None
    with table.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows or {"cost_usd", "prompt_tokens"} & set(rows[0]):
        return table, None
    prices = {m: _price_map(m) or _price_map(f"together_ai/{m}") for m in {r["model"] for r in rows}}
    unknown = sorted(m for m, price in prices.items() if price is None)
    if unknown:
        raise SystemExit(f"{table}: no costs recorded and no price known for {unknown}")
    for r in rows:
        price_in, price_out = prices[r["model"]]
        prompt_tokens = len(r.get("input") or "") / 4
        r["cost_usd"] = repr((prompt_tokens * price_in + ASSUMED_COMPLETION_TOKENS * price_out) / 1e6)
    out = tmp / f"{table.stem}.priced.csv"
    with out.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    note = (f"costs estimated (the table records none): len(input)/4 prompt + {ASSUMED_COMPLETION_TOKENS} "
            "completion tokens per call at price-map prices; APGR (call share) does not depend on them")
    return out, note


def benchmark(table: Path, trials: int, seed: int) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="tierwise-bench-"))
    priced, cost_note = with_estimated_costs(table, tmp)
    full = load_outcomes(priced)
    notes = [cost_note] if cost_note else []
    top = float(full.score.max())
    if top > 1:  # judge scores (MT-Bench: 1-10); quality floors are fractions, and ratios survive the division
        full.score = full.score / top
        notes.append(f"scores divided by {top:g} (the table's highest) so that quality lies in [0, 1]")
    train_idx, test_idx = split_ids(full, 0.5, seed)
    train, test = full.subset(train_idx), full.subset(test_idx)
    M = len(full.models)
    train_q, test_q = train.score.mean(axis=0), test.score.mean(axis=0)
    test_c = test.cost.mean(axis=0) * 1000
    best = int(np.argmax(train_q))  # best single model, judged on train
    cheapest = 0  # models are ordered by average cost
    target = TARGET * train_q[best]
    c_min, c_max = test_c[cheapest], test_c[best]
    anchor = [(test_c[cheapest], 0.0, test_q[cheapest])]
    rows: dict[str, dict] = {}

    def add(name, point, sweep):
        """point and sweep: (cost per 1k, share of strong calls, quality) on the test half."""
        points = list(sweep) + anchor
        by_cost, by_share = hull([(c, q) for c, _, q in points]), hull([(sh, q) for _, sh, q in points])
        rows[name] = {"cost_per_1k": point[0], "calls": point[1], "quality": point[2], "hull": by_cost,
                      "aiq": aiq(by_cost, c_min, c_max), "aiq_calls": aiq(by_share, 0.0, 1.0)}

    singles = [(test_c[j], float(j == best), test_q[j]) for j in range(M)]
    for j, model in enumerate(full.models):
        add(model, singles[j], [singles[j]])

    # tierwise: fit on the training half only (holdout 0), then evaluate on the test half
    train_path = write_table(train, tmp / "train.csv")
    storage = f"sqlite:///{tmp / 'studies.db'}"
    started = time.perf_counter()
    fitted = fit(ReplayOptions(str(train_path), Objective(min_quality=target), holdout=0.0, trials=trials,
                               seed=seed, storage=storage, out=str(tmp / "policy.json")))
    fit_s = time.perf_counter() - started
    one_se = fit(ReplayOptions(str(train_path), Objective(min_quality=target), holdout=0.0, trials=trials,
                               seed=seed, storage=storage, out=str(tmp / "policy-1se.json"), safety_z=1.0))
    default = fit(ReplayOptions(str(train_path), Objective(), holdout=0.0, trials=trials, seed=seed,
                                storage=storage, out=str(tmp / "policy-default.json")))
    signals = Signals.of(test)
    index = {mdl: j for j, mdl in enumerate(full.models)}
    conf = {"learned": learned_confidence(fitted.scorer, signals), "agreement": agreement_confidence(signals)}

    def on_test(policy: Policy) -> tuple[float, float, float]:
        pp = policy[PREDICTOR]
        run = run_ladder_vectorized(pp, index, conf, test.score, test.cost)
        ladder = [index[t] for t in pp.ladder]
        calls = float((run.final_rung >= ladder.index(best)).mean()) if best in ladder else 0.0
        return float(run.cost.mean() * 1000), calls, float(run.score.mean())

    front = [on_test(Policy.from_dict(t.user_attrs["policy"])) for t in completed(fitted.study)]
    add("tierwise (95% target)", on_test(fitted.policy), front)
    add("tierwise (95% target, 1-SE margin)", on_test(one_se.policy), front)
    add("tierwise (default objective)", on_test(default.policy), front)
    tier_cost = rows["tierwise (95% target)"]["cost_per_1k"]

    zero = hull([(c, q) for c, _, q in singles])
    share_at = {c: sh for c, sh, _ in singles}  # hull vertices are single models
    zero_calls = float(np.interp(tier_cost, zero[:, 0], [share_at[c] for c in zero[:, 0]]))
    add("random mixing (zero router)", (tier_cost, zero_calls, float(hull_at(zero, tier_cost))), singles)

    if M >= 2 and best != cheapest:
        frugal = FrugalCascade(cheapest, best).fit(train)
        train_conf, test_conf = frugal.cross_fitted(train, seed), frugal.confidence(test)
        thresholds = np.linspace(0, 1.0001, 201)
        pick = choose_on_train([frugal.run(train, train_conf, t) for t in thresholds], target)
        add("FrugalGPT-style cascade", frugal.run(test, test_conf, thresholds[pick]),
            [frugal.run(test, test_conf, t) for t in thresholds])

    knn = KnnRouter().fit(train)
    lams = np.concatenate([[0.0], np.logspace(-3, 1, 60)])
    pred_train, pred_test = knn.predicted(train, exclude_self=True), knn.predicted(test, exclude_self=False)
    pick = choose_on_train([knn.run(train, pred_train, lam, best) for lam in lams], target)
    add("kNN router (TF-IDF, k=10)", knn.run(test, pred_test, lams[pick], best),
        [knn.run(test, pred_test, lam, best) for lam in lams])

    right = test.score >= test.score.max(axis=1, keepdims=True) - 1e-12
    oracle = np.argmax(right, axis=1)  # cheapest model with the best score on that query
    r = np.arange(test.n)
    point = (float(test.cost[r, oracle].mean() * 1000), float((oracle == best).mean()),
             float(test.score[r, oracle].mean()))
    add("oracle (cheapest right model)", point, [point])

    q_weak, q_strong, c_strong = test_q[cheapest], test_q[best], test_c[best]
    gap = q_strong - q_weak
    for row in rows.values():
        row["apgr"] = (row["aiq"] - q_weak) / gap if gap > 0 else float("nan")
        row["apgr_calls"] = (row["aiq_calls"] - q_weak) / gap if gap > 0 else float("nan")
        for level in (1.0, TARGET):
            c = cost_to_reach(row["hull"], level * q_strong)
            row[f"saving@{level:.0%}"] = None if c is None else 100 * (1 - c / c_strong)
    return {"table": str(table), "train": train.n, "test": test.n, "models": full.models, "best": full.models[best],
            "target": target, "rows": rows, "fit_seconds": fit_s, "policy": fitted.summary["policy"],
            "one_se_policy": one_se.summary["policy"], "default_policy": default.summary["policy"],
            "q_strong": q_strong, "c_strong": c_strong, "notes": notes}


def render(result: dict) -> str:
    best = result["best"]
    lines = [f"table: {result['table']}   train ids {result['train']}   test ids {result['test']}",
             f"best single model (train): {best}; operating points target train quality >= "
             f"{result['target']:.4f} (95% of it)",
             f"tierwise policy (95% target): {result['policy'][PREDICTOR]}",
             f"tierwise policy (95% target, 1-SE margin): {result['one_se_policy'][PREDICTOR]}",
             f"tierwise policy (default objective): {result['default_policy'][PREDICTOR]}",
             f"tierwise fit time: {result['fit_seconds']:.1f} s", *result["notes"],
             "", f"{'method':<38} {'quality':>8} {'cost/1k':>9} {'%best':>6} {'saving':>7} {'calls':>6} "
             f"{'sav@100%':>9} {'sav@95%':>8} {'AIQ':>7} {'APGR$':>6} {'APGR':>6}"]
    fmt = lambda x: "-" if x is None else f"{x:.1f}%"  # noqa: E731
    for name, r in result["rows"].items():
        rel = r["quality"] / result["q_strong"]
        saving = 100 * (1 - r["cost_per_1k"] / result["c_strong"])
        lines.append(f"{name:<38} {r['quality']:>8.4f} {r['cost_per_1k']:>9.4f} {rel:>6.1%} {saving:>6.1f}% "
                     f"{r['calls']:>6.1%} {fmt(r['saving@100%']):>9} {fmt(r['saving@95%']):>8} {r['aiq']:>7.4f} "
                     f"{r['apgr']:>6.3f} {r['apgr_calls']:>6.3f}")
    t = result["rows"]["tierwise (95% target)"]
    rel, saving = t["quality"] / result["q_strong"], 100 * (1 - t["cost_per_1k"] / result["c_strong"])
    met = rel >= 0.95 and saving >= 35
    lines += ["", f"issue target (>= 95% of {best}'s test quality at >= 35% lower cost): "
                  f"{'MET' if met else 'NOT MET'} — {rel:.1%} of its quality at {saving:.1f}% lower cost"]
    for name, r in result["rows"].items():
        if name.startswith("tierwise"):
            continue
        verdict = "higher" if t["aiq"] > r["aiq"] + 1e-9 else "lower" if t["aiq"] < r["aiq"] - 1e-9 else "equal"
        lines.append(f"  vs {name:<36} AIQ {t['aiq']:.4f} vs {r['aiq']:.4f} ({verdict} for tierwise), "
                     f"APGR {t['apgr_calls']:.3f} vs {r['apgr_calls']:.3f}; "
                     f"operating point {t['quality']:.4f}@${t['cost_per_1k']:.3f} vs "
                     f"{r['quality']:.4f}@${r['cost_per_1k']:.3f}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tables", nargs="*", type=Path, default=[DEFAULT_TABLE])
    parser.add_argument("--trials", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for table in args.tables:
        print(render(benchmark(table, args.trials, args.seed)))
        print()


if __name__ == "__main__":
    main()
