"""Reports from a scripted optimization: numbers agree with the optimizer's summary and with values
computed by hand; the routing-fairness audit flags the one segment the cheap tier serves badly."""

from __future__ import annotations

import json
import math
import random
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from fakes import _message, support_rows, write_tiers  # noqa: E402

from metrics import report_tables as rt  # noqa: E402
from metrics.report import load_report, report_from_ledger, report_from_study, write_report  # noqa: E402
from optimizers.select import Objective  # noqa: E402
from pipelines.tasks import DATASETS_DIR  # noqa: E402

N_TERSE, N_OTHER = 5, 15


def confidently_wrong_on_terse():
    """big: always right. small: right everywhere but the `terse` segment, where it gives a wrong
    label and order id with the same high confidence (0.95) as its right answers: no confidence
    threshold can catch it, so only a per-segment audit can."""
    rows = support_rows()

    def script(tier, messages):
        row = rows[_message(messages)]
        field = "intent" if "`intent`" in messages[0]["content"] else "order_id"
        value = row[field]
        if tier == "small" and row["segment"] == "terse":
            value = ("billing" if value != "billing" else "shipping") if field == "intent" else \
                ("none" if value != "none" else "Z99999")
        return f"[[ ## {field} ## ]]\n{value}\n\n[[ ## completed ## ]]", 0.95

    return script


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    from optimizers.live import OptimizeOptions, optimize

    tmp = tmp_path_factory.mktemp("report")
    rows = [json.loads(line) for line in open(DATASETS_DIR / "support.jsonl")]
    pick = random.Random(3)
    chosen_rows = pick.sample([r for r in rows if r["segment"] == "terse"], N_TERSE) + \
        pick.sample([r for r in rows if r["segment"] != "terse"], N_OTHER)
    dataset = tmp / "dev.jsonl"
    dataset.write_text("".join(json.dumps(r) + "\n" for r in chosen_rows))
    out = tmp / "support.tierwise.json"
    summary = optimize(OptimizeOptions(
        task="support", dataset=str(dataset), tiers=str(write_tiers(tmp)), trials=12, work_dir=tmp / ".tierwise",
        storage=f"sqlite:///{tmp}/s.db", out=str(out), objective=Objective(min_quality=0.6),
        scripts={"*": confidently_wrong_on_terse()}))
    return {"tmp": tmp, "artifact": out, "summary": summary, "rows": chosen_rows,
            "report": load_report(out)}


def test_savings_and_points_agree_with_the_printed_summary(compiled):
    summary, points = compiled["summary"], compiled["report"].tables["operating_points"]
    for split in ("dev", "holdout"):
        chosen = points[(points["split"] == split) & (points["policy"] == "chosen")].iloc[0]
        assert chosen["n"] == summary[split]["n"]
        assert chosen["quality"] == pytest.approx(summary[split]["quality"], abs=1e-12)
        assert chosen["cost_per_1k"] == pytest.approx(summary[split]["cost_per_1k"], rel=1e-12)
        for tier in ("small", "big"):
            point = points[(points["split"] == split) & (points["policy"] == tier)].iloc[0]
            assert point["quality"] == pytest.approx(summary["baselines"][tier][split]["quality"], abs=1e-12)
            assert point["cost_per_1k"] == pytest.approx(summary["baselines"][tier][split]["cost_per_1k"], rel=1e-12)
    savings = compiled["report"].tables["savings"]
    vs_big = savings[(savings["split"] == "holdout") & (savings["against"] == "big-only")].iloc[0]
    assert vs_big["cost_saving_pct"] == pytest.approx(summary["savings_pct"], rel=1e-9)


def test_chosen_policy_answers_everything_on_the_small_tier(compiled):
    """Cheapest policy with quality >= 0.6 is small-only in effect (terse is 5 of 20 rows): every
    final answer comes from small, nothing escalates, nothing is wasted, and the chosen cost per row
    is the sum of the two small cells' recorded costs."""
    report = compiled["report"]
    predictors = report.tables["predictors"].set_index("predictor")
    assert list(predictors["final_small"]) == [1.0, 1.0]
    assert list(predictors["escalation_rate"]) == [0.0, 0.0]
    assert list(predictors["wasted_tokens_per_query"]) == [0.0, 0.0]
    assert predictors["cost_share"].sum() == pytest.approx(1.0)
    body = json.loads(Path(compiled["artifact"]).read_text())
    cells = pd.DataFrame(body["evaluation"]["cells"])
    small_cost = cells[cells["tier"] == "small"].groupby("row_id")["cost_usd"].sum()
    everything = report.tables["operating_points"]
    all_chosen = everything[(everything["split"] == "all") & (everything["policy"] == "chosen")].iloc[0]
    assert all_chosen["cost_per_1k"] == pytest.approx(small_cost.mean() * 1000, rel=1e-9)
    assert all_chosen["quality"] == pytest.approx(N_OTHER / (N_OTHER + N_TERSE))


