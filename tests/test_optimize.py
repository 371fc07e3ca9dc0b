"""The live optimizer over scripted fake tiers: the summary, call accounting (every distinct call paid
once, across reruns, budget stops and a SIGKILL), and the artifact it compiles."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from conftest import PYTHON, ROOT
from optimizers.live import OptimizeOptions, optimize
from optimizers.select import Objective
from pipelines.artifact import load_program
from pipelines.cache import CallCache
from pipelines.errors import BudgetExceeded
from pipelines.ledger import Ledger
from tests.fakes import _message, support_rows, support_script, write_tiers

LIMIT = 20
FULL_MATRIX = LIMIT * 2 * 2  # rows x predictors (classify, extract) x tiers (small, big)


def logged_script(log: list):
    """support_script, recording each backend call (tier, request hash): called on cache misses only."""
    base = support_script()

    def script(tier, messages):
        log.append((tier, hashlib.sha256(json.dumps(messages).encode()).hexdigest()))
        return base(tier, messages)

    return script


def options(tmp, log, **kw):
    defaults = dict(task="support", tiers=str(write_tiers(tmp)), scripts={"*": logged_script(log)}, work_dir=tmp,
                    storage=f"sqlite:///{tmp}/s.db", out=str(tmp / "support.tierwise.json"), limit=LIMIT,
                    trials=15, seed=0)
    return OptimizeOptions(**{**defaults, **kw})


@pytest.fixture(scope="module")
def first_and_second_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("optimize")
    log: list = []
    first = optimize(options(tmp, log))
    calls_after_first = list(log)
    second = optimize(options(tmp, log))
    return tmp, first, second, calls_after_first, log


REQUIRED = {
    "task": str, "objective": str, "artifact": str, "policy": dict, "dev": dict, "holdout": dict, "baselines": dict,
    "reference": str, "savings_pct": float, "paid_calls": int, "full_matrix_calls": int, "trials": int,
    "spent_usd": float,
}


def test_summary_has_every_key_with_consistent_numbers(first_and_second_run):
    tmp, summary, _, calls, _ = first_and_second_run
    for key, kind in REQUIRED.items():
        assert isinstance(summary[key], kind), key
    assert summary["task"] == "support" and summary["reference"] == "big"
    assert summary["artifact"] == str(tmp / "support.tierwise.json")
    assert set(summary["policy"]) == {"classify", "extract"}
    for p in summary["policy"].values():
        assert set(p) == {"ladder", "estimator", "thresholds"}
        assert len(p["thresholds"]) == len(p["ladder"]) - 1
    assert set(summary["dev"]) == {"n", "quality", "cost_per_1k"}
    assert set(summary["holdout"]) == {"n", "quality", "quality_ci", "cost_per_1k"}
    assert summary["dev"]["n"] + summary["holdout"]["n"] == LIMIT and summary["holdout"]["n"] > 0
    lo, hi = summary["holdout"]["quality_ci"]
    assert lo <= summary["holdout"]["quality"] <= hi
    assert set(summary["baselines"]) == {"small", "big"}
    big = summary["baselines"]["big"]
    assert big["dev"]["quality"] == 1.0 and big["holdout"]["quality"] == 1.0  # the fake big tier is always right
    assert summary["baselines"]["small"]["dev"]["quality"] < 1.0
    # default objective: cheapest policy as good as big-only (noise is 0 here): quality 1.0 on dev
    assert summary["dev"]["quality"] == 1.0
    assert summary["dev"]["cost_per_1k"] <= big["dev"]["cost_per_1k"]
    assert summary["savings_pct"] == pytest.approx(
        100 * (1 - summary["holdout"]["cost_per_1k"] / big["holdout"]["cost_per_1k"]))
    assert summary["trials"] == 15
    gap = summary["holdout_vs_reference"]
    assert gap["delta"] == pytest.approx(summary["holdout"]["quality"] - big["holdout"]["quality"])
    assert gap["delta_ci"][0] <= gap["delta"] <= gap["delta_ci"][1]
    # every cell paid exactly once, and the spend is what the ledger says
    assert summary["full_matrix_calls"] == FULL_MATRIX
    assert summary["paid_calls"] == FULL_MATRIX == len(calls) == len(set(calls))
    ledger = Ledger.read_frame(tmp / "ledger.jsonl")
    paid = ledger[~ledger["cache_hit"]]
    assert len(paid) == FULL_MATRIX
    assert summary["spent_usd"] == pytest.approx(paid["cost_usd"].sum())
    assert Counter(paid["tier"]) == {"small": FULL_MATRIX // 2, "big": FULL_MATRIX // 2}


def test_second_run_of_the_same_command_makes_zero_paid_calls(first_and_second_run):
    _, first, second, calls_after_first, calls = first_and_second_run
    assert calls == calls_after_first  # no backend call at all
    assert second["paid_calls"] == 0 and second["spent_usd"] == 0.0
    assert second["trials"] == 15 and second["trials_run_now"] == 0  # the study resumed, complete
    for key in ("policy", "dev", "holdout", "baselines", "savings_pct"):
        assert second[key] == first[key], key


def test_new_prices_reprice_the_recorded_outcomes_without_a_paid_call(first_and_second_run, tmp_path):
    """The flagship at 10x its price: the compile read the cells and the study priced before (costs, baselines
    and savings unchanged); its cells are now recorded again from the call cache at the new prices, in a study
    of their own."""
    tmp, first, _, _, calls = first_and_second_run
    before = len(calls)
    dearer = tmp_path / "dearer.toml"
    dearer.write_text(write_tiers(tmp_path).read_text().replace("input_per_1m = 1.0", "input_per_1m = 10.0")
                      .replace("output_per_1m = 4.0", "output_per_1m = 40.0"))
    third = optimize(options(tmp, calls, tiers=str(dearer), out=str(tmp_path / "dearer.tierwise.json")))
    assert len(calls) == before and third["paid_calls"] == 0
    assert third["study"] != first["study"] and third["trials_run_now"] == 15
    for split in ("dev", "holdout"):
        assert third["baselines"]["big"][split]["cost_per_1k"] == pytest.approx(
            first["baselines"]["big"][split]["cost_per_1k"] * 10)
        assert third["baselines"]["small"][split] == first["baselines"]["small"][split]
    # cells recorded again from the cache keep the model's time they were paid with, not the cache read's
    latency = {name: {(c["row_id"], c["predictor"], c["tier"]): c["latency_s"]
                      for c in json.loads(Path(summary["artifact"]).read_text())["evaluation"]["cells"]}
               for name, summary in (("first", first), ("third", third))}
    assert latency["third"] == latency["first"] and any(latency["first"].values())


def test_compiled_artifact_runs_the_chosen_policy(first_and_second_run):
    tmp, summary, _, _, _ = first_and_second_run
    program = load_program(tmp / "support.tierwise.json", cache=CallCache(tmp / "prod-cache"),
                           scripts={"*": support_script()})
    body = program.artifact
    assert body["summary"]["policy"] == summary["policy"]
    assert set(body["split"]["dev"]) | set(body["split"]["holdout"]) == {c["row_id"] for c in
                                                                         body["evaluation"]["cells"]}
    rows = {r["id"]: r for r in support_rows().values()}
    for row_id in body["split"]["dev"]:  # dev quality was 1.0: production answers the same
        row = rows[row_id]
        prediction = program(message=row["message"])
        assert (prediction.intent, prediction.order_id) == (row["intent"], row["order_id"])
        ladders = {name: p["ladder"] for name, p in summary["policy"].items()}
        assert {s.tier for s in program.last_trail} <= set(ladders["classify"]) | set(ladders["extract"])


@pytest.mark.parametrize("trials", [1, 40])
def test_paid_calls_never_exceed_the_full_matrix(tmp_path, trials):
    log: list = []
    summary = optimize(options(tmp_path, log, trials=trials))
    assert summary["trials"] == trials
    assert summary["paid_calls"] == len(log) == len(set(log)) <= summary["full_matrix_calls"] == FULL_MATRIX


def test_objective_flags_choose_from_the_same_study_without_new_calls(first_and_second_run, tmp_path):
    tmp, default, _, _, calls = first_and_second_run
    before = len(calls)
    cheap = optimize(options(tmp, calls, objective=Objective(min_quality=0.5), out=str(tmp_path / "q.json")))
    assert len(calls) == before and cheap["paid_calls"] == 0
    assert cheap["dev"]["quality"] >= 0.5
    assert cheap["dev"]["cost_per_1k"] <= default["dev"]["cost_per_1k"]
    capped = optimize(options(tmp, calls, objective=Objective(max_cost_per_1k=cheap["dev"]["cost_per_1k"]),
                              out=str(tmp_path / "c.json")))
    assert capped["dev"]["cost_per_1k"] <= cheap["dev"]["cost_per_1k"] + 1e-12
    # the --min-quality pick is a candidate under the cap, even when its refinement (optimizers/refine.py) found it
    # after the search: the study keeps refined points for other objectives
    assert capped["dev"]["quality"] >= cheap["dev"]["quality"]


def test_budget_cap_stops_cleanly_and_a_larger_budget_continues(tmp_path):
    log: list = []
    cap = 0.003
    with pytest.raises(BudgetExceeded) as err:
        optimize(options(tmp_path, log, budget_usd=cap))
    message = str(err.value)
    assert f"of --budget-usd ${cap:.6f}" in message and "rerun with a larger budget to continue" in message
    first = Ledger.read_frame(tmp_path / "ledger.jsonl")
    spent = first.loc[~first["cache_hit"], "cost_usd"].sum()
    assert 0 < spent <= cap
    paid_before = len(log)
    assert 0 < paid_before < FULL_MATRIX
    assert f"in {paid_before} paid calls this run" in message
    assert not (tmp_path / "support.tierwise.json").exists()  # no artifact from a stopped run

    with pytest.raises(BudgetExceeded, match=r"\$0\.000000 in 0 paid calls this run"):
        optimize(options(tmp_path, log, budget_usd=cap))  # the cap is the compile's, not each run's
    assert len(log) == paid_before

    summary = optimize(options(tmp_path, log, budget_usd=1.0))
    assert summary["paid_calls"] == FULL_MATRIX - paid_before
    assert summary["spent_usd_compile"] == pytest.approx(spent + summary["spent_usd"], rel=1e-6)
    assert len(log) == len(set(log)) == FULL_MATRIX  # nothing paid twice
    assert summary["spent_usd"] <= 1.0
    assert (tmp_path / "support.tierwise.json").exists()


DRIVER = r"""
import hashlib, json, os, sys, time
from pipelines import backends
from tests.fakes import support_script

