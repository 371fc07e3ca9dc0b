"""The math and invoices task pipelines: normalizers, metrics and per-predictor checks on hand-written
cases, the dataset rows they read, and one scripted run of each program through the cascade."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from pipelines.tasks import DATASETS_DIR, load_task, read_jsonl
from pipelines.tasks import invoices, math as math_task


@pytest.mark.parametrize("text,expected", [
    ("$4,580.60", "4580.60"), ("EUR 3.176,88", "3176.88"), ("3.176,88 €", "3176.88"), ("1249.5", "1249.50"),
    ("Total: 953.53", "953.53"), ("12,50", "12.50"), ("1,249", "1249.00"), ("1.249", "1249.00"),
    ("Balance due: €3.790,90", "3790.90"), ("none", ""), ("", ""), (None, ""),
])
def test_normalize_amount(text, expected):
    assert invoices.normalize_amount(text) == expected


@pytest.mark.parametrize("text,expected", [
    ("2024-10-23", "2024-10-23"), ("2024/1/5", "2024-01-05"), ("Oct 23, 2024", "2024-10-23"),
    ("October 23rd, 2024", "2024-10-23"), ("23 Oct 2024", "2024-10-23"), ("8th June 2025", "2025-06-08"),
    ("due Sept. 5, 2025", "2025-09-05"), ("10/11/2024", ""), ("2024-02-30", ""), ("Net 30", ""),
])
def test_normalize_date(text, expected):
    assert invoices.normalize_date(text) == expected


def test_vendor_match_ignores_case_quotes_and_spacing_only():
    assert invoices.field_correct("vendor", ' "big sky tire  & wheel". ', "Big Sky Tire & Wheel")
    assert not invoices.field_correct("vendor", "Big Sky Tire", "Big Sky Tire & Wheel")
    assert not invoices.field_correct("vendor", "", "Big Sky Tire & Wheel")


def test_every_invoice_label_normalizes_to_itself():
    rows = read_jsonl(DATASETS_DIR / "invoices.jsonl")
    assert len(rows) == 151
    for row in rows:
        for field in invoices.FIELDS:
            assert invoices.field_correct(field, row[field], row[field]), (row["id"], field)


def test_invoice_metric_is_mean_field_accuracy():
    row = {"vendor": "Ace Locksmith", "total": "230.59", "due_date": "2025-10-02"}
    prediction = SimpleNamespace(vendor="Ace Locksmith", total="$230.59", due_date="2025-10-20")
    assert invoices.metric(row, prediction) == pytest.approx(2 / 3)
    assert invoices.predictor_correct("total", row, {"total": "230,59"})
    assert not invoices.predictor_correct("due_date", row, {"due_date": "Oct 20, 2025"})
    assert invoices.predictor_correct("due_date", row, {"due_date": "October 2, 2025"})
    assert invoices.predictor_correct("other", row, {}) is None


def test_math_extracts_the_numeric_answer():
    assert math_task.extract_number("The answer is 1,250.") == 1250.0
    assert math_task.extract_number("", "5 * 12 = 60") == 60.0  # empty answer: the working's last number
    assert math_task.extract_number("sixty", "no numbers") is None
    row = {"answer": 24.75}
    assert math_task.metric(row, SimpleNamespace(answer=24.75)) == 1.0
    assert math_task.metric(row, SimpleNamespace(answer=None)) == 0.0
    assert math_task.predictor_correct("solve", row, {"reasoning": "99 / 4 = 24.75", "answer": "$24.75"})
    assert not math_task.predictor_correct("solve", row, {"reasoning": "", "answer": "24.7"})


def test_tasks_load_with_their_predictors_and_datasets():
    math_loaded, invoices_loaded = load_task("math"), load_task("invoices")
    assert [n for n, _ in math_loaded.build_program().named_predictors()] == ["solve"]
    assert math_loaded.build_program().solve.config["max_tokens"] == math_task.MAX_TOKENS
    assert [n for n, _ in invoices_loaded.build_program().named_predictors()] == ["vendor", "total", "due_date"]
    assert len(read_jsonl(math_loaded.default_dataset())) == 152
    row = read_jsonl(invoices_loaded.default_dataset())[0]
    assert invoices_loaded.inputs(row) == {"text": row["text"]}


def _scripted(answers):
    """A fake tier answering each predictor's field from `answers[field]` in ChatAdapter format."""
    def script(tier, messages):
        system = messages[0]["content"]
        fields = [f for f in answers if f"`{f}`" in system]
        return "".join(f"[[ ## {f} ## ]]\n{answers[f]}\n\n" for f in fields) + "[[ ## completed ## ]]", 0.9
    return script