def test_quality_by_tier_shows_why(compiled):
    table = compiled["report"].tables["tier_quality"].set_index(["predictor", "tier"])
    for predictor in ("classify", "extract"):
        assert table.loc[(predictor, "small"), "accuracy"] == pytest.approx(N_OTHER / (N_OTHER + N_TERSE))
        assert table.loc[(predictor, "big"), "accuracy"] == 1.0
        assert table.loc[(predictor, "small"), "n"] == N_OTHER + N_TERSE
        assert table.loc[(predictor, "small"), "conf_median_wrong"] == pytest.approx(0.95)
        # the same split read without a judge: small says what big says except on the terse rows
        assert table.loc[(predictor, "small"), "agrees_with_top"] == pytest.approx(N_OTHER / (N_OTHER + N_TERSE))
        assert table.loc[(predictor, "big"), "agrees_with_top"] == 1.0


def test_segment_audit_flags_only_the_badly_served_segment(compiled):
    segments = compiled["report"].tables["segments"].set_index("segment")
    assert segments.loc["terse", "flag"]
    assert segments.loc["terse", "n"] == N_TERSE
    assert segments.loc["terse", "gap"] == -1.0  # both fields wrong on every terse row
    assert segments.loc["terse", "se_gap"] == 0.0
    others = segments.drop(index=["terse", "ALL"])
    assert not others["flag"].any()
    assert (others["gap"] == 0.0).all()
    assert others["n"].sum() == N_OTHER
    everything = segments.loc["ALL"]
    d = np.array([-1.0] * N_TERSE + [0.0] * N_OTHER)
    assert everything["gap"] == pytest.approx(d.mean())
    assert everything["se_gap"] == pytest.approx(d.std(ddof=1) / math.sqrt(len(d)))
    assert everything["flag"]  # -0.25 against 1.96 * 0.099


def test_trials_and_front_match_the_study(compiled):
    import optuna

    report = compiled["report"]
    body = json.loads(Path(compiled["artifact"]).read_text())
    study = optuna.load_study(study_name=body["study"]["name"], storage=f"sqlite:///{compiled['tmp']}/s.db")
    done = {t.number: t.values for t in study.trials if t.state.name == "COMPLETE"}
    trials = report.tables["trials"].set_index("number")
    assert len(trials) == len(done) == compiled["summary"]["trials"]
    for number, (quality, cost) in done.items():
        assert trials.loc[number, "quality"] == pytest.approx(quality)
        assert trials.loc[number, "cost_per_1k"] == pytest.approx(cost)
    assert set(trials.loc[[0, 1], "baseline"]) == {"small", "big"}  # the enqueued uniform policies
    assert trials["chosen"].sum() == 1
    front = report.tables["pareto"]
    chosen = front[front["point"].str.startswith("chosen")]
    assert len(chosen) == 1 and chosen["on_front"].item()
    for tier in ("small", "big"):
        assert front["point"].str.contains(f"baseline {tier}").sum() == 1
    from_study = report_from_study(f"sqlite:///{compiled['tmp']}/s.db", body["study"]["name"]).tables["trials"]
    pd.testing.assert_series_equal(from_study.set_index("number")["quality"], trials["quality"])


def test_on_front_marks_every_trial_on_a_front_point_and_no_other():
    """The report marks trials with the compile's own front (optimizers.select.pareto_front); trials that
    land on one front point (the sampler repeats policies) are all marked."""
    q = np.array([0.5, 0.8, 0.8, 0.9, 0.7, 0.9, 0.5])
    c = np.array([1.0, 2.0, 2.0, 5.0, 3.0, 6.0, 1.5])
    assert rt.non_dominated(q, c).tolist() == [True, True, True, True, False, False, False]


