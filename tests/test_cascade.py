"""Cascade execution with scripted fake tiers: when it escalates, how it falls back, what the ledger
and the tier trail say, and that it wraps real DSPy programs (several predictors, nested modules,
ChainOfThought, threads) without rewriting them."""

from __future__ import annotations

import asyncio
import logging
import math
import re
import threading
from concurrent.futures import ThreadPoolExecutor

import dspy
import numpy as np
import pytest

from conftest import answer, fake_catalog, make_runtime, user_text
from pipelines import confidence as conf
from pipelines.cascade import CompiledProgram, RungOutcome, fallback_order, run_ladder
from pipelines.confidence import LogisticScorer
from pipelines.errors import AllRungsFailed, ConfigError, InputError
from pipelines.policy import Policy, PredictorPolicy

# --- run_ladder on its own: the decision logic, exact ------------------------------------------


def source(scores=None, failing=(), calls=None):
    """answer(tier) with logprob_mean = scores[tier]; tiers in `failing` fail."""
    calls = [] if calls is None else calls

    def answer_tier(tier):
        calls.append(tier)
        if tier in failing:
            return RungOutcome(tier, None, error=f"boom on {tier}")
        return RungOutcome(tier, {"answer": tier}, scores={"logprob_mean": (scores or {}).get(tier)},
                           cost_usd=0.001)

    return answer_tier, calls


def ladder(tiers, thresholds=(), estimator="logprob_mean"):
    return PredictorPolicy(list(tiers), estimator if len(tiers) > 1 else "none", list(thresholds))


TIERS = ["a", "b", "c", "d"]


def test_one_rung_accepts_whatever_it_gets():
    answer_tier, calls = source({"a": 0.01})
    outcome, trail = run_ladder("p", ladder(["a"]), answer_tier, TIERS)
    assert outcome.tier == "a" and calls == ["a"]
    assert [(s.tier, s.decision, s.confidence, s.threshold) for _, s in trail] == [("a", "accepted", None, None)]


@pytest.mark.parametrize("score, expected_tier, expected_calls", [
    (0.5999, "b", ["a", "b"]),  # below the threshold: escalate
    (0.6, "a", ["a"]),  # equal: accept
    (0.6001, "a", ["a"]),
    (None, "b", ["a", "b"]),  # no confidence signal: escalate
])
def test_two_rungs_escalate_exactly_below_threshold(score, expected_tier, expected_calls):
    answer_tier, calls = source({"a": score, "b": 0.1})
    outcome, trail = run_ladder("p", ladder(["a", "b"], [0.6]), answer_tier, TIERS)
    assert outcome.tier == expected_tier and calls == expected_calls
    assert trail[0][1].confidence == score and trail[0][1].threshold == 0.6
    assert trail[0][1].decision == ("accepted" if expected_tier == "a" else "escalated")
    assert trail[-1][1].decision == "accepted"


def test_three_rungs_each_with_its_own_threshold():
    pp = ladder(["a", "b", "c"], [0.8, 0.6])
    answer_tier, calls = source({"a": 0.7, "b": 0.6, "c": 1.0})
    outcome, trail = run_ladder("p", pp, answer_tier, TIERS)
    assert outcome.tier == "b" and calls == ["a", "b"]
    assert [(s.rung, s.decision, s.threshold) for _, s in trail] == [(0, "escalated", 0.8), (1, "accepted", 0.6)]
    answer_tier, calls = source({"a": 0.1, "b": 0.2, "c": 0.0})
    outcome, trail = run_ladder("p", pp, answer_tier, TIERS)
    assert outcome.tier == "c" and calls == ["a", "b", "c"]
    assert [s.decision for _, s in trail] == ["escalated", "escalated", "accepted"]
    assert [s.threshold for _, s in trail] == [0.8, 0.6, None]


def test_failed_rung_hands_over_to_the_next():
    answer_tier, calls = source({"b": 0.0, "c": 0.9}, failing={"a"})
    outcome, trail = run_ladder("p", ladder(["a", "b", "c"], [0.9, 0.5]), answer_tier, TIERS)
    assert outcome.tier == "c" and calls == ["a", "b", "c"]
    assert [s.decision for _, s in trail] == ["failed", "escalated", "accepted"]
    assert trail[0][1].error == "boom on a"


def test_top_rung_failure_keeps_the_best_earlier_answer():
    answer_tier, calls = source({"a": 0.1, "b": 0.2}, failing={"c"})
    outcome, trail = run_ladder("p", ladder(["a", "b", "c"], [0.9, 0.9]), answer_tier, TIERS)
    assert outcome.tier == "b" and calls == ["a", "b", "c"]  # no catalog fallback needed
    assert [s.decision for _, s in trail] == ["escalated", "fallback", "failed"]


def test_catalog_fallback_when_every_rung_failed():
    assert fallback_order(["b", "c"], TIERS) == ["d", "a"]  # above the start tier first, then below
    assert fallback_order(["c"], TIERS) == ["d", "b", "a"]
    answer_tier, calls = source({"d": 0.0}, failing={"b", "c"})
    outcome, trail = run_ladder("p", ladder(["b", "c"], [0.5]), answer_tier, TIERS)
    assert outcome.tier == "d" and calls == ["b", "c", "d"]
    assert [(s.tier, s.rung, s.decision) for _, s in trail] == [("b", 0, "failed"), ("c", 1, "failed"),
                                                                 ("d", -1, "fallback")]


def test_every_tier_failed_raises_naming_each_failure():
    answer_tier, calls = source(failing=set(TIERS))
    with pytest.raises(AllRungsFailed) as err:
        run_ladder("classify", ladder(["b", "c"], [0.5]), answer_tier, TIERS)
    assert calls == ["b", "c", "d", "a"]
    message = str(err.value)
    assert "predictor 'classify'" in message
    for tier in TIERS:
        assert f"{tier}: boom on {tier}" in message
    answer_tier, calls = source(failing=set(TIERS))
    with pytest.raises(AllRungsFailed):
        run_ladder("p", ladder(["b"]), answer_tier, TIERS, use_fallback=False)
    assert calls == ["b"]


def answers(said: dict, failing=(), calls=None):
    """answer(tier) that says said[tier] (no confidence signal of its own); tiers in `failing` fail."""
    calls = [] if calls is None else calls

    def answer_tier(tier):
        calls.append(tier)
        if tier in failing:
            return RungOutcome(tier, None, error=f"boom on {tier}")
        return RungOutcome(tier, {"reasoning": f"{tier} thinks", "answer": said[tier]}, cost_usd=0.001)

    return answer_tier, calls


