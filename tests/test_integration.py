"""Integration with the real local tiers (llama.cpp, CPU): few calls in all.

- one question through each tier via the runtime (3 model calls), the flagship gets it right;
- the identical call again: a free cache hit, in this process and in a second one (no model loaded);
- a two-predictor support artifact run by `cli.py run` in a fresh process (3 model calls).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import dspy
import pytest

import pipelines
from conftest import ROOT, last_json_line, run_python
from pipelines import local
from pipelines.artifact import build, save
from pipelines.cache import CallCache
from pipelines.cascade import CompiledProgram
from pipelines.ledger import Ledger
from pipelines.policy import Policy, PredictorPolicy
from pipelines.runtime import Runtime
from pipelines.tasks import load_task
from pipelines.tiers import default_catalog

AVAILABLE = all(local.is_available(m) for m in local.LOCAL_MODELS.values())
pytestmark = [
    pytest.mark.integration,
    # CI installs the `local` extra: there a missing model is a failure, not a skip
    pytest.mark.skipif(not AVAILABLE and not os.environ.get("CI"),
                       reason=f"local tiers not installed ({local.INSTALL_HINT})"),
]

QUESTION = "What is 17+25?"


class QA(dspy.Module):
    def __init__(self):
        super().__init__()
        self.qa = dspy.Predict("question -> answer")

    def forward(self, question):
        return self.qa(question=question)


@pytest.fixture(scope="module")
def asked(tmp_path_factory):
    """The question once through each local tier, then once more through the flagship."""
    tmp = tmp_path_factory.mktemp("local")
    catalog = default_catalog()
    runtime = Runtime(catalog, cache=CallCache(tmp / "cache"), ledger=Ledger(tmp / "ledger.jsonl"))
    answers = {}
    for tier in catalog.names:
        program = CompiledProgram(QA(), Policy.uniform(["qa"], tier), runtime)
        answers[tier] = program(question=QUESTION).answer
    program = CompiledProgram(QA(), Policy.uniform(["qa"], "flagship"), runtime)
    again = program(question=QUESTION).answer
    yield tmp, catalog, runtime, answers, again
    runtime.close()


def test_each_local_tier_answers_and_the_flagship_is_right(asked):
    _, catalog, runtime, answers, _ = asked
    assert set(answers) == {"cheap", "mid", "flagship"}
    assert all(isinstance(a, str) and a.strip() for a in answers.values())
    assert "42" in answers["flagship"]
    first_three = runtime.ledger.records[:3]
    assert [r.tier for r in first_three] == ["cheap", "mid", "flagship"]
    for record in first_three:
        tier = catalog[record.tier]
        assert record.model == tier.model and not record.cache_hit
        # instructions plus the question: ~45 tokens in tierwise's plain one-output prompt
        assert record.prompt_tokens > 30 and 0 < record.completion_tokens <= tier.setting("max_tokens")
        assert record.cost_usd == pytest.approx(tier.cost(record.prompt_tokens, record.completion_tokens))
        assert record.cost_usd > 0 and record.decision == "accepted" and record.predictor == "qa"
    # the same prompt costs more per token on bigger tiers (parameter-proportional prices)
    per_token = [r.cost_usd / (r.prompt_tokens + r.completion_tokens) for r in first_three]
    assert per_token == sorted(per_token)


def test_identical_call_is_a_free_cache_hit(asked):
    _, _, runtime, answers, again = asked
    flagship_first, hit = runtime.ledger.records[2], runtime.ledger.records[3]
    assert again == answers["flagship"]
    assert hit.cache_hit and hit.tier == "flagship"
    assert hit.cost_usd == 0.0 and hit.saved_usd == pytest.approx(flagship_first.cost_usd)
    assert (hit.prompt_tokens, hit.completion_tokens) == (flagship_first.prompt_tokens,
                                                          flagship_first.completion_tokens)
    frame = Ledger.read_frame(asked[0] / "ledger.jsonl")
    assert list(frame["cache_hit"]) == [False, False, False, True]
    assert frame["cost_usd"].iloc[:3].gt(0).all() and frame["cost_usd"].iloc[3] == 0.0


def test_batched_requests_on_a_local_tier_count_the_model_time_not_the_wait(tmp_path):
    """A local model answers one request at a time: under program.batch, each call's latency (ledger and trail)
    is its own time on the model, not the wait behind the others. Their sum cannot exceed the batch's wall."""
    import time

    runtime = Runtime(default_catalog(), cache=CallCache(tmp_path / "cache"), ledger=Ledger())
    program = CompiledProgram(QA(), Policy.uniform(["qa"], "cheap"), runtime)
    examples = [dspy.Example(question=f"What is {a}+{b}?").with_inputs("question") for a, b in ((2, 3), (4, 5), (6, 7))]
    started = time.perf_counter()
    predictions = program.batch(examples, num_threads=3)
    wall = time.perf_counter() - started
    runtime.close()
    paid = [r for r in runtime.ledger.records if not r.cache_hit]
    assert len(paid) == 3
    assert sum(r.latency_s for r in paid) <= wall, ([r.latency_s for r in paid], wall)
    steps = [s for p in predictions for s in pipelines.trail_of(p)]
    assert sorted(s.latency_s for s in steps) == pytest.approx(sorted(r.latency_s for r in paid))


