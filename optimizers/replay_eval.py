"""Vectorized ladder evaluation over a recorded table, with the semantics of
pipelines.cascade.run_ladder: a routed policy starts each query at the rung pipelines.routing picks
from the router's predictions (else at rung 0); an answered rung is accepted when its confidence >=
thresholds[i] (or at once when the estimator is "none"); the last rung is accepted; a rung without a
scored answer in the table has failed and the query climbs past it; when the top rung fails, the latest
answered rung stands; when every rung failed, the query scores 0. The cost of a query is the sum of
the costs of every model called.

Confidences are precomputed once per estimator as an (n, M, M + 1) array: conf[q, model, prev] is the
confidence of `model`'s answer to query q when `prev` was the last rung that answered before it
(prev = -1, the last slot: nothing answered before). A trial is then a few numpy operations per rung.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from optimizers.replay_signals import NONE, ReplayScorer, agreement_matrix, base_features, text_feature_names
from optimizers.replay_table import OutcomeMatrix
from optimizers.routing import folds_of
from pipelines.policy import PredictorPolicy
from pipelines.routing import start_rungs


@dataclass
class Signals:
    """Label-free signals of every (query, model): answer features with the router's prediction as the
    last column, pairwise answer agreement, and which cells hold an answer."""

    base: np.ndarray  # (n, M, F)
    agree: np.ndarray  # (n, M, M)
    present: np.ndarray  # (n, M)

    @classmethod
    def of(cls, matrix: OutcomeMatrix, predicted: np.ndarray, answer_scores: np.ndarray,
           plugins: tuple[str, ...] = ()) -> "Signals":
        """`predicted`: the router's (n, M) scores from the input; `answer_scores`: the answer model's."""
        text = base_features(matrix.inputs, matrix.outputs, plugins)
        text = text.reshape(matrix.n, len(matrix.models), -1 if matrix.n else len(text_feature_names(plugins)))
        return cls(np.concatenate([text, predicted[:, :, None], answer_scores[:, :, None]], axis=2),
                   agreement_matrix(matrix.outputs, len(matrix.models)), matrix.present)

    def subset(self, idx) -> "Signals":
        return Signals(self.base[idx], self.agree[idx], self.present[idx])


def agreement_confidence(signals: Signals) -> np.ndarray:
    n, m, _ = signals.agree.shape
    conf = np.zeros((n, m, m + 1))
    conf[:, :, :m] = signals.agree  # the last slot (no previous rung) stays 0.0
    return conf


def learned_confidence(scorer: ReplayScorer, signals: Signals) -> np.ndarray:
    """Confidence for each model after each cheaper model (ladders are cheapest first); NaN elsewhere."""
    n, m, _ = signals.agree.shape
    conf = np.full((n, m, m + 1), np.nan)
    for j in range(m):
        for prev in [NONE, *range(j)]:
            conf[:, j, prev] = scorer.proba_block(signals.base, signals.agree, j, prev)
    return conf


def cross_fitted_confidence(scorer_of, signals: Signals, score: np.ndarray, ids: list[str], seed: int) -> np.ndarray:
    """Out-of-fold learned confidences for the training rows: the thresholds are searched on
    confidences the scorer did not see the labels of, as they will be on new queries.
    `scorer_of()` makes an unfitted ReplayScorer."""
    folds = folds_of(ids, seed)
    n, m, _ = signals.agree.shape
    conf = np.full((n, m, m + 1), np.nan)
    if (folds == folds[0]).all():  # too few rows to cross-fit: in-sample is all there is
        scorer = scorer_of().fit(signals.base, signals.agree, score, signals.present)
        return learned_confidence(scorer, signals)
    for k in np.unique(folds):
        test = folds == k
        scorer = scorer_of().fit(signals.base[~test], signals.agree[~test], score[~test], signals.present[~test])
        conf[test] = learned_confidence(scorer, signals.subset(test))
    return conf


@dataclass
class LadderRun:
    final_rung: np.ndarray  # (n,) index into the ladder of the accepted rung; -1 when every rung failed
    score: np.ndarray  # (n,)
    cost: np.ndarray  # (n,)


def run_ladder_vectorized(pp: PredictorPolicy, model_index: dict, confidences: dict, score: np.ndarray,
                          cost: np.ndarray, present: np.ndarray | None = None,
                          predicted: np.ndarray | None = None) -> LadderRun:
    n = score.shape[0]
    rows = np.arange(n)
    rungs = [model_index[t] for t in pp.ladder]
    last = len(rungs) - 1
    present = np.ones(score.shape, bool) if present is None else present
    start = start_rungs(pp.route, predicted[:, rungs]) if pp.route is not None else np.zeros(n, int)
    open_ = np.ones(n, bool)  # still climbing
    final = np.full(n, -1)
    latest = np.full(n, -1)  # the latest answered rung: it stands when the top rung fails
    prev = np.full(n, NONE)  # the model of the latest answered rung
    total = np.zeros(n)
    for i, model in enumerate(rungs):
        calling = open_ & (start <= i)
        total += np.where(calling, cost[:, model], 0.0)
        answered = calling & present[:, model]
        if i == last:
            final[answered] = i
            failed = calling & ~answered
            final[failed] = latest[failed]
            break
        if pp.estimator == "none":
            accept = answered
        else:
            accept = answered & (confidences[pp.estimator][rows, model, prev] >= pp.thresholds[i])
        final[accept] = i
        open_ &= ~accept
        latest[answered] = i
        prev = np.where(answered, model, prev)
    chosen = np.array(rungs)[np.maximum(final, 0)]
    return LadderRun(final, np.where(final >= 0, score[rows, chosen], 0.0), total)
