"""Trade-off reports: tidy pandas tables from a compiled artifact, an Optuna study or a cost ledger.

    report = load_report("support.tierwise.json")        # or a study name (+ storage), or ledger.jsonl
    report.tables["segments"]                              # DataFrames, see metrics.report_tables
    print(render_text(report)); write_report(report, "report/")   # CSVs, pareto.png, report.html

An artifact gives every table (its "evaluation" section keeps per-row results with tier trails, per-cell
correctness by tier and every trial). A study gives trials and the front; a ledger gives what production
traffic did per predictor and rung. Compile time only: pandas is imported here, never by pipelines/.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from metrics import report_tables as rt
from metrics.report_model import SPLITS, STEP_COLUMNS, Report
from metrics.study_report import report_from_study
from pipelines import paths
from pipelines.errors import ArtifactError, ConfigError, DatasetError


def load_report(source: str | Path, storage: str | None = None, split: str = "all",
                signals: tuple[str, ...] = ()) -> Report:
    """An artifact (.json), a ledger (.jsonl) or, for anything else, an Optuna study name in `storage`.
    `signals`: the user's signal plug-ins a replay policy was fitted with (optimizers.signal_plugins)."""
    if split not in SPLITS:
        raise ConfigError(f"report: --split must be one of {', '.join(SPLITS)}, got {split!r}")
    path = Path(source)
    if path.suffix == ".jsonl":
        return report_from_ledger(path)
    if path.suffix == ".json" or path.is_file():
        return report_from_artifact(path, split, signals)
    return report_from_study(storage or _default_storage(), str(source))


def _default_storage() -> str:
    db = paths.studies_db()
    if not db.is_file():
        raise ConfigError("report: the source is neither an artifact (.json) nor a ledger (.jsonl) file, and "
                          f"no --storage was given for a study (no {db} here either)")
    return f"sqlite:///{db.resolve()}"


# --- from an artifact ----------------------------------------------------------------------------


def report_from_artifact(path: str | Path, split: str = "all", signals: tuple[str, ...] = ()) -> Report:
    from pipelines import artifact

    if split not in SPLITS:
        raise ConfigError(f"report: --split must be one of {', '.join(SPLITS)}, got {split!r}")
    body = artifact.read(path)
    if body.get("replay"):
        from metrics.replay_report import report_from_replay

        return report_from_replay(path, body, split, signals)
    ev = body.get("evaluation")
    if not ev:
        raise ArtifactError(f"{path}: has no evaluation section (compiled by an older tierwise); "
                            "recompile with `cli.py optimize` to report on it")
    tiers = list(ev["tiers"])
    flagship, cheapest = tiers[-1], tiers[0]
    ladders = body.get("policy", {}).get("predictors", {})

    rows = pd.concat([_rows_frame(ev["chosen"], "chosen")] +
                     [_rows_frame(records, tier) for tier, records in ev["baselines"].items()], ignore_index=True)
    steps = {"chosen": _steps_frame(ev["chosen"])} | {t: _steps_frame(r) for t, r in ev["baselines"].items()}
    scope = rows if split == "all" else rows[rows["split"] == split]
    chosen_rows, flag_rows = scope[scope["policy"] == "chosen"], scope[scope["policy"] == flagship]
    chosen_steps = steps["chosen"] if split == "all" else steps["chosen"][steps["chosen"]["split"] == split]
    cells = pd.DataFrame(ev["cells"])
    if split != "all" and not cells.empty:
        cells = cells[cells["split"] == split]

    trials = _trials_with_latency(pd.DataFrame(ev["trials"]), rows, ev["chosen_trial"])
    points = rt.operating_points(rows, steps)
    points = pd.concat([points, rt.operating_points(rows.assign(split="all"), steps)], ignore_index=True)
    escalated = set(chosen_steps.loc[chosen_steps["decision"] == "escalated", "query_id"])
    tables = {
        "savings": rt.savings_table(points, flagship, cheapest),
        "operating_points": points,
        "segments": rt.segment_table(chosen_rows, flag_rows, escalated),
        "predictors": rt.predictor_table(chosen_steps, len(chosen_rows), tiers, ladders),
        "rungs": rt.rung_table(chosen_steps),
        "tier_quality": rt.tier_quality_table(cells, tiers) if not cells.empty else pd.DataFrame(),
        "pareto": rt.pareto_table(trials),
        "trials": trials,
    }
    summary = body.get("summary") or {}
    meta = {"task": summary.get("task") or body["program"].get("task"), "tiers": tiers, "flagship": flagship,
            "cheapest": cheapest, "chosen_trial": ev["chosen_trial"], "split": split,
            "objective": summary.get("objective"), "study": body.get("study", {}).get("name")}
    return Report(str(path), "artifact", tables, meta, summary)


def _rows_frame(records: list[dict], policy: str) -> pd.DataFrame:
    frame = pd.DataFrame([{k: v for k, v in r.items() if k != "steps"} for r in records])
    frame.insert(0, "policy", policy)
    return frame


def _steps_frame(records: list[dict]) -> pd.DataFrame:
    flat = [{"query_id": r["row_id"], "split": r["split"], "segment": r["segment"], "call": 0, **s}
            for r in records for s in r["steps"]]  # artifacts before "call" had one call per predictor
    return pd.DataFrame(flat, columns=STEP_COLUMNS + ["error"])[STEP_COLUMNS]


