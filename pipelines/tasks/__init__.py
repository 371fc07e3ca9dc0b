"""Task pipelines: a DSPy program factory, how dataset rows become inputs, and the task's metric.

A task module defines:
    NAME: str                   short name used by `cli.py optimize NAME`
    DATASET: str                default dev set (a path relative to the repo's datasets/ folder)
    build_program() -> dspy.Module
    inputs(row) -> dict         keyword arguments for the program
    metric(row, prediction) -> float in [0, 1]
    predictor_correct(name, row, outputs) -> bool | None   (optional) per-predictor correctness,
                                                            used to fit the learned confidence scorer
Users add theirs as a module here or as a file path. A task file may instead be written DSPy-style:
`program`, `trainset` and `metric(example, prediction, trace=None)` (see pipelines.programs).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
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

    def predictor_correct(self, name: str, row: dict, outputs: dict):
        fn = getattr(self.module, "predictor_correct", None)
        return fn(name, row, outputs) if fn else None

    def default_dataset(self) -> Path | None:
        ds = getattr(self.module, "DATASET", None)
        return DATASETS_DIR / ds if ds else None


def load_task(name_or_path: str) -> Task:
    path = Path(name_or_path)
    if path.suffix == ".py":
        if not path.is_file():
            raise ConfigError(f"task file not found: {path}")
        spec = importlib.util.spec_from_file_location(f"tierwise_task_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # postponed annotations (Literal[LABELS]) resolve in their module
        spec.loader.exec_module(module)
        source = str(path.resolve())
    else:
        try:
            module = importlib.import_module(f"pipelines.tasks.{name_or_path}")
        except ModuleNotFoundError:
            known = sorted(p.stem for p in Path(__file__).parent.glob("*.py") if not p.stem.startswith("_"))
            raise ConfigError(f"unknown task {name_or_path!r}; shipped tasks: {', '.join(known)}, "
                              "or give a path to a task .py file") from None
        source = name_or_path
    missing = [k for k in REQUIRED if not hasattr(module, k)]
    if missing and path.suffix == ".py" and all(hasattr(module, k) for k in DSPY_STYLE):
        return task_from_module(module, source, path)  # a program, a trainset and a metric, as DSPy users write
    if missing:
        raise ConfigError(f"task {name_or_path}: module lacks {missing}")
    return Task(module, source)


def iter_jsonl_objects(path: Path):
    """(line number, object) for each non-blank line; a line that is not a JSON object raises
    DatasetError naming the file and line."""
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DatasetError(f"{path}:{number}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise DatasetError(f"{path}:{number}: expected a JSON object")
            yield number, row


def read_jsonl(path: str | Path, required: tuple[str, ...] = ()) -> list[dict]:
    """Rows of a JSONL dev set; a bad line raises DatasetError naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"dataset not found: {path}")
    rows = []
    for number, row in iter_jsonl_objects(path):
        absent = [k for k in required if k not in row]
        if absent:
            raise DatasetError(f"{path}:{number}: missing keys {absent}")
        row.setdefault("id", f"row{number}")
        row.setdefault("segment", "all")
        rows.append(row)
    if not rows:
        raise DatasetError(f"{path}: no rows")
    return rows
