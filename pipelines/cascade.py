"""Cascade execution: wrap an unmodified DSPy program's predictors so each call climbs its ladder.

Each predictor call runs its start tier, scores the answer's confidence, and escalates while the
score is below that rung's threshold and a higher rung exists. A rung that errors, times out or
returns an unparsable answer has failed: the next rung answers; if the top fails, the best earlier
answer stands; if every rung failed, the catalog's other tiers are tried (deterministic fallback);
only when all of them fail does the call raise, naming each failure.

Where a rung's answer comes from is pluggable (`RungSource`): live calls through the runtime here;
the optimizer plugs in its recorded outcome table, so trials and production share this logic.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import json
import uuid
from dataclasses import dataclass, field
from typing import Callable

import dspy

from pipelines import confidence as conf
from pipelines.answer_budget import MORE_TOKENS, answer_budget
from pipelines.dspy_hooks import (POLICY_LM, LastTrail, add_to_dspy_trace, called_predictor, rung_adapter,
                                  sample_settings)
from pipelines.engine import current_failures, current_predictor, current_request_id, current_sample, current_trace
from pipelines.errors import (AllRungsFailed, BudgetExceeded, ConfigError, InputError, LedgerError, StoreError,
                             TierwiseError, raise_found)
from pipelines.policy import Policy, PredictorPolicy
from pipelines.routing import route_text, start_rung
from pipelines.trail import Step, next_call, trail_var
from pipelines.semantic_cache import DEFAULT_MAX_ENTRIES, SEMANTIC_TIER, SemanticCache, compile_patterns, guard_key, signature_key

AGREEMENT_SAMPLES = 2


@dataclass
class RungOutcome:
    """One rung's answer (or failure) with what it cost and every confidence signal it has."""

    tier: str
    outputs: dict | None  # None when the rung failed
    error: str = ""
    scores: dict = field(default_factory=dict)  # estimator -> value in [0, 1] or None
    features: list = field(default_factory=list)
    cost_usd: float = 0.0  # the calls' price (what it costs in production, cached or not)
    paid_usd: float = 0.0  # what was actually spent now (0 on cache hits)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0  # the models' time on its calls (as in production, cached or not)
    failed_text: str = ""  # what the tier wrote when its answer was not usable (first 200 characters)
    prediction: object = None  # live only: the dspy.Prediction
    records: list = field(default_factory=list)  # live only: ledger records of its calls
    candidates: list = field(default_factory=list)  # a predictor asked for n > 1: the other candidates' outputs

    @property
    def ok(self) -> bool:
        return self.outputs is not None

    @property
    def calls(self) -> int:
        """The LM calls it took: one per candidate."""
        return 1 + len(self.candidates)

    def to_dict(self) -> dict:
        keys = ("tier", "outputs", "error", "scores", "features", "cost_usd", "paid_usd",
                "prompt_tokens", "completion_tokens", "latency_s", "failed_text")
        return {**{k: getattr(self, k) for k in keys}, **({"candidates": self.candidates} if self.candidates else {})}

    def as_prediction(self, signature) -> dspy.Prediction:
        """The answer as the predictor returns it: every candidate when it asked for several."""
        if self.prediction is not None:
            return self.prediction
        if self.candidates:
            return dspy.Prediction.from_completions([self.outputs, *self.candidates], signature=signature)
        return dspy.Prediction(**self.outputs)

    @classmethod
    def from_dict(cls, data: dict) -> "RungOutcome":
        return cls(**data)


RungSource = Callable[[str, dspy.Predict, str, dict, str], RungOutcome]


def without_logprobs(prediction, signature) -> None:
    """tierwise asks local tiers for token log-probabilities (its confidence reads them from the call, not
    the prediction); dspy also puts them on the prediction as a `logprobs` field, which the user's
    prediction, and a demo bootstrapped from it, must not carry. A signature's own `logprobs` field stays."""
    if "logprobs" in signature.output_fields:
        return
    if "logprobs" in prediction:
        del prediction["logprobs"]
    completions = getattr(prediction, "_completions", None)
    if completions is not None:
        completions._completions.pop("logprobs", None)


def inputs_key(kwargs: dict) -> str:
    return hashlib.sha256(json.dumps(kwargs, sort_keys=True, default=str).encode()).hexdigest()[:24]