def _trials_with_latency(trials: pd.DataFrame, rows: pd.DataFrame, chosen: str) -> pd.DataFrame:
    """Trial quality and cost are dev-set numbers; latency is known (dev mean) for the points whose
    per-row results the artifact keeps: the chosen trial and the uniform baselines."""
    dev = rows[rows["split"] == "dev"].groupby("policy")["latency_s"].mean()
    table = rt.trials_table(trials, chosen)
    table["latency_s"] = [dev.get("chosen") if c else dev.get(b) if b else None
                          for c, b in zip(table["chosen"], table["baseline"])]
    table.insert(3, "latency_s", table.pop("latency_s").astype(float))
    return table


# --- from a ledger -------------------------------------------------------------------------------


def report_from_ledger(path: str | Path) -> Report:
    """What recorded traffic did: per predictor (tier mix, escalation, cost share), per rung
    (escalation, confidence quantiles) and overall spend per query. A query is one program call
    (its request id); records without one (the optimizer's recording calls) count one query each."""
    from pipelines.ledger import Ledger

    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"ledger not found: {path}")
    try:
        calls = Ledger.read_frame(path)
    except (json.JSONDecodeError, KeyError) as e:
        raise DatasetError(f"{path}: not a tierwise ledger ({type(e).__name__}: {e})") from None
    if calls.empty:
        raise DatasetError(f"{path}: the ledger has no calls")
    calls = calls.assign(query_id=calls["request_id"].where(calls["request_id"] != "", calls["call_id"]),
                         call=calls["call"].fillna(0).astype(int),  # ledgers before "call": one call per predictor
                         tokens=calls["prompt_tokens"] + calls["completion_tokens"], split="", segment="")
    calls["decision"] = calls["decision"].replace("", "accepted")  # unrouted calls: their answer was used
    n_queries = calls["query_id"].nunique()
    # Cheapest first, by price per token paid or saved (a ledger holds no catalog).
    price = calls.groupby("tier").apply(lambda g: (g["cost_usd"] + g["saved_usd"]).sum() / max(g["tokens"].sum(), 1),
                                        include_groups=False)
    tiers = list(price.sort_values().index)
    per_query = calls.groupby("query_id").agg(cost=("cost_usd", "sum"), latency=("latency_s", "sum"),
                                              tokens=("tokens", "sum"))
    waste = calls[calls["decision"] == "escalated"]
    spend = pd.DataFrame([{
        "queries": n_queries, "calls": len(calls), "cache_hit_rate": calls["cache_hit"].mean(),
        "cost_per_1k": per_query["cost"].mean() * 1000, "saved_by_cache_usd": calls["saved_usd"].sum(),
        "avg_latency_s": per_query["latency"].mean(), "tokens_per_query": per_query["tokens"].mean(),
        "wasted_tokens_per_query": waste["tokens"].sum() / n_queries,
        "wasted_cost_per_1k": waste["cost_usd"].sum() / n_queries * 1000}])
    by_tier = calls.groupby("tier", sort=False).agg(calls=("call_id", "size"), cost_usd=("cost_usd", "sum"),
                                                     tokens=("tokens", "sum"), avg_latency_s=("latency_s", "mean"))
    steps = calls[STEP_COLUMNS].assign(price_usd=calls["cost_usd"] + calls["saved_usd"])
    tables = {"spend": spend, "tiers": by_tier.reset_index(),
              "predictors": rt.predictor_table(steps, n_queries, tiers), "rungs": rt.rung_table(steps)}
    return Report(str(path), "ledger", tables, {"tiers": tiers})


# --- output --------------------------------------------------------------------------------------

PRINTED = ("savings", "segments", "predictors", "rungs", "tier_quality", "pareto", "spend", "tiers")


def render_text(report: Report) -> str:
    """The key tables as text (the full trials table goes to CSV/HTML only)."""
    lines = [f"report: {report.source} ({report.kind})"]
    if report.meta.get("task"):
        lines.append(f"task: {report.meta['task']}   tiers: {' < '.join(report.meta['tiers'])}   "
                     f"rows: {report.meta.get('split', '')}")
    with pd.option_context("display.width", 160, "display.max_columns", 30, "display.max_colwidth", 70,
                           "display.float_format", _fmt):
        for name in PRINTED:
            table = report.tables.get(name)
            if table is None or table.empty:
                continue
            lines += ["", f"== {rt.TITLES[name]}", table.to_string(index=False)]
    flagged = report.tables.get("segments")
    if flagged is not None and not flagged.empty:
        bad = flagged.loc[flagged["flag"], "segment"].tolist()
        lines += ["", f"routing-fairness audit: {'FLAGGED ' + ', '.join(bad) if bad else 'no segment flagged'}"]
    lines += [f"note: {note}" for note in report.meta.get("notes", [])]
    return "\n".join(lines)


def _fmt(x: float) -> str:
    return f"{x:.6f}" if abs(x) < 0.01 and x != 0 else f"{x:.3f}"


def check_out_dir(out_dir: str | Path) -> Path:
    """Refuse --out naming a file (or under one) before any table is built."""
    out = Path(out_dir)
    blocker = next((p for p in [out, *out.parents] if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise ConfigError(f"report --out {out}: {blocker} is a file; give a folder for the CSVs, pareto.png "
                          "and report.html")
    return out


def write_report(report: Report, out_dir: str | Path) -> dict[str, Path]:
    """Every table as CSV, the Pareto plot as PNG (when there are trials) and one self-contained HTML."""
    from metrics.html import write_html
    from metrics.plot import pareto_plot

    out = check_out_dir(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"report --out {out}: cannot create the folder ({e.strerror})") from None
    written = {}
    for name, table in report.tables.items():
        written[f"{name}.csv"] = out / f"{name}.csv"
        table.to_csv(written[f"{name}.csv"], index=False)
    if "trials" in report.tables:
        written["pareto.png"] = pareto_plot(report, out / "pareto.png")
    written["report.html"] = write_html(report, out / "report.html", written.get("pareto.png"))
    return written
