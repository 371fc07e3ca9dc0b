"""A predictor that writes more than one short field (dspy.ChainOfThought, several outputs) gets room to
write it; an answer cut at max_tokens says so; a compile names a predictor that a tier cannot answer;
a predictor's own generation settings are checked up front and are part of the program's fingerprint."""

from __future__ import annotations

import re
from typing import Literal

import dspy
import numpy as np
import pydantic
import pytest

from conftest import answer, fake_catalog, make_runtime
from metrics.report import load_report
from optimizers import TierOptimizer
from pipelines.artifact import program_fingerprint
from pipelines.answer_budget import MARKER_TOKENS, MAX_BUDGET, REASONING_TOKENS, STRUCTURED_PARTS, answer_budget
from pipelines.cascade import LiveRungs
from pipelines.errors import ConfigError


class Solve(dspy.Signature):
    """Solve the word problem."""

    problem: str = dspy.InputField()
    answer: int = dspy.OutputField()


def solver(**config):
    return dspy.ChainOfThought(Solve, **config).predict  # the Predict inside, as named_predictors() has it


def test_budget_grows_with_the_fields_a_predictor_writes():
    tier = fake_catalog("small", small={"max_tokens": 24})["small"]
    assert answer_budget(dspy.Predict(Solve), tier) is None  # one short field: the tier's own limit
    assert answer_budget(solver(), tier) == 24 + MARKER_TOKENS + REASONING_TOKENS
    two = dspy.Predict("problem -> answer, unit")
    assert answer_budget(two, tier) == 2 * 24 + MARKER_TOKENS
    assert answer_budget(solver(max_tokens=100), tier) is None  # the predictor's own setting stands


class Address(pydantic.BaseModel):
    city: str
    zip_code: str
    street: str


def test_structured_outputs_get_a_short_answer_per_part():
    tier = fake_catalog("small", small={"max_tokens": 24})["small"]
    address = dspy.Predict(dspy.Signature({"message": dspy.InputField(), "address": dspy.OutputField()},
                                          "Extract the address.").with_updated_fields("address", type_=Address))
    assert answer_budget(address, tier) == 3 * 24
    assert answer_budget(dspy.Predict("message -> keywords: list[str]"), tier) == STRUCTURED_PARTS * 24
    assert answer_budget(dspy.Predict("message -> count: int"), tier) is None
    wide = dspy.Predict("message -> " + ", ".join(f"f{i}: list[str]" for i in range(60)))
    assert answer_budget(wide, tier) == MAX_BUDGET  # bounded: some APIs refuse a larger max_tokens


def test_chain_of_thought_gets_room_and_a_cut_answer_says_where(tmp_path):
    def script(tier, messages):
        text = messages[-1]["content"]
        if "ramble" in text:
            return " ".join(["word"] * 400)  # never reaches the answer field
        return answer(reasoning="3 plus 4 is 7, " + "so " * 30, answer="7")

    runtime = make_runtime(tmp_path, fake_catalog("small", small={"max_tokens": 24}), script)
    rungs, predictor = LiveRungs(runtime), solver()
    good = rungs("solve", predictor, "small", {"problem": "3 apples and 4 more?"}, "logprob_mean")
    assert good.ok and good.outputs["answer"] == 7
    payload = runtime.engine("small").backend.calls[-1]
    assert payload["config"]["max_tokens"] == 24 + MARKER_TOKENS + REASONING_TOKENS

    bad = rungs("solve", predictor, "small", {"problem": "ramble on"}, "logprob_mean")
    assert not bad.ok
    assert f"the answer stopped at max_tokens={24 + MARKER_TOKENS + REASONING_TOKENS}" in bad.error
    assert "dspy.ChainOfThought(Signature, max_tokens=N)" in bad.error

    single = rungs("classify", dspy.Predict("text -> label"), "small", {"text": "hi"}, "logprob_mean")
    assert single.ok  # a one-field answer keeps the tier's own limit
    assert runtime.engine("small").backend.calls[-1]["config"]["max_tokens"] == 24


def test_predictor_settings_enter_the_fingerprint():
    class Program(dspy.Module):
        def __init__(self, **config):
            super().__init__()
            self.solve = dspy.Predict(Solve, **config)

    plain = program_fingerprint(Program())
    assert program_fingerprint(Program()) == plain
    assert program_fingerprint(Program(max_tokens=200)) != plain
    assert program_fingerprint(Program(max_tokens=200)) != program_fingerprint(Program(max_tokens=300))


