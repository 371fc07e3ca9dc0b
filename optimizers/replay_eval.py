"""Vectorized ladder evaluation over a recorded table, with the semantics of
pipelines.cascade.run_ladder: rung i is accepted when its confidence >= thresholds[i]; the last rung is
always accepted; the cost of a query is the sum of the costs of every model called. Recorded rows are
answers, never failures, so run_ladder's failure and fallback paths do not arise in a replay.

Confidences are precomputed once per estimator as an (n, M, M + 1) array: conf[q, model, prev] is the
confidence of `model`'s answer to query q when `prev` answered just before it (prev = -1, the last
slot: it is the first rung). A trial is then a few numpy operations per rung.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from optimizers.replay_signals import NONE, ReplayScorer, agreement_matrix, base_features
from optimizers.replay_table import OutcomeMatrix
from pipelines.policy import PredictorPolicy

CROSS_FIT_FOLDS = 5


@dataclass
class Signals:
    """Label-free signals of every (query, model): text features and pairwise answer agreement."""

    base: np.ndarray  # (n, M, F)
    agree: np.ndarray  # (n, M, M)

    @classmethod
    def of(cls, matrix: OutcomeMatrix) -> "Signals":
        return cls(base_features(matrix.inputs, matrix.outputs), agreement_matrix(matrix.outputs))

    def subset(self, idx) -> "Signals":
        return Signals(self.base[idx], self.agree[idx])


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


def cross_fitted_confidence(models, signals: Signals, score: np.ndarray, ids: list[str], seed: int) -> np.ndarray:
    """Out-of-fold learned confidences for the training rows: the thresholds are searched on
    confidences the scorer did not see the labels of, as they will be on new queries."""
    folds = np.array([int(hashlib.sha256(f"{seed}:fold:{i}".encode()).hexdigest()[:8], 16) % CROSS_FIT_FOLDS
                      for i in ids])
    n, m, _ = signals.agree.shape
    conf = np.full((n, m, m + 1), np.nan)
    for k in range(CROSS_FIT_FOLDS):
        test = folds == k
        if not test.any() or test.all():
            continue
        scorer = ReplayScorer(models).fit(signals.base[~test], signals.agree[~test], score[~test])
        conf[test] = learned_confidence(scorer, signals.subset(test))
    if (folds == folds[0]).all():  # too few rows to cross-fit: in-sample is all there is
        conf = learned_confidence(ReplayScorer(models).fit(signals.base, signals.agree, score), signals)
    return conf


@dataclass
class LadderRun:
    final_rung: np.ndarray  # (n,) index into the ladder of the accepted rung
    score: np.ndarray  # (n,)
    cost: np.ndarray  # (n,)


def run_ladder_vectorized(pp: PredictorPolicy, model_index: dict, confidences: dict, score: np.ndarray,
                          cost: np.ndarray) -> LadderRun:
    n = score.shape[0]
    rungs = [model_index[t] for t in pp.ladder]
    last = len(rungs) - 1
    open_ = np.ones(n, bool)  # still climbing
    final = np.full(n, last)
    total = np.zeros(n)
    for i, model in enumerate(rungs):
        total += np.where(open_, cost[:, model], 0.0)
        if i == last:
            break
        prev = rungs[i - 1] if i else NONE
        accept = open_ & (confidences[pp.estimator][:, model, prev] >= pp.thresholds[i])
        final[accept] = i
        open_ &= ~accept
    chosen = np.array(rungs)[final]
    return LadderRun(final, score[np.arange(n), chosen], total)
