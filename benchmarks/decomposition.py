"""One several-field predictor against its decomposition (pipelines.decompose), compiled on the same rows and tiers.

A support triage written the way a DSPy user might write it first: one dspy.Predict with three outputs (intent,
urgency, order id). Both forms are compiled by TierOptimizer on the same seeded sample of datasets/support.jsonl,
same split, same objective (the flagship's quality), and read on the same holdout rows. The honest baseline for
both is the ORIGINAL program on the flagship: the decomposed program's own flagship-only asks three questions.
The metric is the share of the three fields right.

Usage:  PYTHONPATH=. python benchmarks/decomposition.py [--limit 40] [--trials 200] [--tiers tiers.toml]
        (default tiers: the local ones; every call is cached in .tierwise/cache, so a rerun pays nothing)
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import time
from typing import Literal

import pipelines  # noqa: F401 - keeps dspy offline (LITELLM_LOCAL_MODEL_COST_MAP) before it loads

import dspy  # noqa: E402

from optimizers import TierOptimizer  # noqa: E402
from pipelines import decompose  # noqa: E402
from pipelines.paths import datasets_dir  # noqa: E402

INTENTS = ("billing", "shipping", "returns", "account", "technical", "product_question")


class Triage(dspy.Signature):
    """Triage a customer-support message: its intent, its urgency (high when money is lost, a service is down, a
    deadline is angry, or safety/security is at stake) and the order number exactly as written (a letter and 5-6
    digits), or none."""

    message: str = dspy.InputField()
    intent: Literal[INTENTS] = dspy.OutputField()
    urgency: Literal["high", "low"] = dspy.OutputField()
    order_id: str = dspy.OutputField(desc="the order number as written, or none")


class SupportTriage(dspy.Module):
    def __init__(self):
        super().__init__()
        self.triage = dspy.Predict(Triage)

    def forward(self, message):
        return self.triage(message=message)


FIELDS = ("intent", "urgency", "order_id")


def metric(example, prediction, trace=None):
    return sum(str(getattr(prediction, f, "")).strip().lower() == str(example[f]).lower() for f in FIELDS) / 3


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=int, default=40)
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--tiers", default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = [json.loads(line) for line in open(datasets_dir() / "support.jsonl")]
    rows = random.Random(args.seed).sample(rows, args.limit)
    trainset = [dspy.Example(id=r["id"], message=r["message"], **{f: r[f] for f in FIELDS}).with_inputs("message")
                for r in rows]
    results = {}
    for form, program in (("one predictor", SupportTriage()), ("decomposed", decompose(SupportTriage()))):
        started = time.perf_counter()
        optimizer = TierOptimizer(metric=metric, tiers=args.tiers, trials=args.trials, seed=args.seed)
        optimizer.compile(program, trainset=trainset)
        s = optimizer.summary_
        flagship = s["reference"]
        results[form] = {"policy": s["policy"], "holdout": s["holdout"], "paid_calls": s["paid_calls"],
                         "flagship_only": s["baselines"][flagship]["holdout"], "wall_s": time.perf_counter() - started}
    base = results["one predictor"]["flagship_only"]
    print(f"{args.limit} rows (seed {args.seed}), holdout n={base['n']}; baseline: the one-predictor program on the "
          f"flagship, quality {base['quality']:.3f} at ${base['cost_per_1k']:.6f}/1k")
    print("| form | flagship-only quality | flagship-only $/1k | chosen quality | chosen $/1k | saving vs baseline | "
          "paid calls | wall |")
    print("|---|---|---|---|---|---|---|---|")
    for form, r in results.items():
        saving = 100 * (1 - r["holdout"]["cost_per_1k"] / base["cost_per_1k"])
        print(f"| {form} | {r['flagship_only']['quality']:.3f} | {r['flagship_only']['cost_per_1k']:.6f} | "
              f"{r['holdout']['quality']:.3f} | {r['holdout']['cost_per_1k']:.6f} | {saving:.1f}% | {r['paid_calls']} | "
              f"{r['wall_s']:.0f} s |")
    for form, r in results.items():
        print(f"{form}: {json.dumps(r['policy'])}")
    print(f"peak resident set: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
