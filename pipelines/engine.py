"""The engine under every tier's dspy.LM: disk cache, cost ledger, timeout and retries.

dspy's own cache is turned off for these LMs: this engine caches instead, with the tier's identity in
the key and an optional TTL, and so it sees every call, hit or miss, for the ledger. Backends are
plain functions `payload -> result dict`: the embedded llama.cpp models, a scripted fake for tests,
or dspy's native API engine for configured API models.
"""

from __future__ import annotations

import contextvars
import json
import random
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
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
# The ledger records of a rung's failed calls, for the cascade to annotate with its rung and decision: kept apart
# from current_trace, whose answered calls number a request's candidates (their cache keys).
current_failures: contextvars.ContextVar[list | None] = contextvars.ContextVar("tierwise_failures", default=None)


@dataclass
class CallResult:
    text: str
    prompt_tokens: int
    completion_tokens: int
    logprobs: list[tuple[str, float]] = field(default_factory=list)
    record: CallRecord | None = None
    cut_at: int | None = None  # max_tokens, when the answer stopped there (finish_reason "length")
    request_key: str = ""  # the request's cache key before its candidate number (see TierEngine.call)
    # The model's time when the answer was paid for, cached or not (record.latency_s is this call's wall
    # time: a cache read on a hit). Outcome tables and trails price latency like cost, as in production.
    model_latency_s: float = 0.0


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


class TierUnavailable(Exception):
    """A tier that could not answer for a passing reason (an outage, rate limits, timeouts, a rest),
    after its retries. The message starts "tier NAME unavailable" whatever wraps it (dspy re-raises
    engine errors under its own classes), so the outcome store can tell it from a wrong answer."""


class TierCooledDown(TierUnavailable):
    """The tier failed too often in a row and rests for a while: the cascade's fallback answers."""


PRICE_KEY = "tierwise"  # a Response's provider_data entry: the answering tier and the call's price


UNAVAILABLE = re.compile(r"\btier \S+ unavailable\b")


Settle = Callable[[float | None], None]  # called once after a guarded call: its price, or None when it failed
Guard = Callable[[Tier, dict], Settle | None]  # may refuse a paid call (budget) or reserve its price