base = support_script()
block_after = int(os.environ.get("BLOCK_AFTER", "0"))
count = 0

def script(tier, messages):
    global count
    count += 1
    if block_after and count > block_after:
        open(os.environ["READY_FILE"], "w").close()
        time.sleep(3600)  # mid-call: the parent kills the process here
    out = base(tier, messages)
    with open(os.environ["CALL_LOG"], "a") as f:  # a paid call: the backend answered
        f.write(hashlib.sha256(json.dumps([tier, messages]).encode()).hexdigest() + "\n")
    return out

backends.SCRIPTED["*"] = script
import cli
sys.argv = ["cli.py", *sys.argv[1:]]
cli.main()
"""


def test_sigkill_mid_run_then_rerun_pays_no_call_twice(tmp_path):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    tiers = write_tiers(tmp_path)
    call_log, ready = tmp_path / "calls.log", tmp_path / "ready"
    args = [PYTHON, str(driver), "optimize", "support", "--tiers", str(tiers), "--limit", str(LIMIT),
            "--trials", "5", "--storage", f"sqlite:///{tmp_path}/s.db", "--out", str(tmp_path / "a.json"), "--json"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CALL_LOG": str(call_log), "READY_FILE": str(ready)}
    block_after = 50  # the small tier's 40 cells are recorded first, then 10 of big's 40
    proc = subprocess.Popen(args, cwd=tmp_path, env={**env, "BLOCK_AFTER": str(block_after)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ledger = tmp_path / ".tierwise" / "ledger.jsonl"
    try:
        # wait (bounded) until the run is blocked inside call 51, with 50 calls recorded in its ledger
        for _ in range(6000):
            if ready.exists() and ledger.exists() and len(ledger.read_text().splitlines()) >= block_after:
                break
            if proc.poll() is not None:
                raise AssertionError(f"driver exited early:\n{proc.communicate()[1]}")
            time.sleep(0.05)
        else:
            raise AssertionError("the run never reached the kill point")
        proc.send_signal(signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    first_calls = call_log.read_text().splitlines()
    assert len(first_calls) == block_after
    assert not (tmp_path / "a.json").exists()

    done = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    all_calls = call_log.read_text().splitlines()
    assert len(all_calls) == len(set(all_calls)) == FULL_MATRIX  # no backend call made twice across both runs
    assert summary["paid_calls"] == FULL_MATRIX - block_after
    assert summary["full_matrix_calls"] == FULL_MATRIX and summary["trials"] == 5
    assert (tmp_path / "a.json").exists()


def test_a_handful_of_rows_keeps_one_for_the_holdout():
    """Each row went to the holdout by its own hash draw, so 6 rows at 25% could leave none to check on (the
    holdout printed nan) and 12 rows at 30% gave 3 dev rows and 9 holdout rows. The holdout now holds the
    share asked for (rounded, at least one), chosen by the hash, the same on every rerun."""
    from optimizers.summary import split_rows

    rows = [{"id": i} for i in range(6)]
    dev, hold = split_rows(rows, 0.05, 0)  # 0.3 of a row rounds to none: one is kept to check on
    assert len(hold) == 1 and len(dev) == 5 and split_rows(rows, 0.05, 0) == (dev, hold)
    assert split_rows(rows, 0.0, 0) == (rows, [])
    for n, fraction, held in ((12, 0.3, 4), (8, 0.3, 2), (2, 0.3, 1), (80, 0.3, 24), (222, 0.3, 67)):
        rows = [{"id": f"r{i}"} for i in range(n)]
        dev, hold = split_rows(rows, fraction, 0)
        assert len(hold) == held and len(dev) == n - held and sorted(dev + hold, key=lambda r: r["id"]) == \
            sorted(rows, key=lambda r: r["id"])
        assert split_rows(list(reversed(rows)), fraction, 0)[1] == list(reversed(hold))  # not the rows' order
    assert split_rows(rows, 0.3, 1)[1] != hold  # another seed, another split


def test_summary_line_names_the_calls_only_cascades_asked_for():
    """A program whose later calls depend on which tier answered before (BestOfN's attempts, a predictor reading
    an earlier output) makes calls no uniform baseline made: paid calls above the matrix are those, not repeats."""
    from optimizers.summary import build_summary, render_text

    block = {"n": 4, "quality": 1.0, "cost_per_1k": 1.0, "quality_ci": [1.0, 1.0]}
    summary = build_summary(task="t", objective="o", artifact=None, policy={}, dev=block, holdout=block,
                            baselines={"big": {"dev": block, "holdout": block}}, reference="big", paid_calls=54,
                            full_matrix_calls=40, trials=3, spent_usd=0.0, cells_recorded=54)
    assert "paid calls: 54 (full matrix 40 + 14 asked for by the search)" in render_text(summary)
    summary["cells_recorded"] = 40
    assert "paid calls: 54 (full matrix 40)   " in render_text(summary)
    # model names longer than the column keep the baselines aligned
    long_name = "llama-3.1-nemotron-51b-instruct"
    summary["baselines"] = {"small": summary["baselines"]["big"], long_name: summary["baselines"]["big"]}
    rows = [line for line in render_text(summary).splitlines() if " quality 1.000   cost/1k" in line and
            line.startswith("  ") and not line.startswith("  holdout")]
    assert len(rows) == 2 and len({line.index(" quality") for line in rows}) == 1, rows


def test_where_the_flagship_stands_on_a_sample_the_note_names_the_rows_left_out(tmp_path):
    """The small tier is never right: flagship-only stands, and the note says how many labeled rows --limit left
    out (the README's main job samples 80 of 222), which is the remedy the margin asks for."""
    opts = options(tmp_path, [], scripts={"*": support_script(small_right=lambda row: False)})
    summary = optimize(opts)
    note = next(n for n in summary["notes"] if "only stands" in n)
    assert f"this compile sampled {LIMIT} of {len(support_rows())} rows; without --limit it uses them all" in note
    everything = optimize(options(tmp_path, [], scripts={"*": support_script(small_right=lambda row: False)},
                                  limit=None, trials=3))
    assert not any("without --limit" in n for n in everything["notes"])


def test_a_limit_above_the_dataset_says_every_row_was_used(tmp_path):
    """--limit 50 on 10 rows used the 10 without a word; the summary now says so."""
    path = tmp_path / "ten.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in list(support_rows().values())[:10]))
    summary = optimize(options(tmp_path, [], dataset=str(path), limit=50, trials=3))
    assert "--limit 50: the dataset has 10 rows; all of them were used" in summary["notes"]
    assert summary["dev"]["n"] + summary["holdout"]["n"] == 10


def test_a_baseline_answered_partly_by_the_fallback_says_on_how_many_rows(tmp_path):
    """The cheap-only baseline's quality counted the fallback tier's answers where cheap's were malformed, and
    nothing said so: the summary counts those rows per baseline and the printed line names them."""
    from optimizers.live import load_all_rows, sample_rows
    from optimizers.summary import render_text
    from pipelines.tasks import load_task

    base = support_script()
    rows = support_rows()

    def script(tier, messages):
        if tier == "small" and rows[_message(messages)]["difficulty"] != "simple":
            return "I am not sure what you mean.", 0.3  # no field markers: a malformed answer
        return base(tier, messages)

    log: list = []
    opts = options(tmp_path, log, scripts={"*": script}, trials=5)
    summary = optimize(opts)
    sampled = sample_rows(load_all_rows(load_task("support"), opts), opts)
    hard = sum(r["difficulty"] != "simple" for r in sampled)
    small, big = summary["baselines"]["small"], summary["baselines"]["big"]
    assert 0 < hard < LIMIT
    assert small["dev"]["fallback_rows"] + small["holdout"]["fallback_rows"] == hard
    assert big["dev"]["fallback_rows"] == big["holdout"]["fallback_rows"] == 0
    line = next(x for x in render_text(summary).splitlines() if x.startswith("  small "))
    n = small["holdout"]["fallback_rows"]
    assert (f"({n} of {small['holdout']['n']} rows answered by a fallback tier: small's answer failed or was "
            "malformed)" in line) == (n > 0)
    assert "fallback" not in next(x for x in render_text(summary).splitlines() if x.startswith("  big "))
