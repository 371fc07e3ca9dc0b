"""Tidy trade-off tables, each a pure function of a few DataFrames (built by metrics.report).

Frames read here:
    trials  one row per searched policy: number, quality, cost_per_1k, policy (dict)
    rows    one row per (policy, query): policy, row_id, split, segment, score, cost_usd, latency_s
    steps   one row per tier-trail entry: query_id, split, segment, predictor, call, rung, tier, confidence,
            threshold, decision, cost_usd, tokens
    cells   one row per (query, predictor, call, tier) outcome: correct, logprob_mean, logprob_min, ...
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from optimizers.select import Candidate, pareto_front, savings_pct
from optimizers.summary import describe_ladder

FINAL = ("accepted", "fallback", "semantic_hit", "run_time")  # decisions whose answer the program used
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)
Z_FLAG = 1.96  # routing-fairness flag: a segment's gap beyond 1.96 standard errors (about 95%, two-sided)

TITLES = {
    "savings": "Savings: chosen policy against flagship-only and the cheapest tier",
    "operating_points": "Operating points (per split; fallback_rows: queries a tier outside the policy's ladder "
                        "answered, counted in its quality)",
    "segments": "Per segment: routing-fairness audit (flag = worse than flagship-only beyond 1.96 SE)",
    "predictors": "Per predictor: tier mix of final answers, escalation, cost share",
    "rungs": "Per rung: escalation and confidence quantiles (rung -1: the deterministic fallback, a tier outside "
             "the ladder that answered after every rung failed or was malformed)",
    "tier_quality": "Per predictor quality by tier (every recorded cell)",
    "pareto": "Pareto front (dev), uniform baselines and the chosen point",
    "trials": "All trials (dev quality and cost per 1k queries)",
    "spend": "Spend per query",
    "tiers": "Calls per tier",
}


def uniform_tier(policy: dict | None) -> str | None:
    """The tier a policy runs every predictor on, or None when it routes or mixes tiers."""
    ladders = [p["ladder"] for p in (policy or {}).get("predictors", {}).values()]
    if ladders and all(len(ladder) == 1 for ladder in ladders) and len({ladder[0] for ladder in ladders}) == 1:
        return ladders[0][0]
    return None


def trials_table(trials: pd.DataFrame, chosen: str | None = None) -> pd.DataFrame:
    """Trials with their policy flattened per predictor (`<predictor>.ladder` / `.estimator` /
    `.thresholds` / `.route_lambda`, and `.semantic_threshold` when the search tried a semantic cache) and marks: `baseline` (the uniform tier), `chosen`, `on_front`."""
    out = trials[["number", "quality", "cost_per_1k"]].copy()
    out["baseline"] = [uniform_tier(p) or "" for p in trials["policy"]]
    out["chosen"] = out["number"].astype(str) == str(chosen) if chosen is not None else False
    out["on_front"] = non_dominated(out["quality"].to_numpy(), out["cost_per_1k"].to_numpy())
    flat = []
    for policy in trials["policy"]:
        row = {}
        for name, p in (policy or {"predictors": {}})["predictors"].items():
            row[f"{name}.ladder"] = ">".join(p["ladder"])
            row[f"{name}.estimator"] = p.get("estimator", "none") if len(p["ladder"]) > 1 else ""
            row[f"{name}.thresholds"] = ",".join(f"{t:.3f}" for t in p.get("thresholds", []))
            row[f"{name}.route_lambda"] = float(p["route"]["lambda"]) if p.get("route") else np.nan
            if p.get("semantic"):  # --semantic-cache: the trial's lookup threshold (NaN where it had none)
                row[f"{name}.semantic_threshold"] = float(p["semantic"]["threshold"])
        flat.append(row)
    return pd.concat([out.reset_index(drop=True), pd.DataFrame(flat)], axis=1).sort_values("number",
                                                                                            ignore_index=True)


def non_dominated(quality, cost) -> np.ndarray:
    """True where the point lies on the Pareto front (quality up, cost down) as optimizers.select.pareto_front
    draws it; trials landing on the same front point are all marked."""
    front = {(c.quality, c.cost_per_1k) for c in pareto_front(
        [Candidate(str(i), None, float(q), float(c)) for i, (q, c) in enumerate(zip(quality, cost))])}
    return np.array([(float(q), float(c)) in front for q, c in zip(quality, cost)], dtype=bool)


def pareto_table(trials: pd.DataFrame) -> pd.DataFrame:
    """The front, plus the uniform baselines and the chosen point wherever they lie, cheapest first.
    Trials landing on the same (quality, cost) point (the sampler repeats policies, and different
    policies can act alike on the dev set) show once, labelled with every mark they share (e.g.
    'chosen = baseline small'), represented by the chosen trial, else a baseline, else the first;
    `trials_at_point` counts them."""
    keep = trials["on_front"] | (trials["baseline"] != "") | trials["chosen"]
    front = trials.loc[keep].copy()
    front["key"] = list(zip(front["quality"].round(12), front["cost_per_1k"].round(12)))
    labels = {}
    for key, g in front.groupby("key"):
        marks = (["chosen"] if g["chosen"].any() else []) + \
            [f"baseline {b}" for b in sorted(set(g["baseline"]) - {""})]
        labels[key] = " = ".join(marks) or "front"
    policy_cols = [c for c in trials.columns if "." in c]
    front["policy"] = front[policy_cols].apply(_policy_text, axis=1) if policy_cols else ""
    front["point"] = front["key"].map(labels)
    counts = front.groupby("key").size()
    front["rank"] = np.where(front["chosen"], 0, np.where(front["baseline"] != "", 1, 2))
    front = front.sort_values(["rank", "number"]).drop_duplicates(subset=["key"], keep="first")
    front["trials_at_point"] = front["key"].map(counts)
    cols = ["point", "number", "quality", "cost_per_1k", "on_front", "trials_at_point", "policy"]
    return front[cols].sort_values(["cost_per_1k", "quality"], ascending=[True, False], ignore_index=True)


def _policy_text(row) -> str:
    """The flattened `<predictor>.ladder/.estimator/.thresholds` columns of a trial, read back as text."""
    def text(value) -> str:
        return value if isinstance(value, str) else ""

    def route(n):
        value = row.get(f"{n}.route_lambda")
        return None if value is None or pd.isna(value) else float(value)

    names = sorted({c.rsplit(".", 1)[0] for c in row.index})
    return "; ".join(
        f"{n}: " + describe_ladder({"ladder": text(row[f"{n}.ladder"]).split(">"),
                                    "estimator": text(row[f"{n}.estimator"]),
                                    "thresholds": [float(t) for t in text(row[f"{n}.thresholds"]).split(",") if t],
                                    "route_lambda": route(n)})
        for n in names if text(row[f"{n}.ladder"]))


# --- per predictor -------------------------------------------------------------------------------


def _finals(steps: pd.DataFrame) -> pd.DataFrame:
    """One row per (query, predictor call): the tier whose answer was used ('none' if all failed)."""
    keys = ["query_id", "predictor", "call"] if "call" in steps.columns else ["query_id", "predictor"]
    groups = steps.groupby(keys, sort=False)
    used = steps[steps["decision"].isin(FINAL)].groupby(keys, sort=False)["tier"].last()
    out = groups.size().rename("steps").to_frame().join(used.rename("final_tier"))
    out["final_tier"] = out["final_tier"].fillna("none")
    out["escalated"] = steps.assign(e=steps["decision"].eq("escalated")).groupby(keys, sort=False)["e"].any()
    return out.reset_index()


def predictor_table(steps: pd.DataFrame, n_queries: int, tiers: list[str], ladders: dict | None = None) -> pd.DataFrame:
    """Per predictor: share of final answers per tier, escalation rate (calls that escalated at least
    once), cost per 1k queries and share of the pipeline's cost, tokens of discarded answers."""
    finals = _finals(steps)
    mix = pd.crosstab(finals["predictor"], finals["final_tier"], normalize="index")
    order = [t for t in tiers if t in mix.columns] + [t for t in mix.columns if t not in tiers]
    mix = mix.reindex(columns=order).add_prefix("final_")
    # A share of the pipeline's price: calls counted at their price even when a cache answered (a ledger's
    # price_usd), so a warm cache does not blank the column.
    priced = steps["price_usd"] if "price_usd" in steps.columns else steps["cost_usd"]
    total_price = priced.sum()
    by = steps.groupby("predictor", sort=False)
    table = pd.DataFrame({
        "calls": finals.groupby("predictor", sort=False).size(),
        "escalation_rate": finals.groupby("predictor", sort=False)["escalated"].mean(),
        "cost_per_1k": by["cost_usd"].sum() / max(n_queries, 1) * 1000,
        "cost_share": priced.groupby(steps["predictor"], sort=False).sum() / total_price if total_price > 0 else np.nan,
        "wasted_tokens_per_query": steps[steps["decision"] == "escalated"].groupby("predictor")["tokens"].sum()
        .reindex(by.size().index, fill_value=0) / max(n_queries, 1),
    })
    table = table.join(mix).fillna({c: 0.0 for c in mix.columns})
    if ladders:
        table.insert(0, "ladder", [describe_ladder(summary_form(ladders[p])) if p in ladders else ""
                                   for p in table.index])
    return table.rename_axis("predictor").reset_index()


