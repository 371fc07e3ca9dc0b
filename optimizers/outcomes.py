"""The outcome table of the live optimizer: every (example, predictor, tier) answer the search needs,
made once through the disk cache and kept with its confidence signals, tokens, cost and latency.

Trials are scored by running the program with the cascade reading rungs from this table: a trial
whose cells are all recorded costs milliseconds and no tokens. A cell not yet recorded (for a
program whose later predictors read earlier outputs) is made on demand, under the same budget.
"""

from __future__ import annotations

import contextvars
import json
import math
import re
import threading
from collections import Counter
from dataclasses import dataclass, field

import dspy
import numpy as np

from pipelines.answer_budget import answer_budget
from pipelines.cascade import (LiveRungs, RungOutcome, answer_features, apply_policy, inputs_key,
                               trail_var)
from pipelines.adapter import TierwiseAdapter
from pipelines.cache import open_store
from pipelines.confidence import LogisticScorer, ladder_features, same_answer
from pipelines.engine import UNAVAILABLE
from pipelines.errors import AllRungsFailed, BudgetExceeded, InputError, one_line, reraise_ours
from pipelines.programs import call_program
from pipelines.stores import PostgresStore, SharedSpend, is_sql_url, open_shared
from pipelines.tasks import input_converter

OUTCOMES_RECOVERY = ("Kept: every paid call (.tierwise/cache) and the studies. To recover, move the folder aside "
                     "and rerun: the outcome table is recorded again from the call cache with no call paid again "
                     "(the --budget-usd tally kept in it restarts at zero)")


class RowCalls:
    """The row a program is answering, and the order in which each predictor's distinct calls came: a program
    that calls one predictor several times per row (per sentence, per item, per ReAct step) has one cell per
    call. The n-th call of a predictor on a row is the same call on every tier and every trial (a cascade's
    rungs repeat the call; they are not new ones)."""

    def __init__(self, row: dict):
        self.row, self.row_id = row, row["id"]
        self._seen: dict[tuple[str, str], int] = {}
        self._count: Counter = Counter()

    def ordinal(self, predictor: str, call_key: str) -> int:
        key = (predictor, call_key)
        if key not in self._seen:
            self._seen[key] = self._count[predictor]
            self._count[predictor] += 1
        return self._seen[key]


current_row: contextvars.ContextVar[RowCalls | None] = contextvars.ContextVar("tierwise_row", default=None)


