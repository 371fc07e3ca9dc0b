"""`cli.py optimize`: a task (shipped name or task file) and its dataset, compiled by optimizers.stages."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from optimizers import defaults, preflight, semantic_search
from optimizers.select import Objective
from optimizers.stages import Job, run
from pipelines import artifact, paths
from pipelines.decomposition import DecomposedTask
from pipelines.errors import ConfigError
from pipelines.tasks import DATASETS_DIR, check_row, load_task, read_task_rows
from pipelines.tiers import load_catalog


@dataclass
class OptimizeOptions:
    task: str
    dataset: str | None = None
    tiers: str | None = None
    trials: int = defaults.TRIALS
    seed: int = defaults.SEED
    budget_usd: float | None = None
    objective: Objective | None = None
    holdout: float = defaults.HOLDOUT
    storage: str | None = None
    out: str | None = None
    limit: int | None = None
    work_dir: Path = paths.WORK_DIR
    scripts: dict | None = None  # fake/ tiers (tests)
    concurrency: int = 1  # calls at once while recording outcomes (each tier within its max_concurrency)
    sign_key_env: str | None = None  # sign the artifact with the key in this environment variable
    semantic_cache: bool = False  # search a semantic cache too (predictors the task declares; optimizers.semantic_search)
    allow_incomplete: bool = False  # compile on the rows every tier answered when a tier had an outage
    decompose: bool = False  # compile the task's program decomposed: one predictor per output field


def check_unique_ids(rows: list[dict], where: str) -> list[dict]:
    ids = [str(r["id"]) for r in rows]
    if len(set(ids)) != len(ids):
        repeated = next(i for i in ids if ids.count(i) > 1)
        raise ConfigError(f"{where}: row ids are not unique ({repeated!r} repeats; an example's own `id` field is "
                          "its row id: make it unique, or rename the field)")
    return rows


def check_rows(rows: list[dict], task, where: str, program=None) -> list[dict]:
    """Examples given in code, checked as a dev set file is (pipelines.tasks.check_row): unique ids, every
    input field present and of its declared type, labels within their choices, every label the metric reads."""
    check_unique_ids(rows, where)
    program = program if program is not None else task.build_program()
    for i, row in enumerate(rows):
        check_row(task, program, row, f"{where}[{i}]")
    return rows


def load_rows(task, options: OptimizeOptions) -> list[dict]:
    return sample_rows(load_all_rows(task, options), options)


def sample_rows(rows: list[dict], options: OptimizeOptions) -> list[dict]:
    """--limit N: a seeded sample of N rows."""
    if options.limit is None:
        return rows
    return random.Random(options.seed).sample(rows, min(options.limit, len(rows)))


def load_all_rows(task, options: OptimizeOptions) -> list[dict]:
    path = options.dataset or task.default_dataset()
    examples = getattr(task, "default_rows", lambda: None)() if path is None else None
    if path is None and examples is None:
        raise ConfigError(f"task {task.name} has no default dataset; pass --dataset")
    # Inputs and labels are checked before the first paid call.
    rows = read_task_rows(task, path) if path is not None else check_rows(examples, task, f"{task.source} trainset")
    paraphrases = getattr(getattr(task, "module", None), "PARAPHRASES", None)
    if options.semantic_cache and options.dataset is None and paraphrases:
        # The task's own dev set plus its paraphrase groups: near-duplicates the cache's threshold is tuned on.
        rows = check_unique_ids(rows + read_task_rows(task, DATASETS_DIR / paraphrases), str(path))
    return rows


def optimize(options: OptimizeOptions, progress=None) -> dict:
    """Compile the task, write the artifact, return the summary."""
    task = load_task(options.task)
    if options.decompose:
        task = DecomposedTask(task)
    catalog = load_catalog(options.tiers)
    preflight.check_options(options, task.name)
    preflight.check_stores(options)
    if options.semantic_cache and not semantic_search.declared(task):
        raise ConfigError(f"--semantic-cache: task {task.name} declares no predictors for it "
                          "(SEMANTIC_CACHE = {\"predictors\": [...]} in its module)")
    out_path = Path(options.out or defaults.artifact_name(task.name, options.decompose))
    all_rows = load_all_rows(task, options)
    rows = sample_rows(all_rows, options)
    job = Job(task=task, rows=rows, catalog=catalog, rows_available=len(all_rows),
              objective=options.objective or Objective(), trials=options.trials, seed=options.seed,
              budget_usd=options.budget_usd, holdout=options.holdout, storage=options.storage,
              work_dir=options.work_dir, out=str(out_path),
              dataset=str(options.dataset or task.default_dataset() or task.source), scripts=options.scripts,
              concurrency=options.concurrency, semantic_cache=options.semantic_cache,
              allow_incomplete=options.allow_incomplete)
    result = run(job, progress)
    if options.decompose:  # its saving is against its own flagship-only: also against the program as written
        from optimizers.whole_form import add_whole_form

        add_whole_form(job, task, result)
    artifact.save(result.body, out_path, options.sign_key_env)
    if options.limit is not None and options.limit > len(all_rows):
        result.summary.setdefault("notes", []).append(
            f"--limit {options.limit}: the dataset has {len(all_rows)} rows; all of them were used")
    return result.summary
