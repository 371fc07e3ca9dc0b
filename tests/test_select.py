"""Choosing the operating point: a quality target is met with a margin of the paired dev noise."""

import numpy as np
import pytest

from optimizers.select import SAFETY_Z, Candidate, Objective, choose


def test_a_cheap_policy_that_answers_differently_needs_a_margin():
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

    # the default margin is the one-sided 95% bound: 1.645 x 0.025 -> 0.734 < 0.736, so even "close"
    # is not shown to match on 40 rows, and the reference stands
    assert SAFETY_Z == 1.645
    chosen, info = choose(cands, Objective(), reference, row_scores=lambda c: scores[c.key])
    assert chosen.key == "flagship" and info["margin"] == 0.0


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