class Budget:
    """Guards every uncached call: the cap is a bound, never passed.

    Before a call, its upper-bound price (Tier.cost_bound: every input byte a token, every allowed
    output token) is reserved; after it, the reservation is settled at the real price. Calls in flight
    count against the cap through their reservations, so parallel recording cannot pass it either.

    The cap is for the whole compile, not one run: with a `store`, what earlier runs of the same compile
    paid is kept beside their recorded outcomes (an atomic counter, shared by processes), so rerunning
    with the same --budget-usd cannot spend it again."""

    UNITS = 10**12  # the store counts whole picodollars: diskcache's incr is atomic on integers

    def __init__(self, cap_usd: float | None, store=None, key: str = "spent"):
        self.cap_usd = cap_usd
        self.store, self.key = store, key
        # On a shared store (a storage URL) the counter and the reservations live in the database, so the
        # cap holds across every worker of the compile: reserve is one transaction there (pipelines.stores).
        self.shared = SharedSpend(store, key) if isinstance(store, PostgresStore) else None
        earlier = self.shared.spent() if self.shared else (store.get(key, 0) if store is not None else 0)
        self.earlier_usd = earlier / self.UNITS
        self.spent_usd = 0.0  # this run
        self.reserved_usd = 0.0  # upper bounds of the calls in flight
        self.paid_calls = 0
        self.peak_committed_usd = 0.0  # the most ever spent + reserved at once (never above the cap)
        self._lock = threading.Lock()

    @property
    def total_usd(self) -> float:
        if self.shared is not None:  # every worker's spend, not only this one's
            return self.shared.spent() / self.UNITS
        return self.earlier_usd + self.spent_usd

    def reserve(self, tier, payload: dict):
        """Reserve the call's upper-bound price or refuse it; returns `settle(cost_usd | None)`."""
        bound = tier.cost_bound(payload)
        if self.shared is not None:
            return self._reserve_shared(tier, bound)
        with self._lock:
            committed = self.total_usd + self.reserved_usd
            if self.cap_usd is not None and committed + bound > self.cap_usd:
                raise self._refusal(tier, bound, self.total_usd, self.reserved_usd, "this run")
            self.reserved_usd += bound
            self.peak_committed_usd = max(self.peak_committed_usd, committed + bound)

        def stored(cost_usd: float | None) -> None:
            if cost_usd and self.store is not None:
                self.store.incr(self.key, round(cost_usd * self.UNITS), default=0)

        return self._settler(bound, stored)

    def _reserve_shared(self, tier, bound: float):
        """The same in the database, one transaction per reservation, so the cap holds across workers."""
        units = int(bound * self.UNITS) + 1  # rounded up: the bound stays a bound
        cap = None if self.cap_usd is None else int(self.cap_usd * self.UNITS)
        rid, spent, reserved = self.shared.reserve(units, cap)
        if rid is None:
            raise self._refusal(tier, bound, spent / self.UNITS, reserved / self.UNITS, "by this worker")
        with self._lock:
            self.reserved_usd += bound
            self.peak_committed_usd = max(self.peak_committed_usd, (spent + reserved + units) / self.UNITS)
        return self._settler(bound, lambda cost_usd: self.shared.settle(rid, round((cost_usd or 0) * self.UNITS)))

    def _settler(self, bound: float, stored):
        """settle(cost_usd | None), once: frees the reservation, counts a paid call, then `stored(cost_usd)`."""
        settled = []

        def settle(cost_usd: float | None) -> None:
            if settled:
                return
            settled.append(True)
            with self._lock:
                self.reserved_usd -= bound
                if cost_usd is not None:
                    self.spent_usd += cost_usd
                    self.paid_calls += 1
            stored(cost_usd)

        return settle

    def _refusal(self, tier, bound: float, total_usd: float, reserved_usd: float, whose: str) -> BudgetExceeded:
        return BudgetExceeded(
            f"budget reached: this compile has spent ${total_usd:.6f} of --budget-usd "
            f"${self.cap_usd:.6f} (${self.spent_usd:.6f} in {self.paid_calls} paid calls {whose}"
            + (f", ${reserved_usd:.6f} reserved by calls in flight" if reserved_usd else "")
            + f"); the next call ({tier.name}, at most ${bound:.6f}) could pass it. Everything paid "
            "is cached: rerun with a larger budget to continue")


@dataclass
class Cell:
    row_id: str
    predictor: str
    tier: str
    outcome: RungOutcome
    inputs: dict = field(default_factory=dict)  # the predictor's keyword inputs (what a router reads)
    call: int = 0  # which of the predictor's calls on this row (RowCalls): 0 for a program that calls it once

    @property
    def key(self) -> tuple:
        return (self.row_id, self.predictor, self.tier, self.call)


# A predictor failing on this share of its rows on some tier is named in the compile's notes.
FAILURE_NOTE_SHARE = 0.25


