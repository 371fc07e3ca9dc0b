"""A follow-up question bot written the way the DSPy docs' conversation-history tutorial shows, as a tierwise
task file: the `history` input is a `dspy.History`, which the dev set gives in its JSON form
(`{"messages": [{"question": ..., "answer": ...}]}`). Each earlier turn reaches every tier as a user and an
assistant message, as DSPy's ChatAdapter sends them.

    tierwise optimize examples/follow_up_chat.py
"""

from __future__ import annotations

import dspy


class FollowUp(dspy.Signature):
    """Answer the user's latest question briefly, using the conversation so far."""

    question: str = dspy.InputField()
    history: dspy.History = dspy.InputField()
    answer: str = dspy.OutputField()


program = dspy.Predict(FollowUp)
trainset = "../datasets/follow_up_chat.jsonl"
inputs = ("question", "history")


def metric(example, prediction, trace=None) -> bool:
    """Right when the answer names one of the row's accepted words."""
    return any(word in prediction.answer.lower() for word in example.accept)
