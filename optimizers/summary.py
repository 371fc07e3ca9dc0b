"""The summary both `optimize` and `replay fit` print (and --json emits): one shape for both."""

from __future__ import annotations

import hashlib

import numpy as np

from optimizers.select import bootstrap_ci, savings_pct


def split_rows(rows: list[dict], holdout: float, seed: int, key: str = "id") -> tuple[list, list]:
    """Deterministic split by a hash of (seed, id): the same rows go to holdout on every rerun, and as many as
    the fraction asks (rounded; at least one from 3 rows up), however few the rows."""
    if not 0 <= holdout < 1:
        from pipelines.errors import ConfigError

        raise ConfigError(f"--holdout must lie in [0, 1), got {holdout}")

    def bucket(row) -> str:
        return hashlib.sha256(f"{seed}:{row[key]}".encode()).hexdigest()

    count = round(len(rows) * holdout)
    if holdout > 0 and not count and len(rows) >= 3:  # a handful of rows: still one to check on
        count = 1
    held = {id(r) for r in sorted(rows, key=bucket)[:count]}
    return [r for r in rows if id(r) not in held], [r for r in rows if id(r) in held]


# Under this many rows the choice's margin says little: the selection optimism is not even estimated below
# 10 (optimizers.select), and a standard error of 0 on a handful of identical rows is no evidence.
FEW_ROWS = 30


def few_rows_note(n_chosen_on: int, n_holdout: int, rows: str = "dev rows") -> list[str]:
    if n_chosen_on >= FEW_ROWS:
        return []
    return [f"only {n_chosen_on} {rows} chose this policy: too few for its margin to mean much; read the holdout "
            f"check ({n_holdout} rows) and use more rows (or a smaller --holdout) before trusting it"]


def block(scores, costs, with_ci: bool = False, seed: int = 0) -> dict:
    scores, costs = np.asarray(scores, float), np.asarray(costs, float)
    out = {"n": int(len(scores)),
           "quality": float(scores.mean()) if len(scores) else float("nan"),
           "cost_per_1k": float(costs.mean() * 1000) if len(costs) else float("nan")}
    if with_ci:
        out["quality_ci"] = bootstrap_ci(scores, seed=seed)
    return out


def paired_gap(scores, reference_scores, seed: int = 0) -> dict:
    """The policy's quality minus the reference's on the same rows, with a paired bootstrap 95% CI:
    the noise that matters when two policies answer the same rows."""
    diff = np.asarray(scores, float) - np.asarray(reference_scores, float)
    if not len(diff):
        return {"delta": float("nan"), "delta_ci": [float("nan"), float("nan")], "verdict": "no rows"}
    lo, hi = bootstrap_ci(diff, seed=seed)
    verdict = "better" if lo > 0 else "worse" if hi < 0 else "within noise"
    return {"delta": float(diff.mean()), "delta_ci": [lo, hi], "verdict": verdict}


def gap_note(gap: dict, reference: str, noise: float, where: str = "dev") -> str:
    lo, hi = gap["delta_ci"]
    return (f"holdout quality {gap['delta']:+.3f} vs {reference}-only, paired 95% CI [{lo:+.3f}, {hi:+.3f}]: "
            f"{gap['verdict']} ({where} noise {noise:.3f})")


def build_summary(*, task: str, objective: str, artifact: str | None, policy: dict, dev: dict, holdout: dict,
                  baselines: dict, reference: str, paid_calls: int, full_matrix_calls: int, trials: int,
                  spent_usd: float, **extra) -> dict:
    ref_cost = baselines[reference]["holdout"]["cost_per_1k"]
    return {
        "task": task, "objective": objective, "artifact": artifact, "policy": policy,
        "dev": dev, "holdout": holdout, "baselines": baselines, "reference": reference,
        "savings_pct": savings_pct(holdout["cost_per_1k"], ref_cost),
        "paid_calls": int(paid_calls), "full_matrix_calls": int(full_matrix_calls),
        "trials": int(trials), "spent_usd": float(spent_usd), **extra,
    }


def describe_ladder(p: dict) -> str:
    """One predictor's policy entry as people read it: 'small > big  (escalate when learned < 0.700)', or for
    a routed one 'route to small | big by the input router (lambda 0.300)', with its escalation after when it
    has one. The summary, the report tables and the HTML page all print ladders with this."""
    escalates = p.get("thresholds") and p.get("estimator", "none") not in ("", "none")
    if p.get("route_lambda") is not None:
        text = f"route to {' | '.join(p['ladder'])} by the input router (lambda {p['route_lambda']:.3f})"
        if escalates:
            text += f", then climb when {p['estimator']} < {', '.join(f'{t:.3f}' for t in p['thresholds'])}"
    else:
        text = " > ".join(p["ladder"])
        if escalates:
            text += f"  (escalate when {p['estimator']} < {', '.join(f'{t:.3f}' for t in p['thresholds'])})"
    if p.get("semantic_threshold") is not None:  # the semantic cache's lookup comes first
        text = f"semantic cache (similarity >= {p['semantic_threshold']:.3f}) > {text}"
    return text


