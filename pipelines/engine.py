"""The engine under every tier's dspy.LM: disk cache, cost ledger, timeout and retries.

dspy's own cache is turned off for these LMs: this engine caches instead, with the tier's identity in
the key and an optional TTL, and so it sees every call, hit or miss, for the ledger. Backends are
plain functions `payload -> result dict`: the embedded llama.cpp models, a scripted fake for tests,
or dspy's native API engine for configured API models.
"""

from __future__ import annotations

import contextvars
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Callable

from dspy.lm15 import Message, Response, TextPart, TokenLogprob, Usage, response_to_events

from pipelines.cache import CallCache, call_key
from pipelines.ledger import CallRecord, Ledger
from pipelines.tiers import Tier

Backend = Callable[[dict], dict]  # payload -> {"text", "prompt_tokens", "completion_tokens", "logprobs"}


class TierTimeout(Exception):
    pass


# Set by the cascade around each predictor call so that records name the predictor and the
# cascade can read the calls its rung made (text and token log-probabilities for confidence).
current_predictor: contextvars.ContextVar[str] = contextvars.ContextVar("tierwise_predictor", default="")
current_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("tierwise_request", default="")
current_sample: contextvars.ContextVar[int] = contextvars.ContextVar("tierwise_sample", default=0)
current_trace: contextvars.ContextVar[list | None] = contextvars.ContextVar("tierwise_trace", default=None)


@dataclass
class CallResult:
    text: str
    prompt_tokens: int
    completion_tokens: int
    logprobs: list[tuple[str, float]] = field(default_factory=list)
    record: CallRecord | None = None


def request_payload(request) -> dict:
    """The parts of a dspy request that decide the answer, as plain JSON (cache key and backend input)."""
    system = request.system
    if system is not None and not isinstance(system, str):
        system = "".join(getattr(p, "text", "") for p in system)
    messages = [{"role": m.role, "content": "".join(getattr(p, "text", "") for p in m.parts)}
                for m in request.messages]
    if system:
        messages.insert(0, {"role": "system", "content": system})
    c = request.config
    config = {"max_tokens": c.max_tokens, "temperature": c.temperature, "top_p": c.top_p,
              "stop": list(c.stop) or None, "logprobs": c.logprobs}
    return {"model": request.model, "messages": messages, "config": {k: v for k, v in config.items() if v is not None}}


class TierEngine:
    """A dspy engine object (`complete`, `stream`, `close`) for one tier."""

    def __init__(self, tier: Tier, backend: Backend, cache: CallCache | None = None, ledger: Ledger | None = None):
        self.tier = tier
        self.backend = backend
        self.cache = cache or CallCache(enabled=False)
        self.ledger = ledger
        self.guard: Callable[[Tier, dict], None] | None = None  # may refuse a paid call (budget)
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix=f"tier-{tier.name}")

    # -- dspy engine protocol --
    def complete(self, request) -> Response:
        result = self.call(request_payload(request))
        logprobs = tuple(TokenLogprob(token=t, logprob=lp) for t, lp in result.logprobs) or None
        return Response(
            id=None, model=self.tier.model, message=Message.assistant((TextPart(result.text),)),
            finish_reason="stop",
            usage=Usage(input_tokens=result.prompt_tokens, output_tokens=result.completion_tokens,
                        total_tokens=result.prompt_tokens + result.completion_tokens),
            logprobs=logprobs if request.config.logprobs else None,
        )

    def stream(self, request):
        return response_to_events(self.complete(request))

    def close(self) -> None:
        self._pool.shutdown(wait=False)

    # -- the cached, priced, logged call --
    def call(self, payload: dict) -> CallResult:
        sample = current_sample.get()
        key = call_key(self.tier.identity(), {**payload, "sample": sample} if sample else payload)
        started = time.perf_counter()
        cached = self.cache.get(key)
        if cached is None:
            with self.cache.claim(key):
                cached = self.cache.get(key)  # another process may have paid for it while we waited
                if cached is None:
                    if self.guard is not None:
                        self.guard(self.tier, payload)
                    try:
                        fresh = self._call_backend(payload)
                    except Exception as error:
                        self._record_failure(error, time.perf_counter() - started)
                        raise
                    self.cache.put(key, fresh)
                    return self._finish(fresh, hit=False, latency=time.perf_counter() - started)
        return self._finish(cached, hit=True, latency=time.perf_counter() - started)

    def _call_backend(self, payload: dict) -> dict:
        retries = int(self.tier.setting("retries") or 0)
        backoff = float(self.tier.setting("backoff_s") or 0.5)
        timeout = self.tier.setting("timeout_s")
        for attempt in range(retries + 1):
            try:
                started = time.perf_counter()
                future = self._pool.submit(contextvars.copy_context().run, self.backend, payload)
                try:
                    result = future.result(timeout=timeout)
                except FutureTimeout:
                    raise TierTimeout(f"tier {self.tier.name} timed out after {timeout}s") from None
                result = dict(result)
                result["latency_s"] = time.perf_counter() - started
                return result
            except Exception as error:
                if attempt == retries or not _transient(error):
                    raise
                time.sleep(min(backoff * 2**attempt, 30.0))
        raise AssertionError("unreachable")

    def _record_failure(self, error: Exception, latency: float) -> None:
        """A failed call is logged too (no tokens known, so no cost): uptime problems stay visible."""
        if self.ledger is not None:
            self.ledger.add(CallRecord(
                tier=self.tier.name, model=self.tier.model, predictor=current_predictor.get(),
                prompt_tokens=0, completion_tokens=0, cost_usd=0.0, saved_usd=0.0, latency_s=latency,
                cache_hit=False, request_id=current_request_id.get(), decision="failed",
                error=f"{type(error).__name__}: {error}"[:300]))

    def _finish(self, result: dict, hit: bool, latency: float) -> CallResult:
        prompt, completion = int(result.get("prompt_tokens", 0)), int(result.get("completion_tokens", 0))
        price = self.tier.cost(prompt, completion)
        record = CallRecord(
            tier=self.tier.name, model=self.tier.model, predictor=current_predictor.get(),
            prompt_tokens=prompt, completion_tokens=completion,
            cost_usd=0.0 if hit else price, saved_usd=price if hit else 0.0,
            latency_s=latency if hit else result.get("latency_s", latency), cache_hit=hit,
            request_id=current_request_id.get(),
        )
        if self.ledger is not None:
            self.ledger.add(record)
        call = CallResult(result.get("text", ""), prompt, completion,
                          [tuple(x) for x in result.get("logprobs") or []], record)
        trace = current_trace.get()
        if trace is not None:
            trace.append(call)
        return call


def _transient(error: Exception) -> bool:
    """Worth retrying: timeouts, rate limits, server and connection errors; not bad requests."""
    if isinstance(error, (TierTimeout, TimeoutError, ConnectionError)):
        return True
    name = type(error).__name__.lower()
    return any(word in name for word in ("ratelimit", "timeout", "server", "transport", "connection", "unavailable"))
