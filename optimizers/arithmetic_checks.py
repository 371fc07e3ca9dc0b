"""Opt-in signal plug-in "arithmetic" (`replay fit --signals arithmetic`): re-verify a math answer's own
working. Shaped for GSM8K-style word problems; on other tasks it says nothing, so it is not a default.

Every arithmetic claim "expression = number" (numbers joined by + - * / x × ÷, with parentheses and
percent signs, and the calculator annotations "<<expr=value>>") is recomputed with exact rational
arithmetic (rounding to the stated decimals allowed; a percent read either as /100 or as a plain
number); whether the final number is the result of the last claim, appears in the working, or is cut
off (an unfinished answer); how many of the question's numbers (digits and number words) the working
uses; answer length and count of numbers relative to the question's; a percent answer to a non-percent
question (or the reverse); a fractional answer to an all-integer question.
"""

from __future__ import annotations

import ast
import functools
import math
import re
from fractions import Fraction

from optimizers.answer_signals import HEDGES as _HEDGES, NUMBER as _NUMBER, final_number, plain as _plain

_NUM = r"-?\d+(?:\.\d+)?"
_STATES = re.compile(r"####|answer is|final answer|\\boxed", re.I)
# arithmetic claims "expression = number": the expression is numbers joined by + - * / x × ÷, with
# parentheses and percent signs; the calculator annotations "<<expr=value>>" are checked the same way
_CALC = re.compile(r"<<([^<>=]*)=([^<>]*)>>")
_OPERAND = r"\(*\s*\d+(?:\.\d+)?\s*%?\s*\)*"
_EXPRESSION = re.compile(rf"-?{_OPERAND}(?:\s*[-+*/x×÷]\s*{_OPERAND})+")
_EXPR_TAIL = re.compile(r"[\d\s.+\-*/x×÷()%]*$")
_RHS = re.compile(r"\s*\$?\s*(-?\d+(?:\.\d+)?)(\s*%)?")
_PERCENT_Q = re.compile(r"\b(what|which)\s+(is\s+the\s+)?percent(age)?\b|\bhow\s+many\s+percent\b", re.I)
_WORD_NUMBERS = {w: float(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve".split())}
_WORD_NUMBERS.update({"twenty": 20.0, "thirty": 30.0, "forty": 40.0, "fifty": 50.0, "hundred": 100.0,
                      "thousand": 1000.0, "dozen": 12.0, "half": 0.5, "twice": 2.0, "double": 2.0,
                      "triple": 3.0, "quarter": 0.25})
_PERCENTS = re.compile(rf"({_NUM})\s*(?:%|percent)")
_SENTENCE_END = re.compile(r"[.?!]+\s")
_WORD = re.compile(r"\b(" + "|".join(_WORD_NUMBERS) + r")\b", re.I)

ARITHMETIC_FEATURES = ("input_len", "input_numbers", "answer_len", "answer_lines", "answer_numbers",
                       "has_final_number", "final_is_integer", "final_magnitude", "final_negative", "final_in_input", "final_is_computed",
                 "states_answer", "arith_claims", "arith_errors", "hedges",
                 # exact re-verification of the working and its consistency with the question
                 "any_arith_error", "arith_error_share", "calc_annotations", "final_is_last_result",
                 "final_in_working", "final_mentions", "ends_cleanly", "input_coverage", "unused_input_numbers",
                 "numbers_per_input_number", "answer_per_input_len", "percent_mismatch", "unexpected_fraction",
                 "input_sentences")


def _exact(node) -> Fraction:
    """Exact value of a parsed + - * / expression over number literals (anything else raises)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return Fraction(str(node.value))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _exact(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div)):
        a, b = _exact(node.left), _exact(node.right)
        if isinstance(node.op, ast.Add):
            return a + b
        if isinstance(node.op, ast.Sub):
            return a - b
        if isinstance(node.op, ast.Mult):
            return a * b
        return a / b  # ZeroDivisionError on b == 0
    raise ValueError("not arithmetic")


def exact_values(expression: str) -> list[Fraction]:
    """The exact values of an arithmetic expression: percent signs read as /100 and, where that
    differs, as plain numbers ("60% of 5" vs "12/20 x 100 = 60%"). Empty when it does not parse."""
    e = expression.replace("×", "*").replace("÷", "/").replace("x", "*").replace("X", "*")
    if len(e) > 200 or "**" in e or "//" in e:
        return []
    variants = {re.sub(r"(\d+(?:\.\d+)?)\s*%", r"(\1/100)", e), e.replace("%", "")}
    values = []
    for variant in variants:
        try:
            values.append(_exact(ast.parse(variant.strip(), mode="eval").body))
        except (SyntaxError, ValueError, ZeroDivisionError, RecursionError, TypeError, MemoryError):
            pass
    return values


@functools.lru_cache(maxsize=65536)
def claim_holds(expression: str, stated: str, percent: bool) -> bool | None:
    """Whether "expression = stated" holds exactly (up to rounding to the stated decimals; a stated
    percent may be read as a fraction), or None when the expression does not evaluate."""
    values = exact_values(expression)
    return _claim_holds(values, stated, percent) if values else None


def _claim_holds(values: list[Fraction], stated: str, percent: bool) -> bool:
    c = Fraction(stated)
    decimals = len(stated.split(".", 1)[1]) if "." in stated else 0
    tolerance = Fraction(1, 2 * 10 ** decimals) + abs(c) * Fraction(1, 10 ** 6)
    targets = [c, c / 100] if percent else [c]
    return any(abs(v - t) <= tolerance for v in values for t in targets)


def arithmetic_claims(text: str) -> list[tuple[bool, float]]:
    """Every checkable "expression = number" claim in an answer, as (holds, stated number), in order:
    the calculator annotations "<<expr=value>>" and the equations of the visible working."""
    plain = _plain(text).replace("\\", "")
    claims: list[tuple[int, bool, float]] = []
    for m in _CALC.finditer(plain):
        rhs = _RHS.match(m.group(2))
        holds = claim_holds(m.group(1).strip(), rhs.group(1), bool(rhs.group(2))) \
            if rhs and _EXPRESSION.fullmatch(m.group(1).strip()) else None
        if holds is not None:
            claims.append((m.start(), holds, float(rhs.group(1))))
    visible = _CALC.sub(lambda m: " " * len(m.group(0)), plain)  # same offsets, annotations blanked
    for m in re.finditer("=", visible):
        rhs = _RHS.match(visible, m.end())
        tail = _EXPR_TAIL.search(visible, max(0, m.start() - 200), m.start())
        if not rhs or not tail:
            continue
        lhs = tail.group(0)
        # the longest suffix of the tail that is a whole expression (text before it is not part of it)
        for k in range(len(lhs)):
            if lhs[k] in "-(0123456789" and (k == 0 or not lhs[k - 1].isdigit() and lhs[k - 1] != "."):
                candidate = lhs[k:].strip()
                if candidate.count("(") == candidate.count(")") and _EXPRESSION.fullmatch(candidate):
                    holds = claim_holds(candidate, rhs.group(1), bool(rhs.group(2)))
                    if holds is not None:
                        claims.append((m.start(), holds, float(rhs.group(1))))
                    break
    return [(ok, value) for _, ok, value in sorted(claims)]


def _numbers_in_question(plain_in: str) -> set[float]:
    found = {x for x in map(float, _NUMBER.findall(plain_in)) if math.isfinite(x)}
    found |= {_WORD_NUMBERS[w.lower()] for w in _WORD.findall(plain_in)}
    return {abs(x) for x in found}


@functools.lru_cache(maxsize=4096)
def _question_facts(inputs: str) -> tuple:
    """What the features need from the question (every model answers the same one)."""
    plain_in = _plain(inputs)
    input_numbers = frozenset(x for x in map(float, _NUMBER.findall(plain_in)) if math.isfinite(x))
    sentences = len([s for s in _SENTENCE_END.split(inputs.strip()) if s.strip()])
    return (input_numbers, frozenset(_numbers_in_question(plain_in)), bool(_PERCENT_Q.search(inputs)),
            all(x == int(x) for x in input_numbers), sentences)


def arithmetic_features(inputs: str, answer: str) -> list[float]:
    plain_out = _plain(answer)
    input_numbers, question_numbers, percent_q, integral_inputs, sentences = _question_facts(inputs)
    final = final_number(answer)
    claims = arithmetic_claims(answer)
    errors = sum(not ok for ok, _ in claims)
    results = {value for _, value in claims}
    answer_numbers = [x for x in map(float, _NUMBER.findall(_CALC.sub(" ", plain_out))) if math.isfinite(x)]
    answer_set = {abs(x) for x in answer_numbers}
    has_final = final is not None
    body = plain_out.rsplit("####", 1)[0] if "####" in plain_out else plain_out
    body_numbers = [x for x in map(float, _NUMBER.findall(_CALC.sub(" ", body))) if math.isfinite(x)]
    if "####" not in plain_out and body_numbers:
        body_numbers = body_numbers[:-1]  # the final number itself is the last one
    stripped = answer.rstrip()
    ends_cleanly = bool(stripped) and answer.count("<<") == answer.count(">>") and (
        "####" in answer or stripped[-1] in ".!?)%*0123456789")
    used = question_numbers & answer_set
    percent_a = has_final and final in {float(x) for x in _PERCENTS.findall(plain_out)}
    return [
        math.log1p(len(inputs)), math.log1p(len(input_numbers)),
        math.log1p(len(answer)), math.log1p(answer.count("\n")), math.log1p(len(_NUMBER.findall(plain_out))),
        float(has_final), float(has_final and final == int(final)),
        math.log1p(abs(final)) if has_final else 0.0, float(has_final and final < 0),
        float(has_final and final in input_numbers), float(has_final and final in results),
        float(bool(_STATES.search(answer))),
        math.log1p(len(claims)), math.log1p(errors), math.log1p(len(_HEDGES.findall(answer))),
        float(errors > 0), errors / len(claims) if claims else 0.0, math.log1p(answer.count("<<")),
        float(has_final and bool(claims) and abs(claims[-1][1] - final) <= 1e-9 * max(1.0, abs(final))),
        float(has_final and final in body_numbers), math.log1p(sum(x == final for x in answer_numbers)),
        float(ends_cleanly),
        len(used) / len(question_numbers) if question_numbers else 1.0,
        math.log1p(len(question_numbers - answer_set)),
        math.log1p(len(answer_set)) - math.log1p(len(question_numbers)),
        math.log1p(len(answer)) - math.log1p(len(inputs)),
        float(has_final and percent_q != percent_a),
        float(has_final and integral_inputs and final != int(final)), math.log1p(sentences),
    ]