class OutcomeTable:
    """A RungSource for the cascade: recorded outcomes first, live calls for the rest."""

    def __init__(self, runtime, namespace: str, directory=None, budget_usd: float | None = None,
                 budget_key: str = "spent"):
        self.live = LiveRungs(runtime)
        self.runtime = runtime
        self.namespace = namespace
        if is_sql_url(directory):  # a storage URL: the table every worker of the compile reads and fills
            self.store = open_shared(directory, "outcomes", "outcome table")
        else:
            self.store = open_store(directory, "outcome table", OUTCOMES_RECOVERY) if directory else None
        self.budget = Budget(budget_usd, self.store, f"{namespace}|{budget_key}")
        self.memo: dict[tuple, RungOutcome] = {}
        self.cells: dict[tuple, Cell] = {}  # (row_id, predictor, tier, call) -> cell, for scorers and reports
        self._lock = threading.Lock()
        for engine_name in runtime.catalog.names:
            runtime.engine(engine_name).guard = self._guard

    def _guard(self, tier, payload):
        return self.budget.reserve(tier, payload)

    def __call__(self, name, predictor, tier, kwargs, estimator) -> RungOutcome:
        key = (name, tier, inputs_key(kwargs))
        if _prompt_rewritten():
            outcome = self._live(name, predictor, tier, kwargs)
        else:
            outcome = self.memo.get(key) or self._recorded(key, predictor, kwargs)
        at = current_row.get()
        if at is not None:
            call = at.ordinal(name, key[2])
            self.cells.setdefault((at.row_id, name, tier, call),
                                  Cell(at.row_id, name, tier, outcome, _plain(kwargs), call))
        return outcome

    def calls_recorded(self) -> int:
        """The LM calls behind the outcomes known so far (a predictor asking for n candidates makes n)."""
        with self._lock:
            return sum(outcome.calls for outcome in self.memo.values())

    def cell_on(self, cell: Cell, tier: str) -> Cell | None:
        """The same call of the same row, answered on `tier`."""
        return self.cells.get((cell.row_id, cell.predictor, tier, cell.call))

    def _recorded(self, key: tuple, predictor, kwargs: dict) -> RungOutcome:
        """The cell from the outcome store, else made live (and stored); kept in the memo either way."""
        name, tier, inputs = key
        # the prices too: a cell's cost was priced when recorded; at new prices it is recorded again from
        # the call cache (no call paid), priced anew
        entry = self.runtime.catalog[tier]
        store_key = f"{self.namespace}|{entry.identity()}|{json.dumps(entry.prices())}|{name}|{inputs}"
        budget = answer_budget(predictor, entry)
        if budget:  # the request the live call makes (cells recorded with the tier's own limit stay apart)
            store_key += f"|max_tokens={budget}"
        stored = self.store.get(store_key) if self.store is not None else None
        if stored is not None:
            outcome = RungOutcome.from_dict(stored)
            if outcome.ok:  # features as this version computes them, for cells recorded by an older one
                outcome.features = answer_features(self.runtime.catalog, predictor, tier, kwargs,
                                                   outcome.outputs, outcome.scores, self.runtime.checks, name)
        else:
            outcome = self._live(name, predictor, tier, kwargs)
            if self.store is not None and not _passing_failure(outcome):
                self.store.set(store_key, outcome.to_dict())
        with self._lock:
            self.memo[key] = outcome
        return outcome

    def _live(self, name, predictor, tier, kwargs) -> RungOutcome:
        outcome = self.live(name, predictor, tier, kwargs, "logprob_mean")  # paid calls settle the budget
        return RungOutcome.from_dict(outcome.to_dict())  # the same shape a stored cell has

    def failure_notes(self, tier_names: list[str], share: float = FAILURE_NOTE_SHARE) -> list[str]:
        """One line per predictor that a tier failed to answer on at least `share` of the rows recorded
        (a parse error, a refused type, an answer cut short), with its most common error: a failing
        predictor otherwise shows only as quality 0 for every tier."""
        counts: dict[str, dict[str, list[int]]] = {}
        errors: dict[tuple[str, str], Counter] = {}
        example: dict[tuple[str, str], str] = {}  # (predictor, error) -> what a tier wrote
        several = {c.predictor for c in list(self.cells.values()) if c.call > 0}  # called more than once per row
        for cell in list(self.cells.values()):
            name, tier = cell.predictor, cell.tier
            tally = counts.setdefault(name, {}).setdefault(tier, [0, 0])
            tally[1] += 1
            if not cell.outcome.ok:
                tally[0] += 1
                kind = error_kind(cell.outcome.error)
                errors.setdefault((name, tier), Counter())[kind] += 1
                if cell.outcome.failed_text.strip():
                    example.setdefault((name, kind), cell.outcome.failed_text.strip())
        notes = []
        for name, by_tier in counts.items():
            failing = [t for t in tier_names if t in by_tier and by_tier[t][0] >= share * by_tier[t][1] > 0]
            if not failing:
                continue
            shares = ", ".join(f"{t} {by_tier[t][0]} of {by_tier[t][1]}" for t in failing)
            common, n = sum((errors[(name, t)] for t in failing), Counter()).most_common(1)[0]
            wrote = example.get((name, common))
            said = f"; e.g. it wrote {' '.join(wrote.split())[:80]!r}" if wrote else ""
            unit = "calls" if name in several else "rows"
            fine = [t for t in tier_names if t in by_tier and t not in failing and by_tier[t][0] == 0]
            if "stopped at max_tokens" in common and fine:  # the limit fits the answer; this tier writes past it
                said += (f"; {', '.join(fine)} answered every {unit[:-1]} within {'its' if len(fine) == 1 else 'their'}"
                         f" limit, so {', '.join(failing)} may be writing past the answer: more tokens would make its "
                         "calls dearer, not surely usable")
            notes.append(f"predictor {name!r} gave no usable answer on {shares} {unit}; most common ({n}x): "
                         f"{common.rstrip()}{said}")
        return notes