def test_trials_table_shows_each_trials_semantic_threshold():
    """trials.csv lacked the semantic cache's threshold: a --semantic-cache study's trials read as ladders only."""
    plain = {"predictors": {"classify": {"ladder": ["big"]}}}
    cached = {"predictors": {"classify": {"ladder": ["small", "big"], "estimator": "logprob_mean",
                                          "thresholds": [0.5], "semantic": {"threshold": 0.91}}}}
    trials = pd.DataFrame({"number": [0, 1], "quality": [0.9, 0.88], "cost_per_1k": [2.0, 1.0],
                           "policy": [plain, cached]})
    table = rt.trials_table(trials)
    assert table["classify.semantic_threshold"].isna().tolist() == [True, False]
    assert table["classify.semantic_threshold"].iloc[1] == 0.91
    assert "classify.semantic_threshold" not in rt.trials_table(trials.iloc[:1]).columns  # no cache searched


def _steps(rows):
    cols = ["query_id", "segment", "predictor", "rung", "tier", "confidence", "threshold", "decision", "cost_usd",
            "tokens"]
    return pd.DataFrame(rows, columns=cols).assign(split="dev")


def test_operating_points_and_savings_count_the_baselines_fallback_answers():
    """small-only's quality counted big's answers where small's failed (rung -1), and no table said how often."""
    small_steps = _steps([
        ("q1", "a", "classify", 0, "small", None, None, "failed", 1.0, 10),
        ("q1", "a", "classify", -1, "big", None, None, "fallback", 10.0, 20),
        ("q1", "a", "extract", 0, "small", None, None, "failed", 1.0, 10),
        ("q1", "a", "extract", -1, "big", None, None, "fallback", 10.0, 20),  # one query, however many predictors
        ("q2", "b", "classify", 0, "small", 0.2, 0.5, "fallback", 1.0, 5),  # a ladder's own best answer: not rung -1
        ("q3", "b", "classify", 0, "small", 0.9, None, "accepted", 1.0, 5),
    ])
    chosen_steps = _steps([(q, "a", "classify", 0, "big", 0.9, None, "accepted", 10.0, 20) for q in ("q1", "q2", "q3")])
    rows = pd.DataFrame([{"policy": p, "split": "dev", "row_id": q, "score": 1.0, "cost_usd": 0.01, "latency_s": 1.0}
                         for p in ("chosen", "small", "big") for q in ("q1", "q2", "q3")])
    points = rt.operating_points(rows, {"chosen": chosen_steps, "small": small_steps, "big": chosen_steps})
    assert points.set_index("policy")["fallback_rows"].to_dict() == {"chosen": 0, "small": 1, "big": 0}
    savings = rt.savings_table(points, "big", "small").set_index("against")
    assert savings["other_fallback_rows"].to_dict() == {"big-only": 0, "small-only": 1}


def test_predictor_and_rung_tables_by_hand():
    steps = _steps([
        ("q1", "a", "classify", 0, "small", 0.3, 0.5, "escalated", 1.0, 10),
        ("q1", "a", "classify", 1, "big", 0.9, None, "accepted", 10.0, 20),
        ("q1", "a", "extract", 0, "small", 0.8, 0.5, "accepted", 1.0, 5),
        ("q2", "b", "classify", 0, "small", 0.9, 0.5, "accepted", 1.0, 10),
        ("q2", "b", "extract", 0, "small", 0.2, 0.5, "fallback", 1.0, 5),  # the top rung failed: small stands
        ("q2", "b", "extract", 1, "big", None, None, "failed", 0.0, 0),
    ])
    table = rt.predictor_table(steps, 2, ["small", "big"]).set_index("predictor")
    assert table.loc["classify", "escalation_rate"] == 0.5
    assert table.loc["classify", ["final_small", "final_big"]].tolist() == [0.5, 0.5]
    assert table.loc["classify", "cost_per_1k"] == 6000.0  # (1 + 10 + 1) / 2 queries * 1000
    assert table.loc["classify", "cost_share"] == pytest.approx(12 / 14)
    assert table.loc["classify", "wasted_tokens_per_query"] == 5.0
    assert table.loc["extract", "escalation_rate"] == 0.0
    assert table.loc["extract", ["final_small", "final_big"]].tolist() == [1.0, 0.0]
    rungs = rt.rung_table(steps).set_index(["predictor", "rung"])
    assert rungs.loc[("classify", 0), "reached"] == 2
    assert rungs.loc[("classify", 0), "escalation_rate"] == 0.5
    assert rungs.loc[("classify", 0), "conf_q50"] == pytest.approx(0.6)
    assert rungs.loc[("classify", 0), "threshold"] == 0.5
    assert rungs.loc[("extract", 1), "failed"] == 1


