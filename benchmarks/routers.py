"""Published routing baselines, fitted on the training half of a table and swept over their one knob.

Every baseline returns its knob's (cost per 1k, share of strong-model calls, quality) points on the
training half and on the test half, aligned by knob setting; the operating point is chosen on the training
points and read on the test ones (see curves.choose_on_train). Training points of a learned predictor use
cross-fitted (out-of-fold) predictions: in-sample TF-IDF or MLP predictions are near-perfect and would choose
a knob that fails on new queries.

- LR router: per model, a logistic regression on TF-IDF of the input predicting the answer's score
  (fractional targets: each row counts as right with weight score, wrong with weight 1 - score); route to
  argmax predicted score - lambda * model's mean training cost / the priciest model's (liblinear solver:
  3x faster than lbfgs on these TF-IDF matrices).
- kNN router: TF-IDF of the input, cosine, k = 10 nearest training queries; predicted score = their mean.
- MLP router (RouterBench's predictive router): an MLP on the input's all-MiniLM-L6-v2 sentence embedding
  (pipelines.embeddings) predicting, per model, whether its answer is right (score >= 0.5). One network
  with a sigmoid head per model (sklearn's multi-label MLPClassifier, one hidden layer of 100): the
  per-model heads share the hidden layer, which keeps 9-model tables affordable on 2 cores.
- FrugalGPT-style cascade: one cheaper model first, then the best model when a scorer's confidence in the
  first answer is below a threshold. The scorer is the LR above on TF-IDF of input || first answer (the
  input alone when the table has no answers); the knob is (first model, threshold).
"""

from __future__ import annotations

import numpy as np

from benchmarks.bench_tables import Table

FOLDS = 5
LAMBDAS = np.concatenate([[0.0], np.logspace(-3, 2, 80)])
THRESHOLDS = np.linspace(0.0, 1.0001, 101)


def fold_of(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).permutation(np.arange(n) % FOLDS)


def cross_fitted(fit_predict, n_train: int, seed: int) -> np.ndarray:
    """Out-of-fold predictions on the training rows; fit_predict(train_idx, predict_idx) -> (k, M)."""
    fold = fold_of(n_train, seed)
    out = None
    for k in range(FOLDS):
        part = fit_predict(np.flatnonzero(fold != k), np.flatnonzero(fold == k))
        if out is None:
            out = np.empty((n_train, part.shape[1]))
        out[fold == k] = part
    return out


# --- predictors of each model's score on a query -------------------------------------------------------------


def _tfidf(ngrams=(1, 2)):
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(ngram_range=ngrams, min_df=2, sublinear_tf=True)


def fractional_logistic(X, score, X_new) -> np.ndarray:
    """Expected score in [0, 1] from a logistic regression fitted on fractional labels."""
    from scipy.sparse import vstack
    from sklearn.linear_model import LogisticRegression

    if score.min() == score.max():
        return np.full(X_new.shape[0], float(score[0]))
    y = np.r_[np.ones(len(score)), np.zeros(len(score))]
    w = np.r_[score, 1 - score]
    keep = w > 0
    clf = LogisticRegression(C=1.0, solver="liblinear", max_iter=2000).fit(vstack([X, X])[keep], y[keep], sample_weight=w[keep])
    return clf.predict_proba(X_new)[:, 1]