@pytest.mark.parametrize("task,answers,row", [
    ("math", {"reasoning": "12 * 5 = 60", "answer": "60 dollars"},
     {"question": "Diego earns $12 per hour and works 5 hours. How many dollars does he earn?", "answer": 60}),
    ("invoices", {"vendor": "Ace Locksmith", "total": "$ 230.59", "due_date": "2025-10-02"},
     json.loads(next(line for line in open(DATASETS_DIR / "invoices.jsonl") if '"total": "230.59"' in line))),
])
def test_program_runs_through_the_cascade(task, answers, row, tmp_path):
    from pipelines.cascade import CompiledProgram
    from pipelines.policy import Policy
    from pipelines.runtime import Runtime
    from pipelines.tiers import load_catalog

    tiers = tmp_path / "tiers.toml"
    tiers.write_text('[[tier]]\nname = "small"\nmodel = "fake/small"\ninput_per_1m = 0.1\noutput_per_1m = 0.4\n')
    loaded = load_task(task)
    program = loaded.build_program()
    names = [n for n, _ in program.named_predictors()]
    runtime = Runtime(load_catalog(str(tiers)), scripts={"*": _scripted(answers)})
    compiled = CompiledProgram(program, Policy.uniform(names, "small"), runtime)
    prediction = compiled(**loaded.inputs(row))
    assert loaded.metric(row, prediction) == 1.0
    assert [s.predictor for s in compiled.last_trail] == names
    runtime.close()


ENUM_TASK = """import enum
import dspy

class Mood(enum.Enum):
    HAPPY = "happy"
    SAD = "sad"

class Sig(dspy.Signature):
    text: str = dspy.InputField()
    mood: Mood = dspy.OutputField()

program = dspy.Predict(Sig)
trainset = "rows.jsonl"

def metric(example, prediction, trace=None):
    return prediction.mood.value == example.mood.lower()
"""


@pytest.mark.parametrize("label, accepted", [("happy", True), ("HAPPY", True), (" Sad ", True), ("hapy", False)])
def test_an_enum_label_is_a_members_value_or_name(tmp_path, label, accepted):
    """As dspy reads an Enum answer (a member's value, else its name); a typo is refused before any call."""
    from pipelines.errors import DatasetError
    from pipelines.tasks import load_task, read_task_rows

    (tmp_path / "mood.py").write_text(ENUM_TASK)
    (tmp_path / "rows.jsonl").write_text(json.dumps({"id": "a", "text": "great day", "mood": label}) + "\n")
    task = load_task(str(tmp_path / "mood.py"))
    if accepted:
        assert read_task_rows(task, tmp_path / "rows.jsonl")[0]["mood"] == label
    else:
        with pytest.raises(DatasetError, match=r"rows\.jsonl:1: row a: label 'mood' is 'hapy', not one of the "
                                               r"output field's choices \['happy', 'sad', 'HAPPY', 'SAD'\]"):
            read_task_rows(task, tmp_path / "rows.jsonl")


SPLIT_PROGRAM = """import dspy

class Triage(dspy.Module):
    def __init__(self):
        super().__init__()
        self.classify = dspy.Predict("message -> problem")

    def forward(self, message):
        return self.classify(message=message)
"""

SPLIT_TASK = """from food_program import Triage  # a module beside the task file

program = Triage
trainset = "rows.jsonl"

def metric(example, prediction, trace=None):
    {body}
"""


@pytest.mark.parametrize("body, missing", [
    ("return example.problem == prediction.problem", None),
    ("return example.severity and example.problem == prediction.problem", "severity"),  # a label the rows lack
    ('if "pizza" in example.message:\n        raise KeyError("pizza not allowed")\n    return 1.0', None),
    ('return float(example["problem"] == prediction["problem"])', None),
    ("return example.problem == prediction.problm", None),  # a typo in the metric's read of the prediction
])
def test_a_task_file_imports_its_neighbours_and_only_missing_labels_are_blamed_on_the_rows(
        tmp_path, monkeypatch, body, missing):
    """A task file imports a module beside it, as `python task.py` would. A KeyError the metric raises
    itself, or a prediction field it misspells, is the metric's: it used to be reported as a label the
    dataset lacks ("row a lacks the label 'pizza not allowed'"), sending the user to fix the wrong file."""
    import sys

    from pipelines.errors import DatasetError
    from pipelines.tasks import read_task_rows

    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    monkeypatch.chdir(tmp_path.parent)
    (tmp_path / "food_program.py").write_text(SPLIT_PROGRAM)
    (tmp_path / "task.py").write_text(SPLIT_TASK.format(body=body))
    (tmp_path / "rows.jsonl").write_text(json.dumps({"id": "a", "message": "cold pizza", "problem": "cold"}) + "\n")
    task = load_task(str(tmp_path / "task.py"))
    if missing is None:
        assert len(read_task_rows(task, tmp_path / "rows.jsonl")) == 1
    else:
        with pytest.raises(DatasetError, match=rf"row a lacks the label '{missing}' that task task's metric reads"):
            read_task_rows(task, tmp_path / "rows.jsonl")


def test_a_factory_the_caller_names_imports_from_the_current_folder(tmp_path, monkeypatch):
    """`tierwise run --task food_program:Triage` from the folder holding food_program.py: the console script
    does not put the current folder on sys.path, so the import failed with the very command tierwise
    suggested. Appended, not prepended: a file there must not shadow an installed package."""
    import sys

    from pipelines.programs import build_from_factory

    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    monkeypatch.chdir(tmp_path)
    (tmp_path / "food_program2.py").write_text(SPLIT_PROGRAM)
    program = build_from_factory("food_program2:Triage")
    assert [name for name, _ in program.named_predictors()] == ["classify"]
    assert sys.path[-1] == str(tmp_path)
