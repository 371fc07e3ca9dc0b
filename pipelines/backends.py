"""Backends: how a tier's payload becomes text, tokens and log-probabilities.

- local/<key>: the embedded llama.cpp models (pipelines.local), in-process, no network.
- fake/<name>: a scripted engine for tests and demos, deterministic, no model.
- anything else: dspy's native API engine (reads the provider's key from the environment).
"""

from __future__ import annotations

import math
import re
from typing import Callable

from pipelines.tiers import LOCAL_PREFIX, Tier


def local_backend(tier: Tier) -> Callable[[dict], dict]:
    key = tier.model[len(LOCAL_PREFIX):]

    def call(payload: dict) -> dict:
        from pipelines.local import get_server

        body = {"messages": payload["messages"], **payload["config"]}
        body["logprobs"], body["top_logprobs"] = True, 1  # always: confidence needs them, ~5% slower
        body.setdefault("temperature", 0.0)
        if body.get("stop") is None:
            body.pop("stop", None)
        result = get_server(key).chat(body)
        choice = result["choices"][0]
        tokens = (choice.get("logprobs") or {}).get("content") or []
        usage = result.get("usage") or {}
        return {
            "text": choice["message"].get("content") or "",
            "prompt_tokens": usage.get("prompt_tokens", 0),
            "completion_tokens": usage.get("completion_tokens", 0),
            "logprobs": [(t["token"], t["logprob"]) for t in tokens if t.get("token")],
            "finish_reason": choice.get("finish_reason") or "stop",
        }

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


def api_backend(tier: Tier) -> Callable[[dict], dict]:
    """dspy's native engine for an API model: the only path that reaches the network."""
    from dspy.clients.engines.lm15_engine import LM15Engine
    from dspy.lm15 import Config, Message, Request

    engine = LM15Engine()

    def call(payload: dict) -> dict:
        msgs = payload["messages"]
        system = "\n".join(m["content"] for m in msgs if m["role"] == "system") or None
        messages = tuple(Message.user(m["content"]) if m["role"] == "user" else Message.assistant(m["content"])
                         for m in msgs if m["role"] != "system")
        cfg = payload["config"]
        config = Config(max_tokens=cfg.get("max_tokens"), temperature=cfg.get("temperature"),
                        top_p=cfg.get("top_p"), stop=tuple(cfg.get("stop") or ()), logprobs=cfg.get("logprobs"))
        response = engine.complete(Request(model=tier.model, messages=messages, system=system, config=config))
        text = "".join(getattr(p, "text", "") for p in response.message.parts)
        return {"text": text, "prompt_tokens": response.usage.input_tokens or 0,
                "completion_tokens": response.usage.output_tokens or 0,
                "logprobs": [(t.token, t.logprob) for t in response.logprobs or ()]}

    return call


# Scripted engines a test registers for a whole process (e.g. around a CLI command): tier name or "*".
SCRIPTED: dict[str, Callable] = {}


def backend_for(tier: Tier, scripts: dict | None = None) -> Callable[[dict], dict]:
    scripts = scripts or SCRIPTED
    if tier.is_local:
        return local_backend(tier)
    if tier.model.startswith("fake/"):
        if not scripts or tier.name not in scripts and "*" not in scripts:
            raise ValueError(f"tier {tier.name} is a fake model; pass a script for it")
        return ScriptedBackend(tier.name, scripts.get(tier.name) or scripts["*"])
    return api_backend(tier)
