"""The routing benchmark's arithmetic on small hand-made tables whose answers are worked out by hand:
hulls, AIQ, APGR (cost and call-share axes), savings at a target, train-chosen operating points, random
mixing, the oracle, and the table preparation (judge-score scaling, clipping, estimated costs, splits)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from benchmarks import curves, routers
from benchmarks.bench_tables import Table, id_order, load, source_split, split_half
from benchmarks.replay_vs_routers import evaluate_split, summarize


def test_hull_drops_points_under_the_chord_and_after_the_best_quality():
    h = curves.hull([(0, 0.5), (1, 0.6), (1.5, 0.55), (2, 0.9), (3, 0.85)])
    assert h.tolist() == [[0.0, 0.5], [2.0, 0.9]]


def test_area_mean_is_exact_and_flat_after_the_last_vertex():
    h = np.array([[0.0, 0.5], [2.0, 0.9]])
    # [0, 2]: mean 0.7 (area 1.4); [2, 4]: 0.9 (area 1.8); (1.4 + 1.8) / 4
    assert curves.area_mean(h, 0.0, 4.0) == pytest.approx(0.8, abs=1e-12)
    assert curves.area_mean(h, 1.0, 2.0) == pytest.approx(0.8, abs=1e-12)
    assert math.isnan(curves.area_mean(h, -1.0, 2.0))  # the hull does not reach back to -1


def test_cost_to_reach_interpolates_along_the_hull():
    h = np.array([[0.0, 0.5], [2.0, 0.9]])
    assert curves.cost_to_reach(h, 0.8) == pytest.approx(1.5)
    assert curves.cost_to_reach(h, 0.4) == 0.0
    assert curves.cost_to_reach(h, 0.95) is None


def test_targets_and_saving():
    assert curves.target_quality("95%", 0.8) == pytest.approx(0.76)
    assert curves.target_quality("parity", 0.8) == pytest.approx(0.79)
    assert curves.saving(1.8, 5.0) == pytest.approx(64.0)
    with pytest.raises(ValueError):
        curves.target_quality("90%", 0.8)


def test_curve_metrics_of_random_mixing_is_half_on_both_axes():
    weak, strong = (1.0, 0.0, 0.6), (5.0, 1.0, 0.8)
    m = curves.curve_metrics([weak, strong], weak, 1.0, 5.0, 0.6, 0.8)
    assert m["aiq"] == pytest.approx(0.7)
    assert m["apgr_cost"] == pytest.approx(0.5)
    assert m["apgr_calls"] == pytest.approx(0.5)
    # 95% of 0.8 = 0.76 on the chord from (1, 0.6) to (5, 0.8): cost 4.2, 16% lower than 5
    assert m["hull_saving_95%"] == pytest.approx(16.0)
    assert m["hull_saving_parity"] == pytest.approx(100 * (1 - 4.8 / 5))


def test_curve_metrics_separates_the_cost_axis_from_the_call_share_axis():
    # one router point: the strong model's quality at cost 2, calling the strong model on half the queries
    weak = (1.0, 0.0, 0.6)
    m = curves.curve_metrics([(2.0, 0.5, 0.8)], weak, 1.0, 5.0, 0.6, 0.8)
    # cost hull (1, .6)-(2, .8), flat after: (0.7 * 1 + 0.8 * 3) / 4 = 0.775
    assert m["aiq"] == pytest.approx(0.775)
    assert m["apgr_cost"] == pytest.approx(0.875)
    # share hull (0, .6)-(0.5, .8): 0.5 * 0.7 + 0.5 * 0.8 = 0.75 -> (0.75 - 0.6) / 0.2
    assert m["apgr_calls"] == pytest.approx(0.75)
    assert m["hull_saving_95%"] == pytest.approx(100 * (1 - 1.8 / 5))  # 0.76 reached at cost 1.8
    assert m["hull_saving_parity"] == pytest.approx(100 * (1 - 1.95 / 5))


def test_choose_on_train_takes_the_cheapest_meeting_the_target_else_the_best():
    pts = [(1, 0, 0.6), (2, 0, 0.8), (3, 0, 0.9), (2, 0, 0.85)]
    assert curves.choose_on_train(pts, 0.8) == 3  # cost 2 twice: the higher quality
    assert curves.choose_on_train(pts, 0.5) == 0
    assert curves.choose_on_train(pts, 0.95) == 2  # nothing meets it: the highest quality


def test_mixture_reaches_the_target_on_the_chord_and_skips_dominated_models():
    pts = [(1.0, 0.0, 0.6), (3.0, 0.0, 0.65), (5.0, 1.0, 0.8)]  # the middle model lies under the chord
    weights = curves.mixture_for(pts, 0.76)
    assert [i for i, _ in weights] == [0, 2]
    assert [w for _, w in weights] == pytest.approx([0.2, 0.8])
    assert curves.mix(pts, weights) == pytest.approx((4.2, 0.8, 0.76))
    assert curves.mixture_for(pts, 0.5) == [(0, 1.0)]
    assert curves.mixture_for(pts, 0.9) == [(2, 1.0)]


def test_spread_ignores_missing_values():
    assert curves.spread([3.0, None, 1.0, float("nan"), 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0, "n": 3}
    assert curves.spread([None])["median"] is None


def test_route_sweep_goes_from_best_predicted_to_cheapest():
    pred = np.array([[0.9, 0.95], [0.2, 0.9]])
    score = np.array([[1.0, 1.0], [0.0, 1.0]])
    cost = np.array([[0.001, 0.01], [0.001, 0.01]])
    pts = routers.route_sweep(pred, score, cost, np.array([0.001, 0.01]), strong=1)
    assert pts[0] == pytest.approx((10.0, 1.0, 1.0))  # lambda 0: model 1 on both queries
    assert pts[-1] == pytest.approx((1.0, 0.0, 0.5))  # lambda 100: the cheap model everywhere


def test_cascade_sweep_pays_the_first_model_always_and_the_strong_one_on_escalation():
    conf = np.array([0.8, 0.3])
    score = np.array([[1.0, 1.0], [0.0, 1.0]])
    cost = np.array([[0.001, 0.01], [0.001, 0.01]])
    sweep = routers.cascade_sweep(conf, 0, 1, score, cost)
    pts = dict(zip(np.round(routers.THRESHOLDS, 4), sweep))
    assert pts[0.0] == pytest.approx((1.0, 0.0, 0.5))  # accept every cheap answer
    assert pts[0.5] == pytest.approx((6.0, 0.5, 1.0))  # escalate the second: (1 + 1 + 10) / 2 per 1k
    assert sweep[-1] == pytest.approx((11.0, 1.0, 1.0))  # above every confidence: escalate both


def _two_model_table() -> Table:
    # train rows 0-3: A right on half, B on all; test rows 4-7: A 0.5, B 0.75
    score = np.array([[1, 1], [0, 1], [1, 1], [0, 1], [1, 1], [1, 1], [0, 1], [0, 0]], float)
    cost = np.tile([0.001, 0.01], (8, 1))
    ids = [f"q{i}" for i in range(8)]
    return Table("hand", ids, [f"question {i}" for i in range(8)], [["", ""] for _ in ids], ["all"] * 8,
                 [""] * 8, ["A", "B"], score, cost)


def test_evaluate_split_reads_train_chosen_points_on_test():
    table = _two_model_table()
    args = SimpleNamespace(curve_floors=[], trials=10, fit_seed=0)
    rows = {r["method"]: r for r in evaluate_split(table, np.arange(4), np.arange(4, 8), 0,
                                                   ["random", "single", "oracle"], args, None)}
    single, rand, oracle = rows["single"], rows["random"], rows["oracle"]
    assert single["strong"] == "B" and single["q_strong"] == pytest.approx(0.75)
    assert single["c_strong"] == pytest.approx(10.0)
    # single: only B reaches 0.95 (and 0.99) on train; on test it is the reference itself
    assert single["95%_saving"] == pytest.approx(0.0) and single["95%_met"] and single["parity_met"]
    assert single["aiq"] == pytest.approx(0.625) and single["apgr_calls"] == pytest.approx(0.5)
    # random, 95%: train chord A (1, .5) - B (10, 1.0) reaches .95 at weight .9 on B
    assert rand["95%_cost_per_1k"] == pytest.approx(9.1)
    assert rand["95%_saving"] == pytest.approx(9.0)
    assert rand["95%_calls"] == pytest.approx(0.9)
    assert rand["95%_quality"] == pytest.approx(0.725) and rand["95%_met"]  # >= 0.95 * 0.75
    # random, parity: .99 on train -> weight .98 on B; test .745 >= .75 - .01
    assert rand["parity_quality"] == pytest.approx(0.745) and rand["parity_met"]
    assert rand["parity_saving"] == pytest.approx(100 * (1 - 9.82 / 10))
    # oracle on test: A, A, B, A (the last query nobody gets right: the cheapest)
    assert oracle["95%_cost_per_1k"] == pytest.approx(3.25)
    assert oracle["95%_saving"] == pytest.approx(67.5)
    assert oracle["95%_calls"] == pytest.approx(0.25)
    assert oracle["95%_quality"] == pytest.approx(0.75)


def test_a_miss_is_counted_against_the_test_halfs_target():
    table = _two_model_table()
    table.score[4:8, 0] = 0.0  # A gets nothing right on test: any mix of A now misses parity
    args = SimpleNamespace(curve_floors=[], trials=10, fit_seed=0)
    rows = evaluate_split(table, np.arange(4), np.arange(4, 8), 0, ["random", "single"], args, None)
    rand = next(r for r in rows if r["method"] == "random")
    assert rand["parity_quality"] == pytest.approx(0.98 * 0.75) and not rand["parity_met"]
    summary = {s["method"]: s for s in summarize(rows + [{**rand, "seed": 1, "parity_met": True}])}
    assert summary["random"]["parity_misses"] == 1 and summary["random"]["seeds"] == 2


def test_load_scales_judge_scores_clips_negatives_and_estimates_costs(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("id,input,model,score\n"
                    "a,abcdefgh,gpt-4-1106-preview,10\n"
                    "a,abcdefgh,gpt-3.5-turbo,-1\n"
                    "b,abcd,gpt-4-1106-preview,5\n"
                    "b,abcd,gpt-3.5-turbo,2\n", encoding="utf-8")
    t = load("t", path)
    assert t.models == ["gpt-3.5-turbo", "gpt-4-1106-preview"]  # cheapest first
    assert t.score.tolist() == [[0.0, 1.0], [0.2, 0.5]]
    # gpt-4-1106-preview: $10 / $30 per 1M; 8 chars -> 2 prompt tokens, 400 completion tokens
    assert t.cost[0, 1] == pytest.approx((2 * 10 + 400 * 30) / 1e6)
    assert any("divided by 10" in n for n in t.notes) and any("clipped to 0" in n for n in t.notes)
    assert any("costs estimated" in n for n in t.notes)


def test_splits_are_halves_disjoint_deterministic_and_seeded():
    table = Table("s", [f"id{i}" for i in range(101)], [""] * 101, [[""]] * 101, [""] * 101,
                  ["train"] * 90 + ["test"] * 11, ["m"], np.zeros((101, 1)), np.zeros((101, 1)))
    train, test = split_half(table, 0)
    assert len(train) == 50 and len(test) == 51 and not set(train) & set(test)
    assert [x.tolist() for x in split_half(table, 0)] == [train.tolist(), test.tolist()]
    assert split_half(table, 1)[0].tolist() != train.tolist()
    assert sorted(id_order(table, 3).tolist()) == list(range(101))
    # seeds give independent halves: any two training halves share about half their ids
    halves = [set(split_half(table, seed)[0].tolist()) for seed in range(5)]
    overlaps = [len(halves[a] & halves[b]) / 50 for a in range(5) for b in range(a + 1, 5)]
    assert all(0.25 < o < 0.75 for o in overlaps), overlaps
    src_train, src_test = source_split(table)
    assert src_train.tolist() == list(range(90)) and src_test.tolist() == list(range(90, 101))


def test_tierwise_goes_through_fit_and_apply_and_reads_the_applied_decisions(tmp_path):
    from benchmarks import tierwise_method

    n = 40
    score = np.ones((n, 2))  # B is always right
    score[np.arange(n) % 4 < 2, 0] = 0.0  # A misses half the queries of either half below
    cost = np.tile([0.001, 0.01], (n, 1))
    ids = [f"q{i:02d}" for i in range(n)]
    table = Table("hand", ids, [f"what is {i} + 1?" for i in range(n)], [[str(i + 1)] * 2 for i in range(n)],
                  ["all"] * n, [""] * n, ["A", "B"], score, cost)
    train, test = table.subset(range(0, n, 2)), table.subset(range(1, n, 2))
    fits = tierwise_method.run(train, test, {"low": 0.2, "top": 1.0}, "B", trials=10, seed=0, tmp=tmp_path)
    # floor 0.2: A alone (0.5 on train, well clear of the floor's margin), paying A only, never calling B
    assert fits["low"]["point"] == pytest.approx((1.0, 0.0, 0.5))
    # floor 1.0: only policies ending at B on the queries A misses reach it; B is called, and quality is 1
    cost_top, calls_top, quality_top = fits["top"]["point"]
    assert quality_top == pytest.approx(1.0) and calls_top > 0 and cost_top > 1.0
    assert fits["low"]["policy"]["answer"]["ladder"] == ["A"]


def test_tierwise_signals_option_reaches_the_fitted_artifact(tmp_path):
    """`--tierwise-signals arithmetic`: the plug-in is on in the fit the benchmark makes, and in its artifact."""
    import json

    from benchmarks import tierwise_method
    from benchmarks.replay_vs_routers import main

    n = 40
    score = np.ones((n, 2))
    score[np.arange(n) % 4 < 2, 0] = 0.0
    table = Table("hand", [f"q{i:02d}" for i in range(n)], [f"what is {i} + 1?" for i in range(n)],
                  [[f"{i} + 1 = <<{i}+1={i + 1}>>{i + 1} #### {i + 1}"] * 2 for i in range(n)], ["all"] * n, [""] * n,
                  ["A", "B"], score, np.tile([0.001, 0.01], (n, 1)))
    train, test = table.subset(range(0, n, 2)), table.subset(range(1, n, 2))
    tierwise_method.run(train, test, {"low": 0.2}, "B", trials=5, seed=0, tmp=tmp_path, plugins=("arithmetic",))
    assert json.loads((tmp_path / "policy-low.json").read_text())["replay"]["plugins"] == ["arithmetic"]
    with pytest.raises(SystemExit):  # an unknown plug-in is the argument's error, before any table is read
        main(["--tables", "gsm8k", "--methods", "tierwise", "--tierwise-signals", "nonesuch", "--seeds", "1"])


def test_main_runs_on_a_table_file_of_your_own(tmp_path, capsys):
    """`--tables NAME=PATH.csv`: the comparison on an outcome table that is not in ../shared."""
    from benchmarks.replay_vs_routers import main

    rng = np.random.default_rng(0)
    lines = ["id,input,model,score,cost_usd"]
    for i in range(40):
        hard = i % 3 == 0
        lines += [f"q{i},question {i},small,{float(not hard and rng.random() < 0.9)},0.001",
                  f"q{i},question {i},big,1.0,0.01"]
    path = tmp_path / "mine.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    main(["--tables", f"mine={path}", "--seeds", "1", "--methods", "single,random,oracle", "--out",
          str(tmp_path / "rows.json")])
    out = capsys.readouterr().out
    assert "### mine: 40 ids x 2 models" in out and "oracle" in out
    with pytest.raises(SystemExit):
        main(["--tables", f"mine={tmp_path / 'absent.csv'}", "--methods", "single"])
    with pytest.raises(SystemExit):
        main(["--tables", "nosuchtable", "--methods", "single"])
