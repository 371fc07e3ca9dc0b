"""Replay: outcome tables, the vectorized ladder against pipelines.cascade.run_ladder, fit, apply, CLI."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import cli
from optimizers.replay import PREDICTOR, ReplayOptions, apply, fit, reference_comparison, split_ids
from optimizers.replay_eval import Signals, agreement_confidence, learned_confidence, run_ladder_vectorized
from optimizers.answer_signals import answers_agree, final_number
from optimizers.replay_signals import NONE, ReplayScorer, feature_row
from optimizers.replay_table import load_outcomes
from optimizers.select import Objective
from pipelines import artifact
from pipelines.errors import ConfigError, DatasetError
from pipelines.policy import PredictorPolicy

COLUMNS = ["id", "input", "model", "output", "score", "cost_usd"]
COSTS = {"cheap": 0.0001, "mid": 0.001, "big": 0.01}


def synthetic_rows(n=240, seed=7) -> list[dict]:
    """60% easy sums that every model gets right; on hard ones `cheap` guesses and hedges, `mid` is right
    half the time, `big` always. A cheap>big cascade reaches big's quality at well under half its cost."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a, b = rng.randint(1, 99), rng.randint(1, 99)
        question, truth = f"What is {a} plus {b}?", a + b
        hard = rng.random() < 0.4
        mid_right = not hard or rng.random() < 0.5
        answers = {
            "cheap": (f"Perhaps it is {truth + 1}, not sure.", 0.0) if hard else (f"{a} + {b} = {truth}. #### {truth}", 1.0),
            "mid": (f"{a} + {b} = {truth}. #### {truth}", 1.0) if mid_right else (f"#### {truth - 10}", 0.0),
            "big": (f"Adding: {a} + {b} = {truth}. #### {truth}", 1.0),
        }
        for model, (output, score) in answers.items():
            rows.append({"id": f"q{i:03d}", "input": question, "model": model, "output": output, "score": score,
                         "cost_usd": COSTS[model]})
    return rows


def write_csv(path, rows, columns=COLUMNS):
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# --- loading -------------------------------------------------------------------------------------


def test_csv_jsonl_parquet_load_the_same_matrix(tmp_path):
    rows = synthetic_rows(20)
    paths = [write_csv(tmp_path / "t.csv", rows), write_jsonl(tmp_path / "t.jsonl", rows)]
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "t.parquet")
    paths.append(tmp_path / "t.parquet")
    matrices = [load_outcomes(p) for p in paths]
    for m in matrices:
        assert m.models == ["cheap", "mid", "big"]  # by average cost, not by name
        assert m.n == 20 and m.score.shape == (20, 3)
        assert np.array_equal(m.score, matrices[0].score) and np.array_equal(m.cost, matrices[0].cost)
        assert m.outputs == matrices[0].outputs
    assert matrices[0].cost[0].tolist() == [0.0001, 0.001, 0.01]


def test_costs_priced_from_tokens_and_price_map(tmp_path):
    from pipelines.tiers import price_map

    price = price_map("gpt-4o-mini")
    assert price is not None and price[0] > 0
    path = tmp_path / "t.csv"
    path.write_text("id,model,score,prompt_tokens,completion_tokens,cost_usd\n"
                    "a,gpt-4o-mini,1,1000,200,\n"
                    "a,house-model,0,10,10,0.5\n")
    m = load_outcomes(path)
    j = m.models.index("gpt-4o-mini")
    assert m.cost[0, j] == pytest.approx((1000 * price[0] + 200 * price[1]) / 1e6, rel=1e-12)
    assert m.cost[0, m.models.index("house-model")] == 0.5


