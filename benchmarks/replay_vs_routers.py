"""tierwise replay against published routing baselines on every recorded outcome table in ../shared/data.

    PYTHONPATH=. python benchmarks/replay_vs_routers.py [--tables gsm8k,mtbench,llmrouter,routerarena]
        [--seeds 5] [--trials 300] [--methods tierwise,lr,knn,mlp,frugal,random,single,oracle]
        [--seed-list 0,1,source] [--subsample N] [--curve-floors 0.5,0.8] [--out results.json]
        [--from a.json,b.json]

Each table is split in half by id, once per seed (bench_tables.split_half); every method fits on the
training half and is reported on the test half. LLMRouter also records the source's own train/test split:
it is run once more as seed "source". Operating points are chosen on the training half only, for two
targets: 95% of the best single model's training quality, and parity (within 1 point, 0.01, of it); the
test half says what they cost and whether they held (curves.py has the arithmetic).

Methods (routers.py and tierwise_method.py have the details):
  tierwise  optimizers.replay.fit on the training half per floor, then replay apply of its artifact
  lr        TF-IDF logistic-regression router (per-model score predictors; lambda chosen on train)
  knn       TF-IDF kNN router, k = 10
  mlp       MLP router on all-MiniLM-L6-v2 sentence embeddings (RouterBench's predictive router)
  frugal    FrugalGPT-style cascade: a cheaper model, then the best one when a scorer doubts the answer
  random    random mixing of single models (RouterBench's zero router)
  single    the cheapest single model that meets the target on train
  oracle    the cheapest model with the best score on each query (a ceiling, not a method)

Per (table, seed, method) the output (--out, .json or .csv) keeps the test-half quality, cost, saving vs the
best single model and hit/miss at each target, and the curve metrics AIQ, APGR$ (cost axis) and APGR
(RouteLLM's call-share axis); the printed tables give the median over seeds with the range.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if not any(Path(p or ".").resolve() == REPO for p in sys.path):  # PYTHONPATH=<other checkout>:<this one> measures
    sys.path.insert(0, str(REPO))                                  # the other checkout's optimizer

from benchmarks import curves, routers  # noqa: E402
from benchmarks.bench_tables import (TABLE_FILES, Table, id_order, load, shared_data, source_split,  # noqa: E402
                                     split_half)

METHODS = {
    "tierwise": "tierwise (replay fit)",
    "lr": "LR router (TF-IDF)",
    "knn": "kNN router (TF-IDF, k=10)",
    "mlp": "MLP router (MiniLM embeddings)",
    "frugal": "FrugalGPT-style cascade",
    "random": "random mixing",
    "single": "single model",
    "oracle": "oracle",
}


def operating_points(train_pts, test_pts, q_best_train: float) -> dict:
    """Each target's train-chosen knob, read on the test half."""
    return {kind: test_pts[curves.choose_on_train(train_pts, curves.target_quality(kind, q_best_train))]
            for kind in curves.TARGETS}


