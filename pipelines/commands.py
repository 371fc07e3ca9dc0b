"""`cli.py run`: a compiled artifact on one input or a JSONL batch, with a cost/tier summary."""

from __future__ import annotations

import json
import sys
from collections import Counter

from pipelines.errors import AllRungsFailed, BudgetExceeded, ConfigError, one_line, reraise_ours
from pipelines.ledger import Ledger

REFUSED = "REFUSED: --budget-usd reached"  # a request `run --budget-usd` did not pay for


def _inputs(input_json, dataset) -> list[dict]:
    if bool(input_json) == bool(dataset):
        raise ConfigError("give exactly one of --input '{...}' or --dataset FILE.jsonl")
    if input_json:
        try:
            value = json.loads(input_json)
        except json.JSONDecodeError as e:
            raise ConfigError(f"--input is not valid JSON ({e.msg})") from None
        if not isinstance(value, dict):
            raise ConfigError("--input must be a JSON object of input fields")
        return [value]
    from pipelines.tasks import read_jsonl

    return read_jsonl(dataset)


def run_artifact(path, input_json, dataset, as_json, ledger_path, echo=print, task=None,
                 require_signature=None, key_env=None, budget_usd=None) -> list[dict]:
    """Each request's output, error, cost and trail, printed. With `budget_usd`, from the first request whose next
    call could pass it on, only cached answers are served (the others print as REFUSED); after printing,
    BudgetExceeded is raised (exit 3)."""
    from pipelines.artifact import load_program
    from pipelines.tasks import input_converter, input_type_problem

    ledger = Ledger(ledger_path) if ledger_path else None  # refused here, before any call, if it cannot be written
    program = load_program(path, task=task, ledger=ledger, require_signature=require_signature, key_env=key_env,
                           budget_usd=budget_usd)
    fields = _input_fields(program)
    rows = _inputs(input_json, dataset)
    where = f"{dataset}: row" if dataset else "input"
    for number, row in enumerate(rows, 1):  # every row checked before the first call is paid for
        missing = [f for f in fields if f not in row]
        if missing:
            raise ConfigError(f"{where} {number}: missing fields {missing}; the program takes {fields}")
        problem = input_type_problem(program.program, {f: row[f] for f in fields})
        if problem:
            raise ConfigError(f"{where} {number}: {problem}")
    outputs, typed_inputs = [], input_converter(program.program)
    iterator = rows
    if len(rows) > 1 and not as_json:
        from rich.progress import track

        iterator = track(rows, description="running", console=_stderr_console())
    stopped = None
    for number, row in enumerate(iterator, 1):
        try:
            prediction = program(**typed_inputs({f: row[f] for f in fields}))
            result = {k: _jsonable(prediction[k]) for k in prediction.keys() if k != "logprobs"}
            error = ""
        except BudgetExceeded as e:
            # From the first refusal on, only cached answers: a later request must not pay its cheap rung and then
            # be refused its next one (money spent on no answer)
            stopped = stopped or e
            program.spend_cap.closed = True
            result, error = None, REFUSED
        except AllRungsFailed as e:
            result, error = None, str(e)
        except Exception as e:  # noqa: BLE001 - the program's own code raised on this request: the next one runs
            reraise_ours(e)
            result, error = None, f"program: {one_line(e)}"
        trail = [{"predictor": s.predictor, "tier": s.tier, "decision": s.decision,
                  "confidence": s.confidence, "cost_usd": s.cost_usd, **({"matched": s.matched, "matched_text": s.matched_text} if s.matched else {}),
                  **({"error": s.error} if s.error else {})}
                 for s in program.last_trail]
        outputs.append({"id": row.get("id", number), "output": result, "error": error,
                        "cost_usd": sum(s["cost_usd"] for s in trail), "trail": trail})
    summary = _summary(outputs, program.ledger)
    if as_json:
        echo(json.dumps({"results": outputs, "summary": summary}, indent=2, default=str))
    else:
        for out in outputs:
            path_text = " ; ".join(f"{s['predictor']}:{s['tier']}({s['decision']})" for s in out["trail"])
            shown = json.dumps(out["output"], default=str) if out["output"] else \
                out["error"] if out["error"] == REFUSED else "FAILED " + out["error"]
            echo(f"{out['id']}: {shown}")
            echo(f"    ${out['cost_usd']:.7f}  {path_text}")
            for step in out["trail"]:  # why a rung failed (an outage, a refused key): the fallback hides it otherwise
                if step["decision"] == "semantic_hit":  # whose answer was reused: the stored request, as written
                    echo(f"    {step['predictor']}: semantic cache hit (similarity {step['confidence']:.3f}) on "
                         f"{json.dumps(one_line(step['matched_text'])[:160])}")
                if step.get("error"):
                    echo(f"    {step['predictor']}:{step['tier']} failed: {one_line(step['error'])[:200]}")
        failed = (f"{summary['failed']} FAILED  " if summary["failed"] else "") + \
            (f"{summary['refused']} REFUSED  " if summary["refused"] else "")
        echo(f"{summary['requests']} requests  {failed}cost ${summary['cost_usd']:.7f} "
             f"(paid now ${summary['paid_usd']:.7f}, {summary['cache_hits']} cache hits)  answered by: "
             + ", ".join(f"{k} {v}" for k, v in summary["final_tiers"].items())
             + (f"  semantic cache: {summary['semantic_hits']} hits of {summary['semantic_lookups']} lookups"
                if "semantic_lookups" in summary else ""))
    if stopped is not None:
        raise BudgetExceeded(_budget_stop(program.spend_cap, stopped, outputs)) from stopped
    return outputs


