"""What dspy's own modules expect of a predictor, kept true under a policy: an LM to read and copy
(dspy.BestOfN, dspy.Refine), the trace of each call's answer, and a per-request record that threads and
asyncio tasks each see on their own."""

from __future__ import annotations

import contextvars

import dspy

from pipelines.errors import ConfigError


class PolicyLM(dspy.BaseLM):
    """The `lm` of every predictor under a policy. It answers nothing (the policy picks each call's tier);
    it is there so that dspy modules that read a program's LM work: dspy.BestOfN and dspy.Refine take
    `module.get_lm()` and `copy(rollout_id=i, temperature=1.0)` it, and each copy's settings reach the
    ladder as that attempt's sampling settings (sample_settings)."""

    def __init__(self):
        super().__init__(model="tierwise/policy", cache=False)

    def forward(self, *args, **kwargs):
        raise ConfigError("this program runs under a tierwise policy: its predictors' calls go to the tiers the "
                          "policy picks, never to this placeholder LM")


POLICY_LM = PolicyLM()
SAMPLE_SETTINGS = ("rollout_id", "temperature")


def sample_settings(predictor) -> dict:
    """The rollout_id / temperature of a rollout copy of the predictor's LM (dspy.BestOfN, Refine: the policy's
    placeholder, or an LM you set). Only a rollout's: an LM's other settings are for its own model, not the tiers."""
    settings = getattr(getattr(predictor, "lm", None), "kwargs", None) or {}
    if settings.get("rollout_id") is None:
        return {}
    return {k: settings[k] for k in SAMPLE_SETTINGS if settings.get(k) is not None}


def rung_adapter(default):
    """The adapter a rung formats its prompt with: tierwise's, or a module's wrapper of it (dspy.Refine adds
    its hints to each input that way); any other adapter in dspy's settings would drop what tierwise's says."""
    current = dspy.settings.adapter
    return current if isinstance(current, type(default)) else default


def called_predictor(wrapped):
    """The predictor object this call is running on: dspy puts it last in `caller_modules`. A module that
    deep-copies the program (BestOfN, Refine) calls copies that share the wrapped predictor's cascade."""
    callers = dspy.settings.caller_modules or []
    last = callers[-1] if callers else None
    return last if isinstance(last, dspy.Predict) else wrapped


def add_to_dspy_trace(predictor, inputs: dict, prediction) -> None:
    """What dspy.Predict records for each call (BestOfN, Refine and dspy's optimizers read it): the ladder's
    final answer, once."""
    trace = dspy.settings.trace
    if trace is None or dspy.settings.max_trace_size <= 0:
        return
    if len(trace) >= dspy.settings.max_trace_size:
        trace.pop(0)
    trace.append((predictor, {k: v for k, v in inputs.items() if k != "config"}, prediction))


class LastTrail:
    """A context variable, not a thread-local: each thread and each asyncio task sees its own last call.
    A deep copy of the program (dspy.BestOfN, Refine) starts with its own."""

    def __init__(self):
        self._var: contextvars.ContextVar[tuple | list] = contextvars.ContextVar(f"tierwise_last_trail_{id(self)}",
                                                                                 default=())

    def set(self, trail: list) -> None:
        self._var.set(trail)

    def get(self):
        return self._var.get()

    def __deepcopy__(self, memo):
        return LastTrail()
