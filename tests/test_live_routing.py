"""Live compiles route on the input: when a cheap tier's own confidence says nothing, but which requests
it gets right can be read from the request itself, the compiled policy starts those on the cheap tier."""

from __future__ import annotations

import numpy as np
import pytest

from optimizers.live import OptimizeOptions, optimize
from pipelines.artifact import load_program
from pipelines.cache import CallCache
from pipelines.routing import InputRouter, Router, route_text
from tests.fakes import support_rows, write_tiers

EASY = {"shipping", "returns"}  # small is right on these intents, wrong on the rest, equally confident


def topic_script():
    rows = support_rows()

    def script(tier, messages):
        text = messages[-1]["content"]
        row = next(r for m, r in rows.items() if m in text)
        field = "intent" if "intent" in messages[0]["content"].split("\n")[-1] else "order_id"
        gold = row[field]
        right = tier == "big" or row["intent"] in EASY
        wrong = ("billing" if gold != "billing" else "account") if field == "intent" else \
            ("none" if gold != "none" else "Z99999")
        return (gold if right else wrong), 0.9  # the same confidence, right or wrong

    return script


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("routing")
    summary = optimize(OptimizeOptions(task="support", tiers=str(write_tiers(tmp)), scripts={"*": topic_script()},
                                       work_dir=tmp, storage=f"sqlite:///{tmp}/s.db",
                                       out=str(tmp / "support.tierwise.json"), limit=150, trials=150, seed=0))
    return tmp, summary


def test_routes_the_requests_the_cheap_tier_gets_right(compiled):
    tmp, summary = compiled
    big = summary["baselines"]["big"]["holdout"]
    assert summary["holdout"]["quality"] >= big["quality"] - 0.05
    # Uniform confidence: no cascade can tell right from wrong, so any saving at parity comes from the router.
    assert summary["holdout"]["cost_per_1k"] < 0.93 * big["cost_per_1k"]
    assert any("route_lambda" in p or p["estimator"] == "learned" for p in summary["policy"].values())


def test_the_artifact_carries_its_routers_and_runs_them(compiled):
    tmp, summary = compiled
    rows = support_rows()
    program = load_program(tmp / "support.tierwise.json", cache=CallCache(tmp / "cache"), scripts={"*": topic_script()})
    assert program.artifact["routers"], "the chosen policy reads an input router"
    def small_answers(intents) -> int:
        """On how many of 12 messages with these intents a small-tier answer stood (either predictor: small is
        right on both for the easy intents only, and the compile may route either one)."""
        messages = [m for m, r in rows.items() if r["intent"] in intents][:12]
        count = 0
        for message in messages:
            program(message=message)
            count += any(s.tier == "small" and s.decision == "accepted" for s in program.last_trail)
        return count

    assert small_answers(EASY) >= 3
    assert small_answers({"technical", "billing"}) <= 1


def test_input_router_prefers_known_out_of_fold_predictions():
    router = Router(["a", "b"], "hashed-words", k=2)
    router.memory_ = np.zeros((2, 1024), np.float32)
    router.scores_, router.scored_ = np.ones((2, 2)), np.ones((2, 2), bool)
    router.base_rate_, router.weights_, router.bias_ = np.ones(2), np.zeros((1024, 2), np.float32), np.ones(2)
    known = {route_text({"message": "seen"}): np.array([0.1, 0.2])}
    inputs = InputRouter(router, known)
    assert inputs.predict_inputs({"message": "seen"}) == {"a": 0.1, "b": 0.2}
    assert inputs.predict_inputs({"message": "new"}) == {"a": 1.0, "b": 1.0}
    assert route_text({"q": "x", "c": 2}) == "q: x\nc: 2"
