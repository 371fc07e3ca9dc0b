"""Your own checks of a predictor's answer, read by the live `learned` confidence beside its generic signals.

A check is a function `check(inputs: dict, prediction) -> number or bool`: the predictor's input fields, as the
call saw them, and its answer as a dspy.Prediction (`prediction.answer` or `prediction["answer"]`): the shape of a
dspy.BestOfN / dspy.Refine `reward_fn(args, pred)`, so a reward function you have is a check. One check, one
feature. Declared per predictor:

    checks = {"extract": [order_id_in_message], "classify": label_words_in_message}

in a task file (beside `program`, `trainset`, `metric`), as `TierOptimizer(checks=...)`, and again at run time:
`load(path, checks=...)` (an artifact names its checks and never imports code itself). A verifier any task has
(does the JSON parse, is the extracted value in the request, does the code compile) is what these are for.

At compile time a check that raises or returns something other than a finite number stops the compile with a
one-line error naming the predictor, the check and the input; at run time the answer is not trusted (it
escalates, as an answer with no confidence does) and a warning says why: a production request must not crash
on a verifier's bug, nor be accepted on it.
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass, field

import dspy

from pipelines.code_fingerprint import code_fingerprint
from pipelines.errors import ConfigError, DatasetError

log = logging.getLogger("tierwise")
USAGE = "takes {predictor name: function or list of functions}, each check(inputs: dict, prediction) -> number"


class CheckFailed(DatasetError):
    """A user's check raised, or returned something other than a finite number."""


@dataclass(frozen=True)
class Check:
    name: str
    function: object = field(compare=False)
    code: str = ""  # a digest of its source: an artifact says when the check changed since the compile


@dataclass
class AnswerChecks:
    """The checks of each predictor. `strict`: a failing check raises (compile); else the answer goes untrusted."""

    by_predictor: dict[str, tuple[Check, ...]] = field(default_factory=dict)
    strict: bool = True

    @classmethod
    def of(cls, checks, where: str = "checks=", strict: bool = True) -> "AnswerChecks":
        if checks is None:
            return cls({}, strict)
        if not isinstance(checks, dict):
            raise ConfigError(f"{where} {USAGE}; got {type(checks).__name__}")
        by_predictor = {}
        for name, functions in checks.items():
            functions = list(functions) if isinstance(functions, (list, tuple)) else [functions]
            for function in functions:
                if not callable(function):
                    raise ConfigError(f"{where}: check {function!r} for predictor {name!r} is not a function; "
                                      f"checks= {USAGE}")
            made = tuple(Check(_name_of(f), f, code_digest(f)) for f in functions)
            if len({c.name for c in made}) < len(made):
                raise ConfigError(f"{where}: predictor {name!r} has two checks named alike; give each its own name")
            if made:
                by_predictor[str(name)] = made
        return cls(by_predictor, strict)

    def __bool__(self) -> bool:
        return bool(self.by_predictor)

    def names(self, predictor: str) -> tuple[str, ...]:
        return tuple(c.name for c in self.by_predictor.get(predictor, ()))

    def validate(self, predictors, where: str = "checks=") -> "AnswerChecks":
        unknown = sorted(set(self.by_predictor) - set(predictors))
        if unknown:
            raise ConfigError(f"{where} names predictor {unknown[0]!r}, which the program lacks; its predictors are "
                              f"{list(predictors)}")
        return self

    def features(self, predictor: str, inputs: dict, outputs: dict) -> list[float] | None:
        """One number per check of `predictor`; None (run time) when one failed: the answer is not trusted."""
        values = []
        for check in self.by_predictor.get(predictor, ()):
            try:
                value = check.function(dict(inputs), dspy.Prediction(**outputs))
                number = finite_number(value)
                if number is None:
                    raise CheckFailed(f"returned {shortened(repr(value))}, not a finite number or a bool")
            except Exception as e:  # noqa: BLE001 - the user's code: named in one line, never a traceback
                why = str(e) if isinstance(e, CheckFailed) else f"raised {type(e).__name__}: {shortened(str(e))}"
                message = (f"check {check.name!r} of predictor {predictor!r} {why} on inputs "
                           f"{shortened(repr(dict(inputs)))}")
                if self.strict:
                    raise CheckFailed(message) from None
                log.warning("tierwise: %s; the answer is not trusted (escalates)", message)
                return None
            values.append(number)
        return values

    def named(self) -> dict[str, list[str]]:
        """Each predictor's check names (what a compile's summary lists)."""
        return {name: list(self.names(name)) for name in self.by_predictor}

    def describe(self) -> dict:
        """What an artifact records: each predictor's check names and code digests (never the code)."""
        return {name: [{"name": c.name, "code": c.code} for c in checks] for name, checks in self.by_predictor.items()}

    def match(self, recorded: dict, needed, where: str) -> list[str]:
        """Check these against an artifact's record (`needed`: the predictors whose policy reads their checks).
        Raises ConfigError when a predictor has checks the compile did not, or a needed one's are missing or
        differ; returns notes of checks whose code changed since the compile."""
        unknown = sorted(set(self.by_predictor) - set(recorded))
        if unknown:
            raise ConfigError(f"{where}: checks= names predictor {unknown[0]!r}, which was compiled without checks; "
                              "recompile with them for its confidence to read them")
        notes = []
        for name in needed:
            expected = [c["name"] for c in recorded.get(name, [])]
            given = list(self.names(name))
            if expected != given:
                hint = (f"pass them: load(path, checks={{{name!r}: [{', '.join(expected)}]}}) or `cli.py run --task` "
                        "with the task file that declares them") if not given else f"got {given}"
                raise ConfigError(f"{where}: predictor {name!r} was compiled with checks {expected}; {hint}")
            changed = [c["name"] for c, now in zip(recorded.get(name, []), self.by_predictor.get(name, ()))
                       if c.get("code") != now.code]
            notes += [f"{where}: check {n!r} of predictor {name!r} changed since the compile" for n in changed]
        return notes


def code_digest(function) -> str:
    return hashlib.sha256(code_fingerprint(function).encode()).hexdigest()[:16]


def _name_of(function) -> str:
    return getattr(function, "__name__", None) or type(function).__name__


def finite_number(value) -> float | None:
    """A bool or a number (numpy's too) as a finite float; None for anything else (text, None, NaN, a list)."""
    if value is None or isinstance(value, (str, bytes)):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def shortened(text: str, width: int = 80) -> str:
    """One line of at most `width` characters (and "..."), for an error that quotes the user's data."""
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[:width] + "..."