def lr_predictions(texts_of, score: np.ndarray, train_idx, test_idx, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(cross-fitted train, test) predicted scores, (n, M); texts_of(j) -> one text per row for model j."""
    M = score.shape[1]

    def all_models(fit_rows, predict_rows):
        cols, features = [], {}
        for j in range(M):
            texts = texts_of(j)
            if id(texts) not in features:  # models reading the same texts share one vectorizer
                vec = _tfidf()
                features[id(texts)] = (vec.fit_transform([texts[i] for i in fit_rows]),
                                       vec.transform([texts[i] for i in predict_rows]),
                                       texts)  # held, so that its id is not reused
            X, X_new, _ = features[id(texts)]
            cols.append(fractional_logistic(X, score[fit_rows, j], X_new))
        return np.column_stack(cols)

    train_idx, test_idx = np.asarray(train_idx), np.asarray(test_idx)
    train = cross_fitted(lambda a, b: all_models(train_idx[a], train_idx[b]), len(train_idx), seed)
    return train, all_models(train_idx, test_idx)


def knn_predictions(table: Table, train_idx, test_idx, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """(leave-one-out train, test) predicted scores: the mean score of the k most similar training inputs."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(sublinear_tf=True)
    X = vec.fit_transform([table.inputs[i] for i in train_idx])
    score = table.score[train_idx]

    def predict(Q, exclude_self):
        sims = (Q @ X.T).toarray()
        if exclude_self:
            np.fill_diagonal(sims, -np.inf)
        nearest = np.argpartition(-sims, k, axis=1)[:, :k]
        return score[nearest].mean(axis=1)

    return predict(X, True), predict(vec.transform([table.inputs[i] for i in test_idx]), False)


def mlp_predictions(emb: np.ndarray, score: np.ndarray, train_idx, test_idx, seed: int):
    """(cross-fitted train, test) probabilities that each model's answer is right, from sentence embeddings."""
    from sklearn.neural_network import MLPClassifier

    right = (score >= 0.5).astype(int)

    def fit_predict(fit_rows, predict_rows):
        y = right[fit_rows]
        out = np.tile(y.mean(axis=0), (len(predict_rows), 1)).astype(float)  # constant columns stay constant
        varies = (y.min(axis=0) != y.max(axis=0))
        if varies.sum() == 0:
            return out
        net = MLPClassifier(hidden_layer_sizes=(100,), early_stopping=True, max_iter=300, random_state=seed)
        labels = y[:, varies]
        net.fit(emb[fit_rows], labels if labels.shape[1] > 1 else labels[:, 0])
        proba = net.predict_proba(emb[predict_rows])
        out[:, varies] = proba if proba.ndim == 2 and labels.shape[1] > 1 else proba[:, [1]]
        return out

    train_idx, test_idx = np.asarray(train_idx), np.asarray(test_idx)
    train = cross_fitted(lambda a, b: fit_predict(train_idx[a], train_idx[b]), len(train_idx), seed)
    return train, fit_predict(train_idx, test_idx)


# --- knob sweeps -----------------------------------------------------------------------------------------------


def route_sweep(pred: np.ndarray, score: np.ndarray, cost: np.ndarray, unit_cost: np.ndarray, strong: int):
    """Points of argmax(pred - lambda * unit_cost / max unit_cost), one per lambda in LAMBDAS."""
    rows = np.arange(len(score))
    scaled = unit_cost / unit_cost.max() if unit_cost.max() > 0 else unit_cost
    points = []
    for lam in LAMBDAS:
        choice = np.argmax(pred - lam * scaled, axis=1)
        points.append((float(cost[rows, choice].mean() * 1000), float((choice == strong).mean()),
                       float(score[rows, choice].mean())))
    return points


def cascade_sweep(conf: np.ndarray, first: int, strong: int, score: np.ndarray, cost: np.ndarray):
    """Points of "answer with `first`, escalate to `strong` when conf < threshold", one per threshold."""
    points = []
    for t in THRESHOLDS:
        accept = conf >= t
        q = np.where(accept, score[:, first], score[:, strong])
        c = cost[:, first] + np.where(accept, 0.0, cost[:, strong])
        points.append((float(c.mean() * 1000), float(1 - accept.mean()), float(q.mean())))
    return points


def router(pred_train, pred_test, table: Table, train_idx, test_idx, strong: int):
    unit_cost = table.cost[train_idx].mean(axis=0)  # a router knows prices, not this query's bill
    return (route_sweep(pred_train, table.score[train_idx], table.cost[train_idx], unit_cost, strong),
            route_sweep(pred_test, table.score[test_idx], table.cost[test_idx], unit_cost, strong))


def frugal_cascade(table: Table, train_idx, test_idx, strong: int, seed: int, input_only=None):
    """Train and test points over (first model, threshold); `input_only`: LR predictions on the input alone
    to reuse when the table has no answers (the scorer would read the same text)."""
    if table.has_answers:
        conf_train, conf_test = lr_predictions(
            lambda j: [f"{q} || {row[j]}" for q, row in zip(table.inputs, table.outputs)],
            table.score, train_idx, test_idx, seed)
    elif input_only is not None:
        conf_train, conf_test = input_only
    else:
        conf_train, conf_test = lr_predictions(lambda j: table.inputs, table.score, train_idx, test_idx, seed)
    train_pts, test_pts = [], []
    unit_cost = table.cost[train_idx].mean(axis=0)
    for first in range(table.score.shape[1]):
        if unit_cost[first] >= unit_cost[strong]:
            continue
        train_pts += cascade_sweep(conf_train[:, first], first, strong, table.score[train_idx], table.cost[train_idx])
        test_pts += cascade_sweep(conf_test[:, first], first, strong, table.score[test_idx], table.cost[test_idx])
    return train_pts, test_pts
