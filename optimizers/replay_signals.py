"""Confidence signals a live system has when rung i answers: the input, this rung's answer, the router's
prediction for this model from the input alone, and the answers of the rungs already called. Nothing
here reads a score or a later rung.

agreement (estimator "agreement"): 1.0 when this rung's answer says the same as the previous answered
  rung's (optimizers.answer_signals.answer_key: choice letters, final numbers, code, normalized text),
  else 0.0; 0.0 at the first rung.
learned (estimator "learned"): the expected score from a per-model logistic scorer over
  - answer-level features any task has (answer_signals.GENERIC_FEATURES: length, refusals, hedges,
    whether it commits to a number, letter or code block, whether it ends cleanly),
  - the router's predicted score for this model on this input (pipelines.routing: the input's
    embedding through kNN and a ridge head; cross-fitted on training rows),
  - the answer model's predicted score for this answer (optimizers.routing.fit_answer_model: a ridge
    over the hashed words of the answer; cross-fitted),
  - opt-in plug-ins (optimizers.signal_plugins: `--signals arithmetic`, GSM8K-shaped, or your own checks),
  - whether a previous rung answered and whether this answer agrees with it.
"""

from __future__ import annotations

import numpy as np

from optimizers.answer_signals import GENERIC_FEATURES, answer_features, answers_agree
from optimizers.signal_plugins import resolve
from pipelines.confidence import LogisticScorer

NONE = -1  # "no previous rung"
CONTEXT_FEATURES = ("has_previous", "agrees_with_previous")
ROUTER_FEATURES = ("predicted_score", "answer_text_score")  # pipelines.routing / optimizers.routing


def text_feature_names(plugins: tuple[str, ...] = ()) -> tuple[str, ...]:
    names = GENERIC_FEATURES
    for spec in plugins:
        names += resolve(spec).feature_names
    return names


def text_features(inputs: str, answer: str, plugins: tuple[str, ...] = ()) -> list[float]:
    """The answer-level features of one answer (generic, then each plug-in's)."""
    row = answer_features(inputs, answer)
    for spec in plugins:
        row += resolve(spec).features(inputs, answer)
    return row


def feature_names(plugins: tuple[str, ...] = ()) -> list[str]:
    """What a scorer row holds after the model position (see feature_row)."""
    return [*text_feature_names(plugins), *ROUTER_FEATURES, *CONTEXT_FEATURES]


def base_features(inputs: list[str], outputs: list[list[str]], plugins: tuple[str, ...] = ()) -> np.ndarray:
    """(n, M, text features): features of each model's answer to each input."""
    seen: dict[tuple[str, str], list[float]] = {}  # models often give the very same answer text

    def of(text_in: str, out: str) -> list[float]:
        key = (text_in, out)
        if key not in seen:
            seen[key] = text_features(text_in, out, plugins)
        return seen[key]

    return np.array([[of(inputs[i], out) for out in outputs[i]] for i in range(len(inputs))], float)


def agreement_matrix(outputs: list[list[str]], m: int | None = None) -> np.ndarray:
    """(n, M, M) booleans: model j's answer matches model k's, for each query (M: `m`, or read from the rows)."""
    n = len(outputs)
    m = m if m is not None else len(outputs[0]) if outputs else 0
    agree = np.zeros((n, m, m), bool)
    for i in range(n):
        for j in range(m):
            for k in range(j + 1, m):
                agree[i, j, k] = agree[i, k, j] = answers_agree(outputs[i][j], outputs[i][k])
    return agree


def feature_row(model: int, base: np.ndarray, previous: int, agrees: bool) -> list[float]:
    """One scorer input: the model's position first (it picks the model's weights), then FEATURES."""
    return [float(model), *map(float, base), float(previous != NONE), float(previous != NONE and agrees)]


class ReplayScorer:
    """One LogisticScorer per model; predict_proba takes rows from `feature_row` (sklearn-shaped,
    stored as plain numbers). `base` holds the text features and the router's prediction last."""

    def __init__(self, models: list[str], l2: float = 1.0, features: list[str] | None = None):
        self.models = list(models)
        self.l2 = l2
        self.features = list(features) if features is not None else feature_names()

    def fit(self, base: np.ndarray, agree: np.ndarray, score: np.ndarray,
            present: np.ndarray | None = None) -> "ReplayScorer":
        """Train on every (query, model, previous rung) context a cheapest-first ladder can produce;
        cells without a scored answer (failed rungs) teach nothing."""
        n, m, _ = base.shape
        present = np.ones(score.shape, bool) if present is None else present
        target = np.clip(score, 0.0, 1.0)  # scores lie in [0, 1] (replay_table checks it)
        self.scorers_ = []
        for j in range(m):
            # The contexts after a previous rung differ only in whether it agreed, so the j stacked
            # blocks collapse into two weighted ones (agreed / did not): the same fit, fewer rows.
            agreeing = agree[:, j, :j].sum(axis=1).astype(float)
            X = np.vstack([self._block(base, agree, j, NONE)]
                          + ([np.hstack([base[:, j], np.ones((n, 1)), np.full((n, 1), a)]) for a in (1.0, 0.0)]
                             if j else []))
            y = np.tile(target[:, j], 3 if j else 1)
            w = np.concatenate([np.ones(n)] + ([agreeing, j - agreeing] if j else []))
            keep = (w > 0) & np.tile(present[:, j], 3 if j else 1)
            if not keep.any():  # the model answered no training query: an uninformed constant
                keep = np.zeros_like(keep)
                keep[:1] = True
                y = np.full_like(y, 0.5)
            self.scorers_.append(_fit_logistic(X[keep], y[keep], self.l2, w[keep]))
        return self

    @staticmethod
    def _block(base, agree, model, prev) -> np.ndarray:
        n = base.shape[0]
        has_prev = np.full((n, 1), float(prev != NONE))
        agrees = agree[:, model, prev][:, None].astype(float) if prev != NONE else np.zeros((n, 1))
        return np.hstack([base[:, model], has_prev, agrees])

    def proba_block(self, base, agree, model, prev) -> np.ndarray:
        """Vectorized confidence of `model` on every query, after `prev` answered (or NONE)."""
        return self.scorers_[model].predict_proba(self._block(base, agree, model, prev))

    def predict_proba(self, X) -> np.ndarray:
        X = np.asarray(X, float)
        out = np.empty(len(X))
        for i, row in enumerate(X):
            out[i] = self.scorers_[int(row[0])].predict_proba(row[None, 1:])[0]
        return out

    def to_dict(self) -> dict:
        return {"kind": "per-model-logistic", "features": self.features, "models": self.models, "l2": self.l2,
                "scorers": [{k: v for k, v in s.to_dict().items() if k != "features"} for s in self.scorers_]}

    @classmethod
    def from_dict(cls, data: dict) -> "ReplayScorer":
        scorer = cls(data["models"], data.get("l2", 1.0), data.get("features"))
        scorer.scorers_ = [LogisticScorer.from_dict(d) for d in data["scorers"]]
        return scorer


def _fit_logistic(X: np.ndarray, y: np.ndarray, l2: float, weight: np.ndarray | None = None) -> LogisticScorer:
    """pipelines.confidence.LogisticScorer.fit on rows repeated `weight` times."""
    return LogisticScorer(l2).fit(X, y, sample_weight=weight)