def test_a_long_input_fits_a_local_tier(tmp_path):
    """Four slots shared a 4,096-token context at 1,024 each: any request longer than that (a RAG passage,
    dspy.Refine's feedback prompt) failed on every local tier with 'exceeds the available context size'."""
    runtime = Runtime(default_catalog(), cache=CallCache(tmp_path / "cache"), ledger=Ledger())
    passage = " ".join(f"Order {1000 + i} shipped on day {i % 28 + 1}." for i in range(150))
    program = CompiledProgram(QA(), Policy.uniform(["qa"], "cheap"), runtime)
    answer = program(question=f"{passage}\nWhich order shipped first?").answer
    record = runtime.ledger.records[-1]
    assert record.prompt_tokens > 1500 and isinstance(answer, str) and answer.strip()


SECOND_PROCESS = """
import json, sys
import dspy
from pipelines import local
from pipelines.cache import CallCache
from pipelines.cascade import CompiledProgram
from pipelines.ledger import Ledger
from pipelines.policy import Policy
from pipelines.runtime import Runtime

class QA(dspy.Module):
    def __init__(self):
        super().__init__()
        self.qa = dspy.Predict("question -> answer")
    def forward(self, question):
        return self.qa(question=question)

runtime = Runtime(cache=CallCache(sys.argv[1]), ledger=Ledger())
program = CompiledProgram(QA(), Policy.uniform(["qa"], "flagship"), runtime)
answer = program(question=sys.argv[2]).answer
r = runtime.ledger.records[0]
print(json.dumps({"answer": answer, "hit": r.cache_hit, "cost": r.cost_usd, "saved": r.saved_usd,
                  "models_loaded": len(local._servers), "calls": len(runtime.ledger.records)}))
"""


def test_second_process_gets_the_cached_answer_without_loading_a_model(asked):
    tmp, _, runtime, answers, _ = asked
    out = last_json_line(run_python(SECOND_PROCESS, str(tmp / "cache"), QUESTION).stdout)
    assert out["answer"] == answers["flagship"]
    assert out["hit"] is True and out["cost"] == 0.0
    assert out["saved"] == pytest.approx(runtime.ledger.records[2].cost_usd)
    assert out["models_loaded"] == 0 and out["calls"] == 1


