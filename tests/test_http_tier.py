"""The API path for real: llama.cpp's OpenAI-compatible HTTP server on 127.0.0.1 serving
Qwen2.5-Coder-0.5B, reached through litellm with `api_base`, and a fault-injecting proxy in front of it.
No network beyond 127.0.0.1 and no key."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import ROOT
from pipelines.cache import CallCache
from pipelines.engine import TierCooledDown, TierEngine
from pipelines.backends import api_backend
from pipelines.ledger import Ledger
from pipelines.tiers import Tier, load_catalog
from tests.http_servers import FaultProxy, LlamaHTTPServer

pytestmark = pytest.mark.integration

PRICES = "input_per_1m = 0.05\noutput_per_1m = 0.2\ncached_input_per_1m = 0.01\n"


@pytest.fixture(scope="module")
def server():
    with LlamaHTTPServer(slots=4) as running:
        yield running


def tiers_file(tmp_path, base: str, **extra_settings) -> str:
    """Two API tiers on one server, told apart by their answer length (so their identities differ)."""
    settings = "".join(f"{k} = {json.dumps(v)}\n" for k, v in extra_settings.items())
    text = "".join(
        f'[[tier]]\nname = "{name}"\nmodel = "openai/qwen2.5-coder-0.5b"\napi_base = "{base}"\n{PRICES}'
        f"[tier.settings]\nmax_tokens = {tokens}\n{settings}"
        for name, tokens in (("mid", 16), ("flagship", 24)))
    path = tmp_path / "tiers.toml"
    path.write_text(text)
    return str(path)


def cli(*args, cwd, timeout=1500) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})


def _payload(text: str) -> dict:
    return {"messages": [{"role": "system", "content": "Answer with one word."}, {"role": "user", "content": text}],
            "config": {"max_tokens": 6, "temperature": 0.0}}


def test_api_tier_answers_with_logprobs_and_prices_cached_tokens(server, tmp_path):
    tier = load_catalog(tiers_file(tmp_path, server.base))["mid"]
    engine = TierEngine(tier, api_backend(tier), CallCache(tmp_path / "cache"), Ledger())
    first = engine.call(_payload("What colour is the sky on a clear day?"))
    second = engine.call(_payload("What colour is grass in spring?"))  # shares the system prompt's prefix
    assert first.text and first.logprobs and all(lp <= 0 for _, lp in first.logprobs)
    assert first.completion_tokens == len(first.logprobs) <= 6
    record = second.record
    assert 0 < record.cached_tokens < record.prompt_tokens  # llama.cpp reused the shared prefix
    expected = ((record.prompt_tokens - record.cached_tokens) * 0.05 + record.cached_tokens * 0.01
                + record.completion_tokens * 0.2) / 1e6
    assert record.cost_usd == pytest.approx(expected, rel=1e-12)
    assert record.cost_usd < tier.cost(record.prompt_tokens, record.completion_tokens)
    again = engine.call(_payload("What colour is grass in spring?"))
    assert again.record.cache_hit and again.text == second.text and engine.attempts == 2


def test_budget_bound_holds_for_the_served_tokenizer(server, tmp_path):
    # The bound counts UTF-8 bytes plus template tokens; the server's own count (Qwen's tokenizer and
    # chat template) of dense digits, CJK and emoji stays under it.
    from tests.test_budget_bound import ADVERSARIAL

    tier = Tier("t", "openai/qwen2.5-coder-0.5b", 1.0, 0.0, {"max_tokens": 1}, api_base=server.base)
    backend = api_backend(tier)
    for kind in ("dense digits", "CJK", "emoji", "mixed scripts"):
        payload = _payload(ADVERSARIAL[kind][:400])
        payload["config"]["max_tokens"] = 1
        used = backend(payload)["prompt_tokens"]
        bound = round(tier.cost_bound(payload) * 1e6)
        assert used <= bound, kind
        assert used > sum(len(m["content"]) for m in payload["messages"]) // 3 or kind == "mixed scripts"


def test_optimize_and_run_through_the_http_server(server, tmp_path):
    # Generous timeouts: this checks the path, not latency, on a machine that may be busy.
    tiers = tiers_file(tmp_path, server.base, max_concurrency=4, timeout_s=900)
    proc = cli("tiers", "--tiers", tiers, "--check", cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count(f"reachable at {server.base}") == 2

    proc = cli("optimize", "support", "--tiers", tiers, "--limit", "4", "--trials", "12", "--holdout", "0.5",
               "--concurrency", "4", "--json", "--out", "support.tierwise.json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    failed = [line for line in (tmp_path / ".tierwise" / "ledger.jsonl").read_text().splitlines()
              if '"decision": "failed"' in line]
    assert summary["paid_calls"] == summary["full_matrix_calls"] == 4 * 2 * 2, failed
    body = json.loads((tmp_path / "support.tierwise.json").read_text())
    assert [t["api_base"] for t in body["catalog"]] == [server.base] * 2
    cells = body["evaluation"]["cells"]
    answered = [c for c in cells if c["ok"]]
    assert answered and all(c["logprob_mean"] is not None and 0 < c["logprob_mean"] <= 1 for c in answered)

    proc = cli("run", "support.tierwise.json", "--input", json.dumps({"message": "Where is my order A12345?"}),
               "--json", "--ledger", "calls.jsonl", cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ledger = [json.loads(line) for line in (tmp_path / "calls.jsonl").read_text().splitlines()
              if '"annotation": true' not in line]  # a call's decision line
    assert ledger and {r["tier"] for r in ledger} <= {"mid", "flagship"}
    assert all(r["model"] == "openai/qwen2.5-coder-0.5b" for r in ledger)

    proc = cli("optimize", "support", "--tiers", tiers, "--limit", "4", "--trials", "12", "--holdout", "0.5",
               "--json", "--out", "support.tierwise.json", cwd=tmp_path)
    assert proc.returncode == 0 and json.loads(proc.stdout)["paid_calls"] == 0  # everything cached


STALL_TIMEOUT_S = 10.0


@pytest.mark.parametrize("fault", ["429", "500", "503", "reset", "truncated", "malformed", "empty", "timeout"])
def test_transient_faults_are_retried_and_answer_as_without_them(server, tmp_path, fault):
    # Fault on the first attempt only: the retry answers exactly as the fault-free call did. The timeout
    # leaves the retry room for a real answer on a busy 2-core machine (3 s was once exceeded under load).
    with FaultProxy(server.port, fault_for=lambda n: fault if n == 1 else None, retry_after_s=0.5,
                    stall_s=STALL_TIMEOUT_S + 1.0) as proxy:
        tier = Tier("t", "openai/qwen2.5-coder-0.5b", 1.0, 1.0,
                    {"max_tokens": 6, "retries": 2, "backoff_s": 0.05,
                     "timeout_s": STALL_TIMEOUT_S if fault == "timeout" else 120},
                    api_base=proxy.base)
        engine = TierEngine(tier, api_backend(tier), CallCache(tmp_path / "cache"), Ledger())
        direct = api_backend(Tier("d", tier.model, 1, 1, {"max_tokens": 6}, api_base=server.base))
        payload = _payload("Name a primary colour.")
        result = engine.call(payload)
        assert result.text == direct(payload)["text"]
        assert (engine.attempts, engine.retries) == (2, 1)
        assert proxy.injected[fault] == 1


def test_not_transient_is_not_retried_and_a_failing_tier_cools_down(server, tmp_path):
    with FaultProxy(server.port, fault_for=lambda n: "500") as proxy:
        tier = Tier("t", "openai/qwen2.5-coder-0.5b", 1.0, 1.0,
                    {"max_tokens": 6, "retries": 1, "backoff_s": 0.01, "cooldown_after": 2, "cooldown_s": 60},
                    api_base=proxy.base)
        engine = TierEngine(tier, api_backend(tier), CallCache(tmp_path / "cache"), Ledger())
        for i in range(2):
            with pytest.raises(Exception, match="InternalServerError"):
                engine.call(_payload(f"q{i}"))
        assert proxy.requests == 4  # two calls, each retried once
        with pytest.raises(TierCooledDown, match="cooling down"):
            engine.call(_payload("q3"))
        assert proxy.requests == 4  # refused without a request
    # 404: an unknown path is the request's fault, never retried.
    tier = Tier("t", "openai/qwen2.5-coder-0.5b", 1.0, 1.0, {"max_tokens": 6, "retries": 3},
                api_base=f"http://127.0.0.1:{server.port}/nowhere")
    engine = TierEngine(tier, api_backend(tier), CallCache(tmp_path / "c2"), Ledger())
    with pytest.raises(Exception, match="NotFound"):
        engine.call(_payload("q"))
    assert (engine.attempts, engine.retries) == (1, 0)
