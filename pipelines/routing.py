"""Routing at run time: predicted correctness of each model from the input alone, and the start rung
a routed policy picks from it.

A router maps an input text to a feature vector (a named feature block: the local sentence embedding,
or vocabulary-free hashed words), then predicts, for each model, the chance its answer is right as
the mean of two estimates: the k nearest training inputs' scores (cosine), and a ridge-linear head.
A router fitted with its inputs' text also has a word head (pipelines.text_head: TF-IDF + logistic
regression per model); its prediction is then a weighted mean of that head and the two above, the
weight chosen by out-of-fold Brier score at fit time (stacking). Its learned state is plain numbers
(an artifact carries it; loading runs no code). Fitting lives at compile time (optimizers.routing).

A routed policy (PredictorPolicy.route = {"lambda": x, "costs": [...]}) starts each query at the
ladder rung with the highest predicted score minus lambda times the rung's relative cost (ties: the
cheaper rung), then climbs from there as any cascade does.
"""

from __future__ import annotations

import re
import zlib

import numpy as np

HASHED_DIM = 1024
_TOKEN = re.compile(r"\w+")


def hashed_words(texts: list[str], dim: int = HASHED_DIM) -> np.ndarray:
    """Bag of words and word pairs hashed into `dim` buckets (crc32, so the same on every machine),
    sublinear counts, L2-normalized. Needs no vocabulary, so a router can carry it as a name."""
    out = np.zeros((len(texts), dim), np.float32)
    for i, text in enumerate(texts):
        words = _TOKEN.findall(str(text).lower())[:4000]
        for token in words + [f"{a} {b}" for a, b in zip(words, words[1:])]:
            out[i, zlib.crc32(token.encode()) % dim] += 1.0
    np.log1p(out, out=out)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.where(norms > 0, norms, 1.0)


def _embedding(texts: list[str]) -> np.ndarray:
    from pipelines.embeddings import embed

    return np.asarray(embed([str(t) for t in texts]), np.float32)


FEATURE_BLOCKS = {"embedding": _embedding, "hashed-words": hashed_words}


def embedding_available() -> bool:
    try:
        from pipelines.embeddings import is_available
    except ImportError:
        return False
    return is_available()


def default_block() -> str:
    return "embedding" if embedding_available() else "hashed-words"


def input_features(texts: list[str], block: str) -> np.ndarray:
    from pipelines.errors import ConfigError

    if block not in FEATURE_BLOCKS:
        raise ConfigError(f"unknown input feature block {block!r}; one of {sorted(FEATURE_BLOCKS)}")
    return FEATURE_BLOCKS[block](texts)


