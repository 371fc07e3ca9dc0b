"""Semantic cache on a request stream with realistic repetition, through the compiled support pipeline.

1. Compile the support task with the semantic cache searched (optimizers.stages, semantic_cache=True) on
   support.jsonl + support_paraphrases.jsonl (342 rows, 30% held out), on scripted fake tiers: "small"
   answers simple rows right (confidence 0.95) and others wrong (0.4), "big" is always right
   (tests.test_semantic_cache.script_for; the local tiers would take hours for the stream below).
2. Build a stream of --requests requests (seeded): new requests (support rows and paraphrase-group bases,
   in random order), hand-written paraphrases from the groups, surface variants of earlier requests
   (greeting, sign-off, case, punctuation), exact repeats, entity swaps of earlier requests (a new order
   number or amount: same intent, another order id), and requests close to an earlier one in meaning
   but not the same: the groups' negations and near-topic rows, each once, then the unused support row
   nearest (cosine) to a random earlier request. A later repeat of any of these counts as a repeat.
3. Run the stream through the compiled artifact without the cache (the ladder's own answers), then with
   the cache at 0.80 / 0.90 / 0.95 on both predictors and at the searched policy, a fresh cache per run;
   and, to show what the guards do, at the same thresholds with the entity guards switched off.

Per run: lookups, hits, wrong hits (a hit whose answer differs from the ladder's answer to that request),
cost saved against the ladder, quality (the task metric against the stream's labels), lookup latency
p50/p99 (the request's vector already embedded: the embedding cost is reported once, per new text).

Usage:  PYTHONPATH=. python benchmarks/semantic_cache.py [--requests 1200] [--trials 300] [--seed 0] [--out F.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(1, str(Path(__file__).resolve().parents[1] / "tests"))  # the scripted tiers' helpers read conftest

import numpy as np  # noqa: E402

from pipelines import cascade  # noqa: E402
from pipelines.artifact import load_program, save  # noqa: E402
from pipelines.cache import CallCache  # noqa: E402
from pipelines.embeddings import embed  # noqa: E402
from pipelines.semantic_cache import SEMANTIC_TIER  # noqa: E402
from pipelines.tasks import DATASETS_DIR, load_task  # noqa: E402
from pipelines.tasks.support import metric  # noqa: E402
from pipelines.tiers import load_catalog  # noqa: E402
from tests.fakes import write_tiers  # noqa: E402
from tests.test_semantic_cache import script_for  # noqa: E402

FIXED = (0.80, 0.90, 0.95)
MIX = (("new", 0.30), ("paraphrase", 0.25), ("repeat", 0.08), ("entity_swap", 0.17), ("negation", 0.08),
       ("near_topic", 0.12))
GREETINGS = ("", "", "Hi, ", "Hello! ", "Hey there, ", "Good morning, ")
SIGN_OFFS = ("", "", " Thanks.", " Thank you!", " Please help.", " Thanks in advance.")
_ORDER = re.compile(r"\b([A-Za-z])(\d{5,6})\b")
_NUMBER = re.compile(r"\d+")


def read(name):
    return [json.loads(line) for line in open(DATASETS_DIR / name)]


def surface_variant(message: str, rng: random.Random) -> str:
    """The same request as another customer might type it: greeting, sign-off, case, punctuation."""
    text = message.rstrip(".!?") if rng.random() < 0.4 else message
    if rng.random() < 0.3:
        text = text.lower()
    out = f"{rng.choice(GREETINGS)}{text[0].lower() if rng.random() < 0.5 else text[0]}{text[1:]}{rng.choice(SIGN_OFFS)}"
    return out if out != message else message + " Thanks."


def entity_swap(row: dict, rng: random.Random) -> dict | None:
    """The same request about another order (a new order number) or another amount / count."""
    found = _ORDER.search(row["message"])
    if found:
        new = f"{chr(rng.randrange(65, 91))}{rng.randrange(10 ** (len(found.group(2)) - 1), 10 ** len(found.group(2)))}"
        return {**row, "message": row["message"].replace(found.group(), new), "order_id": new.upper()}
    number = _NUMBER.search(row["message"])
    if number:
        value = str(int(number.group()) + rng.randrange(1, 9))
        return {**row, "message": row["message"][:number.start()] + value + row["message"][number.end():]}
    return None


def near_request(kind: str, variants: dict, fresh: list[dict], seen: list[dict], rng: random.Random) -> dict | None:
    """A request that differs in meaning from earlier ones: a hand-written negation or near-topic row of the
    groups not used yet; when those run out, the unused support row nearest (cosine) to a random earlier
    request: another request that embeds close to one already answered."""
    unused = variants[kind] or variants["near_topic"]
    if unused:
        return unused.pop(rng.randrange(len(unused)))
    if not fresh:
        return None
    anchor = embed([rng.choice(seen)["message"]])[0]
    sims = embed([r["message"] for r in fresh]) @ anchor
    return fresh.pop(int(np.argmax(sims)))


def build_stream(n: int, seed: int) -> list[tuple[str, dict]]:
    rng = random.Random(seed)
    support, para = read("support.jsonl"), read("support_paraphrases.jsonl")
    groups: dict[str, list[dict]] = {}
    for row in para:
        groups.setdefault(row["group"], []).append(row)
    fresh = support + [g[0] for g in groups.values()]
    rng.shuffle(fresh)
    variants = {v: [r for r in para if r["variant"] == v] for v in ("negation", "near_topic")}
    seen: list[dict] = []
    stream: list[tuple[str, dict]] = []
    kinds, weights = zip(*MIX)
    while len(stream) < n:
        kind = "new" if not seen else rng.choices(kinds, weights)[0]
        if kind == "new" and not fresh:  # every dev-set request has come once: the rest of the stream repeats
            kind = "paraphrase"
        if kind == "new":
            row = fresh.pop()
        elif kind == "repeat":
            row = rng.choice(seen)
        elif kind == "paraphrase":
            source = rng.choice(seen)
            hand = [r for r in groups.get(source.get("group"), []) if r["variant"] == "paraphrase"]
            row = rng.choice(hand) if hand and rng.random() < 0.5 else \
                {**source, "message": surface_variant(source["message"], rng)}
        elif kind == "entity_swap":
            row = None
            for _ in range(20):
                row = entity_swap(rng.choice(seen), rng)
                if row is not None:
                    break
            if row is None:
                continue
        else:
            row = near_request(kind, variants, fresh, seen, rng)
            if row is None:
                continue
        seen.append(row)
        stream.append((kind, row))
    return stream


def compile_support(tmp: Path, trials: int, seed: int, rows_by_message: dict):
    from optimizers.stages import Job, run

    dev = read("support.jsonl") + read("support_paraphrases.jsonl")
    job = Job(task=load_task("support"), rows=dev, catalog=load_catalog(write_tiers(tmp)), trials=trials, seed=seed,
              work_dir=tmp / ".tierwise", scripts={"*": script_for(rows_by_message)}, semantic_cache=True)
    started = time.perf_counter()
    result = run(job)
    return result, save(result.body, tmp / "support.tierwise.json"), time.perf_counter() - started


def with_thresholds(path: Path, out: Path, threshold: float | None) -> Path:
    """The artifact with every predictor's cache at `threshold` (None: none at all)."""
    body = json.loads(path.read_text())
    for entry in body["policy"]["predictors"].values():
        entry.pop("semantic", None)
        if threshold is not None:
            entry["semantic"] = {"threshold": threshold}
    return save({k: v for k, v in body.items() if k != "checksum"}, out)


