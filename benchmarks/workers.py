"""One compile split across worker processes on one PostgreSQL URL, as on several machines.

    python benchmarks/workers.py [--rows 222] [--trials 200] [--latency 0.05] [--workers 1,2,4] [--repeats 1]

The support task on scripted tiers (tests/fakes.py: `small` right on simple rows, `big` always right) whose
every call takes --latency seconds, as an API call would. Each worker is `optimize` in its own process with
its own working folder (as on its own machine) and `--storage` on one fresh database of a PostgreSQL server
started on 127.0.0.1 for the run. Per worker count: wall time (first start to last exit) and its ratio to one
worker, paid calls summed over the workers (goal: exactly the full matrix), complete trials in the study,
and whether every worker wrote the same policy and metrics.

Then kill -9: two workers start, one is killed once a third of the matrix is cached; the other must finish
with the matrix complete (every cell in the outcome table, every call in the cache) and the study at
--trials. Paid calls counted from every worker's ledger, the killed one's included (a call in flight when
its worker died is paid again by the survivor: the backend answered, nobody stored it).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from db_servers import Postgres  # noqa: E402

WORKER = """
import json, sys
sys.path.insert(0, "tests")
from fakes import support_script, write_tiers
from optimizers.live import OptimizeOptions, optimize
from pathlib import Path

folder, storage, trials, rows, latency = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
folder.mkdir(parents=True, exist_ok=True)
script = support_script()
def timed(tier, messages):
    text, confidence = script(tier, messages)
    return f"sleep:{latency}:{text}", confidence
options = OptimizeOptions(task="support", tiers=str(write_tiers(folder)), trials=trials, limit=rows, storage=storage,
                          work_dir=folder / ".tierwise", out=str(folder / "a.json"), scripts={"*": timed})
summary = optimize(options)
(folder / "summary.json").write_text(json.dumps(summary))
"""


def start(folder: Path, storage: str, args) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", WORKER, str(folder), storage, str(args.trials), str(args.rows),
                             str(args.latency)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=open(folder.with_suffix(".err"), "w"))


def db_counts(storage: str, study_storage: str) -> dict:
    import optuna
    import psycopg

    with psycopg.connect(storage) as db:
        calls = db.execute("SELECT count(*) FROM tierwise_calls").fetchone()[0]
        cells = db.execute("SELECT count(*) FROM tierwise_outcomes").fetchone()[0]
    trials = 0
    for summary in optuna.get_all_study_summaries(study_storage):
        study = optuna.load_study(study_name=summary.study_name, storage=study_storage)
        trials += len(study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.COMPLETE]))
    return {"cached_calls": calls, "outcome_cells": cells, "trials": trials}


def ledger_paid(folder: Path) -> int:
    path = folder / ".tierwise" / "ledger.jsonl"
    if not path.exists():
        return 0
    paid = 0
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("annotation"):  # a call's decision, written after its own line
            continue
        paid += not record.get("cache_hit") and record.get("decision") != "failed"
    return paid


def children_cpu() -> float:
    """User + system CPU seconds of the worker processes waited for so far (not the database server's)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def same_artifacts(folders: list[Path]) -> bool:
    bodies = [json.loads((f / "a.json").read_text()) for f in folders]
    keys = ("policy", "metrics")
    return all({k: b[k] for k in keys} == {k: bodies[0][k] for k in keys} for b in bodies)


def run_workers(pg: Postgres, n: int, args, tmp: Path) -> dict:
    storage = pg.new_database()
    folders = [tmp / f"n{n}-{time.monotonic_ns()}-w{i}" for i in range(n)]
    for f in folders:
        f.mkdir(parents=True)
    started, cpu = time.perf_counter(), children_cpu()
    procs = [start(f, storage, args) for f in folders]
    codes = [p.wait(timeout=3600) for p in procs]
    wall, cpu = time.perf_counter() - started, children_cpu() - cpu
    if any(codes):
        raise SystemExit(f"a worker failed: {[f.with_suffix('.err').read_text()[-800:] for f in folders]}")
    summaries = [json.loads((f / "summary.json").read_text()) for f in folders]
    return {"workers": n, "wall_s": wall, "cpu_s": cpu, "paid_calls": sum(s["paid_calls"] for s in summaries),
            "paid_per_worker": [s["paid_calls"] for s in summaries], "full_matrix": summaries[0]["full_matrix_calls"],
            "trials": db_counts(storage, storage.replace("postgresql://", "postgresql+psycopg://"))["trials"],
            "same_artifact": same_artifacts(folders)}


def kill_run(pg: Postgres, args, tmp: Path) -> dict:
    import psycopg

    storage = pg.new_database()
    folders = [tmp / f"kill-w{i}" for i in range(2)]
    for f in folders:
        f.mkdir(parents=True)
    matrix = args.rows * 2 * 2
    started = time.perf_counter()
    procs = [start(f, storage, args) for f in folders]
    killed_at = None
    while killed_at is None:
        time.sleep(0.2)
        try:
            with psycopg.connect(storage) as db:
                cached = db.execute("SELECT count(*) FROM tierwise_calls").fetchone()[0]
        except psycopg.Error:
            continue  # the tables are not made yet
        if cached >= matrix // 3:
            os.kill(procs[0].pid, signal.SIGKILL)
            killed_at = cached
    procs[0].wait()
    code = procs[1].wait(timeout=3600)
    wall = time.perf_counter() - started
    counts = db_counts(storage, storage.replace("postgresql://", "postgresql+psycopg://"))
    survivor = json.loads((folders[1] / "summary.json").read_text()) if code == 0 else {}
    return {"killed_after_cached_calls": killed_at, "survivor_exit": code, "wall_s": wall,
            "paid_calls_ledgers": sum(ledger_paid(f) for f in folders), "killed_worker_paid": ledger_paid(folders[0]),
            "survivor_paid": survivor.get("paid_calls"), "full_matrix": matrix, **counts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=222)
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--no-kill", action="store_true")
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",")]
    with Postgres() as pg, tempfile.TemporaryDirectory() as tmp:
        runs = {n: [] for n in counts}
        for repeat in range(args.repeats):  # interleaved, rotating which count goes first: noise hits all alike
            for n in counts[repeat % len(counts):] + counts[:repeat % len(counts)]:
                runs[n].append(run_workers(pg, n, args, Path(tmp)))
        base = statistics.median(r["wall_s"] for r in runs[counts[0]])
        print(f"support, {args.rows} rows, 2 tiers x 2 predictors, {args.latency * 1000:g} ms per call, "
              f"--trials {args.trials}")
        print("| workers | wall s (median) | ratio to 1 | CPU s, all workers | paid calls (sum) | full matrix | "
              "per worker | trials | same artifact |")
        print("|---|---|---|---|---|---|---|---|---|")
        for n, rs in runs.items():
            wall = statistics.median(r["wall_s"] for r in rs)
            r = rs[-1]
            print(f"| {n} | {wall:.1f} | {wall / base:.2f} | {statistics.median(x['cpu_s'] for x in rs):.0f} | "
                  f"{r['paid_calls']} | {r['full_matrix']} | {r['paid_per_worker']} | {r['trials']} | "
                  f"{all(x['same_artifact'] for x in rs)} |")
        if not args.no_kill:
            print(json.dumps({"kill -9": kill_run(pg, args, Path(tmp))}))


if __name__ == "__main__":
    main()
