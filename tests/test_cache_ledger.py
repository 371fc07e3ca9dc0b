"""Disk cache (hits are free, tier identity in the key, TTL, off switch, shared across processes)
and the ledger (priced records, JSONL that survives restarts, one row per call)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import dspy
import pytest

from conftest import ROOT, answer, fake_catalog, fake_tier, make_runtime, run_python
from pipelines.backends import ScriptedBackend
from pipelines.cache import CallCache, call_key
from pipelines.cascade import CompiledProgram
from pipelines.engine import TierEngine
from pipelines.ledger import CallRecord, Ledger
from pipelines.policy import Policy, PredictorPolicy
from pipelines.tiers import Tier

PAYLOAD = {"model": "fake/a", "messages": [{"role": "user", "content": "what is two plus two"}],
           "config": {"max_tokens": 16, "temperature": 0.0}}


def engine_for(tier, cache, ledger=None, text="four is the answer"):
    backend = ScriptedBackend(tier.name, lambda t, m: (text, 0.8))
    return TierEngine(tier, backend, cache, ledger or Ledger()), backend


def test_second_identical_call_is_a_free_cache_hit_recording_the_saving(tmp_path):
    tier = fake_tier("a", 2.0, 8.0)
    engine, backend = engine_for(tier, CallCache(tmp_path / "c"))
    first = engine.call(PAYLOAD)
    second = engine.call(PAYLOAD)
    assert len(backend.calls) == 1
    # word counts: 5 prompt tokens, 4 completion tokens -> (5*2 + 4*8)/1e6
    assert (first.prompt_tokens, first.completion_tokens) == (5, 4)
    assert first.record.cost_usd == pytest.approx(42e-6)
    assert not first.record.cache_hit and first.record.saved_usd == 0.0
    assert second.record.cache_hit
    assert second.record.cost_usd == 0.0
    assert second.record.saved_usd == pytest.approx(42e-6)
    assert second.text == first.text == "four is the answer"
    assert engine.ledger.total_cost() == pytest.approx(42e-6)
    # a different request is a miss
    engine.call({**PAYLOAD, "messages": [{"role": "user", "content": "what is three"}]})
    assert len(backend.calls) == 2


def test_a_cache_hit_keeps_the_model_time_it_was_paid_with(tmp_path):
    """The ledger's latency is this call's (a cache read on a hit); the model's time travels with the answer,
    so a compile that reuses cached calls reports the latency production would see, as it does the cost."""
    tier = fake_tier("a", 2.0, 8.0)
    backend = ScriptedBackend(tier.name, lambda t, m: "sleep:0.5:four is the answer")
    engine = TierEngine(tier, backend, CallCache(tmp_path / "c"), Ledger())
    first, second = engine.call(PAYLOAD), engine.call(PAYLOAD)
    assert len(backend.calls) == 1 and second.record.cache_hit
    assert first.record.latency_s >= 0.5 and first.model_latency_s == first.record.latency_s
    assert second.record.latency_s < 0.5
    assert second.model_latency_s == pytest.approx(first.model_latency_s)


def test_calls_queued_behind_others_count_the_model_time_not_the_wait(tmp_path):
    """program.batch sends more calls at once than a tier's workers take: the wait in the queue is not the
    model's time. Eight calls of 0.5 s through four workers: the last four start after 0.5 s of waiting."""
    import threading

    tier = fake_tier("a", 2.0, 8.0)
    engine = TierEngine(tier, ScriptedBackend(tier.name, lambda t, m: "sleep:0.5:four"), None, Ledger())
    payloads = [{**PAYLOAD, "messages": [{"role": "user", "content": f"question {i}"}]} for i in range(8)]
    threads = [threading.Thread(target=engine.call, args=(p,)) for p in payloads]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    latencies = [r.latency_s for r in engine.ledger.records]
    assert len(latencies) == 8 and max(latencies) < 0.9, latencies  # counting the wait: about 1.0 s


