"""Your own answer checks for the live learned confidence (pipelines.answer_checks): a task where the cheap tier
is wrong on half the rows with nothing in its answers' generic signals to tell which (same confidence, same
length), and a check that can. Compiled with TierOptimizer and with `cli.py optimize` on scripted tiers; loaded
with and without the checks; a check that breaks at compile time and at run time."""

from __future__ import annotations

import json
import logging
import random
import re
import zlib

import dspy
import pytest
from typer.testing import CliRunner

import cli
from conftest import answer, fake_catalog
from optimizers import TierOptimizer
from optimizers.summary import render_text
from pipelines import backends, load
from pipelines.answer_checks import AnswerChecks
from pipelines.errors import ConfigError, DatasetError
from tests.fakes import write_tiers

WORDS = ["".join(random.Random(i).choices("abcdefghijklmnopqrstuvwxyz", k=7)) for i in range(100)]


def small_is_wrong(word: str) -> bool:
    return zlib.crc32(word.encode()) % 2 == 0


class Reverse(dspy.Signature):
    """Write the word backwards."""

    word: str = dspy.InputField()
    backwards: str = dspy.OutputField()


class Reverser(dspy.Module):
    def __init__(self):
        super().__init__()
        self.reverse = dspy.Predict(Reverse)

    def forward(self, word):
        return self.reverse(word=word)


def metric(example, prediction, trace=None):
    return example.backwards == prediction.backwards


def reads_backwards(args, pred):  # as a dspy.BestOfN reward_fn is written
    return pred.backwards == args["word"][::-1]


def script(tier, messages):
    """big: always right. small: on half the words two letters swapped, as sure of itself as when right."""
    text = messages[-1]["content"]
    found = re.search(r"\[\[ ## word ## \]\]\n(\S+)", text)  # dspy's ChatAdapter; tierwise's sends the value
    word = found.group(1) if found else text.strip()
    if word not in WORDS:  # the compile's reachability probe
        return answer(backwards="ok"), 0.9
    right = word[::-1]
    said = right if tier == "big" or not small_is_wrong(word) else right[1] + right[0] + right[2:]
    return answer(backwards=said), 0.9


def trainset():
    return [dspy.Example(word=w, backwards=w[::-1]).with_inputs("word") for w in WORDS]


def optimizer(tmp, checks=None, **kwargs):
    return TierOptimizer(metric=metric, tiers=fake_catalog("small", "big"), trials=60, holdout=0.3, seed=0,
                         storage=f"sqlite:///{tmp}/studies.db", work_dir=tmp / ".tierwise", scripts={"*": script},
                         checks=checks, **kwargs)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("checks")
    without = optimizer(tmp)
    without.compile(Reverser(), trainset=trainset())
    with_checks = optimizer(tmp, checks={"reverse": reads_backwards})
    program = with_checks.compile(Reverser(), trainset=trainset())
    return tmp, without, with_checks, program


def test_a_check_lets_the_cheap_tier_answer_where_generic_signals_cannot(compiled):
    _, without, with_checks, _ = compiled
    chosen = with_checks.policy_["reverse"]
    assert chosen.ladder == ["small", "big"] and chosen.estimator == "learned"
    assert with_checks.summary_["holdout"]["quality"] == 1.0
    # without the check nothing tells the cheap tier's wrong half from its right half: no saving at parity
    assert without.summary_["savings_pct"] < 5 < 30 < with_checks.summary_["savings_pct"]
    assert without.study_.study_name != with_checks.study_.study_name  # a check is part of the compile
    scorer = with_checks.artifact_["scorers"]["reverse"]
    assert "check:reads_backwards" in scorer["features"]
    assert with_checks.artifact_["checks"]["reverse"][0]["name"] == "reads_backwards"
    assert with_checks.summary_["checks"] == {"reverse": ["reads_backwards"]}
    assert "checks: reads_backwards (read by its learned confidence)" in render_text(with_checks.summary_)


def test_the_compiled_program_reads_the_check(compiled):
    *_, program = compiled
    wrong = next(w for w in WORDS if small_is_wrong(w))
    fine = next(w for w in WORDS if not small_is_wrong(w))
    assert program(word=wrong).backwards == wrong[::-1]
    assert [s.tier for s in program.last_trail] == ["small", "big"]
    assert program(word=fine).backwards == fine[::-1]
    assert [s.tier for s in program.last_trail] == ["small"]