@pytest.mark.parametrize("said, final, calls, confidences", [
    # a and b agree (case and spaces aside, reasoning ignored): b's answer stands, c is never called
    ({"a": "Refund ", "b": "refund", "c": "billing"}, "b", ["a", "b"], [0.0, 1.0]),
    # they disagree: the top tier answers
    ({"a": "refund", "b": "billing", "c": "billing"}, "c", ["a", "b", "c"], [0.0, 0.0, 1.0]),
])
def test_committee_accepts_when_the_first_two_answers_agree(said, final, calls, confidences):
    answer_tier, seen = answers(said)
    outcome, trail = run_ladder("p", ladder(["a", "b", "c"], [0.5, 0.5], "committee"), answer_tier, TIERS)
    assert outcome.tier == final and seen == calls
    assert [s.confidence for _, s in trail] == confidences
    assert trail[0][1].decision == "escalated"  # the first answer has nothing to agree with


def test_committee_compares_with_the_last_rung_that_answered():
    # a failed: b is the first answer (nothing to agree with), c agrees with b
    answer_tier, seen = answers({"b": "x", "c": "x", "d": "y"}, failing={"a"})
    outcome, trail = run_ladder("p", ladder(["a", "b", "c", "d"], [0.5, 0.5, 0.5], "committee"), answer_tier, TIERS)
    assert outcome.tier == "c" and seen == ["a", "b", "c"]
    assert [s.decision for _, s in trail] == ["failed", "escalated", "accepted"]


def test_live_committee_of_two_cheap_tiers(tmp_path):
    policy = Policy({"qa": PredictorPolicy(["a", "b", "c"], "committee", [0.5, 0.5])})
    script, seen = by_tier(a=(answer(answer="Paris"), 0.1), b=(answer(answer="paris"), 0.1),
                           c=(answer(answer="Lyon"), 0.9))
    program, runtime = compiled(tmp_path, policy, script)
    assert program(question="capital?").answer == "paris" and seen == ["a", "b"]
    assert [(s.tier, s.confidence, s.decision) for s in program.last_trail] == [
        ("a", 0.0, "escalated"), ("b", 1.0, "accepted")]
    assert [r.estimator for r in runtime.ledger.records] == ["committee", "committee"]
    script, seen = by_tier(a=(answer(answer="Paris"), 0.9), b=(answer(answer="Rome"), 0.9),
                           c=(answer(answer="Lyon"), 0.9))
    program, _ = compiled(tmp_path / "disagree", policy, script)
    assert program(question="capital?").answer == "Lyon" and seen == ["a", "b", "c"]


# --- live: a DSPy program over scripted tiers -----------------------------------------------------


class QA(dspy.Module):
    def __init__(self, signature="question -> answer"):
        super().__init__()
        self.qa = dspy.Predict(signature)

    def forward(self, question):
        return self.qa(question=question)


def question_of(messages) -> str:
    found = re.search(r"\[\[ ## question ## \]\]\n(.*?)\n\n", user_text(messages), re.S)
    if found:  # ChatAdapter's format (several output fields)
        return found.group(1)
    plain = re.search(r"^question: (.*)$", user_text(messages), re.M)  # plain format, several inputs
    return plain.group(1) if plain else user_text(messages)  # plain format, the one input


def compiled(tmp_path, policy, script, tiers=("a", "b", "c"), program=None, settings=None, **kw):
    runtime = make_runtime(tmp_path, fake_catalog(*tiers, **(settings or {})), script, **kw)
    return CompiledProgram(program or QA(), policy, runtime), runtime


def by_tier(**outputs):
    """Script: tier -> (text, confidence) or an exception (called, so each call gets a fresh one)."""
    calls = []

    def script(tier, messages):
        calls.append(tier)
        out = outputs[tier]
        return out() if callable(out) else out

    return script, calls


@pytest.mark.parametrize("threshold, final, calls", [(0.5, "a", ["a"]), (0.51, "b", ["a", "b"])])
def test_live_escalation_uses_the_answer_token_confidence(tmp_path, threshold, final, calls):
    script, seen = by_tier(a=(answer(answer="from a"), 0.5), b=(answer(answer="from b"), 0.9))
    program, runtime = compiled(tmp_path, Policy({"qa": PredictorPolicy(["a", "b"], "logprob_mean", [threshold])}),
                                script)
    prediction = program(question="q1")
    assert prediction.answer == f"from {final}" and seen == calls
    assert list(prediction.keys()) == ["answer"]  # the log-probabilities tierwise read stay off the prediction
    trail = program.last_trail
    assert [s.tier for s in trail] == calls
    assert trail[0].confidence == pytest.approx(0.5)
    assert trail[0].decision == ("accepted" if final == "a" else "escalated")
    # the ledger holds one priced record per call, annotated with the cascade's decision
    records = runtime.ledger.records
    assert [(r.tier, r.predictor, r.rung, r.estimator, r.decision) for r in records] == [
        (t, "qa", i, "logprob_mean", s.decision) for i, (t, s) in enumerate(zip(calls, trail))]
    assert records[0].confidence == pytest.approx(0.5) and records[0].threshold == threshold
    assert all(r.cost_usd > 0 and r.prompt_tokens > 0 and r.completion_tokens == 12 for r in records)  # 1 per word
    assert program.last_cost_usd == pytest.approx(sum(r.cost_usd for r in records))
    assert len({r.request_id for r in records}) == 1 and records[0].request_id


def test_each_tier_lm_history_entry_carries_the_calls_price(tmp_path):
    """dspy prices litellm's calls in `lm.history[i]["cost"]`, not a custom engine's: tierwise's tier LMs
    put the call's production price there (a cache hit keeps its price; cost_details says it was a hit)."""
    script, _ = by_tier(a=(answer(answer="from a"), 0.2), b=(answer(answer="from b"), 0.9))
    program, runtime = compiled(tmp_path, Policy({"qa": PredictorPolicy(["a", "b"], "logprob_mean", [0.5])}), script)
    program(question="q1")
    program(question="q1")
    for tier in ("a", "b"):
        history = runtime.lm(tier).history
        paid = [r for r in runtime.ledger.records if r.tier == tier and not r.cache_hit]
        assert [e["cost"] for e in history] == [paid[0].cost_usd] * 2 and paid[0].cost_usd > 0
        assert [e["cost_details"] for e in history] == [{"kind": "tierwise", "tier": tier, "cache_hit": hit}
                                                       for hit in (False, True)]


