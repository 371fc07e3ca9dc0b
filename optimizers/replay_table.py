"""Recorded outcome tables for replay: the long format (one row per query x model) read from CSV, JSONL
or Parquet, checked row by row, priced, and pivoted into dense per-model arrays.

Columns: id, model, score (required); input, output, cost_usd, prompt_tokens, completion_tokens,
segment (optional). A row without cost_usd is priced from its token counts and the model's price in
the shipped price map (pipelines.tiers.price_map).

Tables as users have them are sparse: a query some model never answered, or a cell whose judge failed
(blank score). Such a cell is kept as absent (`present` False, score 0, cost 0) and read as a rung that
failed, as a live cascade reads a failed call: it climbs past it. `notes` says what was left out.
Scores must lie in [0, 1]; judge scores on another scale are divided by `score_max` (e.g. 10).

`replay apply` also reads a table with no score column at all (production logs nobody labelled): a cell is then
an answer when it holds answer text or a cost, and the policy's decisions and costs are all it can say.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass, field
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
    present: np.ndarray | None = None  # (n_ids, n_models) bool: the cell holds a scored answer
    notes: list = field(default_factory=list)  # one line per kind of cell or id left out
    scored: bool = True  # False: a table without a score column (present: the cell holds an answer; score 0)

    def __post_init__(self):
        if self.present is None:
            self.present = np.ones(self.score.shape, bool)

    @property
    def n(self) -> int:
        return len(self.ids)

    def subset(self, idx) -> "OutcomeMatrix":
        idx = list(idx)
        return OutcomeMatrix(self.source, [self.ids[i] for i in idx], [self.inputs[i] for i in idx],
                             [self.segments[i] for i in idx], self.models, self.score[idx], self.cost[idx],
                             [self.outputs[i] for i in idx], self.prices, self.present[idx], list(self.notes),
                             self.scored)

    def dropping_ids_without(self, model: str) -> "OutcomeMatrix":
        """Only the ids `model` answered (a reference must be scored on every id it is compared on)."""
        keep = np.flatnonzero(self.present[:, self.models.index(model)])
        if len(keep) == self.n:
            return self
        out = self.subset(keep)
        out.notes.append(f"{self.n - len(keep)} of {self.n} ids dropped: no scored answer from the reference "
                         f"{model}")
        return out


NUMBER_COLUMNS = ("score", "cost_usd", "prompt_tokens", "completion_tokens")

# A CSV cell may hold a long input or answer (a document, a program): far past csv's 128 KiB default.
csv.field_size_limit(2**31 - 1)


def _csv_rows(path: Path, delimiter: str | None, required=REQUIRED):
    """Yield (row_label, dict). A BOM (Excel's "CSV UTF-8") is dropped, column names are read stripped and
    lower-cased, and a header without commas but with tabs or semicolons gives the delimiter."""
    with path.open(newline="", encoding="utf-8-sig") as f:
        try:
            header = f.readline()
            if delimiter is None:
                delimiter = next((d for d in ("\t", ";") if "," not in header and d in header), ",")
            f.seek(0)
            reader = csv.DictReader(f, delimiter=delimiter, strict=True)
            names = [str(name).strip().lower() for name in reader.fieldnames or []]
            if not names:
                raise DatasetError(f"{path}: no rows")
            missing = [c for c in required if c not in names]
            if missing:
                raise DatasetError(f"{path}: no {' / '.join(repr(c) for c in missing)} column; the header has "
                                   f"{names} (columns: {', '.join(REQUIRED)}; optional input, output, cost_usd, "
                                   "prompt_tokens, completion_tokens, segment)")
            reader.fieldnames = names
            decimal_comma = delimiter == ";"  # a European spreadsheet's CSV: 0,3 is 0.3
            for i, row in enumerate(reader, 1):
                if decimal_comma:
                    row.update({c: row[c].replace(",", ".") for c in NUMBER_COLUMNS if isinstance(row.get(c), str)})
                if None in row:  # csv.DictReader keeps cells past the header under the key None
                    raise DatasetError(f"{path}: row {i} (line {reader.line_num}) has {len(row[None])} cells more "
                                       f"than the header's {len(names)}; a comma inside a cell needs quotes")
                yield f"row {i} (line {reader.line_num})", row
        except UnicodeDecodeError as e:
            raise DatasetError(f"{path}: not UTF-8 text (byte {e.start} of a read block: {e.reason}); "
                               "re-save it as UTF-8") from None
        except csv.Error as e:
            if "unexpected end of data" in str(e):
                raise DatasetError(f"{path}: a quote opened after line {reader.line_num} is never closed; "
                                   "not readable as CSV") from None
            raise DatasetError(f"{path}: line {reader.line_num}: not readable as CSV ({e})") from None


def _rows(path: Path, required=REQUIRED):
    """Yield (row_label, dict) where row_label names the row for error messages."""
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        yield from _csv_rows(path, "\t" if suffix == ".tsv" else None, required)
    elif suffix in (".jsonl", ".ndjson"):
        try:
            for line_no, row in iter_jsonl_objects(path):
                yield f"line {line_no}", row
        except UnicodeDecodeError as e:
            raise DatasetError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start} of a line); "
                               "re-save it as UTF-8") from None
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
        raise DatasetError(f"{path}: unknown outcome table format {suffix!r}; use .csv, .tsv, .jsonl or .parquet")


def _blank(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() == ""


# What spreadsheets, R, SQL and pandas exports write in a number's cell for "no value": read as blank.
MISSING_WORDS = {"na", "n/a", "nan", "null", "none", "-", "#n/a"}


def _no_number(value) -> bool:
    return _blank(value) or (isinstance(value, str) and value.strip().lower() in MISSING_WORDS)


# Larger per-call amounts are no price: summed over a table they would overflow a float.
MAX_COST_USD = 1e12


def _number(value, column: str, where: str) -> float:
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        value = value.strip().lower() == "true"  # as JSON's true / false
    try:
        x = float(value)
    except OverflowError:  # an integer too large for a float (JSON allows any number of digits)
        x = math.inf if value > 0 else -math.inf
    except (TypeError, ValueError):
        shown = value if len(str(value)) <= 40 else f"{str(value)[:40]}..."
        raise DatasetError(f"{where}: {column} {shown!r} is not a number") from None
    if math.isnan(x) or math.isinf(x):
        raise DatasetError(f"{where}: {column} is {x}")
    return x


class _Pricer:
    """Per-token prices from the shipped price map, looked up once per model."""

    def __init__(self):
        self.prices: dict[str, tuple[float, float] | None] = {}

    def __call__(self, model: str) -> tuple[float, float] | None:
        if model not in self.prices:
            from pipelines.tiers import price_map

            self.prices[model] = price_map(model)
        return self.prices[model]


def load_outcomes(path: str | Path, score_max: float | None = None, clip_scores: bool = False,
                  unscored_table: bool = False) -> OutcomeMatrix:
    """The table as a matrix; scores are divided by `score_max` when given, and must then lie in [0, 1]
    (or are clipped into it with `clip_scores`, e.g. a translation metric a little below 0; noted).
    `unscored_table`: a table whose first row has no score column is read without scores (`scored` False)."""
    path = Path(path)
    if score_max is not None and not (math.isfinite(score_max) and score_max > 0):
        raise DatasetError(f"--score-max must be a positive number, got {score_max}")
    if not path.exists():
        raise DatasetError(f"outcome table not found: {path}")
    if path.is_dir():
        raise DatasetError(f"{path}: is a directory; expected an outcome table file (.csv, .jsonl or .parquet)")
    pricer = _Pricer()
    cells: dict[tuple[str, str], dict] = {}
    first_seen: dict[tuple[str, str], str] = {}
    info: dict[str, dict] = {}  # id -> input, segment
    priced_models: set[str] = set()
    unscored = unpriced = repeated = 0
    clipped = [0]
    scored = None  # decided by the first row
    for label, row in _rows(path, REQUIRED[:2] if unscored_table else REQUIRED):
        where = f"{path}: {label}"
        for column in ("id", "model"):
            if _blank(row.get(column)):
                raise DatasetError(f"{where}: missing {column}")
        first = scored is None
        if first:
            scored = "score" in row or not unscored_table
        if "score" not in row and scored:
            raise DatasetError(f"{where}: missing score (the table needs a score column"
                               + ("; `replay apply` also reads a table without one" if first else "") + ")")
        if "score" in row and not scored:
            raise DatasetError(f"{where}: has a score where the first row has none: score every row or none")
        rid, model = _id_text(row["id"]), str(row["model"]).strip()
        for column, value in (("id", rid), ("model", model)):
            if any(ord(c) < 32 for c in value):
                raise DatasetError(f"{where}: {column} {value!r} holds a control character")
        output = "" if _blank(row.get("output")) else str(row["output"])
        unpriced_row = all(_no_number(row.get(c)) for c in ("cost_usd", "prompt_tokens", "completion_tokens"))
        if scored:
            score = None if _no_number(row.get("score")) else \
                _score(row["score"], score_max, where, clipped if clip_scores else None)
            unscored += score is None
        else:  # no labels: a logged answer (text or a price) is an answer of unknown quality
            score = None if not output and unpriced_row else 0.0
        if score is None and unpriced_row:
            cost, unpriced = 0.0, unpriced + 1  # a failed call logged without a price: a failed rung costs nothing
        else:
            cost = _cost(row, model, where, pricer, priced_models)
        cell = {"score": score, "cost": cost, "output": output}
        if (rid, model) in cells:
            if cells[(rid, model)] == cell:  # the same call logged twice (a retried write): one cell
                repeated += 1
                continue
            raise DatasetError(f"{where}: two different rows for id {rid!r} and model {model!r} (first at "
                               f"{first_seen[(rid, model)]}): keep one per id and model")
        cells[(rid, model)] = cell
        first_seen[(rid, model)] = label
        info.setdefault(rid, {"input": "" if _blank(row.get("input")) else str(row["input"]),
                              "segment": "all" if _blank(row.get("segment")) else str(row["segment"])})
    if not cells:
        raise DatasetError(f"{path}: no rows")
    matrix = _pivot(path, cells, info, pricer, priced_models, scored)
    by_case: dict[str, list[str]] = {}
    for model in matrix.models:
        by_case.setdefault(model.lower(), []).append(model)
    twins = [names for names in by_case.values() if len(names) > 1]
    if twins:
        matrix.notes.append(f"model names that differ only in case are different models: {twins[0]}"
                            + (f" and {len(twins) - 1} more" if len(twins) > 1 else ""))
    if repeated:
        matrix.notes.append(f"{repeated} rows repeated an earlier row exactly (same id, model, score, cost and "
                            "answer): each read once")
    if clipped[0]:
        matrix.notes.append(f"{clipped[0]} scores outside [0, 1] clipped into it (--clip-scores)")
    if not scored:
        matrix.notes.append("the table has no score column: the policy's decisions and costs only, no quality"
                            + (f"; {unpriced} row{'s' * (unpriced != 1)} with neither answer text nor a cost read "
                               "as failed calls"
                               if unpriced else ""))
    if unscored:
        matrix.notes.append(f"{unscored} unscored cells (a blank or NA score) read as failed rungs: a ladder climbs "
                            "past them" + (f"; {unpriced} of them had no cost either, priced at 0" if unpriced else ""))
    return matrix


# --clip-scores is for a metric that strays a little outside [0, 1]; a score further out is another scale.
CLIP_REACH = 0.5


def _id_text(value) -> str:
    """An id as text. A whole number written as a float (0.0, as pandas writes an integer column that had a
    blank) is that number: another model's row for id 0 is the same query."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    text = str(value).strip()
    return text.split(".")[0] if re.fullmatch(r"-?\d+\.0+", text) else text


def _score(value, score_max: float | None, where: str, clipped: list | None) -> float:
    x = _number(value, "score", where)
    scaled = x / score_max if score_max is not None else x
    if 0.0 <= scaled <= 1.0:
        return scaled
    if clipped is not None and -CLIP_REACH <= scaled <= 1.0 + CLIP_REACH:
        clipped[0] += 1
        return min(max(scaled, 0.0), 1.0)
    if score_max is not None:
        hint = f"{'above --score-max' if x > 0 else 'below 0 with --score-max'} {score_max:g}"
    else:
        hint = ("scores must lie in [0, 1]; for judge scores on another scale pass --score-max (e.g. 10); "
                f"--clip-scores clips only a metric that strays up to {CLIP_REACH:g} outside")
    raise DatasetError(f"{where}: score {x:g} is out of range ({hint})")


def _cost(row: dict, model: str, where: str, pricer: _Pricer, priced_models: set) -> float:
    if not _no_number(row.get("cost_usd")):
        cost = _number(row["cost_usd"], "cost_usd", where)
    else:
        if _no_number(row.get("prompt_tokens")) or _no_number(row.get("completion_tokens")):
            given = "a blank cost_usd" if "cost_usd" in row else "no cost_usd"
            others = [k for k in row if k != "cost_usd" and re.search(r"cost|price|usd|spend", str(k), re.I)]
            hint = f" (is {others[0]!r} the cost? name that column cost_usd)" if others else ""
            raise DatasetError(f"{where}: {given} and no prompt_tokens/completion_tokens to price it from{hint}")
        price = pricer(model)
        if price is None:
            raise DatasetError(f"{where}: no cost_usd and no known price for model {model!r} in the price map; "
                               "give its rows a cost_usd")
        tokens_in = _number(row["prompt_tokens"], "prompt_tokens", where)
        tokens_out = _number(row["completion_tokens"], "completion_tokens", where)
        cost = (tokens_in * price[0] + tokens_out * price[1]) / 1e6
        priced_models.add(model)
    if cost < 0:
        raise DatasetError(f"{where}: cost_usd must not be negative, got {cost}")
    if cost > MAX_COST_USD:
        raise DatasetError(f"{where}: cost_usd {cost:g} is not a price for one call (over {MAX_COST_USD:g})")
    return cost


def _pivot(path, cells, info, pricer, priced_models, scored: bool = True) -> OutcomeMatrix:
    ids = sorted(info)
    models = sorted({m for _, m in cells})
    missing = [(rid, m) for rid in ids for m in models if (rid, m) not in cells]
    notes = []
    if missing:
        incomplete = sorted({rid for rid, _ in missing})
        rid, m = missing[0]
        notes.append(f"{len(missing)} cells absent ({len(incomplete)} of {len(ids)} ids lack a row for some model, "
                     f"e.g. id {rid!r} for {m!r}): read as failed rungs")
    empty = {"score": None, "cost": 0.0, "output": ""}
    grid = [[cells.get((rid, m), empty) for m in models] for rid in ids]
    present = np.array([[c["score"] is not None for c in row] for row in grid], bool)
    score = np.array([[c["score"] or 0.0 for c in row] for row in grid], float)
    cost = np.array([[c["cost"] for c in row] for row in grid], float)  # an unscored call was still paid
    never = [m for j, m in enumerate(models) if not present[:, j].any()]
    if never:
        raise DatasetError(f"{path}: model(s) {never} have no scored row; drop them or score them" if scored else
                           f"{path}: model(s) {never} have no answer (no answer text or cost on any row); drop them")

    def mean_cost(j):  # over the cells the model answered
        return cost[present[:, j], j].mean()


    order = sorted(range(len(models)), key=lambda j: (mean_cost(j), models[j]))  # cheapest first
    models = [models[j] for j in order]
    return OutcomeMatrix(
        source=str(path), ids=ids, inputs=[info[rid]["input"] for rid in ids],
        segments=[info[rid]["segment"] for rid in ids], models=models,
        score=score[:, order], cost=cost[:, order],
        outputs=[[row[j]["output"] for j in order] for row in grid],
        prices={m: (pricer(m) if m in priced_models else None) for m in models},
        present=present[:, order], notes=notes, scored=scored,
    )
