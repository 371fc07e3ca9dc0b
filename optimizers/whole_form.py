"""A decomposed compile against the program as written. `optimize --decompose` reports its saving against its
own flagship-only, which asks one question per field; whether splitting pays is the chosen policy against the
whole form on the reference tier, on the same holdout rows. Those calls are paid once and cached: a compile of
the whole form later reads them."""

from __future__ import annotations

from dataclasses import replace

from optimizers.select import savings_pct
from optimizers.stages import Job, prepare
from optimizers.summary import block, paired_gap
from pipelines.errors import BudgetExceeded
from pipelines.policy import Policy


class AsWritten:
    """The task as written without its answer checks: those name the split predictors, and the whole form runs on
    the reference tier alone, where no confidence reads them."""

    checks = None

    def __init__(self, task):
        self._task = task

    def __getattr__(self, name):
        return getattr(self._task, name)


def add_whole_form(job: Job, task, result) -> None:
    """A decomposed compile's summary (and artifact) also get the line against the whole form (`task.whole`)."""
    chosen = {r["row_id"]: r["score"] for r in result.body["evaluation"]["chosen"] if r["split"] == "holdout"}
    result.summary["whole_form"] = whole_form_reference(job, task.whole, result.summary, chosen)
    result.body["summary"] = result.summary


def whole_form_reference(job: Job, whole_task, summary: dict, chosen_scores: dict[str, float]) -> dict:
    """The whole form's program, every predictor on `summary`'s reference tier, on the compile's holdout rows
    (the same split: same rows, seed and share); with the chosen policy's saving and paired gap against it
    (`chosen_scores`: the chosen policy's score per holdout row id)."""
    reference = summary["reference"]
    # --budget-usd covers the whole command: these calls get what the decomposed compile left of it
    left = None if job.budget_usd is None else max(0.0, job.budget_usd - summary.get("spent_usd_compile", 0.0))
    session = prepare(replace(job, task=AsWritten(whole_task), notes=[], out=None, budget_usd=left))
    try:
        results = session.evaluate(Policy.uniform(session.predictors, reference), session.hold)
        paid = session.table.budget.paid_calls
    except BudgetExceeded as stop:
        return {"skipped": f"the whole form on {reference} was not measured: {stop}"}
    finally:
        session.runtime.close()
    scores, costs = [r.score for r in results], [r.cost_usd for r in results]
    holdout = block(scores, costs, with_ci=True, seed=job.seed)
    out = {"tier": reference, "holdout": holdout, "paid_calls": int(paid),
           "savings_pct": savings_pct(summary["holdout"]["cost_per_1k"], holdout["cost_per_1k"])}
    out["gap"] = paired_gap([chosen_scores[r.row_id] for r in results], scores, seed=job.seed)
    return out