def test_live_fallback_on_error(tmp_path):
    script, seen = by_tier(a=lambda: RuntimeError("server on fire"), b=(answer(answer="ok"), 0.9))
    program, runtime = compiled(tmp_path, Policy({"qa": PredictorPolicy(["a", "b"], "logprob_mean", [0.5])}), script)
    assert program(question="q").answer == "ok"
    assert [(s.tier, s.decision) for s in program.last_trail] == [("a", "failed"), ("b", "accepted")]
    assert "server on fire" in program.last_trail[0].error
    assert seen == ["a", "b"]


def test_live_fallback_on_timeout(tmp_path):
    script, seen = by_tier(a=("sleep:3:" + answer(answer="too late"), 0.99), b=(answer(answer="on time"), 0.9))
    program, runtime = compiled(tmp_path, Policy({"qa": PredictorPolicy(["a", "b"], "logprob_mean", [0.5])}), script,
                                settings={"a": {"timeout_s": 0.2}})
    assert program(question="q").answer == "on time"
    first = program.last_trail[0]
    assert (first.tier, first.decision) == ("a", "failed")
    assert "timed out after 0.2s" in first.error
    # the late answer was never cached: asking again calls tier a again (and times out again)
    program(question="q")
    assert seen.count("a") == 2


def test_live_fallback_on_unparsable_answer(tmp_path):
    script, seen = by_tier(a=("I think the answer is probably 42", 0.99),
                           b=(answer(answer="42", explanation="17+25"), 0.9))
    program, runtime = compiled(tmp_path, Policy({"qa": PredictorPolicy(["a", "b"], "logprob_mean", [0.5])}), script,
                                program=QA("question -> answer, explanation"))
    prediction = program(question="What is 17+25?")
    assert (prediction.answer, prediction.explanation) == ("42", "17+25")
    assert [(s.tier, s.decision) for s in program.last_trail] == [("a", "failed"), ("b", "accepted")]
    assert "AdapterParseError" in program.last_trail[0].error


def test_lenient_adapter_accepts_a_bare_answer_for_one_output(tmp_path):
    script, _ = by_tier(a=("  42  ", 0.8))
    program, _ = compiled(tmp_path, Policy({"qa": PredictorPolicy(["a"])}), script)
    assert program(question="q").answer == "42"


def test_live_top_rung_failure_keeps_earlier_answer(tmp_path):
    script, seen = by_tier(a=(answer(answer="cheap guess"), 0.3), b=lambda: TimeoutError("gateway"))
    program, _ = compiled(tmp_path, Policy({"qa": PredictorPolicy(["a", "b"], "logprob_mean", [0.9])}), script,
                          tiers=("a", "b"))
    assert program(question="q").answer == "cheap guess"
    assert [(s.tier, s.decision) for s in program.last_trail] == [("a", "fallback"), ("b", "failed")]


def test_live_all_failed_names_each_tier(tmp_path):
    script, seen = by_tier(a=lambda: RuntimeError("A down"), b=lambda: RuntimeError("B down"),
                           c=lambda: RuntimeError("C down"))
    program, _ = compiled(tmp_path, Policy({"qa": PredictorPolicy(["a", "b"], "logprob_mean", [0.5])}), script)
    with pytest.raises(AllRungsFailed) as err:
        program(question="q")
    assert seen == ["a", "b", "c"]  # c only as catalog fallback
    for tier, text in (("a", "A down"), ("b", "B down"), ("c", "C down")):
        assert re.search(rf"{tier}: \w+: .*{text}", str(err.value))


def test_live_catalog_fallback_tier_answers(tmp_path):
    script, seen = by_tier(a=lambda: RuntimeError("A down"), b=(answer(answer="b saves the day"), 0.2),
                           c=(answer(answer="c"), 0.9))
    program, runtime = compiled(tmp_path, Policy({"qa": PredictorPolicy(["a"])}), script,
                                ledger_path=tmp_path / "ledger.jsonl")
    assert program(question="q").answer == "b saves the day"
    assert seen == ["a", "b"]
    assert [(s.tier, s.rung, s.decision) for s in program.last_trail] == [("a", 0, "failed"), ("b", -1, "fallback")]
    # the failed call is in the ledger too (no tokens, no cost), with its error
    assert [(r.tier, r.decision) for r in runtime.ledger.records] == [("a", "failed"), ("b", "fallback")]
    assert "A down" in runtime.ledger.records[0].error and runtime.ledger.records[0].cost_usd == 0.0
    # each with its rung, as the trail has them (the failed call's record was the engine's alone: rung -1)
    assert [(r.rung, r.call) for r in runtime.ledger.records] == [(0, 0), (-1, 0)]
    frame = runtime.ledger.read_frame(runtime.ledger.path)
    assert list(zip(frame["tier"], frame["rung"], frame["decision"])) == [("a", 0, "failed"), ("b", -1, "fallback")]


def test_the_compiled_program_reads_through_to_the_users_program(tmp_path):
    """A DSPy optimizer returns your own program; tierwise's wraps it and reads its attributes through."""
    import copy
    import pickle

    script, _ = by_tier(a=(answer(answer="from a"), 0.9))
    user = QA()
    user.notes = "mine"
    program, _ = compiled(tmp_path, Policy({"qa": PredictorPolicy(["a"])}), script, program=user)
    assert program.qa is user.qa and program.notes == "mine"
    program.qa.demos = [dspy.Example(question="q0", answer="a0")]
    assert user.qa.demos[0].answer == "a0"
    with pytest.raises(AttributeError, match="'QA' object has no attribute 'nothing'"):
        program.nothing
    assert copy.deepcopy(program).notes == "mine" and program.deepcopy().qa.demos[0].answer == "a0"
    with pytest.raises(Exception):  # the runtime holds locks and models: not picklable, but no recursion either
        pickle.dumps(program)


class LogLines(logging.Handler):
    """The messages one logger emits inside a `with` block (dspy's loggers do not reach pytest's caplog)."""

    def __init__(self, name: str):
        super().__init__()
        self.logger, self.lines = logging.getLogger(name), []

    def emit(self, record):
        self.lines.append(record.getMessage())

    def __enter__(self):
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc):
        self.logger.removeHandler(self)


