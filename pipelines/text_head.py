"""A router's word head at run time: TF-IDF of the input's words and word pairs, then one logistic
regression per model, P(right | words). Plain numbers (vocabulary, idf, weights) that an artifact
carries; fitting lives at compile time (optimizers.text_head, scikit-learn).

Why a second head beside the embedding's kNN + ridge: tasks announce themselves in their words (a
template, a format, a keyword), which a sentence embedding blurs; on the shared routing tables the
average of the two predicts which model is right better than either alone.

The transform is scikit-learn's TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True) re-done in
numpy, term by term, so loading an artifact needs neither scikit-learn nor scipy; a test holds the
two equal.
"""

from __future__ import annotations

import math
import re
from collections import Counter

import numpy as np

_TOKEN = re.compile(r"(?u)\b\w\w+\b")  # scikit-learn's default token_pattern


def terms(text: str) -> list[str]:
    words = _TOKEN.findall(str(text).lower())
    return words + [f"{a} {b}" for a, b in zip(words, words[1:])]


class TextHead:
    """Per-model P(right) from TF-IDF features: sigmoid(tfidf(text) . coef[m] + intercept[m])."""

    def __init__(self, vocabulary: list[str], idf, coef, intercept):
        self.vocabulary = list(vocabulary)
        self.index = {t: i for i, t in enumerate(self.vocabulary)}
        self.idf = np.asarray(idf, float)
        self.coef = np.asarray(coef, float)  # (models, terms)
        self.intercept = np.asarray(intercept, float)
        if self.coef.shape != (len(self.intercept), len(self.vocabulary)) or self.idf.shape != (len(self.vocabulary),):
            raise ValueError("text head arrays do not fit its vocabulary")

    def features(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """(term columns, L2-normalized sublinear tf-idf weights) of one text."""
        counts = Counter(t for t in terms(text) if t in self.index)
        if not counts:
            return np.zeros(0, int), np.zeros(0)
        cols = np.array([self.index[t] for t in counts], int)
        weights = np.array([1.0 + math.log(c) for c in counts.values()]) * self.idf[cols]
        return cols, weights / np.linalg.norm(weights)

    def predict(self, texts: list[str]) -> np.ndarray:
        out = np.empty((len(texts), len(self.intercept)))
        for i, text in enumerate(texts):
            cols, weights = self.features(text)
            out[i] = self.coef[:, cols] @ weights + self.intercept
        return 1.0 / (1.0 + np.exp(-out))

    def to_dict(self) -> dict:
        return {"vocabulary": self.vocabulary, "idf": np.round(self.idf, 6).tolist(),
                "coef": np.round(self.coef, 5).tolist(), "intercept": np.round(self.intercept, 5).tolist()}

    @classmethod
    def from_dict(cls, data: dict) -> "TextHead":
        return cls(data["vocabulary"], data["idf"], data["coef"], data["intercept"])

    def stored(self) -> "TextHead":
        """Its numbers at the precision to_dict keeps, so a fit predicts what the saved head will."""
        return TextHead.from_dict(self.to_dict())