_QUOTED_TAIL = re.compile(r""":\s*(['"]).*\1\s*$""", re.S)


def error_kind(error: str) -> str:
    """An error's first line without the answer it quotes at the end ("not one of [...]: 'It is sure'"),
    so the failures of one kind count together; the note shows an example answer beside it."""
    first = (error.strip().splitlines() or [""])[0]
    return _QUOTED_TAIL.sub("", first).rstrip()


def _prompt_rewritten() -> bool:
    """A module's wrapper of tierwise's adapter is formatting the prompt (dspy.Refine adds its hints so): the
    request is not the one its inputs name, so it is neither read from nor kept in the table (the call cache
    still pays each distinct request once)."""
    adapter = dspy.settings.adapter
    return isinstance(adapter, TierwiseAdapter) and type(adapter) is not TierwiseAdapter


def _passing_failure(outcome: RungOutcome) -> bool:
    """A rung refused by a resting tier or lost to a timeout or outage says nothing about the answer:
    it is not kept, so a rerun asks again (everything paid is in the disk cache either way)."""
    return not outcome.ok and UNAVAILABLE.search(outcome.error) is not None
def _plain(kwargs: dict) -> dict:
    return {k: v if isinstance(v, (str, int, float, bool)) or v is None else str(v) for k, v in kwargs.items()}


@dataclass
class RowResult:
    row_id: str
    segment: str
    score: float
    cost_usd: float
    latency_s: float
    steps: list = field(default_factory=list)
    prediction: object = None
    error: str = ""  # the program or the metric raised on this row (it scores 0): "metric: KeyError: 'x'"


def evaluate(task, program, policy, rows: list[dict], table: OutcomeTable, tier_names: list[str],
             scorers: dict | None = None, routers: dict | None = None) -> list[RowResult]:
    """Run `program` under `policy` on each row, rungs answered from `table`."""
    apply_policy(program, policy, table, tier_names, scorers, routers=routers)
    # a trial's own trace (BestOfN reads one), not dspy's global list of 10,000; the program's dspy settings
    with dspy.context(trace=[]), table.runtime.program_settings():
        return _evaluate_rows(task, program, rows)


def _evaluate_rows(task, program, rows: list[dict]) -> list[RowResult]:
    results, typed_inputs = [], input_converter(program)
    for row in rows:
        trail: list = []
        tokens = [trail_var.set(trail), current_row.set(RowCalls(row))]
        prediction, score, error = None, 0.0, ""
        try:
            prediction = call_program(program, **typed_inputs(task.inputs(row)))
            try:
                score = task.metric(row, prediction)
                if not math.isfinite(score):  # a NaN would make every trial's quality NaN, which Optuna refuses
                    error, score = f"metric: returned {score!r}, not a finite number", 0.0
            except Exception as e:  # noqa: BLE001 - a metric that cannot read this prediction scores it 0
                reraise_ours(e)
                error = f"metric: {one_line(e)}"
        except AllRungsFailed:
            pass
        except InputError as e:  # the program gave one of its predictors a value it cannot take: this row's bug
            error = f"program: {e}"
        except Exception as e:  # noqa: BLE001 - the program's own code raised on what a tier answered
            reraise_ours(e)
            error = f"program: {one_line(e)}"
        finally:
            trail_var.reset(tokens[0])
            current_row.reset(tokens[1])
        results.append(RowResult(str(row["id"]), str(row.get("segment", "all")), score,
                                 sum(s.cost_usd for s in trail), sum(s.latency_s for s in trail), trail, prediction,
                                 error))
    return results


def row_errors(results: list[RowResult]) -> tuple[int, RowResult | None]:
    """How many rows raised, and the first of them."""
    failed = [r for r in results if r.error]
    return len(failed), (failed[0] if failed else None)


def cell_right(task, table: OutcomeTable, row: dict, cell: Cell, top_tier: str) -> bool | None:
    """Whether a recorded answer is right: the task's per-predictor check where it has one, else agreement
    with the top tier's answer (None when that is unknown). A failed rung is never right."""
    if not cell.outcome.ok:
        return False
    right = task.predictor_correct(cell.predictor, row, cell.outcome.outputs)
    if right is None:
        top = table.cell_on(cell, top_tier)
        if top is None or not top.outcome.ok:
            return None
        right = same_answer(cell.outcome.outputs, top.outcome.outputs)
    return bool(right)