def test_key_includes_tier_identity(tmp_path):
    """Two tiers with one model string but different settings never share an entry; the same
    model and settings under another tier name (or price) do."""
    cache = CallCache(tmp_path / "c")
    short = Tier("short", "fake/m", 1, 1, {"retries": 0, "max_tokens": 16})
    long = Tier("long", "fake/m", 1, 1, {"retries": 0, "max_tokens": 512})
    e1, b1 = engine_for(short, cache, text="short answer")
    e2, b2 = engine_for(long, cache, text="a long answer")
    assert e1.call(PAYLOAD).text == "short answer"
    second = e2.call(PAYLOAD)
    assert second.text == "a long answer" and not second.record.cache_hit
    assert (len(b1.calls), len(b2.calls)) == (1, 1)
    assert call_key(short.identity(), PAYLOAD) != call_key(long.identity(), PAYLOAD)
    e3, b3 = engine_for(Tier("alias", "fake/m", 5, 5, {"max_tokens": 16}), cache)
    hit = e3.call(PAYLOAD)
    assert hit.record.cache_hit and hit.text == "short answer" and b3.calls == []
    assert hit.record.saved_usd == pytest.approx((5 * 5 + 2 * 5) / 1e6)  # priced at the alias's rate


def test_ttl_expiry(tmp_path, monkeypatch):
    import diskcache.core
    import time as real_time

    class Clock:
        now = real_time.time()

        @staticmethod
        def time():
            return Clock.now

        sleep = staticmethod(real_time.sleep)

    monkeypatch.setattr(diskcache.core, "time", Clock)
    engine, backend = engine_for(fake_tier("a", 1, 1), CallCache(tmp_path / "c", ttl_s=3600))
    engine.call(PAYLOAD)
    Clock.now += 3599
    assert engine.call(PAYLOAD).record.cache_hit
    assert len(backend.calls) == 1
    Clock.now += 2  # past the hour
    again = engine.call(PAYLOAD)
    assert not again.record.cache_hit and again.record.cost_usd > 0
    assert len(backend.calls) == 2


def test_disabled_cache_calls_every_time_and_creates_nothing(tmp_path):
    directory = tmp_path / "never"
    engine, backend = engine_for(fake_tier("a", 1, 1), CallCache(directory, enabled=False))
    records = [engine.call(PAYLOAD).record for _ in range(3)]
    assert len(backend.calls) == 3
    assert [r.cache_hit for r in records] == [False] * 3
    assert all(r.cost_usd > 0 and r.saved_usd == 0 for r in records)
    assert not directory.exists()


SECOND_PROCESS = """
import json, sys
from pipelines.backends import ScriptedBackend
from pipelines.cache import CallCache
from pipelines.engine import TierEngine
from pipelines.ledger import Ledger
from pipelines.tiers import Tier
payload = json.loads(sys.argv[2])
tier = Tier("a", "fake/a", 2.0, 8.0, {"retries": 0})
backend = ScriptedBackend("a", lambda t, m: ("from the second process", 0.5))
engine = TierEngine(tier, backend, CallCache(sys.argv[1]), Ledger())
result = engine.call(payload)
print(json.dumps({"text": result.text, "hit": result.record.cache_hit, "cost": result.record.cost_usd,
                  "saved": result.record.saved_usd, "backend_calls": len(backend.calls)}))
"""


def test_second_process_gets_a_hit_without_calling_its_backend(tmp_path):
    engine, backend = engine_for(fake_tier("a", 2.0, 8.0), CallCache(tmp_path / "c"))
    engine.call(PAYLOAD)
    engine.cache.close()
    out = json.loads(run_python(SECOND_PROCESS, str(tmp_path / "c"), json.dumps(PAYLOAD)).stdout.splitlines()[-1])
    assert out == {"text": "four is the answer", "hit": True, "cost": 0.0, "saved": pytest.approx(42e-6),
                   "backend_calls": 0}