def score_of(outcome: RungOutcome, estimator: str, scorer=None, prior: float | None = None,
             previous: RungOutcome | None = None) -> float | None:
    """`prior`: the input router's predicted P(right) for this tier, which a learned scorer fitted with
    it (scorer.uses_prior) reads beside the answer's own features. `previous`: the rung that answered
    this call before (the learned scorer reads whether the two answers agree; the committee is that agreement)."""
    if estimator == "committee":
        return committee_score(outcome, previous)
    if estimator == "learned":
        if scorer is None or not outcome.features:
            return None
        features = list(outcome.features) + conf.ladder_features(outcome.outputs,
                                                                   previous.outputs if previous else None)
        # A scorer fitted before a feature was added reads the features it knows (they are appended); one
        # without n_answer_features_ (replay's) builds its own full feature rows.
        features = features[:getattr(scorer, "n_answer_features_", len(outcome.features))]
        if getattr(scorer, "uses_prior", False):
            features.append(0.5 if prior is None else prior)
        return float(scorer.predict_proba([features])[0])
    return outcome.scores.get(estimator)


def committee_score(outcome: RungOutcome, previous: RungOutcome | None) -> float:
    """1.0 when this rung's answer reads the same as the previous answered rung's (normalized: the
    non-reasoning output fields, stripped and lowercased), else 0.0; 0.0 with nothing to compare."""
    return float(previous is not None and conf.same_answer(outcome.outputs, previous.outputs))


def fallback_order(ladder: list[str], tier_names: list[str]) -> list[str]:
    """Tiers outside the ladder: those above the start tier first (nearest first), then those below."""
    start = tier_names.index(ladder[0]) if ladder[0] in tier_names else 0
    rest = [t for t in tier_names if t not in ladder]
    above = [t for t in rest if tier_names.index(t) > start]
    below = [t for t in reversed(rest) if tier_names.index(t) < start]
    return above + below


def run_ladder(name: str, pp: PredictorPolicy, answer: Callable[[str], RungOutcome],
               tier_names: list[str], use_fallback: bool = True, scorer=None,
               predicted: list[float] | None = None, priors: dict | None = None) -> tuple[RungOutcome, list]:
    """Climb one predictor's ladder. Returns the final outcome and [(outcome, Step), ...].

    A routed policy (pp.route) starts at the rung pipelines.routing.start_rung picks from `predicted`
    (the router's score for each rung's tier); with estimator "none" that rung's answer stands."""
    trail: list[tuple[RungOutcome, Step]] = []
    best_so_far = None
    previous = None  # the last rung that answered (the committee estimator compares with it)
    last = len(pp.ladder) - 1
    start = 0
    if pp.route is not None:
        if predicted is None:
            raise ConfigError(f"predictor {name!r}: a routed policy needs the router's predictions")
        start = start_rung(pp.route, predicted)
    for i, tier in enumerate(pp.ladder):
        if i < start:
            continue
        try:
            outcome = answer(tier)
        except BudgetExceeded as error:  # the rungs already paid for are still recorded by the caller
            error.trail = trail
            raise
        threshold = pp.thresholds[i] if i < last else None
        if not outcome.ok:
            trail.append((outcome, _step(name, i, outcome, None, threshold, "failed")))
            continue
        prior = (priors or {}).get(tier)
        score = score_of(outcome, pp.estimator, scorer, prior, previous) if pp.estimator != "none" else None
        previous = outcome
        if i == last or pp.estimator == "none" or (score is not None and score >= threshold):
            trail.append((outcome, _step(name, i, outcome, score, threshold, "accepted")))
            return outcome, trail
        trail.append((outcome, _step(name, i, outcome, score, threshold, "escalated")))
        best_so_far = len(trail) - 1
    if best_so_far is not None:  # the top rung failed: the best earlier answer stands
        trail[best_so_far][1].decision = "fallback"
        return trail[best_so_far][0], trail
    if use_fallback:
        for tier in fallback_order(pp.ladder, tier_names):
            outcome = answer(tier)
            decision = "fallback" if outcome.ok else "failed"
            trail.append((outcome, _step(name, -1, outcome, None, None, decision)))
            if outcome.ok:
                return outcome, trail
    failures = "; ".join(f"{o.tier}: {o.error}" for o, _ in trail)
    error = AllRungsFailed(f"predictor {name!r}: every tier failed ({failures})")
    error.trail = trail  # failed calls still cost money: the caller records them
    raise error


