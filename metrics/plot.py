"""The Pareto plot: quality against cost per 1,000 queries for every trial, the front, the uniform
baselines and the chosen point. matplotlib loads lazily with the Agg backend (no display needed)."""

from __future__ import annotations

from pathlib import Path


def pareto_plot(report, path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trials = report.tables["trials"]
    front = trials[trials["on_front"]].sort_values("cost_per_1k")
    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=110)
    ax.scatter(trials["cost_per_1k"], trials["quality"], s=16, color="#9aa5b1", alpha=0.7, label="trials",
               zorder=2)
    ax.step(front["cost_per_1k"], front["quality"], where="post", color="#1f6feb", lw=1.6, zorder=3)
    ax.scatter(front["cost_per_1k"], front["quality"], s=30, color="#1f6feb", label="Pareto front", zorder=4)
    baselines = trials[trials["baseline"] != ""].drop_duplicates("baseline")
    ax.scatter(baselines["cost_per_1k"], baselines["quality"], s=70, marker="s", facecolor="none",
               edgecolor="#cf222e", lw=1.6, label="uniform tier", zorder=5)
    for _, b in baselines.iterrows():
        ax.annotate(f"{b['baseline']}-only", (b["cost_per_1k"], b["quality"]), textcoords="offset points",
                    xytext=(6, -12), fontsize=8, color="#cf222e")
    chosen = trials[trials["chosen"]]
    if not chosen.empty:
        c = chosen.iloc[0]
        ax.scatter([c["cost_per_1k"]], [c["quality"]], s=220, marker="*", color="#f2a900", edgecolor="black",
                   lw=0.8, label=f"chosen (trial {int(c['number'])})", zorder=6)
    ax.set_xlabel("cost per 1,000 queries (USD)")
    ax.set_ylabel("quality (dev set)")
    title = report.meta.get("task") or report.meta.get("study") or ""
    ax.set_title(f"{title}: quality vs cost, {len(trials)} trials", fontsize=11)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8, framealpha=0.9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
