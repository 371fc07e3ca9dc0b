"""Does the top-2 log-probability margin say more than the answer's own log-probability? (needs `local`)

For each tier and predictor of the support task (datasets/support.jsonl, every row), the predictor's
request is sent to the local tier with `top_logprobs=5` (tierwise asks for 1), and each answer is
scored by: logprob_mean and logprob_min (what tierwise's estimators read), the margin p1 - p2 of the
first answer token and the smallest margin over the answer tokens, and 1 - p2 of the first token.
Printed: the tier's accuracy and each signal's AUC for "this answer is right" (0.5 = no signal).
Calls bypass the cache (every one is made) and nothing is written to disk.

Usage:  PYTHONPATH=. python benchmarks/confidence_signals.py [--tiers cheap,mid] [--limit N]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pipelines  # noqa: F401 - keeps dspy offline (LITELLM_LOCAL_MODEL_COST_MAP) before it loads

import dspy  # noqa: E402
import numpy as np  # noqa: E402

import pipelines.backends as backends  # noqa: E402
from pipelines.cache import CallCache  # noqa: E402
from pipelines.confidence import field_spans  # noqa: E402
from pipelines.ledger import Ledger  # noqa: E402
from pipelines.runtime import ADAPTER, Runtime  # noqa: E402
from pipelines.tasks import support  # noqa: E402
from pipelines.tiers import LOCAL_PREFIX  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SIGNALS = ("logprob_mean", "logprob_min", "margin_first", "margin_min", "one_minus_p2")
last_body: list[dict] = []  # the raw response of the latest call, top_logprobs included


def top5_backend(tier):
    """The local backend with top_logprobs=5, keeping the raw response (tierwise's drops alternatives)."""
    key = tier.model[len(LOCAL_PREFIX):]

    def call(payload: dict) -> dict:
        from pipelines.local import get_server

        body = {"messages": payload["messages"], **payload["config"], "logprobs": True, "top_logprobs": 5}
        body.setdefault("temperature", 0.0)
        if body.get("stop") is None:
            body.pop("stop", None)
        response, _ = get_server(key).chat(body)
        last_body[:] = [response]
        return backends.read_chat_completion(response)

    return call


def answer_tokens(response: dict, fields: list[str]) -> list[dict]:
    """The response's token entries that overlap the answer fields (as confidence.answer_logprobs picks)."""
    choice = response["choices"][0]
    text = choice["message"].get("content") or ""
    spans, out, pos = field_spans(text, fields), [], 0
    for token in (choice.get("logprobs") or {}).get("content") or []:
        start, end = pos, pos + len(token["token"])
        pos = end
        if any(start < e and end > s for s, e in spans):
            out.append(token)
    return out


def signals(tokens: list[dict]) -> dict[str, float]:
    if not tokens:
        return {name: 0.0 for name in SIGNALS}
    lps = [t["logprob"] for t in tokens]
    margins, runners_up = [], []
    for t in tokens:
        others = [math.exp(a["logprob"]) for a in t.get("top_logprobs") or [] if a["token"] != t["token"]]
        runner_up = max(others, default=0.0)
        margins.append(math.exp(t["logprob"]) - runner_up)
        runners_up.append(runner_up)
    return {"logprob_mean": math.exp(sum(lps) / len(lps)), "logprob_min": math.exp(min(lps)),
            "margin_first": margins[0], "margin_min": min(margins), "one_minus_p2": 1 - runners_up[0]}


def auc(scores, right) -> float:
    """P(a right answer scores above a wrong one), ties counted half."""
    s, y = np.asarray(scores, float), np.asarray(right, bool)
    pos, neg = s[y], s[~y]
    if not len(pos) or not len(neg):
        return float("nan")
    return float(((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).mean())


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tiers", default="cheap,mid")
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args()
    rows = [json.loads(line) for line in open(ROOT / "datasets" / "support.jsonl")][:args.limit]
    backends.local_backend = top5_backend  # this script's backend: backend_for reads the module global
    runtime = Runtime(cache=CallCache(enabled=False), ledger=Ledger())
    program = support.build_program()
    print(f"support, {len(rows)} rows; AUC of each signal for 'the answer is right'")
    print(f"{'tier':<9} {'predictor':<10} {'accuracy':>8}  " + "  ".join(f"{s:>12}" for s in SIGNALS))
    for tier in args.tiers.split(","):
        for name, predictor in program.named_predictors():
            fields = list(predictor.signature.output_fields)
            right, measured = [], {s: [] for s in SIGNALS}
            for row in rows:
                last_body.clear()
                with dspy.context(adapter=ADAPTER):
                    try:
                        outputs = dict(predictor(message=row["message"], lm=runtime.lm(tier)).items())
                        ok = bool(support.predictor_correct(name, row, outputs))
                    except Exception:  # noqa: BLE001 - a malformed answer is a wrong one
                        ok = False
                found = signals(answer_tokens(last_body[0], fields)) if last_body else signals([])
                right.append(ok)
                for s in SIGNALS:
                    measured[s].append(found[s])
            print(f"{tier:<9} {name:<10} {np.mean(right):>8.3f}  "
                  + "  ".join(f"{auc(measured[s], right):>12.3f}" for s in SIGNALS), flush=True)


if __name__ == "__main__":
    main()
