"""Provider faults and parallel recording, measured against a real HTTP model server on 127.0.0.1.

    python benchmarks/faults.py [--rows 16] [--rates 0,0.1,0.3,0.5] [--concurrency 1,4,8] [--record-rows 12]
    python benchmarks/faults.py --simulated-latency 0.5 --record-rows 20   # recording only, no server

Part 1, faults. llama.cpp's OpenAI-compatible server (xllamacpp) serves Qwen2.5-Coder-0.5B. Tier
`api` reaches it through a fault-injecting proxy (429 with Retry-After, 500, 503, connection resets,
truncated and malformed JSON, torn empty answers, in equal shares; stalls past the timeout are
tested in tests/test_http_tier.py, not here: see TIMEOUT_S); tier
`backup` reaches it directly and lives. The support pipeline runs on `api` alone, with the
cascade's fallback to `backup` when `api` fails after its retries or cools down. Per fault rate:
share of requests answered, answers identical to the fault-free run, added latency p50/p99,
retries per request, paid calls repeated (a call paid twice by us; goal 0) beside the upstream
generations a real provider would have billed and the wire lost, and the budget (goal: never passed).

Part 2, recording speed: `optimize` recording its outcome table through the server with
--concurrency 1/4/8 (fresh cache each), seconds and the ratio to 1.

Bounded: the proxy stops after 5,000 requests or 30 minutes; the server lives inside a `with` block.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pipelines  # noqa: E402,F401 - sets LITELLM_LOCAL_MODEL_COST_MAP before litellm loads

from optimizers.outcomes import Budget  # noqa: E402
from pipelines.cache import CallCache  # noqa: E402
from pipelines.cascade import CompiledProgram  # noqa: E402
from pipelines.errors import AllRungsFailed, BudgetExceeded  # noqa: E402
from pipelines.ledger import Ledger  # noqa: E402
from pipelines.policy import Policy, PredictorPolicy  # noqa: E402
from pipelines.runtime import Runtime  # noqa: E402
from pipelines.tasks import load_task, read_jsonl  # noqa: E402
from pipelines.tiers import Catalog, Tier  # noqa: E402
from tests.http_servers import FAULTS, FaultProxy, LlamaHTTPServer  # noqa: E402

MODEL = "openai/qwen2.5-coder-0.5b"
PRICES = (0.05, 0.20)  # nominal USD per 1M tokens, for the budget arithmetic
# A busy 2-core machine took up to ~55 s for one legitimate call: the timeout must sit well above that,
# so stalls past it (which would cost minutes each) are left to tests/test_http_tier.py here.
TIMEOUT_S, STALL_S = 600.0, 601.0
BENCH_FAULTS = tuple(f for f in FAULTS if f != "timeout")


def fault_run(server, rows, rate: float, seed: int, cap_usd: float | None) -> dict:
    task = load_task("support")
    with FaultProxy(server.port, rate=rate, seed=seed, faults=BENCH_FAULTS, retry_after_s=1,
                    stall_s=STALL_S) as proxy, \
            tempfile.TemporaryDirectory() as tmp:
        settings = {"max_tokens": 24, "retries": 3, "backoff_s": 0.25, "timeout_s": TIMEOUT_S,
                    "cooldown_after": 3, "cooldown_s": 10.0}
        catalog = Catalog([Tier("api", MODEL, *PRICES, settings, api_base=proxy.base),
                           Tier("backup", MODEL, *PRICES, {**settings, "max_tokens": 25}, api_base=server.base)])
        runtime = Runtime(catalog, cache=CallCache(Path(tmp) / "cache"), ledger=Ledger())
        budget = Budget(cap_usd)
        answered_calls: Counter = Counter()  # (tier, request) -> answers our side received and paid for
        for name in catalog.names:
            engine = runtime.engine(name)
            engine.guard = budget.reserve
            engine.backend = _counting(name, engine.backend, answered_calls)
        program = task.build_program()
        policy = Policy({name: PredictorPolicy(["api"]) for name, _ in program.named_predictors()})
        compiled = CompiledProgram(program, policy, runtime)
        answers, latencies, by_backup, stopped = {}, [], 0, False
        for row in rows:
            started = time.perf_counter()
            try:
                prediction = compiled(**task.inputs(row))
                answers[row["id"]] = (prediction.get("intent"), prediction.get("order_id"))
                by_backup += any(step.tier == "backup" for step in compiled.last_trail)
            except AllRungsFailed:
                answers[row["id"]] = None
            except BudgetExceeded:
                stopped = True
                break
            latencies.append(time.perf_counter() - started)
        engine = runtime.engine("api")
        result = {
            "rate": rate, "requests": len(latencies), "answered": sum(a is not None for a in answers.values()),
            "answers": answers, "latencies": latencies, "by_backup": by_backup,
            "retries": engine.retries, "cooldowns": engine.health.cooldowns,
            "injected": dict(proxy.injected), "proxy_requests": proxy.requests,
            "repeated_by_us": sum(n - 1 for n in answered_calls.values()),
            "upstream_lost": sum(n - 1 for n in proxy.upstream_answers.values() if n > 1),
            "spent": budget.spent_usd, "peak_committed": budget.peak_committed_usd, "cap": cap_usd,
            "stopped": stopped,
        }
        runtime.close()
        return result


def _counting(tier: str, backend, counter: Counter):
    """The backend, counting each request it answered: one request answered twice was paid twice."""
    def call(payload):
        result = backend(payload)
        counter[(tier, json.dumps(payload, sort_keys=True))] += 1
        return result

    return call


def pct(values, q) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def part_faults(server, rows, rates, seed) -> list[dict]:
    base = fault_run(server, rows, 0.0, seed, None)
    # The cap: what the fault-free run spent and reserved at its peak (reservations are upper bounds),
    # with a quarter more for fallbacks. The bound must hold whatever the faults do.
    cap = base["peak_committed"] * 1.25
    print(f"\nfault-free run: {base['requests']} requests, spent ${base['spent']:.6f}; cap for the fault runs "
          f"${cap:.6f}", flush=True)
    results = []
    for rate in rates:
        run = base if rate == 0 else fault_run(server, rows, rate, seed, cap)
        same = sum(run["answers"].get(k) == v for k, v in base["answers"].items())
        p50 = pct(run["latencies"], 0.5) - pct(base["latencies"], 0.5)
        p99 = pct(run["latencies"], 0.99) - pct(base["latencies"], 0.99)
        results.append({**run, "identical": same, "added_p50": p50, "added_p99": p99})
        print(f"rate {rate:4.0%}: answered {run['answered']}/{run['requests']}  identical {same}/{len(base['answers'])}"
              f"  by backup {run['by_backup']}  added p50 {p50:+.2f}s p99 {p99:+.2f}s  "
              f"retries/request {run['retries'] / max(run['requests'], 1):.2f}  cooldowns {run['cooldowns']}  "
              f"repeated paid {run['repeated_by_us']}  upstream lost {run['upstream_lost']}  "
              f"spent ${run['spent']:.6f} peak ${run['peak_committed']:.6f} cap {_usd(run['cap'])}  "
              f"injected {run['injected']}", flush=True)
    return results


def _usd(value) -> str:
    return "-" if value is None else f"${value:.6f}"


def part_recording(server, levels, limit, seed) -> list[tuple[int, float, int]]:
    from optimizers.live import OptimizeOptions, optimize

    out = []
    for level in levels:
        with tempfile.TemporaryDirectory() as tmp:
            tiers = Path(tmp) / "tiers.toml"
            tiers.write_text("".join(
                f'[[tier]]\nname = "{n}"\nmodel = "{MODEL}"\napi_base = "{server.base}"\ninput_per_1m = 0.05\n'
                f"output_per_1m = 0.2\n[tier.settings]\nmax_tokens = {t}\nmax_concurrency = 8\ntimeout_s = {TIMEOUT_S:g}\n"
                for n, t in (("mid", 16), ("flagship", 24))))
            started = time.perf_counter()
            summary = optimize(OptimizeOptions(task="support", tiers=str(tiers), work_dir=Path(tmp), limit=limit,
                                               trials=4, seed=seed, storage=f"sqlite:///{tmp}/s.db",
                                               out=f"{tmp}/a.json", concurrency=level))
            seconds = time.perf_counter() - started
        out.append((level, seconds, summary["paid_calls"]))
        rate = summary["paid_calls"] / seconds
        print(f"--concurrency {level}: {summary['paid_calls']} paid calls of {summary['full_matrix_calls']} in "
              f"{seconds:.1f}s, {rate * 60:.2f} calls/min (ratio to 1: {rate / (out[0][2] / out[0][1]):.2f}x)",
              flush=True)
    return out


def part_recording_latency(levels, limit, seed, latency_s: float) -> None:
    """The same recording over scripted tiers that wait `latency_s` per call, as a network-bound
    provider does: what --concurrency buys when the model is not on this machine's 2 cores."""
    from optimizers.live import OptimizeOptions, optimize
    from tests.fakes import support_script, write_tiers

    base = support_script()

    def remote(tier, messages):
        time.sleep(latency_s)
        return base(tier, messages)

    first = None
    for level in levels:
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            summary = optimize(OptimizeOptions(task="support", tiers=str(write_tiers(Path(tmp))), work_dir=Path(tmp),
                                               limit=limit, trials=4, seed=seed, storage=f"sqlite:///{tmp}/s.db",
                                               out=f"{tmp}/a.json", concurrency=level, scripts={"*": remote}))
            seconds = time.perf_counter() - started
        first = first or seconds
        print(f"scripted tiers at {latency_s:g}s per call, --concurrency {level}: {summary['paid_calls']} paid calls "
              f"in {seconds:.1f}s (ratio to 1: {first / seconds:.2f}x)", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--rates", default="0,0.1,0.3,0.5")
    parser.add_argument("--concurrency", default="1,4,8")
    parser.add_argument("--record-rows", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip", choices=["faults", "recording"], default=None)
    parser.add_argument("--simulated-latency", type=float, default=None,
                        help="only time recording over scripted tiers that wait this long per call (no server)")
    args = parser.parse_args()
    if args.simulated_latency is not None:
        levels = [int(x) for x in args.concurrency.split(",")]
        return part_recording_latency(levels, args.record_rows, args.seed, args.simulated_latency)
    rows = read_jsonl(load_task("support").default_dataset())[: args.rows]
    levels = [int(x) for x in args.concurrency.split(",")]
    with LlamaHTTPServer(slots=max(levels)) as server:
        print(f"server {server.base} ({server.slots} slots, 2 threads)", flush=True)
        if args.skip != "recording":
            part_recording(server, levels, args.record_rows, args.seed)
        if args.skip != "faults":
            results = part_faults(server, rows, [float(x) for x in args.rates.split(",")], args.seed)
            print(json.dumps([{k: v for k, v in r.items() if k not in ("answers", "latencies")} for r in results]))


if __name__ == "__main__":
    main()
