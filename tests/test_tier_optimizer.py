"""TierOptimizer: a program defined here (postponed annotations, a Literal output with no description),
dspy.Example trainsets and a DSPy metric, compiled on scripted tiers; the artifact round trip."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
import re
from typing import Literal

import dspy
import pydantic
import pytest

from conftest import answer as chat_answer
from conftest import fake_catalog
from optimizers import TierOptimizer
from pipelines import decompose, load
from pipelines.errors import ArtifactError, ConfigError, DatasetError

LABELS = ("card_lost", "balance", "fraud_report")
MESSAGES = {
    "card_lost": ["I lost my card", "my card is gone", "card stolen on the bus", "dropped my debit card",
                  "can't find my bank card", "wallet with my card was taken", "lost visa card"],
    "balance": ["how much money do I have", "what's my balance", "check my funds", "money left on account?",
                "show my savings balance", "balance please", "how much is in checking"],
    "fraud_report": ["charges I never made", "someone used my account", "strange payments abroad",
                     "unknown withdrawal", "I think I was scammed", "fraud on my statement", "not my purchase"],
}
GOLD = {m: label for label, ms in MESSAGES.items() for m in ms}


class Intent(dspy.Signature):
    """Classify the intent of a banking customer's message."""

    message: str = dspy.InputField()
    intent: Literal[LABELS] = dspy.OutputField()


def trainset():
    return [dspy.Example(message=m, intent=label).with_inputs("message") for m, label in GOLD.items()]


def metric(example, prediction, trace=None):
    return example.intent == prediction.intent


def script(seen: list):
    """big: always right. small: right on card_lost and balance, wrong and unsure on fraud. Both read
    the labels from the prompt: a label absent from it is never answered."""

    def answer(tier, messages):
        system, message = messages[0]["content"], messages[-1]["content"]
        seen.append(system)
        gold = GOLD[message]
        offered = [label for label in LABELS if label in system]
        if tier == "big" or gold != "fraud_report":
            value, confidence = (gold if gold in offered else "block"), 0.95
        else:
            value, confidence = "balance", 0.3
        return value, confidence

    return answer


def make_program():
    class Bank(dspy.Module):  # defined inside a function: no importable factory
        def __init__(self):
            super().__init__()
            self.classify = dspy.Predict(Intent)

        def forward(self, message):
            return self.classify(message=message)

    return Bank()


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tieropt")
    seen: list = []
    program = make_program()
    before = program.dump_state()
    optimizer = TierOptimizer(metric=metric, tiers=fake_catalog("small", "big"), trials=40, holdout=0.3,
                              storage=f"sqlite:///{tmp}/studies.db", seed=0, work_dir=tmp / ".tierwise",
                              scripts={"*": script(seen)})
    result = optimizer.compile(program, trainset=trainset())
    return tmp, program, before, optimizer, result, seen


def test_compile_returns_a_copy_and_leaves_the_program_untouched(compiled):
    _, program, before, _, result, _ = compiled
    assert result.program is not program
    assert program.dump_state() == before
    assert "forward" not in vars(program.classify)  # no cascade wrapper on the caller's predictor
    assert "forward" in vars(result.program.classify)


def test_prompt_carried_the_labels(compiled):
    *_, seen = compiled
    assert seen and all(all(label in system for label in LABELS) for system in seen)


def test_learned_state_reads_like_cli_summary(compiled):
    _, _, _, optimizer, result, _ = compiled
    s = optimizer.summary_
    assert s["task"] == "Bank" and s["reference"] == "big"
    assert s["dev"]["n"] + s["holdout"]["n"] == len(GOLD)
    assert s["baselines"]["big"]["dev"]["quality"] == 1.0
    assert s["baselines"]["small"]["dev"]["quality"] == pytest.approx(2 / 3, abs=0.15)
    # the cheap tier answers card_lost/balance right and confidently, fraud wrongly and unsure: a
    # small > big ladder matches flagship quality for less
    assert optimizer.policy_["classify"].ladder == ["small", "big"]
    assert s["holdout"]["quality"] == 1.0 and s["savings_pct"] > 20
    assert s["trials"] == 40 and len(optimizer.study_.trials) == 40
    prediction = result(message="unknown withdrawal")
    assert prediction.intent == "fraud_report"
    assert [step.tier for step in result.last_trail] == ["small", "big"]


def test_save_and_load_onto_an_instance(compiled):
    tmp, _, _, _, result, _ = compiled
    path = result.save(tmp / "bank.tierwise.json")
    with pytest.raises(ArtifactError, match="records no way to rebuild"):
        load(path)
    loaded = load(path, program=make_program(), scripts={"*": script([])})
    assert loaded(message="I lost my card").intent == "card_lost"
    assert loaded.policy.to_dict() == result.policy.to_dict()


def test_load_refuses_a_different_program(compiled):
    tmp, _, _, _, result, _ = compiled
    path = result.save(tmp / "bank2.tierwise.json")
    other = dspy.Predict("message -> intent")
    with pytest.raises(ArtifactError, match="compiled for a different program"):
        load(path, program=other)


def test_a_program_with_demos_loads_onto_a_fresh_instance_and_rebuilds(tmp_path):
    """DSPy's flow: demos from dspy.BootstrapFewShot (here set by hand), then tierwise's compile. Loading the
    artifact onto a fresh instance, as DSPy's program.load(path) does, was refused ('compiled for a different
    program': the demos are part of the fingerprint and were checked before the artifact's state was
    loaded). The fresh instance now gets the compiled demos; another program is still refused."""
    with_demos = ImportableBank()
    with_demos.classify.demos = [dspy.Example(message="my card is gone", intent="card_lost")]
    optimizer = TierOptimizer(metric=metric, tiers=fake_catalog("small", "big"), trials=5,
                              storage=f"sqlite:///{tmp_path}/s.db", work_dir=tmp_path, scripts={"*": script([])})
    path = optimizer.compile(with_demos, trainset=trainset()).save(tmp_path / "demos.json")
    for loaded in (load(path, program=ImportableBank(), scripts={"*": script([])}),
                   load(path, scripts={"*": script([])})):
        assert [dict(d.items()) for d in loaded.program.classify.demos] == [
            {"message": "my card is gone", "intent": "card_lost"}]
        assert loaded(message="I lost my card").intent == "card_lost"
    with pytest.raises(ArtifactError, match="compiled for a different program"):
        load(path, program=dspy.Predict("message -> intent"))


def test_examples_without_inputs_and_a_bad_objective_are_refused():
    with pytest.raises(ConfigError, match="with_inputs"):
        TierOptimizer(metric=metric, tiers=fake_catalog("small", "big"), scripts={}).compile(
            make_program(), trainset=[dspy.Example(message="x", intent="balance")])
    with pytest.raises(ConfigError, match="at most one"):
        TierOptimizer(metric=metric, min_quality=0.8, match_tier="big")
    with pytest.raises(ConfigError, match="metric"):
        TierOptimizer(metric=None)


@pytest.mark.parametrize("settings, message", [
    ({"budget_usd": float("nan")}, r"^budget_usd= must be a finite amount >= 0, got nan$"),
    ({"budget_usd": -1.0}, r"^budget_usd= must be a finite amount >= 0, got -1\.0$"),
    ({"holdout": 0}, r"^holdout= must lie in \(0, 1\), got 0:"),
    ({"holdout": 1.0}, r"^holdout= must lie in \(0, 1\), got 1\.0:"),
    ({"trials": 0}, r"^trials= must be a whole number of at least 1, got 0$"),
    ({"trials": 2.5}, r"^trials= must be a whole number of at least 1, got 2\.5$"),
    ({"seed": -1}, r"^seed= must be a whole number from 0 to 4294967295, got -1$"),
    ({"min_quality": 0.8, "match_tier": "big"}, r"^give at most one of min_quality=, match_tier=, max_cost_per_1k=$"),
    ({"min_quality": 1.5}, r"^min_quality= must lie in \[0, 1\], got 1\.5$"),
    ({"decompose": "no"}, r"^decompose= takes True or False, got 'no'$"),
    ({"allow_incomplete": 1}, r"^allow_incomplete= takes True or False, got 1$"),
])
def test_out_of_range_settings_are_refused_by_their_python_names_before_any_call(settings, message):
    """A NaN budget capped nothing, -1 stopped the first call, holdout=0 printed nan notes: refused at once."""
    with pytest.raises(ConfigError, match=message):
        TierOptimizer(metric=metric, tiers=fake_catalog("small", "big"), **settings)


