"""Fitting the router of pipelines.routing: per-model correctness from the input's features, with
out-of-fold predictions for the training rows (a threshold or lambda searched on in-sample
predictions would trust the router more than new queries will)."""

from __future__ import annotations

import hashlib

import numpy as np

from pipelines.routing import Router

FOLDS = 5


def folds_of(ids: list[str], seed: int, k: int = FOLDS) -> np.ndarray:
    return np.array([int(hashlib.sha256(f"{seed}:fold:{i}".encode()).hexdigest()[:8], 16) % k for i in ids])


def fit_router(X: np.ndarray, score: np.ndarray, present: np.ndarray, models: list[str], block: str,
               texts: list[str] | None = None) -> Router:
    """kNN memory plus a ridge head whose penalty is chosen by generalized cross-validation; with the
    inputs' `texts`, also a word head (optimizers.text_head)."""
    X = np.asarray(X, np.float32)
    n = len(X)
    router = Router(models, block, k=int(np.clip(round(np.sqrt(n)), 5, 40)))
    scored = present.astype(float)
    base = (score * scored).sum(axis=0) + 1.0
    router.base_rate_ = base / (scored.sum(axis=0) + 2.0)  # Laplace-smoothed mean score per model
    router.memory_, router.scores_, router.scored_ = X, np.where(present, score, 0.0), present.copy()
    router.weights_, router.bias_ = _ridge_gcv(X, np.where(present, score, router.base_rate_))
    if texts is not None:
        from optimizers.text_head import fit_text_head

        router.text_head_ = fit_text_head(texts, score, present)
    return router.stored()


