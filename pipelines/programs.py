"""Where a compiled program comes from, and DSPy-style tasks.

An artifact records how to rebuild its program (`program.task`): a shipped task name (`support`), a
task file (`path/to/task.py`), or an importable dspy.Module class `module:Class`, built with no
arguments. A program that cannot be rebuilt that way (a class defined in `__main__` or inside a
function) is recorded as None: load the artifact onto an instance you build, `load(path, program=...)`.

A DSPy-style task is a program, a trainset and a metric as DSPy users write them: `dspy.Example`s
with `.with_inputs(...)` and `metric(example, prediction, trace=None)` returning a bool or a float.
`ExampleTask` gives it the shape the compiler reads (rows, inputs, metric); a task file may define
`program`, `trainset` (a JSONL path relative to the file, or a list of examples) and `metric`.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import importlib
import inspect
import json
import os
import sys
from pathlib import Path

from pipelines.errors import ConfigError

DSPY_STYLE = ("program", "trainset", "metric")


def factory_spec(program) -> str | None:
    """`module:Class` when a fresh `Class()` is importable elsewhere, else None."""
    cls = type(program)
    if cls.__module__ in ("__main__", "builtins") or "<locals>" in cls.__qualname__:
        return None
    spec = f"{cls.__module__}:{cls.__qualname__}"
    try:
        # __init__'s own parameters: dspy's metaclass makes inspect.signature(cls) read (*args, **kwargs), so a bare
        # dspy.ChainOfThought(Sig), which needs its signature, looked buildable
        required = [p for p in list(inspect.signature(cls.__init__).parameters.values())[1:]
                    if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        return spec if not required and resolve_factory(spec) is cls else None
    except (ConfigError, ValueError, TypeError):
        return None


def resolve_factory(spec: str):
    module_name, _, attribute = spec.partition(":")
    try:
        target = _import_from_here(module_name)
    except ImportError as e:
        raise ConfigError(f"program factory {spec!r}: cannot import {module_name} ({e}); run from the folder "
                          "that holds it or put that folder on PYTHONPATH") from None
    for part in attribute.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise ConfigError(f"program factory {spec!r}: {module_name} has no {attribute}")
    return target


def _import_from_here(module_name: str):
    """import_module, and when the module is not found, again with the current folder on sys.path, as
    `python -m` has it: the `tierwise` command does not put it there. An artifact alone never gets here
    for a module not yet imported (pipelines.artifact._rebuild): the caller named this one."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        here = os.getcwd()
        if e.name != module_name.split(".")[0] or here in sys.path or "" in sys.path:
            raise
        sys.path.append(here)  # appended: it must not shadow an installed package
        return importlib.import_module(module_name)


def is_factory(source: str) -> bool:
    return ":" in source and not source.endswith(".py")


def build_from_factory(spec: str):
    """A fresh instance of the dspy.Module class `spec` names. Only a Module subclass is called: the
    artifact's checksum is not a signature, so a file must not get to name any other callable."""
    import dspy

    target = resolve_factory(spec)
    if not (isinstance(target, type) and issubclass(target, dspy.Module)):
        raise ConfigError(f"program factory {spec!r} is not a dspy.Module class")
    try:
        return target()
    except TypeError as e:  # a class that needs arguments (dspy.Predict(signature)): build it yourself
        raise ConfigError(f"program factory {spec!r} cannot be built without arguments ({e}); pass the program you "
                          "built: load(path, program=...)") from None


def example_row(example, index: int) -> dict:
    """A dataset row for a dspy.Example: its fields, plus an id (its own, or a hash of its content, so
    the same trainset keeps the same ids, splits and cached cells across runs)."""
    fields = dict(example.items())
    if "id" not in fields:
        blob = json.dumps(fields, sort_keys=True, default=str)
        fields["id"] = f"ex{index:05d}-{hashlib.sha256(blob.encode()).hexdigest()[:8]}"
    fields.setdefault("segment", "all")
    return fields


def added_row_keys(examples) -> set[str]:
    """The keys example_row adds that no example has itself."""
    return {"id", "segment"} - {k for e in examples for k in e.keys()}


def input_keys_of(examples, where: str = "trainset") -> tuple[str, ...]:
    keys = None
    for i, example in enumerate(examples):
        try:
            these = tuple(example.inputs().keys())
        except (ValueError, AttributeError):
            raise ConfigError(f"{where}[{i}]: not a dspy.Example with inputs; use "
                              "dspy.Example(...).with_inputs('field', ...)") from None
        if keys is not None and set(these) != set(keys):
            raise ConfigError(f"{where}[{i}]: inputs {sorted(these)} differ from the first example's {sorted(keys)}")
        keys = these
    if not keys:
        raise ConfigError(f"{where}: no examples")
    return keys