def test_a_budget_stop_in_a_python_compile_names_budget_usd(tmp_path):
    """The compile's own messages named the CLI's --budget-usd to a Python caller: the same BudgetExceeded, the
    parameter's name."""
    from pipelines.errors import BudgetExceeded

    optimizer = TierOptimizer(metric=metric, tiers=fake_catalog("small", "big"), trials=3, budget_usd=0.0,
                              storage=f"sqlite:///{tmp_path}/s.db", work_dir=tmp_path, scripts={"*": script([])})
    with pytest.raises(BudgetExceeded, match=r"this compile has spent \$0\.000000 of budget_usd= \$0\.000000") as stop:
        optimizer.compile(make_program(), trainset=trainset())
    assert "--budget-usd" not in str(stop.value)


class ImportableBank(dspy.Module):  # importable: the artifact records it as the factory
    def __init__(self):
        super().__init__()
        self.classify = dspy.Predict(Intent)

    def forward(self, message):
        return self.classify(message=message)


def test_an_importable_program_is_rebuilt_by_load(tmp_path):
    optimizer = TierOptimizer(metric=metric, tiers=fake_catalog("small", "big"), trials=10,
                              storage=f"sqlite:///{tmp_path}/s.db", work_dir=tmp_path, scripts={"*": script([])})
    path = optimizer.compile(ImportableBank(), trainset=trainset(), valset=trainset()[:6]).save(tmp_path / "b.json")
    assert optimizer.artifact_["program"]["task"].endswith(":ImportableBank")
    assert optimizer.summary_["holdout"]["n"] == 6 and optimizer.summary_["dev"]["n"] == len(GOLD)
    loaded = load(path, scripts={"*": script([])})
    assert isinstance(loaded.program, ImportableBank)
    assert loaded(message="balance please").intent == "balance"


def test_a_dspy_style_task_file_compiles_through_the_cli_path(tmp_path):
    """examples/bank_intents.py: `program`, a JSONL `trainset` and a DSPy metric, no NAME/inputs/build_program."""
    import json

    from conftest import ROOT
    from optimizers.live import OptimizeOptions, optimize

    rows = [json.loads(line) for line in open(ROOT / "datasets" / "bank_intents.jsonl")]
    gold = {r["message"]: r["intent"] for r in rows}
    tiers = tmp_path / "tiers.toml"
    tiers.write_text('[[tier]]\nname = "small"\nmodel = "fake/small"\ninput_per_1m = 0.1\noutput_per_1m = 0.4\n'
                     '[[tier]]\nname = "big"\nmodel = "fake/big"\ninput_per_1m = 1.0\noutput_per_1m = 4.0\n')

    def answer(tier, messages):
        label = gold[messages[-1]["content"]]
        return (label if tier == "big" or label != "fraud_report" else "balance"), (0.95 if tier == "big" else 0.5)

    task_file = str(ROOT / "examples" / "bank_intents.py")
    summary = optimize(OptimizeOptions(task=task_file, tiers=str(tiers), trials=10, work_dir=tmp_path,
                                       storage=f"sqlite:///{tmp_path}/s.db", out=str(tmp_path / "bank.json"),
                                       scripts={"*": answer}))
    assert summary["task"] == "bank_intents" and summary["dev"]["n"] + summary["holdout"]["n"] == len(rows)
    assert summary["baselines"]["big"]["dev"]["quality"] == 1.0
    assert summary["baselines"]["small"]["dev"]["quality"] == pytest.approx(25 / 30, abs=0.1)
    with pytest.raises(ArtifactError, match="pass it explicitly"):
        load(tmp_path / "bank.json")
    loaded = load(tmp_path / "bank.json", task=task_file, scripts={"*": answer})
    assert loaded(message="what's my current balance").intent == "balance"


def test_a_task_file_with_a_bare_predict_and_its_edits(tmp_path):
    """`program = dspy.Predict(Sig)` with a JSONL trainset and no `inputs`: its forward takes **kwargs, so the
    input list came out empty and every row was asked with no input at all (exit 0, one call per tier). The
    inputs are now the signature's. An edited metric or label is another compile: the study of the run
    before was continued (0 new trials, a stale report)."""
    import json
    import sys

    from optimizers.live import OptimizeOptions, optimize
    from tests.fakes import write_tiers

    (tmp_path / "rows.jsonl").write_text("".join(
        json.dumps({"id": f"r{i}", "text": f"item {i}", "label": "even" if i % 2 == 0 else "odd"}) + "\n"
        for i in range(8)))
    task_file = tmp_path / "parity_task.py"
    source = ('import dspy\n\nclass Parity(dspy.Signature):\n    text: str = dspy.InputField()\n'
              '    label: str = dspy.OutputField()\n\nprogram = dspy.Predict(Parity)\ntrainset = "rows.jsonl"\n\n'
              'def metric(example, prediction, trace=None):\n    return example.label == prediction.label\n')
    task_file.write_text(source)
    asked: list = []

    def answer(tier, messages):
        asked.append(messages[-1]["content"])
        number = int(re.search(r"item (\d+)", messages[-1]["content"]).group(1))
        return ("even" if number % 2 == 0 else "odd") if tier == "big" or number < 4 else "even", 0.9

    def compile_once():
        return optimize(OptimizeOptions(task=str(task_file), tiers=str(write_tiers(tmp_path)), trials=6,
                                        work_dir=tmp_path, storage=f"sqlite:///{tmp_path}/s.db", holdout=0.25,
                                        scripts={"*": answer}))

    first = compile_once()
    assert first["paid_calls"] == 16 and all("item" in text for text in asked)
    assert first["baselines"]["big"]["dev"]["quality"] == 1.0 and first["trials_run_now"] == 6
    assert compile_once()["trials_run_now"] == 0  # the same compile again: its study continues
    task_file.write_text(source.replace("return example.label == prediction.label", "return True"))
    for name in [n for n in sys.modules if n.startswith("tierwise_task_parity_task")]:
        del sys.modules[name]  # the edited file, read again as a new `cli.py optimize` process reads it
    edited = compile_once()
    assert edited["study"] != first["study"] and edited["trials_run_now"] == 6 and edited["paid_calls"] == 0
    assert edited["baselines"]["small"]["dev"]["quality"] == 1.0  # scored by the new metric


def test_an_artifact_cannot_name_any_callable_as_its_factory(tmp_path):
    """The checksum is not a signature: a rewritten `program.task` may only name a dspy.Module class."""
    from pipelines.artifact import read, save

    optimizer = TierOptimizer(metric=metric, tiers=fake_catalog("small", "big"), trials=4,
                              storage=f"sqlite:///{tmp_path}/s.db", work_dir=tmp_path, scripts={"*": script([])})
    path = optimizer.compile(ImportableBank(), trainset=trainset()).save(tmp_path / "b.json")
    body = read(path)
    body["program"]["task"] = "os:getcwd"
    save(body, path)
    with pytest.raises(ConfigError, match="not a dspy.Module class"):
        load(path)


