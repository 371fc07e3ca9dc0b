"""A task's whole dev set compiled once per holdout split: what the chosen policy saves at the flagship's quality
on rows the search never saw, split by split (issue 10's live bar: 30% or more at flagship parity).

Each seed runs `cli.py optimize TASK --json --seed S` in one working folder, with a fresh study per seed: the first
seed records the outcome table (every row on every tier; cached in WORK/.tierwise), every later seed pays nothing
and differs only in its dev/holdout split and the search's seed. A holdout "misses" parity when its quality is more
than 1 point (0.01) under flagship-only on the same rows.

Usage:  PYTHONPATH=. python benchmarks/support_splits.py [--task support] [--seeds 0,1,2,3,4] [--trials 600]
            [--work .tierwise-splits] [--tiers tiers.toml] [--out splits.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

CLI = Path(__file__).resolve().parents[1] / "cli.py"
PARITY_POINTS = 0.01


def compile_split(task: str, seed: int, trials: int, work: Path, tiers: str | None) -> dict:
    command = [sys.executable, str(CLI), "optimize", task, "--json", "--seed", str(seed), "--trials", str(trials),
               "--storage", f"sqlite:///{(work / f'split-{seed}.db').resolve()}",
               "--out", str((work / f"{Path(task).stem}-{seed}.tierwise.json").resolve())]
    if tiers:
        command += ["--tiers", str(Path(tiers).resolve())]
    started = time.monotonic()
    done = subprocess.run(command, cwd=work, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"seed {seed}: optimize exited {done.returncode}: {done.stderr.strip()[-400:]}")
    summary = json.loads(done.stdout)
    versus = summary["holdout_vs_reference"]
    return {"seed": seed, "dev_rows": summary["dev"]["n"], "holdout_rows": summary["holdout"]["n"],
            "saving_pct": summary["savings_pct"], "holdout_gap": versus["delta"], "gap_ci": versus["delta_ci"],
            "miss": versus["delta"] < -PARITY_POINTS, "paid_calls": summary["paid_calls"],
            "wall_s": round(time.monotonic() - started, 1), "policy": summary["policy"]}


def ladder_text(policy: dict) -> str:
    parts = []
    for name, entry in policy.items():
        how = entry.get("estimator") or ""
        routed = " routed" if entry.get("route_lambda") is not None else ""
        escalated = f" by {how}" if how not in ("", "none") and len(entry["ladder"]) > 1 else ""
        parts.append(f"{name}: {' > '.join(entry['ladder'])}{routed}{escalated}")
    return "; ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="support")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--trials", type=int, default=600)
    parser.add_argument("--work", default=".tierwise-splits", help="working folder (its .tierwise/ caches every call)")
    parser.add_argument("--tiers", default=None, help="TOML tiers file (default: the local tiers)")
    parser.add_argument("--out", default=None, help="write every split's row as JSON")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    print("| seed | dev / holdout rows | saving | holdout gap to flagship [95% CI] | paid calls | wall | policy |")
    print("|---|---|---|---|---|---|---|")
    for seed in (int(s) for s in args.seeds.split(",")):
        row = compile_split(args.task, seed, args.trials, work, args.tiers)
        rows.append(row)
        low, high = row["gap_ci"]
        print(f"| {seed} | {row['dev_rows']} / {row['holdout_rows']} | {row['saving_pct']:.1f}% | "
              f"{row['holdout_gap']:+.3f} [{low:+.3f}, {high:+.3f}]{' miss' if row['miss'] else ''} | "
              f"{row['paid_calls']} | {row['wall_s']:.0f} s | {ladder_text(row['policy'])} |", flush=True)
    savings = [r["saving_pct"] for r in rows]
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"\nmedian saving {statistics.median(savings):.1f}% (min {min(savings):.1f}%, max {max(savings):.1f}%); "
          f"holdouts more than {PARITY_POINTS:g} under the flagship: {sum(r['miss'] for r in rows)} of {len(rows)}; "
          f"peak resident set of one compile: {peak_mb:.0f} MB")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
