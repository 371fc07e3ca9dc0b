"""Math word problems: one solver predictor that works the problem in a few short steps and states
the final number, then a plain-Python step that extracts that number. Scored by exact numeric match.

The working goes in a field named `reasoning` on purpose: the confidence estimators skip reasoning
fields (pipelines.confidence.REASONING_FIELDS), so a rung's confidence is that of the answer's own
tokens, the signal that separates right from wrong answers best on word problems (MODELS.md).
Outputs are capped at 120 tokens: local tiers write ~10-60 tokens/s, and a capped answer that never
reaches its final field fails the rung, which escalates like a low-confidence one."""

from __future__ import annotations

import dspy

from pipelines.answers import numeric_match, parse_number

NAME = "math"
DATASET = "math.jsonl"
MAX_TOKENS = 200


class SolveWordProblem(dspy.Signature):
    """Solve the math word problem. Work it out in at most three short steps, then give the final
    answer as a number only (no units, no currency sign)."""

    question: str = dspy.InputField()
    reasoning: str = dspy.OutputField(desc="at most three short calculation steps")
    answer: str = dspy.OutputField(desc="the final answer as a number only, e.g. 42 or 24.75")


def extract_number(answer, work="") -> float | None:
    """The numeric answer: the last number in the answer field, else the last number of the working
    (small models sometimes put words or nothing in the answer field)."""
    number = parse_number(answer)
    return number if number is not None else parse_number(work)


class MathSolver(dspy.Module):
    def __init__(self):
        super().__init__()
        self.solve = dspy.Predict(SolveWordProblem, max_tokens=MAX_TOKENS)

    def forward(self, question: str):
        out = self.solve(question=question)
        return dspy.Prediction(reasoning=out.reasoning, answer=extract_number(out.answer, out.reasoning))


def build_program() -> dspy.Module:
    return MathSolver()


def inputs(row: dict) -> dict:
    return {"question": row["question"]}


def metric(row: dict, prediction) -> float:
    return numeric_match(prediction.answer, row["answer"])


def predictor_correct(name: str, row: dict, outputs: dict) -> bool | None:
    if name == "solve":
        number = extract_number(outputs.get("answer"), outputs.get("reasoning") or "")
        return bool(numeric_match(number, row["answer"]))
    return None
