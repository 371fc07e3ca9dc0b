"""Decomposition into sub-tasks: one predictor per output field, so that each can have its own tier.

A predictor that writes several fields at once (`message -> intent, urgency, order_id`) is one call on one tier:
the hardest field decides that tier for all of them. `decompose(program)` splits each such predictor into one
predictor per field (same inputs, instructions, demos and settings), so the search can send the easy fields to a
cheap tier and only the hard one to the flagship; on small models a one-field question is also asked plainly
(pipelines.adapter), which they answer far better than the field-marker format several fields need.

Each sub-task re-reads the inputs, so a decomposed program pays for the input once per field: whether that pays
off is the compile's to measure (compile both forms on the same trainset and compare). Predictors that reason
first (dspy.ChainOfThought) stay whole: their fields share one line of reasoning.
"""

from __future__ import annotations

import copy

import dspy

from pipelines.confidence import REASONING_FIELDS


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
    modules included; a ChainOfThought and a predictor kept in a list stay whole). Decomposing twice changes
    nothing; your program is untouched."""
    program = copy.deepcopy(program)
    if splittable(program):
        return Decomposed(program)
    for name, predictor in list(program.named_predictors()):
        if not splittable(predictor) or "[" in name:
            continue
        *path, last = name.split(".")
        parent = program
        for part in path:
            parent = getattr(parent, part)
        setattr(parent, last, Decomposed(predictor))
    return program


def is_decomposed(program: dspy.Module) -> bool:
    return isinstance(program, Decomposed) or any(isinstance(m, Decomposed) for _, m in program.named_sub_modules())