def _step(name, rung, outcome, score, threshold, decision) -> Step:
    return Step(name, rung, outcome.tier, score, threshold, decision, outcome.cost_usd, outcome.error,
                outcome.prompt_tokens + outcome.completion_tokens, outcome.latency_s)


# --- live rungs: real calls through the runtime --------------------------------------------------


class LiveRungs:
    """Answers a rung by calling the predictor on the tier's LM (disk-cached, priced, logged)."""

    def __init__(self, runtime):
        self.runtime = runtime

    def __call__(self, name: str, predictor: dspy.Predict, tier: str, kwargs: dict, estimator: str) -> RungOutcome:
        from pipelines.runtime import ADAPTER

        lm = self.runtime.lm(tier)
        kwargs = dict(kwargs)
        asked = dict(kwargs.pop("config", None) or {})  # call-time settings: predictor(..., config={...})
        rollout = asked.pop("rollout_id", None)  # a distinct sample: its own cache entry (dspy's meaning)
        budget = None if "max_tokens" in asked else answer_budget(predictor, self.runtime.catalog[tier])
        call_config = {**({"max_tokens": budget} if budget else {}), **asked}
        config = {"config": call_config} if call_config else {}
        trace: list = []
        failures: list = []
        tokens = [current_trace.set(trace), current_predictor.set(name),
                  current_sample.set(f"rollout-{rollout}") if rollout is not None else None,
                  current_failures.set(failures)]
        try:
            # trace=None: dspy's trace gets the ladder's final answer (CascadeForward), not every rung's.
            # send_stream=None: under dspy.streamify a rung's tokens must not reach the stream before its
            # confidence is known (an escalated answer would be shown, then replaced); the prediction is.
            with dspy.context(adapter=rung_adapter(ADAPTER), trace=None, send_stream=None):
                prediction = _original_forward(predictor)(lm=lm, **config, **kwargs)
                without_logprobs(prediction, predictor.signature)
                outputs = {k: prediction.get(k) for k in predictor.signature.output_fields}
                candidates = [{k: prediction.completions[k][i] for k in outputs}
                              for i in range(1, len(prediction.completions))]
                fields = [k for k in outputs if k not in conf.REASONING_FIELDS]
                error = ""
                if any(outputs[k] is None for k in fields):
                    raise ValueError(f"missing output fields {[k for k in fields if outputs[k] is None]}")
                if estimator == "agreement":
                    agree = self._agreement(predictor, lm, {**config, **kwargs}, outputs)
        except Exception as e:  # noqa: BLE001 - any failure of a rung hands over to the next one
            _reraise_budget(e)
            prediction, outputs, candidates = None, None, []
            error = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
            cut = next((c.cut_at for c in trace if c.cut_at), None)
            if cut:
                error = f"{error.rstrip()} (the answer stopped at max_tokens={cut}: {MORE_TOKENS})"
        finally:
            current_trace.reset(tokens[0])
            current_predictor.reset(tokens[1])
            if tokens[2] is not None:
                current_sample.reset(tokens[2])
            current_failures.reset(tokens[3])
        tier_obj = self.runtime.catalog[tier]
        outcome = RungOutcome(
            tier=tier, outputs=outputs, error=error, prediction=prediction, candidates=candidates,
            cost_usd=sum(tier_obj.cost(c.prompt_tokens, c.completion_tokens) for c in trace),
            paid_usd=sum(c.record.cost_usd for c in trace),
            prompt_tokens=sum(c.prompt_tokens for c in trace),
            completion_tokens=sum(c.completion_tokens for c in trace),
            latency_s=sum(c.model_latency_s for c in trace),
            records=[c.record for c in trace] + failures,
            failed_text=trace[-1].text[:200] if outputs is None and trace else "",
        )
        if outputs is not None:
            first = trace[0] if trace else None
            scores = conf.logprob_scores(first.text, first.logprobs, fields) if first else {}
            scores["self_report"] = conf.self_reported(outputs)
            if estimator == "agreement":
                scores["agreement"] = agree
            outcome.scores = scores
            outcome.features = answer_features(self.runtime.catalog, predictor, tier, kwargs, outputs, scores,
                                               self.runtime.checks, name)
        return outcome

    def _agreement(self, predictor, lm, kwargs, outputs) -> float:
        same = 0
        base = current_sample.get()  # a rollout's agreement samples are its own
        for i in range(1, AGREEMENT_SAMPLES + 1):
            token = current_sample.set(f"{base}/{i}" if base else i)
            try:
                sample = _original_forward(predictor)(lm=lm, **{**kwargs, "config": {
                    **kwargs.get("config", {}), "temperature": 0.7}})
                same += conf.same_answer({k: sample.get(k) for k in outputs}, outputs)
            except Exception:  # noqa: BLE001 - a failed sample simply does not agree
                pass
            finally:
                current_sample.reset(token)
        return same / AGREEMENT_SAMPLES