def test_a_predictor_called_per_item_counts_each_call():
    """Steps of one query from three calls of one predictor: three calls, one escalated (they were one)."""
    rows = [("q1", "a", "classify", 0, "small", 0.9, 0.5, "accepted", 1.0, 10, 0),
            ("q1", "a", "classify", 0, "small", 0.3, 0.5, "escalated", 1.0, 10, 1),
            ("q1", "a", "classify", 1, "big", None, None, "accepted", 10.0, 20, 1),
            ("q1", "a", "classify", 0, "small", 0.8, 0.5, "accepted", 1.0, 10, 2)]
    cols = ["query_id", "segment", "predictor", "rung", "tier", "confidence", "threshold", "decision", "cost_usd",
            "tokens", "call"]
    table = rt.predictor_table(pd.DataFrame(rows, columns=cols), 1, ["small", "big"]).set_index("predictor")
    assert table.loc["classify", "calls"] == 3
    assert table.loc["classify", "escalation_rate"] == pytest.approx(1 / 3)
    assert table.loc["classify", ["final_small", "final_big"]].tolist() == pytest.approx([2 / 3, 1 / 3])


def test_segment_flag_rule_by_hand():
    chosen = pd.DataFrame({"row_id": list("abcdefghij"), "segment": list("AABBCCCDDD"),
                           "score": [1, .5, 1, 0, .5, .5, .5, 1, 1, 1], "cost_usd": [1.0] * 10})
    flagship = chosen.assign(score=1.0, cost_usd=3.0)
    table = rt.segment_table(chosen, flagship, {"b"}).set_index("segment")
    assert table.loc["A", "gap"] == -0.25 and table.loc["A", "se_gap"] == pytest.approx(0.25)
    assert not table.loc["A", "flag"]  # -0.25 is within 1.96 * 0.25
    assert not table.loc["B", "flag"]  # -0.5 within 1.96 * 0.5
    assert table.loc["C", "flag"] and table.loc["C", "se_gap"] == 0.0  # every row loses 0.5
    assert not table.loc["D", "flag"] and table.loc["D", "gap"] == 0.0
    assert table.loc["A", "escalation_rate"] == 0.5
    assert table.loc["ALL", "cost_per_1k"] == 1000.0 and table.loc["ALL", "flagship_cost_per_1k"] == 3000.0
    single = rt.segment_table(chosen.assign(segment="all"), flagship.assign(segment="all"), {"b"})
    assert list(single["segment"]) == ["all"] and single.loc[0, "n"] == 10  # no 'ALL' row repeating 'all'


