"""Confidence signals a live system has when rung i answers: the input, this rung's answer and the
answers of the rungs already called. Nothing here reads a score or a later rung.

agreement (estimator "agreement"): 1.0 when this rung's answer matches the previous rung's answer,
  else 0.0. Two answers match when both state a final number and the numbers are equal (math), or
  when neither does and their normalized texts are equal (lowercased, punctuation dropped,
  whitespace collapsed). Empty answers never match. At rung 0 nothing was answered before, so the
  agreement is 0.0: an agreement ladder always escalates its first rung (unless its threshold is 0)
  and accepts rung 1 when it matches rung 0.
learned (estimator "learned"): the expected score (P(right) for 0/1 scores, rescaled to [0, 1]) from a per-model logistic scorer over text features
  of the input and answer, plus the agreement with the previous rung (and whether there is one).
"""

from __future__ import annotations

import math
import re

import numpy as np

from pipelines.confidence import LogisticScorer

NONE = -1  # "no previous rung"
_NUM = r"-?\d+(?:\.\d+)?"
_NUMBER = re.compile(_NUM)
_CLAIM = re.compile(rf"({_NUM})\s*([-+*/x×÷])\s*({_NUM})\s*=\s*({_NUM})")
_HEDGES = re.compile(r"\b(maybe|perhaps|probably|possibly|not sure|unsure|unclear|assum\w*|approximately|"
                     r"roughly|i think|i believe|cannot|can't|however|mistake|wait|re-?evaluat\w*)\b", re.I)
_OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b, "x": lambda a, b: a * b,
        "×": lambda a, b: a * b, "/": lambda a, b: a / b if b else math.nan, "÷": lambda a, b: a / b if b else math.nan}

TEXT_FEATURES = ("input_len", "input_numbers", "answer_len", "answer_lines", "answer_numbers", "has_final_number",
                 "final_is_integer", "final_magnitude", "final_negative", "final_in_input", "final_is_computed",
                 "states_answer", "arith_claims", "arith_errors", "hedges")
_STATES = re.compile(r"####|answer is|final answer|\\boxed", re.I)
CONTEXT_FEATURES = ("has_previous", "agrees_with_previous")
FEATURES = TEXT_FEATURES + CONTEXT_FEATURES


def _plain(text: str) -> str:
    """Numbers without currency signs or thousands separators: '$1,200' -> '1200'."""
    return re.sub(r"(?<=\d),(?=\d{3}\b)", "", text.replace("$", ""))


def final_number(text: str) -> float | None:
    """The stated final answer: the number after the last '####' marker if any, else the last number."""
    text = _plain(text)
    tail = text.rsplit("####", 1)[1] if "####" in text else text
    found = _NUMBER.findall(tail) or (_NUMBER.findall(text) if "####" in text else [])
    return float(found[-1]) if found else None


def normalized(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def answers_agree(a: str, b: str) -> bool:
    if not a.strip() or not b.strip():
        return False
    x, y = final_number(a), final_number(b)
    if x is not None and y is not None:
        return abs(x - y) <= 1e-6 * max(1.0, abs(x))
    if x is None and y is None:
        return normalized(a) == normalized(b)
    return False


def text_features(inputs: str, answer: str) -> list[float]:
    plain_in, plain_out = _plain(inputs), _plain(answer)
    final = final_number(answer)
    claims = _CLAIM.findall(plain_out)
    errors, results = 0, set()
    for a, op, b, c in claims:
        value = _OPS[op](float(a), float(b))
        errors += not (abs(value - float(c)) <= 0.01 + 1e-4 * abs(float(c)))  # allow rounded claims
        results.add(float(c))
    input_numbers = {float(x) for x in _NUMBER.findall(plain_in)}
    has_final = final is not None
    return [
        math.log1p(len(inputs)), math.log1p(len(input_numbers)),
        math.log1p(len(answer)), math.log1p(answer.count("\n")), math.log1p(len(_NUMBER.findall(plain_out))),
        float(has_final), float(has_final and final == int(final)),
        math.log1p(abs(final)) if has_final else 0.0, float(has_final and final < 0),
        float(has_final and final in input_numbers), float(has_final and final in results),
        float(bool(_STATES.search(answer))),
        math.log1p(len(claims)), math.log1p(errors), math.log1p(len(_HEDGES.findall(answer))),
    ]


def base_features(inputs: list[str], outputs: list[list[str]]) -> np.ndarray:
    """(n, M, len(TEXT_FEATURES)): features of each model's answer to each input."""
    return np.array([[text_features(inputs[i], out) for out in outputs[i]] for i in range(len(inputs))], float)


def agreement_matrix(outputs: list[list[str]]) -> np.ndarray:
    """(n, M, M) booleans: model j's answer matches model k's, for each query."""
    n, m = len(outputs), len(outputs[0]) if outputs else 0
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
    stored as plain numbers)."""

    def __init__(self, models: list[str], l2: float = 1.0):
        self.models = list(models)
        self.l2 = l2

    def fit(self, base: np.ndarray, agree: np.ndarray, score: np.ndarray) -> "ReplayScorer":
        """Train on every (query, model, previous rung) context a cheapest-first ladder can produce."""
        n, m, _ = base.shape
        lo, hi = float(score.min()), float(score.max())
        target = (score - lo) / (hi - lo) if hi > lo else np.ones_like(score)  # 0/1 stays; judge scores -> [0, 1]
        self.scorers_ = []
        for j in range(m):
            X = np.vstack([self._block(base, agree, j, prev) for prev in [NONE, *range(j)]])
            y = np.tile(target[:, j], j + 1)
            self.scorers_.append(_fit_logistic(X, y, self.l2))
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
        return {"kind": "per-model-logistic", "features": list(FEATURES), "models": self.models, "l2": self.l2,
                "scorers": [{k: v for k, v in s.to_dict().items() if k != "features"} for s in self.scorers_]}

    @classmethod
    def from_dict(cls, data: dict) -> "ReplayScorer":
        scorer = cls(data["models"], data.get("l2", 1.0))
        scorer.scorers_ = [LogisticScorer.from_dict(d) for d in data["scorers"]]
        return scorer


def _fit_logistic(X: np.ndarray, y: np.ndarray, l2: float) -> LogisticScorer:
    if y.min() == y.max():  # all right or all wrong: Newton would diverge; a Laplace-smoothed constant
        s = LogisticScorer(l2)
        p = (y.sum() + 1) / (len(y) + 2)
        s.mean_, s.scale_ = X.mean(axis=0), X.std(axis=0) + 1e-9
        s.coef_, s.intercept_ = np.zeros(X.shape[1]), float(math.log(p / (1 - p)))
        return s
    return LogisticScorer(l2).fit(X, y)
