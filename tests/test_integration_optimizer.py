"""TierOptimizer on the real local tiers: the README's Python snippet, on a few rows and trials of the
banking task written the DSPy way (examples/bank_intents.py: a Literal output, no description)."""

from __future__ import annotations

import importlib.util
import json
import os
import sys

import dspy
import pytest

from conftest import ROOT
from pipelines import load, local

AVAILABLE = all(local.is_available(m) for m in local.LOCAL_MODELS.values())
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not AVAILABLE and not os.environ.get("CI"),
                       reason=f"local tiers not installed ({local.INSTALL_HINT})"),
]

# One message per label, the plainest of each (18 model calls in all: 6 rows x 3 tiers).
ROWS = ("b001", "b006", "b011", "b016", "b021", "b026")


def bank_module():
    spec = importlib.util.spec_from_file_location("bank_intents_example", ROOT / "examples" / "bank_intents.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_the_python_snippet_compiles_saves_and_loads_on_local_tiers(tmp_path):
    from optimizers import TierOptimizer

    bank = bank_module()
    rows = {r["id"]: r for r in map(json.loads, open(ROOT / "datasets" / "bank_intents.jsonl"))}
    examples = [dspy.Example(message=rows[i]["message"], intent=rows[i]["intent"]).with_inputs("message")
                for i in ROWS]
    program = bank.BankTriage()
    optimizer = TierOptimizer(metric=bank.metric, trials=12, holdout=0.3, seed=0,
                              storage=f"sqlite:///{tmp_path}/studies.db", work_dir=tmp_path / ".tierwise")
    compiled = optimizer.compile(program, trainset=examples[:4], valset=examples[4:])
    summary = optimizer.summary_
    assert summary["paid_calls"] == 18 and summary["full_matrix_calls"] == 18
    assert summary["dev"]["n"] == 4 and summary["holdout"]["n"] == 2 and summary["trials"] == 12
    # the labels reach the prompt: before, every tier scored 0.000 on this task
    assert summary["baselines"]["flagship"]["dev"]["quality"] >= 0.5
    assert set(optimizer.policy_.predictors) == {"classify"}
    answer = compiled(message=rows["b002"]["message"]).intent
    assert answer in bank.LABELS
    path = compiled.save(tmp_path / "bank.tierwise.json")
    again = load(path, program=bank.BankTriage())
    assert again.policy.to_dict() == optimizer.policy_.to_dict()
    assert "forward" not in vars(program.classify)  # the caller's program was not wrapped


def test_a_check_reads_the_local_tiers_real_answers_at_compile_and_in_production(tmp_path):
    """pipelines.answer_checks on real answers: the check sees every recorded cell's typed prediction, the artifact
    names it, and production loads it again (or is told, in one line, that it must)."""
    from optimizers import TierOptimizer
    from pipelines.errors import ConfigError

    bank = bank_module()
    rows = {r["id"]: r for r in map(json.loads, open(ROOT / "datasets" / "bank_intents.jsonl"))}
    examples = [dspy.Example(message=rows[i]["message"], intent=rows[i]["intent"]).with_inputs("message")
                for i in ROWS]
    seen = []

    def intent_word_in_message(args, pred):
        seen.append(pred.intent)
        return any(part in args["message"].lower() for part in str(pred.intent).split("_"))

    checks = {"classify": intent_word_in_message}
    optimizer = TierOptimizer(metric=bank.metric, trials=12, holdout=0.3, seed=0, checks=checks,
                              storage=f"sqlite:///{tmp_path}/studies.db", work_dir=tmp_path / ".tierwise")
    compiled = optimizer.compile(bank.BankTriage(), trainset=examples[:4], valset=examples[4:])
    assert len(seen) >= 6 and set(seen) <= set(bank.LABELS)  # every answered cell's typed answer (a failed one has none)
    assert optimizer.artifact_["checks"]["classify"][0]["name"] == "intent_word_in_message"
    assert optimizer.summary_["checks"] == {"classify": ["intent_word_in_message"]}
    scorer = optimizer.artifact_["scorers"].get("classify")
    if scorer is not None:  # fitted when the recorded answers were both right and wrong
        assert "check:intent_word_in_message" in scorer["features"]
    path = compiled.save(tmp_path / "bank-checks.tierwise.json")
    again = load(path, program=bank.BankTriage(), checks=checks)
    assert again(message=rows["b002"]["message"]).intent in bank.LABELS
    if optimizer.policy_["classify"].estimator == "learned":
        with pytest.raises(ConfigError, match="was compiled with checks"):
            load(path, program=bank.BankTriage())