def test_cli_writes_csvs_png_and_html(compiled, tmp_path):
    from typer.testing import CliRunner

    from cli import app

    result = CliRunner().invoke(app, ["report", str(compiled["artifact"]), "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert "FLAGGED terse" in result.output
    files = {p.name for p in (tmp_path / "r").iterdir()}
    assert {"savings.csv", "segments.csv", "predictors.csv", "rungs.csv", "tier_quality.csv", "pareto.csv",
            "trials.csv", "operating_points.csv", "pareto.png", "report.html"} <= files
    assert (tmp_path / "r" / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (tmp_path / "r" / "report.html").read_text()
    assert "data:image/png;base64," in page and "<tr class='flag'>" in page and "terse" in page
    segments = pd.read_csv(tmp_path / "r" / "segments.csv").set_index("segment")
    assert segments.loc["terse", "flag"] and segments.loc["terse", "gap"] == -1.0

    missing = CliRunner().invoke(app, ["report", "no-such-study", "--storage", f"sqlite:///{tmp_path}/x.db"])
    assert missing.exit_code == 2
    assert "no study 'no-such-study'" in missing.output
    bogus = CliRunner().invoke(app, ["report", "any-study", "--split", "bogus", "--storage", f"sqlite:///{tmp_path}/x.db"])
    assert bogus.exit_code == 2 and "--split must be one of all, dev, holdout, got 'bogus'" in bogus.stderr

    # A folder it cannot create: one line, not the whole report printed and then the error.
    unwritable = CliRunner().invoke(app, ["report", str(compiled["artifact"]), "--out", "/proc/tierwise-report"])
    assert unwritable.exit_code == 2 and unwritable.stdout == ""
    assert unwritable.stderr.startswith("error: report --out /proc/tierwise-report: cannot create the folder")


def test_report_from_a_production_ledger(compiled, tmp_path):
    from pipelines.artifact import load_program
    from pipelines.ledger import Ledger

    ledger = Ledger(tmp_path / "ledger.jsonl")
    program = load_program(compiled["artifact"], ledger=ledger, scripts={"*": confidently_wrong_on_terse()})
    for row in compiled["rows"][:3]:
        program(message=row["message"])
    report = report_from_ledger(tmp_path / "ledger.jsonl")
    spend = report.tables["spend"].iloc[0]
    assert spend["queries"] == 3 and spend["calls"] == 6
    assert spend["cost_per_1k"] == pytest.approx(ledger.total_cost() / 3 * 1000)
    predictors = report.tables["predictors"].set_index("predictor")
    assert predictors["calls"].tolist() == [3, 3]
    assert predictors["final_small"].tolist() == [1.0, 1.0]
    paths = write_report(report, tmp_path / "out")
    assert "pareto.png" not in paths and (tmp_path / "out" / "spend.csv").is_file()

    # The same requests again into a ledger of their own: every call a cache hit, nothing paid; the
    # predictors' shares of the price stand (they were NaN).
    warm_ledger = Ledger(tmp_path / "warm.jsonl")
    program = load_program(compiled["artifact"], ledger=warm_ledger, scripts={"*": confidently_wrong_on_terse()})
    for row in compiled["rows"][:3]:
        program(message=row["message"])
    warm = report_from_ledger(tmp_path / "warm.jsonl").tables["predictors"].set_index("predictor")
    assert all(r.cache_hit for r in warm_ledger.records) and warm["cost_share"].sum() == pytest.approx(1.0)
    assert warm["cost_share"].tolist() == pytest.approx(predictors["cost_share"].tolist())


def test_routed_policies_read_as_routes_in_the_summary_and_the_front():
    """A router's ladder has no confidence threshold: it used to print as 'escalate when none < 0.000'."""
    from optimizers.summary import describe_ladder
    from pipelines.policy import Policy, PredictorPolicy

    route = {"lambda": 0.3, "costs": [0.1, 0.4, 1.0]}
    router = PredictorPolicy(["cheap", "mid", "flagship"], "none", [0.0, 0.0], route)
    routed = PredictorPolicy(["cheap", "flagship"], "learned", [0.62], {"lambda": 1.5, "costs": [0.1, 1.0]})
    cascade = PredictorPolicy(["cheap", "flagship"], "learned", [0.62])
    described = Policy({"a": router, "b": routed, "c": cascade}).describe()
    assert describe_ladder(described["a"]) == "route to cheap | mid | flagship by the input router (lambda 0.300)"
    assert describe_ladder(described["b"]) == ("route to cheap | flagship by the input router (lambda 1.500), "
                                               "then climb when learned < 0.620")
    assert describe_ladder(described["c"]) == "cheap > flagship  (escalate when learned < 0.620)"

    policies = [Policy({"p": p}).to_dict() for p in (router, routed, cascade)]
    trials = pd.DataFrame({"number": [0, 1, 2], "quality": [0.7, 0.8, 0.9], "cost_per_1k": [1.0, 2.0, 3.0],
                           "policy": policies})
    # the report's per-predictor table reads the artifact's stored entries (route: {lambda, costs})
    steps = _steps([("q1", "a", "p", 0, "cheap", None, None, "accepted", 1.0, 5)])
    for stored, text in zip(policies, ["route to cheap | mid | flagship by the input router (lambda 0.300)",
                                       "route to cheap | flagship by the input router (lambda 1.500), then climb when "
                                       "learned < 0.620", "cheap > flagship  (escalate when learned < 0.620)"]):
        table = rt.predictor_table(steps, 1, ["cheap", "mid", "flagship"], stored["predictors"])
        assert table["ladder"].tolist() == [text]
    cached = {"ladder": ["cheap"], "estimator": "none", "thresholds": [], "semantic": {"threshold": 0.9}}
    assert rt.predictor_table(steps, 1, ["cheap"], {"p": cached})["ladder"].tolist() == [
        "semantic cache (similarity >= 0.900) > cheap"]
    front = rt.pareto_table(rt.trials_table(trials))
    assert front["policy"].tolist() == [
        "p: route to cheap | mid | flagship by the input router (lambda 0.300)",
        "p: route to cheap | flagship by the input router (lambda 1.500), then climb when learned < 0.620",
        "p: cheap > flagship  (escalate when learned < 0.620)"]