def test_an_input_of_the_wrong_type_is_refused_before_any_call(tmp_path):
    """dspy only warns on a dict for a `str` field, and the request was paid for; `run` refuses it, so does
    the compiled program (a ValueError, as users catch it)."""
    script, seen = by_tier(a=(answer(answer="from a"), 0.9))
    program, runtime = compiled(tmp_path, Policy({"qa": PredictorPolicy(["a"])}), script, program=QA("question: str -> answer"))
    for bad, kind in (({"nested": [1]}, "dict"), (None, "NoneType"), (12345, "int")):
        with pytest.raises(ValueError, match=f"QA: input field 'question' must be a string, got {kind}; no call "
                                             "was made"):
            program(question=bad)
        with pytest.raises(ValueError, match="must be a string"):
            asyncio.run(program.acall(question=bad))
    assert seen == [] and runtime.ledger.records == []
    assert program(question="fine").answer == "from a" and seen == ["a"]
    # dspy's batch turned it into a None row (and logged the signature); a tierwise stop is raised there too
    rows = [dspy.Example(question=q).with_inputs("question") for q in ("fine", None)]
    logged = LogLines("dspy.utils.parallelizer")
    with logged, pytest.raises(InputError, match="must be a string, got NoneType") as stop:
        program.batch(rows, disable_progress_bar=True)
    # dspy logs the failed row with its callable's repr: one line naming the program, not its whole repr
    assert len(logged.lines) == 1 and logged.lines[0].startswith("Error for (<tierwise compiled QA>, Example("), \
        logged.lines
    assert [r.answer if r is not None else None for r in stop.value.results] == ["from a", None]  # what was paid
    assert [p.answer for p in program.batch(rows[:1], disable_progress_bar=True)] == ["from a"]


def test_a_predictor_called_directly_checks_its_own_inputs(tmp_path):
    """`program.qa(question=None)` skips the program's check; the predictor refuses it itself, before any call."""
    script, seen = by_tier(a=(answer(answer="from a"), 0.9))
    program, runtime = compiled(tmp_path, Policy({"qa": PredictorPolicy(["a"])}), script, program=QA("question: str -> answer"))
    with pytest.raises(InputError, match="predictor 'qa': input field 'question' must be a string, got NoneType; "
                                         "no call was made"):
        program.qa(question=None)
    with pytest.raises(InputError, match="predictor 'qa'"):
        asyncio.run(program.qa.acall(question=3))
    assert seen == [] and runtime.ledger.records == []
    assert program.qa(question="fine").answer == "from a"


def test_a_field_declared_without_a_type_takes_a_list_as_dspy_does(tmp_path):
    """DSPy's RAG examples pass a list of passages to `context = dspy.InputField()`; only a written type is
    checked (that list was refused as 'must be a string')."""
    from pipelines.tasks import input_type_problem

    class RAG(dspy.Module):
        def __init__(self, signature="context, question -> answer"):
            super().__init__()
            self.qa = dspy.Predict(signature)

        def forward(self, context, question):
            return self.qa(context=context, question=question)

    script, seen = by_tier(a=(answer(answer="from a"), 0.9))
    program, _ = compiled(tmp_path, Policy({"qa": PredictorPolicy(["a"])}), script, program=RAG())
    assert program(context=["passage one", "passage two"], question="q").answer == "from a"
    assert program.qa(context=["p"], question="q").answer == "from a" and seen == ["a", "a"]
    with pytest.raises(InputError, match=r"RAG: input field 'question' is None; no call was made"):
        program(context=["p"], question=None)  # a request with no value: it would be sent as the text "None"
    assert program.qa(context=None, question="q").answer == "from a"  # the program's own code may pass None
    typed = RAG("context: str, question -> answer")
    assert "must be a string, got list" in input_type_problem(typed, {"context": ["p"], "question": "q"})


def test_a_compiled_program_takes_its_inputs_by_position_as_yours_does(tmp_path):
    script, seen = by_tier(a=(answer(answer="from a"), 0.9))
    program, _ = compiled(tmp_path, Policy({"qa": PredictorPolicy(["a"])}), script, program=QA("question: str -> answer"))
    assert program("q1").answer == "from a" and asyncio.run(program.acall("q2")).answer == "from a"
    with pytest.raises(InputError, match=r"QA: too many positional arguments; no call was made"):
        program("q1", "q2")
    with pytest.raises(InputError, match=r"QA: input field 'question' must be a string, got int"):
        program(3)
    assert seen == ["a", "a"]


def test_a_request_refused_mid_ladder_still_records_the_rungs_it_paid_for(tmp_path):
    """The cap refuses the escalation: the cheap rung was paid, and its ledger line had no rung and no decision."""
    from pipelines.errors import BudgetExceeded
    from pipelines.spend_cap import SpendCap

    script, seen = by_tier(a=(answer(answer="from a"), 0.1), b=(answer(answer="from b"), 0.9))
    program, runtime = compiled(tmp_path, Policy({"qa": PredictorPolicy(["a", "b"], "logprob_mean", [0.9])}), script)
    payload_bound = runtime.catalog["a"].cost_bound({"messages": [{"content": "q" * 2000}]})
    cap = SpendCap(payload_bound)  # room for a's call, not for b's after it
    for engine in (runtime.engine("a"), runtime.engine("b")):
        engine.guard = cap.reserve
    with pytest.raises(BudgetExceeded):
        program(question="q")
    assert seen == ["a"]
    [record] = runtime.ledger.records
    assert (record.tier, record.rung, record.decision) == ("a", 0, "escalated")


def test_policy_must_cover_every_predictor(tmp_path):
    with pytest.raises(ConfigError, match=r"no entry for predictors \['qa'\]"):
        compiled(tmp_path, Policy({"other": PredictorPolicy(["a"])}), by_tier()[0])


class Inner(dspy.Module):
    def __init__(self):
        super().__init__()
        self.extract = dspy.Predict("question -> number")

    def forward(self, question):
        return self.extract(question=question)


class Pipeline(dspy.Module):
    """Nested module, a ChainOfThought and a plain predictor reading an earlier output."""

    def __init__(self):
        super().__init__()
        self.inner = Inner()
        self.answer = dspy.ChainOfThought("question, number -> answer")
        self.label = dspy.Predict("answer -> label")

    def forward(self, question):
        number = self.inner(question=question).number
        result = self.answer(question=question, number=number)
        return dspy.Prediction(number=number, answer=result.answer, reasoning=result.reasoning,
                               label=self.label(answer=result.answer).label)


