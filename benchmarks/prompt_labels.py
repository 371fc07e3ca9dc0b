"""Per-tier accuracy of a one-output Literal task on the local tiers: does the prompt carry the labels?

Runs examples/bank_intents.py (six labels, `intent: Literal[LABELS] = dspy.OutputField()`, no
description) on every row of datasets/bank_intents.jsonl, one tier at a time, through the adapter of
the tree on PYTHONPATH. An answer outside the labels counts as wrong (and as malformed). Calls go
through a fresh temporary cache, so every call is made.

Usage:  PYTHONPATH=. python benchmarks/prompt_labels.py [--tiers cheap,mid,flagship] [--per-label K]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
from pathlib import Path

import pipelines  # noqa: F401 - keeps dspy offline (LITELLM_LOCAL_MODEL_COST_MAP) before it loads

import dspy  # noqa: E402

from pipelines.cache import CallCache  # noqa: E402
from pipelines.ledger import Ledger  # noqa: E402
from pipelines.runtime import ADAPTER, Runtime  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tiers", default="cheap,mid,flagship")
    parser.add_argument("--per-label", type=int, default=None, help="the first K rows of each label (default all)")
    args = parser.parse_args()
    spec = importlib.util.spec_from_file_location("bank_intents", ROOT / "examples" / "bank_intents.py")
    task = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = task  # its postponed annotations (Literal[LABELS]) resolve in its module
    spec.loader.exec_module(task)
    rows, taken = [], {}
    for row in map(json.loads, open(ROOT / "datasets" / "bank_intents.jsonl")):
        taken[row["intent"]] = taken.get(row["intent"], 0) + 1
        if args.per_label is None or taken[row["intent"]] <= args.per_label:
            rows.append(row)
    with tempfile.TemporaryDirectory() as tmp:
        runtime = Runtime(cache=CallCache(Path(tmp) / "cache"), ledger=Ledger())
        for tier in args.tiers.split(","):
            program = task.BankTriage()
            right = malformed = 0
            answers = []
            for row in rows:
                with dspy.context(adapter=ADAPTER, lm=runtime.lm(tier)):
                    try:
                        intent = program(message=row["message"]).intent
                    except dspy.utils.exceptions.AdapterParseError as e:
                        intent, malformed = f"(malformed: {str(e.lm_response)[:30]!r})", malformed + 1
                right += intent == row["intent"]
                answers.append(intent)
            print(f"{tier:<9} accuracy {right / len(rows):.3f} ({right}/{len(rows)})   malformed {malformed}   "
                  f"first answers: {answers[:3]}", flush=True)
        runtime.close()


if __name__ == "__main__":
    sys.exit(main())
