"""API tiers without a server: the tiers file's endpoint fields, prices of cached tokens, how a
response is read, which failures are retried, the cool-down, and litellm never imported for
local or scripted tiers."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import run_python
from pipelines.backends import EmptyCompletion, read_chat_completion
from pipelines.cache import CallCache
from pipelines.engine import TierCooledDown, TierEngine, TierUnavailable, retry_delay, transient
from pipelines.errors import ConfigError
from pipelines.ledger import Ledger
from pipelines.tiers import Tier, load_catalog
from tests.conftest import fake_tier

BASE = '[[tier]]\nname = "x"\nmodel = "openai/my-model"\ninput_per_1m = 1\noutput_per_1m = 2\n'


def load(tmp_path, extra: str):
    path = tmp_path / "tiers.toml"
    path.write_text(BASE + extra)
    return load_catalog(path)["x"]


def test_endpoint_fields_are_read_and_kept_without_secrets(tmp_path, monkeypatch):
    tier = load(tmp_path, 'api_base = "http://127.0.0.1:8080/v1/"\napi_key_env = "MY_KEY"\n'
                          '[tier.headers]\nX-Team = "search"\nAuthorization = { env = "MY_TOKEN" }\n')
    assert tier.api_base == "http://127.0.0.1:8080/v1" and tier.key_env == "MY_KEY"
    assert tier.headers == [["X-Team", {"value": "search"}], ["Authorization", {"env": "MY_TOKEN"}]]
    assert tier.availability() == (False, "MY_TOKEN not set (header)")
    monkeypatch.setenv("MY_TOKEN", "Bearer abc")
    assert tier.availability() == (False, "MY_KEY not set")
    monkeypatch.setenv("MY_KEY", "")
    assert tier.availability() == (False, "MY_KEY is set but empty")
    monkeypatch.setenv("MY_KEY", "sk-secret-value")
    assert tier.availability() == (True, "key present at http://127.0.0.1:8080/v1")
    assert tier.api_key() == "sk-secret-value"
    assert tier.header_values() == {"X-Team": "search", "Authorization": "Bearer abc"}
    dumped = json.dumps(tier.to_dict())
    assert "sk-secret-value" not in dumped and "Bearer abc" not in dumped and "MY_KEY" in dumped
    other = Tier(tier.name, tier.model, 1, 2, tier.settings, api_base="http://127.0.0.1:9090/v1")
    assert other.identity() != tier.identity()  # another server is another model


def test_a_tier_without_endpoint_fields_serializes_as_before():
    assert set(fake_tier("a", 1, 2).to_dict()) == {"name", "model", "input_per_1m", "output_per_1m", "settings",
                                                    "price_source"}


@pytest.mark.parametrize("extra, message", [
    ('api_key_env = "sk-abc123"\n', "NAME of an environment variable"),
    ('api_base = "127.0.0.1:8080"\n', "api_base must be an http(s) URL"),
    ('api_base = "https://user:pw@host/v1"\n', "must not carry credentials"),
    ('[tier.headers]\nAuthorization = "Bearer sk-live-123"\n', "header Authorization looks like a credential"),
    ('[tier.headers]\nX-Api-Key = "abc"\n', "header X-Api-Key looks like a credential"),
    ('[tier.headers]\nX-Custom = "sk-live-1234567890"\n', "header X-Custom looks like a credential"),
    ('[tier.headers]\nX-Custom = "' + "a" * 40 + '"\n', "looks like a credential"),
    ('[tier.headers]\nX-Custom = { name = "V" }\n', 'must be a string or { env = "VARIABLE" }'),
    ('[tier.headers]\nX-Custom = 3\n', 'must be a string or { env = "VARIABLE" }'),
    ('api_key = "sk-1"\n', "API keys belong in environment variables"),
])
def test_keys_and_credentials_in_a_tiers_file_are_refused(tmp_path, extra, message):
    with pytest.raises(ConfigError, match="tiers.toml") as err:
        load(tmp_path, extra)
    assert message in str(err.value)


def test_endpoint_fields_only_for_api_models(tmp_path):
    path = tmp_path / "t.toml"
    path.write_text('[[tier]]\nname = "x"\nmodel = "fake/x"\napi_base = "http://127.0.0.1:1/v1"\n')
    with pytest.raises(ConfigError, match="are for API models"):
        load_catalog(path)


def test_price_map_supplies_cached_rates(tmp_path):
    path = tmp_path / "t.toml"
    path.write_text('[[tier]]\nname = "m"\nmodel = "openai/gpt-4o-mini"\n')
    tier = load_catalog(path)["m"]
    assert (tier.input_per_1m, tier.cached_input_per_1m) == pytest.approx((0.15, 0.075))


def test_cached_tokens_are_priced_at_their_rates():
    tier = Tier("a", "anthropic/x", 3.0, 15.0, cached_input_per_1m=0.3, cache_write_per_1m=3.75)
    # 1000 input tokens: 600 read from the cache, 300 written to it, 100 plain; 50 output
    assert tier.cost(1000, 50, cached_tokens=600, cache_write_tokens=300) == pytest.approx(
        (100 * 3.0 + 600 * 0.3 + 300 * 3.75 + 50 * 15.0) / 1e6)
    assert Tier("b", "openai/x", 1.0, 2.0).cost(100, 10, cached_tokens=40) == pytest.approx((100 + 20) / 1e6)


def test_responses_are_read_with_cache_counts():
    openai_shape = {"choices": [{"message": {"content": "billing"}, "finish_reason": "stop",
                                 "logprobs": {"content": [{"token": "billing", "logprob": -0.1}]}}],
                    "usage": {"prompt_tokens": 120, "completion_tokens": 1,
                              "prompt_tokens_details": {"cached_tokens": 100}}}
    out = read_chat_completion(openai_shape)
    assert (out["text"], out["prompt_tokens"], out["cached_tokens"], out["logprobs"]) == \
        ("billing", 120, 100, [("billing", -0.1)])
    anthropic_shape = {"choices": [{"message": {"content": "ok"}}],  # as litellm returns Anthropic usage
                       "usage": {"prompt_tokens": 900, "completion_tokens": 2, "cache_read_input_tokens": 500,
                                 "cache_creation_input_tokens": 300}}
    out = read_chat_completion(anthropic_shape)
    assert (out["cached_tokens"], out["cache_write_tokens"]) == (500, 300)
    with pytest.raises(EmptyCompletion):
        read_chat_completion({"choices": [{"message": {"content": None}, "finish_reason": None}],
                              "usage": {"completion_tokens": 0}})
    with pytest.raises(EmptyCompletion):  # litellm reports "stop" even for a torn answer
        read_chat_completion({"choices": [{"message": {"content": ""}, "finish_reason": "stop"}],
                              "usage": {"prompt_tokens": 9, "completion_tokens": 0}})
    with pytest.raises(EmptyCompletion):
        read_chat_completion({"choices": []})


class HTTPError(Exception):
    def __init__(self, status, headers=None):
        super().__init__(f"HTTP {status}")
        self.status_code = status
        self.litellm_response_headers = headers or {}


@pytest.mark.parametrize("status, retried", [(429, True), (408, True), (500, True), (502, True), (503, True),
                                             (400, False), (401, False), (403, False), (404, False), (422, False)])
def test_which_statuses_are_retried(status, retried):
    assert transient(HTTPError(status)) is retried


def test_retry_waits_at_least_retry_after_and_jitters_below_the_backoff():
    assert retry_delay(HTTPError(429, {"retry-after": "2"}), 0, 0.1) >= 2.0
    assert retry_delay(HTTPError(429, {"retry-after": "9999"}), 0, 0.1) == 60.0  # capped
    delays = {retry_delay(HTTPError(503), 3, 0.5) for _ in range(50)}
    assert len(delays) > 40 and all(0 <= d <= 4.0 for d in delays)


def test_a_failing_tier_cools_down_and_the_probe_decides(tmp_path, monkeypatch):
    outcomes = iter([HTTPError(503), HTTPError(503), "ok", HTTPError(503), HTTPError(503)])
    calls = []

    def backend(payload):
        calls.append(payload)
        out = next(outcomes)
        if isinstance(out, Exception):
            raise out
        return {"text": out, "prompt_tokens": 1, "completion_tokens": 1}

    tier = fake_tier("t", 1, 1, cooldown_after=2, cooldown_s=30)
    engine = TierEngine(tier, backend, CallCache(tmp_path / "c"), Ledger())
    clock = [1000.0]
    monkeypatch.setattr("pipelines.engine.time.monotonic", lambda: clock[0])
    pay = lambda i: engine.call({"messages": [{"role": "user", "content": str(i)}], "config": {}})  # noqa: E731
    for i in range(2):
        with pytest.raises(TierUnavailable, match=r"tier t unavailable after 1 attempts: HTTPError: HTTP 503"):
            pay(i)
    with pytest.raises(TierCooledDown):
        pay(2)
    assert len(calls) == 2 and engine.ledger.records[-1].decision == "failed"
    clock[0] += 31
    assert pay(3).text == "ok"  # the probe answered: the breaker closes
    with pytest.raises(TierUnavailable):
        pay(4)
    with pytest.raises(TierUnavailable):
        pay(5)  # one failure after a success does not open it; two in a row do
    with pytest.raises(TierCooledDown):
        pay(6)


def test_local_tiers_never_cool_down_unless_asked(tmp_path):
    from pipelines.tiers import default_catalog

    engine = TierEngine(default_catalog()["cheap"], lambda p: {}, CallCache(enabled=False))
    assert engine.health.after == 0
    assert TierEngine(Tier("a", "openai/x", 1, 1), lambda p: {}).health.after == 3


def test_litellm_is_not_imported_for_scripted_or_local_tiers(tmp_path):
    code = """