def evaluate_split(table: Table, train_idx, test_idx, seed, methods, args, embeddings) -> list[dict]:
    train, test = table.subset(train_idx), table.subset(test_idx)
    rng_seed = seed if isinstance(seed, int) else 0  # folds and networks of the "source" split
    q_train, q_test = train.score.mean(axis=0), test.score.mean(axis=0)
    c_train, c_test = train.cost.mean(axis=0) * 1000, test.cost.mean(axis=0) * 1000
    strong = int(np.argmax(q_train))  # best single model on train (ties: the cheaper)
    weak = int(np.argmin(c_train))
    qb = float(q_train[strong])
    singles_train = [(c_train[j], float(j == strong), q_train[j]) for j in range(len(table.models))]
    singles_test = [(c_test[j], float(j == strong), q_test[j]) for j in range(len(table.models))]
    results: dict[str, dict] = {}  # method -> {"points": {target: point}, "curve": [points], "extra": {}}
    timings = {}

    def sweep(name, train_pts, test_pts, extra=None):
        results[name] = {"points": operating_points(train_pts, test_pts, qb), "curve": test_pts, "extra": extra or {}}

    lr_preds = None
    for name in methods:
        started = time.perf_counter()
        if name == "tierwise":
            from benchmarks import tierwise_method

            floors = {kind: curves.target_quality(kind, qb) for kind in curves.TARGETS}
            for f in args.curve_floors:
                floors[f"curve-{f:g}"] = q_train[weak] + f * (qb - q_train[weak])
            try:
                with tempfile.TemporaryDirectory(prefix="tierwise-bench-") as tmp:
                    fits = tierwise_method.run(train, test, floors, table.models[strong], args.trials,
                                               args.fit_seed, Path(tmp), args.tierwise_z, args.tierwise_signals)
            except Exception as e:  # noqa: BLE001 - one failed fit must not lose the split's other methods
                print(f"[{table.name} seed {seed}: tierwise failed: {type(e).__name__}: {e}]", file=sys.stderr)
                continue
            results[name] = {"points": {kind: fits[kind]["point"] for kind in curves.TARGETS},
                             "curve": [f["point"] for f in fits.values()],
                             "extra": {"policies": {k: f["policy"] for k, f in fits.items()},
                                       "fit_seconds": {k: round(f["fit_s"], 2) for k, f in fits.items()}}}
        elif name == "lr":
            lr_preds = routers.lr_predictions(lambda j: table.inputs, table.score, train_idx, test_idx, rng_seed)
            sweep(name, *routers.router(*lr_preds, table, train_idx, test_idx, strong))
        elif name == "knn":
            sweep(name, *routers.router(*routers.knn_predictions(table, train_idx, test_idx), table, train_idx,
                                        test_idx, strong))
        elif name == "mlp":
            if embeddings is None:
                continue
            preds = routers.mlp_predictions(embeddings, table.score, train_idx, test_idx, rng_seed)
            sweep(name, *routers.router(*preds, table, train_idx, test_idx, strong))
        elif name == "frugal":
            if strong == weak:
                continue  # nothing cheaper to start from
            sweep(name, *routers.frugal_cascade(table, train_idx, test_idx, strong, rng_seed, input_only=lr_preds))
        elif name == "random":
            results[name] = {"points": {kind: curves.mix(singles_test, curves.mixture_for(
                singles_train, curves.target_quality(kind, qb))) for kind in curves.TARGETS},
                "curve": singles_test, "extra": {}}
        elif name == "single":
            sweep(name, singles_train, singles_test)
        elif name == "oracle":
            best_here = test.score >= test.score.max(axis=1, keepdims=True) - 1e-12
            pick = np.argmax(best_here, axis=1)  # models are cheapest first
            rows = np.arange(test.n)
            point = (float(test.cost[rows, pick].mean() * 1000), float((pick == strong).mean()),
                     float(test.score[rows, pick].mean()))
            results[name] = {"points": {kind: point for kind in curves.TARGETS}, "curve": [point], "extra": {}}
        timings[name] = time.perf_counter() - started

    q_strong, c_strong = float(q_test[strong]), float(c_test[strong])
    anchor = singles_test[weak]
    out = []
    for name, res in results.items():
        row = {"table": table.name, "seed": seed, "method": name, "n_train": train.n, "n_test": test.n,
               "strong": table.models[strong], "weak": table.models[weak], "q_strong": q_strong,
               "c_strong": c_strong, "q_weak": float(q_test[weak]), "c_weak": float(c_test[weak]),
               "seconds": round(timings[name], 2)}
        for kind, (cost, calls, quality) in res["points"].items():
            row.update({f"{kind}_quality": quality, f"{kind}_cost_per_1k": cost, f"{kind}_calls": calls,
                        f"{kind}_pct_best": 100 * quality / q_strong if q_strong > 0 else float("nan"),
                        f"{kind}_saving": curves.saving(cost, c_strong),
                        f"{kind}_met": bool(quality >= curves.target_quality(kind, q_strong) - curves.TOL)})
        row.update(curves.curve_metrics(res["curve"], anchor, row["c_weak"], c_strong, row["q_weak"], q_strong))
        row["extra"] = res["extra"]
        out.append(row)
    return out


# --- reporting -------------------------------------------------------------------------------------------------


def _range(s: dict, fmt="{:.1f}") -> str:
    if s["median"] is None:
        return "-"
    if s["n"] == 1:
        return fmt.format(s["median"])
    return f"{fmt.format(s['median'])} ({fmt.format(s['min'])} to {fmt.format(s['max'])})"