def test_support_artifact_runs_in_a_fresh_process_with_a_priced_ledger(tmp_path):
    # classify must escalate mid -> flagship (no answer is 100% sure); extract is accepted on mid
    policy = Policy({"classify": PredictorPolicy(["mid", "flagship"], "logprob_mean", [1.0]),
                     "extract": PredictorPolicy(["mid", "flagship"], "logprob_mean", [0.0])})
    catalog = default_catalog()
    path = save(build(task_source="support", program=load_task("support").build_program(), catalog=catalog,
                      policy=policy), tmp_path / "support.tierwise.json")
    ledger_path = tmp_path / "ledger.jsonl"
    message = "I was charged twice for order B12345 this month, please refund one of the charges."
    proc = subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), "run", str(path), "--input", json.dumps({"message": message}),
         "--json", "--ledger", str(ledger_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=900,
        env={**os.environ, "PYTHONPATH": str(ROOT), "TIERWISE_CACHE_DIR": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    result = out["results"][0]
    assert result["error"] == ""
    assert set(result["output"]) == {"intent", "order_id"}
    assert result["output"]["order_id"] in ("B12345", "none")

    frame = Ledger.read_frame(ledger_path)
    rows = [(r.predictor, r.tier, r.decision) for r in frame.itertuples()]
    classify = [r for r in frame.itertuples() if r.predictor == "classify"]
    if classify[0].confidence < 1.0:
        assert rows == [("classify", "mid", "escalated"), ("classify", "flagship", "accepted"),
                        ("extract", "mid", "accepted")]
    else:  # a perfectly sure mid answer (logprob exactly 0) is accepted
        assert rows == [("classify", "mid", "accepted"), ("extract", "mid", "accepted")]
    assert classify[0].threshold == 1.0 and 0.0 < classify[0].confidence <= 1.0
    for r in frame.itertuples():
        tier = catalog[r.tier]
        assert r.model == tier.model and not r.cache_hit and r.request_id == frame["request_id"].iloc[0]
        assert r.prompt_tokens > 50 and r.completion_tokens > 0
        assert r.cost_usd == pytest.approx(tier.cost(r.prompt_tokens, r.completion_tokens)) and r.cost_usd > 0
        assert r.estimator == "logprob_mean"
    assert result["cost_usd"] == pytest.approx(frame["cost_usd"].sum())
    assert [(s["predictor"], s["tier"], s["decision"]) for s in result["trail"]] == rows
    assert out["summary"]["requests"] == 1 and out["summary"]["paid_usd"] == pytest.approx(frame["cost_usd"].sum())


def test_a_tier_as_a_plain_dspy_lm_for_dspy_code_and_optimizers(tmp_path):
    """`pipelines.lm(tier)`: the local tiers reach dspy code that configures an LM itself (DSPy's own
    optimizers), through tierwise's disk cache and a priced ledger; a second process asks nothing."""
    code = f"""
import dspy, json
from pipelines import lm
from pipelines.adapter import TierwiseAdapter
flagship = lm("flagship", cache_dir={str(tmp_path / "cache")!r}, ledger_path={str(tmp_path / "ledger.jsonl")!r})
dspy.configure(lm=flagship, adapter=TierwiseAdapter())
prediction = dspy.Predict("question -> answer")(question={QUESTION!r})
print(json.dumps({{"answer": prediction.answer, "keys": list(prediction.keys()),
                  "max_tokens": flagship.kwargs["max_tokens"], "cost": flagship.history[-1]["cost"]}}))
"""
    first = last_json_line(run_python(code).stdout)
    again = last_json_line(run_python(code).stdout)
    assert "42" in first["answer"] and again == first and first["max_tokens"] == 256
    assert first["keys"] == ["answer"]  # a plain LM: no token log-probabilities on the user's prediction
    records = [json.loads(line) for line in open(tmp_path / "ledger.jsonl")]
    assert [(r["tier"], r["cache_hit"]) for r in records] == [("flagship", False), ("flagship", True)]
    assert records[0]["cost_usd"] > 0 and records[1]["cost_usd"] == 0
    assert first["cost"] == pytest.approx(records[0]["cost_usd"])  # dspy's history prices the call, cached or not