def _budget_stop(cap, first: BudgetExceeded, outputs: list[dict]) -> str:
    refused = sum(o["error"] == REFUSED for o in outputs)
    bound = getattr(first, "bound_usd", None)
    too_small = (f"; the cap is below one call's upper bound (${bound:.6f}: every input byte a token, every allowed "
                 "output token), so no uncached call could fit" if cap.paid_calls == 0 and bound and
                 bound > cap.cap_usd else "")
    return (f"--budget-usd {cap.cap_usd:g} reached: spent ${cap.spent_usd:.6f} in {cap.paid_calls} paid calls; "
            f"{refused} of {len(outputs)} requests refused (each shown as REFUSED), the others answered{too_small}. "
            "Answered calls are cached: a rerun with a larger --budget-usd pays only for the rest")


def _jsonable(value):
    """An output as JSON data: a pydantic model as its fields (str() gave "name='Alice' age=30"), an Enum as its
    value; what pydantic cannot serialize, as text."""
    from pydantic_core import to_jsonable_python

    try:
        return to_jsonable_python(value)
    except Exception:  # noqa: BLE001 - any other object prints as itself
        return str(value)


def _input_fields(program) -> list[str]:
    from pipelines.programs import program_inputs

    return list(program_inputs(program.program))


def _summary(outputs, ledger) -> dict:
    final = Counter()
    for out in outputs:
        for step in out["trail"]:
            if step["decision"] in ("accepted", "fallback", "semantic_hit"):
                final[f"{step['predictor']}:{step['tier']}"] += 1
    return {"requests": len(outputs), "cost_usd": sum(o["cost_usd"] for o in outputs),
            "paid_usd": ledger.total_cost() if ledger is not None else 0.0,
            "cache_hits": ledger.cache_hits if ledger is not None else 0,  # the exact call cache
            "failed": sum(1 for o in outputs if o["error"] not in ("", REFUSED)),
            "refused": sum(1 for o in outputs if o["error"] == REFUSED), "final_tiers": dict(final),
            **_lookups(outputs)}


def _lookups(outputs) -> dict:
    """Semantic-cache lookups (pipelines.semantic_cache), when the policy has any."""
    steps = [s for out in outputs for s in out["trail"] if s["decision"] in ("semantic_hit", "semantic_miss")]
    if not steps:
        return {}
    hits = [s for s in steps if s["decision"] == "semantic_hit"]
    return {"semantic_lookups": len(steps), "semantic_hits": len(hits),
            "semantic_hit_similarity_min": min((s["confidence"] for s in hits), default=None)}


def _stderr_console():
    from rich.console import Console

    return Console(file=sys.stderr)