def _ridge_gcv(X: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ridge weights for every column of Y at once, each column's penalty picked by GCV from one SVD."""
    x_mean, y_mean = X.mean(axis=0), Y.mean(axis=0)
    Xc, Yc = (X - x_mean).astype(float), Y - y_mean
    n, M = Y.shape
    if n < 3:
        return np.zeros((X.shape[1], M), np.float32), y_mean
    # The SVD Xc = U S V^T through the smaller Gram matrix: X^T X = V S^2 V^T, or X X^T = U S^2 U^T
    primal = n > X.shape[1]
    s2, E = np.linalg.eigh(Xc.T @ Xc if primal else Xc @ Xc.T)
    keep = s2 > max(s2.max(), 1e-30) * 1e-10
    s2, E = s2[keep], E[:, keep]
    if primal:
        UtY = (E.T @ (Xc.T @ Yc)) / np.sqrt(s2)[:, None]
        back = E / np.sqrt(s2)  # coef = V diag(s / (s^2 + a)) U^T Y = back @ (s^2 / (s^2 + a) * U^T Y)
    else:
        UtY = E.T @ Yc
        back = (Xc.T @ E) / s2  # V diag(1/s) = X^T U diag(1/s^2) * s ... see below
    outside = (Yc ** 2).sum(axis=0) - (UtY ** 2).sum(axis=0)  # the part of Y no direction of X explains
    chosen, best_gcv = np.zeros((X.shape[1], M)), np.full(M, np.inf)
    for alpha in s2.max() * np.logspace(-5, 1, 13):
        shrink = s2 / (s2 + alpha)
        residual = outside + (((1 - shrink)[:, None] * UtY) ** 2).sum(axis=0)
        gcv = residual / max(n - shrink.sum(), 1.0) ** 2
        better = gcv < best_gcv
        if better.any():
            coef = back @ ((s2 / (s2 + alpha))[:, None] * UtY[:, better])  # (d, columns improved)
            chosen[:, better], best_gcv[better] = coef, gcv[better]
    return chosen.astype(np.float32), y_mean - x_mean @ chosen


WORD_WEIGHTS = np.linspace(0.0, 1.0, 5)  # the word head's share, chosen by out-of-fold Brier score


def fit_cross_fitted_router(X: np.ndarray, score: np.ndarray, present: np.ndarray, models: list[str], block: str,
                            folds: np.ndarray, texts: list[str] | None = None) -> tuple[Router, np.ndarray]:
    """The router fitted on all rows, and (n, M) predictions for each row from routers fitted without its
    fold. With `texts`, the word head's weight is the one whose out-of-fold predictions have the lowest
    Brier score on the scored cells (stacking the two heads); the returned predictions use it."""
    router = fit_router(X, score, present, models, block, texts)
    labels = np.unique(folds)
    vector, words = np.empty(score.shape), np.empty(score.shape)
    if len(labels) < 2:  # too few rows to hold any out: leave-one-out kNN, in-sample ridge and words
        vector = router.predict_vector(X, exclude=np.arange(len(X)))
        if router.text_head_ is not None:
            words = router.predict_words(texts, len(X))
    else:
        for k in labels:
            test = folds == k
            inside = None if texts is None else [texts[i] for i in np.flatnonzero(~test)]
            part = fit_router(X[~test], score[~test], present[~test], models, block, inside)
            vector[test] = part.predict_vector(X[test])
            if router.text_head_ is not None:
                words[test] = part.predict_words([texts[i] for i in np.flatnonzero(test)], int(test.sum())) \
                    if part.text_head_ is not None else vector[test]
    if router.text_head_ is None:
        return router, vector
    briers = [float((((1 - w) * vector + w * words - score) ** 2)[present].mean()) for w in WORD_WEIGHTS]
    router.word_weight_ = float(WORD_WEIGHTS[int(np.argmin(briers))])
    return router, (1 - router.word_weight_) * vector + router.word_weight_ * words


# --- the answer-text model: P(right | this model's answer text), a signal for cascades -------------

ANSWER_DIM = 512


def answer_vectors(outputs: list[list[str]], model: int) -> np.ndarray:
    from pipelines.routing import hashed_words

    return hashed_words([row[model] for row in outputs], ANSWER_DIM)


def fit_answer_model(outputs: list[list[str]], score: np.ndarray, present: np.ndarray) -> dict:
    """Per model, a GCV ridge from the hashed words of its answer to its score (FrugalGPT's scorer, without
    a vocabulary to store). Plain numbers: {"dim", "weights": [M][dim], "bias": [M]}."""
    M = score.shape[1]
    weights, bias = np.zeros((M, ANSWER_DIM)), np.zeros(M)
    for j in range(M):
        rows = np.flatnonzero(present[:, j])
        X = answer_vectors([outputs[i] for i in rows], j)
        y = score[rows, j:j + 1]
        bias[j] = float(y.mean()) if len(rows) else 0.5
        if len(rows) >= 3 and np.abs(X).sum() > 0:
            w, b = _ridge_gcv(X, y)
            weights[j], bias[j] = w[:, 0], float(b[0])
    return {"dim": ANSWER_DIM, "weights": np.round(weights, 5).tolist(), "bias": np.round(bias, 5).tolist()}


def answer_scores(model_data: dict, outputs: list[list[str]]) -> np.ndarray:
    """(n, M) the answer model's predicted score of each answer."""
    W, b = np.asarray(model_data["weights"], float), np.asarray(model_data["bias"], float)
    out = np.empty((len(outputs), len(b)))
    for j in range(len(b)):
        out[:, j] = answer_vectors(outputs, j) @ W[j] + b[j]
    return np.clip(out, 0.0, 1.0)


def cross_fitted_answer_scores(outputs, score, present, folds) -> np.ndarray:
    out = np.empty(score.shape)
    labels = np.unique(folds)
    if len(labels) < 2:
        return answer_scores(fit_answer_model(outputs, score, present), outputs)
    for k in labels:
        test = np.flatnonzero(folds == k)
        train = np.flatnonzero(folds != k)
        data = fit_answer_model([outputs[i] for i in train], score[train], present[train])
        out[test] = answer_scores(data, [outputs[i] for i in test])
    return out