def test_second_process_waits_on_a_claim_then_reuses_the_answer(tmp_path):
    """While this process holds the claim on a key (paying for it), another process asking for the
    same call waits, then reads the stored answer: it never calls its own backend."""
    tier = fake_tier("a", 2.0, 8.0)
    cache = CallCache(tmp_path / "c")
    key = call_key(tier.identity(), PAYLOAD)
    with cache.claim(key):
        proc = subprocess.Popen([sys.executable, "-c", SECOND_PROCESS, str(tmp_path / "c"), json.dumps(PAYLOAD)],
                                cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        cache.put(key, {"text": "paid by the first process", "prompt_tokens": 4, "completion_tokens": 5})
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    out = json.loads(stdout.splitlines()[-1])
    assert out["text"] == "paid by the first process"
    assert out["hit"] is True and out["backend_calls"] == 0 and out["cost"] == 0.0


class QA(dspy.Module):
    def __init__(self):
        super().__init__()
        self.qa = dspy.Predict("question -> answer")

    def forward(self, question):
        return self.qa(question=question)


def test_ledger_jsonl_survives_restart_with_one_row_per_call(tmp_path):
    path = tmp_path / "ledger.jsonl"
    catalog = fake_catalog("a", "b")
    policy = Policy({"qa": PredictorPolicy(["a", "b"], "logprob_mean", [0.7])})

    def script(tier, messages):
        return answer(answer="42"), (0.5 if tier == "a" else 0.9)  # a is unsure: always escalates

    for _ in range(2):  # two "process lifetimes": new runtime, ledger and cache objects each time
        runtime = make_runtime(tmp_path, catalog, script, ledger_path=path)
        program = CompiledProgram(QA(), policy, runtime)
        assert program(question="What is 17+25?").answer == "42"
        runtime.close()

    frame = Ledger.read_frame(path)
    assert len(frame) == 4  # 2 calls per request, 2 requests
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == 8  # each call's record, then its decision line
    # summed over the file as jq or pandas would read it, each call is counted once (the decision lines carry
    # no cost; they repeated the whole record, so every cost counted twice)
    assert sum(line.get("cost_usd", 0) for line in lines) == pytest.approx(frame["cost_usd"].sum())
    assert [line["annotation"] for line in lines if "cost_usd" not in line] == [True] * 4
    assert list(frame.columns) == list(CallRecord.__dataclass_fields__)
    assert list(frame["tier"]) == ["a", "b", "a", "b"]
    assert list(frame["decision"]) == ["escalated", "accepted", "escalated", "accepted"]
    assert list(frame["cache_hit"]) == [False, False, True, True]
    assert list(frame["confidence"]) == pytest.approx([0.5, 0.9, 0.5, 0.9])
    assert list(frame["threshold"][[0, 2]]) == [0.7, 0.7]
    assert frame["threshold"][[1, 3]].isna().all()
    assert (frame["estimator"] == "logprob_mean").all()
    assert frame["cost_usd"][2] == 0.0 and frame["saved_usd"][2] == pytest.approx(frame["cost_usd"][0])
    assert frame["request_id"][0] == frame["request_id"][1] != frame["request_id"][2]
    assert (frame["prompt_tokens"] > 0).all() and (frame["completion_tokens"] == 11).all()  # ScriptedBackend: one token per word


def test_ledger_frame_in_memory_and_total(tmp_path):
    ledger = Ledger()
    for cost in (0.25, 0.5):
        ledger.add(CallRecord("a", "fake/a", "p", 1, 2, cost, 0.0, 0.1, False))
    frame = ledger.to_frame()
    assert len(frame) == 2 and frame["cost_usd"].sum() == 0.75 == ledger.total_cost()


def test_a_long_running_ledger_keeps_the_latest_calls_and_every_total(tmp_path):
    """A service calls for weeks: the in-memory ledger kept every record (about 1 KB per request, without
    bound). It keeps the latest calls; totals, and the file, cover every call."""
    from pipelines.ledger import CallRecord

    ledger = Ledger(tmp_path / "l.jsonl", keep=10)
    for i in range(45):
        ledger.add(CallRecord(tier="a", model="fake/a", predictor="p", prompt_tokens=1, completion_tokens=1,
                              cost_usd=0.0 if i % 3 == 0 else 0.5, saved_usd=0.0, latency_s=0.0,
                              cache_hit=i % 3 == 0))
    assert 10 <= len(ledger.records) < 20 and ledger.records[-1].cost_usd == 0.5
    assert ledger.calls == 45 and ledger.total_cost() == pytest.approx(30 * 0.5) and ledger.cache_hits == 15
    assert len(Ledger.read_frame(tmp_path / "l.jsonl")) == 45
    # an annotation line whose call line was torn away is no call (it read as one with NaN fields)
    torn = tmp_path / "torn.jsonl"
    torn.write_text('{"call_id": "gone", "annotation": true, "decision": "accepted"}\n'
                    + (tmp_path / "l.jsonl").read_text())
    assert len(Ledger.read_frame(torn)) == 45
