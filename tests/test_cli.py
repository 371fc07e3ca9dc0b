"""CLI: a user mistake exits 2 with one line on stderr saying what and where, never a traceback."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from typer.testing import CliRunner

import cli
from conftest import ROOT, compile_fake_support
from pipelines import backends
from tests.fakes import support_rows, support_script, write_tiers


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # anything a command would write by default lands here
    monkeypatch.setitem(backends.SCRIPTED, "*", support_script())  # the fake tiers answer in this process
    tiers = write_tiers(tmp_path)
    artifact = compile_fake_support(tmp_path)
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("[[tier]\nname = 1\n")
    tampered = tmp_path / "tampered.json"
    doc = json.loads(artifact.read_text())
    doc["policy"]["predictors"]["extract"]["ladder"] = ["big"]
    tampered.write_text(json.dumps(doc))
    bad_jsonl = tmp_path / "bad.jsonl"
    bad_jsonl.write_text('{"id": "1", "message": "hi", "intent": "billing", "order_id": "none"}\n{oops\n')
    return {"tiers": str(tiers), "artifact": str(artifact), "bad_toml": str(bad_toml), "tampered": str(tampered),
            "bad_jsonl": str(bad_jsonl), "tmp": tmp_path}


CASES = {
    "bad tiers file": (["tiers", "--tiers", "{bad_toml}"], r"bad\.toml: not valid TOML"),
    "missing tiers file": (["tiers", "--tiers", "{tmp}/none.toml"], "tiers file not found"),
    "unknown task": (["optimize", "nope", "--tiers", "{tiers}"], "unknown task 'nope'; shipped tasks: .*support"),
    "bad --input JSON": (["run", "{artifact}", "--input", "{{not json"], "--input is not valid JSON"),
    "--input not an object": (["run", "{artifact}", "--input", "[1, 2]"], "--input must be a JSON object"),
    "input lacks a field": (["run", "{artifact}", "--input", '{{"msg": "hi"}}'],
                            r"input 1: missing fields \['message'\]"),
    "input and dataset": (["run", "{artifact}", "--input", "{{}}", "--dataset", "{bad_jsonl}"],
                          "give exactly one of --input"),
    "missing artifact": (["run", "{tmp}/nowhere.json", "--input", "{{}}"], "artifact not found: .*nowhere.json"),
    "tampered artifact": (["run", "{tampered}", "--input", '{{"message": "hi"}}'], "tampered.json: checksum mismatch"),
    "holdout 1.5": (["optimize", "support", "--tiers", "{tiers}", "--holdout", "1.5"],
                    r"--holdout must lie in \(0, 1\), got 1.5"),
    "conflicting objectives": (["optimize", "support", "--tiers", "{tiers}", "--min-quality", "0.9",
                                "--match-tier", "big"], "give at most one of --min-quality, --match-tier"),
    "min-quality above 1": (["optimize", "support", "--tiers", "{tiers}", "--min-quality", "90"],
                            r"--min-quality must lie in \[0, 1\]"),
    "unknown match tier": (["optimize", "support", "--tiers", "{tiers}", "--match-tier", "huge"],
                           "unknown tier 'huge'; catalog has: small, big"),
    "bad dataset line": (["optimize", "support", "--tiers", "{tiers}", "--dataset", "{bad_jsonl}"],
                         r"bad\.jsonl:2: not valid JSON"),
    "limit too small": (["optimize", "support", "--tiers", "{tiers}", "--limit", "2"], "--limit must be at least 4"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_user_mistakes_exit_2_with_one_line(env, case):
    args, pattern = CASES[case]
    args = [a.format(**env) for a in args]
    result = CliRunner().invoke(cli.app, args)
    assert result.exit_code == 2, (result.stdout, result.stderr, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert re.search(pattern, lines[0]), lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stdout == ""
    assert not (env["tmp"] / ".tierwise").exists()  # a refused command leaves no cache, study or ledger


def test_a_budget_stop_exits_3_with_one_line(env, monkeypatch):
    import optimizers.live
    from pipelines.errors import BudgetExceeded

    def stop(options, progress=None):
        raise BudgetExceeded("budget reached: this compile has spent $0.001 of --budget-usd 0.001")

    monkeypatch.setattr(optimizers.live, "optimize", stop)
    result = CliRunner().invoke(cli.app, ["optimize", "support", "--tiers", env["tiers"], "--budget-usd", "0.001"])
    assert result.exit_code == cli.BUDGET_STOP == 3, (result.stderr, result.exception)
    assert result.stderr.strip().splitlines() == ["stopped: budget reached: this compile has spent $0.001 of "
                                                  "--budget-usd 0.001"]


@pytest.mark.parametrize("args, pattern", [
    (["tiers", "--tiers", "{bad_toml}"], "not valid TOML"),
    (["run", "{tampered}", "--input", '{{"message": "hi"}}'], "checksum mismatch"),
])
def test_real_process_prints_one_line_and_no_traceback(env, args, pattern):
    proc = subprocess.run([sys.executable, str(ROOT / "cli.py"), *[a.format(**env) for a in args]],
                          cwd=env["tmp"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and pattern in lines[0], proc.stderr


def test_no_arguments_shows_help_and_commands():
    result = CliRunner().invoke(cli.app, [])
    text = result.stdout + result.stderr
    for command in ("tiers", "optimize", "run"):
        assert command in text


def test_run_says_why_a_rung_failed_when_the_fallback_answered(env, monkeypatch):
    """The fallback keeps answering while a tier is down; `run` shows the failure's reason beside the path."""
    base = support_script()

    def script(tier, messages):
        return ConnectionRefusedError("connection refused by 127.0.0.1:9") if tier == "small" else base(tier, messages)

    monkeypatch.setitem(backends.SCRIPTED, "*", script)
    message = next(iter(support_rows().values()))["message"]
    result = CliRunner().invoke(cli.app, ["run", env["artifact"], "--input", json.dumps({"message": message})])
    assert result.exit_code == 0, result.output
    assert "classify:small(failed) ; classify:big(accepted)" in result.output
    assert "extract:small(failed) ; extract:big(fallback)" in result.output
    assert re.search(r"\n    classify:small failed: .*connection refused by 127\.0\.0\.1:9", result.output)


def test_run_exits_1_when_a_request_failed(env, monkeypatch, tmp_path):
    """Every tier down for one request of a batch: the batch runs, that row prints FAILED, and the exit code says
    so (it was 0, so a script never knew)."""
    base = support_script()
    rows = list(support_rows().values())[:2]

    def script(tier, messages):
        return ConnectionRefusedError("refused") if rows[1]["message"] in str(messages) else base(tier, messages)

    monkeypatch.setitem(backends.SCRIPTED, "*", script)
    batch = tmp_path / "batch.jsonl"
    batch.write_text("".join(json.dumps({"id": f"r{i}", "message": r["message"]}) + "\n" for i, r in enumerate(rows)))
    result = CliRunner().invoke(cli.app, ["run", env["artifact"], "--dataset", str(batch)])
    assert result.exit_code == 1, result.output
    assert "r0: {" in result.output and "r1: FAILED" in result.output
    assert "2 requests  1 FAILED  cost $" in result.output