class Router:
    """Per-model P(right | input). Learned state: kNN memory (features, scores, which cells are scored)
    and a ridge head (weights, bias); see optimizers.routing.fit_router."""

    def __init__(self, models: list[str], block: str, k: int = 20, prior: float = 2.0):
        self.models, self.block, self.k, self.prior = list(models), block, k, prior
        self.text_head_ = None  # a pipelines.text_head.TextHead, when fitted with the inputs' text
        self.word_weight_ = 0.5  # the word head's share of a prediction (when there is one)

    def predict(self, X: np.ndarray, exclude: np.ndarray | None = None, texts: list[str] | None = None) -> np.ndarray:
        """(n, M) predicted scores in [0, 1] from the inputs' features X (and their `texts`, which a router
        with a word head needs). `exclude[i]` = row of the memory to leave out for query i (in-sample
        predictions without the query's own label)."""
        vector = self.predict_vector(X, exclude)
        if self.text_head_ is None:
            return vector
        return (1.0 - self.word_weight_) * vector + self.word_weight_ * self.predict_words(texts, len(vector))

    def predict_vector(self, X: np.ndarray, exclude: np.ndarray | None = None) -> np.ndarray:
        """The feature-vector heads alone: mean of kNN and ridge."""
        X = np.asarray(X, np.float32)
        return 0.5 * (self._knn(X, exclude) + self._ridge(X))

    def predict_words(self, texts: list[str] | None, n: int) -> np.ndarray:
        if texts is None or len(texts) != n:
            raise ValueError("this router has a word head: predict needs the inputs' texts")
        return self.text_head_.predict(texts)

    def predict_texts(self, texts: list[str]) -> np.ndarray:
        """(n, M) predictions for raw input texts (features computed here)."""
        return self.predict(input_features(texts, self.block), texts=list(texts))

    def _knn(self, X, exclude) -> np.ndarray:
        sims = X @ self.memory_.T
        if exclude is not None:
            sims[np.arange(len(X)), exclude] = -np.inf
        k = min(self.k, self.memory_.shape[0] - (exclude is not None))
        if k <= 0:
            return np.tile(self.base_rate_, (len(X), 1))
        nearest = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        scored = self.scored_[nearest]  # (n, k, M)
        total = (self.scores_[nearest] * scored).sum(axis=1) + self.prior * self.base_rate_
        return total / (scored.sum(axis=1) + self.prior)

    def _ridge(self, X) -> np.ndarray:
        return np.clip(X @ self.weights_ + self.bias_, 0.0, 1.0)

    def stored(self) -> "Router":
        """Its state at the precision an artifact keeps (5 decimals), so that a fit predicts exactly
        what the saved router will."""
        for name, dtype in self._STATE:
            setattr(self, name, np.round(np.asarray(getattr(self, name), float), 5).astype(dtype))
        return self

    _STATE = (("memory_", np.float32), ("scores_", float), ("base_rate_", float), ("weights_", np.float32),
              ("bias_", float))

    def to_dict(self) -> dict:
        data = {name.rstrip("_"): np.round(np.asarray(getattr(self, name), float), 5).tolist() for name, _ in self._STATE}
        head = {"text_head": self.text_head_.to_dict(), "word_weight": self.word_weight_} \
            if self.text_head_ is not None else {}
        return {"kind": "knn+ridge" + ("+words" if head else ""), "models": self.models, "block": self.block,
                "k": self.k, "prior": self.prior, "scored": self.scored_.astype(int).tolist(), **data, **head}

    @classmethod
    def from_dict(cls, data: dict) -> "Router":
        router = cls(data["models"], data["block"], int(data["k"]), float(data["prior"]))
        for name, dtype in cls._STATE:
            setattr(router, name, np.asarray(data[name.rstrip("_")], dtype))
        router.scored_ = np.asarray(data["scored"], bool)
        if data.get("text_head") is not None:
            from pipelines.text_head import TextHead

            router.text_head_ = TextHead.from_dict(data["text_head"])
            router.word_weight_ = float(data.get("word_weight", 0.5))
        M = len(router.models)
        if router.scores_.shape[1:] != (M,) or router.weights_.shape[1:] != (M,) or \
                router.memory_.shape[1] != router.weights_.shape[0] or \
                (router.text_head_ is not None and len(router.text_head_.intercept) != M):
            raise ValueError("router arrays do not fit its models")
        return router


def start_rung(route: dict, predicted: list[float]) -> int:
    """The rung a routed policy starts at: argmax of predicted score - lambda * relative cost
    (the first, i.e. cheapest, on ties)."""
    return int(start_rungs(route, np.asarray(predicted, float)[None, :])[0])


def start_rungs(route: dict, predicted: np.ndarray) -> np.ndarray:
    """start_rung for every row of an (n, rungs) matrix at once (the same arithmetic)."""
    utility = predicted - float(route["lambda"]) * np.asarray(route["costs"], float)
    return np.argmax(utility, axis=1)


# --- routing a live predictor call --------------------------------------------------------------


def route_text(inputs: dict) -> str:
    """The text a router reads for one predictor call: its only input as it is, or `name: value` lines."""
    if len(inputs) == 1:
        return str(next(iter(inputs.values())))
    return "\n".join(f"{k}: {v}" for k, v in inputs.items())


class InputRouter:
    """A fitted Router applied to a predictor's keyword inputs: {tier: predicted P(right)}.

    `known` holds predictions made elsewhere for given texts (the optimizer's out-of-fold predictions
    for its dev rows: a search must not read predictions the router fitted on those same rows)."""

    def __init__(self, router: Router, known: dict[str, np.ndarray] | None = None, memo_size: int = 4096):
        self.router, self.known = router, dict(known or {})
        self._memo: dict[str, np.ndarray] = {}
        self._memo_size = memo_size

    def predict_inputs(self, inputs: dict) -> dict[str, float]:
        text = route_text(inputs)
        row = self.known.get(text)
        if row is None:
            row = self._memo.get(text)
        if row is None:
            row = self.router.predict_texts([text])[0]
            if len(self._memo) >= self._memo_size:
                self._memo.clear()
            self._memo[text] = row
        return dict(zip(self.router.models, map(float, row)))