def test_a_compiled_program_names_its_predictors_as_the_policy_does(tmp_path):
    """`named_predictors()` and `dump_state()` of a compiled program use the user program's own names, also
    when a DSPy optimizer compiled the program first (dspy marks it `_compiled`, and skipped it as frozen)."""
    policy = Policy({"inner.extract": PredictorPolicy(["a"]), "answer.predict": PredictorPolicy(["a"]),
                     "label": PredictorPolicy(["b"])})
    for frozen in (False, True):
        user_program = Pipeline()
        user_program._compiled = frozen
        program, _ = compiled(tmp_path / str(frozen), policy, pipeline_script([]), program=user_program)
        assert [n for n, _ in program.named_predictors()] == ["inner.extract", "answer.predict", "label"]
        assert program.dump_state().keys() == user_program.dump_state().keys()


def pipeline_script(calls):
    def script(tier, messages):
        system = messages[0]["content"]
        if "Your output fields are:" in system:  # several outputs: ChatAdapter's format
            outputs = system.split("Your output fields are:")[1].split("All interactions")[0].strip()
        else:  # one output: tierwise's plain format names it once
            outputs = re.search(r"Answer with the (`\w+`)", system).group(1)
        calls.append((tier, outputs))
        if "`number`" in outputs:
            return answer(number="17"), 0.95
        if "`reasoning`" in outputs:
            return answer(reasoning="17 plus 25 is 42", answer="42" if tier == "c" else "41"), \
                (0.9 if tier == "c" else 0.4)
        return answer(label="even" if tier == "b" else "odd"), 0.7

    return script


def test_several_predictors_nested_modules_and_chain_of_thought(tmp_path):
    program = Pipeline()
    assert [n for n, _ in program.named_predictors()] == ["inner.extract", "answer.predict", "label"]
    policy = Policy({
        "inner.extract": PredictorPolicy(["a"]),
        "answer.predict": PredictorPolicy(["a", "c"], "logprob_mean", [0.5]),
        "label": PredictorPolicy(["b"]),
    })
    calls = []
    compiled_program, runtime = compiled(tmp_path, policy, pipeline_script(calls), program=program)
    prediction = compiled_program(question="What is 17+25?")
    assert (prediction.number, prediction.answer, prediction.label) == ("17", "42", "even")
    assert prediction.reasoning == "17 plus 25 is 42"
    assert [t for t, _ in calls] == ["a", "a", "c", "b"]
    assert [(s.predictor, s.tier, s.decision) for s in compiled_program.last_trail] == [
        ("inner.extract", "a", "accepted"), ("answer.predict", "a", "escalated"),
        ("answer.predict", "c", "accepted"), ("label", "b", "accepted")]
    assert [r.predictor for r in runtime.ledger.records] == ["inner.extract", "answer.predict", "answer.predict",
                                                             "label"]
    # the predictors are wrapped in place: same objects, same names, no rewrite of the program
    assert compiled_program.program is program


def test_answer_confidence_excludes_reasoning_and_field_markers():
    text = answer(reasoning="long thoughts here", answer="42")
    pieces = re.findall(r"\s*\S+", text)
    logprobs = [(p, math.log(0.9) if p.strip() == "42" else math.log(0.1)) for p in pieces]
    scores = conf.logprob_scores(text, logprobs, ["answer"])
    assert scores["logprob_mean"] == pytest.approx(0.9) and scores["logprob_min"] == pytest.approx(0.9)
    assert conf.logprob_scores(text, logprobs, ["reasoning"])["logprob_mean"] == pytest.approx(0.1)
    assert conf.logprob_scores("", [], ["answer"]) == {"logprob_mean": None, "logprob_min": None}


def hard_easy_script(tier, messages):
    q = question_of(messages)
    n = int(q.split()[-1])
    easy = n % 2 == 0
    if tier == "a":
        return answer(answer=f"a{n}"), (0.9 if easy else 0.2)
    return answer(answer=f"b{n}"), 0.9


def test_threads_each_see_their_own_last_trail(tmp_path):
    policy = Policy({"qa": PredictorPolicy(["a", "b"], "logprob_mean", [0.5])})
    program, runtime = compiled(tmp_path, policy, hard_easy_script, tiers=("a", "b"))
    barrier = threading.Barrier(4)

    def ask(n):
        barrier.wait()  # all four threads inside the program at once
        prediction = program(question=f"question {n}")
        return n, prediction.answer, [(s.tier, s.decision) for s in program.last_trail], program.last_cost_usd

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(ask, range(4)))
    for n, got, trail, cost in results:
        if n % 2 == 0:
            assert got == f"a{n}" and trail == [("a", "accepted")]
        else:
            assert got == f"b{n}" and trail == [("a", "escalated"), ("b", "accepted")]
        assert cost > 0
    assert program.last_trail == []  # the main thread made no call
    assert len(runtime.ledger.records) == 6
    assert len({r.request_id for r in runtime.ledger.records}) == 4


def test_batch_rows_carry_their_own_trail_and_the_batch_is_the_last_call(tmp_path):
    """dspy's `program.batch` answers in worker threads: each prediction says what its request cost, and
    `last_trail` / `last_cost_usd` afterwards cover the whole batch (not the caller thread's last call)."""
    from pipelines import cost_of, trail_of

    policy = Policy({"qa": PredictorPolicy(["a", "b"], "logprob_mean", [0.5])})
    program, runtime = compiled(tmp_path, policy, hard_easy_script, tiers=("a", "b"))
    examples = [dspy.Example(question=f"question {n}").with_inputs("question") for n in range(4)]
    predictions = program.batch(examples, num_threads=4, disable_progress_bar=True)
    for n, prediction in enumerate(predictions):
        trail = [(s.tier, s.decision) for s in trail_of(prediction)]
        assert trail == ([("a", "accepted")] if n % 2 == 0 else [("a", "escalated"), ("b", "accepted")])
        assert cost_of(prediction) == sum(s.cost_usd for s in trail_of(prediction)) > 0
        assert "_tierwise_trail" not in prediction.keys()  # not an output field
    assert len(program.last_trail) == 6
    assert program.last_cost_usd == pytest.approx(sum(r.cost_usd for r in runtime.ledger.records))
    assert program.last_cost_usd == pytest.approx(sum(cost_of(p) for p in predictions))
    single = program(question="question 8")
    assert trail_of(single) == program.last_trail and cost_of(single) == program.last_cost_usd


class AsyncPipeline(Pipeline):
    """The same program written for asyncio, as the DSPy docs show: `aforward` awaits each predictor's `acall`."""

    async def aforward(self, question):
        number = (await self.inner.extract.acall(question=question)).number
        result = await self.answer.acall(question=question, number=number)
        label = (await self.label.acall(answer=result.answer)).label
        return dspy.Prediction(number=number, answer=result.answer, reasoning=result.reasoning, label=label)