def summary_form(entry: dict) -> dict:
    """An artifact's policy entry (`route`: {lambda, costs}, `semantic`: {threshold, ...}) in the summary's shape
    that describe_ladder reads (`route_lambda`, `semantic_threshold`): a routed policy read as a plain ladder."""
    out = {k: v for k, v in entry.items() if k not in ("route", "semantic")}
    if entry.get("route"):
        out["route_lambda"] = float(entry["route"]["lambda"])
    if entry.get("semantic"):
        out["semantic_threshold"] = float(entry["semantic"]["threshold"])
    return out


def rung_table(steps: pd.DataFrame) -> pd.DataFrame:
    """Per predictor and rung: how often it is reached, escalates, fails; the confidence it saw
    (quantiles) against the rung's threshold. Rung -1 is the deterministic fallback."""
    rows = []
    for (name, rung, tier), g in steps.groupby(["predictor", "rung", "tier"], sort=True):
        conf = g["confidence"].dropna().astype(float)
        row = {"predictor": name, "rung": int(rung), "tier": tier, "reached": len(g),
               "escalated": int((g["decision"] == "escalated").sum()),
               "failed": int((g["decision"] == "failed").sum())}
        row["escalation_rate"] = row["escalated"] / len(g)
        thresholds = g["threshold"].dropna()
        row["threshold"] = float(thresholds.iloc[0]) if len(thresholds) else np.nan
        for q in QUANTILES:
            row[f"conf_q{int(q * 100)}"] = float(conf.quantile(q)) if len(conf) else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def tier_quality_table(cells: pd.DataFrame, tiers: list[str]) -> pd.DataFrame:
    """Per predictor and tier, from every recorded cell: how often the tier gave no usable answer
    (`failed`: unparsable, outside its type, cut short), the accuracy of that predictor's own answer
    where the task can judge it (NaN otherwise), how often its usable answers say what the top tier's
    say (`agrees_with_top`: a view of each predictor when the task judges only the whole program), cost,
    and the median confidence (token log-probability mean) of its right and its wrong answers. The gaps
    between tiers, predictor by predictor, are why a policy splits them across tiers."""
    rows = []
    for (name, tier), g in cells.groupby(["predictor", "tier"], sort=False):
        judged = g[g["correct"].notna()]
        right = judged[judged["correct"].astype(bool)]
        wrong = judged[~judged["correct"].astype(bool)]
        compared = g["agrees_with_top"].dropna() if "agrees_with_top" in g else pd.Series(dtype=bool)
        rows.append({"predictor": name, "tier": tier, "n": len(g), "failed": 1.0 - g["ok"].astype(bool).mean(),
                     "accuracy": judged["correct"].astype(bool).mean() if len(judged) else np.nan,
                     "agrees_with_top": compared.astype(bool).mean() if len(compared) else np.nan,
                     "cost_per_1k": g["cost_usd"].mean() * 1000,
                     "conf_median_right": right["logprob_mean"].dropna().median() if len(right) else np.nan,
                     "conf_median_wrong": wrong["logprob_mean"].dropna().median() if len(wrong) else np.nan})
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table["tier_rank"] = table["tier"].map({t: i for i, t in enumerate(tiers)})
    return table.sort_values(["predictor", "tier_rank"], ignore_index=True).drop(columns="tier_rank")