import sys, json
from pipelines.runtime import Runtime
from pipelines.tiers import Catalog, Tier
import dspy
rt = Runtime(Catalog([Tier("s", "fake/s", 1, 1, {"retries": 0})]), scripts={"*": lambda t, m: "hi"})
rt.engine("s").call({"messages": [{"role": "user", "content": "x"}], "config": {}})
print(json.dumps({"litellm": "litellm" in sys.modules}))
"""
    out = run_python(code, cwd=tmp_path).stdout.strip().splitlines()[-1]
    assert json.loads(out) == {"litellm": False}


@pytest.mark.parametrize("status, kept", [(503, False), (429, False), (400, True)])
def test_outcomes_lost_to_an_outage_are_not_stored(status, kept):
    # dspy re-raises engine errors under its own classes; the message still says the tier was unavailable.
    from optimizers.outcomes import _passing_failure
    from pipelines.cascade import LiveRungs
    from pipelines.runtime import Runtime
    from pipelines.tasks import load_task
    from pipelines.tiers import Catalog

    def script(tier, messages):
        raise HTTPError(status)

    runtime = Runtime(Catalog([fake_tier("s", 1, 1)]), cache=CallCache(enabled=False), scripts={"*": script})
    name, predictor = load_task("support").build_program().named_predictors()[0]
    outcome = LiveRungs(runtime)(name, predictor, "s", {"message": "hi"}, "none")
    assert not outcome.ok and f"HTTP {status}" in outcome.error
    assert _passing_failure(outcome) is not kept


class ModelList(BaseHTTPRequestHandler):
    """GET /v1/models of an OpenAI-compatible server that wants `Bearer good`."""

    def do_GET(self):
        ok = self.headers.get("Authorization") == "Bearer good" and self.path == "/v1/models"
        body = json.dumps({"data": [{"id": "m1"}, {"id": "m2"}]} if ok else {"error": "no"}).encode()
        self.send_response(200 if ok else (401 if self.path == "/v1/models" else 404))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_check_says_which_tier_is_unreachable_and_why(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import cli
    from tests.http_servers import free_port

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), ModelList)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    port, dead = httpd.server_address[1], free_port()
    monkeypatch.setenv("GOOD_KEY", "good")
    monkeypatch.setenv("BAD_KEY", "bad")
    tiers = "".join(f'[[tier]]\nname = "{n}"\nmodel = "openai/{m}"\napi_base = "{base}"\n{key}'
                    "input_per_1m = 1\noutput_per_1m = 1\n"
                    for n, m, base, key in (
                        ("ok", "m1", f"http://127.0.0.1:{port}/v1", 'api_key_env = "GOOD_KEY"\n'),
                        ("typo", "m3", f"http://127.0.0.1:{port}/v1", 'api_key_env = "GOOD_KEY"\n'),
                        ("refused", "m1", f"http://127.0.0.1:{port}/v1", 'api_key_env = "BAD_KEY"\n'),
                        ("wrong", "m1", f"http://127.0.0.1:{port}/api", 'api_key_env = "GOOD_KEY"\n'),
                        ("gone", "m1", f"http://127.0.0.1:{dead}/v1", "")))
    path = tmp_path / "tiers.toml"
    path.write_text(tiers)
    try:
        plain = CliRunner().invoke(cli.app, ["tiers", "--tiers", str(path), "--json"])
        assert plain.exit_code == 0 and all(r["available"] for r in json.loads(plain.stdout))  # offline: no probe
        result = CliRunner().invoke(cli.app, ["tiers", "--tiers", str(path), "--check"])
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line]
    assert lines == [
        f"tier refused (openai/m1) is unreachable: HTTP 401 key refused from http://127.0.0.1:{port}/v1/models",
        f"tier wrong (openai/m1) is unreachable: HTTP 404 no /models here (is api_base right?) from "
        f"http://127.0.0.1:{port}/api/models",
        f"tier gone (openai/m1) is unreachable: connection refused (http://127.0.0.1:{dead}/v1)",
    ]
    assert f"reachable at http://127.0.0.1:{port}/v1 (2 models listed); tiers file" in result.stdout  # m1: listed
    assert (f"reachable at http://127.0.0.1:{port}/v1 (2 models listed); warning: 'm3' is not among them (m1, m2): "
            "check the model id") in result.stdout
    assert "bad" not in result.stdout + result.stderr.replace("BAD_KEY", "")


def test_while_a_tier_rests_the_cascade_fallback_answers(tmp_path):
    # Tier "a" is down (503 on every call); after two failed calls it rests and is not asked again,
    # while tier "b" answers every question through the cascade's fallback.
    from conftest import fake_catalog, make_runtime
    from pipelines.cascade import CompiledProgram
    from pipelines.policy import Policy, PredictorPolicy
    from tests.test_cascade import QA

    asked = []

    def script(tier, messages):
        asked.append(tier)
        if tier == "a":
            raise HTTPError(503)
        return "Paris"

    catalog = fake_catalog("a", "b", a={"cooldown_after": 2, "cooldown_s": 60})
    runtime = make_runtime(tmp_path, catalog, script)
    program = CompiledProgram(QA(), Policy({"qa": PredictorPolicy(["a"])}), runtime)
    answers = [program(question=f"capital of France? ({i})").answer for i in range(5)]
    assert answers == ["Paris"] * 5
    assert asked.count("a") == 2 and asked.count("b") == 5
    assert [s.decision for s in program.last_trail] == ["failed", "fallback"]
    assert "cooling down" in program.last_trail[0].error
    assert runtime.engine("a").health.cooldowns == 1


def test_an_endpoint_that_never_completes_the_handshake_fails_at_the_connect_timeout(tmp_path):
    """An https api_base on a plain-HTTP server: the TLS handshake never completes. The call fails after
    `connect_timeout_s`, not after `timeout_s` (120 s by default, on every attempt)."""
    import socket
    import time

    from pipelines.backends import api_backend

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts connections (the kernel does), never says a word
    port = silent.getsockname()[1]
    tier = Tier("t", "openai/m", 1.0, 1.0, {"retries": 0, "timeout_s": 60, "connect_timeout_s": 0.5},
                api_base=f"https://127.0.0.1:{port}/v1")
    engine = TierEngine(tier, api_backend(tier), CallCache(enabled=False), Ledger())
    started = time.perf_counter()
    try:
        with pytest.raises(Exception) as error:
            engine.call({"messages": [{"role": "user", "content": "hi"}], "config": {"max_tokens": 4}})
    finally:
        silent.close()
    assert time.perf_counter() - started < 30  # connect timeout (0.5 s), far under timeout_s (60 s)
    assert transient(error.value.__cause__ or error.value)  # a timeout: retried, then the cascade falls back


def test_a_refused_connection_is_named_under_litellms_wrapping(tmp_path):
    """Nothing listens on the port: litellm reports "InternalServerError ... Connection error."; the tier's error
    now leads with the innermost cause (the refused connection), as `tiers --check` says it."""
    import socket

    from pipelines.backends import api_backend
    from pipelines.engine import TierUnavailable

    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # a port nothing listens on
    tier = Tier("t", "openai/m", 1.0, 1.0, {"retries": 0, "timeout_s": 30}, api_base=f"http://127.0.0.1:{port}/v1")
    engine = TierEngine(tier, api_backend(tier), CallCache(enabled=False), Ledger())
    with pytest.raises(TierUnavailable) as error:
        engine.call({"messages": [{"role": "user", "content": "hi"}], "config": {"max_tokens": 4}})
    assert "Connection refused" in str(error.value).split("; via ")[0], str(error.value)


def test_a_model_listed_under_an_alias_is_not_warned_about():
    """llama.cpp serves `--alias` names and lists them under each model's "aliases"."""
    from pipelines.probe import _unlisted

    listed = [{"id": "/models/qwen2.5-0.5b.gguf", "aliases": ["qwen-small", "qwen-big"]}]
    assert _unlisted("openai/qwen-small", listed) == ""
    assert "'qwen-tiny' is not among them" in _unlisted("openai/qwen-tiny", listed)
