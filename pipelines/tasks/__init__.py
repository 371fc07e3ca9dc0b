"""Task pipelines: a DSPy program factory, how dataset rows become inputs, and the task's metric.

A task module defines:
    NAME: str                   short name used by `cli.py optimize NAME`
    DATASET: str                default dev set (a path relative to the repo's datasets/ folder)
    build_program() -> dspy.Module
    inputs(row) -> dict         keyword arguments for the program
    metric(row, prediction) -> float in [0, 1]
    predictor_correct(name, row, outputs) -> bool | None   (optional) per-predictor correctness,
                                                            used to fit the learned confidence scorer
    checks: {predictor: [check(inputs, prediction) -> number]} (optional) your own answer checks, read by the
                                                            learned confidence (pipelines.answer_checks)
Users add theirs as a module here or as a file path. A task file may instead be written DSPy-style:
`program`, `trainset` and `metric(example, prediction, trace=None)` (see pipelines.programs).
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import json
import re
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from pipelines.errors import ConfigError, DatasetError
from pipelines.paths import datasets_dir
from pipelines.programs import DSPY_STYLE, task_from_module

DATASETS_DIR = datasets_dir()
REQUIRED = ("NAME", "build_program", "inputs", "metric")


@dataclass
class Task:
    module: ModuleType
    source: str  # "support" or a file path: how to rebuild the program (stored in artifacts)

    @property
    def name(self) -> str:
        return self.module.NAME

    def build_program(self):
        return self.module.build_program()

    def inputs(self, row: dict) -> dict:
        return self.module.inputs(row)

    def metric(self, row: dict, prediction) -> float:
        return float(self.module.metric(row, prediction))

    @property
    def checks(self):
        return getattr(self.module, "checks", None)

    def predictor_correct(self, name: str, row: dict, outputs: dict):
        fn = getattr(self.module, "predictor_correct", None)
        return fn(name, row, outputs) if fn else None

    def scoring_parts(self) -> tuple:
        """What turns a row into inputs and an answer into a score (a compile's study is named by their code)."""
        return self.module.inputs, self.module.metric, getattr(self.module, "predictor_correct", None)

    def default_dataset(self) -> Path | None:
        ds = getattr(self.module, "DATASET", None)
        return DATASETS_DIR / ds if ds else None


def is_shipped_task(name) -> bool:
    """A task module shipped in this package, named plainly (no path, no dots)."""
    return isinstance(name, str) and name.isidentifier() and not name.startswith("_") \
        and (Path(__file__).parent / f"{name}.py").is_file()


def _import_file(path: Path) -> ModuleType:
    """Import a task file as a module registered in sys.modules: dspy and pydantic resolve a signature's
    string annotations (`from __future__ import annotations`) through its module's entry there."""
    resolved = path.resolve()
    name = f"tierwise_task_{resolved.stem}_{hashlib.sha256(str(resolved).encode()).hexdigest()[:8]}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, resolved)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    if str(resolved.parent) not in sys.path:  # its neighbours import, as `python task.py` would have them
        sys.path.append(str(resolved.parent))  # appended: it must not shadow an installed package
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # noqa: BLE001 - the user's file failed to import: say where, not a traceback
        del sys.modules[name]
        frames = [f for f in traceback.extract_tb(e.__traceback__) if f.filename == str(resolved)]
        line = f":{frames[-1].lineno}" if frames else (f":{e.lineno}" if isinstance(e, SyntaxError) else "")
        raise ConfigError(f"task file {path}{line}: failed to import ({type(e).__name__}: {e})") from None
    return module


def load_task(name_or_path: str) -> Task:
    path = Path(name_or_path)
    if path.suffix == ".py":
        if not path.is_file():
            raise ConfigError(f"task file not found: {path}")
        module = _import_file(path)
        source = str(path.resolve())
    else:
        if not is_shipped_task(name_or_path):
            known = sorted(p.stem for p in Path(__file__).parent.glob("*.py") if not p.stem.startswith("_"))
            raise ConfigError(f"unknown task {name_or_path!r}; shipped tasks: {', '.join(known)}, "
                              "or give a path to a task .py file")
        module = importlib.import_module(f"pipelines.tasks.{name_or_path}")
        source = name_or_path
    missing = [k for k in REQUIRED if not hasattr(module, k)]
    if missing and path.suffix == ".py" and all(hasattr(module, k) for k in DSPY_STYLE):
        return task_from_module(module, source, path)  # a program, a trainset and a metric, as DSPy users write
    dspy_style_missing = [k for k in DSPY_STYLE if not hasattr(module, k)]
    if missing and path.suffix == ".py" and (hasattr(module, "program") or hasattr(module, "trainset")):
        raise ConfigError(f"task file {name_or_path}: defines {[k for k in DSPY_STYLE if hasattr(module, k)]} "
                          f"but not {dspy_style_missing}; a DSPy-style task file needs program, trainset and metric")
    if missing:
        raise ConfigError(f"task {name_or_path}: module lacks {missing}")
    return Task(module, source)


def iter_jsonl_objects(path: Path):
    """(line number, object) for each non-blank line; a line that is not a JSON object, or not UTF-8,
    raises DatasetError naming the file and line."""
    path = Path(path)
    if path.is_dir():
        raise DatasetError(f"{path}: is a directory; expected a JSONL file (one JSON object per line)")
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise DatasetError(f"dataset not found: {path}") from None
    except OSError as e:
        raise DatasetError(f"{path}: cannot read ({e.strerror})") from None
    with f:
        for number, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DatasetError(f"{path}:{number}: not UTF-8 text (byte {e.start} of the line); "
                                   "save the file as UTF-8") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DatasetError(f"{path}:{number}: not valid JSON ({e.msg})") from None
            except RecursionError:
                raise DatasetError(f"{path}:{number}: JSON nested too deeply") from None
            if not isinstance(row, dict):
                raise DatasetError(f"{path}:{number}: expected a JSON object")
            yield number, row


def read_jsonl(path: str | Path, required: tuple[str, ...] = (), with_lines: bool = False):
    """Rows of a JSONL dev set; a bad line raises DatasetError naming the file and line. With
    `with_lines`, also each row's line number (for later checks to name)."""
    path = Path(path)
    rows, lines = [], []
    for number, row in iter_jsonl_objects(path):
        absent = [k for k in required if k not in row]
        if absent:
            raise DatasetError(f"{path}:{number}: missing keys {absent}")
        row.setdefault("id", f"row{number}")
        row.setdefault("segment", "all")
        rows.append(row)
        lines.append(number)
    if not rows:
        raise DatasetError(f"{path}: no rows")
    return (rows, lines) if with_lines else rows


def input_type_problem(program, values: dict) -> str | None:
    """Why `values` cannot be the program's inputs (a field typed `str` given a number, a conversation history
    or a pydantic model whose JSON does not validate ...), or None."""
    for _, predictor in program.named_predictors():
        problem = signature_input_problem(predictor.signature, values)
        if problem:
            return problem
        # A request or dataset row with no value: a field without a type would be sent as the text "None" (a
        # program's own code may still pass None to one of its predictors on purpose)
        empty = next((name for name in predictor.signature.input_fields if name in values and values[name] is None), None)
        if empty:
            return f"input field {empty!r} is None"
    return _forward_type_problem(program, values)


def signature_input_problem(signature, values: dict) -> str | None:
    """Why `values` cannot be these input fields, or None. A field declared without a type (`context =
    dspy.InputField()`, `"context, question -> answer"`) takes anything, as in DSPy's own RAG examples, where
    it is given a list of passages: only a type the author wrote is checked."""
    import dspy
    import pydantic

    from pipelines.adapter import json_input

    for name, info in signature.input_fields.items():
        if name not in values or (info.json_schema_extra or {}).get("IS_TYPE_UNDEFINED"):
            continue
        value, annotation = values[name], info.annotation
        if annotation is str and not isinstance(value, str):
            return f"input field {name!r} must be a string, got {type(value).__name__}"
        if annotation is dspy.History and not isinstance(value, (dspy.History, dict, list)):
            return (f"input field {name!r} must be a conversation history: {{\"messages\": [{{field: value, "
                    f"...}}, ...]}}, got {type(value).__name__}")
        try:
            json_input(annotation, value)
        except pydantic.ValidationError as e:
            error = e.errors()[0]
            where = ".".join(map(str, error["loc"]))
            return f"input field {name!r} is not a valid {annotation.__name__}: {where + ': ' if where else ''}{error['msg']}"
    return None


def _forward_type_problem(program, values: dict) -> str | None:
    """A value that does not fit the type its `forward` parameter declares (`sentences: list[str]` given a
    string would ask a tier once per character), or None."""
    import pydantic

    from pipelines.adapter import json_input

    for name, annotation, adapter in _forward_checks(type(program)):
        if name not in values:
            continue
        try:
            adapter.validate_python(json_input(annotation, values[name]))
        except pydantic.ValidationError as e:
            shown = annotation.__name__ if isinstance(annotation, type) else str(annotation)
            return (f"input {name!r} must be {shown} ({type(program).__name__}.forward says so), got "
                    f"{type(values[name]).__name__}: {e.errors()[0]['msg']}")
        except Exception:  # noqa: BLE001 - a type pydantic cannot check is the program's own business
            continue
    return None


@functools.lru_cache(maxsize=64)
def _forward_checks(program_class) -> tuple:
    """(name, annotation, pydantic adapter) of each annotated `forward` parameter, once per program class (a dev
    set is checked row by row)."""
    import typing

    import pydantic

    from pipelines.programs import entry_point

    try:
        hints = typing.get_type_hints(entry_point(program_class))
    except Exception:  # noqa: BLE001 - an annotation that cannot be resolved checks nothing
        return ()
    checks = []
    for name, annotation in hints.items():
        if name == "return" or annotation is typing.Any:
            continue
        try:
            checks.append((name, annotation, pydantic.TypeAdapter(annotation)))
        except Exception:  # noqa: BLE001 - a type pydantic cannot build a check for is the program's business
            continue
    return tuple(checks)


def typed_inputs(program, values: dict) -> dict:
    """`values` read from JSON, with each pydantic-model input (a dspy.History, a structured input) as the
    model it stands for: dspy warns 'Type mismatch' on a dict, and reads the model the same way."""
    return input_converter(program)(values)


def input_converter(program):
    """typed_inputs for many rows of one program: its model-typed input fields are found once."""
    import pydantic

    from pipelines.adapter import json_input

    models = {name: info.annotation for _, predictor in program.named_predictors()
              for name, info in predictor.signature.input_fields.items()
              if isinstance(info.annotation, type) and issubclass(info.annotation, pydantic.BaseModel)}

    def convert(values: dict) -> dict:
        typed = dict(values)
        for name, model in models.items():
            if name in typed:
                try:
                    typed[name] = json_input(model, typed[name])
                except pydantic.ValidationError:
                    pass  # input_type_problem names it where inputs are checked; dspy gets it as given
        return typed

    return convert


def _missing_label(task: Task, program, row: dict) -> str | None:
    """The row key the task's metric reads and the row lacks, found by scoring an empty prediction. A key
    counts only when giving the row that key ends the error: a KeyError the metric raises itself, or a
    typo in a prediction field it reads, is the metric's, not the dataset's."""
    import dspy

    outputs = {f: None for _, p in program.named_predictors() for f in p.signature.output_fields}
    probes = [lambda r: task.metric(r, dspy.Prediction(**outputs))]
    probes += [lambda r, n=n: task.predictor_correct(n, r, dict(outputs)) for n, _ in program.named_predictors()]
    for probe in probes:
        label = _key_stopped_on(probe, row)
        if label and label not in row and _key_stopped_on(probe, {**row, label: None}) != label:
            return label
    return None


def _key_stopped_on(probe, row: dict) -> str | None:
    """The key (or `example.label` attribute) whose lookup `probe(row)` failed on, if it failed so."""
    try:
        probe(row)
    except KeyError as e:
        return e.args[0] if e.args and isinstance(e.args[0], str) else None
    except AttributeError as e:  # a DSPy-style metric reads `example.label`
        return _example_attribute(e)
    except Exception:  # noqa: BLE001 - an empty prediction may upset a metric; only labels are checked here
        pass
    return None


def _example_attribute(error: AttributeError) -> str | None:
    """The field a dspy.Example was asked for and lacks, or None for any other missing attribute."""
    import dspy

    obj = getattr(error, "obj", None)
    if isinstance(obj, dspy.Prediction):  # a prediction's field: the metric's own read, not a label
        return None
    if isinstance(obj, dspy.Example) and isinstance(getattr(error, "name", None), str):
        return error.name
    found = re.fullmatch(r"'Example' object has no attribute '(\w+)'", str(error))
    return found.group(1) if found else None


def _label_outside_choices(program, row: dict) -> str | None:
    """A label no answer can match: the row's value for an output field typed `Literal[...]` or an `Enum` is
    none of its choices (a typo such as 'postive'); case and surrounding spaces aside. An Enum's label may
    be a member's value or its name, as dspy reads an answer."""
    import enum

    from pipelines.adapter import choices

    for _, predictor in program.named_predictors():
        for name, info in predictor.signature.output_fields.items():
            allowed = choices(info.annotation) if name in row else None
            if allowed is None:
                continue
            if isinstance(info.annotation, enum.EnumMeta):
                allowed = allowed + list(info.annotation.__members__)
            label = row[name].value if isinstance(row[name], enum.Enum) else row[name]
            if str(label).strip().lower() not in {c.strip().lower() for c in allowed}:
                return (f"label {name!r} is {row[name]!r}, not one of the output field's choices "
                        f"{allowed}: no answer could match it")
    return None


def read_task_rows(task: Task, path: str | Path, program=None) -> list[dict]:
    """A dev set checked against the task before any call is paid for: unique ids, every input field
    present and of its declared type, every label the metric reads present."""
    rows, lines = read_jsonl(path, with_lines=True)
    program = program if program is not None else task.build_program()
    seen = {}
    for row, line in zip(rows, lines):
        where = f"{path}:{line}"
        row_id = str(row["id"])
        if row_id in seen:
            raise DatasetError(f"{where}: row id {row_id!r} repeats line {seen[row_id]}; ids must be unique")
        seen[row_id] = line
        check_row(task, program, row, where)
    return rows


def check_row(task: Task, program, row: dict, where: str) -> None:
    """One labeled row as the task reads it: every input field present and of its declared type, each
    `Literal`/`Enum` label one of its choices, every label the metric reads present."""
    row_id = str(row["id"])
    try:
        values = task.inputs(row)
    except KeyError as e:
        raise DatasetError(f"{where}: row {row_id} lacks the input field {e}") from None
    problem = input_type_problem(program, values) or _label_outside_choices(program, row)
    if problem:
        raise DatasetError(f"{where}: row {row_id}: {problem}")
    label = _missing_label(task, program, row)
    if label:
        raise DatasetError(f"{where}: row {row_id} lacks the label {label!r} that task {task.name}'s metric reads")
