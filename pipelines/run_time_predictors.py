"""Predictors a program builds while it runs, outside the policy: dspy.Refine's feedback step is a
`dspy.Predict(OfferFeedback)` made on each failed attempt, and a program may make its own. Under a policy
each of their calls goes to the tier that gave the request's latest answer (the answer they read, as
Refine's feedback does), or to the top tier when nothing has answered yet: a cheap-only policy stays
cheap, and the search prices them as part of each policy. They go through that tier's engine (cached,
priced, logged, under the compile's budget), and each call is a step of the request's trail, so its cost
counts in the search, the reports and `last_cost_usd`."""

from __future__ import annotations

import contextvars
import dataclasses

import dspy
from dspy.lm15 import response_to_events

from pipelines.answer_budget import answer_budget
from pipelines.dspy_hooks import called_predictor
from pipelines.engine import current_predictor, current_trace
from pipelines.tier_lm import lm_settings
from pipelines.trail import Step, next_call, trail_var

LABEL = "(built at run time)"  # their name in the trail and the ledger
SKIPPED = ("run_time", "failed")  # steps that gave no answer a run-time predictor could be reading
CONFIG_KEYS = ("max_tokens", "temperature", "stop", "logprobs")  # the request settings a tier's LM sets
# The calls of the predictor invocation in progress: dspy asks the engine once per candidate (n=3) with the
# same request, and the engine numbers a repeat within one invocation as the next candidate, not a cache hit.
_invocation: contextvars.ContextVar[tuple] = contextvars.ContextVar("tierwise_run_time_invocation",
                                                                    default=(None, []))


def answering_tier(trail: list | None, tier_names: list[str]) -> str:
    """The tier of the request's latest answer on `trail`; the top tier when there is none yet."""
    for step in reversed(trail or []):
        if step.decision not in SKIPPED and step.tier in tier_names:
            return step.tier
    return tier_names[-1]


def on_tier(request, built_for, tier):
    """`request`, built by `built_for`'s LM, as `tier`'s LM would have built it: its model, and its
    settings wherever the call kept `built_for`'s (a setting the call chose itself stays)."""
    if tier is built_for:
        return request
    mine, theirs = lm_settings(built_for), lm_settings(tier)
    config = request.config
    changes = {key: theirs.get(key) for key in CONFIG_KEYS
               if _same(getattr(config, key), mine.get(key)) and not _same(theirs.get(key), mine.get(key))}
    return dataclasses.replace(request, model=tier.model, config=dataclasses.replace(config, **changes))


def _same(a, b) -> bool:
    return (tuple(a) if isinstance(a, list) else a) == (tuple(b) if isinstance(b, list) else b)


def _invocation_calls() -> list:
    """The engine calls made so far by the predictor call in progress (dspy gives each module call its own
    `caller_modules` list, the same object for all of that call's candidates)."""
    callers = dspy.settings.caller_modules
    owner, calls = _invocation.get()
    if callers is None or owner is not callers:
        calls = []
        _invocation.set((callers, calls))
    return calls


class RunTimeEngine:
    """The run-time LM's engine (the dspy engine protocol): each call on the answering tier's engine,
    and on the request's trail. `runtime` gives the tiers' engines; its LM is built for the top tier."""

    def __init__(self, runtime):
        self.runtime = runtime
        self.tier_names = runtime.catalog.names
        self.tier = runtime.catalog[self.tier_names[-1]]

    def complete(self, request):
        engine = self.runtime.engine(answering_tier(trail_var.get(), self.tier_names))
        request = self._with_answer_budget(on_tier(request, self.tier, engine.tier), engine.tier)
        calls = _invocation_calls()
        start = len(calls)
        tokens = [current_trace.set(calls), current_predictor.set(LABEL)]
        try:
            return engine.complete(request)
        finally:
            current_trace.reset(tokens[0])
            current_predictor.reset(tokens[1])
            self._record(engine, calls[start:])

    @staticmethod
    def _record(engine, calls: list) -> None:
        """Each call on the request's trail and in the ledger as a call of its own (it climbs no ladder)."""
        trail = trail_var.get()
        for call in calls:
            ordinal = next_call(trail, LABEL)
            cut = f"the answer stopped at max_tokens={call.cut_at}" if call.cut_at else ""
            if trail is not None:
                trail.append(Step(LABEL, 0, engine.tier.name, None, None, "run_time",
                                  engine.tier.cost(call.prompt_tokens, call.completion_tokens), cut,
                                  tokens=call.prompt_tokens + call.completion_tokens,
                                  latency_s=call.model_latency_s, call=ordinal))
            if call.record is not None and engine.ledger is not None:
                engine.ledger.annotate(call.record, rung=0, call=ordinal, decision="run_time", error=cut)

    @staticmethod
    def _with_answer_budget(request, tier):
        """The room the calling predictor's outputs need (pipelines.answer_budget), as a rung would get: a
        local tier's own max_tokens (24) bounds one short field, and Refine's feedback writes two."""
        predictor = called_predictor(None)
        budget = answer_budget(predictor, tier) if predictor is not None else None
        if not budget or (request.config.max_tokens or 0) >= budget:
            return request
        return dataclasses.replace(request, config=dataclasses.replace(request.config, max_tokens=budget))

    def stream(self, request):
        return response_to_events(self.complete(request))

    def close(self) -> None:
        pass  # the tiers' own engines are closed with the runtime