def render_text(summary: dict) -> str:
    """The human-readable summary: policy, dev/holdout, baselines, savings, calls."""
    lines = [f"task: {summary['task']}    objective: {summary['objective']}"]
    lines.append("policy:")
    for name, p in summary["policy"].items():
        lines.append(f"  {name:<16} {describe_ladder(p)}")
    for name, checks in (summary.get("checks") or {}).items():
        read = "read by its learned confidence" if summary["policy"].get(name, {}).get("estimator") == "learned" \
            else "not read: its policy does not use the learned confidence"
        lines.append(f"  {name:<16} checks: {', '.join(checks)} ({read})")
    d, h = summary["dev"], summary["holdout"]
    ci = h.get("quality_ci") or [float("nan")] * 2
    lines.append(f"dev:      n={d['n']:<5} quality {d['quality']:.3f}   cost/1k ${d['cost_per_1k']:.6f}")
    split = "holdout" if h["n"] else "dev"
    if split == "dev":  # --holdout 0: nothing held out, so no holdout figures (they would print as nan)
        lines.append("holdout:  none (--holdout 0); baselines and savings below are on the dev rows")
    else:
        lines.append(f"holdout:  n={h['n']:<5} quality {h['quality']:.3f} [95% CI {ci[0]:.3f}-{ci[1]:.3f}]   "
                     f"cost/1k ${h['cost_per_1k']:.6f}")
    if "noise" in summary:
        lines.append(f"dev noise (standard error of the reference's quality): {summary['noise']:.3f}")
    lines.append(f"baselines ({split}):")
    width = max([28, *map(len, summary["baselines"])])  # long model names keep the columns aligned
    for name, b in summary["baselines"].items():
        mark = "  <- reference" if name == summary["reference"] else ""
        shown = b[split]
        fell_back = shown.get("fallback_rows", 0)
        mark += (f"  ({fell_back} of {shown['n']} rows answered by a fallback tier: {name}'s answer failed or was "
                 "malformed)") if fell_back else ""
        lines.append(f"  {name:<{width}} quality {shown['quality']:.3f}   cost/1k ${shown['cost_per_1k']:.6f}{mark}")
    saving = summary["savings_pct"] if split == "holdout" else \
        savings_pct(d["cost_per_1k"], summary["baselines"][summary["reference"]]["dev"]["cost_per_1k"])
    lines.append(f"savings vs {summary['reference']}: {saving:.1f}% of {split} cost")
    if summary.get("whole_form"):  # optimize --decompose (optimizers.whole_form)
        lines.append(summary["whole_form"].get("skipped") or whole_form_line(summary["whole_form"]))
    on_demand = summary.get("cells_recorded", 0) - summary["full_matrix_calls"]  # calls only cascades ask for
    matrix = f"full matrix {summary['full_matrix_calls']}" + (f" + {on_demand} asked for by the search"
                                                             if on_demand > 0 else "")
    lines.append(f"paid calls: {summary['paid_calls']} ({matrix})   "
                 f"trials: {summary['trials']}   spent: ${summary['spent_usd']:.6f} this run"
                 + (f", ${summary['spent_usd_compile']:.6f} in all runs of this compile"
                    if summary.get("spent_usd_compile", summary['spent_usd']) > summary['spent_usd'] + 1e-12 else ""))
    if summary.get("artifact"):
        lines.append(f"artifact: {summary['artifact']}")
    for note in summary.get("notes", []):
        lines.append(f"note: {note}")
    return "\n".join(lines)


def whole_form_line(compare: dict) -> str:
    """A decomposed compile against the program as written (optimizers.whole_form)."""
    h = compare["holdout"]
    return (f"vs the whole form (not decomposed) on {compare['tier']}: quality {h['quality']:.3f}   cost/1k "
            f"${h['cost_per_1k']:.6f}   saving {compare['savings_pct']:.1f}% of holdout cost"
            + f"; quality gap {compare['gap']['delta']:+.3f} [{compare['gap']['delta_ci'][0]:+.3f}, "
              f"{compare['gap']['delta_ci'][1]:+.3f}]"
            + (f" ({compare['paid_calls']} paid calls to measure it)" if compare["paid_calls"] else ""))
