"""Cost-quality curve arithmetic of the routing benchmark: hulls, AIQ, APGR, operating points.

A point is (cost per 1k queries, share of queries that called the strong model, quality). "weak" is the
cheapest model, "strong" the best single model on the training half. Hulls are the non-decreasing upper
convex hulls of a method's points: any two operating points can be mixed at random, so every point under
the hull is reachable.

- AIQ (RouterBench): the mean of the (cost, quality) hull over cost in [weak's cost, strong's cost].
- APGR$ (cost axis): (AIQ - q_weak) / (q_strong - q_weak), the performance gap recovered, averaged over cost.
- APGR (RouteLLM's definition): the same average over the share of strong-model calls, 0 to 1, on the
  (share, quality) hull. Random mixing of weak and strong scores 0.5 on both.
- Operating points are chosen on the training half: the cheapest setting whose training quality reaches
  the target (95% of the best model's training quality, or parity: within PARITY_POINTS of it); the
  setting's test-half point is what is reported. A miss: test quality below the same target computed from
  the best model's test quality.
"""

from __future__ import annotations

import numpy as np

PARITY_POINTS = 0.01  # "within 1 point": 0.01 on the [0, 1] quality scale
TOL = 1e-12


def target_quality(kind: str, q_best: float) -> float:
    """The quality a target asks for, given the best single model's quality (train or test)."""
    if kind == "95%":
        return 0.95 * q_best
    if kind == "parity":
        return q_best - PARITY_POINTS
    raise ValueError(f"unknown target {kind!r}")


TARGETS = ("95%", "parity")


def hull(points) -> np.ndarray:
    """Non-decreasing upper convex hull of (x, quality) points, as vertices sorted by x."""
    top: dict[float, float] = {}  # only the best quality at each x can be on the upper hull
    for x, q in points:
        top[float(x)] = max(float(q), top.get(float(x), -np.inf))
    upper: list[tuple[float, float]] = []
    for p in sorted(top.items()):
        while len(upper) >= 2 and _cross(upper[-2], upper[-1], p) >= 0:
            upper.pop()
        upper.append(p)
    best = max(range(len(upper)), key=lambda i: (upper[i][1], -upper[i][0]))
    return np.array(upper[:best + 1])


def _cross(o, a, b) -> float:
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def hull_at(h: np.ndarray, x) -> np.ndarray:
    """Hull quality at x: NaN left of its first vertex, flat right of its last (spending more is allowed)."""
    return np.interp(x, h[:, 0], h[:, 1], left=np.nan, right=h[-1, 1])


def area_mean(h: np.ndarray, lo: float, hi: float) -> float:
    """Exact mean of the piecewise-linear hull over [lo, hi]; NaN when the hull does not start by lo."""
    if hi <= lo or h[0, 0] > lo + TOL:
        return float("nan")
    xs = np.unique(np.concatenate([[lo, hi], h[:, 0][(h[:, 0] > lo) & (h[:, 0] < hi)]]))
    ys = hull_at(h, xs)
    return float(np.sum((ys[1:] + ys[:-1]) / 2 * np.diff(xs)) / (hi - lo))


def cost_to_reach(h: np.ndarray, quality: float) -> float | None:
    """Lowest x at which the hull reaches `quality`, None when it never does."""
    if h[-1, 1] < quality - TOL:
        return None
    i = int(np.argmax(h[:, 1] >= quality - TOL))
    if i == 0:
        return float(h[0, 0])
    (c0, q0), (c1, q1) = h[i - 1], h[i]
    return float(c0 + (quality - q0) * (c1 - c0) / (q1 - q0))


def curve_metrics(curve, anchor, c_weak: float, c_strong: float, q_weak: float, q_strong: float) -> dict:
    """AIQ, APGR$ and APGR of a method's test points (plus the anchor: the cheapest model alone, which any
    router can fall back to), and the cost at which its test hull reaches 95% / parity of q_strong."""
    points = list(curve) + [anchor]
    by_cost = hull([(c, q) for c, _, q in points])
    by_share = hull([(s, q) for _, s, q in points])
    gap = q_strong - q_weak
    value = area_mean(by_cost, c_weak, c_strong)
    out = {"aiq": value,
           "apgr_cost": (value - q_weak) / gap if gap > 0 else float("nan"),
           "apgr_calls": (area_mean(by_share, 0.0, 1.0) - q_weak) / gap if gap > 0 else float("nan")}
    for kind in TARGETS:
        c = cost_to_reach(by_cost, target_quality(kind, q_strong))
        out[f"hull_saving_{kind}"] = None if c is None else saving(c, c_strong)
    return out


def saving(cost: float, reference_cost: float) -> float:
    """Percent lower cost than the reference."""
    return 100.0 * (1 - cost / reference_cost) if reference_cost > 0 else float("nan")


def choose_on_train(train_points, target: float) -> int:
    """Index of the cheapest (cost, share, quality) setting meeting the target on train (ties: higher
    quality); the highest-quality one when none does."""
    ok = [i for i, (_, _, q) in enumerate(train_points) if q >= target - TOL]
    if ok:
        return min(ok, key=lambda i: (train_points[i][0], -train_points[i][2]))
    return max(range(len(train_points)), key=lambda i: (train_points[i][2], -train_points[i][0]))


def mixture_for(points, target: float) -> list[tuple[int, float]]:
    """Random mixing: the cheapest mixture of two of `points` (cost, share, quality) whose expected quality
    reaches the target, as [(index, weight)]; the best single point when none does."""
    h = hull([(c, q) for c, _, q in points])
    at = {}
    for i, (c, _, q) in enumerate(points):  # a vertex's point: the best quality at that cost
        if float(c) not in at or q > points[at[float(c)]][2]:
            at[float(c)] = i
    c = cost_to_reach(h, target)
    if c is None:
        return [(at[float(h[-1, 0])], 1.0)]
    k = int(np.searchsorted(h[:, 0], c - TOL))
    if k >= len(h) or abs(h[k, 0] - c) <= TOL or k == 0:
        return [(at[float(h[min(k, len(h) - 1), 0])], 1.0)]
    (c0, _), (c1, _) = h[k - 1], h[k]
    w1 = (c - c0) / (c1 - c0)
    return [(at[float(c0)], 1.0 - w1), (at[float(c1)], w1)]


def mix(points, weights: list[tuple[int, float]]) -> tuple[float, float, float]:
    """Expected (cost, share, quality) of a random mixture."""
    return tuple(float(sum(w * points[i][k] for i, w in weights)) for k in range(3))


def spread(values) -> dict:
    """Median and range over seeds, ignoring missing values."""
    xs = np.array([v for v in values if v is not None and np.isfinite(v)], float)
    if not len(xs):
        return {"median": None, "min": None, "max": None, "n": 0}
    return {"median": float(np.median(xs)), "min": float(xs.min()), "max": float(xs.max()), "n": int(len(xs))}
