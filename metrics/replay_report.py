"""`tierwise report` on a `replay fit` artifact: the policy applied again to the table it was fitted on
(optimizers.replay.apply), laid out as an optimize artifact's report is: savings against the reference model
and the cheapest, operating points, the segment audit, each rung's escalations, and the study's trials."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from metrics import report_tables as rt
from metrics.report_model import STEP_COLUMNS, Report
from metrics.study_report import report_from_study
from pipelines.errors import ConfigError, TierwiseError


def report_from_replay(path: str | Path, body: dict, split: str, signals: tuple[str, ...] = ()):
    from optimizers.replay import apply

    replay, summary = body["replay"], body.get("summary") or {}
    table = replay["outcomes"]
    beside = Path(path).parent / Path(table).name  # policies fitted before paths were kept absolute, or moved along
    table = table if Path(table).is_file() or not beside.is_file() else str(beside)
    if not Path(table).is_file():
        raise ConfigError(f"report: {path} was fitted on {table}, which is not there; its report reads that table")
    applied = apply(path, table, signals=signals)
    if not applied.fitted_table:
        raise ConfigError(f"report: {table} changed since {path} was fitted on it; refit it, or read the policy "
                          "on the new table with `replay apply`")
    matrix, predictor = applied.matrix, replay["predictor"]
    split_of = {rid: "dev" for rid in replay["split"]["dev"]} | {rid: "holdout" for rid in replay["split"]["holdout"]}
    row_of = {rid: q for q, rid in enumerate(matrix.ids)}
    tiers = list(matrix.models)  # cheapest first, as the table is read (optimizers.replay_table)

    ladder = ((body.get("policy") or {}).get("predictors") or {}).get(predictor) or {}
    rungs = list(ladder.get("ladder") or matrix.models)
    thresholds = (ladder.get("thresholds") or []) if ladder.get("estimator", "none") != "none" else []
    rows, steps = [], {"chosen": []}
    for d in applied.decisions:
        if d.id not in split_of:  # an id the reference never answered: left out of the fit's comparisons too
            continue
        q = row_of[d.id]
        base = {"row_id": d.id, "split": split_of[d.id], "segment": matrix.segments[q], "latency_s": np.nan}
        rows.append({**base, "policy": "chosen", "score": d.score, "cost_usd": d.cost_usd})
        for k, model in enumerate(d.models_called):
            j = matrix.models.index(model)
            decision = "failed" if not matrix.present[q, j] else "escalated" if model != d.final_model else \
                "accepted" if k == len(d.models_called) - 1 else "fallback"  # the rungs after it failed
            rung = rungs.index(model)  # a router may start above the first rung: rungs are ladder positions
            step = _step(base, predictor, rung, model, decision, matrix.cost[q, j])
            steps["chosen"].append({**step, "threshold": thresholds[rung] if rung < len(thresholds) else np.nan})
        for j, model in enumerate(matrix.models):
            answered = bool(matrix.present[q, j])
            rows.append({**base, "policy": model, "score": float(matrix.score[q, j]) if answered else 0.0,
                         "cost_usd": float(matrix.cost[q, j])})
            steps.setdefault(model, []).append(_step(base, predictor, 0, model, "accepted" if answered else "failed",
                                                     matrix.cost[q, j]))
    rows = pd.DataFrame(rows)
    steps = {name: pd.DataFrame(s, columns=STEP_COLUMNS) for name, s in steps.items()}
    scope = rows if split == "all" else rows[rows["split"] == split]
    chosen_steps = steps["chosen"] if split == "all" else steps["chosen"][steps["chosen"]["split"] == split]
    reference = summary.get("reference") or tiers[-1]
    points = pd.concat([rt.operating_points(rows, steps), rt.operating_points(rows.assign(split="all"), steps)],
                       ignore_index=True)
    escalated = set(chosen_steps.loc[chosen_steps["decision"] == "escalated", "query_id"])
    trials, trials_note = _trials(summary, body.get("policy"))
    tables = {
        "savings": rt.savings_table(points, reference, tiers[0]),
        "operating_points": points,
        "segments": rt.segment_table(scope[scope["policy"] == "chosen"], scope[scope["policy"] == reference],
                                     escalated),
        "predictors": rt.predictor_table(chosen_steps, int((scope["policy"] == "chosen").sum()), tiers,
                                         (body.get("policy") or {}).get("predictors")),
        "rungs": rt.rung_table(chosen_steps),
        **({"pareto": rt.pareto_table(trials), "trials": trials} if trials is not None else {}),
    }
    meta = {"task": summary.get("task"), "tiers": tiers, "flagship": reference, "cheapest": tiers[0],
            "split": split, "objective": summary.get("objective"), "study": summary.get("study"),
            "notes": applied.notes + ([trials_note] if trials_note else []) + _in_sample_note(rows, summary)}
    return Report(str(path), "replay artifact", tables, meta, summary)


def _in_sample_note(rows: pd.DataFrame, summary: dict) -> list[str]:
    """The policy's router and scorer were fitted on the dev rows: read back on them they are in-sample, where
    the fit scored dev out of fold; say so when the two differ, so the dev line is not read as the fit's."""
    fitted = (summary.get("dev") or {}).get("quality")
    dev = rows[(rows["policy"] == "chosen") & (rows["split"] == "dev")]["score"]
    if fitted is None or dev.empty or abs(float(dev.mean()) - fitted) < 5e-4:
        return []
    return [f"dev quality {dev.mean():.3f} here is in-sample (the policy's router and scorer were fitted on those "
            f"rows); the fit's out-of-fold dev quality was {fitted:.3f}; the holdout is the honest figure"]


def _step(base: dict, predictor: str, rung: int, model: str, decision: str, cost: float) -> dict:
    return {"query_id": base["row_id"], "split": base["split"], "segment": base["segment"], "predictor": predictor,
            "call": 0, "rung": rung, "tier": model, "confidence": np.nan, "threshold": np.nan,
            "decision": decision, "cost_usd": float(cost), "tokens": 0}


def _trials(summary: dict, policy: dict | None) -> tuple[pd.DataFrame | None, str | None]:
    """The fit's study, its chosen trial marked (the one whose policy is the artifact's), when its storage is
    reachable from here; else no trials table, and a note saying why."""
    from pipelines import paths

    storage, name = summary.get("storage"), summary.get("study")
    if not name:
        return None, None
    if not storage or storage.startswith("default"):
        db = paths.studies_db()
        storage = f"sqlite:///{db.resolve()}" if db.is_file() else None
    if storage is None:
        return None, f"trials: the study {name} is in .tierwise/studies.db of the folder the fit ran in"
    try:
        report = report_from_study(storage, name)
    except TierwiseError as e:
        return None, f"trials: {e}"
    trials, policies = report.tables["trials"], report.meta["policies"]
    trials["chosen"] = [_same_policy(policies.get(int(n)), policy) for n in trials["number"]]
    return trials, None


def _same_policy(a: dict | None, b: dict | None) -> bool:
    return a is not None and b is not None and a.get("predictors") == b.get("predictors")
