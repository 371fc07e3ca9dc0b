"""Parallel recording (--concurrency): the same outcome table and choice as one call at a time, each
distinct call paid once, the budget never passed with calls in flight, per-tier limits held."""

from __future__ import annotations

import threading
import time

import pytest

from optimizers.live import OptimizeOptions, optimize
from optimizers.recording import tier_limit
from pipelines.errors import BudgetExceeded
from pipelines.ledger import Ledger
from pipelines.tiers import Tier, default_catalog
from tests.fakes import support_script, write_tiers

LIMIT = 16


def watched_script(log: list, in_flight: dict, peak: dict, lock: threading.Lock):
    """support_script with a short wait per call, noting every call and how many ran at once per tier."""
    base = support_script()

    def script(tier, messages):
        with lock:
            in_flight[tier] = in_flight.get(tier, 0) + 1
            peak[tier] = max(peak.get(tier, 0), in_flight[tier])
            log.append((tier, messages[-1]["content"], messages[0]["content"][:40]))
        time.sleep(0.01)
        with lock:
            in_flight[tier] -= 1
        return base(tier, messages)

    return script


def run(tmp, concurrency, tiers_text=None, **kw):
    tmp.mkdir(parents=True, exist_ok=True)
    log, in_flight, peak, lock = [], {}, {}, threading.Lock()
    tiers = write_tiers(tmp)
    if tiers_text:
        tiers.write_text(tiers_text)
    summary = optimize(OptimizeOptions(
        task="support", tiers=str(tiers), scripts={"*": watched_script(log, in_flight, peak, lock)},
        work_dir=tmp, storage=f"sqlite:///{tmp}/s.db", out=str(tmp / "a.json"), limit=LIMIT, trials=12, seed=0,
        concurrency=concurrency, **kw))
    return summary, log, peak


def test_parallel_recording_matches_one_at_a_time(tmp_path):
    one, log_one, peak_one = run(tmp_path / "one", 1)
    many, log_many, peak_many = run(tmp_path / "many", 6)
    full = LIMIT * 2 * 2
    assert one["paid_calls"] == many["paid_calls"] == full
    assert len(log_many) == len(set(log_many)) == full  # nothing paid twice
    assert sorted(log_one) == sorted(log_many)
    assert max(peak_one.values()) == 1 and max(peak_many.values()) > 1
    assert many["spent_usd"] == pytest.approx(one["spent_usd"], rel=1e-9)
    for key in ("policy", "dev", "holdout", "baselines"):
        assert many[key] == one[key], key


def test_per_tier_limit_from_the_tiers_file(tmp_path):
    text = write_tiers(tmp_path).read_text().replace(
        'output_per_1m = 4.0\n', 'output_per_1m = 4.0\n[tier.settings]\nmax_concurrency = 2\n')
    summary, log, peak = run(tmp_path / "limited", 8, tiers_text=text)
    assert peak["big"] <= 2 < peak["small"]
    assert summary["paid_calls"] == LIMIT * 4


def test_budget_holds_with_calls_in_flight(tmp_path):
    cap = 0.003
    with pytest.raises(BudgetExceeded, match="could pass it"):
        run(tmp_path, 8, budget_usd=cap)
    ledger = Ledger.read_frame(tmp_path / "ledger.jsonl")
    paid = ledger.loc[~ledger["cache_hit"] & (ledger["decision"] != "failed")]
    assert 0 < paid["cost_usd"].sum() <= cap
    assert paid["call_id"].is_unique


def test_tier_limits():
    cheap = default_catalog()["cheap"]
    assert tier_limit(cheap, 8) == 1  # local: one generation at a time
    api = Tier("a", "openai/x", 1, 1, {"max_concurrency": 3})
    assert tier_limit(api, 8) == 3 and tier_limit(api, 2) == 2
    assert tier_limit(Tier("b", "openai/x", 1, 1), 5) == 5


@pytest.mark.parametrize("concurrency", [1, 6])
def test_each_tier_is_released_once_it_has_answered_every_row(tmp_path, monkeypatch, concurrency):
    """So that a compile's local models need not all be resident at once (peak RSS: the largest, not the sum)."""
    from pipelines.runtime import Runtime

    released = []
    monkeypatch.setattr(Runtime, "release_local_models",
                        lambda self, names, keep=(): released.append((list(names), list(keep))))
    summary, log, _ = run(tmp_path / "r", concurrency)
    assert sorted(name for names, _ in released for name in names) == ["big", "small"]  # each tier, once
    assert released[-1][1] == []  # the last one released: nothing left to record
    for names, keep in released:  # nothing still recording was released
        last_call = max(i for i, (tier, _, _) in enumerate(log) if tier == names[0])
        assert all(any(tier == k for tier, _, _ in log[last_call:]) for k in keep)
    if concurrency == 1:  # the top tier first: the cheaper tier's fallbacks read its recorded cells
        assert released == [(["big"], ["small"]), (["small"], [])]
        first_small = next(i for i, (tier, _, _) in enumerate(log) if tier == "small")
        assert all(tier == "small" for tier, _, _ in log[first_small:])  # no big model needed again


def test_releasing_local_models_keeps_those_a_remaining_tier_runs_on(monkeypatch):
    from pipelines import local
    from pipelines.runtime import Runtime
    from pipelines.tiers import Catalog

    catalog = default_catalog()
    twin = Tier("mid-long", catalog["mid"].model, 1.0, 1.0, {"max_tokens": 512})  # the mid model, other settings
    runtime = Runtime(Catalog([*catalog.tiers, twin]))
    loaded = {tier.model.split("/", 1)[1]: object() for tier in catalog.tiers}
    monkeypatch.setattr(local, "_servers", dict(loaded))  # stand-ins: no model is loaded by this test
    runtime.release_local_models(["cheap", "mid"], keep=["mid-long", "flagship"])
    assert set(local._servers) == set(loaded) - {catalog["cheap"].model.split("/", 1)[1]}
    runtime.release_local_models(["mid-long", "flagship"])
    assert local._servers == {}
    assert local.release_server("qwen2.5-coder-0.5b") is None  # already released: nothing to do