class TierEngine:
    """A dspy engine object (`complete`, `stream`, `close`) for one tier."""

    def __init__(self, tier: Tier, backend: Backend, cache: CallCache | None = None, ledger: Ledger | None = None):
        self.tier = tier
        self.backend = backend
        self.cache = cache or CallCache(enabled=False)
        self.ledger = ledger
        self.guard: Guard | None = None
        # Only API tiers cool down unless a tier asks: a local model's failure is the request's, not an outage.
        after = tier.settings.get("cooldown_after", tier.setting("cooldown_after") if tier.is_api else 0)
        self.health = TierHealth(int(after or 0), float(tier.setting("cooldown_s") or 0))
        self.attempts = 0  # backend calls made, retries included (benchmarks read it)
        self.retries = 0
        workers = max(4, int(tier.setting("max_concurrency") or 1) * 2)  # timed-out calls may hold a worker
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"tier-{tier.name}")
        self._count_lock = threading.Lock()

    # -- dspy engine protocol --
    def complete(self, request) -> Response:
        result = self.call(request_payload(request))
        logprobs = tuple(TokenLogprob(token=t, logprob=lp) for t, lp in result.logprobs) or None
        record = result.record
        return Response(
            id=None, model=self.tier.model, message=Message.assistant((TextPart(result.text),)),
            finish_reason="stop",
            usage=Usage(input_tokens=result.prompt_tokens, output_tokens=result.completion_tokens,
                        total_tokens=result.prompt_tokens + result.completion_tokens),
            logprobs=logprobs if request.config.logprobs else None,
            # dspy prices no custom engine: the tier's LM puts this price in its history (pipelines.tier_lm)
            provider_data={PRICE_KEY: {"tier": self.tier.name, "cache_hit": record.cache_hit,
                                       "cost_usd": record.cost_usd + record.saved_usd}},
        )

    def stream(self, request):
        return response_to_events(self.complete(request))

    def close(self) -> None:
        self._pool.shutdown(wait=False)

    # -- the cached, priced, logged call --
    def call(self, payload: dict) -> CallResult:
        sample = current_sample.get()
        request_key = call_key(self.tier.identity(), {**payload, "sample": sample} if sample else payload)
        # dspy asks an engine once per candidate (a predictor with n=3): the same request again within one
        # predictor call is the next candidate, a distinct sample, not a cache hit on the first
        trace = current_trace.get()
        candidate = sum(1 for c in trace if c.request_key == request_key) if trace else 0
        key = call_key(self.tier.identity(), {**payload, "sample": sample, "candidate": candidate}) \
            if candidate else request_key
        started = time.perf_counter()
        cached = self.cache.get(key)
        if cached is None:
            with self.cache.claim(key):
                cached = self.cache.get(key)  # another process may have paid for it while we waited
                if cached is None:
                    return self._pay(key, payload, started, request_key)
        return self._finish(cached, hit=True, latency=time.perf_counter() - started, payload=payload,
                            request_key=request_key)

    def _pay(self, key: str, payload: dict, started: float, request_key: str) -> CallResult:
        """The uncached call: refused while the tier cools down, else priced ahead by the guard (which
        may refuse it), made with retries, settled at its real price, stored before anyone reads it."""
        try:
            self.health.check(self.tier.name)
        except TierCooledDown as error:
            self._record_failure(error, time.perf_counter() - started)
            raise
        settle = self.guard(self.tier, payload) if self.guard is not None else None
        try:
            fresh = self._call_backend(payload)
        except Exception as error:
            if settle is not None:
                settle(None)
            self.health.failed()
            self._record_failure(error, time.perf_counter() - started)
            if transient(error):
                attempts = int(self.tier.setting("retries") or 0) + 1  # transient errors use every retry
                raise TierUnavailable(f"tier {self.tier.name} unavailable after {attempts} attempts: "
                                      f"{root_cause(error)}{type(error).__name__}: {error}"[:500]) from error
            raise
        self.health.succeeded()
        # The call is paid: cache it, settle its price and log it, each even if another fails (a cache or budget
        # server lost at this moment), so the answer is never paid for again and the ledger always shows it.
        lost = []
        for step in (lambda: self.cache.put(key, fresh), lambda: settle and settle(self._price(fresh))):
            try:
                step()
            except Exception as error:  # noqa: BLE001 - the first store error is raised once the call is logged
                lost.append(error)
        call = self._finish(fresh, hit=False, latency=time.perf_counter() - started, payload=payload,
                            request_key=request_key)
        if lost:
            raise lost[0]
        return call

    def _call_backend(self, payload: dict) -> dict:
        retries = int(self.tier.setting("retries") or 0)
        backoff = float(self.tier.setting("backoff_s") or 0.5)
        timeout = self.tier.setting("timeout_s")
        for attempt in range(retries + 1):
            try:
                with self._count_lock:
                    self.attempts += 1
                future = self._pool.submit(contextvars.copy_context().run, self._timed_backend, payload)
                try:
                    return future.result(timeout=timeout)
                except FutureTimeout:
                    raise TierTimeout(f"tier {self.tier.name} timed out after {timeout}s") from None
            except Exception as error:
                if attempt == retries or not transient(error):
                    raise
                with self._count_lock:
                    self.retries += 1
                time.sleep(retry_delay(error, attempt, backoff))
        raise AssertionError("unreachable")

    def _timed_backend(self, payload: dict) -> dict:
        """The backend's answer with the model's time (kept in the cache with it): timed in the worker, so
        a call queued behind others (program.batch) does not count its wait; a backend that waits for a
        shared model (a local tier answers one request at a time) reports its own service time."""
        started = time.perf_counter()
        result = dict(self.backend(payload))
        result.setdefault("latency_s", time.perf_counter() - started)
        return result

    def _record_failure(self, error: Exception, latency: float) -> None:
        """A failed call is logged too (no tokens known, so no cost): uptime problems stay visible."""
        if self.ledger is not None:
            record = CallRecord(
                tier=self.tier.name, model=self.tier.model, predictor=current_predictor.get(),
                prompt_tokens=0, completion_tokens=0, cost_usd=0.0, saved_usd=0.0, latency_s=latency,
                cache_hit=False, request_id=current_request_id.get(), decision="failed",
                error=f"{type(error).__name__}: {error}"[:300])
            self.ledger.add(record)
            failures = current_failures.get()
            if failures is not None:
                failures.append(record)

    def _price(self, result: dict) -> float:
        return self.tier.cost(int(result.get("prompt_tokens", 0)), int(result.get("completion_tokens", 0)),
                              int(result.get("cached_tokens", 0)), int(result.get("cache_write_tokens", 0)))

    def _finish(self, result: dict, hit: bool, latency: float, payload: dict, request_key: str) -> CallResult:
        prompt, completion = int(result.get("prompt_tokens", 0)), int(result.get("completion_tokens", 0))
        limit = (payload.get("config") or {}).get("max_tokens")
        # Answers cached before the finish reason was kept: reaching the limit exactly says the same.
        cut = result.get("finish_reason") == "length" or (bool(limit) and completion >= int(limit))
        price = self._price(result)
        model_latency = float(result.get("latency_s", latency))  # cached with the answer when it was paid
        record = CallRecord(
            tier=self.tier.name, model=self.tier.model, predictor=current_predictor.get(),
            prompt_tokens=prompt, completion_tokens=completion,
            cost_usd=0.0 if hit else price, saved_usd=price if hit else 0.0,
            latency_s=latency if hit else model_latency, cache_hit=hit,
            request_id=current_request_id.get(),
            cached_tokens=int(result.get("cached_tokens", 0)), cache_write_tokens=int(result.get("cache_write_tokens", 0)),
        )
        if self.ledger is not None:
            self.ledger.add(record)
        call = CallResult(result.get("text", ""), prompt, completion,
                          [tuple(x) for x in result.get("logprobs") or []], record,
                          (int(limit) if limit else completion) if cut else None, request_key, model_latency)
        trace = current_trace.get()
        if trace is not None:
            trace.append(call)
        return call


