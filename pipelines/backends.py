"""Backends: how a tier's payload becomes text, tokens and log-probabilities.

- local/<key>: the embedded llama.cpp models (pipelines.local), in-process, no network.
- fake/<name>: a scripted engine for tests and demos, deterministic, no model.
- anything else: an API model through litellm, at the tier's api_base when it names one, with the key
  read from the environment variable the tier names (or the provider's usual one).
"""

from __future__ import annotations

import math
import re
from typing import Callable

from pipelines.tiers import LOCAL_PREFIX, SCRIPTED, Tier


def local_backend(tier: Tier) -> Callable[[dict], dict]:
    key = tier.model[len(LOCAL_PREFIX):]

    def call(payload: dict) -> dict:
        from pipelines.local import get_server

        body = {"messages": payload["messages"], **payload["config"]}
        body["logprobs"], body["top_logprobs"] = True, 1  # always: confidence needs them, ~5% slower
        body.setdefault("temperature", 0.0)
        if body.get("stop") is None:
            body.pop("stop", None)
        completion, seconds = get_server(key).chat(body)
        return {**read_chat_completion(completion), "latency_s": seconds}

    return call


class ScriptedBackend:
    """A fake model: `script(tier_name, messages) -> text | (text, confidence) | Exception`.

    Token counts are word counts; every token's log-probability is log(confidence), so a test can
    steer logprob-based escalation exactly. Raising (or returning) an exception simulates a failure;
    returning the string "sleep:<seconds>" first sleeps (to exercise timeouts)."""

    def __init__(self, tier_name: str, script: Callable):
        self.tier_name = tier_name
        self.script = script
        self.calls: list[dict] = []

    def __call__(self, payload: dict) -> dict:
        self.calls.append(payload)
        out = self.script(self.tier_name, payload["messages"])
        if isinstance(out, Exception):
            raise out
        text, confidence = out if isinstance(out, tuple) else (out, 0.9)
        if text.startswith("sleep:"):
            import time

            seconds, _, text = text[len("sleep:"):].partition(":")
            time.sleep(float(seconds))
        pieces = re.findall(r"\s*\S+", text)
        logprob = math.log(max(min(confidence, 1.0), 1e-9))
        prompt_words = sum(len(m["content"].split()) for m in payload["messages"])
        return {"text": text, "prompt_tokens": prompt_words, "completion_tokens": len(pieces),
                "logprobs": [(p, logprob) for p in pieces]}


class EmptyCompletion(Exception):
    """A torn answer: no choices, or empty content with no generated tokens. Worth one more try.
    (litellm fills in a missing finish reason, so "stop" cannot tell a torn answer from a finished one.)"""


def api_backend(tier: Tier) -> Callable[[dict], dict]:
    """An API model through litellm: the only path that reaches the network.

    litellm is imported on the first call (it takes seconds to import), so a catalog that only names
    local or scripted tiers never loads it. Retries are the engine's, not litellm's (num_retries=0 and
    max_retries=0 for the OpenAI client under it): the engine sees every attempt, so backoff, Retry-After,
    cool-down and the budget's reservation stay in one place."""

    def call(payload: dict) -> dict:
        import httpx
        import litellm

        litellm.suppress_debug_info = True  # its help banner would print on every failed attempt
        cfg = payload["config"]
        timeout = float(tier.setting("timeout_s"))
        kwargs = {"model": tier.model, "messages": payload["messages"], "num_retries": 0, "max_retries": 0,
                  "drop_params": True,  # a provider without logprobs (or top_p...) ignores them, not fails
                  "timeout": httpx.Timeout(timeout, connect=min(timeout, float(tier.setting("connect_timeout_s"))))}
        for key in ("max_tokens", "temperature", "top_p", "stop"):
            if cfg.get(key) is not None:
                kwargs[key] = cfg[key]
        # Always, as for local tiers: confidence reads them; drop_params drops them where unsupported.
        kwargs["logprobs"], kwargs["top_logprobs"] = True, 1
        if tier.api_base:
            kwargs["api_base"] = tier.api_base
        key = tier.api_key()
        if key:
            kwargs["api_key"] = key
        elif tier.api_base:
            kwargs["api_key"] = "none"  # a keyless local server; the OpenAI client insists on some key
        headers = tier.header_values()
        if headers:
            kwargs["extra_headers"] = headers
        response = litellm.completion(**kwargs)
        return read_chat_completion(response.model_dump() if hasattr(response, "model_dump") else dict(response))

    return call


def read_chat_completion(body: dict) -> dict:
    """An OpenAI-shaped chat completion (as litellm returns for every provider) as a backend result,
    with the prompt-cache counts where the usage reports them (OpenAI `prompt_tokens_details.cached_tokens`,
    Anthropic `cache_read_input_tokens` / `cache_creation_input_tokens`)."""
    choices = body.get("choices") or []
    if not choices:
        raise EmptyCompletion("the response has no choices")
    choice = choices[0]
    text = (choice.get("message") or {}).get("content") or ""
    usage = body.get("usage") or {}
    completion_tokens = int(usage.get("completion_tokens") or 0)
    if not text and not completion_tokens:
        raise EmptyCompletion("empty content and no generated tokens")
    details = usage.get("prompt_tokens_details") or {}
    cached = usage.get("cache_read_input_tokens") or details.get("cached_tokens") or 0
    written = usage.get("cache_creation_input_tokens") or details.get("cache_creation_tokens") or 0
    tokens = (choice.get("logprobs") or {}).get("content") or []
    return {"text": text, "prompt_tokens": int(usage.get("prompt_tokens") or 0),
            "completion_tokens": completion_tokens, "cached_tokens": int(cached), "cache_write_tokens": int(written),
            "logprobs": [(t["token"], t["logprob"]) for t in tokens if t.get("token") is not None],
            "finish_reason": choice.get("finish_reason") or "stop"}
# SCRIPTED (imported above) is where tests register scripted engines for a whole process.


def backend_for(tier: Tier, scripts: dict | None = None) -> Callable[[dict], dict]:
    scripts = scripts or SCRIPTED
    if tier.is_local:
        return local_backend(tier)
    if tier.model.startswith("fake/"):
        if not scripts or tier.name not in scripts and "*" not in scripts:
            raise ValueError(f"tier {tier.name} is a fake model; pass a script for it")
        return ScriptedBackend(tier.name, scripts.get(tier.name) or scripts["*"])
    return api_backend(tier)
