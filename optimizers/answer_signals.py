"""Label-free signals any task's answer has: what the answer says (a normalized key, so two answers
can be compared), and answer-level features (length, refusals, hedges, whether it commits to an answer).

answer_key reads, in order: a choice letter ("(B)", "Answer: B", "the answer is b", "\\boxed{B}", an
answer that is just a letter), the last fenced code block (whitespace and comments dropped), a final
number standing alone ("#### 12", "\\boxed{12}", else the last number; currency signs and thousands separators
dropped; compared digit by digit, so long ids stay apart; the digits inside A12345 are not a number), else the
normalized text (lowercased, punctuation dropped, whitespace collapsed). Two answers agree when their keys are
equal; an empty answer has no key and agrees with nothing. Nothing here can raise on text: for features, numbers
too large for a float are not numbers.
"""

from __future__ import annotations

import math
import re

NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
# a number standing alone: the digits of an id such as A12345 or a size such as 12kg are not the answer's number
_LONE_NUMBER = re.compile(r"(?<![A-Za-z0-9.])-?\d+(?:\.\d+)?(?![A-Za-z0-9])")
HEDGES = re.compile(r"\b(maybe|perhaps|probably|possibly|not sure|unsure|unclear|assum\w*|approximately|"
                    r"roughly|i think|i believe|cannot|can't|however|mistake|wait|re-?evaluat\w*)\b", re.I)
_REFUSAL = re.compile(r"\b(i'?m sorry|i am sorry|i apologi[sz]e|as an ai|i (?:cannot|can't|am unable to|won't) "
                      r"(?:help|answer|provide|assist|comply)|unable to (?:answer|determine)|not enough information|"
                      r"cannot be determined)\b", re.I)
_STATES = re.compile(r"####|answer is|final answer|answer:|\\boxed", re.I)
# the letter is a capital, or any case inside parentheses ("the answer is a bit" names no choice)
_LETTER = r"(?:\(([A-Ja-j])\)|([A-J]))(?!\w)"
_CHOICES = [re.compile(p, re.M) for p in (
    rf"(?i:\banswer(?:\s+is)?)\s*[:：]?\s*\**{_LETTER}",
    rf"\\boxed\{{\s*{_LETTER}\s*\}}",
    rf"\A\s*{_LETTER}[.:)]?\s*\Z",
    rf"^\s*\(([A-Ja-j])\)()[.:]?\s",
)]
_CODE = re.compile(r"```[\w+-]*\n(.*?)```", re.S)
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")

GENERIC_FEATURES = ("answer_empty", "answer_len", "answer_per_input_len", "answer_lines", "input_len",
                    "has_number", "has_choice", "has_code", "states_answer", "refusal", "hedges", "ends_cleanly")


def plain(text: str) -> str:
    """Numbers without currency signs or thousands separators: '$1,200' -> '1200'."""
    return re.sub(r"(?<=\d),(?=\d{3}\b)", "", text.replace("$", ""))


def final_number(text: str) -> float | None:
    """The stated final answer: the number after the last '####' marker or in the last \\boxed{}, else the
    last number; None when there is none (or it is too large for a float)."""
    return _final(text, NUMBER, _finite_float)


def _final(text: str, pattern: re.Pattern, convert):
    """The last match of `pattern` that `convert` accepts: after the last '####', in the last \\boxed{}, else
    anywhere; converted."""
    text = plain(text)

    def found_in(part: str) -> list:
        return [v for v in map(convert, pattern.findall(part)) if v is not None]

    boxed = _BOXED.findall(text)
    if "####" in text:
        found = found_in(text.rsplit("####", 1)[1]) or found_in(text)
    elif boxed and found_in(boxed[-1]):
        found = found_in(boxed[-1])
    else:
        found = found_in(text)
    return found[-1] if found else None


def _finite_float(token: str) -> float | None:
    x = float(token)
    return x if math.isfinite(x) else None


def _exact_number(token: str) -> str:
    """A number as an exact key: '2.50' and '2.5' are one, 1234567891 and 1234567892 two (a float's 9 or 17
    digits would merge long ids, phone and account numbers)."""
    sign, digits = ("-", token[1:]) if token.startswith("-") else ("", token)
    whole, _, fraction = digits.partition(".")
    whole, fraction = whole.lstrip("0") or "0", fraction.rstrip("0")
    key = whole + (f".{fraction}" if fraction else "")
    return key if key == "0" else sign + key


def normalized(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def choice_letter(text: str) -> str | None:
    for pattern in _CHOICES:
        found = pattern.findall(text)
        if found:
            return "".join(found[-1]).upper()
    return None


def answer_key(text: str) -> str | None:
    if not text or not text.strip():
        return None
    letter = choice_letter(text)
    if letter:
        return f"choice:{letter}"
    code = _CODE.findall(text)
    if code:
        lines = [re.sub(r"\s+", " ", line.split("#", 1)[0]).strip() for line in code[-1].splitlines()]
        return "code:" + "\n".join(line for line in lines if line)
    number = _final(text, _LONE_NUMBER, _exact_number)
    if number is not None:
        return f"number:{number}"
    return "text:" + normalized(text)


def answers_agree(a: str, b: str) -> bool:
    key = answer_key(a)
    return key is not None and key == answer_key(b)


def answer_features(inputs: str, answer: str) -> list[float]:
    """GENERIC_FEATURES of one answer to one input."""
    stripped = answer.rstrip()
    return [
        float(not stripped), math.log1p(len(answer)), math.log1p(len(answer)) - math.log1p(len(inputs)),
        math.log1p(answer.count("\n")), math.log1p(len(inputs)),
        float(final_number(answer) is not None), float(choice_letter(answer) is not None),
        float(bool(_CODE.search(answer))), float(bool(_STATES.search(answer))),
        float(bool(_REFUSAL.search(answer))), math.log1p(len(HEDGES.findall(answer))),
        float(bool(stripped) and stripped[-1] in ".!?)]}`*\"'0123456789" and answer.count("```") % 2 == 0),
    ]
