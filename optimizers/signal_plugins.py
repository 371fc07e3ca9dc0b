"""Opt-in, task-specific confidence signals for replay: `--signals NAME,...`.

A plug-in turns (input text, answer text) into numbers the learned confidence reads beside the generic answer
features. Built in: `arithmetic` (GSM8K-style re-checks of a math answer's working, optimizers.arithmetic_checks).
Your own: `path/to/file.py:function` or `package.module:function` (imported from the current folder), a function
`(input: str, answer: str) -> number or bool` - one check, one feature, named by its spec. A verifier any task has
(does the JSON parse, does the code compile, is the choice one of the options) is what these are for.

An artifact records the specs it was fitted with and never imports them itself: `replay apply` of a policy fitted
with your function needs the same `--signals` again, so reading an artifact runs no code it names."""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from pipelines.answer_checks import finite_number, shortened
from pipelines.code_fingerprint import code_fingerprint
from pipelines.errors import ConfigError, DatasetError


def _arithmetic():
    from optimizers.arithmetic_checks import ARITHMETIC_FEATURES, arithmetic_features

    return ARITHMETIC_FEATURES, arithmetic_features


BUILT_IN = {"arithmetic": _arithmetic}  # name -> () -> (feature names, features(input, answer) -> list)


@dataclass(frozen=True)
class Plugin:
    spec: str
    feature_names: tuple[str, ...]
    features: object  # (input, answer) -> list[float]
    fingerprint: str  # what the study name and the artifact keep of it: a changed check is a new study


def parse(text: str | None) -> tuple[str, ...]:
    """`--signals a,b` as specs, each checked (resolved) now: a bad one fails before any work."""
    specs = tuple(s.strip() for s in (text or "").split(",") if s.strip())
    for spec in specs:
        resolve(spec)
    return specs


@functools.lru_cache(maxsize=None)
def resolve(spec: str) -> Plugin:
    if spec in BUILT_IN:
        names, features = BUILT_IN[spec]()
        return Plugin(spec, tuple(names), features, spec)
    where, sep, name = spec.rpartition(":")
    if not sep or not where or not name.isidentifier():
        raise ConfigError(f"unknown signal plug-in {spec!r}: give one of {sorted(BUILT_IN)}, or your own as "
                          "path/to/file.py:function or package.module:function")
    function = getattr(_module(where, spec), name, None)
    if not callable(function):
        raise ConfigError(f"signal plug-in {spec!r}: {where} has no function {name!r}")
    return Plugin(spec, (spec,), _checked(spec, function), code_fingerprint(function))


def _module(where: str, spec: str):
    if where.endswith(".py"):
        path = Path(where)
        if not path.is_file():
            raise ConfigError(f"signal plug-in {spec!r}: no file {where}")
        found = importlib.util.spec_from_file_location(f"tierwise_signals_{path.stem}_{len(sys.modules)}", path)
        module = importlib.util.module_from_spec(found)
        sys.modules[found.name] = module  # as an import would: a dataclass or pickle in it looks itself up there
        _run(lambda: found.loader.exec_module(module), spec, "importing it")
        return module
    if os.getcwd() not in sys.path:  # as `python -m` would find it: from the folder the command runs in
        sys.path.insert(0, os.getcwd())
    return _run(lambda: importlib.import_module(where), spec, "importing it")


def _run(step, spec: str, doing: str):
    try:
        return step()
    except Exception as e:  # noqa: BLE001 - the user's code: any failure is named in one line
        raise ConfigError(f"signal plug-in {spec!r}: {type(e).__name__} while {doing}: {e}") from None


def _checked(spec: str, function):
    """The user's check as a feature function: one finite number per answer, or a one-line error naming the
    input it failed on (a crash in someone's verifier must not be a traceback, nor a silent 0)."""

    def features(inputs: str, answer: str) -> list[float]:
        try:
            value = function(inputs, answer)
        except Exception as e:  # noqa: BLE001
            raise DatasetError(f"signal plug-in {spec!r} raised {type(e).__name__}: {e} on input "
                               f"{_start(inputs)} (answer {_start(answer)})") from None
        number = finite_number(value)
        if number is None:
            raise DatasetError(f"signal plug-in {spec!r} returned {shortened(repr(value), 60)} on input "
                               f"{_start(inputs)}: expected a finite number or a bool")
        return [number]

    return features


def _start(text: str) -> str:
    return repr(shortened(text, 60))