# --- per segment: the routing-fairness audit -----------------------------------------------------


def segment_table(chosen: pd.DataFrame, flagship: pd.DataFrame, escalated_queries: set) -> pd.DataFrame:
    """Per segment: the chosen policy's quality, cost and escalation rate beside flagship-only on the
    same rows, and `flag` when the chosen policy serves the segment worse than flagship-only by more
    than noise: mean paired difference d = score_chosen - score_flagship over the segment's rows,
    se = std(d, ddof=1) / sqrt(n), flagged when mean(d) < 0 and |mean(d)| > 1.96 * se. A segment
    where every row loses the same amount has se = 0 and is flagged; segments of one row are not
    assessed (no noise estimate). An 'ALL' row pools the segments when there are several."""
    paired = chosen.merge(flagship[["row_id", "score", "cost_usd"]], on="row_id", suffixes=("", "_flagship"))
    paired["diff"] = paired["score"] - paired["score_flagship"]
    paired["escalated"] = paired["row_id"].isin(escalated_queries)
    groups = [(str(s), g) for s, g in paired.groupby("segment", sort=True)]
    groups += [("ALL", paired)] if len(groups) > 1 else []  # one segment: the pooled row would repeat it
    rows = []
    for segment, g in groups:
        n = len(g)
        gap = float(g["diff"].mean())
        se = float(g["diff"].std(ddof=1) / math.sqrt(n)) if n > 1 else np.nan
        flag = bool(n > 1 and gap < -1e-12 and -gap > Z_FLAG * se + 1e-12)
        rows.append({"segment": segment, "n": n, "quality": g["score"].mean(),
                     "flagship_quality": g["score_flagship"].mean(), "gap": gap, "se_gap": se,
                     "cost_per_1k": g["cost_usd"].mean() * 1000,
                     "flagship_cost_per_1k": g["cost_usd_flagship"].mean() * 1000,
                     "escalation_rate": g["escalated"].mean(), "flag": flag})
    return pd.DataFrame(rows)


