"""A function's identity for a study name: its source code, or its bytecode where the source cannot be read.
A study scored with one version of a metric or a check must not be resumed with another."""

from __future__ import annotations

import inspect
import json


def code_fingerprint(obj) -> str:
    if obj is None or isinstance(obj, (tuple, list)):
        return json.dumps(obj)
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):
        code = getattr(obj, "__code__", None)
        return repr((code.co_code, code.co_consts)) if code is not None else type(obj).__name__