def summarize(rows: list[dict]) -> list[dict]:
    """Per (table, method) over the numbered seeds: median (range) of each figure, misses per target."""
    out = []
    keys = sorted({(r["table"], r["method"]) for r in rows if r["seed"] != "source"},
                  key=lambda k: (list(TABLE_FILES).index(k[0]) if k[0] in TABLE_FILES else 99, list(METHODS).index(k[1])))
    for table, method in keys:
        rs = [r for r in rows if r["table"] == table and r["method"] == method and r["seed"] != "source"]
        s = {"table": table, "method": method, "seeds": len(rs)}
        for kind in curves.TARGETS:
            s[f"{kind}_saving"] = curves.spread(r[f"{kind}_saving"] for r in rs)
            s[f"{kind}_pct_best"] = curves.spread(r[f"{kind}_pct_best"] for r in rs)
            s[f"{kind}_misses"] = sum(not r[f"{kind}_met"] for r in rs)
            s[f"hull_saving_{kind}"] = curves.spread(r[f"hull_saving_{kind}"] for r in rs)
        for key in ("aiq", "apgr_cost", "apgr_calls"):
            s[key] = curves.spread(r[key] for r in rs)
        out.append(s)
    return out


def render_table(summary: list[dict], table: str) -> list[str]:
    lines = ["| method | saving @95% | % best @95% | misses | saving @parity | % best @parity | misses | AIQ | "
             "APGR$ | APGR |", "|---" * 10 + "|"]
    for s in summary:
        if s["table"] != table:
            continue
        lines.append(f"| {METHODS[s['method']]} | {_range(s['95%_saving'])} | {_range(s['95%_pct_best'])} | "
                     f"{s['95%_misses']}/{s['seeds']} | {_range(s['parity_saving'])} | "
                     f"{_range(s['parity_pct_best'])} | {s['parity_misses']}/{s['seeds']} | "
                     f"{_range(s['aiq'], '{:.3f}')} | {_range(s['apgr_cost'], '{:.3f}')} | "
                     f"{_range(s['apgr_calls'], '{:.3f}')} |")
    return lines


def render(rows: list[dict], tables: dict[str, dict]) -> str:
    """Markdown per table; tables: name -> {"ids", "models", "notes"} (meta["tables"] of a results file)."""
    summary = summarize(rows)
    lines = []
    for name, info in tables.items():
        rs = [r for r in rows if r["table"] == name]
        if not rs:
            continue
        seeds = sorted({r["seed"] for r in rs if r["seed"] != "source"})
        strong = sorted({r["strong"] for r in rs})
        lines += [f"### {name}: {info['ids']} ids x {len(info['models'])} models, seeds {seeds}, "
                  f"best single model on train: {', '.join(strong)}", *[f"- {n}" for n in info["notes"]], ""]
        lines += render_table(summary, name)
        src = [r for r in rs if r["seed"] == "source"]
        if src:
            lines += ["", f"{name}, the source's own split (train {src[0]['n_train']} / test {src[0]['n_test']}):",
                      ""]
            lines += render_table(summarize([{**r, "seed": 0} for r in src]), name)
        lines.append("")
    return "\n".join(lines)


def merge_results(paths: list[Path]) -> tuple[list[dict], dict]:
    """Rows and table info of earlier --out JSON files; a later file's (table, seed, method) row wins."""
    by_key, tables = {}, {}
    for path in paths:
        data = json.loads(path.read_text())
        for r in data["rows"]:
            by_key[(r["table"], r["seed"], r["method"])] = r
        tables.update(data["meta"]["tables"])
    order = {name: i for i, name in enumerate(TABLE_FILES)}
    return list(by_key.values()), dict(sorted(tables.items(), key=lambda kv: order.get(kv[0], 99)))


def write_rows(rows: list[dict], path: Path, meta: dict) -> None:
    if path.suffix.lower() == ".csv":
        flat = [{k: (json.dumps(v) if isinstance(v, dict) else v) for k, v in r.items()} for r in rows]
        fields = list(dict.fromkeys(k for r in flat for k in r))
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(flat)
    else:
        path.write_text(json.dumps({"meta": meta, "rows": rows, "summary": summarize(rows)}, indent=1, default=float))


