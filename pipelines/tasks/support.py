"""Customer support triage: classify the request's intent, and extract the order number the answer
needs. Two predictors of different difficulty: intent needs judgment, the order id is a lookup."""

from __future__ import annotations

import re
from typing import Annotated, Literal

import dspy
from pydantic import AfterValidator

from pipelines.answers import label_match, match_label

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
    """You route customer support messages. Read the message and decide what the customer mainly needs help with.
    billing = charges, invoices, payment problems, refunds of wrong charges
    shipping = delivery, tracking, delays, address for delivery
    returns = sending an item back, exchanges, refunds for returned items
    account = login, password, profile, personal data, security
    technical = the app or website is broken, errors, bugs
    product_question = how a product works, fits or what it is made of
    Reply with one label only."""

    message: str = dspy.InputField()
    intent: Literal[INTENTS] = dspy.OutputField(desc=f"one of: {', '.join(INTENTS)}")


class ExtractOrderId(dspy.Signature):
    """Which order number (one letter followed by 5 or 6 digits, such as A48213) appears in this customer
    message? Reply with that code only, or none if the message contains no such code."""

    message: str = dspy.InputField()
    order_id: Annotated[str, AfterValidator(read_order_id)] = dspy.OutputField(desc="the order number, or none")


# Prompts and hand-written worked examples (none is in the dev set), chosen on 40 dev rows and checked
# on 40 others with the local tiers. Share of the 40 rows answered right, mid / flagship tier:
#   intent:   first prompt, no examples 0.40 / 0.65; with these examples 0.57 / 0.75; this routing
#             prompt with them 0.68 / 0.72 (0.65 mid on the other 40 rows).
#   order id: first prompt, no examples 0.25 / 0.78 well-formed and right; with first examples 0.70 / 0.93;
#             this question with these examples 0.82 / 0.97 (0.88 mid on the other 40), and 97% of
#             the mid tier's well-formed answers right, so a malformed one is the signal to escalate.
# The examples roughly double the prompt, and so every tier's price per call.
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
    dspy.Example(message="Is the blue kettle still in stock?", order_id="none"),
    dspy.Example(message="how do i return the lamp from order k731560", order_id="K731560"),
    dspy.Example(message="My card was charged $49.99 twice for order P40992, call me at 555-201-3344.",
                 order_id="P40992"),
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
        return dspy.Prediction(intent=match_label(intent, INTENTS), order_id=normalize_order_id(order_id))


# Semantic cache (pipelines.semantic_cache; searched with `semantic_cache=True`): both predictors may
# reuse an earlier answer. Beside the built-in guards (ids and numbers, dates, negation), requests naming
# a different carrier or payment brand never share one. Paraphrase groups for the search: PARAPHRASES.
SEMANTIC_CACHE = {"predictors": ["classify", "extract"],
                  "entities": [r"\b(?:ups|fedex|dhl|usps|royal mail|paypal|visa|mastercard|amex|klarna|apple pay)\b"]}
PARAPHRASES = "support_paraphrases.jsonl"


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