@pytest.mark.parametrize("body, message", [
    ("id,model,score,cost_usd\na,x,1,0.1\n,x,1,0.1\n", "row 2 (line 3): missing id"),
    ("id,model,score,cost_usd\na,x,1,0.1\nb,,1,0.1\n", "row 2 (line 3): missing model"),
    ("id,model,score,cost_usd\na,x,1,0.1\nb,x,high,0.1\n", "row 2 (line 3): score 'high' is not a number"),
    ("id,model,score,cost_usd\na,x,1,0.1\nb,x,1,0.1\na,x,0,0.2\n",
     "row 3 (line 4): two different rows for id 'a' and model 'x' (first at row 1 (line 2)): keep one per id and model"),
    ("id,model,score,cost\na,x,1,0.1\n", "row 1 (line 2): no cost_usd and no prompt_tokens/completion_tokens to price "
                                        "it from (is 'cost' the cost? name that column cost_usd)"),
    ("id,model,score,prompt_tokens,completion_tokens\na,no-such-model-zz,1,5,5\n",
     "row 1 (line 2): no cost_usd and no known price for model 'no-such-model-zz'"),
])
def test_bad_rows_name_file_and_row(tmp_path, body, message):
    path = tmp_path / "bad.csv"
    path.write_text(body)
    with pytest.raises(DatasetError) as err:
        load_outcomes(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_bad_jsonl_line_is_named(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": "a", "model": "x", "score": 1, "cost_usd": 0}\n{"id": "b", "model": "x"}\n')
    with pytest.raises(DatasetError, match=r"bad.jsonl: line 2: missing score"):
        load_outcomes(path)


# --- signals and ladder semantics ----------------------------------------------------------------


def test_agreement_compares_final_numbers_then_text():
    assert final_number("so 3 + 4 = 7 eggs.\n#### 1,200") == 1200.0
    assert final_number("She makes $18 every day.") == 18.0
    assert answers_agree("The total is 18 dollars.", "#### 18")
    assert not answers_agree("#### 18", "#### 19")
    assert answers_agree("Paris!", "paris") and not answers_agree("Paris", "Lyon")
    assert not answers_agree("", "")  # no text: nothing to agree on
    assert not answers_agree("#### 3", "three")
    # digit by digit: a float's 9 significant digits merged long ids, phone and account numbers
    assert not answers_agree("Order 1234567891", "Order 1234567892")
    assert answers_agree("#### 2.50", "The price is $2.5") and answers_agree("-0.0", "0")
    assert not answers_agree("It is A12345", "It is B12345")  # an id's digits are not its number


def test_arithmetic_claims_are_rechecked_exactly():
    from optimizers.arithmetic_checks import ARITHMETIC_FEATURES as TEXT_FEATURES, arithmetic_claims
    from optimizers.arithmetic_checks import arithmetic_features as text_features

    working = ("8 x $5 x 60% = $<<8*5*60/100=24>>24. (12 / 20) x 100 = 55%. 1,150 \\* 50 = $<<1150*50=57500>>57,500. "
               "10 / 3 = 3.33 and 0.1 + 0.2 = 0.3, so 2x + 3 = 11 is no claim.")
    assert arithmetic_claims(working) == [(True, 24.0), (True, 24.0), (False, 55.0), (True, 57500.0),
                                          (True, 57500.0), (True, 3.33), (True, 0.3)]
    assert arithmetic_claims("16 - 3 = 14, then <<14*2=27>>27") == [(False, 14.0), (False, 27.0)]
    feats = dict(zip(TEXT_FEATURES, text_features("She has 16 eggs and eats three.", "16 - 3 = 13\n#### 13")))
    assert feats["any_arith_error"] == 0.0 and feats["final_is_last_result"] == 1.0 and feats["ends_cleanly"] == 1.0
    assert feats["input_coverage"] == 1.0  # 16, and "three" as a word
    cut = dict(zip(TEXT_FEATURES, text_features("She has 16 eggs.", "She has 16 + 2 = <<16+2")))
    assert cut["ends_cleanly"] == 0.0


def _sparse(rows, seed=5, drop=0.15):
    """The same table with some cells removed and some left unscored (a judge that failed)."""
    rng = random.Random(seed)
    out = []
    for r in rows:
        u = rng.random()
        if u < drop / 2:
            continue
        out.append({**r, "score": ""} if u < drop else r)
    return out


@pytest.mark.parametrize("sparse", [False, True])
def test_vectorized_ladder_matches_run_ladder(tmp_path, sparse):
    """Plain cascades, plain routers and routed cascades; on a sparse table a missing cell is a failed rung."""
    from optimizers.routing import fit_router
    from pipelines.cascade import RungOutcome, run_ladder
    from pipelines.errors import AllRungsFailed
    from pipelines.routing import hashed_words

    rows = synthetic_rows(60)
    m = load_outcomes(write_csv(tmp_path / "t.csv", _sparse(rows) if sparse else rows))
    assert m.present.all() != sparse
    predicted = fit_router(hashed_words(m.inputs), m.score, m.present, m.models, "hashed-words").predict(
        hashed_words(m.inputs))
    from optimizers.routing import answer_scores, fit_answer_model

    signals = Signals.of(m, predicted, answer_scores(fit_answer_model(m.outputs, m.score, m.present), m.outputs))
    scorer = ReplayScorer(m.models).fit(signals.base, signals.agree, m.score, m.present)
    conf = {"agreement": agreement_confidence(signals), "learned": learned_confidence(scorer, signals)}
    index = {name: j for j, name in enumerate(m.models)}
    rng = random.Random(3)
    failed_all = 0
    for trial in range(60):
        ladder = sorted(rng.sample(m.models, rng.randint(1, 3)), key=index.get)
        estimator = rng.choice(["agreement", "learned"]) if len(ladder) > 1 else "none"
        route = None
        if len(ladder) > 1 and trial % 3:
            route = {"lambda": rng.choice([0.0, 0.05, 0.5, 3.0]), "costs": [COSTS[t] / 0.01 for t in ladder]}
            estimator = "none" if trial % 3 == 1 else estimator
        pp = PredictorPolicy(ladder, estimator, [rng.random() for _ in ladder[1:]], route)
        run = run_ladder_vectorized(pp, index, conf, m.score, m.cost, m.present, predicted)
        for q in range(m.n):
            called, answered = [], []

            def answer(tier):
                j = index[tier]
                called.append(tier)
                if not m.present[q, j]:
                    return RungOutcome(tier=tier, outputs=None, error="absent", cost_usd=m.cost[q, j])
                prev = index[answered[-1]] if answered else NONE
                answered.append(tier)
                agrees = prev != NONE and bool(signals.agree[q, j, prev])
                return RungOutcome(tier=tier, outputs={"answer": "x"}, scores={"agreement": float(agrees)},
                                   features=feature_row(j, signals.base[q, j], prev, agrees),
                                   cost_usd=m.cost[q, j])

            try:
                final, _ = run_ladder(PREDICTOR, pp, answer, m.models, use_fallback=False, scorer=scorer,
                                      predicted=[predicted[q, index[t]] for t in ladder])
                assert final.tier == ladder[run.final_rung[q]]
                assert run.score[q] == m.score[q, index[final.tier]]
            except AllRungsFailed:
                failed_all += 1
                assert run.final_rung[q] == -1 and run.score[q] == 0.0
            assert run.cost[q] == pytest.approx(sum(m.cost[q, index[t]] for t in called), abs=1e-15)
    assert (failed_all > 0) == sparse


# --- fit and apply -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("replay")
    table = write_csv(tmp / "synthetic.csv", synthetic_rows())
    result = fit(ReplayOptions(str(table), Objective(), holdout=0.3, trials=60, seed=0,
                               storage=f"sqlite:///{tmp / 'studies.db'}", out=str(tmp / "policy.json")))
    return tmp, table, result


def test_fit_finds_the_cascade(fitted):
    _, _, result = fitted
    s = result.summary
    assert s["reference"] == "big"  # best single model on the training rows
    # The cheapest way to big's quality: cheap everywhere, mid where cheap hedges, big where mid is wrong too.
    assert s["policy"][PREDICTOR]["ladder"] == ["cheap", "mid", "big"]
    assert s["policy"][PREDICTOR]["estimator"] == "learned"
    assert s["holdout"]["quality"] == 1.0 == s["baselines"]["big"]["holdout"]["quality"]
    m, hold = result.matrix, result.hold_idx
    cheap_wrong, mid_wrong = (m.score[hold, 0] == 0).mean(), (m.score[hold, 1] == 0).mean()
    assert 0.3 < cheap_wrong < 0.5 and s["baselines"]["cheap"]["holdout"]["quality"] == pytest.approx(1 - cheap_wrong)
    # the scorer escalates exactly the wrong answers: cost = cheap + mid where cheap is wrong + big where mid is
    ideal = 1000 * (COSTS["cheap"] + cheap_wrong * COSTS["mid"] + mid_wrong * COSTS["big"])
    assert s["holdout"]["cost_per_1k"] == pytest.approx(ideal, rel=1e-9)
    assert s["savings_pct"] == pytest.approx(100 * (1 - ideal / 10.0), rel=1e-9)
    assert s["savings_pct"] > 60
    assert s["paid_calls"] == 0 and s["full_matrix_calls"] == 240 * 3 and s["trials"] == 60
    assert s["dev"]["n"] + s["holdout"]["n"] == 240
    assert set(s) >= {"task", "objective", "artifact", "policy", "dev", "holdout", "baselines", "reference",
                      "savings_pct", "paid_calls", "full_matrix_calls", "trials", "spent_usd"}
    assert set(s["baselines"]) == {"cheap", "mid", "big"}


def test_report_on_a_replay_artifact_lays_out_savings_segments_and_trials(fitted, tmp_path):
    """`tierwise report` on a replay artifact: the fitted table replayed, read as an optimize artifact's
    report (it refused: "no evaluation section")."""
    from metrics.report import load_report, render_text, write_report

    _, _, result = fitted
    s = result.summary
    report = load_report(s["artifact"])
    savings = report.tables["savings"].set_index(["split", "against"])
    for split in ("dev", "holdout"):
        row = savings.loc[(split, "big-only")]
        assert row["quality"] == pytest.approx(s[split]["quality"], abs=1e-12)
        assert row["cost_per_1k"] == pytest.approx(s[split]["cost_per_1k"], rel=1e-9)
        assert row["other_quality"] == pytest.approx(s["baselines"]["big"][split]["quality"], abs=1e-12)
    assert report.tables["segments"]["n"].sum() == 240 and report.meta["flagship"] == "big"
    assert report.tables["trials"]["chosen"].sum() >= 1 and report.tables["trials"]["number"].nunique() == s["trials"]
    assert "routing-fairness audit: no segment flagged" in render_text(report)
    assert {"savings.csv", "segments.csv", "pareto.png", "report.html"} <= set(write_report(report, tmp_path / "out"))


def test_holdout_zero_prints_dev_figures_not_nan(fitted, tmp_path):
    _, table, _ = fitted
    res = CliRunner().invoke(cli.app, ["replay", "fit", str(table), "--holdout", "0", "--trials", "5", "--features",
                                       "hashed-words", "--storage", f"sqlite:///{tmp_path / 's.db'}",
                                       "--out", str(tmp_path / "p.json")])
    assert res.exit_code == 0, res.output
    assert "holdout:  none (--holdout 0)" in res.output and "baselines (dev):" in res.output
    assert "nan" not in res.output.lower()


def test_a_replay_report_says_its_dev_figures_are_in_sample(tmp_path):
    """The report replays the policy with the router and scorer fitted on every training row, where the fit
    scored dev out of fold: on a noisy table the dev lines differ, and a note says which is which."""
    from metrics.report import load_report

    rng = random.Random(1)
    rows = []
    for i in range(200):
        hard = rng.random() < 0.4
        question = f"question {i} " + ("hard tricky multi step" if hard else "easy simple")
        small_right, big_right = rng.random() < (0.3 if hard else 0.9), rng.random() < 0.95
        rows.append({"id": f"q{i}", "input": question, "model": "small", "score": float(small_right),  # some wrong
                     "cost_usd": 0.001, "output": f"ans{i}" if small_right or i % 5 == 0 else "wrong"})  # look right
        rows.append({"id": f"q{i}", "input": question, "model": "big", "score": float(big_right) if i % 7 != 3 else "",
                     "cost_usd": 0.01, "output": f"ans{i}" if big_right else "bad"})
    table = write_csv(tmp_path / "noisy.csv", rows)
    result = fit(ReplayOptions(str(table), Objective(min_quality=0.8), holdout=0.3, trials=60, seed=0,
                               storage=f"sqlite:///{tmp_path / 's.db'}", out=str(tmp_path / "p.json")))
    report = load_report(result.summary["artifact"])
    dev = report.tables["savings"].set_index(["split", "against"]).loc[("dev", "big-only"), "quality"]
    assert dev != pytest.approx(result.summary["dev"]["quality"], abs=5e-4)
    assert f"dev quality {dev:.3f} here is in-sample" in " ".join(report.meta["notes"])
    assert f"out-of-fold dev quality was {result.summary['dev']['quality']:.3f}" in " ".join(report.meta["notes"])


def test_an_answer_that_stood_because_the_rungs_after_it_failed_is_a_fallback_in_the_report(tmp_path):
    """A ladder cheap > mid whose mid cell is absent keeps cheap's answer: the rung table counts that step as a
    fallback (it read 'escalated', which counted it twice there)."""
    from metrics.report import load_report

    rows = [{**r, "score": "" if r["model"] == "mid" and int(r["id"][1:]) % 3 == 0 else r["score"]}
            for r in synthetic_rows(60)]
    table = write_csv(tmp_path / "gaps.csv", rows)
    fitted = fit(ReplayOptions(str(table), Objective(), holdout=0.3, trials=5, storage=f"sqlite:///{tmp_path / 's.db'}",
                               out=str(tmp_path / "p.json"), features="hashed-words"))
    body = artifact.read(fitted.summary["artifact"])
    # every id climbs from cheap (a threshold no confidence reaches) to mid, the ladder's top
    body["policy"]["predictors"][PREDICTOR] = {**body["policy"]["predictors"][PREDICTOR], "ladder": ["cheap", "mid"],
                                               "estimator": "learned", "thresholds": [1.0], "route": None}
    artifact.save(body, tmp_path / "p.json")
    steps = load_report(tmp_path / "p.json").tables["rungs"].set_index("tier")
    absent = sum(1 for r in rows if r["model"] == "mid" and r["score"] == "")
    assert steps.loc["mid", "failed"] == absent and steps.loc["cheap", "escalated"] == 60 - absent


def test_a_replay_report_needs_the_table_it_was_fitted_on(tmp_path, monkeypatch):
    from metrics.report import load_report

    monkeypatch.chdir(tmp_path)
    table = write_csv(tmp_path / "t.csv", synthetic_rows(60))
    fitted = fit(ReplayOptions("t.csv", Objective(), holdout=0.3, trials=5, storage=f"sqlite:///{tmp_path / 's.db'}",
                               out=str(tmp_path / "p.json"), features="hashed-words"))
    policy = fitted.summary["artifact"]
    # fitted on a relative path, reported from another folder: the policy keeps the table's absolute path
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert load_report(policy).tables["savings"]["split"].tolist()
    write_csv(table, synthetic_rows(60, seed=8))
    with pytest.raises(ConfigError, match=r"t\.csv changed since .*p\.json was fitted on it; refit it"):
        load_report(policy)
    table.unlink()
    with pytest.raises(ConfigError, match=r"p\.json was fitted on .*t\.csv, which is not there"):
        load_report(policy)


def test_artifact_verifies_and_refuses_tampering(fitted):
    tmp, _, result = fitted
    body = artifact.read(result.summary["artifact"])
    assert body["program"]["task"] is None and body["replay"]["models"] == ["cheap", "mid", "big"]
    assert len(body["replay"]["split"]["holdout"]) == result.summary["holdout"]["n"]
    text = (tmp / "policy.json").read_text().replace('"cheap"', '"mid"', 1)
    (tmp / "tampered.json").write_text(text)
    with pytest.raises(Exception, match="checksum mismatch"):
        artifact.read(tmp / "tampered.json")


def test_apply_recomputes_fitted_holdout_exactly(fitted):
    tmp, table, result = fitted
    runner = CliRunner()
    out = tmp / "decisions.csv"
    res = runner.invoke(cli.app, ["replay", "apply", result.summary["artifact"], str(table), "--decisions", str(out)])
    assert res.exit_code == 0, res.output
    with out.open() as f:
        decisions = {r["id"]: r for r in csv.DictReader(f)}
    assert len(decisions) == 240 and {r["segment"] for r in decisions.values()} == {"all"}
    hold_ids = [result.matrix.ids[i] for i in result.hold_idx]
    scores = np.array([float(decisions[i]["score"]) for i in hold_ids])
    costs = np.array([float(decisions[i]["cost_usd"]) for i in hold_ids])
    assert scores.mean() == result.summary["holdout"]["quality"]
    assert costs.mean() * 1000 == pytest.approx(result.summary["holdout"]["cost_per_1k"], rel=1e-12)
    for rid in hold_ids:
        called = decisions[rid]["models_called"].split(";")
        assert called[-1] == decisions[rid]["final_model"]
        assert float(decisions[rid]["cost_usd"]) == pytest.approx(sum(COSTS[m] for m in called), rel=1e-12)
    h = result.summary["holdout"]
    assert f"fitted holdout ids: {h['n']}   quality {h['quality']:.4f}   cost/1k ${h['cost_per_1k']:.6f}" in res.output


def test_apply_says_what_the_table_left_out_and_knows_the_fitted_table(fitted, tmp_path):
    """On another table that reuses the fitted ids, no "fitted holdout" line (those are other rows); a table
    without answer text, absent cells and ids no rung answered are each a note, not a silent change."""
    _, _, result = fitted
    policy = result.summary["artifact"]
    assert result.summary["policy"][PREDICTOR]["estimator"] == "learned"  # reads answer text
    rows = [{**r, "output": "", "input": ""} for r in synthetic_rows(seed=99)]  # same ids, no answers, no inputs
    rows = [r for r in rows if not (r["id"] == "q000" and r["model"] != "big")]
    rows = [{**r, "score": ""} if r["id"] == "q001" else r for r in rows]  # no model's answer scored
    other = write_csv(tmp_path / "other.csv", rows)
    res = CliRunner().invoke(cli.app, ["replay", "apply", policy, str(other)])
    assert res.exit_code == 0, res.output
    assert "fitted holdout ids" not in res.output
    notes = [line for line in res.output.splitlines() if line.startswith("note: ")]
    assert any("2 cells absent (1 of 240 ids" in n for n in notes)
    assert any("3 unscored cells" in n for n in notes)
    assert any("1 of 240 ids had no scored answer on any rung the policy called: each scores 0" in n for n in notes)
    assert any("the policy's 'learned' confidence reads answer text, which this table lacks on cheap, mid: it judges "
               "the inputs alone (it was fitted on a table with answer text)" in n for n in notes)
    assert any("the policy's router reads each query's input text, which this table lacks: it routes every query "
               "as an empty input; add an input column" in n for n in notes)
    applied = apply(policy, result.matrix.source)
    assert applied.fitted_table and len(applied.fitted_holdout) == result.summary["holdout"]["n"]
    assert applied.notes == []


def _tampered(tmp_path, policy, edit) -> Path:
    """The artifact edited by `edit(body)` and saved with a fresh checksum (a hand edit that passes it)."""
    body = artifact.read(policy)
    edit(body)
    return artifact.save(body, tmp_path / "edited.json")


@pytest.mark.parametrize("edit, message", [
    (lambda b: b["policy"]["predictors"].clear(), "malformed replay policy (KeyError: 'answer')"),
    (lambda b: b["replay"].pop("split"), "malformed replay policy (KeyError: 'split')"),
    (lambda b: b["replay"].update(answer_model={"bias": [0.0]}), "malformed replay policy (KeyError: 'weights')"),
    (lambda b: b["replay"].update(score_max="ten"), "malformed replay policy (ValueError: score_max 'ten')"),
])
def test_a_hand_edited_replay_artifact_is_one_line(fitted, tmp_path, edit, message):
    _, table, result = fitted
    edited = _tampered(tmp_path, result.summary["artifact"], edit)
    res = CliRunner().invoke(cli.app, ["replay", "apply", str(edited), str(table)])
    assert res.exit_code == 2 and res.output.strip() == f"error: {edited}: {message}"


def test_replay_outputs_that_cannot_be_written_stop_before_the_work(fitted, tmp_path):
    _, table, result = fitted
    (tmp_path / "folder").mkdir()
    res = CliRunner().invoke(cli.app, ["replay", "apply", result.summary["artifact"], str(table),
                                       "--decisions", str(tmp_path / "folder")])
    assert res.exit_code == 2 and res.output.strip() == (
        f"error: --decisions {tmp_path / 'folder'}: is a directory; give a file name such as "
        f"{tmp_path / 'folder' / 'decisions.csv'}")
    res = CliRunner().invoke(cli.app, ["replay", "fit", str(table), "--out", str(tmp_path / "folder"),
                                       "--storage", f"sqlite:///{tmp_path / 's.db'}"])
    assert res.exit_code == 2 and "--out" in res.output and "is a directory" in res.output
    assert not (tmp_path / "s.db").exists()  # refused before the search


def test_a_table_of_one_model_is_one_line(tmp_path):
    table = write_csv(tmp_path / "one.csv", [r for r in synthetic_rows(30) if r["model"] == "mid"])
    res = CliRunner().invoke(cli.app, ["replay", "fit", str(table), "--storage", f"sqlite:///{tmp_path / 's.db'}"])
    assert res.exit_code == 2 and res.output.strip() == (
        f"error: {table}: one model (mid): a policy chooses among two or more")


def test_objectives_min_quality_and_budget(fitted, tmp_path):
    _, table, _ = fitted
    storage = f"sqlite:///{tmp_path / 's.db'}"
    capped = fit(ReplayOptions(str(table), Objective(max_cost_per_1k=0.5), trials=40, storage=storage,
                               out=str(tmp_path / "a.json"))).summary
    # cheap alone (0.1/1k) fits, a cheap>mid cascade (1.1/1k) does not; a router may send a few queries up
    assert capped["dev"]["cost_per_1k"] <= 0.5
    assert capped["dev"]["quality"] >= capped["baselines"]["cheap"]["dev"]["quality"]
    assert capped["policy"][PREDICTOR]["ladder"][0] == "cheap"
    matched = fit(ReplayOptions(str(table), Objective(match_tier="mid"), trials=40, storage=storage,
                                out=str(tmp_path / "b.json"))).summary
    assert matched["reference"] == "mid"
    assert matched["dev"]["quality"] >= matched["baselines"]["mid"]["dev"]["quality"] - 0.05
    assert matched["dev"]["cost_per_1k"] < matched["baselines"]["mid"]["dev"]["cost_per_1k"]


def test_min_quality_floor_holds_with_a_margin(fitted, tmp_path, monkeypatch):
    from optimizers.replay import SAFETY_Z
    from optimizers.select import standard_error

    monkeypatch.setattr("optimizers.select.OPTIMISM_REPEATS", 0)  # the margin alone (test_select: optimism)
    _, table, result = fitted
    floor, storage = 0.8, f"sqlite:///{tmp_path / 's.db'}"
    chosen = {}
    for z in (0.0, 1.645):  # one stored study (of trials enough to reach the floor's cheap end): only the margin differs
        s = fit(ReplayOptions(str(table), Objective(min_quality=floor), trials=120, storage=storage,
                              out=str(tmp_path / "f.json"), safety_z=z))
        ref = s.matrix.models.index(s.summary["reference"])
        margin = z * standard_error(s.dev_run.score - s.matrix.score[s.dev_idx, ref])
        assert s.summary["dev"]["quality"] - margin >= floor - 1e-12
        assert any(f"minus {z:g} paired standard error(s)" in note for note in s.summary["notes"])
        chosen[z] = s.summary["dev"]
    assert SAFETY_Z == 1.0  # the default: one standard error (plus the selection optimism)
    # without a margin the cheapest raw pass (training quality just above 0.8) is chosen; with one, a dearer one
    assert chosen[0.0]["quality"] < 0.85 and chosen[0.0]["cost_per_1k"] < chosen[1.645]["cost_per_1k"]


# --- CLI errors ----------------------------------------------------------------------------------


def test_cli_bad_table_exits_2_with_one_line(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("id,model,score,cost_usd\na,x,1,0.1\nb,x,oops,0.1\n")
    res = CliRunner().invoke(cli.app, ["replay", "fit", str(path), "--storage", f"sqlite:///{tmp_path / 's.db'}"])
    assert res.exit_code == 2
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert lines == [f"error: {path}: row 2 (line 3): score 'oops' is not a number"]


def test_cli_unknown_match_tier_and_wrong_artifact(fitted, tmp_path):
    _, table, _ = fitted
    res = CliRunner().invoke(cli.app, ["replay", "fit", str(table), "--match-tier", "gpt-9",
                                       "--storage", f"sqlite:///{tmp_path / 's.db'}"])
    assert res.exit_code == 2 and "--match-tier 'gpt-9' is not a model" in res.output
    (tmp_path / "x.json").write_text("{}")
    res = CliRunner().invoke(cli.app, ["replay", "apply", str(tmp_path / "x.json"), str(table)])
    assert res.exit_code == 2 and res.output.strip() == f"error: {tmp_path / 'x.json'}: not a tierwise artifact"


def test_split_is_by_id_and_deterministic(fitted):
    _, _, result = fitted
    dev, hold = split_ids(result.matrix, 0.3, 0)
    assert set(dev).isdisjoint(hold) and len(dev) + len(hold) == 240
    assert np.array_equal(hold, result.hold_idx)


def test_rerun_resumes_the_stored_study(fitted, tmp_path):
    _, table, _ = fitted
    options = dict(holdout=0.3, seed=0, storage=f"sqlite:///{tmp_path / 's.db'}", out=str(tmp_path / "p.json"))
    first = fit(ReplayOptions(str(table), trials=25, **options)).summary
    again = fit(ReplayOptions(str(table), trials=30, **options)).summary
    assert (first["trials"], first["trials_run_now"]) == (25, 25)
    assert (again["trials"], again["trials_run_now"]) == (30, 5) and again["study"] == first["study"]
    # The same scores over other input text: the routers read other features, so the study starts anew.
    reworded = tmp_path / "reworded" / Path(table).name  # the same file name: the study name's prefix
    reworded.parent.mkdir()
    write_csv(reworded, [{**r, "input": r["input"].replace("What is", "Compute")} for r in synthetic_rows()])
    other = fit(ReplayOptions(str(reworded), trials=5, **options)).summary
    assert other["trials_run_now"] == 5 and other["study"] != first["study"]


# --- benchmark arithmetic (benchmarks/replay_vs_routers.py) ---------------------------------------


def test_sparse_and_unscored_cells_are_failed_rungs_with_a_note(tmp_path):
    rows = synthetic_rows(40)
    rows = [r for r in rows if not (r["id"] == "q003" and r["model"] == "mid")]  # never answered
    rows = [{**r, "score": ""} if r["id"] == "q004" and r["model"] == "cheap" else r for r in rows]  # judge failed
    m = load_outcomes(write_csv(tmp_path / "t.csv", rows))
    q3, q4 = m.ids.index("q003"), m.ids.index("q004")
    assert not m.present[q3, m.models.index("mid")] and not m.present[q4, m.models.index("cheap")]
    assert m.present.sum() == 40 * 3 - 2
    assert m.cost[q3, m.models.index("mid")] == 0.0  # no row: nothing was paid
    assert m.cost[q4, m.models.index("cheap")] == COSTS["cheap"]  # unscored: the call was paid
    assert any("1 unscored cells" in n for n in m.notes) and any("1 cells absent" in n for n in m.notes)
    # a cheap > mid cascade that always escalates: q003 climbs past the missing mid and ends on... nothing
    # above it, so cheap's answer stands; q004's cheap rung failed, so mid answers
    index = {t: j for j, t in enumerate(m.models)}
    conf = {"agreement": np.zeros((m.n, 3, 4))}
    run = run_ladder_vectorized(PredictorPolicy(["cheap", "mid"], "agreement", [1.0]), index, conf, m.score,
                                m.cost, m.present)
    assert run.final_rung[q3] == 0 and run.score[q3] == m.score[q3, 0]
    assert run.final_rung[q4] == 1 and run.cost[q4] == pytest.approx(COSTS["cheap"] + COSTS["mid"])


def test_ids_without_the_reference_are_dropped_and_fit_applies(tmp_path):
    rows = [r for r in synthetic_rows(120) if not (r["model"] == "big" and r["id"] in {"q001", "q002"})]
    rows = [r for r in rows if not (r["model"] == "cheap" and r["id"] == "q010")]
    table = write_csv(tmp_path / "t.csv", rows)
    fitted = fit(ReplayOptions(str(table), Objective(), holdout=0.3, trials=30, storage=f"sqlite:///{tmp_path / 's.db'}",
                               out=str(tmp_path / "p.json"), features="hashed-words"))
    notes = fitted.summary["notes"]
    assert fitted.summary["reference"] == "big" and fitted.matrix.n == 118
    assert any("2 of 120 ids dropped: no scored answer from the reference big" in n for n in notes)
    assert any("3 cells absent (3 of 120 ids" in n for n in notes)
    decisions = apply(fitted.summary["artifact"], table).decisions
    by_id = {d.id: d for d in decisions}
    assert len(decisions) == 120 and by_id["q001"].final_model != "big"
    held = [by_id[fitted.matrix.ids[i]] for i in fitted.hold_idx]
    assert np.mean([d.score for d in held]) == pytest.approx(fitted.summary["holdout"]["quality"], abs=1e-12)


def test_a_flagship_that_timed_out_on_some_ids_stays_the_reference(tmp_path):
    """`big` (always right) absent on a quarter of the ids scored 0.75 there, under mid's 0.8: mid became the
    reference. It is now picked on the ids each model answered."""
    rows = [r for r in synthetic_rows(120) if not (r["model"] == "big" and int(r["id"][1:]) % 4 == 0)]
    fitted = fit(ReplayOptions(str(write_csv(tmp_path / "t.csv", rows)), Objective(), holdout=0.3, trials=10,
                               storage=f"sqlite:///{tmp_path / 's.db'}", out=str(tmp_path / "p.json"),
                               features="hashed-words"))
    assert fitted.summary["reference"] == "big" and fitted.matrix.n == 90


@pytest.mark.parametrize("body, score_max, message", [
    ("id,model,score,cost_usd\na,x,7,0.1\n", None, "row 1 (line 2): score 7 is out of range (scores must lie in "
                                                   "[0, 1]; for judge scores on another scale pass --score-max"),
    ("id,model,score,cost_usd\na,x,11,0.1\n", 10.0, "score 11 is out of range (above --score-max 10)"),
    ("id,model,score,cost_usd\na,x,-0.5,0.1\n", None, "score -0.5 is out of range"),
    ("id,model,score,cost_usd\na,x,-0.5,0.1\n", 10.0, "score -0.5 is out of range (below 0 with --score-max 10)"),
    ("id,model,score,cost_usd\na,x,1,inf\n", None, "row 1 (line 2): cost_usd is inf"),
    ("id,model,score,cost_usd\na,x,1,nan\n", None, "row 1 (line 2): a blank cost_usd and no prompt_tokens"),
])
def test_out_of_range_scores_and_non_finite_costs(tmp_path, body, score_max, message):
    path = tmp_path / "bad.csv"
    path.write_text(body)
    with pytest.raises(DatasetError) as err:
        load_outcomes(path, score_max)
    assert message in str(err.value)


def test_clip_scores_clips_strays_not_another_scale(tmp_path):
    """--clip-scores on a 1-10 judge table made every model score 1.0; it clips only a metric that strays."""
    path = tmp_path / "t.csv"
    path.write_text("id,model,score,cost_usd\na,x,1.2,0.1\na,y,-0.03,0.2\n")
    assert load_outcomes(path, clip_scores=True).score.tolist() == [[1.0, 0.0]]
    path.write_text("id,model,score,cost_usd\na,x,7,0.1\na,y,3,0.2\n")
    with pytest.raises(DatasetError, match=r"score 7 is out of range \(.*pass --score-max .*--clip-scores clips "
                                           r"only a metric that strays up to 0\.5 outside"):
        load_outcomes(path, clip_scores=True)


def test_missing_value_words_are_unscored_cells(tmp_path):
    """R, SQL and pandas exports write NA, null, NaN, - for a score nobody gave: unscored cells, noted."""
    path = tmp_path / "t.csv"
    words = ["NA", "N/A", "null", "None", "NaN", "-", ""]
    path.write_text("id,model,score,cost_usd\nq,x,1,0.1\nq,y,0,0.2\n" +
                    "".join(f"q{i},x,1,0.1\nq{i},y,{w},0.2\n" for i, w in enumerate(words)))
    m = load_outcomes(path)
    assert m.present[:, m.models.index("y")].tolist() == [True] + [False] * 7 and m.present.all(axis=0)[0]
    assert "7 unscored cells (a blank or NA score)" in " ".join(m.notes)
    # a failed call logged with no price either (NA score and NA cost) is a failed rung costing nothing
    path.write_text("id,model,score,cost_usd\nq,x,1,0.1\nq,y,0,0.2\nr,x,1,0.1\nr,y,NA,NA\n")
    m = load_outcomes(path)
    assert m.cost[1].tolist() == [0.1, 0.0] and "1 of them had no cost either, priced at 0" in " ".join(m.notes)


def _rewritten(tmp_path, name, transform):
    """synthetic_rows(60) as CSV, its text passed through `transform` (bytes -> bytes)."""
    plain = write_csv(tmp_path / "plain.csv", synthetic_rows(60))
    path = tmp_path / name
    path.write_bytes(transform(plain.read_bytes()))
    return plain, path


@pytest.mark.parametrize("name, transform", [
    ("bom.csv", lambda b: b"\xef\xbb\xbf" + b),  # Excel's "CSV UTF-8"
    ("caps.csv", lambda b: b.replace(b"id,", b"Id,", 1).replace(b",model,", b", Model ,", 1)),
    ("tabs.tsv", lambda b: b.replace(b",", b"\t")),
    ("tabs.csv", lambda b: b.replace(b",", b"\t")),
    ("semicolons.csv", lambda b: b.replace(b",", b";")),
    ("decimal_commas.csv", lambda b: b.replace(b",", b";").replace(b"0.", b"0,").replace(b"1.0", b"1,0")),
    ("crlf.csv", lambda b: b.replace(b"\n", b"\r\n")),
])
def test_csv_as_spreadsheets_save_it_reads_the_same(tmp_path, name, transform):
    plain, path = _rewritten(tmp_path, name, transform)
    a, b = load_outcomes(plain), load_outcomes(path)
    assert (a.ids, a.models, a.inputs) == (b.ids, b.models, b.inputs)
    assert np.array_equal(a.score, b.score) and np.array_equal(a.cost, b.cost)


def test_apply_says_when_a_table_looks_already_scaled(tmp_path):
    """A policy fitted with --score-max 10 divides every table it reads by 10: on a table already on [0, 1]
    each quality came out ten times too low, silently."""
    rows = synthetic_rows(60)
    judged = write_csv(tmp_path / "judged.csv", [{**r, "score": r["score"] * 10} for r in rows])
    fitted = fit(ReplayOptions(str(judged), Objective(), holdout=0.3, trials=3, score_max=10.0, features="hashed-words",
                               storage=f"sqlite:///{tmp_path / 's.db'}", out=str(tmp_path / "p.json")))
    warning = "every score of this table was at most 1 before the division by --score-max 10"
    assert not any(warning in n for n in apply(fitted.summary["artifact"], judged).notes)
    scaled = write_csv(tmp_path / "scaled.csv", rows)
    assert any(warning in n and "these qualities are 10 times too low" in n
               for n in apply(fitted.summary["artifact"], scaled).notes)
    # the same table given on its own scale: --score-max 1 here, and the note says the fit used another
    again = apply(fitted.summary["artifact"], scaled, score_max=1.0)
    assert [d.score for d in again.decisions] == [d.score for d in apply(fitted.summary["artifact"], judged).decisions]
    assert "scores divided by --score-max 1, given here (the policy was fitted with --score-max 10)" in again.notes
    assert not any(warning in n for n in again.notes)
    # and fit warns the same way: a 0/1 table divided by 10 makes every quality and the parity tie 10 times off
    wrong = fit(ReplayOptions(str(scaled), Objective(), holdout=0.3, trials=3, score_max=10.0, features="hashed-words",
                              storage=f"sqlite:///{tmp_path / 's2.db'}", out=str(tmp_path / "p2.json")))
    assert any(warning in n and "a 0.01 tie 10 times looser" in n for n in wrong.summary["notes"])


def test_repeated_rows_are_read_once_and_float_ids_are_the_same_query(tmp_path):
    """A retried log write repeats a row exactly: one cell, noted (it stopped the fit). pandas writes an integer id
    column with a blank as floats: id 0.0 is query 0, not a query no other model answered."""
    rows = [{"id": i, "model": m, "score": 1, "cost_usd": c} for i in range(3) for m, c in (("a", 0.1), ("b", 0.2))]
    rows = [{**r, "id": float(r["id"])} if r["model"] == "b" else r for r in rows] + rows[:2]
    m = load_outcomes(write_jsonl(tmp_path / "t.jsonl", rows))
    assert m.ids == ["0", "1", "2"] and m.present.all()
    assert "2 rows repeated an earlier row exactly (same id, model, score, cost and answer): each read once" in m.notes
    apart = [{"id": f"{r['model']}{r['id']}", **{k: v for k, v in r.items() if k != "id"}} for r in rows[:6]]
    with pytest.raises(DatasetError, match=r"no id has scored answers from two models, so there is nothing to compare"):
        fit(ReplayOptions(str(write_jsonl(tmp_path / "apart.jsonl", apart)), Objective(), holdout=0.3, trials=3,
                          storage=f"sqlite:///{tmp_path / 's.db'}", out=str(tmp_path / "p.json")))


def test_apply_prints_the_saving_and_refuses_agreement_without_answers(fitted, tmp_path):
    """apply compares the policy with its reference model alone on the same ids (it printed quality and cost only);
    a policy that escalates on disagreement cannot run on a table without answers (every id climbed to the top,
    costing more than the reference, with exit 0); the decisions name the models the table had no row of."""
    from optimizers.replay import reference_comparison

    _, table, result = fitted
    policy = result.summary["artifact"]
    applied = apply(policy, table)
    versus = reference_comparison(applied)
    big = result.matrix.models.index("big")
    assert versus["reference"] == "big" and versus["n"] == 240
    assert versus["reference_cost_per_1k"] == pytest.approx(1000 * COSTS["big"])
    assert versus["reference_quality"] == pytest.approx(result.matrix.score[:, big].mean())
    assert versus["saving_pct"] == pytest.approx(100 * (1 - versus["cost_per_1k"] / versus["reference_cost_per_1k"]))
    res = CliRunner().invoke(cli.app, ["replay", "apply", policy, str(table)])
    assert f"vs big alone on the 240 ids it answered: quality {versus['quality']:.4f} vs " \
           f"{versus['reference_quality']:.4f}" in res.output and f"saving {versus['saving_pct']:.1f}%" in res.output
    agreeing = _tampered(tmp_path, policy, lambda b: b["policy"]["predictors"]["answer"].update(
        estimator="agreement", thresholds=[0.5] * (len(b["policy"]["predictors"]["answer"]["ladder"]) - 1)))
    bare = write_csv(tmp_path / "bare.csv", [{**r, "output": ""} for r in synthetic_rows()])
    res = CliRunner().invoke(cli.app, ["replay", "apply", str(agreeing), str(bare)])
    assert res.exit_code == 2 and "the policy escalates when two models' answers disagree, and this table has no " \
        "answer text on" in res.stderr and "add an output column" in res.stderr, res.output
    sparse = write_csv(tmp_path / "sparse.csv", [r for r in synthetic_rows() if (r["id"], r["model"]) != ("q000", "cheap")])
    out = tmp_path / "d.csv"
    assert CliRunner().invoke(cli.app, ["replay", "apply", policy, str(sparse), "--decisions", str(out)]).exit_code == 0
    with out.open() as f:
        first = next(r for r in csv.DictReader(f) if r["id"] == "q000")
    assert first["models_called"].startswith("cheap") and first["models_without_row"] == "cheap"


def test_apply_reads_logs_nobody_scored_for_decisions_and_costs(fitted, tmp_path):
    """Production logs have no labels: apply on a table without a score column gives each id's models and cost
    (the same decisions as on the scored table), the saving against the reference in cost, and says quality is
    unknown; a row with neither answer text nor a cost is a failed call. fit still needs scores."""
    _, table, result = fitted
    policy = result.summary["artifact"]
    rows = synthetic_rows()
    failed = {"output": "", "cost_usd": "", "score": ""}  # a failed call: no answer, no price (nor a score)
    rows = [{**r, **failed} if (r["id"], r["model"]) == ("q003", "cheap") else r for r in rows]
    unscored = write_csv(tmp_path / "logs.csv", rows, [c for c in COLUMNS if c != "score"])
    labelled = write_csv(tmp_path / "labelled.csv", rows)
    out = tmp_path / "d.csv"
    res = CliRunner().invoke(cli.app, ["replay", "apply", policy, str(unscored), "--decisions", str(out)])
    assert res.exit_code == 0, res.output
    scored = {d.id: d for d in apply(policy, labelled).decisions}
    with out.open() as f:
        decisions = list(csv.DictReader(f))
    assert len(decisions) == 240 and all(d["score"] == "" for d in decisions)
    for d in decisions:
        assert d["models_called"].split(";") == scored[d["id"]].models_called
        assert float(d["cost_usd"]) == pytest.approx(scored[d["id"]].cost_usd)
    versus = reference_comparison(apply(policy, unscored, unscored_table=True))
    assert versus["quality"] is None and versus["saving_pct"] > 0
    assert f"ids: 240   quality unknown (no scores)   cost/1k $" in res.output
    assert f"vs big alone on the 240 ids it answered: quality unknown (no scores)   cost/1k " \
           f"${versus['cost_per_1k']:.6f} vs ${versus['reference_cost_per_1k']:.6f}   saving {versus['saving_pct']:.1f}%" \
           in res.output
    assert "note: the table has no score column: the policy's decisions and costs only, no quality; 1 row with " \
           "neither answer text nor a cost read as failed calls" in res.output
    assert next(d for d in decisions if d["id"] == "q003")["models_without_row"] == "cheap"
    fit_res = CliRunner().invoke(cli.app, ["replay", "fit", str(unscored), "--trials", "5"])
    assert fit_res.exit_code == 2 and "no 'score' column" in fit_res.stderr, fit_res.output
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text('{"id": "a", "model": "cheap", "cost_usd": 0.1}\n{"id": "a", "model": "big", "score": 1, '
                     '"cost_usd": 0.2}\n')
    res = CliRunner().invoke(cli.app, ["replay", "apply", policy, str(mixed)])
    assert res.exit_code == 2 and "line 2: has a score where the first row has none: score every row or none" \
        in res.stderr, res.output


def test_model_names_differing_in_case_are_noted(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("id,model,score,cost_usd\na,big,1,0.1\na,BIG,1,0.1\nb,big,1,0.1\nb,BIG,0,0.1\n")
    assert "model names that differ only in case are different models: ['BIG', 'big']" in load_outcomes(path).notes


def test_a_long_cell_and_true_false_scores_are_read(tmp_path):
    path = tmp_path / "t.csv"
    long_text = "word " * 60_000  # 300 KB: past csv's default field limit
    path.write_text(f'id,input,model,score,cost_usd\na,"{long_text}",x,true,0.1\na,"{long_text}",y,False,0.2\n')
    m = load_outcomes(path)
    assert m.inputs == [long_text] and m.score.tolist() == [[1.0, 0.0]]


@pytest.mark.parametrize("body, message", [
    ("query_id,llm,correct\na,x,1\n", "no 'id' / 'model' / 'score' column; the header has ['query_id', 'llm', 'correct']"),
    ("id,model,score,cost_usd\na,x,1,0.1\nb,\"x,1,0.1\n", "a quote opened after line 2 is never closed"),
    ("id,model,score,cost_usd\na,x,1,1e308\n", "row 1 (line 2): cost_usd 1e+308 is not a price for one call"),
    ("id,model,score,cost_usd\na,x,1,0.1,extra,cells\n", "row 1 (line 2) has 2 cells more than the header's 4"),
    ("id,model,score,cost_usd\na,big-fr\x00ontier,1,0.1\n", "model 'big-fr\\x00ontier' holds a control character"),
])
def test_header_quoting_and_absurd_costs_are_named(tmp_path, body, message):
    path = tmp_path / "bad.csv"
    path.write_text(body)
    with pytest.raises(DatasetError) as err:
        load_outcomes(path)
    assert message in str(err.value)


def test_an_integer_too_large_for_a_float_is_an_error_not_a_crash(tmp_path):
    path = tmp_path / "big.jsonl"
    path.write_text('{"id": "a", "model": "x", "score": 1, "cost_usd": 1' + "0" * 400 + "}\n")
    with pytest.raises(DatasetError, match=r"big\.jsonl: line 1: cost_usd is inf"):
        load_outcomes(path)
    path.write_text('{"id": "a", "model": "x", "score": 1' + "0" * 400 + ', "cost_usd": 0.1}\n')
    with pytest.raises(DatasetError, match=r"line 1: score is inf"):
        load_outcomes(path)


def test_judge_scores_rescaled_by_score_max_or_clipped(tmp_path):
    path = tmp_path / "judge.csv"
    path.write_text("id,model,score,cost_usd\na,x,10,0.1\na,y,7,0.2\n")
    m = load_outcomes(path, score_max=10)
    assert m.score[0].tolist() == [1.0, 0.7]
    metric = tmp_path / "metric.csv"
    metric.write_text("id,model,score,cost_usd\na,x,-0.03,0.1\na,y,0.7,0.2\nb,x,1.2,0.1\nb,y,1,0.2\n")
    m = load_outcomes(metric, clip_scores=True)
    assert m.score.tolist() == [[0.0, 0.7], [1.0, 1.0]] and "2 scores outside [0, 1] clipped into it" in m.notes[0]


def test_non_utf8_table_is_one_line_error(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("id,input,model,score,cost_usd\na,caf\u00e9,x,1,0.1\n".encode("latin-1"))
    res = CliRunner().invoke(cli.app, ["replay", "fit", str(path), "--storage", f"sqlite:///{tmp_path / 's.db'}"])
    assert res.exit_code == 2
    assert [line for line in res.output.splitlines() if line.strip()] == [
        f"error: {path}: not UTF-8 text (byte 35 of a read block: invalid continuation byte); re-save it as UTF-8"]
    jsonl = tmp_path / "latin1.jsonl"
    jsonl.write_bytes('{"id": "a", "input": "caf\u00e9", "model": "x", "score": 1}\n'.encode("latin-1"))
    with pytest.raises(DatasetError, match="not UTF-8 text"):
        load_outcomes(jsonl)


def test_no_answer_text_crashes_feature_code():
    from optimizers.answer_signals import answer_key
    from optimizers.arithmetic_checks import arithmetic_features
    from optimizers.replay_signals import text_features

    huge = "9" * 400  # float('9' * 400) is inf
    nasty = [f"The answer is {huge}.", f"#### {huge}", f"{huge} - {huge} = 0", f"\\boxed{{{huge}}}", "1e999999",
             "(" * 5000, "<<" + "1+" * 3000 + "1=3001>>", "\x00\ufffd", "", "   ", "-" * 10000]
    for text in nasty:
        for question in (f"What is {huge} plus 1?", text):
            row = text_features(question, text, ("arithmetic",))
            assert len(row) == len(arithmetic_features("q", "a")) + 12 and all(np.isfinite(row))
            answer_key(text)
    assert answer_key(f"#### {huge}") == f"number:{huge}"  # compared digit by digit, no float in between


def test_answer_keys_compare_choices_numbers_and_code():
    from optimizers.answer_signals import answer_key

    assert answer_key("Let me think... The answer is (B).") == answer_key("Answer: B") == answer_key("B")
    assert answer_key("\\boxed{C}") == "choice:C" and answer_key("the answer is a bit unclear").startswith("text:")
    assert answer_key("So the total is $1,200.") == answer_key("#### 1200") == "number:1200"
    assert answer_key("```python\nx = 1  # one\nprint(x)\n```") == answer_key("Here:\n```\nx = 1\n\nprint(x)\n```")
    assert answer_key("") is None and not answers_agree("", "")


def test_cli_fit_with_score_max_plugins_and_feature_block(tmp_path):
    rows = [{**r, "score": 10 * r["score"] if r["model"] != "mid" else 1 + 8 * r["score"]} for r in synthetic_rows(60)]
    table = write_csv(tmp_path / "judge.csv", rows)
    args = ["replay", "fit", str(table), "--trials", "20", "--storage", f"sqlite:///{tmp_path / 's.db'}",
            "--out", str(tmp_path / "p.json"), "--features", "hashed-words", "--json"]
    res = CliRunner().invoke(cli.app, args)
    assert res.exit_code == 2 and "is out of range (scores must lie in [0, 1]; for judge scores" in res.output
    res = CliRunner().invoke(cli.app, [*args, "--score-max", "10", "--signals", "arithmetic"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert summary["baselines"]["big"]["dev"]["quality"] == 1.0  # 10 / 10
    assert "scores divided by --score-max 10" in summary["notes"]
    assert any(n.startswith("task-specific signals on (--signals arithmetic)") for n in summary["notes"])
    assert not any("every cost in the table is 0" in n for n in summary["notes"])
    body = artifact.read(tmp_path / "p.json")
    assert body["replay"]["plugins"] == ["arithmetic"] and body["replay"]["score_max"] == 10.0
    assert "any_arith_error" in body["replay"]["features"] and "predicted_score" in body["replay"]["features"]
    res = CliRunner().invoke(cli.app, [*args, "--score-max", "10", "--signals", "astrology"])
    assert res.exit_code == 2 and res.output.strip() == ("error: unknown signal plug-in 'astrology': give one of "
                                                       "['arithmetic'], or your own as path/to/file.py:function or "
                                                       "package.module:function")


def test_a_table_whose_costs_are_all_zero_says_there_is_nothing_to_save(tmp_path):
    table = write_csv(tmp_path / "free.csv", [{**r, "cost_usd": 0} for r in synthetic_rows(60)])
    res = CliRunner().invoke(cli.app, ["replay", "fit", str(table), "--trials", "5", "--features", "hashed-words",
                                       "--storage", f"sqlite:///{tmp_path / 's.db'}", "--out", str(tmp_path / "p.json")])
    assert res.exit_code == 0, res.output
    assert "note: every cost in the table is 0: there is nothing to save" in res.output


def test_a_pick_made_on_few_training_ids_says_so(fitted, tmp_path):
    _, table, result = fitted
    assert not any("chose this policy: too few" in n for n in result.summary["notes"])  # 168 training ids
    few = fit(ReplayOptions(str(table), Objective(), holdout=0.95, trials=10, storage=f"sqlite:///{tmp_path / 's.db'}",
                            out=str(tmp_path / "p.json"))).summary
    assert (f"only 12 training ids chose this policy: too few for its margin to mean much; read the holdout check "
            f"(228 rows) and use more rows (or a smaller --holdout) before trusting it") in few["notes"]
