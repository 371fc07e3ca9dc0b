"""Confidence estimators: each maps one rung's answer to a number in [0, 1].

- logprob_mean / logprob_min: exp of the mean / min token log-probability over the tokens of the
  answer's output fields (field markers and reasoning excluded).
- agreement: fraction of extra samples (same tier, temperature 0.7) that give the same answer.
- self_report: a `confidence` output field the program itself asks for (0-1 or 0-100).
- learned: a logistic scorer fitted on dev-set outcomes (features below), sklearn-shaped.
"""

from __future__ import annotations

import math
import re

import numpy as np

REASONING_FIELDS = {"reasoning", "rationale"}
_HEADER = re.compile(r"\[\[ ## (\w+) ## \]\]")


def field_spans(text: str, fields: list[str]) -> list[tuple[int, int]]:
    """Character spans of the given output fields' values in a ChatAdapter-formatted completion.
    A completion without markers (a bare answer) counts as one span over the whole text."""
    headers = list(_HEADER.finditer(text))
    if not headers:
        stripped = text.strip()
        start = text.find(stripped) if stripped else 0
        return [(start, start + len(stripped))] if stripped else []
    spans = []
    for i, h in enumerate(headers):
        if h.group(1) not in fields:
            continue
        end = headers[i + 1].start() if i + 1 < len(headers) else len(text)
        value = text[h.end():end]
        lead = len(value) - len(value.lstrip())
        spans.append((h.end() + lead, h.end() + len(value.rstrip())))
    return [s for s in spans if s[1] > s[0]]


def answer_logprobs(text: str, token_logprobs: list[tuple[str, float]], fields: list[str]) -> list[float]:
    """Log-probabilities of the tokens that overlap the answer fields' character spans."""
    spans = field_spans(text, fields)
    out, pos = [], 0
    for token, logprob in token_logprobs:
        start, end = pos, pos + len(token)
        pos = end
        if any(start < s_end and end > s_start for s_start, s_end in spans):
            out.append(logprob)
    return out


def logprob_scores(text: str, token_logprobs, fields: list[str]) -> dict[str, float | None]:
    lps = answer_logprobs(text, token_logprobs, fields) if token_logprobs else []
    if not lps:
        return {"logprob_mean": None, "logprob_min": None}
    return {"logprob_mean": math.exp(sum(lps) / len(lps)), "logprob_min": math.exp(min(lps))}


def self_reported(outputs: dict) -> float | None:
    value = outputs.get("confidence")
    if value is None:
        return None
    match = re.search(r"-?\d+(\.\d+)?", str(value))
    if not match:
        return None
    x = float(match.group())
    x = x / 100 if x > 1 else x
    return min(max(x, 0.0), 1.0)


def normalize_answer(outputs: dict) -> str:
    return "|".join(str(outputs[k]).strip().lower() for k in sorted(outputs) if k not in REASONING_FIELDS)


# --- the learned scorer ------------------------------------------------------------------------

ANSWER_FEATURES = ("logprob_mean", "logprob_min", "answer_len", "input_len", "tier_rank", "digits_in_answer",
                   "answer_in_input", "answer_from_demos")
# What the ladder adds at scoring time (pipelines.cascade.score_of): whether a cheaper rung answered this
# call before, and whether this answer says the same as that one (the agreement a policy has already paid for).
LADDER_FEATURES = ("has_previous", "agrees_with_previous")
FEATURES = ANSWER_FEATURES + LADDER_FEATURES
CHECK_PREFIX = "check:"  # a user's check's feature name in an artifact: between ANSWER_ and LADDER_FEATURES
_WORD = re.compile(r"\w+")


def words(text: str) -> set[str]:
    return set(_WORD.findall(str(text).lower()))


def demo_input_words(demos, input_fields) -> frozenset:
    """The words of a predictor's few-shot demos' inputs (what a small model may copy from instead of
    reading the request)."""
    found: set[str] = set()
    for demo in demos or ():
        for name in input_fields:
            value = demo.get(name) if hasattr(demo, "get") else None
            if value is not None:
                found |= words(value)
    return frozenset(found)


def grounding(answer: str, text_in: str, demo_words=frozenset()) -> tuple[float, float]:
    """(share of the answer's words found in the request, share found in the demos' inputs and not in the
    request). An extracted value should come from the request; one that comes from a demo was copied."""
    said = words(answer)
    if not said:
        return 0.0, 0.0
    request = words(text_in)
    return len(said & request) / len(said), len((said & demo_words) - request) / len(said)


def same_answer(outputs: dict, other: dict) -> bool:
    """Whether two answers say the same: their non-reasoning output fields, stripped and lowercased."""
    return normalize_answer(outputs) == normalize_answer(other)


