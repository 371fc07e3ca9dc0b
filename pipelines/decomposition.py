"""Decomposition into sub-tasks: one predictor per output field, so that each can have its own tier.

A predictor that writes several fields at once (`message -> intent, urgency, order_id`) is one call on one tier:
the hardest field decides that tier for all of them. `decompose(program)` splits each such predictor into one
predictor per field (same inputs, instructions, demos and settings), so the search can send the easy fields to a
cheap tier and only the hard one to the flagship; on small models a one-field question is also asked plainly
(pipelines.adapter), which they answer far better than the field-marker format several fields need.

Each sub-task re-reads the inputs, so a decomposed program pays for the input once per field: whether that pays
off is the compile's to measure (compile both forms on the same trainset and compare). Predictors that reason
first (dspy.ChainOfThought) stay whole: their fields share one line of reasoning.

`optimize TASK --decompose` compiles a task's program decomposed (DecomposedTask).
"""

from __future__ import annotations

import copy
import re

import dspy

from pipelines.confidence import REASONING_FIELDS
from pipelines.errors import ConfigError


class Decomposed(dspy.Module):
    """Stands where a several-field predictor stood: asks one predictor per field and returns one Prediction with
    every field, so the program's own code and its metric read it as before. The sub-predictors are named
    `<predictor>.<field>` in the policy, the artifact and the reports."""

    def __init__(self, predictor: dspy.Predict):
        super().__init__()
        signature = predictor.signature
        self.fields = list(signature.output_fields)
        for name in self.fields:
            only = signature
            for other in self.fields:
                if other != name:
                    only = only.delete(other)
            part = dspy.Predict(only, **dict(predictor.config))
            part.demos = copy.deepcopy(predictor.demos)
            part.lm = predictor.lm
            setattr(self, attribute(name), part)

    def forward(self, **kwargs):
        answers = {}
        for name in self.fields:
            answers.update(getattr(self, attribute(name))(**kwargs).items())
        return dspy.Prediction(**answers)

    async def aforward(self, **kwargs):
        answers = {}
        for name in self.fields:
            answers.update((await getattr(self, attribute(name)).acall(**kwargs)).items())
        return dspy.Prediction(**answers)


def attribute(field: str) -> str:
    """The sub-predictor's attribute: the field's own name unless a Module already has it (`forward`, `demos`)."""
    return f"{field}_field" if hasattr(dspy.Module, field) or field == "fields" else field


def splittable(predictor) -> bool:
    if type(predictor) is not dspy.Predict:
        return False
    fields = list(predictor.signature.output_fields)
    return len(fields) > 1 and not REASONING_FIELDS & set(fields)


def decompose(program: dspy.Module) -> dspy.Module:
    """A copy of `program` with every several-field dspy.Predict split into one predictor per field (nested
    modules, lists and dicts of predictors included; a ChainOfThought, and a predictor in a tuple, stay whole).
    Decomposing twice changes nothing; your program is untouched. A program with nothing to split is a
    ConfigError: compiling it "decomposed" would silently compile the whole form."""
    program = copy.deepcopy(program)
    if splittable(program):
        return Decomposed(program)
    for name, predictor in list(program.named_predictors()):
        if splittable(predictor):
            _replace(program, name, Decomposed(predictor))
    if not is_decomposed(program):
        raise ConfigError(f"decompose: no predictor of {type(program).__name__} writes several output fields "
                          f"({NOTHING_TO_SPLIT}")
    return program


NOTHING_TO_SPLIT = "a dspy.Predict with two or more outputs; a ChainOfThought stays whole): nothing to split"


# dspy's parameter names: `a.b` for attributes, `steps[0]` for a list's items, `tools['search']` for a dict's
_NAME_PART = re.compile(r"\.?(\w+)|\[(\d+)\]|\['([^']*)'\]")


def _replace(program: dspy.Module, name: str, module: dspy.Module) -> None:
    """Put `module` where dspy's parameter `name` is."""
    parts = [(attr, index, key) for attr, index, key in _NAME_PART.findall(name)]
    parent = program
    for attr, index, key in parts[:-1]:
        parent = getattr(parent, attr) if attr else parent[_slot(parent, index, key)]
    attr, index, key = parts[-1]
    if attr:
        setattr(parent, attr, module)
    elif isinstance(parent, (list, dict)):
        parent[_slot(parent, index, key)] = module
    # an item of a tuple cannot be replaced: that predictor stays whole


def _slot(container, index: str, key: str):
    """The list index or dict key a name part spells (dspy writes every dict key as text: `d['1']` for 1)."""
    if index:
        return int(index)
    return key if key in container else next(k for k in container if str(k) == key)


def is_decomposed(program: dspy.Module) -> bool:
    return isinstance(program, Decomposed) or any(isinstance(m, Decomposed) for _, m in program.named_sub_modules())


class DecomposedTask:
    """A task (pipelines.tasks.Task, or a DSPy-style task file's) whose program is compiled decomposed:
    `optimize TASK --decompose`. The artifact records it, so `load` and `run` split the program the same way."""

    def __init__(self, task):
        self._task = task
        try:
            decompose(task.build_program())
        except ConfigError:
            raise ConfigError(f"--decompose: no predictor of task {task.name} writes several output fields (a "
                              f"{NOTHING_TO_SPLIT}") from None

    @property
    def whole(self):
        """The task as written (its program not split)."""
        return self._task

    def build_program(self):
        return decompose(self._task.build_program())

    def __getattr__(self, name):
        return getattr(self._task, name)
