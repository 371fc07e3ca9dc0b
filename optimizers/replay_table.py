"""Recorded outcome tables for replay: the long format (one row per query x model) read from CSV, JSONL
or Parquet, checked row by row, priced, and pivoted into dense per-model arrays.

Columns: id, model, score (required); input, output, cost_usd, prompt_tokens, completion_tokens,
segment (optional). A row without cost_usd is priced from its token counts and the model's price in
the shipped price map (pipelines.tiers._price_map). Every id must have exactly one row per model:
a replay can only compare ladders on queries every model answered, so an incomplete id is an error
that names it, not a silent drop.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipelines.errors import DatasetError
from pipelines.tasks import iter_jsonl_objects

REQUIRED = ("id", "model", "score")


@dataclass
class OutcomeMatrix:
    """Dense view of a complete table: models ordered by average cost (cheapest first)."""

    source: str
    ids: list[str]
    inputs: list[str]
    segments: list[str]
    models: list[str]
    score: np.ndarray  # (n_ids, n_models)
    cost: np.ndarray  # (n_ids, n_models), USD per call
    outputs: list[list[str]]  # [id][model]
    prices: dict  # model -> ($/1M in, $/1M out) or None when costs came recorded

    @property
    def n(self) -> int:
        return len(self.ids)

    def subset(self, idx) -> "OutcomeMatrix":
        idx = list(idx)
        return OutcomeMatrix(self.source, [self.ids[i] for i in idx], [self.inputs[i] for i in idx],
                             [self.segments[i] for i in idx], self.models, self.score[idx], self.cost[idx],
                             [self.outputs[i] for i in idx], self.prices)


def _rows(path: Path):
    """Yield (row_label, dict) where row_label names the row for error messages."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            for i, row in enumerate(reader, 1):
                yield f"row {i} (line {reader.line_num})", row
    elif suffix in (".jsonl", ".ndjson"):
        for line_no, row in iter_jsonl_objects(path):
            yield f"line {line_no}", row
    elif suffix in (".parquet", ".pq"):
        try:
            import pyarrow.parquet as pq
        except ImportError:
            from pipelines.errors import MissingExtraError

            raise MissingExtraError(f"{path}: reading Parquet needs pyarrow; pip install pyarrow") from None
        try:
            records = pq.read_table(path).to_pylist()
        except Exception as e:  # noqa: BLE001 - any pyarrow failure means the file is unreadable
            raise DatasetError(f"{path}: not a readable Parquet file ({e})") from None
        for i, row in enumerate(records, 1):
            yield f"row {i}", row
    else:
        raise DatasetError(f"{path}: unknown outcome table format {suffix!r}; use .csv, .jsonl or .parquet")


def _blank(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() == ""


def _number(value, column: str, where: str) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise DatasetError(f"{where}: {column} {value!r} is not a number") from None
    if math.isnan(x) or math.isinf(x):
        raise DatasetError(f"{where}: {column} is {x}")
    return x


class _Pricer:
    """Per-token prices from the shipped price map, looked up once per model."""

    def __init__(self):
        self.prices: dict[str, tuple[float, float] | None] = {}

    def __call__(self, model: str) -> tuple[float, float] | None:
        if model not in self.prices:
            from pipelines.tiers import _price_map

            self.prices[model] = _price_map(model)
        return self.prices[model]


def load_outcomes(path: str | Path) -> OutcomeMatrix:
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"outcome table not found: {path}")
    if path.is_dir():
        raise DatasetError(f"{path}: is a directory; expected an outcome table file (.csv, .jsonl or .parquet)")
    pricer = _Pricer()
    cells: dict[tuple[str, str], dict] = {}
    first_seen: dict[tuple[str, str], str] = {}
    info: dict[str, dict] = {}  # id -> input, segment
    priced_models: set[str] = set()
    for label, row in _rows(path):
        where = f"{path}: {label}"
        for column in REQUIRED:
            if _blank(row.get(column)):
                raise DatasetError(f"{where}: missing {column}")
        rid, model = str(row["id"]).strip(), str(row["model"]).strip()
        score = _number(row["score"], "score", where)
        if (rid, model) in cells:
            raise DatasetError(f"{where}: duplicate row for id {rid!r} and model {model!r} "
                               f"(first at {first_seen[(rid, model)]})")
        cost = _cost(row, model, where, pricer, priced_models)
        cells[(rid, model)] = {"score": score, "cost": cost,
                               "output": "" if _blank(row.get("output")) else str(row["output"])}
        first_seen[(rid, model)] = label
        info.setdefault(rid, {"input": "" if _blank(row.get("input")) else str(row["input"]),
                              "segment": "all" if _blank(row.get("segment")) else str(row["segment"])})
    if not cells:
        raise DatasetError(f"{path}: no rows")
    return _pivot(path, cells, info, pricer, priced_models)


def _cost(row: dict, model: str, where: str, pricer: _Pricer, priced_models: set) -> float:
    if not _blank(row.get("cost_usd")):
        cost = _number(row["cost_usd"], "cost_usd", where)
    else:
        if _blank(row.get("prompt_tokens")) or _blank(row.get("completion_tokens")):
            raise DatasetError(f"{where}: no cost_usd and no prompt_tokens/completion_tokens to price it from")
        price = pricer(model)
        if price is None:
            raise DatasetError(f"{where}: no cost_usd and no known price for model {model!r} in the price map; "
                               "add a cost_usd column for it")
        tokens_in = _number(row["prompt_tokens"], "prompt_tokens", where)
        tokens_out = _number(row["completion_tokens"], "completion_tokens", where)
        cost = (tokens_in * price[0] + tokens_out * price[1]) / 1e6
        priced_models.add(model)
    if cost < 0:
        raise DatasetError(f"{where}: cost_usd must not be negative, got {cost}")
    return cost


def _pivot(path, cells, info, pricer, priced_models) -> OutcomeMatrix:
    ids = sorted(info)
    models = sorted({m for _, m in cells})
    missing = [(rid, m) for rid in ids for m in models if (rid, m) not in cells]
    if missing:
        incomplete = sorted({rid for rid, _ in missing})
        rid, m = missing[0]
        raise DatasetError(f"{path}: {len(incomplete)} of {len(ids)} ids lack a row for some model "
                           f"(e.g. id {rid!r} has none for {m!r}); replay needs one row per id and model")
    if len(models) < 1:
        raise DatasetError(f"{path}: no models")
    score = np.array([[cells[(rid, m)]["score"] for m in models] for rid in ids], float)
    cost = np.array([[cells[(rid, m)]["cost"] for m in models] for rid in ids], float)
    order = sorted(range(len(models)), key=lambda j: (cost[:, j].mean(), models[j]))  # cheapest first
    models = [models[j] for j in order]
    return OutcomeMatrix(
        source=str(path), ids=ids, inputs=[info[rid]["input"] for rid in ids],
        segments=[info[rid]["segment"] for rid in ids], models=models,
        score=score[:, order], cost=cost[:, order],
        outputs=[[cells[(rid, m)]["output"] for m in models] for rid in ids],
        prices={m: (pricer(m) if m in priced_models else None) for m in models},
    )