def ladder_features(outputs: dict, previous_outputs: dict | None) -> list[float]:
    """LADDER_FEATURES of an answer given the previous answered rung's outputs (None: it is the first)."""
    if previous_outputs is None:
        return [0.0, 0.0]
    return [1.0, float(same_answer(outputs, previous_outputs))]


def features(inputs: dict, outputs: dict, scores: dict, tier_rank: float, demo_words=frozenset()) -> list[float]:
    answer = " ".join(str(v) for k, v in outputs.items() if k not in REASONING_FIELDS)
    text_in = " ".join(str(v) for v in inputs.values())
    lp_mean = scores.get("logprob_mean")
    lp_min = scores.get("logprob_min")
    return [
        math.log(max(lp_mean, 1e-6)) if lp_mean is not None else -3.0,
        math.log(max(lp_min, 1e-6)) if lp_min is not None else -6.0,
        math.log1p(len(answer)),
        math.log1p(len(text_in)),
        tier_rank,
        float(bool(re.search(r"\d", answer))),
        *grounding(answer, text_in, demo_words),
    ]


class LogisticScorer:
    """P(answer is right | features). L2-regularized logistic regression fitted by Newton's method,
    stored as plain numbers (no pickle) so an artifact can carry it."""

    def __init__(self, l2: float = 1.0, max_iter: int = 50, uses_prior: bool = False, checks: tuple = ()):
        self.l2 = l2
        self.max_iter = max_iter
        self.uses_prior = uses_prior  # the last feature is the input router's P(right) for the tier
        self.checks = tuple(checks)  # the user's checks (pipelines.answer_checks), after ANSWER_FEATURES

    def fit(self, X, y, sample_weight=None) -> "LogisticScorer":
        """Newton's method; `sample_weight` counts a row that many times (collapsed duplicates)."""
        X, y = np.asarray(X, float), np.asarray(y, float)
        self.n_answer_features_ = X.shape[1] - int(self.uses_prior)
        w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, float)
        total = w.sum()
        self.mean_ = (w @ X) / total
        self.scale_ = np.sqrt((w @ (X - self.mean_) ** 2) / total) + 1e-9
        if y.min() == y.max():  # all right or all wrong: Newton would diverge; a Laplace-smoothed constant
            p = (w @ y + 1) / (total + 2)
            self.coef_, self.intercept_ = np.zeros(X.shape[1]), float(math.log(p / (1 - p)))
            return self
        Z = np.hstack([np.ones((len(X), 1)), (X - self.mean_) / self.scale_])
        beta = np.zeros(Z.shape[1])
        penalty = np.eye(Z.shape[1]) * self.l2
        penalty[0, 0] = 0.0
        for _ in range(self.max_iter):
            p = 1 / (1 + np.exp(-Z @ beta))
            grad = Z.T @ (w * (p - y)) + penalty @ beta
            hess = (Z.T * (w * p * (1 - p))) @ Z + penalty + np.eye(Z.shape[1]) * 1e-9
            step = np.linalg.solve(hess, grad)
            beta -= step
            if np.abs(step).max() < 1e-8:
                break
        self.intercept_, self.coef_ = float(beta[0]), beta[1:]
        return self

    def predict_proba(self, X) -> np.ndarray:
        Z = (np.asarray(X, float) - self.mean_) / self.scale_
        return 1 / (1 + np.exp(-(Z @ self.coef_ + self.intercept_)))

    def to_dict(self) -> dict:
        return {"l2": self.l2, "mean": list(map(float, self.mean_)), "scale": list(map(float, self.scale_)),
                "coef": list(map(float, self.coef_)), "intercept": self.intercept_,
                "features": self.feature_names()}

    def feature_names(self) -> list[str]:
        own = (list(ANSWER_FEATURES) + [CHECK_PREFIX + c for c in self.checks] + list(LADDER_FEATURES)
               if self.checks else list(FEATURES[:self.n_answer_features_]))
        return own + (["router_prior"] if self.uses_prior else [])

    @classmethod
    def from_dict(cls, data: dict) -> "LogisticScorer":
        names = data.get("features", [])
        scorer = cls(l2=data.get("l2", 1.0), uses_prior="router_prior" in names,
                     checks=[n[len(CHECK_PREFIX):] for n in names if n.startswith(CHECK_PREFIX)])
        scorer.mean_ = np.asarray(data["mean"], float)
        scorer.scale_ = np.asarray(data["scale"], float)
        scorer.coef_ = np.asarray(data["coef"], float)
        scorer.intercept_ = float(data["intercept"])
        scorer.n_answer_features_ = len(scorer.mean_) - int(scorer.uses_prior)
        return scorer