def answer_features(catalog, predictor, tier: str, kwargs: dict, outputs: dict, scores: dict,
                    checks=None, name: str = "") -> list[float]:
    """The learned scorer's features of one answer (pipelines.confidence.ANSWER_FEATURES), its demos included,
    then the predictor `name`'s own checks (pipelines.answer_checks); none at all when a check failed at run
    time (no confidence: the answer escalates)."""
    rank = catalog.rank(tier) / max(len(catalog) - 1, 1)
    demos = conf.demo_input_words(getattr(predictor, "demos", ()), predictor.signature.input_fields)
    own = conf.features(kwargs, outputs, scores, rank, demos)
    checked = checks.features(name, kwargs, outputs) if checks else []
    return [] if checked is None else own + checked


def _reraise_budget(error: BaseException) -> None:
    """A budget stop (or a ledger that cannot be written, a corrupted store) is not a failed rung: it
    must stop the whole run, even when dspy wrapped it."""
    raise_found(error, (BudgetExceeded, LedgerError, StoreError))


# --- wrapping a program -------------------------------------------------------------------------


def _original_forward(predictor):
    return type(predictor).forward.__get__(predictor)


class CascadeForward:
    """Replaces one predictor's `forward`: the predictor object, its name and state stay as they are."""

    def __deepcopy__(self, memo):
        # dspy.BestOfN / Refine deep-copy the program per attempt: the copies climb this same ladder
        return self

    def __init__(self, name, predictor, pp: PredictorPolicy, source: RungSource, tier_names, fallback, scorer, ledger,
                 router=None, semantic: SemanticCache | None = None):
        self.name, self.predictor, self.pp = name, predictor, pp
        self.source, self.tier_names, self.fallback = source, tier_names, fallback
        self.scorer, self.ledger, self.router = scorer, ledger, router
        self.semantic = semantic if pp.semantic is not None else None
        if self.semantic is not None:
            self.space = f"{name}|{signature_key(predictor)}"
            self.patterns = compile_patterns(pp.semantic.get("entities", ()), f"policy for predictor {name!r}")

    def _priors(self, inputs: dict) -> dict | None:
        """The router's P(right) per tier for these inputs, when the policy or its scorer reads them."""
        needed = self.pp.route is not None or getattr(self.scorer, "uses_prior", False)
        if not needed:
            return None
        if self.router is None:
            raise ConfigError(f"predictor {self.name!r}: its policy reads an input router, and none was given")
        return self.router.predict_inputs(inputs)

    def __call__(self, **kwargs):
        kwargs.pop("lm", None)  # the policy decides the tier
        called = called_predictor(self.predictor)
        inputs = {k: v for k, v in kwargs.items() if k in self.predictor.signature.input_fields}
        self._check_inputs(inputs)
        extra = {k: v for k, v in kwargs.items() if k not in inputs}
        sampling = sample_settings(called)  # dspy.BestOfN / Refine: lm.copy(rollout_id=i, temperature=1.0)
        if sampling or extra.get("config"):
            extra["config"] = {**sampling, **(extra.get("config") or {})}
        request = None
        call = next_call(trail_var.get(), self.name)
        if self.semantic is not None and "rollout_id" not in extra.get("config", {}):
            # the first "rung": an earlier answer to a request close enough (never for a sample asked to differ)
            request = (route_text(inputs), guard_key(route_text(inputs), self.patterns))
            found = self._lookup(*request, call)
            if found.hit:
                return RungOutcome(found.entry.tier, found.entry.outputs,
                                   candidates=found.entry.candidates).as_prediction(self.predictor.signature)

        scored = set(self.pp.ladder[:-1])  # only rungs that may escalate need a confidence

        def answer(tier):
            # "none" for the top rung and catalog fallbacks: their confidence decides nothing, and
            # the agreement estimator would pay for extra samples on the dearest tier for it.
            estimator = self.pp.estimator if tier in scored else "none"
            return self.source(self.name, self.predictor, tier, {**inputs, **extra}, estimator)

        priors = self._priors(inputs)
        predicted = [priors[t] for t in self.pp.ladder] if self.pp.route is not None else None
        try:
            outcome, trail = run_ladder(self.name, self.pp, answer, self.tier_names, self.fallback, self.scorer,
                                        predicted, priors)
        except (AllRungsFailed, BudgetExceeded) as error:
            self._record(getattr(error, "trail", []), call)
            raise
        self._record(trail, call)
        if request is not None and outcome.ok:
            self.semantic.store(self.space, *request, outcome.tier, self._rank(outcome.tier), outcome.outputs,
                                sum(step.cost_usd for _, step in trail), current_request_id.get() or "",
                                outcome.candidates)
        prediction = outcome.as_prediction(self.predictor.signature)
        add_to_dspy_trace(called, {**inputs, **extra}, prediction)
        return prediction

    def _check_inputs(self, inputs: dict) -> None:
        """A predictor called directly (`program.classify(message=None)`) or by the program's own code with a
        value its signature cannot take: dspy would only warn and pay for the call."""
        from pipelines.tasks import signature_input_problem

        problem = signature_input_problem(self.predictor.signature, inputs)
        if problem:
            raise InputError(f"predictor {self.name!r}: {problem}; no call was made")

    def _rank(self, tier: str) -> int:
        return self.tier_names.index(tier) if tier in self.tier_names else -1

    def _lookup(self, text: str, guard: tuple, call: int = 0):
        """Same predictor and signature (the space), same entities (the guard), an answer from the
        ladder's start tier or a better one; a hit at or above the policy's threshold."""
        found = self.semantic.lookup(self.space, text, guard, self._rank(self.pp.ladder[0]),
                                     float(self.pp.semantic["threshold"]))
        decision = "semantic_hit" if found.hit else "semantic_miss"
        matched = found.entry.request_id if found.entry is not None else ""
        sink = trail_var.get()
        if sink is not None:
            sink.append(Step(self.name, -1, SEMANTIC_TIER, found.similarity, found.threshold, decision, 0.0,
                             latency_s=found.latency_s, matched=matched, call=call,
                             matched_text=found.entry.text if found.entry is not None else ""))
        if self.ledger is not None:
            from pipelines.embeddings import MODEL_NAME
            from pipelines.ledger import CallRecord

            self.ledger.add(CallRecord(
                SEMANTIC_TIER, MODEL_NAME, self.name, 0, 0, 0.0,
                found.entry.cost_usd if found.hit else 0.0, found.latency_s, found.hit,
                request_id=current_request_id.get() or "", estimator="semantic", confidence=found.similarity,
                threshold=found.threshold, decision=decision, similarity=found.similarity, matched_request=matched,
                call=call,
                matched_text=found.entry.text if found.entry is not None else ""))
        return found

    def _record(self, trail, call: int = 0) -> None:
        """Each rung's step goes to the call's trail, and its decision onto its ledger records."""
        sink = trail_var.get()
        for rung_outcome, step in trail:
            step.call = call
            if sink is not None:
                sink.append(step)
            if self.ledger is not None:
                for record in rung_outcome.records:
                    self.ledger.annotate(record, rung=step.rung, call=call, estimator=self.pp.estimator,
                                         confidence=step.confidence, threshold=step.threshold,
                                         decision=step.decision, error=step.error)


