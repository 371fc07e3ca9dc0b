"""Typed answers: a signature's output type decides what counts as an answer; anything else is a
failed rung, so the cascade climbs without needing a confidence threshold."""

from __future__ import annotations

from typing import Annotated, Literal

import dspy
import pytest
from pydantic import AfterValidator

from pipelines.answers import field_type, match_label, parse_typed
from pipelines.artifact import program_fingerprint
from pipelines.policy import Policy, PredictorPolicy
from pipelines.tasks import support

LABELS = ("billing", "shipping", "product_question")


@pytest.mark.parametrize("text, label", [
    ("billing", "billing"), ("Billing.", "billing"), ("The intent is shipping", "shipping"),
    ("product question", "product_question"), ("product-question", "product_question"),
    ("shipping, not billing", "shipping"), ("I'm sorry, I can't help with that", ""),
])
def test_match_label(text, label):
    assert match_label(text, LABELS) == label


def test_literal_rejects_a_sentence_without_a_label():
    assert parse_typed(" Shipping!", Literal[LABELS]) == "shipping"
    with pytest.raises(ValueError, match="not one of"):
        parse_typed("To return it, follow these steps:", Literal[LABELS])


@pytest.mark.parametrize("text, order_id", [
    ("A48213", "A48213"), ("k731560", "K731560"), ("Order number: B20417.", "B20417"),
    ("none", "none"), ("None", "none"), ("no order number", "none"),
])
def test_order_id_reads_well_formed_answers(text, order_id):
    annotation = field_type(support.ExtractOrderId.output_fields["order_id"])
    assert parse_typed(text, annotation) == order_id


@pytest.mark.parametrize("text", [
    "2024", "RR123456789CN", "220V", "order_id",
    "To return order B66019, you can use the following steps:",  # a sentence holding an id is not an answer
    "A12345 or B23456",
])
def test_order_id_rejects_anything_else(text):
    annotation = field_type(support.ExtractOrderId.output_fields["order_id"])
    with pytest.raises(ValueError):
        parse_typed(text, annotation)


class Typed(dspy.Signature):
    """Pick a label."""

    question: str = dspy.InputField()
    label: Literal[LABELS] = dspy.OutputField()


class Checked(dspy.Signature):
    """Give a code."""

    question: str = dspy.InputField()
    code: Annotated[str, AfterValidator(support.read_order_id)] = dspy.OutputField()


class One(dspy.Module):
    def __init__(self, signature):
        super().__init__()
        self.qa = dspy.Predict(signature)

    def forward(self, question):
        return self.qa(question=question)


@pytest.mark.parametrize("signature, cheap, field, expected", [
    (Typed, "Sure! Let me think about your question.", "label", "billing"),
    (Checked, "To return order B66019, you can use the following steps:", "code", "B66019"),
])
def test_an_answer_outside_the_type_escalates_whatever_its_confidence(tmp_path, signature, cheap, field, expected):
    from tests.test_cascade import by_tier, compiled

    big = "billing" if field == "label" else "B66019"
    script, calls = by_tier(a=(cheap, 0.99), b=(big, 0.9))
    policy = Policy({"qa": PredictorPolicy(["a", "b"], "logprob_mean", [0.5])})
    program, _ = compiled(tmp_path, policy, script, program=One(signature))
    assert program(question="q")[field] == expected
    assert [(s.tier, s.decision) for s in program.last_trail] == [("a", "failed"), ("b", "accepted")]
    assert "AdapterParseError" in program.last_trail[0].error
    assert calls == ["a", "b"]


def test_the_fingerprint_covers_demos_and_output_types():
    base = program_fingerprint(support.build_program())
    assert program_fingerprint(support.build_program()) == base  # stable (no addresses in it)
    fewer = support.build_program()
    fewer.classify.demos = fewer.classify.demos[:-1]
    assert program_fingerprint(fewer) != base
    retyped = support.build_program()
    retyped.classify.signature = retyped.classify.signature.with_updated_fields("intent", type_=str)
    assert program_fingerprint(retyped) != base