def test_load_needs_the_checks_again_and_names_them(compiled, caplog):
    tmp, _, _, program = compiled
    path = program.save(tmp / "reverse.tierwise.json")
    with pytest.raises(ConfigError, match=r"predictor 'reverse' was compiled with checks \['reads_backwards'\]; pass"):
        load(path, program=Reverser(), scripts={"*": script})
    with pytest.raises(ConfigError, match=r"checks= names predictor 'other', which was compiled without checks"):
        load(path, program=Reverser(), scripts={"*": script}, checks={"reverse": reads_backwards, "other": len})
    loaded = load(path, program=Reverser(), scripts={"*": script}, checks={"reverse": [reads_backwards]})
    wrong = next(w for w in WORDS if small_is_wrong(w))
    assert loaded(word=wrong).backwards == wrong[::-1]

    def edited(inputs, outputs):  # the same name, other code: said, and used
        return outputs["backwards"][::-1] == inputs["word"]

    edited.__name__ = "reads_backwards"
    with caplog.at_level(logging.WARNING, logger="tierwise"):
        load(path, program=Reverser(), scripts={"*": script}, checks={"reverse": edited})
    assert "check 'reads_backwards' of predictor 'reverse' changed since the compile" in caplog.text


def test_a_check_that_breaks_in_production_escalates_with_a_warning(compiled, caplog):
    tmp, _, _, program = compiled
    path = program.save(tmp / "reverse2.tierwise.json")

    def broken(inputs, outputs):
        raise KeyError("backward")

    broken.__name__ = "reads_backwards"
    loaded = load(path, program=Reverser(), scripts={"*": script}, checks={"reverse": broken})
    fine = next(w for w in WORDS if not small_is_wrong(w))
    with caplog.at_level(logging.WARNING, logger="tierwise"):
        assert loaded(word=fine).backwards == fine[::-1]
    assert [s.decision for s in loaded.last_trail] == ["escalated", "accepted"]
    assert "check 'reads_backwards' of predictor 'reverse' raised KeyError: 'backward' on inputs" in caplog.text


def test_bad_checks_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"checks= takes \{predictor name: function"):
        optimizer(tmp_path, checks=[reads_backwards])
    with pytest.raises(ConfigError, match="check 'yes' for predictor 'reverse' is not a function"):
        optimizer(tmp_path, checks={"reverse": "yes"})
    with pytest.raises(ConfigError, match=r"Reverser: checks names predictor .classify., which the program lacks; its "
                                          r"predictors are \[.reverse.\]"):
        optimizer(tmp_path, checks={"classify": reads_backwards}).compile(Reverser(), trainset=trainset())

    def says_text(inputs, outputs):
        return "fine"

    with pytest.raises(DatasetError, match=r"check 'says_text' of predictor 'reverse' returned 'fine', not a "
                                           r"finite number or a bool on inputs \{'word'"):
        optimizer(tmp_path, checks={"reverse": says_text}).compile(Reverser(), trainset=trainset())


def test_checks_take_numpy_numbers_and_refuse_nan():
    np = pytest.importorskip("numpy")
    def half(inputs, outputs):
        return np.float32(0.5)

    def yes(inputs, outputs):
        return np.bool_(True)

    assert AnswerChecks.of({"p": [half, yes]}).features("p", {}, {}) == [0.5, 1.0]
    with pytest.raises(ConfigError, match="predictor 'p' has two checks named alike"):
        AnswerChecks.of({"p": [lambda i, o: 1, lambda i, o: 0]})
    with pytest.raises(DatasetError, match="returned nan"):
        AnswerChecks.of({"p": lambda i, o: float("nan")}).features("p", {}, {})
    assert AnswerChecks.of({"p": lambda i, o: None}, strict=False).features("p", {}, {}) is None


TASK_FILE = '''
import dspy
import zlib
from test_answer_checks import Reverser, WORDS, metric

program = Reverser
trainset = [dspy.Example(word=w, backwards=w[::-1]).with_inputs("word") for w in WORDS]

def reads_backwards(inputs, outputs):
    return outputs["backwards"] == inputs["word"][::-1]

checks = {"reverse": reads_backwards}
'''


def test_a_task_file_declares_its_checks_for_optimize_and_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path.parent))
    monkeypatch.syspath_prepend(str(__import__("pathlib").Path(__file__).parent))
    monkeypatch.setitem(backends.SCRIPTED, "*", script)
    task = tmp_path / "reverse_task.py"
    task.write_text(TASK_FILE)
    tiers = write_tiers(tmp_path)
    made = CliRunner().invoke(cli.app, ["optimize", str(task), "--tiers", str(tiers), "--trials", "60", "--json",
                                        "--out", "rev.json"])
    assert made.exit_code == 0, made.output
    summary = json.loads(made.stdout)
    assert summary["policy"]["reverse"]["estimator"] == "learned" and summary["savings_pct"] > 30
    wrong = next(w for w in WORDS if small_is_wrong(w))
    ran = CliRunner().invoke(cli.app, ["run", "rev.json", "--task", str(task), "--input", json.dumps({"word": wrong}),
                                       "--json"])
    assert ran.exit_code == 0, ran.output
    assert wrong[::-1] in ran.stdout
    listed = tmp_path / "listed_checks.py"
    listed.write_text(TASK_FILE.replace('checks = {"reverse": reads_backwards}', "checks = [reads_backwards]"))
    bad = CliRunner().invoke(cli.app, ["optimize", str(listed), "--tiers", str(tiers), "--out", "bad.json"])
    assert bad.exit_code == 2 and "listed_checks: checks takes {predictor name: function" in bad.output