class ExampleTask:
    """A program, its metric and examples, in the shape the compiler reads (see pipelines.tasks.Task)."""

    def __init__(self, *, name: str, source: str | None, build, metric, input_keys, rows=None, dataset=None,
                 predictor_correct=None, added_keys=(), checks=None):
        self.name, self.source = name, source
        self.checks = checks  # {predictor: check or [checks]} (pipelines.answer_checks)
        self._build, self._metric, self._correct = build, metric, predictor_correct
        self.input_keys = tuple(input_keys)
        self.rows, self.dataset = rows, dataset
        self.added_keys = frozenset(added_keys)  # row keys tierwise added (id, segment): not the user's labels

    @classmethod
    def from_examples(cls, program, metric, trainset, *, name=None, source=None, predictor_correct=None, checks=None):
        keys = input_keys_of(trainset)
        pristine = copy.deepcopy(program)
        return cls(name=name or type(program).__name__, source=source, build=lambda: copy.deepcopy(pristine),
                   metric=metric, input_keys=keys, rows=[example_row(e, i) for i, e in enumerate(trainset)],
                   predictor_correct=predictor_correct, added_keys=added_row_keys(trainset), checks=checks)

    def build_program(self):
        return self._build()

    def inputs(self, row: dict) -> dict:
        return {k: row[k] for k in self.input_keys}

    def example(self, row: dict):
        """The user's example again: a metric reading `example.labels()` must not see tierwise's row keys."""
        import dspy

        return dspy.Example({k: v for k, v in row.items() if k not in self.added_keys}).with_inputs(*self.input_keys)

    def metric(self, row: dict, prediction) -> float:
        value = self._metric(self.example(row), prediction, None)
        return float(getattr(value, "score", value))  # a feedback metric's dspy.Prediction carries .score

    def predictor_correct(self, name: str, row: dict, outputs: dict):
        return self._correct(name, self.example(row), outputs) if self._correct else None

    def scoring_parts(self) -> tuple:
        """What turns a row into inputs and an answer into a score (a compile's study is named by their code)."""
        return self.input_keys, self._metric, self._correct

    def default_dataset(self) -> Path | None:
        return self.dataset

    def default_rows(self) -> list[dict] | None:
        return self.rows


def entry_point(program_class):
    """The method a call runs: `forward`, or for a program written only with `async def aforward` (DSPy's
    async form) that one."""
    for name in ("forward", "aforward"):
        if callable(getattr(program_class, name, None)):
            return getattr(program_class, name)
    raise ConfigError(f"{program_class.__name__} has neither forward nor aforward: nothing to call")


def call_program(program, **inputs):
    """program(**inputs), also for a program with only `aforward`: run to completion on an event loop of its own
    (a compile, `run`, a synchronous call)."""
    if entry_point(type(program)) is getattr(type(program), "forward", None):
        return program(**inputs)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(program.acall(**inputs))
    raise ConfigError(f"{type(program).__name__} has only `async def aforward`: inside a running event loop call it "
                      "with `await program.acall(...)`")


def program_inputs(program) -> tuple[str, ...]:
    """The input names of a program: its `forward`'s named parameters (read from the class: dspy warns when an
    instance's forward is touched outside a call; `aforward`'s when it has only that), or for a forward taking
    only **kwargs (a bare dspy.Predict, dspy.ChainOfThought) its predictors' signature inputs."""
    params = inspect.signature(entry_point(type(program))).parameters.items()
    named = tuple(name for name, p in params if name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
    fields: list[str] = []
    for _, predictor in program.named_predictors():
        fields += [f for f in predictor.signature.input_fields if f not in fields]
    return named or tuple(fields)


def task_from_module(module, source: str, path: Path) -> ExampleTask:
    """A DSPy-style task file: `program`, `trainset`, `metric`, and optionally `inputs` (the input field
    names of a JSONL trainset; default: program_inputs), `NAME`."""
    import dspy

    def build():
        made = module.program() if isinstance(module.program, type) or inspect.isfunction(module.program) \
            else copy.deepcopy(module.program)
        if not isinstance(made, dspy.Module):
            raise ConfigError(f"{path}: `program` must be a dspy.Module, a class or a function returning one")
        return made

    name = getattr(module, "NAME", path.stem)
    if not callable(module.metric):
        raise ConfigError(f"{path}: `metric` must be a function metric(example, prediction, trace=None), "
                          f"not {type(module.metric).__name__}")
    trainset = module.trainset
    if isinstance(trainset, (str, Path)):
        dataset = (path.parent / trainset).resolve()
        keys = getattr(module, "inputs", None) or program_inputs(build())
        if not keys:
            raise ConfigError(f"{path}: cannot tell which trainset fields are the program's inputs (its forward "
                              "takes **kwargs); name them: inputs = ('field', ...)")
        return ExampleTask(name=name, source=source, build=build, metric=module.metric, input_keys=keys,
                           dataset=dataset, predictor_correct=getattr(module, "predictor_correct", None),
                           checks=getattr(module, "checks", None))
    return ExampleTask(name=name, source=source, build=build, metric=module.metric,
                       input_keys=input_keys_of(trainset, f"{path}: trainset"),
                       rows=[example_row(e, i) for i, e in enumerate(trainset)],
                       predictor_correct=getattr(module, "predictor_correct", None),
                       added_keys=added_row_keys(trainset), checks=getattr(module, "checks", None))