def test_acall_climbs_the_same_ladders_as_a_call(tmp_path):
    """`await compiled.acall(...)`: a program's own aforward (its predictors' acall, ChainOfThought's too)
    goes through the policy, not dspy's default LM, which is not even configured here."""
    policy = Policy({
        "inner.extract": PredictorPolicy(["a"]),
        "answer.predict": PredictorPolicy(["a", "c"], "logprob_mean", [0.5]),
        "label": PredictorPolicy(["b"]),
    })
    calls = []
    compiled_program, runtime = compiled(tmp_path, policy, pipeline_script(calls), program=AsyncPipeline())

    async def ask():
        prediction = await compiled_program.acall(question="What is 17+25?")
        return prediction, compiled_program.last_trail

    prediction, trail = asyncio.run(ask())
    assert (prediction.number, prediction.answer, prediction.label) == ("17", "42", "even")
    assert [t for t, _ in calls] == ["a", "a", "c", "b"]
    assert [(s.predictor, s.tier, s.decision) for s in trail] == [
        ("inner.extract", "a", "accepted"), ("answer.predict", "a", "escalated"),
        ("answer.predict", "c", "accepted"), ("label", "b", "accepted")]
    assert len({r.request_id for r in runtime.ledger.records}) == 1 and runtime.ledger.records[0].request_id
    assert compiled_program.last_trail == []  # asyncio.run's task kept its own; this thread made no call


def test_concurrent_acalls_each_see_their_own_trail(tmp_path):
    """A program without aforward runs its forward in a worker thread; gathered requests do not mix."""
    policy = Policy({"qa": PredictorPolicy(["a", "b"], "logprob_mean", [0.5])})
    program, runtime = compiled(tmp_path, policy, hard_easy_script, tiers=("a", "b"))

    async def ask(n):
        prediction = await program.acall(question=f"question {n}")
        return n, prediction.answer, [(s.tier, s.decision) for s in program.last_trail], program.last_cost_usd

    async def ask_all():
        return await asyncio.gather(*(ask(n) for n in range(4)))

    for n, got, trail, cost in asyncio.run(ask_all()):
        if n % 2 == 0:
            assert got == f"a{n}" and trail == [("a", "accepted")]
        else:
            assert got == f"b{n}" and trail == [("a", "escalated"), ("b", "accepted")]
        assert cost > 0
    assert len(runtime.ledger.records) == 6 and len({r.request_id for r in runtime.ledger.records}) == 4


def counting_script(seen):
    """Each call paid gets a new answer (n1, n2, ...): which calls were cached shows in the answers."""

    def script(tier, messages):
        seen.append(tier)
        return answer(reasoning="thinking", answer=f"{tier}{len(seen)}"), 0.9

    return script


class Think(dspy.Module):
    def __init__(self, **config):
        super().__init__()
        self.qa = dspy.ChainOfThought("question -> answer")
        self.config = config

    def forward(self, question):
        return self.qa(question=question, **({"config": self.config} if self.config else {}))


def test_call_time_config_reaches_the_tier_and_a_rollout_is_its_own_sample(tmp_path):
    """`predictor(..., config={...})` as the DSPy docs write it: it failed every rung ('got multiple values
    for keyword argument config') when tierwise set the answer budget. A rollout_id is a distinct sample,
    cached apart; the same rollout again is a cache hit."""
    seen = []
    policy = Policy({"qa.predict": PredictorPolicy(["a"])})
    runtime = make_runtime(tmp_path, fake_catalog("a", "b"), counting_script(seen))
    configs = ({}, {"temperature": 0.9}, {"max_tokens": 7}, {"temperature": 0.9, "rollout_id": 1},
               {"temperature": 0.9, "rollout_id": 2}, {"temperature": 0.9, "rollout_id": 1}, {"temperature": 0.9})
    answers = [CompiledProgram(Think(**config), policy, runtime)(question="q").answer for config in configs]
    # each setting is another request (a new answer); the same settings again are a cache hit
    assert answers == ["a1", "a2", "a3", "a4", "a5", "a4", "a2"] and len(seen) == 5
    assert [r.cache_hit for r in runtime.ledger.records] == [False] * 5 + [True] * 2


def test_best_of_n_draws_distinct_samples_through_the_policy(tmp_path):
    """dspy.BestOfN reads the program's LM and copies it per attempt (rollout_id, temperature=1.0). Under a
    policy there is no dspy LM at all: each attempt climbs the ladder as its own sample, paid once, and
    dspy's trace holds the final answers only."""
    seen = []
    policy = Policy({"module.qa.predict": PredictorPolicy(["a", "b"], "logprob_mean", [0.95])})  # always climbs
    runtime = make_runtime(tmp_path, fake_catalog("a", "b"), counting_script(seen))

    def reward(args, prediction):
        return 1.0 if prediction.answer.endswith("6") else 0.0

    best = CompiledProgram(dspy.BestOfN(Think(), N=3, reward_fn=reward, threshold=1.0), policy, runtime)
    with dspy.context(trace=[]):
        prediction = best(question="q")
        trace = list(dspy.settings.trace)
    # attempt 1: a1 (escalated), b2; attempt 2: a3, b4; attempt 3: a5, b6 (reward 1)
    assert prediction.answer == "b6" and seen == ["a", "b"] * 3
    assert [p.answer for _, _, p in trace] == ["b6"]  # BestOfN keeps the best attempt's trace
    assert [s.tier for s in best.last_trail] == ["a", "b"] * 3
    again = CompiledProgram(dspy.BestOfN(Think(), N=3, reward_fn=reward, threshold=1.0), policy, runtime)
    assert again(question="q").answer == "b6" and len(seen) == 6  # every attempt cached
    # an LM of your own on the predictor: its rollout copies' settings count, the LM itself is never called
    own = Think()
    own.qa.predict.lm = dspy.LM("openai/never-called", temperature=0.3)
    mine = CompiledProgram(dspy.BestOfN(own, N=3, reward_fn=reward, threshold=1.0), policy, runtime)
    assert mine(question="q").answer == "b6" and len(seen) == 6


def hinting_script(prompts: list):
    """A tier that answers 'three' only when Refine's hint tells it to; Refine's feedback step advises that."""

    def script(tier, messages):
        text = " ".join(m["content"] for m in messages)
        prompts.append((tier, text))
        if "advice" in text:  # dspy.Refine's OfferFeedback signature
            return answer(discussion="it said one", advice='{"self": "say three"}'), 0.9
        return answer(answer="three" if "say three" in text else "one"), 0.9

    return script


