"""--budget-usd is a bound: adversarial text (dense digits, CJK, emoji) cannot slip under the estimate,
and calls in flight count against the cap through their reservations."""

from __future__ import annotations

import random
import threading
import time

import pytest

from tests import litellm_tokenizers
from optimizers.outcomes import Budget
from pipelines.cache import CallCache
from pipelines.engine import TierEngine
from pipelines.errors import BudgetExceeded
from pipelines.ledger import Ledger
from tests.conftest import fake_tier

ADVERSARIAL = {
    "dense digits": "".join(random.Random(1).choice("0123456789") for _ in range(600)),
    "digits with separators": " ".join(str(random.Random(2).randrange(10**6)) for _ in range(120)),
    "CJK": "東京都の注文番号は確認できません。配送状況を教えてください。" * 12,
    "emoji": "😀🚀🎉👍🏽👨‍👩‍👧‍👦🇯🇵" * 40,
    "mixed scripts": "Заказ №A12345 — 注文 — طلب — 🎁 — Ünïcödé ×÷" * 15,
    "base64-ish": "".join(random.Random(3).choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
                          for _ in range(800)),
    "whitespace runs": ("\t \n" * 50 + "x") * 4,
}


def _messages(text: str) -> list[dict]:
    return [{"role": "system", "content": "Answer with the order id only."}, {"role": "user", "content": text}]


def _worst_count(messages) -> int:
    """The most tokens any tokenizer at hand gives these messages, with OpenAI's 4 template tokens each."""
    counts = [sum(len(encode(m["content"])) + 4 for m in messages) + 3
              for encode in litellm_tokenizers.encoders().values()]
    return max(counts)


@pytest.mark.parametrize("kind", sorted(ADVERSARIAL))
def test_bound_holds_for_every_tokenizer_at_hand(kind):
    tier = fake_tier("t", 1.0, 1.0)
    payload = {"messages": _messages(ADVERSARIAL[kind]), "config": {"max_tokens": 8}}
    bound_tokens = round(tier.cost_bound(payload) * 1e6) - 8  # price 1 per token: the bound in tokens
    for name, encode in litellm_tokenizers.encoders().items():
        tokens = sum(len(encode(m["content"])) + 4 for m in payload["messages"]) + 3
        assert tokens <= bound_tokens, (kind, name, tokens, bound_tokens)
    chars_over_3 = sum(len(m["content"]) for m in payload["messages"]) // 3 + 1
    if kind in ("dense digits", "emoji", "CJK"):
        assert _worst_count(payload["messages"]) > chars_over_3  # the old estimate was not a bound here


def _dense_backend(payload: dict) -> dict:
    """A provider billing the worst tokenizer's count, and every allowed output token."""
    return {"text": "A12345", "prompt_tokens": _worst_count(payload["messages"]),
            "completion_tokens": payload["config"]["max_tokens"], "logprobs": []}


def test_cap_is_never_passed_by_dense_text(tmp_path):
    # The case: cap $0.004 at gpt-4o-mini-like prices, prompts of dense digits and emoji.
    tier = fake_tier("mini", 0.15, 0.60)
    engine = TierEngine(tier, _dense_backend, CallCache(tmp_path / "cache"), Ledger())
    budget = Budget(0.004)
    engine.guard = budget.reserve
    texts = [ADVERSARIAL[k] + str(i) for i in range(400) for k in ("dense digits", "emoji", "CJK")]
    with pytest.raises(BudgetExceeded, match=r"budget reached: .* could pass it"):
        for text in texts:
            engine.call({"messages": _messages(text), "config": {"max_tokens": 16}})
    assert budget.paid_calls > 10
    assert budget.spent_usd <= 0.004
    assert budget.reserved_usd == pytest.approx(0.0)
    assert budget.spent_usd == pytest.approx(engine.ledger.total_cost())


def test_in_flight_calls_count_against_the_cap(tmp_path):
    # Eight threads at once against a slow provider: the reservations keep the sum of what is spent and
    # what is in flight under the cap at every moment, and no call is paid twice.
    tier = fake_tier("mini", 0.15, 0.60, max_concurrency=8)
    gate = threading.Semaphore(0)
    made = []

    def slow(payload):
        made.append(payload["messages"][-1]["content"])
        time.sleep(0.02)
        return _dense_backend(payload)

    engine = TierEngine(tier, slow, CallCache(tmp_path / "cache"), Ledger())
    budget = Budget(0.0006)
    engine.guard = budget.reserve
    stops = []

    def worker(i):
        gate.acquire()
        for j in range(40):
            try:
                engine.call({"messages": _messages(ADVERSARIAL["dense digits"] + str(j % 25)),
                             "config": {"max_tokens": 16}})
            except BudgetExceeded:
                stops.append(i)
                return

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for _ in threads:
        gate.release()
    for t in threads:
        t.join()
    assert budget.peak_committed_usd <= 0.0006
    assert budget.spent_usd <= 0.0006 and budget.reserved_usd == pytest.approx(0.0)
    assert len(made) == len(set(made)) == budget.paid_calls  # each distinct call paid once
    assert stops  # the cap stopped them


def test_failed_call_releases_its_reservation(tmp_path):
    tier = fake_tier("t", 1.0, 1.0)

    def broken(payload):
        raise ValueError("bad request")

    engine = TierEngine(tier, broken, CallCache(tmp_path / "cache"), Ledger())
    budget = Budget(1.0)
    engine.guard = budget.reserve
    with pytest.raises(ValueError):
        engine.call({"messages": _messages("x"), "config": {"max_tokens": 4}})
    assert (budget.reserved_usd, budget.spent_usd, budget.paid_calls) == (0.0, 0.0, 0)


def test_a_paid_call_is_cached_and_logged_even_when_settling_its_price_fails(tmp_path):
    """The budget (or cache) server lost at the moment a call was paid: the answer was dropped, not logged, and the
    rerun paid it again. It is stored and logged first; the store error is raised after."""
    from conftest import answer, fake_catalog, make_runtime
    from pipelines.errors import StoreError

    calls = []

    def script(tier, messages):
        calls.append(tier)
        return answer(intent="billing")

    def guard(tier, payload):
        def settle(cost_usd):
            if cost_usd is not None:
                raise StoreError("redis://127.0.0.1:1: lost the spend cap (Connection refused)")
        return settle

    runtime = make_runtime(tmp_path, fake_catalog("small"), script)
    runtime.guard = guard
    payload = {"messages": [{"role": "user", "content": "hi"}], "config": {}}
    with pytest.raises(StoreError, match="lost the spend cap"):
        runtime.engine("small").call(payload)
    assert len(runtime.ledger.records) == 1 and not runtime.ledger.records[0].cache_hit
    again = runtime.engine("small").call(payload)
    assert again.record.cache_hit and calls == ["small"]
