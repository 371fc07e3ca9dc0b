"""A banking intent classifier written the way the DSPy docs show, as a tierwise task file.

A DSPy-style task file names a `program` (a dspy.Module, or a function building one), a `trainset`
(a JSONL path, relative to this file, or a list of dspy.Example) and a `metric(example, prediction,
trace=None)`. The labels reach the model only through the `Literal` type: no description repeats them.

    tierwise optimize examples/bank_intents.py --limit 12
"""

from __future__ import annotations

from typing import Literal

import dspy

LABELS = ("card_lost", "transfer_failed", "balance", "loan_rates", "close_account", "fraud_report")


class BankIntent(dspy.Signature):
    """Classify the intent of a banking customer's message."""

    message: str = dspy.InputField()
    intent: Literal[LABELS] = dspy.OutputField()


class BankTriage(dspy.Module):
    def __init__(self):
        super().__init__()
        self.classify = dspy.Predict(BankIntent)

    def forward(self, message: str):
        return self.classify(message=message)


program = BankTriage
trainset = "../datasets/bank_intents.jsonl"
inputs = ("message",)


def metric(example, prediction, trace=None) -> bool:
    return example.intent == prediction.intent
