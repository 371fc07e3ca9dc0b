"""Outcome tables for the routing benchmark: read once in place, made comparable, split by id.

The benchmark reads the long format of ../shared/data (one row per query x model) itself rather than through
optimizers.replay_table, so the yardstick does not move when the optimizer's loader changes. Every method,
tierwise included, sees the same prepared numbers: tierwise gets them as a long CSV written to a scratch
directory (`write_long`).

Preparation, each step reported in the table's notes:
- no cost_usd and no token counts (MT-Bench keeps only judge scores): priced from estimates,
  len(input)/4 prompt tokens and ASSUMED_COMPLETION_TOKENS completion tokens per call at the price map's
  per-token price (looked up under together_ai/ when the bare name has none, as the GSM8K table's Mixtral);
- scores above 1 (judge scores, MT-Bench 1-10): divided by the table's highest score;
- scores below 0 (RouterArena records one -0.033): clipped to 0, since quality lies in [0, 1].
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TABLE_FILES = {  # short name -> path under ../shared/data, read in place (never copied into the repository)
    "gsm8k": "routellm/gsm8k_outcomes.csv",
    "mtbench": "routellm/mtbench_outcomes.csv",
    "llmrouter": "llmrouter/outcomes.csv",
    "routerarena": "routerarena/outcomes.csv",
}


def shared_data() -> Path:
    """../shared/data beside the repository; from a git worktree, beside its main checkout."""
    roots = [REPO]
    dot_git = REPO / ".git"
    if dot_git.is_file():  # a worktree: "gitdir: <main>/.git/worktrees/<name>"
        gitdir = Path(dot_git.read_text().split("gitdir:", 1)[1].strip())
        roots.append(gitdir.parents[2])
    for root in roots:
        if (root.parent / "shared" / "data").is_dir():
            return root.parent / "shared" / "data"
    raise SystemExit(f"no shared/data directory beside {' or '.join(map(str, roots))}")


ASSUMED_COMPLETION_TOKENS = 400  # MT-Bench answers run paragraphs


@dataclass
class Table:
    """Dense view: models ordered by average cost (cheapest first)."""

    name: str
    ids: list[str]
    inputs: list[str]
    outputs: list[list[str]]  # [query][model]
    segments: list[str]
    splits: list[str]  # the source's own train/test column, "" when it has none
    models: list[str]
    score: np.ndarray  # (n, M) in [0, 1]
    cost: np.ndarray  # (n, M) USD per call
    notes: list[str] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.ids)

    @property
    def has_answers(self) -> bool:
        return any(o.strip() for row in self.outputs for o in row)

    def subset(self, idx) -> "Table":
        idx = np.asarray(idx, int)
        pick = lambda xs: [xs[i] for i in idx]  # noqa: E731
        return Table(self.name, pick(self.ids), pick(self.inputs), pick(self.outputs), pick(self.segments),
                     pick(self.splits), self.models, self.score[idx], self.cost[idx], self.notes)


def _estimated_cost(rows: list[dict]) -> tuple[dict, str]:
    from pipelines.tiers import price_map

    prices = {m: price_map(m) or price_map(f"together_ai/{m}") for m in {r["model"] for r in rows}}
    unknown = sorted(m for m, price in prices.items() if price is None)
    if unknown:
        raise SystemExit(f"no costs recorded and no price known for {unknown}")
    cost = {}
    for r in rows:
        price_in, price_out = prices[r["model"]]
        cost[(r["id"], r["model"])] = (len(r.get("input") or "") / 4 * price_in
                                       + ASSUMED_COMPLETION_TOKENS * price_out) / 1e6
    note = (f"costs estimated (the table records none): len(input)/4 prompt + {ASSUMED_COMPLETION_TOKENS} "
            "completion tokens per call at price-map prices")
    return cost, note


def load(name: str, path: Path) -> Table:
    with Path(path).open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise SystemExit(f"{path}: no rows")
    notes = []
    if "cost_usd" in rows[0]:
        cost_of = {(r["id"], r["model"]): float(r["cost_usd"]) for r in rows}
    else:
        cost_of, note = _estimated_cost(rows)
        notes.append(note)
    ids = sorted({r["id"] for r in rows})
    models = sorted({r["model"] for r in rows})
    row_of, col_of = {rid: i for i, rid in enumerate(ids)}, {m: j for j, m in enumerate(models)}
    score = np.full((len(ids), len(models)), np.nan)
    cost = np.full_like(score, np.nan)
    outputs = [[""] * len(models) for _ in ids]
    inputs, segments, splits = [""] * len(ids), [""] * len(ids), [""] * len(ids)
    for r in rows:
        i, j = row_of[r["id"]], col_of[r["model"]]
        score[i, j], cost[i, j] = float(r["score"]), cost_of[(r["id"], r["model"])]
        outputs[i][j] = r.get("output") or ""
        inputs[i], segments[i], splits[i] = r.get("input") or "", r.get("segment") or "", r.get("split") or ""
    if np.isnan(score).any():
        raise SystemExit(f"{path}: {int(np.isnan(score).sum())} (id, model) cells missing; the benchmark needs "
                         "a complete table")
    top = float(score.max())
    if top > 1:
        score = score / top
        notes.append(f"scores divided by {top:g} (the table's highest) so that quality lies in [0, 1]")
    if (score < 0).any():
        notes.append(f"{int((score < 0).sum())} score(s) below 0 (lowest {score.min():.4g}) clipped to 0")
        score = np.clip(score, 0.0, None)
    order = sorted(range(len(models)), key=lambda j: (cost[:, j].mean(), models[j]))
    return Table(name, ids, inputs, [[row[j] for j in order] for row in outputs], segments, splits,
                 [models[j] for j in order], score[:, order], cost[:, order], notes)


def id_order(table: Table, seed) -> np.ndarray:
    """Row indices ordered by sha256(seed:id): depends only on the ids, so a rerun orders them the same.
    (Not crc32: CRC is affine in its input, so changing the seed prefix permuted ids so little that five
    seeds gave about two distinct halves and their complements.)"""
    keys = [hashlib.sha256(f"{seed}:{rid}".encode()).hexdigest() for rid in table.ids]
    return np.array(sorted(range(table.n), key=keys.__getitem__), int)


def split_half(table: Table, seed) -> tuple[np.ndarray, np.ndarray]:
    """Train and test row indices: the first half of id_order trains, so every method of a seed sees the
    same halves."""
    order = id_order(table, seed)
    half = table.n // 2
    return np.sort(order[:half]), np.sort(order[half:])


def source_split(table: Table) -> tuple[np.ndarray, np.ndarray] | None:
    """The source's own train/test split, when the table records one."""
    split = np.array(table.splits)
    if not {"train", "test"} <= set(split):
        return None
    return np.flatnonzero(split == "train"), np.flatnonzero(split == "test")


def write_long(table: Table, path: Path) -> Path:
    """The table in replay's long format, with the prepared scores and costs."""
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "input", "model", "output", "score", "cost_usd", "segment"])
        for i, rid in enumerate(table.ids):
            for j, model in enumerate(table.models):
                w.writerow([rid, table.inputs[i], model, table.outputs[i][j], repr(float(table.score[i, j])),
                            repr(float(table.cost[i, j])), table.segments[i] or "all"])
    return path