def _csv_list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _plugins(text: str) -> tuple[str, ...]:
    """--tierwise-signals: checked here, since a fit's error is reported per split and the run goes on."""
    from optimizers.signal_plugins import parse
    from pipelines.errors import TierwiseError

    try:
        return parse(text)
    except TierwiseError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", type=_csv_list, default=list(TABLE_FILES),
                        help=f"subset of {','.join(TABLE_FILES)}, and/or NAME=PATH.csv: your own outcome table "
                             "(id,input,model,score[,cost_usd,output,segment,split], every model on every id)")
    parser.add_argument("--seeds", type=int, default=5, help="split seeds 0..N-1")
    parser.add_argument("--trials", type=int, default=300, help="tierwise search trials per fit")
    parser.add_argument("--fit-seed", type=int, default=0, help="tierwise's own --seed (its search sampler)")
    parser.add_argument("--tierwise-z", type=float, default=None,
                        help="tierwise's safety margin in paired standard errors (default: the optimizer's own)")
    parser.add_argument("--tierwise-signals", type=_plugins, default=(),
                        help="tierwise's opt-in signal plug-ins, as replay fit --signals (e.g. arithmetic)")
    parser.add_argument("--methods", type=_csv_list, default=list(METHODS), help=",".join(METHODS))
    parser.add_argument("--subsample", type=int, default=None, help="keep N ids per table (development)")
    parser.add_argument("--curve-floors", type=lambda s: [float(x) for x in _csv_list(s)], default=[0.5, 0.8],
                        help="extra tierwise floors for its curve: fractions of the way from the cheapest "
                             "model's training quality to the best's")
    parser.add_argument("--seed-list", type=lambda s: [x if x == "source" else int(x) for x in _csv_list(s)],
                        default=None, help="exactly these seeds, e.g. 3,4,source (overrides --seeds)")
    parser.add_argument("--no-source-split", action="store_true", help="skip the source's own split (LLMRouter)")
    parser.add_argument("--out", type=Path, default=None, help="every (table, seed, method) row, .json or .csv")
    parser.add_argument("--from", dest="merge", type=lambda s: [Path(x) for x in _csv_list(s)], default=None,
                        help="print (and with --out, write) the merged rows of earlier --out JSON files; no run")
    args = parser.parse_args(argv)
    if args.merge:
        rows, tables = merge_results(args.merge)
        print(render(rows, tables))
        if args.out:
            write_rows(rows, args.out, {"merged_from": [str(p) for p in args.merge], "tables": tables})
        return
    paths = {}
    for entry in args.tables:
        name, is_file, path = entry.partition("=")
        paths[name] = Path(path) if is_file else shared_data() / TABLE_FILES[name] if name in TABLE_FILES else None
    unknown = [t for t, p in paths.items() if p is None] + [m for m in args.methods if m not in METHODS]
    if unknown:
        parser.error(f"unknown table or method {unknown}; tables: {', '.join(TABLE_FILES)} or NAME=PATH.csv; "
                     f"methods: {', '.join(METHODS)}")
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        parser.error(f"no such table file: {', '.join(missing)}")

    started = time.perf_counter()
    tables, rows = {}, []
    for name, path in paths.items():
        table = load(name, path)
        if args.subsample and args.subsample < table.n:
            table = table.subset(np.sort(id_order(table, seed=-1)[:args.subsample]))
            table.notes = table.notes + [f"subsampled to {table.n} ids (development run)"]
        tables[name] = table
        embeddings = _embeddings(table) if "mlp" in args.methods else None
        wanted = args.seed_list or [*range(args.seeds), *([] if args.no_source_split else ["source"])]
        splits = [(seed, *split_half(table, seed)) for seed in wanted if seed != "source"]
        if "source" in wanted and (src := source_split(table)) is not None:
            splits.append(("source", *src))
        for seed, train_idx, test_idx in splits:
            t0 = time.perf_counter()
            rows += evaluate_split(table, train_idx, test_idx, seed, args.methods, args, embeddings)
            print(f"[{name} seed {seed}: {time.perf_counter() - t0:.1f} s]", file=sys.stderr, flush=True)
            if args.out:  # after every split, so a long run's finished splits survive an interruption
                write_rows(rows, args.out, _meta(args, tables, started))
    meta = _meta(args, tables, started)
    print(render(rows, meta["tables"]))
    print(f"total {meta['seconds']:.0f} s; load average at the end {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    if args.out:
        write_rows(rows, args.out, meta)
        print(f"rows written to {args.out}")


def _meta(args, tables: dict[str, Table], started: float) -> dict:
    return {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "seconds": round(time.perf_counter() - started, 1), "load_average": os.getloadavg(),
            "cpus": os.cpu_count(), "commit": _commit(), "optimizer": sys.modules.get("optimizers.replay").__file__
            if "optimizers.replay" in sys.modules else None,
            "tables": {n: {"ids": t.n, "models": t.models, "notes": t.notes} for n, t in tables.items()}}


def _embeddings(table: Table):
    try:
        from pipelines.embeddings import embed
    except ImportError:
        print("[mlp router skipped: pipelines.embeddings is not available on this branch]", file=sys.stderr)
        return None
    t0 = time.perf_counter()
    emb = np.asarray(embed(table.inputs), np.float32)
    print(f"[{table.name}: {len(emb)} embeddings in {time.perf_counter() - t0:.1f} s]", file=sys.stderr)
    return emb


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent).stdout.strip()
    except OSError:
        return ""


if __name__ == "__main__":
    main()
