"""The learned scorer's answer signals: grounding in the request and copying from the demos, an older
scorer reading the features it knows, and out-of-fold scores for the rows it was fitted on."""

import dspy
import numpy as np
import pytest

from optimizers.outcomes import OutOfFoldScorer, out_of_fold
from pipelines import confidence as conf
from pipelines.cascade import RungOutcome, answer_features, score_of
from pipelines.confidence import LogisticScorer
from tests.conftest import fake_catalog


class Extract(dspy.Signature):
    """Which order number appears in the message?"""
    message: str = dspy.InputField()
    order_id: str = dspy.OutputField()


def test_an_answer_copied_from_a_demo_is_told_from_one_read_in_the_request():
    demos = [dspy.Example(message="My card was charged twice for order P40992", order_id="P40992")]
    words = conf.demo_input_words(demos, ["message"])
    copied = conf.grounding("P40992", "is the kettle in stock?", words)
    read = conf.grounding("A12345", "where is order A12345?", words)
    both = conf.grounding("P40992", "about order P40992 again", words)  # the request holds it too: not copied
    assert copied == (0.0, 1.0) and read == (1.0, 0.0) and both == (1.0, 0.0)
    assert conf.grounding("", "anything", words) == (0.0, 0.0)
    assert conf.grounding("billing", "I was billed twice", words) == (0.0, 0.0)


def test_answer_features_read_the_predictors_demos():
    predictor = dspy.Predict(Extract)
    predictor.demos = [dspy.Example(message="refund for order P40992", order_id="P40992")]
    catalog = fake_catalog("a", "b")
    row = answer_features(catalog, predictor, "a", {"message": "is it in stock?"}, {"order_id": "P40992"},
                          {"logprob_mean": 0.9, "logprob_min": 0.5})
    assert len(row) == len(conf.ANSWER_FEATURES)
    named = dict(zip(conf.ANSWER_FEATURES, row))
    assert named["answer_from_demos"] == 1.0 and named["answer_in_input"] == 0.0 and named["tier_rank"] == 0.0


def test_a_scorer_fitted_before_the_grounding_features_still_scores():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 6))  # the six features an older artifact's scorer was fitted on, plus no prior
    y = (X[:, 0] > 0).astype(float)
    old = LogisticScorer.from_dict(LogisticScorer().fit(X, y).to_dict())
    assert old.to_dict()["features"] == list(conf.FEATURES[:6])
    outcome = RungOutcome("a", {"order_id": "x"}, features=list(X[0]) + [1.0, 0.0])
    assert score_of(outcome, "learned", old) == pytest.approx(float(old.predict_proba([X[0]])[0]))


def test_out_of_fold_scores_answer_the_fitted_rows_and_the_full_scorer_the_rest():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(120, 3))
    y = (X[:, 0] + 0.5 * rng.normal(size=120) > 0).astype(float)
    folds = np.arange(120) % 5
    full = LogisticScorer().fit(X, y)
    held = out_of_fold(X, y, folds, full)
    scorer = OutOfFoldScorer(full, X, held)
    assert np.allclose(scorer.predict_proba(X), held)
    refit = LogisticScorer().fit(X[folds != 0], y[folds != 0])
    assert np.allclose(held[folds == 0], refit.predict_proba(X[folds == 0]))
    assert not np.allclose(held, full.predict_proba(X))  # in-sample scores are not what the search reads
    new = rng.normal(size=(4, 3))
    assert np.allclose(scorer.predict_proba(new), full.predict_proba(new))
    assert scorer.to_dict() == full.to_dict()  # the artifact carries the scorer fitted on every row


class _Task:
    """predictor_correct of a task whose gold label is in the row."""

    @staticmethod
    def predictor_correct(name, row, outputs):
        return outputs["label"] == row["gold"]


class _Table:
    from optimizers.outcomes import OutcomeTable
    cell_on = OutcomeTable.cell_on  # reads only .cells

    def __init__(self, cells):
        self.cells = {c.key: c for c in cells}


def test_the_learned_scorer_reads_whether_the_previous_rung_agreed():
    """Where a cheap and a mid answer agree they are right, where they differ the mid one is a coin flip;
    the answer features alone cannot tell: fitted with the ladder's features, the scorer trusts an agreeing
    mid answer more than the same answer alone or after a disagreement."""
    from optimizers.outcomes import Cell, earlier_answers, fit_scorers
    from pipelines.cascade import score_of

    rng = np.random.default_rng(0)
    rows, cells = [], []
    for i in range(120):
        gold = ["a", "b"][i % 2]
        agree = i % 3 != 0
        mid = gold if agree or rng.random() < 0.5 else ("b" if gold == "a" else "a")
        cheap = mid if agree else ("b" if mid == "a" else "a")
        rows.append({"id": str(i), "gold": gold})
        for tier, label, rank in (("cheap", cheap, 0.0), ("mid", mid, 0.5), ("top", gold, 1.0)):
            outcome = RungOutcome(tier, {"label": label}, features=[-1.0, -2.0, 1.0, 2.0, rank, 0.0, 0.0, 0.0])
            cells.append(Cell(str(i), "p", tier, outcome))
    table = _Table(cells)
    assert earlier_answers(table, cells[2], ["cheap", "mid", "top"]) == [{"label": cells[0].outcome.outputs["label"]},
                                                                               {"label": cells[1].outcome.outputs["label"]}]
    scorer = fit_scorers(_Task(), table, rows, ["cheap", "mid", "top"])["p"]
    assert scorer.n_answer_features_ == len(conf.FEATURES)
    mid = RungOutcome("mid", {"label": "a"}, features=[-1.0, -2.0, 1.0, 2.0, 0.5, 0.0, 0.0, 0.0])
    agreeing = score_of(mid, "learned", scorer.full, previous=RungOutcome("cheap", {"label": "a"}))
    differing = score_of(mid, "learned", scorer.full, previous=RungOutcome("cheap", {"label": "b"}))
    alone = score_of(mid, "learned", scorer.full)
    assert agreeing > 0.8 and differing < 0.7 and agreeing > alone