def run_stream(path: Path, stream, script, cache_dir: Path) -> list[dict]:
    program = load_program(path, cache=CallCache(cache_dir), scripts={"*": script})
    out = []
    for kind, row in stream:
        prediction = program(message=row["message"])
        steps = program.last_trail
        out.append({"kind": kind, "score": metric(row, prediction), "cost": program.last_cost_usd,
                    "answers": {"classify": prediction.intent, "extract": prediction.order_id},
                    "lookups": [(s.predictor, s.decision == "semantic_hit", s.confidence, s.latency_s)
                                for s in steps if s.tier == SEMANTIC_TIER]})
    return out


def summarize(name: str, runs: list[dict], plain: list[dict]) -> dict:
    lookups = hits = wrong = 0
    latencies, by_kind = [], {}
    for got, ref in zip(runs, plain):
        for predictor, hit, _, latency in got["lookups"]:
            lookups += 1
            latencies.append(latency)
            if hit:
                hits += 1
                bad = got["answers"][predictor] != ref["answers"][predictor]
                wrong += bad
                k = by_kind.setdefault(got["kind"], [0, 0])
                k[0] += 1
                k[1] += bad
    cost, base = sum(r["cost"] for r in runs), sum(r["cost"] for r in plain)
    lat = np.array(latencies) * 1000 if latencies else np.zeros(1)
    return {"run": name, "lookups": lookups, "hits": hits, "wrong_hits": wrong,
            "hit_rate": hits / max(lookups, 1), "wrong_per_hit": wrong / max(hits, 1),
            "right_per_1000": 1000 * (hits - wrong) / max(lookups, 1), "wrong_per_1000": 1000 * wrong / max(lookups, 1),
            "cost_saved": 1 - cost / base if base else 0.0,
            "quality": float(np.mean([r["score"] for r in runs])), "quality_ladder": float(np.mean([r["score"] for r in plain])),
            "lookup_ms_p50": float(np.percentile(lat, 50)), "lookup_ms_p99": float(np.percentile(lat, 99)),
            "hits_by_kind": by_kind}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=1200)
    ap.add_argument("--trials", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out")
    args = ap.parse_args()
    stream = build_stream(args.requests, args.seed)
    rows = {r["message"]: r for r in read("support.jsonl") + read("support_paraphrases.jsonl")}
    rows.update({row["message"]: row for _, row in stream})
    script = script_for(rows)
    texts = sorted({row["message"] for _, row in stream})
    started = time.perf_counter()
    embed(texts)
    embed_s = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        result, artifact, compile_s = compile_support(tmp, args.trials, args.seed, rows)
        searched = {k: v.semantic for k, v in result.policy.predictors.items()}
        notes = result.summary.get("notes", [])
        plain = run_stream(with_thresholds(artifact, tmp / "plain.json", None), stream, script, tmp / "calls")
        table = []
        runs = [(f"guarded {t:.2f}", with_thresholds(artifact, tmp / f"t{t}.json", t), True) for t in FIXED]
        runs.append(("searched", artifact, True))
        runs += [(f"unguarded {t:.2f}", tmp / f"t{t}.json", False) for t in FIXED]
        for name, path, guarded in runs:
            original = cascade.guard_key
            if not guarded:  # the ablation: similarity alone decides, as GPTCache / LiteLLM do
                cascade.guard_key = lambda text, patterns=(): ()
            try:
                table.append(summarize(name, run_stream(path, stream, script, tmp / "calls"), plain))
            finally:
                cascade.guard_key = original
    kinds = {k: sum(1 for kind, _ in stream if kind == k) for k, _ in MIX}
    report = {"requests": len(stream), "stream_kinds": kinds, "unique_texts": len(texts),
              "embed_ms_per_new_text": 1000 * embed_s / len(texts), "compile_s": compile_s,
              "searched_policy": searched, "compile_notes": notes, "holdout": result.summary.get("holdout"),
              "runs": table}
    print(json.dumps({k: v for k, v in report.items() if k != "runs"}, indent=1, default=str))
    print(f"{'run':16} {'lookups':>7} {'hits':>5} {'wrong':>5} {'hit%':>6} {'wrong/hit':>9} {'right/1k':>8} "
          f"{'wrong/1k':>8} {'saved':>6} {'quality':>7} {'p50 ms':>7} {'p99 ms':>7}")
    for r in table:
        print(f"{r['run']:16} {r['lookups']:7d} {r['hits']:5d} {r['wrong_hits']:5d} {100 * r['hit_rate']:5.1f}% "
              f"{100 * r['wrong_per_hit']:8.2f}% {r['right_per_1000']:8.1f} {r['wrong_per_1000']:8.1f} "
              f"{100 * r['cost_saved']:5.1f}% {r['quality']:.4f} {r['lookup_ms_p50']:7.2f} {r['lookup_ms_p99']:7.2f}")
    print(f"ladder quality without the cache: {table[0]['quality_ladder']:.4f}")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