def apply_policy(program: dspy.Module, policy: Policy, source: RungSource, tier_names: list[str],
                 scorers: dict | None = None, ledger=None, routers: dict | None = None,
                 semantic_dir=None) -> dspy.Module:
    """Wrap every named predictor of `program` (in place) with its ladder from `policy`. A predictor whose
    policy has a semantic cache gets a fresh one (kept under `semantic_dir`/<predictor> when given)."""
    names = [name for name, _ in program.named_predictors()]
    missing = [n for n in names if n not in policy.predictors]
    if missing:
        raise ConfigError(f"policy has no entry for predictors {missing}; it covers {list(policy.predictors)}")
    for name, predictor in program.named_predictors():
        settings = policy[name].semantic
        semantic = None if settings is None else SemanticCache(
            settings.get("ttl_s"), int(settings.get("max_entries", DEFAULT_MAX_ENTRIES)),
            None if semantic_dir is None else f"{semantic_dir}/{name}")
        cascade = CascadeForward(name, predictor, policy[name], source, tier_names, policy.fallback,
                                 (scorers or {}).get(name), ledger, (routers or {}).get(name), semantic)
        predictor.forward = cascade
        predictor.aforward = AsyncCascadeForward(cascade)  # `await predictor.acall(...)` climbs the same ladder
        if predictor.lm is None:
            predictor.lm = POLICY_LM
    return program


