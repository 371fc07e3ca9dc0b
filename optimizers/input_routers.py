"""Input routers for a live compile: per predictor, each tier's P(right) from the predictor's inputs
alone (pipelines.routing.Router: the local sentence embedding's kNN + ridge, stacked with a word head
on the inputs' text), fitted on the dev rows' recorded cells. The dev rows get out-of-fold predictions: the search and the learned scorers must not read a
router's guesses about rows whose answers it was fitted on."""

from __future__ import annotations

import numpy as np

from optimizers.outcomes import OutcomeTable, cell_right
from optimizers.routing import fit_cross_fitted_router, folds_of
from pipelines.routing import InputRouter, default_block, input_features, route_text

MIN_ROWS = 20  # fewer dev rows than this: no router (its out-of-fold folds would hold a handful each)


def fit_input_routers(task, table: OutcomeTable, rows: list[dict], tier_names: list[str], top_tier: str,
                      seed: int, block: str | None = None) -> dict[str, InputRouter]:
    by_id = {str(r["id"]): r for r in rows}
    block = block or default_block()
    routers = {}
    for name in sorted({c.predictor for c in table.cells.values()}):
        texts: dict[tuple, str] = {}  # (row_id, call) -> the call's inputs: each call of a predictor is a sample
        score: dict[tuple, dict[str, float]] = {}
        for cell in table.cells.values():
            if cell.predictor != name or cell.row_id not in by_id:
                continue
            right = cell_right(task, table, by_id[cell.row_id], cell, top_tier)
            if right is None:
                continue
            call = (cell.row_id, cell.call)
            texts.setdefault(call, route_text(cell.inputs))
            score.setdefault(call, {})[cell.tier] = float(right)
        calls = sorted(score)
        if len({row_id for row_id, _ in calls}) < MIN_ROWS:
            continue
        S = np.array([[score[c].get(t, 0.0) for t in tier_names] for c in calls])
        present = np.array([[t in score[c] for t in tier_names] for c in calls])
        inputs = [texts[c] for c in calls]
        X = input_features(inputs, block)
        folds = folds_of([row_id for row_id, _ in calls], seed)  # a row's calls share a fold
        router, out_of_fold = fit_cross_fitted_router(X, S, present, list(tier_names), block, folds, inputs)
        routers[name] = InputRouter(router, {texts[c]: out_of_fold[k] for k, c in enumerate(calls)})
    return routers
