"""Predictors a program builds while it runs, outside the policy: dspy.Refine's feedback step is a
`dspy.Predict(OfferFeedback)` made on each failed attempt, and a program may make its own. Under a policy
they go to the top tier, through its engine (cached, priced, logged, under the compile's budget), and each
call is a step of the request's trail, so its cost counts in the search, the reports and `last_cost_usd`.
The policy does not choose their tier: the search never sees them as predictors."""

from __future__ import annotations

import dataclasses

from dspy.lm15 import response_to_events

from pipelines.answer_budget import answer_budget
from pipelines.dspy_hooks import called_predictor
from pipelines.engine import current_predictor, current_trace
from pipelines.trail import Step, next_call, trail_var

LABEL = "(built at run time)"  # their name in the trail and the ledger


class RunTimeEngine:
    """A tier's engine (the dspy engine protocol) that puts each call on the request's trail."""

    def __init__(self, engine):
        self.engine = engine
        self.tier = engine.tier

    def complete(self, request):
        request = self._with_answer_budget(request)
        calls: list = []
        tokens = [current_trace.set(calls), current_predictor.set(LABEL)]
        try:
            return self.engine.complete(request)
        finally:
            current_trace.reset(tokens[0])
            current_predictor.reset(tokens[1])
            self._record(calls)

    def _record(self, calls: list) -> None:
        """Each call on the request's trail and in the ledger as a call of its own (it climbs no ladder)."""
        trail = trail_var.get()
        for call in calls:
            ordinal = next_call(trail, LABEL)
            cut = f"the answer stopped at max_tokens={call.cut_at}" if call.cut_at else ""
            if trail is not None:
                trail.append(Step(LABEL, 0, self.tier.name, None, None, "run_time",
                                  self.tier.cost(call.prompt_tokens, call.completion_tokens), cut,
                                  tokens=call.prompt_tokens + call.completion_tokens,
                                  latency_s=call.record.latency_s if call.record else 0.0, call=ordinal))
            if call.record is not None and self.engine.ledger is not None:
                self.engine.ledger.annotate(call.record, rung=0, call=ordinal, decision="run_time", error=cut)

    def _with_answer_budget(self, request):
        """The room the calling predictor's outputs need (pipelines.answer_budget), as a rung would get: a
        local tier's own max_tokens (24) bounds one short field, and Refine's feedback writes two."""
        predictor = called_predictor(None)
        budget = answer_budget(predictor, self.tier) if predictor is not None else None
        if not budget or (request.config.max_tokens or 0) >= budget:
            return request
        return dataclasses.replace(request, config=dataclasses.replace(request.config, max_tokens=budget))

    def stream(self, request):
        return response_to_events(self.complete(request))

    def close(self) -> None:
        pass  # the tier's own engine is closed with the runtime