class AsyncCascadeForward:
    """Replaces one predictor's `aforward`: the ladder runs in a worker thread (the engine's calls are
    blocking), with the caller's context copied in, so the request's trail and dspy's settings carry over.
    Without it dspy's own aforward would call its default LM and skip the policy."""

    def __init__(self, cascade: CascadeForward):
        self.cascade = cascade

    def __deepcopy__(self, memo):
        return self

    async def __call__(self, **kwargs):
        return await asyncio.to_thread(self.cascade, **kwargs)


TRAIL_ATTR = "_tierwise_trail"  # a private attribute: dspy keeps it out of the prediction's fields


def trail_of(prediction) -> list[Step]:
    """The tier trail of the request that returned `prediction` (one row of `program.batch(...)`, say)."""
    return list(getattr(prediction, TRAIL_ATTR, ()))


def cost_of(prediction) -> float:
    return sum(step.cost_usd for step in trail_of(prediction))


def _with_trail(prediction, trail: list[Step]):
    try:
        setattr(prediction, TRAIL_ATTR, trail)
    except (AttributeError, TypeError):  # a forward returning a str, tuple, ...: last_trail still has it
        pass
    return prediction


class _BatchHandle:
    """The compiled program as a batch row calls it; dspy logs a failed row with the repr of its callable."""

    def __init__(self, program):
        self._program = program

    def __call__(self, **inputs):
        return self._program(**inputs)

    def __repr__(self) -> str:
        return f"<tierwise compiled {type(self._program.program).__name__}>"