class Urgency(dspy.Signature):
    """How urgent is the message?"""

    message: str = dspy.InputField()
    label: Literal["urgent", "later"] = dspy.OutputField()


class Triage(dspy.Module):
    def __init__(self):
        super().__init__()
        self.label = dspy.Predict(Urgency)

    def forward(self, message):
        return self.label(message=message)


def test_compile_names_a_predictor_a_tier_cannot_answer(tmp_path):
    """The small tier never answers with a label: the compile says which predictor, which tier, how
    often and why, instead of showing only its quality."""

    def script(tier, messages):
        message = messages[-1]["content"]
        if tier == "small":  # a different sentence each time: the failures still count as one kind
            return f"Sure! Here is what I think about {message.splitlines()[-1][-12:]!r}."
        return answer(label="urgent" if "now" in message else "later")

    rows = [("fix it now", "urgent"), ("whenever", "later"), ("right now please", "urgent"), ("next week", "later"),
            ("now!", "urgent"), ("no rush", "later"), ("asap, now", "urgent"), ("some day", "later")]
    trainset = [dspy.Example(message=m, label=label).with_inputs("message") for m, label in rows]
    optimizer = TierOptimizer(metric=lambda ex, pred, trace=None: ex.label == pred.label,
                              tiers=fake_catalog("small", "big"), trials=10, holdout=0.25,
                              storage=f"sqlite:///{tmp_path}/studies.db", seed=0, work_dir=tmp_path / ".tierwise",
                              scripts={"*": script})
    compiled = optimizer.compile(Triage(), trainset=trainset)
    notes = [n for n in optimizer.summary_["notes"] if n.startswith("predictor 'label'")]
    assert len(notes) == 1, optimizer.summary_["notes"]
    assert "on small 8 of 8 rows" in notes[0] and "big" not in notes[0]
    assert "most common (8x): AdapterParseError: not one of ['urgent', 'later']; e.g. it wrote" in notes[0]
    assert re.search(r"e\.g\. it wrote \"Sure! Here is what I think about '[a-z ,!]+'\.\"", notes[0])

    # The report's table by tier says the same; a DSPy metric judges the program, not one predictor,
    # so a failure is not counted as a wrong answer of that predictor (accuracy unknown, not 0).
    compiled.save(tmp_path / "triage.tierwise.json")
    table = load_report(tmp_path / "triage.tierwise.json").tables["tier_quality"].set_index(["predictor", "tier"])
    assert table.loc[("label", "small"), "failed"] == 1.0 and table.loc[("label", "big"), "failed"] == 0.0
    assert table["accuracy"].isna().all()
    # what can be said per predictor without a judge: big agrees with itself; small never answered
    assert table.loc[("label", "big"), "agrees_with_top"] == 1.0
    assert np.isnan(table.loc[("label", "small"), "agrees_with_top"])


def test_a_bad_predictor_setting_is_refused_before_any_call(tmp_path):
    """dspy passes a predictor's settings to every call unchecked: max_tokens="lots" failed each call and
    read as a tier that cannot be reached. It is refused up front, naming the predictor."""
    calls = []

    class Program(dspy.Module):
        def __init__(self):
            super().__init__()
            self.solve = dspy.ChainOfThought(Solve, max_tokens="lots")

        def forward(self, problem):
            return self.solve(problem=problem)

    optimizer = TierOptimizer(metric=lambda ex, pred, trace=None: ex.answer == pred.answer,
                              tiers=fake_catalog("small", "big"), trials=5, storage=f"sqlite:///{tmp_path}/s.db",
                              work_dir=tmp_path / ".tierwise", scripts={"*": lambda t, m: calls.append(t) or "7"})
    trainset = [dspy.Example(problem=f"{i} plus 1?", answer=i + 1).with_inputs("problem") for i in range(6)]
    with pytest.raises(ConfigError, match=r"predictor 'solve.predict': max_tokens must be a whole number >= 1, "
                                          r"got 'lots'"):
        optimizer.compile(Program(), trainset=trainset)
    assert calls == []