def test_an_artifact_never_makes_load_import_a_module(tmp_path, monkeypatch):
    """Importing runs a module's code: a factory is built on the artifact's word only from a module the caller
    has imported. Naming one that is not imported is refused, and the module stays unimported."""
    import sys

    from pipelines.artifact import read, save

    optimizer = TierOptimizer(metric=metric, tiers=fake_catalog("small", "big"), trials=4,
                              storage=f"sqlite:///{tmp_path}/s.db", work_dir=tmp_path, scripts={"*": script([])})
    path = optimizer.compile(ImportableBank(), trainset=trainset()).save(tmp_path / "b.json")
    (tmp_path / "side_effect_module.py").write_text(
        "import pathlib\npathlib.Path(__file__).with_name('imported.txt').write_text('ran')\n"
        "import dspy\nclass Bank(dspy.Module):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    body = read(path)
    body["program"]["task"] = "side_effect_module:Bank"
    save(body, path)
    with pytest.raises(ArtifactError, match=r"import side_effect_module first .*load\(path, program=\.\.\.\)"):
        load(path)
    assert "side_effect_module" not in sys.modules and not (tmp_path / "imported.txt").exists()


def test_a_semantic_cache_is_searched_for_the_predictors_named(tmp_path):
    """semantic_cache= does for TierOptimizer what a task's SEMANTIC_CACHE does for `cli.py optimize
    --semantic-cache`: a repeated request answers from the cache, and the search finds that it pays."""
    repeated = trainset() * 2  # every message twice: the second is a cache hit at any threshold
    optimizer = TierOptimizer(metric=metric, tiers=fake_catalog("small", "big"), trials=40, holdout=0.3, seed=0,
                              storage=f"sqlite:///{tmp_path}/studies.db", work_dir=tmp_path / ".tierwise",
                              scripts={"*": script([])}, semantic_cache={"predictors": ["classify"]})
    result = optimizer.compile(make_program(), trainset=repeated)
    trials = [t.user_attrs["policy"] for t in optimizer.study_.trials if t.user_attrs.get("policy")]
    assert any("semantic" in p["predictors"]["classify"] for p in trials)  # the cache was searched
    assert optimizer.policy_["classify"].semantic is not None  # and chosen: repeats cost nothing
    result(message="I lost my card")
    result(message="I lost my card")
    assert [s.decision for s in result.last_trail] == ["semantic_hit"]


@pytest.mark.parametrize("bad, match", [
    ({"predictors": []}, "non-empty list"),
    (["classify"], "must be a dict"),
    ({"predictors": ["classify"], "entities": ["("]}, "regular expression"),
])
def test_bad_semantic_cache_settings_are_refused(bad, match):
    with pytest.raises(ConfigError, match=match):
        TierOptimizer(metric=metric, semantic_cache=bad)


def test_a_semantic_cache_for_a_predictor_the_program_lacks_is_refused(tmp_path):
    optimizer = TierOptimizer(metric=metric, tiers=fake_catalog("small", "big"), work_dir=tmp_path / ".tierwise",
                              scripts={"*": script([])}, semantic_cache={"predictors": ["triage"]})
    with pytest.raises(ConfigError, match=r"\['triage'\].*has \['classify'\]"):
        optimizer.compile(make_program(), trainset=trainset())


class Sentence(dspy.Signature):
    """Classify one sentence of a banking customer's message."""

    message: str = dspy.InputField()
    intent: Literal[LABELS] = dspy.OutputField()


class PerSentence(dspy.Module):
    """One predictor called once per sentence, then a vote: a row makes several calls per tier."""

    def __init__(self):
        super().__init__()
        self.classify = dspy.Predict(Sentence)

    def forward(self, message):
        votes = [self.classify(message=part.strip()).intent for part in message.split(".") if part.strip()]
        return dspy.Prediction(intent=max(set(votes), key=votes.count))


def test_a_predictor_called_per_item_pays_each_distinct_call_once(tmp_path):
    """The full matrix counts the calls, not rows x predictors x tiers: 'paid 24 of a matrix of 12' read as
    calls paid twice. A rerun pays nothing."""
    pairs = list(GOLD.items())[:12]
    rows = [(f"{a}. {b}. {a}", la) for (a, la), (b, _) in zip(pairs[::2], pairs[1::2])]  # 6 rows, 2 distinct sentences
    trainset_ = [dspy.Example(message=m, intent=label).with_inputs("message") for m, label in rows]
    paid: list = []

    def answer(tier, messages):
        paid.append((tier, messages[-1]["content"]))
        return GOLD.get(messages[-1]["content"], "balance"), 0.9

    def compile_once():
        optimizer = TierOptimizer(metric=metric, tiers=fake_catalog("small", "big"), trials=5, holdout=0.3,
                                  storage=f"sqlite:///{tmp_path}/studies.db", seed=0, work_dir=tmp_path / ".tierwise",
                                  scripts={"*": answer})
        optimizer.compile(PerSentence(), trainset=trainset_)
        return optimizer.summary_

    summary = compile_once()
    assert len(paid) == len(set(paid)) == 6 * 2 * 2  # 6 rows x 2 distinct sentences x 2 tiers
    assert summary["paid_calls"] == summary["full_matrix_calls"] == 24
    again = compile_once()
    assert again["paid_calls"] == 0 and again["full_matrix_calls"] == 24 and len(paid) == 24


def test_each_call_of_a_predictor_called_per_item_is_its_own_cell(tmp_path):
    """Scorers, routers, failure notes and the report read every call of a predictor, not only a row's first:
    here the small tier fails on every second sentence, which a table of first calls never sees."""
    pairs = list(GOLD.items())[:12]
    rows = [(f"{a}. {b}", la) for (a, la), (b, _) in zip(pairs[::2], pairs[1::2])]
    second = {b for (_, _), (b, _) in zip(pairs[::2], pairs[1::2])}
    trainset_ = [dspy.Example(message=m, intent=label).with_inputs("message") for m, label in rows]

    def answer(tier, messages):
        sentence = messages[-1]["content"]
        if tier == "small" and sentence in second:
            return "no idea", 0.9  # not one of the labels: the rung fails to parse
        return GOLD[sentence], 0.9

    optimizer = TierOptimizer(metric=metric, tiers=fake_catalog("small", "big"), trials=3, holdout=0.3,
                              storage=f"sqlite:///{tmp_path}/studies.db", seed=0, work_dir=tmp_path / ".tierwise",
                              scripts={"*": answer})
    optimizer.compile(PerSentence(), trainset=trainset_)
    cells = optimizer.artifact_["evaluation"]["cells"]
    assert sorted({c["call"] for c in cells}) == [0, 1]
    assert len(cells) == 6 * 2 * 2  # rows x calls x tiers
    small = {c["call"]: c for c in cells if c["tier"] == "small" and c["row_id"] == cells[0]["row_id"]}
    assert small[0]["ok"] and small[0]["agrees_with_top"] is True and not small[1]["ok"]
    note = next(n for n in optimizer.summary_["notes"] if "no usable answer" in n)
    assert "small 6 of 12 calls" in note
    steps = [s for r in optimizer.artifact_["evaluation"]["baselines"]["big"] for s in r["steps"]]
    assert [s["call"] for s in steps] == [0, 1] * 6  # the trail says which call each step belongs to


def test_a_tier_that_writes_past_the_limit_is_not_told_to_get_more_tokens(tmp_path):
    """The cut-answer hint says to give the predictor more tokens; when the other tier answered every row within
    its limit, the note says the failing tier is writing past the answer instead."""
    def answer(tier, messages):
        if tier == "small":
            return " ".join(["well"] * 400), 0.9  # never stops
        return str(len(messages[-1]["content"].split())), 0.9

    optimizer = TierOptimizer(metric=count_metric, tiers=fake_catalog("small", "big", small={"max_tokens": 24}),
                              trials=3, holdout=0.25, storage=f"sqlite:///{tmp_path}/studies.db", seed=0,
                              work_dir=tmp_path / ".tierwise", scripts={"*": answer})
    class TypedCount(dspy.Module):
        def __init__(self):
            super().__init__()
            self.count = dspy.Predict("message -> words: int")

        def forward(self, message):
            return self.count(message=message)

    optimizer.compile(TypedCount(), trainset=count_trainset())
    note = next(n for n in optimizer.summary_["notes"] if "no usable answer" in n)
    assert "stopped at max_tokens=24" in note and "small 8 of 8 rows" in note
    assert note.endswith("; big answered every row within its limit, so small may be writing past the answer: more "
                         "tokens would make its calls dearer, not surely usable"), note


def test_a_refine_program_compiles_with_its_feedback_step_priced_and_cached(tmp_path):
    """dspy.Refine under the search: its feedback step (a predictor it builds at run time) runs on the tier of
    the answer it reads (small-only stays small), counts in each row's cost, and its hint reaches the next
    attempt; a second compile pays nothing."""
    questions = [f"question {i}" for i in range(8)]
    trainset_ = [dspy.Example(question=q, answer="three").with_inputs("question") for q in questions]
    paid: list = []

    def answer(tier, messages):
        text = " ".join(m["content"] for m in messages)
        paid.append(tier)
        if "advice" in text:  # Refine's feedback step: two output fields
            return chat_answer(discussion="it said one", advice='{"self": "say three"}'), 0.9
        return ("three" if tier == "big" or "say three" in text else "one"), 0.9

    def compile_once():
        optimizer = TierOptimizer(metric=lambda e, p, trace=None: p.answer == e.answer,
                                  tiers=fake_catalog("small", "big"), trials=3, holdout=0.25,
                                  storage=f"sqlite:///{tmp_path}/studies.db", seed=0, work_dir=tmp_path / ".tierwise",
                                  scripts={"*": answer})
        optimizer.compile(dspy.Refine(dspy.Predict("question -> answer"), N=2, threshold=1.0,
                                      reward_fn=lambda args, p: float(p.answer == "three")), trainset=trainset_)
        return optimizer

    first = compile_once()
    small = first.artifact_["evaluation"]["baselines"]["small"]
    assert all(r["score"] == 1.0 for r in small)  # the hint reached the second attempt on every row
    assert all([(s["predictor"], s["tier"]) for s in r["steps"]] ==
               [("module", "small"), ("(built at run time)", "small"), ("module", "small")] for r in small)
    assert all(r["cost_usd"] == sum(s["cost_usd"] for s in r["steps"]) for r in small)
    paid_first = len(paid)
    again = compile_once()
    assert again.summary_["paid_calls"] == 0 and len(paid) == paid_first


class Chatty(dspy.Module):
    """Prints and logs on every call, as dspy.Refine does on each failed attempt."""

    def __init__(self):
        super().__init__()
        self.classify = dspy.Predict(Intent)

    def forward(self, message):
        print(f"classifying {message!r}")
        logging.getLogger("dspy.chatty").warning("a warning on every call")
        return self.classify(message=message)


def test_what_the_program_prints_during_the_search_goes_to_a_file(tmp_path, capsys):
    """Recording shows each row on each tier once; the search re-runs the program hundreds of times, and its
    output goes to .tierwise/program-output.log, with a note that says how much."""
    optimizer = TierOptimizer(metric=metric, tiers=fake_catalog("small", "big"), trials=20, holdout=0.3,
                              storage=f"sqlite:///{tmp_path}/studies.db", seed=0, work_dir=tmp_path / ".tierwise",
                              scripts={"*": script([])})
    optimizer.compile(Chatty(), trainset=trainset())
    shown = capsys.readouterr().out.count("classifying")
    assert shown == len(trainset()) * 2  # each row on each tier, while recording
    log = (tmp_path / ".tierwise" / "program-output.log").read_text()
    assert log.count("classifying") > 20 * 10 and log.count("WARNING dspy.chatty: a warning on every call") > 200
    note = next(n for n in optimizer.summary_["notes"] if "program-output.log" in n)
    assert f"printed or logged {log.count(chr(10))} lines" in note


class Count(dspy.Module):
    """Reads the tier's answer as a number: a tier that writes words makes the program's own code raise."""

    def __init__(self):
        super().__init__()
        self.count = dspy.Predict("message -> words")

    def forward(self, message):
        return dspy.Prediction(words=int(self.count(message=message).words))


def count_script(paid: list):
    def answer(tier, messages):
        message = messages[-1]["content"]
        paid.append((tier, message))
        return str(len(message.split())) if tier == "big" else "several"  # small never writes a number

    return answer


def count_trainset():
    return [dspy.Example(message=m, words=len(m.split())).with_inputs("message") for m in list(GOLD)[:8]]


def count_metric(example, prediction, trace=None):
    return example.words == prediction.words


def count_optimizer(tmp_path, paid):
    return TierOptimizer(metric=count_metric, tiers=fake_catalog("small", "big"), trials=5, holdout=0.25,
                         storage=f"sqlite:///{tmp_path}/studies.db", seed=0, work_dir=tmp_path / ".tierwise",
                         scripts={"*": count_script(paid)})


@pytest.mark.parametrize("broken, match, paid_before_the_stop", [
    # the same error on every row (a typo-like bug): stopped after the top tier's first 3 rows
    (lambda example, prediction, trace=None: (example.words == prediction.words) / 0,
     r"the program or its metric raised the same error on the first 3 rows with every predictor on big; row \S+: "
     r"metric: ZeroDivisionError", 3),
    # an error that differs per row: the majority rule after recording
    (lambda example, prediction, trace=None: {}[f"{example.message}"],
     r"the program or its metric raised on 8 of 8 rows even with every predictor on big; first, row \S+: "
     r"metric: KeyError", 16),
])
def test_a_metric_that_raises_on_every_row_is_one_line_and_loses_no_call(tmp_path, broken, match,
                                                                         paid_before_the_stop):
    """A bug in the task's own code used to end the compile with a traceback; it is a ConfigError naming
    the row and the error, and the rerun after the fix pays only what it had not."""
    paid: list = []
    with pytest.raises(ConfigError, match=match):
        TierOptimizer(metric=broken, tiers=fake_catalog("small", "big"), trials=5, holdout=0.25,
                      storage=f"sqlite:///{tmp_path}/studies.db", seed=0, work_dir=tmp_path / ".tierwise",
                      scripts={"*": count_script(paid)}).compile(Count(), trainset=count_trainset())
    assert len(paid) == paid_before_the_stop
    fixed = count_optimizer(tmp_path, paid)
    fixed.compile(Count(), trainset=count_trainset())
    assert len(paid) == 16  # the rest of the matrix; nothing paid twice


def test_the_metric_sees_the_users_example_without_tierwises_row_keys(tmp_path):
    """A metric comparing every label (`example.labels()`) saw tierwise's `id` and `segment` too: every tier
    scored 0 and the compile picked the cheapest, silently."""
    seen: list = []

    def every_label(example, prediction, trace=None):
        return all(prediction.get(key) == value for key, value in example.labels().items())

    optimizer = TierOptimizer(metric=every_label, tiers=fake_catalog("small", "big"), trials=10, holdout=0.3,
                              storage=f"sqlite:///{tmp_path}/studies.db", seed=0, work_dir=tmp_path / ".tierwise",
                              scripts={"*": script(seen)})
    optimizer.compile(make_program(), trainset=trainset())
    assert optimizer.summary_["baselines"]["big"]["holdout"]["quality"] == 1.0


def test_a_valset_that_repeats_the_trainset_is_named_in_the_notes(tmp_path):
    """valset=trainset gave a "holdout" check on the very rows the search chose on, presented as independent."""
    optimizer = TierOptimizer(metric=metric, tiers=fake_catalog("small", "big"), trials=5,
                              storage=f"sqlite:///{tmp_path}/studies.db", seed=0, work_dir=tmp_path / ".tierwise",
                              scripts={"*": script([])})
    examples = trainset()
    optimizer.compile(make_program(), trainset=examples[:15], valset=examples[10:])
    assert "5 of 11 valset examples are also in the trainset: the holdout check on them is not independent of " \
           "the search" in optimizer.summary_["notes"]


def test_an_id_field_that_repeats_says_it_is_the_row_id(tmp_path):
    optimizer = TierOptimizer(metric=metric, tiers=fake_catalog("small", "big"), work_dir=tmp_path / ".tierwise",
                              scripts={"*": script([])})
    examples = [dspy.Example(message=m, intent=label, id="same").with_inputs("message") for m, label in GOLD.items()]
    with pytest.raises(ConfigError, match=r"row ids are not unique \('same' repeats; an example's own `id` field is "
                                          r"its row id"):
        optimizer.compile(make_program(), trainset=examples)


def test_a_valset_with_other_inputs_names_both(tmp_path):
    optimizer = TierOptimizer(metric=metric, tiers=fake_catalog("small", "big"), work_dir=tmp_path / ".tierwise",
                              scripts={"*": script([])})
    other = [dspy.Example(text=m, intent=label).with_inputs("text") for m, label in list(GOLD.items())[:3]]
    with pytest.raises(ConfigError, match=r"valset inputs \['text'\] differ from the trainset's \['message'\]"):
        optimizer.compile(make_program(), trainset=trainset(), valset=other)


def test_a_metric_returning_nan_on_some_rows_scores_them_zero_and_says_so(tmp_path):
    """NaN on some rows made every trial's quality NaN, which Optuna refuses: compile looped for ever on
    failed trials. Such a row now scores 0 with a note, as a metric that raises does."""
    seen: list = []

    def nan_on_fraud(example, prediction, trace=None):
        return float("nan") if example.intent == "fraud_report" else float(example.intent == prediction.intent)

    optimizer = TierOptimizer(metric=nan_on_fraud, tiers=fake_catalog("small", "big"), trials=10, holdout=0.3,
                              storage=f"sqlite:///{tmp_path}/studies.db", seed=0, work_dir=tmp_path / ".tierwise",
                              scripts={"*": script(seen)})
    optimizer.compile(make_program(), trainset=trainset())
    summary = optimizer.summary_
    assert math.isfinite(summary["holdout"]["quality"]) and summary["trials"] >= 10
    assert any("metric: returned nan, not a finite number" in note for note in summary["notes"])


@pytest.mark.parametrize("examples, match", [
    (lambda: [dspy.Example(message=m, intent="card_stolen").with_inputs("message") for m in GOLD],
     r"trainset\[0\]: row \S+: label 'intent' is 'card_stolen', not one of the output field's choices"),
    (lambda: [dspy.Example(message=m, note="").with_inputs("message") for m in GOLD],
     r"trainset\[0\]: row \S+ lacks the label 'intent' that task \w+'s metric reads"),
])
def test_bad_labels_are_refused_before_any_call_as_the_command_line_does(tmp_path, examples, match):
    """A label outside the Literal compiled silently (every answer scored wrong); a missing one was found only
    after the top tier had answered every row. Both are the dataset checks `cli.py optimize` runs."""
    seen: list = []
    optimizer = TierOptimizer(metric=metric, tiers=fake_catalog("small", "big"), trials=3,
                              work_dir=tmp_path / ".tierwise", scripts={"*": script(seen)})
    with pytest.raises(DatasetError, match=match):
        optimizer.compile(make_program(), trainset=examples())
    assert seen == []


def test_a_program_that_cannot_read_a_tiers_answer_scores_that_row_zero(tmp_path):
    """int('several') raises in the program's own forward on the small tier's answers: those rows score 0 (as
    dspy.Evaluate counts them), the compile goes on, and a note says where and why."""
    paid: list = []
    optimizer = count_optimizer(tmp_path, paid)
    optimizer.compile(Count(), trainset=count_trainset())
    s = optimizer.summary_
    assert s["baselines"]["small"]["dev"]["quality"] == 0.0 and s["baselines"]["big"]["dev"]["quality"] == 1.0
    assert optimizer.policy_["count"].ladder[-1] == "big"
    notes = [n for n in s["notes"] if n.startswith("under small-only")]
    assert notes and re.search(r"raised on 8 of 8 rows \(scored 0\); first, row \S+: program: ValueError: invalid "
                               r"literal for int\(\)", notes[0]), s["notes"]


class CountOrNone(dspy.Module):
    """A typed predictor that the program's own code hands None on one request."""

    def __init__(self):
        super().__init__()
        self.count = dspy.Predict("message: str -> words")

    def forward(self, message):
        given = None if message == list(GOLD)[0] else message
        return dspy.Prediction(words=int(self.count(message=given).words))


def test_a_predictor_given_a_value_its_signature_refuses_fails_that_row_only(tmp_path):
    """The program's own code passing None to a `str` field: dspy warned and the call was paid. The predictor
    refuses it before any call; in a compile that is the row's error (scored 0, noted), not the compile's stop."""
    paid: list = []
    optimizer = count_optimizer(tmp_path, paid)
    optimizer.compile(CountOrNone(), trainset=count_trainset())
    assert not any(m == "None" for _, m in paid) and len(paid) == 2 * 7  # each tier, every other row
    notes = [n for n in optimizer.summary_["notes"] if "raised on" in n and "big-only" in n]
    assert notes and re.search(r"raised on 1 of \d rows \(scored 0\); first, row \S+: program: predictor 'count': "
                               r"input field 'message' must be a string, got NoneType; no call was made", notes[0]), \
        optimizer.summary_["notes"]


class AsyncOnlyCount(dspy.Module):
    """DSPy's async form, with no `forward` at all."""

    def __init__(self):
        super().__init__()
        self.count = dspy.Predict("message -> words")

    async def aforward(self, message: str):
        found = await self.count.acall(message=message)
        return dspy.Prediction(words=int(found.words))


def test_a_program_with_only_aforward_compiles_and_runs(tmp_path):
    """`async def aforward` alone: the compile raised AttributeError 'forward' (a traceback from the command line);
    it runs each row on an event loop of its own, and the compiled program answers sync and async."""
    import asyncio

    paid: list = []
    compiled = count_optimizer(tmp_path, paid).compile(AsyncOnlyCount(), trainset=count_trainset())
    message = list(GOLD)[0]
    assert compiled(message=message).words == len(message.split())
    assert asyncio.run(compiled.acall(message=message)).words == len(message.split())

    async def inside_a_loop():
        return compiled(message=message)

    with pytest.raises(ConfigError, match=r"has only `async def aforward`: inside a running event loop call it with "
                                          r"`await program.acall\(\.\.\.\)`"):
        asyncio.run(inside_a_loop())


def test_a_bare_dspy_module_compiled_from_python_asks_for_the_program_at_load(tmp_path):
    """`compile(dspy.Predict(Sig))` (or ChainOfThought): the artifact named dspy's own class, which needs its
    signature (a TypeError traceback at load and in `run --task`); it names no class, and load asks for program=."""
    from pipelines import load
    from pipelines.errors import ArtifactError
    from pipelines.programs import build_from_factory

    paid: list = []
    compiled = count_optimizer(tmp_path, paid).compile(dspy.Predict("message -> words: int"),
                                                       trainset=count_trainset())
    path = compiled.save(tmp_path / "bare.tierwise.json")
    assert compiled.artifact["program"]["task"] is None
    with pytest.raises(ArtifactError, match=r"records no way to rebuild its program .*; pass one: load\(path, "
                                            r"program=MyProgram\(\)\)"):
        load(path)
    again = load(path, program=dspy.Predict("message -> words: int"), scripts={"*": count_script(paid)})
    assert again(message="one two three").words == 3
    with pytest.raises(ConfigError, match=r"'dspy:ChainOfThought' cannot be built without arguments .*; pass the "
                                          r"program you built: load\(path, program=\.\.\.\)"):
        build_from_factory("dspy:ChainOfThought")


class Triage(dspy.Module):
    """One predictor writes two fields: the intent (small gets it right) and the word count (only big does)."""

    def __init__(self):
        super().__init__()
        self.triage = dspy.Predict(dspy.Signature("message -> intent, words: int", "Triage a banking message."))

    def forward(self, message):
        return self.triage(message=message)


def triage_script(paid: list):
    def answer(tier, messages):
        system, message = messages[0]["content"], messages[-1]["content"]
        paid.append((tier, system))
        if "Answer with the `intent` only" in system:
            return GOLD[message], 0.95
        if "`words` only" not in system:  # the whole form, both fields in one answer
            from tests.fakes import _message

            message = _message(messages)
            words = str(len(message.split())) if tier == "big" else "several"
            return f"[[ ## intent ## ]]\n{GOLD[message]}\n\n[[ ## words ## ]]\n{words}\n\n[[ ## completed ## ]]", 0.9
        return (str(len(message.split())) if tier == "big" else "several"), 0.9

    return answer


def test_a_decomposed_program_tiers_each_field_and_loads_decomposed(tmp_path):
    """decompose(): one predictor per output field, so the easy field goes to the cheap tier; the artifact says so,
    and load splits the program it rebuilds (or is given) the same way."""
    from pipelines.cache import CallCache

    trainset_ = [dspy.Example(message=m, intent=label, words=len(m.split())).with_inputs("message")
                 for m, label in GOLD.items()]
    paid: list = []
    optimizer = TierOptimizer(metric=lambda e, p, trace=None: e.intent == p.intent and e.words == p.words,
                              tiers=fake_catalog("small", "big"), trials=20, holdout=0.3,
                              storage=f"sqlite:///{tmp_path}/s.db", seed=0, work_dir=tmp_path / ".tierwise",
                              scripts={"*": triage_script(paid)})
    compiled = optimizer.compile(decompose(Triage()), trainset=trainset_)
    policy = optimizer.summary_["policy"]
    assert set(policy) == {"triage.intent", "triage.words"}
    assert policy["triage.intent"]["ladder"][0] == "small" and policy["triage.words"]["ladder"][-1] == "big", policy
    assert optimizer.summary_["holdout"]["quality"] == 1.0 and optimizer.summary_["savings_pct"] > 0
    path = compiled.save(tmp_path / "triage.tierwise.json")
    assert compiled.artifact["program"]["decomposed"] is True
    for program in (None, Triage()):  # rebuilt from its importable class, or given: split the same way
        again = load(path, program=program, cache=CallCache(tmp_path / "cache2"), scripts={"*": triage_script(paid)})
        found = again(message="I lost my card")
        assert (found.intent, found.words) == ("card_lost", 4)
        final = {s.predictor: s.tier for s in again.last_trail if s.decision == "accepted"}
        assert final == {"triage.intent": "small", "triage.words": "big"}, again.last_trail
    assert [n for n, _ in decompose(decompose(Triage())).named_predictors()] == ["triage.intent", "triage.words"]
    assert [n for n, _ in Triage().named_predictors()] == ["triage"]  # your program is untouched
    with pytest.raises(ConfigError, match=r"^decompose: no predictor of ChainOfThought writes several output fields "
                       r"\(a dspy\.Predict .*ChainOfThought stays whole\): nothing to split$"):
        decompose(dspy.ChainOfThought("q -> a, b"))  # one reasoning: nothing to split, said rather than compiled whole
    with pytest.raises(ConfigError, match="no predictor of Predict writes several"):
        decompose(dspy.Predict("q -> a"))
    assert [n for n, _ in decompose(dspy.Predict("q -> a, b")).named_predictors()] == ["a", "b"]


def test_decompose_true_splits_the_program_and_measures_it_against_the_whole_form(tmp_path):
    """TierOptimizer(decompose=True), as `optimize --decompose`: the program as written is compiled split, and
    summary_["whole_form"] puts the chosen policy beside the program as written on the reference tier, on the same
    holdout rows (one paid call per row, cached: a second compile pays nothing)."""
    trainset_ = [dspy.Example(message=m, intent=label, words=len(m.split())).with_inputs("message")
                 for m, label in GOLD.items()]
    paid: list = []

    def optimizer():
        return TierOptimizer(metric=lambda e, p, trace=None: e.intent == p.intent and e.words == p.words,
                             tiers=fake_catalog("small", "big"), trials=20, holdout=0.3, decompose=True,
                             storage=f"sqlite:///{tmp_path}/s.db", seed=0, work_dir=tmp_path / ".tierwise",
                             scripts={"*": triage_script(paid)})

    first = optimizer()
    compiled = first.compile(Triage(), trainset=trainset_)
    assert set(first.summary_["policy"]) == {"triage.intent", "triage.words"}
    assert compiled.artifact["program"]["decomposed"] is True
    whole = first.summary_["whole_form"]
    assert compiled.artifact["summary"]["whole_form"] == whole
    assert whole["tier"] == "big" and whole["holdout"]["n"] == first.summary_["holdout"]["n"] > 0
    whole_calls = [system for tier, system in paid if "`intent` only" not in system and "`words` only" not in system]
    assert whole["paid_calls"] == len(whole_calls) == first.summary_["holdout"]["n"]
    assert whole["savings_pct"] > 0 and whole["gap"]["delta"] == pytest.approx(
        first.summary_["holdout"]["quality"] - whole["holdout"]["quality"])
    before = len(paid)
    again = optimizer()
    again.compile(Triage(), trainset=trainset_)
    assert len(paid) == before and again.summary_["whole_form"]["paid_calls"] == 0
    with pytest.raises(ConfigError, match=r"^decompose=True takes the program as written .* decompose\(\)d already$"):
        optimizer().compile(decompose(Triage()), trainset=trainset_)
    with pytest.raises(ConfigError, match=r"^decompose=True: no predictor of task Predict writes several output"):
        optimizer().compile(dspy.Predict("message -> intent"), trainset=trainset_)


TRIAGE_TASK_FILE = """
import dspy

GOLD = {gold!r}


class Steps(dspy.Module):
    \"\"\"The two-field predictor is kept in a list, as programs that loop over steps keep theirs.\"\"\"

    def __init__(self):
        super().__init__()
        self.steps = [dspy.Predict(dspy.Signature("message -> intent, words: int", "Triage a banking message."))]

    def forward(self, message):
        return self.steps[0](message=message)


program = Steps()
trainset = [dspy.Example(message=m, intent=label, words=len(m.split())).with_inputs("message")
            for m, label in GOLD.items()]


def metric(example, prediction, trace=None):
    return example.intent == prediction.intent and example.words == prediction.words
"""


def test_optimize_decompose_splits_a_task_file_predictor_kept_in_a_list(tmp_path, monkeypatch):
    """`optimize TASK --decompose`: the task's program compiled decomposed, a predictor held in a list included
    (it stayed whole before); `run` rebuilds the split program from the artifact alone."""
    from typer.testing import CliRunner

    import cli
    from pipelines import backends
    from tests.fakes import write_tiers

    monkeypatch.chdir(tmp_path)
    paid: list = []
    monkeypatch.setitem(backends.SCRIPTED, "*", triage_script(paid))
    task = tmp_path / "steps_task.py"
    task.write_text(TRIAGE_TASK_FILE.format(gold=GOLD))
    tiers = str(write_tiers(tmp_path))
    result = CliRunner().invoke(cli.app, ["optimize", str(task), "--tiers", tiers, "--trials", "20", "--decompose",
                                          "--json"])
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    summary = json.loads(result.stdout)
    assert summary["artifact"].endswith(".decomposed.tierwise.json")  # beside the whole form's, not over it
    assert set(summary["policy"]) == {"steps[0].intent", "steps[0].words"}, summary["policy"]
    assert summary["policy"]["steps[0].intent"]["ladder"][0] == "small"
    assert summary["policy"]["steps[0].words"]["ladder"][-1] == "big"
    assert json.loads(Path(summary["artifact"]).read_text())["program"]["decomposed"] is True
    # its saving is against its own flagship-only; beside it, the program as written on big, same holdout rows
    whole = summary["whole_form"]
    assert whole["tier"] == "big" and whole["holdout"]["n"] == summary["holdout"]["n"] > 0
    whole_calls = [system for tier, system in paid if "`intent` only" not in system and "`words` only" not in system]
    assert whole["paid_calls"] == len(whole_calls) == summary["holdout"]["n"]  # one whole-form call per row
    assert whole["savings_pct"] == pytest.approx(
        100 * (1 - summary["holdout"]["cost_per_1k"] / whole["holdout"]["cost_per_1k"]))
    assert whole["gap"]["delta"] == pytest.approx(summary["holdout"]["quality"] - whole["holdout"]["quality"])
    again = CliRunner().invoke(cli.app, ["optimize", str(task), "--tiers", tiers, "--trials", "20", "--decompose"])
    assert again.exit_code == 0, again.stderr
    line = next(x for x in again.stdout.splitlines() if x.startswith("vs the whole form (not decomposed) on big:"))
    assert "paid calls" not in line and f"saving {whole['savings_pct']:.1f}% of holdout cost" in line  # cached
    # --budget-usd covers those calls too: what the compile left of it, and none left is a line, not a failure
    from optimizers.live import OptimizeOptions, load_all_rows
    from optimizers.stages import Job
    from optimizers.whole_form import whole_form_reference
    from pipelines.decomposition import DecomposedTask
    from pipelines.tasks import load_task
    from pipelines.tiers import load_catalog

    split = DecomposedTask(load_task(str(task)))
    job = Job(task=split, rows=load_all_rows(split, OptimizeOptions(task=str(task))), catalog=load_catalog(tiers),
              budget_usd=summary["spent_usd_compile"], work_dir=tmp_path / "fresh", scripts={"*": triage_script([])})
    skipped = whole_form_reference(job, split.whole, summary, {})
    assert skipped["skipped"].startswith("the whole form on big was not measured: budget reached"), skipped
    ran = CliRunner().invoke(cli.app, ["run", summary["artifact"], "--task", str(task), "--json",
                                       "--input", json.dumps({"message": "I lost my card"})])
    assert ran.exit_code == 0, (ran.stdout, ran.stderr, ran.exception)
    assert {"intent": "card_lost", "words": 4}.items() <= json.loads(ran.stdout)["results"][0]["output"].items()
    nothing = CliRunner().invoke(cli.app, ["optimize", "support", "--tiers", tiers, "--decompose"])
    assert nothing.exit_code == 2 and "--decompose: no predictor of task support writes several output fields" \
        in nothing.stderr, nothing.stderr


class CountOrBoom(Count):
    """The same predictors as Count, whose own code raises on one request."""

    def forward(self, message):
        if message == "boom":
            raise KeyError("no handler for 'boom'")
        return super().forward(message=message)


def test_run_keeps_going_past_a_request_the_program_raises_on(tmp_path, monkeypatch):
    """`tierwise run --dataset`: a request the program's own code raises on is that request's error; the
    requests before and after it are answered and printed (it was a traceback that lost them)."""
    from pipelines import backends
    from pipelines.commands import run_artifact

    paid: list = []
    optimizer = count_optimizer(tmp_path, paid)
    compiled = optimizer.compile(Count(), trainset=count_trainset())
    path = compiled.save(tmp_path / "count.tierwise.json")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(backends.SCRIPTED, "*", count_script(paid))
    dataset = tmp_path / "requests.jsonl"
    dataset.write_text("".join(f'{{"message": "{m}"}}\n' for m in ("one two", "boom", "a b c")))
    printed: list = []
    outputs = run_artifact(path, None, str(dataset), False, None, echo=printed.append,
                           task="test_tier_optimizer:CountOrBoom")
    assert [o["output"] for o in outputs] == [{"words": 2}, None, {"words": 3}]
    assert outputs[1]["error"] == "program: KeyError: \"no handler for 'boom'\""
    assert any(line.startswith("row2: FAILED program: KeyError") for line in printed), printed


def test_run_with_a_budget_prints_what_ran_then_stops_with_exit_3(tmp_path, monkeypatch):
    """`tierwise run --budget-usd`: the requests before the one that could pass the cap are printed (paid for,
    cached), then the stop line and exit 3, as optimize's budget stop."""
    from typer.testing import CliRunner

    import cli
    from pipelines import backends

    paid: list = []
    compiled = count_optimizer(tmp_path, paid).compile(Count(), trainset=count_trainset())
    path = compiled.save(tmp_path / "count.tierwise.json")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(backends.SCRIPTED, "*", count_script(paid))
    dataset = tmp_path / "requests.jsonl"
    dataset.write_text("".join(f'{{"message": "{" ".join(["w"] * n)} fresh"}}\n' for n in range(1, 41)))
    (tmp_path / "one.jsonl").write_text('{"message": "never seen before"}\n')
    bound = compiled.runtime.catalog["big"].cost_bound({"messages": [{"content": "w " * 40 + "fresh"}]})
    args = ["run", str(path), "--dataset", str(dataset), "--task", "test_tier_optimizer:Count"]
    result = CliRunner().invoke(cli.app, [*args, "--budget-usd", str(3 * bound)])
    assert result.exit_code == 3, result.output
    answered = [line for line in result.stdout.splitlines() if re.match(r"row\d+: \{", line)]
    refused = [line for line in result.stdout.splitlines() if re.match(r"row\d+: REFUSED: --budget-usd reached", line)]
    assert 3 <= len(answered) < 40 and len(answered) + len(refused) == 40
    assert re.search(rf"stopped: --budget-usd {3 * bound:g} reached: spent \$[\d.]+ in \d+ paid calls; "
                     rf"{len(refused)} of 40 requests refused", result.stderr), result.stderr
    # a rerun with the same cap: the answered requests come from the cache, nothing new fits once refused
    again = CliRunner().invoke(cli.app, [*args, "--budget-usd", str(3 * bound)])
    assert [line for line in again.stdout.splitlines() if re.match(r"row\d+: \{", line)][:len(answered)] == answered
    tiny = CliRunner().invoke(cli.app, [*args[:3], str(tmp_path / "one.jsonl"), *args[4:], "--budget-usd", "1e-9"])
    assert tiny.exit_code == 3 and "the cap is below one call's upper bound" in tiny.stderr, tiny.output


class FollowUp(dspy.Signature):
    """Answer the latest question using the conversation so far."""

    question: str = dspy.InputField()
    history: dspy.History = dspy.InputField()
    answer: str = dspy.OutputField()


def test_a_chat_program_with_history_compiles_and_runs_on_the_earlier_turns(tmp_path, caplog):
    """The DSPy docs' conversation history, compiled: each row's earlier turns reach every tier as chat turns,
    whether the trainset holds a dspy.History or its JSON form (a dev set's row), with no 'Type mismatch'
    warning; the loaded artifact takes the JSON form too, and a history that is not one is refused."""
    from pipelines.tasks import input_type_problem, typed_inputs

    seen: list = []

    def answer(tier, messages):
        seen.append([m["role"] for m in messages])
        said = [m["content"] for m in messages if m["role"] == "assistant"]
        return (said[-1] if said and tier == "big" else "no idea"), 0.9

    turns = [{"question": f"name {i}?", "answer": f"n{i}"} for i in range(8)]
    trainset_ = [dspy.Example(question="say it again", history=dspy.History(messages=[turn]) if i % 2 else
                              {"messages": [turn]}, answer=turn["answer"]).with_inputs("question", "history")
                 for i, turn in enumerate(turns)]
    optimizer = TierOptimizer(metric=lambda e, p, trace=None: p.answer == e.answer,
                              tiers=fake_catalog("small", "big"), trials=3, holdout=0.25,
                              storage=f"sqlite:///{tmp_path}/studies.db", seed=0, work_dir=tmp_path / ".tierwise",
                              scripts={"*": answer})
    with caplog.at_level(logging.WARNING):
        compiled = optimizer.compile(dspy.Predict(FollowUp), trainset=trainset_)
    assert not [r for r in caplog.records if "Type mismatch" in r.getMessage()]
    assert all(r["score"] == 1.0 for r in optimizer.artifact_["evaluation"]["baselines"]["big"])
    assert set(map(tuple, seen)) == {("system", "user", "assistant", "user")}
    as_json = {"question": "say it again", "history": {"messages": [{"question": "name 9?", "answer": "n9"}]}}
    assert input_type_problem(compiled.program, as_json) is None
    assert compiled(**typed_inputs(compiled.program, as_json)).answer in ("n9", "no idea")
    assert "must be a conversation history" in input_type_problem(compiled.program, {**as_json, "history": "n9"})


class Vote(dspy.Module):
    """Self-consistency as the DSPy docs write it: n candidates, the majority answer."""

    def __init__(self):
        super().__init__()
        self.qa = dspy.Predict("question -> answer", n=3)

    def forward(self, question):
        return dspy.majority(self.qa(question=question))


def test_a_predictor_asking_for_n_candidates_gets_n_samples_live_and_in_the_search(tmp_path):
    """dspy asks the engine once per candidate with the same request: the second and third were cache hits
    on the first, so `n=3` gave three copies of one answer (paid once) and a majority vote was no vote. Each
    candidate is now its own sample (paid, priced, cached apart) and the outcome table keeps every candidate,
    so the search scores the vote the program really takes."""
    answers = {"small": iter(["one", "three", "three"] * 100), "big": iter(["three"] * 300)}
    paid: list = []

    def answer(tier, messages):
        paid.append(tier)
        return next(answers[tier]), 0.9

    trainset_ = [dspy.Example(question=f"question {i}", answer="three").with_inputs("question") for i in range(8)]

    def compile_once():
        optimizer = TierOptimizer(metric=lambda e, p, trace=None: p.answer == e.answer,
                                  tiers=fake_catalog("small", "big"), trials=3, holdout=0.25,
                                  storage=f"sqlite:///{tmp_path}/studies.db", seed=0,
                                  work_dir=tmp_path / ".tierwise", scripts={"*": answer})
        return optimizer, optimizer.compile(Vote(), trainset=trainset_)

    optimizer, compiled = compile_once()
    small = optimizer.artifact_["evaluation"]["baselines"]["small"]
    assert all(r["score"] == 1.0 for r in small)  # the vote of three candidates, not the first one's "one"
    assert paid.count("small") == 3 * 8 and paid.count("big") == 3 * 8
    assert optimizer.summary_["paid_calls"] == optimizer.summary_["full_matrix_calls"] == 48  # calls, not requests
    again, _ = compile_once()
    assert again.summary_["paid_calls"] == 0 and len(paid) == 48  # every candidate cached
    prediction = compiled.program.qa(question="question 0")
    assert len(prediction.completions) == 3 and len(paid) == 48
    compiled(question="a new question")  # in production: three paid calls per rung, all priced
    new = len(paid) - 48
    records = [r for r in compiled.ledger.records if not r.cache_hit][-new:]
    assert new in (3, 6) and compiled.last_cost_usd == pytest.approx(sum(r.cost_usd for r in records))


class Order(pydantic.BaseModel):
    order_id: str
    items: list[str]


class ShipIt(dspy.Signature):
    """Say when the order ships."""

    order: Order = dspy.InputField()
    answer: str = dspy.OutputField()


class Counted(pydantic.BaseModel):
    words: int
    first: str


class CountModel(dspy.Module):
    def __init__(self):
        super().__init__()
        self.count = dspy.Predict("message -> counted: test_tier_optimizer.Counted")

    def forward(self, message):
        return self.count(message=message)


def test_run_prints_a_pydantic_output_as_json_data(tmp_path, monkeypatch):
    """`run --json` printed a model output as its repr ("words=2 first='one'"), which no JSON reader can use."""
    import json

    from pipelines import backends
    from pipelines.commands import run_artifact

    def answer(tier, messages):
        words = messages[-1]["content"].split()
        return json.dumps({"words": len(words), "first": words[0]}), 0.9

    trainset_ = [dspy.Example(message=m, counted=Counted(words=len(m.split()), first=m.split()[0])).with_inputs("message")
                 for m in list(GOLD)[:8]]
    optimizer = TierOptimizer(metric=lambda e, p, trace=None: e.counted == p.counted, tiers=fake_catalog("small", "big"),
                              trials=3, holdout=0.25, storage=f"sqlite:///{tmp_path}/s.db", seed=0,
                              work_dir=tmp_path / ".tierwise", scripts={"*": answer})
    path = optimizer.compile(CountModel(), trainset=trainset_).save(tmp_path / "model.tierwise.json")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(backends.SCRIPTED, "*", answer)
    printed: list = []
    run_artifact(path, json.dumps({"message": "one two"}), None, True, None, echo=printed.append,
                 task="test_tier_optimizer:CountModel")
    assert json.loads(printed[-1])["results"][0]["output"] == {"counted": {"words": 2, "first": "one"}}


def test_a_structured_input_given_as_json_is_the_model_it_stands_for():
    """A dev set row or `--input` gives a pydantic-typed input as a dict: the program gets the model (dspy
    warned 'Type mismatch' on every call with the dict), and a dict that does not validate is named before
    any call is paid for."""
    from pipelines.tasks import input_type_problem, typed_inputs

    program = dspy.Predict(ShipIt)
    row = {"order": {"order_id": "K52817", "items": ["lamp"]}}
    typed = typed_inputs(program, row)
    assert typed["order"] == Order(order_id="K52817", items=["lamp"]) and row["order"] == {
        "order_id": "K52817", "items": ["lamp"]}  # the row itself is left as read
    assert input_type_problem(program, row) is None
    assert input_type_problem(program, {"order": {"order_id": "K52817"}}) == \
        "input field 'order' is not a valid Order: items: Field required"
    assert typed_inputs(program, {"order": {"order_id": "K52817"}}) == {"order": {"order_id": "K52817"}}


def test_the_shipped_chat_example_compiles_with_its_json_histories(tmp_path):
    """examples/follow_up_chat.py: a dspy.History input given in the dev set's JSON form reaches a tier as
    the conversation's earlier turns."""
    import json

    from conftest import ROOT
    from optimizers.live import OptimizeOptions, optimize

    rows = [json.loads(line) for line in open(ROOT / "datasets" / "follow_up_chat.jsonl")]
    tiers = tmp_path / "tiers.toml"
    tiers.write_text('[[tier]]\nname = "small"\nmodel = "fake/small"\ninput_per_1m = 0.1\noutput_per_1m = 0.4\n'
                     '[[tier]]\nname = "big"\nmodel = "fake/big"\ninput_per_1m = 1.0\noutput_per_1m = 4.0\n')
    accept = {r["question"]: r["accept"][0] for r in rows}
    earlier = {r["question"]: r["history"]["messages"][0]["answer"] for r in rows}

    def answer(tier, messages):
        question = messages[-1]["content"]
        assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
        assert messages[2]["content"] == earlier[question]
        return accept[question] if tier == "big" else "no idea", 0.9

    summary = optimize(OptimizeOptions(task=str(ROOT / "examples" / "follow_up_chat.py"), tiers=str(tiers), trials=5,
                                       work_dir=tmp_path, storage=f"sqlite:///{tmp_path}/s.db",
                                       out=str(tmp_path / "chat.json"), scripts={"*": answer}))
    assert summary["dev"]["n"] + summary["holdout"]["n"] == len(rows) == 12
    assert summary["baselines"]["big"]["dev"]["quality"] == 1.0 and summary["baselines"]["small"]["dev"]["quality"] == 0


def test_checks_on_a_decomposed_program_name_its_split_predictors(tmp_path):
    """A check is declared for the predictors the compile tiers: after decompose(), the split ones (`triage.words`);
    the program's own name is refused with the split names, and load applies the checks after splitting again."""
    trainset_ = [dspy.Example(message=m, intent=label, words=len(m.split())).with_inputs("message")
                 for m, label in GOLD.items()]
    seen: list = []

    def words_counted(args, pred):
        seen.append(pred.words)
        return pred.words == len(args["message"].split())

    def optimizer(checks):
        return TierOptimizer(metric=lambda e, p, trace=None: e.intent == p.intent and e.words == p.words,
                             tiers=fake_catalog("small", "big"), trials=20, holdout=0.3, decompose=True, checks=checks,
                             storage=f"sqlite:///{tmp_path}/s.db", seed=0, work_dir=tmp_path / ".tierwise",
                             scripts={"*": triage_script([])})

    with pytest.raises(ConfigError, match=r"checks names predictor 'triage', which the program lacks; its predictors "
                                          r"are \['triage.intent', 'triage.words'\]"):
        optimizer({"triage": words_counted}).compile(Triage(), trainset=trainset_)
    checks = {"triage.words": words_counted}
    compiled = optimizer(checks).compile(Triage(), trainset=trainset_)
    assert compiled.artifact["checks"]["triage.words"][0]["name"] == "words_counted"
    assert seen and all(isinstance(w, int) for w in seen)  # big's typed answers (small's "several" fails to parse)
    path = compiled.save(tmp_path / "triage-checks.tierwise.json")
    again = load(path, program=Triage(), checks=checks, scripts={"*": triage_script([])})
    assert again(message="I lost my card").words == 4
