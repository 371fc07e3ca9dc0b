"""Choosing the operating point: a quality target is met with a margin of the paired dev noise."""

import numpy as np
import pytest

from optimizers.select import SAFETY_Z, Candidate, Objective, choose


def test_a_cheap_policy_that_answers_differently_needs_a_margin(monkeypatch):
    monkeypatch.setattr("optimizers.select.OPTIMISM_REPEATS", 0)  # the margin alone (optimism: below)
    reference_scores = np.array([1.0] * 32 + [0.0] * 8)  # quality 0.80, standard error ~0.064
    reference = Candidate("flagship", "ref", 0.80, 10.0, reference_scores)
    # "lucky": same mean quality as the reference, but right and wrong on different rows
    lucky_scores = np.array([0.0] * 8 + [1.0] * 32)
    lucky = Candidate("lucky", "lucky", 0.80, 1.0)
    # "close": one row lost, otherwise answers like the reference
    close_scores = reference_scores.copy()
    close_scores[0] = 0.0
    close = Candidate("close", "close", 0.775, 4.0)
    scores = {"lucky": lucky_scores, "close": close_scores, "flagship": reference_scores}
    cands = [lucky, close, reference]

    without_margin, _ = choose(cands, Objective(), reference)
    assert without_margin.key == "lucky"  # cheapest above 0.80 - 0.064

    chosen, info = choose(cands, Objective(), reference, row_scores=lambda c: scores[c.key], z=1.0)
    # lucky differs on 16 rows: margin = SE of its paired difference = 0.101 -> 0.699 < 0.736;
    # close differs on one: margin 0.025 -> 0.750 >= 0.736
    assert chosen.key == "close"
    assert abs(info["margin"] - np.std(close_scores - reference_scores, ddof=1) / np.sqrt(40)) < 1e-12
    assert abs(info["target_quality"] - (0.80 - np.std(reference_scores, ddof=1) / np.sqrt(40))) < 1e-12

    # at the one-sided 95% bound (1.645 x 0.025 -> 0.734 < 0.736) even "close" is not shown to match on
    # 40 rows, and the reference stands; the default is one standard error
    assert SAFETY_Z == 1.0
    chosen, info = choose(cands, Objective(), reference, row_scores=lambda c: scores[c.key], z=1.645)
    assert chosen.key == "flagship" and info["margin"] == 0.0


def test_selection_optimism_guards_against_the_luckiest_of_many_policies():
    """Forty policies that are all truly 2 points worse than the reference, each lucky on different rows:
    with the margin alone (even at the one-sided 95% bound) a cheap one clears the tie on these rows; the optimism
    estimated on subsets of the rows sends the choice back to the reference."""
    rng = np.random.default_rng(0)
    n = 120
    reference_scores = (rng.random(n) < 0.8).astype(float)
    reference = Candidate("flagship", "ref", reference_scores.mean(), 100.0, reference_scores)
    scores, cands = {"flagship": reference_scores}, [reference]
    for i in range(40):
        s = np.where(rng.random(n) < 0.2, (rng.random(n) < 0.7).astype(float), reference_scores)
        scores[str(i)] = s
        cands.append(Candidate(str(i), str(i), s.mean(), 1.0 + i, None))
    row_scores = lambda c: scores[c.key]  # noqa: E731
    from optimizers import select

    lucky_gaps = [scores[c.key].mean() - reference_scores.mean() for c in cands[1:]]
    assert max(lucky_gaps) > 0.0  # some of them look better than the reference on these rows
    chosen, info = choose(cands, Objective(), reference, row_scores=row_scores, tolerance=0.01, z=1.645)
    assert info["optimism"] > 0.02
    assert chosen.key == "flagship"
    old = select.OPTIMISM_REPEATS
    try:
        select.OPTIMISM_REPEATS = 0
        chosen, info = choose(cands, Objective(), reference, row_scores=row_scores, tolerance=0.01, z=1.645)
    finally:
        select.OPTIMISM_REPEATS = old
    assert chosen.key != "flagship" and info["optimism"] == 0.0


def test_optimism_is_small_when_one_policy_is_truly_better():
    rng = np.random.default_rng(4)
    n = 2000
    reference_scores = (rng.random(n) < 0.7).astype(float)
    better = np.maximum(reference_scores, (rng.random(n) < 0.2).astype(float))  # right wherever the reference is
    reference = Candidate("flagship", "ref", reference_scores.mean(), 100.0, reference_scores)
    cheap = Candidate("cheap", "cheap", better.mean(), 10.0)
    chosen, info = choose([cheap, reference], Objective(), reference,
                          row_scores=lambda c: better if c.key == "cheap" else reference_scores, tolerance=0.01)
    assert chosen.key == "cheap" and info["optimism"] < 0.005


def test_the_reference_always_qualifies():
    reference_scores = np.array([1.0, 0.0, 1.0, 1.0])
    reference = Candidate("flagship", "ref", 0.75, 10.0, reference_scores)
    noisy = Candidate("noisy", "noisy", 0.75, 1.0)
    chosen, info = choose([noisy, reference], Objective(), reference,
                          row_scores=lambda c: np.array([0.0, 1.0, 1.0, 1.0]) if c.key == "noisy" else reference_scores)
    assert chosen.key == "flagship" and info["margin"] == 0.0


def test_paired_gap_reads_the_noise_of_the_same_rows():
    from optimizers.summary import paired_gap

    reference = np.array([1.0] * 40)
    assert paired_gap(reference, reference)["verdict"] == "within noise"
    one_miss = reference.copy()
    one_miss[3] = 0.0
    gap = paired_gap(one_miss, reference)
    assert gap["delta"] == pytest.approx(-1 / 40) and gap["verdict"] == "within noise"
    many_misses = np.where(np.arange(40) % 3 == 0, 0.0, 1.0)
    assert paired_gap(many_misses, reference)["verdict"] == "worse"
    assert paired_gap(reference, many_misses)["verdict"] == "better"
