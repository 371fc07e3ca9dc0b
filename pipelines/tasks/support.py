"""Customer support triage: classify the request's intent, and extract the order number the answer
needs. Two predictors of different difficulty: intent needs judgment, the order id is a lookup."""

from __future__ import annotations

import re

import dspy

from metrics.quality import label_match, normalize_label

NAME = "support"
DATASET = "support.jsonl"
INTENTS = ("billing", "shipping", "returns", "account", "technical", "product_question")


class ClassifyIntent(dspy.Signature):
    """Classify a customer support message into exactly one intent.
    billing: charges, invoices, refunds of wrong charges. shipping: delivery, tracking, delays.
    returns: sending items back, exchanges, refunds for returned items. account: login details,
    password, profile, security. technical: app or website errors, bugs. product_question: questions
    about a product before or after buying. Answer with the intent label only."""

    message: str = dspy.InputField()
    intent: str = dspy.OutputField(desc="one of: billing, shipping, returns, account, technical, product_question")


class ExtractOrderId(dspy.Signature):
    """Extract the order number from a customer message: a letter followed by 5 or 6 digits, such as
    A48213. Copy it exactly. Answer none if the message has no order number (phone numbers, amounts
    and tracking codes are not order numbers)."""

    message: str = dspy.InputField()
    order_id: str = dspy.OutputField(desc="the order number, or none")


_ORDER = re.compile(r"\b[A-Z]\d{5,6}\b")


def normalize_order_id(value) -> str:
    found = _ORDER.search(str(value or "").upper())
    return found.group() if found else "none"


class SupportTriage(dspy.Module):
    def __init__(self):
        super().__init__()
        self.classify = dspy.Predict(ClassifyIntent)
        self.extract = dspy.Predict(ExtractOrderId)

    def forward(self, message: str):
        intent = self.classify(message=message).intent
        order_id = self.extract(message=message).order_id
        return dspy.Prediction(intent=normalize_label(intent, INTENTS), order_id=normalize_order_id(order_id))


def build_program() -> dspy.Module:
    return SupportTriage()


def inputs(row: dict) -> dict:
    return {"message": row["message"]}


def metric(row: dict, prediction) -> float:
    intent_ok = label_match(prediction.intent, row["intent"], INTENTS)
    order_ok = float(normalize_order_id(prediction.order_id) == row["order_id"])
    return (intent_ok + order_ok) / 2


def predictor_correct(name: str, row: dict, outputs: dict) -> bool | None:
    if name == "classify":
        return bool(label_match(outputs.get("intent"), row["intent"], INTENTS))
    if name == "extract":
        return normalize_order_id(outputs.get("order_id")) == row["order_id"]
    return None
