"""Customer support triage: classify the request's intent, and extract the order number the answer
needs. Two predictors of different difficulty: intent needs judgment, the order id is a lookup."""

from __future__ import annotations

import re
from typing import Annotated, Literal

import dspy
from pydantic import AfterValidator

from metrics.quality import label_match, normalize_label

NAME = "support"
DATASET = "support.jsonl"
INTENTS = ("billing", "shipping", "returns", "account", "technical", "product_question")


_ORDER = re.compile(r"\b[A-Z]\d{5,6}\b")
_NO_ORDER = {"none", "no", "n a", "na", "null", "no order number"}


def normalize_order_id(value) -> str:
    found = _ORDER.search(str(value or "").upper())
    return found.group() if found else "none"


def read_order_id(value: str) -> str:
    """A well-formed answer: one order number (possibly with a word or two around it) or 'none'.
    A sentence is not an answer, even one that happens to hold a number: the rung escalates."""
    words = re.sub(r"[^\w ]", " ", str(value)).split()
    ids = [w.upper() for w in words if _ORDER.fullmatch(w.upper())]
    if len(ids) == 1 and len(words) <= 4:
        return ids[0]
    if " ".join(words).lower() in _NO_ORDER:
        return "none"
    raise ValueError(f"not an order number or 'none': {str(value)[:60]!r}")


class ClassifyIntent(dspy.Signature):
    """Classify a customer support message into exactly one intent.
    billing: charges, invoices, refunds of wrong charges. shipping: delivery, tracking, delays.
    returns: sending items back, exchanges, refunds for returned items. account: login details,
    password, profile, security. technical: app or website errors, bugs. product_question: questions
    about a product before or after buying. Answer with the intent label only."""

    message: str = dspy.InputField()
    intent: Literal[INTENTS] = dspy.OutputField(
        desc="one of: billing, shipping, returns, account, technical, product_question")


class ExtractOrderId(dspy.Signature):
    """Extract the order number from a customer message: a letter followed by 5 or 6 digits, such as
    A48213. Copy it exactly. Answer none if the message has no order number (phone numbers, amounts
    and tracking codes are not order numbers)."""

    message: str = dspy.InputField()
    order_id: Annotated[str, AfterValidator(read_order_id)] = dspy.OutputField(desc="the order number, or none")


# Hand-written worked examples (none is in the dev set). Measured on 40 dev rows, they lift intent
# accuracy from 0.40 to 0.57 on the mid tier and 0.65 to 0.75 on the flagship, and order-id answers
# that are well-formed and right from 0.78 to 0.93 on the flagship.
CLASSIFY_DEMOS = [
    dspy.Example(message="I was billed twice for my subscription this month.", intent="billing"),
    dspy.Example(message="Where is my package? Tracking hasn't updated in 5 days.", intent="shipping"),
    dspy.Example(message="The shoes don't fit, how do I send them back for a refund?", intent="returns"),
    dspy.Example(message="I can't log in, the password reset email never comes.", intent="account"),
    dspy.Example(message="The app crashes every time I open the checkout page.", intent="technical"),
    dspy.Example(message="Is this blender dishwasher safe?", intent="product_question"),
]
EXTRACT_DEMOS = [
    dspy.Example(message="Order B20417 arrived broken, can I get a replacement?", order_id="B20417"),
    dspy.Example(message="My card was charged $49.99 twice, please call me at 555-201-3344.", order_id="none"),
    dspy.Example(message="tracking 1Z999AA10123456784 says delivered but nothing here (order k731560)",
                 order_id="K731560"),
    dspy.Example(message="How do I change my password?", order_id="none"),
]


class SupportTriage(dspy.Module):
    def __init__(self):
        super().__init__()
        self.classify = dspy.Predict(ClassifyIntent)
        self.classify.demos = list(CLASSIFY_DEMOS)
        self.extract = dspy.Predict(ExtractOrderId)
        self.extract.demos = list(EXTRACT_DEMOS)

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