def fit_scorers(task, table: OutcomeTable, rows: list[dict], tier_names: list[str],
                routers: dict | None = None, seed: int = 0, checks=None) -> dict[str, "OutOfFoldScorer"]:
    """Per predictor, P(answer right | features) from the recorded cells of `rows`. With an input router
    for the predictor, its out-of-fold P(right) for the cell's tier is one more feature. The ladder's
    features (confidence.LADDER_FEATURES) depend on which rung answered before: each cell is one sample
    as a first answer and one after each cheaper tier that answered the same request (`tier_names`:
    cheapest first; the last one is the top tier).

    `checks` (pipelines.answer_checks): the user's checks whose values the cells' features end with.
    Each scorer is fitted on every row (what the artifact carries); the rows it was fitted on are scored
    out of fold (OutOfFoldScorer), so thresholds searched on them trust it no more than new requests will."""
    from optimizers.routing import folds_of

    by_id = {str(r["id"]): r for r in rows}
    top_tier = tier_names[-1]
    scorers = {}
    predictors = sorted({c.predictor for c in table.cells.values()})
    for name in predictors:
        router = (routers or {}).get(name)
        X, y, ids = [], [], []
        for cell in table.cells.values():
            row_id = cell.row_id
            if cell.predictor != name or row_id not in by_id or not cell.outcome.ok or not cell.outcome.features:
                continue
            right = cell_right(task, table, by_id[row_id], cell, top_tier)
            if right is None:
                continue
            prior = [router.predict_inputs(cell.inputs)[cell.tier]] if router is not None else []
            for previous in [None, *earlier_answers(table, cell, tier_names)]:
                X.append([*cell.outcome.features, *ladder_features(cell.outcome.outputs, previous), *prior])
                y.append(float(right))
                ids.append(row_id)
        if len(y) >= 10 and 0 < sum(y) < len(y):
            X_, y_ = np.asarray(X), np.asarray(y)
            full = LogisticScorer(uses_prior=router is not None, checks=checks.names(name) if checks else ()).fit(X_, y_)
            scorers[name] = OutOfFoldScorer(full, X_, out_of_fold(X_, y_, folds_of(ids, seed), full))
    return scorers


def earlier_answers(table: OutcomeTable, cell: Cell, tier_names: list[str]) -> list[dict]:
    """The outputs that the tiers cheaper than the cell's recorded for the same call (those that answered)."""
    cells = (table.cell_on(cell, t) for t in tier_names[:tier_names.index(cell.tier)])
    return [c.outcome.outputs for c in cells if c is not None and c.outcome.ok]


def out_of_fold(X: np.ndarray, y: np.ndarray, folds: np.ndarray, full: LogisticScorer) -> np.ndarray:
    """Each row's P(right) from a scorer fitted without its fold (all rows of one request share a fold)."""
    out = full.predict_proba(X)
    for k in np.unique(folds):
        test = folds == k
        if test.all():
            break
        out[test] = LogisticScorer(full.l2, uses_prior=full.uses_prior, checks=full.checks).fit(
            X[~test], y[~test]).predict_proba(X[test])
    return out


class OutOfFoldScorer:
    """A fitted LogisticScorer that answers the feature vectors it was fitted on with their out-of-fold
    probabilities, and anything else as the full scorer does. The artifact stores the full scorer."""

    def __init__(self, full: LogisticScorer, X: np.ndarray, held_out: np.ndarray):
        self.full = full
        self.uses_prior, self.n_answer_features_ = full.uses_prior, full.n_answer_features_
        self._known = {self._key(x): float(p) for x, p in zip(X, held_out)}

    @staticmethod
    def _key(x) -> tuple:
        return tuple(np.round(np.asarray(x, float), 9))

    def predict_proba(self, X) -> np.ndarray:
        X = np.asarray(X, float)
        known = [self._known.get(self._key(x)) for x in X]
        if all(p is not None for p in known):
            return np.asarray(known, float)
        full = self.full.predict_proba(X)
        return np.array([f if p is None else p for p, f in zip(known, full)])

    def to_dict(self) -> dict:
        return self.full.to_dict()