def root_cause(error: BaseException) -> str:
    """The innermost cause of a wrapped error, when it says more ("ConnectError: [Errno 111] Connection
    refused" under litellm's "InternalServerError ... Connection error."): first, or empty."""
    seen, root = {id(error)}, error
    while (inner := root.__cause__ or root.__context__) is not None and id(inner) not in seen:
        seen.add(id(inner))
        root = inner
    text = str(root).strip().splitlines()
    if root is error or not text or text[0] in str(error):
        return ""
    return f"{type(root).__name__}: {text[0][:160]}; via "


class TierHealth:
    """A circuit breaker per tier, as LiteLLM's router cools deployments down: after `after` calls in a
    row failed (each after its retries), the tier is refused for `seconds`, without a request, so the
    cascade's fallback answers at once instead of paying every retry's wait. The first call after the
    rest is a probe: success closes the breaker, failure opens it again."""

    def __init__(self, after: int, seconds: float):
        self.after, self.seconds = after, seconds
        self.failures = 0
        self.until = 0.0
        self.cooldowns = 0
        self._lock = threading.Lock()

    def check(self, name: str) -> None:
        with self._lock:
            left = self.until - time.monotonic()
        if left > 0:
            raise TierCooledDown(f"tier {name} unavailable: cooling down for {left:.1f}s more after "
                                 f"{self.after} failed calls in a row")

    def failed(self) -> None:
        with self._lock:
            self.failures += 1
            if self.after and self.failures >= self.after:
                self.until = time.monotonic() + self.seconds
                self.failures = self.after - 1  # the probe after the rest decides alone
                self.cooldowns += 1

    def succeeded(self) -> None:
        with self._lock:
            self.failures = 0


# Status codes worth another try; any other 4xx is the request's fault and would fail again.
TRANSIENT_STATUS = {408, 409, 425, 429}
MAX_RETRY_AFTER_S = 60.0


def transient(error: BaseException) -> bool:
    """Worth retrying: timeouts, rate limits, server and connection errors, a torn or empty response;
    not bad requests, refused keys or unknown models (400/401/403/404/422)."""
    from pipelines.backends import EmptyCompletion

    status = _status_code(error)
    if status is not None:
        return status in TRANSIENT_STATUS or status >= 500
    if isinstance(error, (TierTimeout, TimeoutError, ConnectionError, EmptyCompletion, json.JSONDecodeError)):
        return True
    name = type(error).__name__.lower()
    return any(word in name for word in ("ratelimit", "timeout", "server", "transport", "connection",
                                         "unavailable", "jsondecode", "incompleteread", "protocol"))


def _status_code(error: BaseException) -> int | None:
    status = getattr(error, "status_code", None)
    if status is None:
        status = getattr(getattr(error, "response", None), "status_code", None)
    return status if isinstance(status, int) and 100 <= status < 600 else None


def retry_after_s(error: BaseException) -> float | None:
    """Seconds the provider asked us to wait (Retry-After, in seconds or as an HTTP date), if it said."""
    headers = getattr(error, "litellm_response_headers", None) or getattr(getattr(error, "response", None),
                                                                          "headers", None)
    value = headers.get("retry-after") if headers is not None else None
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def retry_delay(error: BaseException, attempt: int, backoff_s: float) -> float:
    """Exponential backoff with full jitter (so clients that failed together do not retry together),
    never shorter than the provider's Retry-After."""
    delay = random.uniform(0, min(backoff_s * 2**attempt, 30.0))
    asked = retry_after_s(error)
    return max(delay, asked) if asked is not None else delay
