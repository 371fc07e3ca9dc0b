"""Runtime overhead of a compiled pipeline over the same plain DSPy program, on a warm cache.

The support program (pipelines.tasks.support.build_program) runs each request two ways over ONE
Runtime and ONE disk cache (pipelines.cache.CallCache) that already holds every answer:

  plain     the program as written, under dspy.context(lm=runtime.lm("mid"), adapter=ADAPTER)
  compiled  CompiledProgram(program, policy, runtime) with the policy
              classify: mid > flagship, logprob_mean, threshold --threshold (default 0.8)
              extract:  mid
            (the cascade: confidence from the cached token log-probabilities, escalation, trail, ledger notes)
  uniform   CompiledProgram with both predictors on mid only: the same two calls as plain, so the
            difference is the wrapping alone (cascade bookkeeping, trail, ledger annotations)

All variants run on the same requests, rotating which goes first, request by request; every
call is a cache hit (the script checks the ledger), so what is timed is tierwise's own work plus
dspy's prompt formatting and parsing. Prints per-request latency medians (and p90) and the ratio.

By default the tiers are scripted fakes (tests/fakes.support_script: "mid" answers simple rows right with
confidence 0.95 and others wrong with 0.4; "flagship" is always right), so no model is needed.
--real uses the local tiers of the default catalog; the cache is warmed first with real calls (slow on 2 cores:
use --requests to keep it small).

Usage:  PYTHONPATH=. python benchmarks/runtime_overhead.py [--requests 222] [--rounds 3] [--real]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import dspy  # noqa: E402

from pipelines.cache import CallCache  # noqa: E402
from pipelines.cascade import CompiledProgram  # noqa: E402
from pipelines.ledger import Ledger  # noqa: E402
from pipelines.policy import Policy, PredictorPolicy  # noqa: E402
from pipelines.runtime import ADAPTER, Runtime  # noqa: E402
from pipelines.tasks import DATASETS_DIR, read_jsonl  # noqa: E402
from pipelines.tasks.support import build_program  # noqa: E402
from pipelines.tiers import default_catalog, load_catalog  # noqa: E402

FAKE_TIERS = """
[[tier]]
name = "mid"
model = "fake/mid"
input_per_1m = 0.05
output_per_1m = 0.2

[[tier]]
name = "flagship"
model = "fake/flagship"
input_per_1m = 0.15
output_per_1m = 0.6
"""


def fake_scripts():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.fakes import support_script

    inner = support_script()
    return {"*": lambda tier, messages: inner("big" if tier == "flagship" else "small", messages)}


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(int(q * len(xs)), len(xs) - 1)]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=None, help="support messages used (default: all; 12 with --real)")
    ap.add_argument("--rounds", type=int, default=3, help="passes over the requests (each pass times both variants)")
    ap.add_argument("--threshold", type=float, default=0.8)
    ap.add_argument("--real", action="store_true", help="local tiers instead of scripted fakes")
    ap.add_argument("--cache-dir", default=None, help="default: a fresh temporary folder (--real: reuse one to skip warming)")
    args = ap.parse_args(argv)

    rows = read_jsonl(DATASETS_DIR / "support.jsonl")
    n = args.requests or (12 if args.real else len(rows))
    messages = [r["message"] for r in rows[:n]]
    tmp = tempfile.mkdtemp(prefix="tw-overhead-")
    cache_dir = Path(args.cache_dir or tmp) / "cache"
    if args.real:
        catalog, scripts = default_catalog(), None
    else:
        tiers = Path(tmp) / "tiers.toml"
        tiers.write_text(FAKE_TIERS)
        catalog, scripts = load_catalog(tiers), fake_scripts()
    ledger = Ledger()
    runtime = Runtime(catalog, cache=CallCache(cache_dir), ledger=ledger, scripts=scripts)
    mid = runtime.lm("mid")
    policy = Policy({"classify": PredictorPolicy(["mid", "flagship"], "logprob_mean", [args.threshold]),
                     "extract": PredictorPolicy(["mid"])}).validate(catalog.names)
    plain_prog = build_program()
    compiled = CompiledProgram(build_program(), policy, runtime)
    # Same calls as plain (both predictors on mid, no escalation): isolates the cost of the wrapping itself.
    uniform = CompiledProgram(build_program(), Policy.uniform(["classify", "extract"], "mid"), runtime)

    def plain(message):
        with dspy.context(lm=mid, adapter=ADAPTER):
            return plain_prog(message=message)

    def comp(message):
        return compiled(message=message)

    def comp_uniform(message):
        return uniform(message=message)

    # Warm the cache: every answer either variant will ask for.
    t0 = time.perf_counter()
    for i, m in enumerate(messages):
        plain(m)
        comp(m)
        comp_uniform(m)
        if args.real:
            print(f"  warming {i + 1}/{len(messages)}", file=sys.stderr, flush=True)
    warm_s = time.perf_counter() - t0
    paid_warm = sum(not r.cache_hit for r in ledger.records)
    escalated = 0
    for m in messages:
        comp(m)
        escalated += any(s.decision == "escalated" for s in compiled.last_trail)
    start = len(ledger.records)

    variants = {"plain": plain, "compiled": comp, "uniform": comp_uniform}
    lat = {k: [] for k in variants}
    for rnd in range(args.rounds):
        for i, m in enumerate(messages):
            k = (i + rnd) % 3
            order = (["plain", "compiled", "uniform"] * 2)[k:k + 3]
            for name in order:
                t = time.perf_counter()
                variants[name](m)
                lat[name].append(time.perf_counter() - t)
    timed = ledger.records[start:]
    misses = sum(not r.cache_hit for r in timed)
    runtime.close()

    mp, mc = statistics.median(lat["plain"]), statistics.median(lat["compiled"])
    print(f"\nRuntime overhead on a warm cache: support program, {'local' if args.real else 'fake scripted'} tiers, "
          f"{len(messages)} requests x {args.rounds} rounds, interleaved")
    print(f"warm-up: {warm_s:.1f}s, {paid_warm} paid calls; timed phase: {len(timed)} calls, {misses} cache misses; "
          f"compiled escalates classify on {escalated}/{len(messages)} requests (threshold {args.threshold})")
    print(f"{'variant':9} {'median ms':>10} {'p90 ms':>8} {'mean ms':>8} {'LM calls/request':>17}")
    for name, xs in lat.items():
        calls = 2 + escalated / len(messages) if name == "compiled" else 2
        print(f"{name:9} {statistics.median(xs) * 1000:10.2f} {pct(xs, 0.9) * 1000:8.2f} "
              f"{statistics.mean(xs) * 1000:8.2f} {calls:17.2f}")
    mu = statistics.median(lat["uniform"])
    print(f"ratio compiled/plain (medians): {mc / mp:.2f}x; added per request: {(mc - mp) * 1000:.2f} ms")
    print(f"ratio uniform/plain (medians, same 2 calls): {mu / mp:.2f}x; added per request: {(mu - mp) * 1000:.2f} ms")
    per_call = [c / (2 + escalated / len(messages)) for c in lat["compiled"]]
    print(f"per LM call: plain {mp / 2 * 1000:.2f} ms, compiled {statistics.median(per_call) * 1000:.2f} ms "
          f"(ratio {statistics.median(per_call) / (mp / 2):.2f}x)")


if __name__ == "__main__":
    main()