def test_refine_hints_reach_the_tiers_and_its_feedback_step_is_priced_on_the_trail(tmp_path):
    """dspy.Refine asks a feedback predictor it builds on each failed attempt (no dspy LM under a policy: it
    printed 'No LM is loaded'), then adds the advice to the next attempt through a wrapper of the adapter,
    which the rungs' own adapter dropped. Now the feedback step runs on the tier whose answer it reads,
    cached and on the trail, and the hint reaches the next attempt's prompt."""
    prompts: list = []
    runtime = make_runtime(tmp_path, fake_catalog("a", "b", a={"max_tokens": 24}), hinting_script(prompts))

    def refine():
        return dspy.Refine(dspy.Predict("question -> answer"), N=3, threshold=1.0,
                           reward_fn=lambda args, prediction: float(prediction.answer == "three"))

    program = CompiledProgram(refine(), Policy({"module": PredictorPolicy(["a"])}), runtime)
    assert program(question="q").answer == "three"
    assert [(s.predictor, s.tier) for s in program.last_trail] == [
        ("module", "a"), ("(built at run time)", "a"), ("module", "a")]
    assert program.last_cost_usd == sum(s.cost_usd for s in program.last_trail) > program.last_trail[0].cost_usd
    assert [tier for tier, _ in prompts] == ["a", "a", "a"] and "say three" in prompts[-1][1]
    assert {(r.predictor, r.decision) for r in runtime.ledger.records} == {
        ("module", "accepted"), ("(built at run time)", "run_time")}
    # the feedback writes two fields (one a dict): it gets a rung's room for them, not the tier's 24 tokens
    feedback = runtime.engine("a").backend.calls[1]
    assert "advice" in feedback["messages"][-1]["content"] and feedback["config"]["max_tokens"] == 24 * 5 + 12
    again = CompiledProgram(refine(), Policy({"module": PredictorPolicy(["a"])}), runtime)
    assert again(question="q").answer == "three" and len(prompts) == 3  # every call cached


def test_a_predictor_built_at_run_time_answers_on_the_tier_of_the_answer_it_reads(tmp_path):
    """Refine's feedback used to answer on the top tier whatever the policy: on the local tiers a
    cheap-only Refine cost 57x flagship-only. It follows the request's latest answer: the rung a cascade
    stopped at, the top tier before anything has answered. The tier's own settings apply; a setting the
    call chose itself stays."""
    prompts: list = []
    catalog = fake_catalog("a", "b", "c", a={"temperature": 0.3}, c={"temperature": 0.9})
    runtime = make_runtime(tmp_path, catalog, hinting_script(prompts))

    class Advised(dspy.Module):
        def __init__(self, advise_first=False):
            super().__init__()
            self.qa = dspy.Predict("question -> answer")
            self.advise_first = advise_first

        def forward(self, question):
            if self.advise_first:
                dspy.Predict("advice_for -> advice")(advice_for=question)
            first = self.qa(question=question)
            dspy.Predict("advice_for -> advice")(advice_for=first.answer)
            dspy.Predict("advice_for -> advice")(advice_for=first.answer, config={"temperature": 0.5})
            return first

    def feedback_steps(program):
        return [(s.tier, s.call) for s in program.last_trail if s.decision == "run_time"]

    cascade = Policy({"qa": PredictorPolicy(["a", "b", "c"], "logprob_mean", [0.95, 0.95])})  # climbs to c
    for policy, want in ((Policy({"qa": PredictorPolicy(["a"])}), "a"), (Policy({"qa": PredictorPolicy(["b"])}), "b"),
                         (cascade, "c")):
        program = CompiledProgram(Advised(), policy, runtime)
        program(question=f"q {want}")
        assert feedback_steps(program) == [(want, 0), (want, 1)]
    first = CompiledProgram(Advised(advise_first=True), Policy({"qa": PredictorPolicy(["a"])}), runtime)
    first(question="q first")
    assert feedback_steps(first) == [("c", 0), ("a", 1), ("a", 2)]  # nothing had answered yet: the top tier
    on_a = [call["config"]["temperature"] for call in runtime.engine("a").backend.calls
            if "advice_for" in str(call["messages"])]
    assert on_a == [0.3, 0.5]  # a's own temperature (the LM was built for c's 0.9); the call's own kept


def test_a_predictor_built_at_run_time_asking_for_n_candidates_gets_n_samples(tmp_path):
    """Each run-time call started its own trace, so dspy's second and third candidate were cache hits on the
    first: three copies, and a majority vote was no vote. Candidates of one call are now samples apart; the
    same call made again is still a cache hit."""
    said = iter(["one", "three", "three", "two", "two", "five"])
    paid: list = []

    def script(tier, messages):
        if "advice_for" in " ".join(m["content"] for m in messages):
            paid.append(tier)
            return answer(advice=next(said)), 0.9
        return answer(answer="an answer"), 0.9

    runtime = make_runtime(tmp_path, fake_catalog("a", "b"), script)

    class Voted(dspy.Module):
        def __init__(self):
            super().__init__()
            self.qa = dspy.Predict("question -> answer")

        def forward(self, question):
            first = self.qa(question=question)
            votes = dspy.Predict("advice_for -> advice", n=3)(advice_for=first.answer)
            return dspy.Prediction(answer=first.answer, advice=[c.advice for c in votes.completions])

    program = CompiledProgram(Voted(), Policy({"qa": PredictorPolicy(["a"])}), runtime)
    assert program(question="q").advice == ["one", "three", "three"] and paid == ["a", "a", "a"]
    assert [(s.tier, s.call) for s in program.last_trail if s.decision == "run_time"] == [("a", 0), ("a", 1), ("a", 2)]
    assert program(question="q").advice == ["one", "three", "three"] and len(paid) == 3  # every candidate cached
    assert program(question="q2").advice == ["one", "three", "three"] and len(paid) == 3  # same feedback request


def test_dspy_trace_gets_the_final_answer_not_every_rung(tmp_path):
    script, _ = by_tier(a=(answer(answer="from a"), 0.2), b=(answer(answer="from b"), 0.9))
    program, _ = compiled(tmp_path, Policy({"qa": PredictorPolicy(["a", "b"], "logprob_mean", [0.5])}), script)
    with dspy.context(trace=[]):
        program(question="q1")
        trace = list(dspy.settings.trace)
    assert [(predictor is program.program.qa, inputs, p.answer) for predictor, inputs, p in trace] == [
        (True, {"question": "q1"}, "from b")]