class CompiledProgram(dspy.Module):
    """A user's program with its policy applied. Calling it returns the program's prediction; the
    tier trail and cost of the last call (in this thread, or this asyncio task for `await acall(...)`)
    are on `last_trail` / `last_cost_usd`, and each prediction's on `trail_of(prediction)`. After
    `batch(...)`, `last_trail` holds every call of the batch."""

    def __init__(self, program: dspy.Module, policy: Policy, runtime, scorers: dict | None = None,
                 source: RungSource | None = None, routers: dict | None = None, semantic_dir=None):
        super().__init__()
        self.program = program
        self.policy = policy
        self.runtime = runtime
        self.ledger = runtime.ledger if runtime is not None else None
        apply_policy(program, policy, source or LiveRungs(runtime), runtime.catalog.names if runtime else [],
                     scorers, self.ledger, routers, semantic_dir)
        self._last_trail = LastTrail()

    def __getattr__(self, name):
        """What the wrapped program has (`compiled.classify.demos`, your own attributes), as a DSPy optimizer's
        result is your program: reached only when the wrapper itself has no such attribute."""
        program = self.__dict__.get("program")
        if program is None or name.startswith("__"):  # while copying or unpickling: no program yet
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return getattr(program, name)

    @contextlib.contextmanager
    def _request(self):
        """One request: a fresh trail and request id for its calls; the trail is `last_trail` after."""
        trail: list[Step] = []
        tokens = [trail_var.set(trail), current_request_id.set(uuid.uuid4().hex[:12])]
        try:
            with self.runtime.program_settings() if self.runtime is not None else contextlib.nullcontext():
                yield trail
        finally:
            trail_var.reset(tokens[0])
            current_request_id.reset(tokens[1])
            self._last_trail.set(trail)

    def _check_inputs(self, kwargs: dict) -> None:
        """dspy only warns on an input of the wrong type and the request is paid for anyway; `run` refuses it."""
        from pipelines.tasks import input_type_problem

        problem = input_type_problem(self.program, kwargs)
        if problem:
            raise InputError(f"{type(self.program).__name__}: {problem}; no call was made")

    def _keywords(self, args: tuple, kwargs: dict) -> dict:
        """Positional inputs named as the program's own `forward` (or `aforward`) names them: `program("text")`
        works on the compiled program as on yours."""
        if not args:
            return kwargs
        from pipelines.programs import entry_point

        try:
            bound = inspect.signature(entry_point(type(self.program))).bind(self.program, *args, **kwargs)
        except TypeError as e:
            raise InputError(f"{type(self.program).__name__}: {e}; no call was made") from None
        params, named = bound.signature.parameters, {}
        for name, value in list(bound.arguments.items())[1:]:  # after self
            kind = params[name].kind
            if kind is inspect.Parameter.VAR_POSITIONAL and value:
                raise InputError(f"{type(self.program).__name__}: its forward takes *{name}; pass inputs by name")
            if kind is inspect.Parameter.VAR_KEYWORD:
                named.update(value)
            elif kind is not inspect.Parameter.VAR_POSITIONAL:
                named[name] = value
        return named

    def forward(self, *args, **kwargs):
        from pipelines.programs import call_program

        kwargs = self._keywords(args, kwargs)
        self._check_inputs(kwargs)
        with self._request() as trail:
            return _with_trail(call_program(self.program, **kwargs), trail)

    async def aforward(self, *args, **kwargs):
        """`await program.acall(...)`: the program's own `aforward` when it has one (its predictors'
        `acall`s climb their ladders), else its `forward` in a worker thread."""
        kwargs = self._keywords(args, kwargs)
        self._check_inputs(kwargs)
        with self._request() as trail:
            if callable(getattr(self.program, "aforward", None)):
                return _with_trail(await self.program.acall(**kwargs), trail)
            return _with_trail(await asyncio.to_thread(self.program, **kwargs), trail)

    def batch(self, examples, num_threads=None, max_errors=None, return_failed_examples=False, **kwargs):
        """dspy's `batch`. Its rows run in worker threads, each with its own `last_trail`; here the
        batch is the last call: `last_trail` / `last_cost_usd` hold all of its calls, row by row. dspy turns a
        row's exception into a None row; tierwise's own stops (a spend cap reached, an input of the wrong
        type) are raised instead, as a call raises them. dspy logs each failed row as `Error for (program,
        inputs)`: the rows run through a handle whose repr is one line, not the whole program's."""
        from dspy.predict.parallel import Parallel

        pairs = [(_BatchHandle(self), example.inputs()) for example in examples]
        out = Parallel(num_threads=num_threads, max_errors=max_errors, return_failed_examples=True,
                       **kwargs).forward(pairs)
        results, _, errors = out
        ours = next((e for e in errors if isinstance(e, TierwiseError) and not isinstance(e, AllRungsFailed)), None)
        if ours is not None:
            ours.results = results  # the rows that were answered (paid for) before the stop: None for the others
            raise ours
        self._last_trail.set([step for prediction in results if prediction is not None
                              for step in trail_of(prediction)])
        return out if return_failed_examples else results

    @property
    def last_trail(self) -> list[Step]:
        return list(self._last_trail.get())

    @property
    def last_cost_usd(self) -> float:
        return sum(step.cost_usd for step in self.last_trail)

    def named_parameters(self):
        """The wrapped program's names (`judge`, not `program.judge`): those the policy, the artifact and
        the reports use, and the keys of the program's own `dump_state()` (also when the program was
        compiled by a DSPy optimizer first, which dspy would otherwise skip as frozen)."""
        return self.program.named_parameters()

    def load(self, path, *args, **kwargs):
        """dspy's `program.load(path)` reads dspy's own JSON; a tierwise artifact is loaded by pipelines.load."""
        raise ConfigError(f"{path}: a tierwise artifact loads with pipelines.load({str(path)!r}, "
                          "program=YourProgram()), not program.load (dspy's own format)")

    def save(self, path, save_program: bool = False):
        """Write the compiled artifact (tierwise's JSON, never a pickle) that `pipelines.load` reads.
        Set by pipelines.artifact, which writes it: `artifact` (the body) and `write_artifact(body, path)`."""
        if save_program:
            raise ValueError("tierwise artifacts never pickle a program; load(path, program=...) rebuilds it")
        if getattr(self, "write_artifact", None) is None:
            raise ValueError("this program was not compiled into an artifact: nothing to save")
        return self.write_artifact(self.artifact, path)
