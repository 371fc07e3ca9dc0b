"""The shipped support task with two answer checks, written from the task's own wording before any was measured
(none was fitted to the dev set): what the learned confidence gains when a user adds what they know.

    python cli.py optimize examples/support_checks.py        # the support dev set, local tiers
    python cli.py run support_checks.tierwise.json --task examples/support_checks.py --input '{"message": "..."}'

- extract: the answer agrees with the message: the one order-shaped code it holds, or 'none' when it holds none.
  A near answer key for this predictor (a regular expression could extract most ids alone); read it as the upper
  end of what a check can do.
- classify: the answered intent's own words (its line in the signature's instructions) appear in the message.
"""

from __future__ import annotations

import re

from pipelines.tasks.support import (  # noqa: F401 - the task's parts, as `cli.py optimize` reads them
    DATASET, PARAPHRASES, SEMANTIC_CACHE, ClassifyIntent, build_program, inputs, metric, normalize_order_id,
    predictor_correct)

NAME = "support_checks"
_ORDER_SHAPE = re.compile(r"\b[A-Za-z]\d{5,6}\b")
_WORD = re.compile(r"[a-z]{4,}")


def order_id_agrees_with_message(inputs: dict, prediction) -> bool:
    codes = {code.upper() for code in _ORDER_SHAPE.findall(inputs["message"])}
    said = normalize_order_id(prediction.order_id)
    return said in codes if said != "none" else not codes


def _intent_words() -> dict[str, set[str]]:
    """label -> the stems (first 5 letters) of the words on its line of the instructions (`billing = charges`)."""
    found = {}
    for line in ClassifyIntent.__doc__.splitlines():
        label, sep, words = line.strip().partition(" = ")
        if sep:
            found[label] = {w[:5] for w in _WORD.findall(words.lower())}
    return found


INTENT_WORDS = _intent_words()


def intent_words_in_message(inputs: dict, prediction) -> float:
    stems = {w[:5] for w in _WORD.findall(inputs["message"].lower())}
    return float(bool(stems & INTENT_WORDS.get(str(prediction.intent).strip().lower(), set())))


checks = {"extract": [order_id_agrees_with_message], "classify": [intent_words_in_message]}