# --- savings -------------------------------------------------------------------------------------


def operating_points(rows: pd.DataFrame, steps_by_policy: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Per split and policy (chosen, each uniform tier): quality, cost per 1k queries, mean latency,
    tokens per query and tokens of answers escalation discarded (token waste)."""
    out = []
    for (split, policy), g in rows.groupby(["split", "policy"], sort=False):
        steps = steps_by_policy.get(policy, pd.DataFrame(columns=["query_id", "rung", "decision", "tokens",
                                                                  "cost_usd"]))
        steps = steps[steps["query_id"].isin(set(g["row_id"]))]
        waste = steps[steps["decision"] == "escalated"]
        fell_back = steps[(steps["rung"] == -1) & (steps["decision"] == "fallback")]
        n = len(g)
        out.append({"split": split, "policy": policy, "n": n, "quality": g["score"].mean(),
                    # queries a tier outside the ladder answered: a one-tier baseline's quality counts them too
                    "fallback_rows": fell_back["query_id"].nunique(),
                    "cost_per_1k": g["cost_usd"].mean() * 1000, "avg_latency_s": g["latency_s"].mean(),
                    "tokens_per_query": steps["tokens"].sum() / n,
                    "wasted_tokens_per_query": waste["tokens"].sum() / n,
                    "wasted_cost_per_1k": waste["cost_usd"].sum() / n * 1000})
    return pd.DataFrame(out)


def savings_table(points: pd.DataFrame, flagship: str, cheapest: str) -> pd.DataFrame:
    """Per split: the chosen policy against flagship-only and against the cheapest tier. Savings are
    percentages of the other's value (positive = chosen spends less); quality differences are
    absolute (chosen minus other)."""
    rows = []
    for split, g in points.groupby("split", sort=False):
        by = g.set_index("policy")
        if "chosen" not in by.index:
            continue
        c = by.loc["chosen"]
        for label, other in ((f"{flagship}-only", flagship), (f"{cheapest}-only", cheapest)):
            if other not in by.index:
                continue
            o = by.loc[other]
            rows.append({"split": split, "against": label, "quality": c["quality"], "other_quality": o["quality"],
                         "quality_diff": c["quality"] - o["quality"], "other_fallback_rows": o["fallback_rows"],
                         "cost_per_1k": c["cost_per_1k"], "other_cost_per_1k": o["cost_per_1k"],
                         "cost_saving_pct": savings_pct(c["cost_per_1k"], o["cost_per_1k"]),
                         "avg_latency_s": c["avg_latency_s"], "other_avg_latency_s": o["avg_latency_s"],
                         "latency_saving_pct": savings_pct(c["avg_latency_s"], o["avg_latency_s"]),
                         "wasted_tokens_per_query": c["wasted_tokens_per_query"],
                         "wasted_cost_per_1k": c["wasted_cost_per_1k"]})
    return pd.DataFrame(rows)

