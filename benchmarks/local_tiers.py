"""Local tiers: load time, llama.cpp throughput, and tierwise's per-call overhead over a bare call.

For each local tier of pipelines.tiers.default_catalog():

1. load time: seconds to construct the llama.cpp server (LocalServer.load_seconds) and the wall time of
   the first get_server(key) (which also checks the verified-GGUF marker).
2. throughput: one request per run with prompt caching off ("cache_prompt": false) and a fixed-length
   generation; prompt tokens/s and generation tokens/s as llama.cpp reports them
   (result["timings"]["prompt_per_second"] / ["predicted_per_second"]), and the wall-clock view
   (completion tokens / wall seconds of the whole call).
3. overhead: the same support-classification request (the exact body tierwise sends, captured from a
   warm-up call) through
     bare    get_server(key).chat(body)
     engine  Runtime(cache=CallCache(enabled=False)).engine(tier).call(payload)   (TierEngine: key, ledger, pool)
     dspy    dspy.Predict(ClassifyIntent)(message=..., lm=runtime.lm(tier)) under dspy.context(adapter=ADAPTER)
   interleaved run by run (the order rotates each run). Besides wall time, every call's llama.cpp
   internal time (prompt_ms + predicted_ms, read from the response) is subtracted to get the time spent
   outside the model: on a loaded 2-core machine the model time varies by far more than tierwise's
   overhead, so "outside-model ms" is the number that isolates the overhead.

Usage:  PYTHONPATH=. python benchmarks/local_tiers.py [--runs 5] [--tiers cheap,mid,flagship]
                                                    [--max-tokens N] [--gen-tokens 32] [--prompt-repeat 3]
Needs the local extra (xllamacpp and the model packages). Prints medians and ratios tierwise/bare.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from dataclasses import replace

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import dspy  # noqa: E402

from pipelines.cache import CallCache  # noqa: E402
from pipelines.ledger import Ledger  # noqa: E402
from pipelines.local import get_server  # noqa: E402
from pipelines.runtime import ADAPTER, Runtime  # noqa: E402
from pipelines.tasks.support import ClassifyIntent  # noqa: E402
from pipelines.tiers import LOCAL_PREFIX, Catalog, default_catalog  # noqa: E402

MESSAGE = "Hi, I was charged twice for order A48213 this month. Can you refund the duplicate charge?"
THROUGHPUT_SYSTEM = (
    "You are a careful assistant for an online shop. You answer customer questions about billing, "
    "shipping, returns, accounts, technical problems and products. Be short, polite and precise. "
    "Never invent order numbers, amounts or dates; when you do not know, say so. "
)
THROUGHPUT_USER = "Count from 1 to 200, numbers separated by commas, nothing else."


def med(xs):
    return statistics.median(xs) if xs else float("nan")


class Recorder:
    """Wraps one LocalServer's chat to keep each response's llama.cpp timings (used by every variant alike)."""

    def __init__(self, server):
        self.server = server
        self.inner = server.chat
        self.bodies: list[dict] = []
        self.timings: list[dict] = []
        server.chat = self

    def __call__(self, body):
        self.bodies.append(copy.deepcopy(body))
        result = self.inner(body)
        self.timings.append(dict(result.get("timings") or {}, completion_tokens=result["usage"]["completion_tokens"]))
        return result

    def model_ms(self) -> float:
        t = self.timings[-1]
        return t.get("prompt_ms", 0.0) + t.get("predicted_ms", 0.0)


def bench_tier(tier, runs: int, max_tokens: int | None, gen_tokens: int, prompt_repeat: int) -> dict:
    key = tier.model[len(LOCAL_PREFIX):]
    started = time.perf_counter()
    server = get_server(key)
    first_wall = time.perf_counter() - started
    rec = Recorder(server)
    catalog = default_catalog()
    if max_tokens:  # shorter answers: less model time per call, same tierwise work around it
        catalog = Catalog([replace(t, settings={**t.settings, "max_tokens": max_tokens}) for t in catalog])
    runtime = Runtime(catalog, cache=CallCache(enabled=False), ledger=Ledger())
    engine = runtime.engine(tier.name)
    lm = runtime.lm(tier.name)
    predictor = dspy.Predict(ClassifyIntent)

    payloads = []
    backend = engine.backend

    def capture(payload):
        payloads.append(copy.deepcopy(payload))
        return backend(payload)

    def ask() -> str:
        """One classify call through dspy. A small tier's answer may not fit the typed intent field:
        the call was still made (and timed); the cascade would escalate it, here it is just reported."""
        with dspy.context(adapter=ADAPTER):
            try:
                return predictor(message=MESSAGE, lm=lm).intent
            except dspy.utils.exceptions.AdapterParseError as e:
                return f"(malformed: {str(e.lm_response)[:40]!r})"

    engine.backend = capture
    warm = ask()  # warm-up: captures the exact request, fills the prompt cache
    engine.backend = backend
    body, payload = rec.bodies[-1], payloads[-1]

    def bare():
        server.chat(copy.deepcopy(body))

    def via_engine():
        engine.call(copy.deepcopy(payload))

    def via_dspy():
        ask()

    variants = {"bare": bare, "engine": via_engine, "dspy": via_dspy}
    names = list(variants)
    wall = {n: [] for n in names}
    outside = {n: [] for n in names}
    ctoks = {n: [] for n in names}
    evald = {n: [] for n in names}  # prompt tokens llama.cpp had to evaluate (not reused from its prompt cache)
    thr = []
    for i in range(runs):
        order = names[i % 3:] + names[:i % 3]
        for name in order:
            t0 = time.perf_counter()
            variants[name]()
            elapsed = time.perf_counter() - t0
            wall[name].append(elapsed)
            outside[name].append(elapsed * 1000 - rec.model_ms())
            ctoks[name].append(rec.timings[-1]["completion_tokens"])
            evald[name].append(rec.timings[-1].get("prompt_n", 0))
        if gen_tokens <= 0:  # overhead only
            print(f"  [{tier.name}] run {i + 1}/{runs}: bare {wall['bare'][-1]:.2f}s engine {wall['engine'][-1]:.2f}s "
                  f"dspy {wall['dspy'][-1]:.2f}s", file=sys.stderr, flush=True)
            continue
        t0 = time.perf_counter()
        server.chat({"messages": [{"role": "system", "content": THROUGHPUT_SYSTEM * prompt_repeat},
                                  {"role": "user", "content": THROUGHPUT_USER}],
                     "max_tokens": gen_tokens, "temperature": 0.0, "cache_prompt": False})
        elapsed = time.perf_counter() - t0
        t = rec.timings[-1]
        thr.append({"prompt_tps": t["prompt_per_second"], "gen_tps": t["predicted_per_second"],
                    "prompt_n": t["prompt_n"], "gen_n": t["predicted_n"], "wall_s": elapsed,
                    "wall_gen_tps": t["predicted_n"] / elapsed})
        server.chat(copy.deepcopy(body))  # untimed: put the classify prompt back in llama.cpp's prompt cache
        print(f"  [{tier.name}] run {i + 1}/{runs}: bare {wall['bare'][-1]:.2f}s engine {wall['engine'][-1]:.2f}s "
              f"dspy {wall['dspy'][-1]:.2f}s; throughput prompt {thr[-1]['prompt_tps']:.1f} tok/s "
              f"gen {thr[-1]['gen_tps']:.1f} tok/s", file=sys.stderr, flush=True)
    if not thr:
        thr = [dict.fromkeys(("prompt_tps", "gen_tps", "prompt_n", "gen_n", "wall_s", "wall_gen_tps"), float("nan"))]
    runtime.close()
    return {
        "tier": tier.name, "key": key, "load_s": server.load_seconds, "first_get_server_s": first_wall,
        "answer": warm, "prompt_tokens": rec.timings[0].get("prompt_n", 0) + rec.timings[0].get("cache_n", 0),
        "wall": {n: med(v) for n, v in wall.items()},
        "outside_ms": {n: med(v) for n, v in outside.items()},
        "added_ms": {n: med([a - b for a, b in zip(outside[n], outside["bare"])]) for n in ("engine", "dspy")},
        "ctoks": {n: med(v) for n, v in ctoks.items()},
        "evald": {n: med(v) for n, v in evald.items()}, "evald_max": {n: max(v) for n, v in evald.items()},
        "prompt_tps": med([t["prompt_tps"] for t in thr]), "gen_tps": med([t["gen_tps"] for t in thr]),
        "wall_gen_tps": med([t["wall_gen_tps"] for t in thr]), "thr_wall_s": med([t["wall_s"] for t in thr]),
        "thr_prompt_n": med([t["prompt_n"] for t in thr]), "thr_gen_n": med([t["gen_n"] for t in thr]),
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--tiers", default="cheap,mid,flagship", help="comma-separated tier names of the default catalog")
    ap.add_argument("--max-tokens", type=int, default=None,
                    help="override the tiers' max_tokens for the overhead request (default: the tier's own, 40)")
    ap.add_argument("--gen-tokens", type=int, default=32,
                    help="generated tokens of the throughput request; 0 skips it (overhead only)")
    ap.add_argument("--prompt-repeat", type=int, default=3,
                    help="copies of the system text in the throughput prompt (3 ~ 190 tokens)")
    args = ap.parse_args(argv)
    catalog = default_catalog()
    tiers = [catalog[name.strip()] for name in args.tiers.split(",") if name.strip()]
    results = []
    for tier in tiers:  # one tier at a time: the others stay idle while it is measured
        print(f"measuring {tier.name} ({tier.model}), {args.runs} runs ...", file=sys.stderr, flush=True)
        results.append(bench_tier(tier, args.runs, args.max_tokens, args.gen_tokens, args.prompt_repeat))

    print(f"\nLocal tiers, medians of {args.runs} runs (os.cpu_count()={os.cpu_count()})")
    print("\nload and throughput (llama.cpp timings; prompt cache off; "
          f"~{results[0]['thr_prompt_n']:.0f} prompt tokens, {args.gen_tokens} generated)")
    print(f"{'tier':9} {'model':22} {'load s':>7} {'prompt tok/s':>13} {'gen tok/s':>10} "
          f"{'wall gen tok/s':>15} {'call wall s':>12}")
    for r in results:
        print(f"{r['tier']:9} {r['key']:22} {r['load_s']:7.2f} {r['prompt_tps']:13.1f} {r['gen_tps']:10.1f} "
              f"{r['wall_gen_tps']:15.1f} {r['thr_wall_s']:12.2f}")
    print(f"\nper-call overhead, same classify request (prompt cached after warm-up), interleaved, "
          f"max_tokens {args.max_tokens or 'of the tier'}")
    print(f"{'tier':9} {'variant':7} {'wall s':>8} {'ratio/bare':>11} {'outside-model ms':>17} "
          f"{'added ms vs bare':>17} {'completion tok':>15} {'prompt tok evaluated (max)':>27}")
    for r in results:
        for n in ("bare", "engine", "dspy"):
            ratio = r["wall"][n] / r["wall"]["bare"]
            added = "" if n == "bare" else f"{r['added_ms'][n]:17.1f}"
            print(f"{r['tier']:9} {n:7} {r['wall'][n]:8.3f} {ratio:11.3f} {r['outside_ms'][n]:17.1f} "
                  f"{added:>17} {r['ctoks'][n]:15.0f} {r['evald'][n]:20.0f} ({r['evald_max'][n]:.0f})")
    print("\nratio = median wall (variant) / median wall (bare); outside-model ms = wall - (prompt_ms + predicted_ms)"
          "\nreported by llama.cpp for that call; added ms = median over runs of (variant - bare) outside-model ms;"
          "\nprompt tok evaluated = prompt tokens llama.cpp processed (not reused from its prompt cache), median (max).")


if __name__ == "__main__":
    main()