def test_streamify_yields_the_final_prediction_and_no_rejected_rung(tmp_path):
    """Under dspy.streamify each LM call streamed its raw chunks: the cheap rung's answer reached the stream,
    then the answer that replaced it. A rung's confidence is known only once it has answered."""
    script, seen = by_tier(a=(answer(answer="from a"), 0.2), b=(answer(answer="from b"), 0.9))
    program, _ = compiled(tmp_path, Policy({"qa": PredictorPolicy(["a", "b"], "logprob_mean", [0.5])}), script)
    stream = dspy.streamify(program)

    async def collect():
        return [chunk async for chunk in stream(question="q1")]

    chunks = asyncio.run(collect())
    assert seen == ["a", "b"]
    assert [type(c).__name__ for c in chunks] == ["Prediction"] and chunks[0].answer == "from b"
    assert "from a" not in repr(chunks)


def test_dspy_parallel(tmp_path):
    policy = Policy({"qa": PredictorPolicy(["a", "b"], "logprob_mean", [0.5])})
    program, runtime = compiled(tmp_path, policy, hard_easy_script, tiers=("a", "b"))
    examples = [dspy.Example(question=f"question {n}").with_inputs("question") for n in range(6)]
    results = dspy.Parallel(num_threads=3, disable_progress_bar=True)([(program, ex) for ex in examples])
    assert [r.answer for r in results] == ["a0", "b1", "a2", "b3", "a4", "b5"]
    assert sorted(r.tier for r in runtime.ledger.records) == ["a"] * 6 + ["b"] * 3


# --- estimators ---------------------------------------------------------------------------------


def test_self_report_estimator(tmp_path):
    script, seen = by_tier(a=(answer(answer="41", confidence="85"), 0.99),
                           b=(answer(answer="42", confidence="0.97"), 0.5))
    policy = Policy({"qa": PredictorPolicy(["a", "b"], "self_report", [0.9])})
    program, _ = compiled(tmp_path, policy, script, program=QA("question -> answer, confidence"))
    assert program(question="q").answer == "42"
    steps = program.last_trail
    assert [s.confidence for s in steps] == [pytest.approx(0.85), pytest.approx(0.97)]
    assert steps[0].decision == "escalated"
    assert conf.self_reported({"confidence": "about 250%"}) == 1.0
    assert conf.self_reported({"confidence": "-3"}) == 0.0
    assert conf.self_reported({"confidence": "unsure"}) is None


def test_agreement_estimator_samples_have_their_own_cache_keys(tmp_path):
    answers = iter(["42", "42", "41"])  # first answer, then two samples: one agrees

    def script(tier, messages):
        return (answer(answer=next(answers)) if tier == "a" else answer(answer="42")), 0.9

    policy = Policy({"qa": PredictorPolicy(["a", "b"], "agreement", [0.75])})
    program, runtime = compiled(tmp_path, policy, script, tiers=("a", "b"))
    assert program(question="q").answer == "42"
    steps = program.last_trail
    assert steps[0].confidence == pytest.approx(0.5) and steps[0].decision == "escalated"
    # the top rung's confidence decides nothing: it is asked once, no samples
    assert [r.tier for r in runtime.ledger.records] == ["a", "a", "a", "b"]
    a_records = [r for r in runtime.ledger.records if r.tier == "a"]
    assert len(a_records) == 3 and not any(r.cache_hit for r in a_records)  # 3 distinct keys, 3 paid calls
    assert steps[0].cost_usd == pytest.approx(sum(r.cost_usd for r in a_records))
    # the same request again: all three come from the cache, same agreement
    program(question="q")
    again = runtime.ledger.records[4:]
    assert [r.cache_hit for r in again] == [True] * 4
    assert program.last_trail[0].confidence == pytest.approx(0.5)


def test_learned_estimator(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, len(conf.FEATURES)))
    y = (X[:, 0] + 0.3 * rng.normal(size=60) > 0).astype(float)
    scorer = LogisticScorer().fit(X, y)
    restored = LogisticScorer.from_dict(scorer.to_dict())
    assert np.allclose(restored.predict_proba(X), scorer.predict_proba(X))
    assert ((scorer.predict_proba(X) > 0.5) == y).mean() >= 0.85

    script, _ = by_tier(a=(answer(answer="x"), 0.3), b=(answer(answer="y"), 0.9))
    policy = Policy({"qa": PredictorPolicy(["a", "b"], "learned", [0.5])})
    runtime = make_runtime(tmp_path, fake_catalog("a", "b"), script)
    program = CompiledProgram(QA(), policy, runtime, scorers={"qa": restored})
    program(question="q")
    first = program.last_trail[0]
    features = conf.features({"question": "q"}, {"answer": "x"}, {"logprob_mean": 0.3, "logprob_min": 0.3}, 0.0)
    features += conf.ladder_features({"answer": "x"}, None)  # the first rung: nothing answered before it
    assert 0.0 <= first.confidence <= 1.0
    assert first.confidence == pytest.approx(float(restored.predict_proba([features])[0]))
    assert first.decision == ("accepted" if first.confidence >= 0.5 else "escalated")


def test_estimator_values_lie_in_unit_interval():
    text = answer(answer="a b c")
    for c in (1e-12, 0.3, 1.0):
        pieces = re.findall(r"\s*\S+", text)
        scores = conf.logprob_scores(text, [(p, math.log(c)) for p in pieces], ["answer"])
        assert all(0.0 <= v <= 1.0 for v in scores.values())
        assert scores["logprob_mean"] == pytest.approx(c)


def test_every_rung_failing_still_records_what_the_attempts_cost():
    """A request whose rungs all fail raises, but the paid attempts stay on its trail (cost is not lost)."""
    from pipelines.cascade import Step, run_ladder
    from pipelines.errors import AllRungsFailed
    from pipelines.policy import PredictorPolicy

    def answer(tier):
        return RungOutcome(tier=tier, outputs=None, error="boom", cost_usd=0.5)

    with pytest.raises(AllRungsFailed) as caught:
        run_ladder("p", PredictorPolicy(["a", "b"], "logprob_mean", [0.5]), answer, ["a", "b", "c"])
    steps = [step for _, step in caught.value.trail]
    assert [s.tier for s in steps] == ["a", "b", "c"]
    assert all(isinstance(s, Step) and s.decision == "failed" for s in steps)
    assert sum(s.cost_usd for s in steps) == 1.5
