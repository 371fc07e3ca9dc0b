"""TierOptimizer: tierwise as a DSPy optimizer.

    from optimizers import TierOptimizer
    optimizer = TierOptimizer(metric=metric, tiers="tiers.toml")
    compiled = optimizer.compile(program, trainset=trainset)     # a copy; `program` is untouched
    compiled.save("pipeline.tierwise.json")                      # pipelines.load(path) runs it
    optimizer.summary_, optimizer.policy_, optimizer.study_      # as `cli.py optimize --json` reports

The trainset is a list of `dspy.Example` with `.with_inputs(...)`, the metric DSPy's
`metric(example, prediction, trace=None)` returning a bool or a float. The compile is the one
`cli.py optimize` runs (optimizers.stages): outcome table, disk cache, budget, resume, holdout check.
"""

from __future__ import annotations

import contextlib
import copy
import json
import re

from dspy.teleprompt import Teleprompter

from optimizers import defaults
from optimizers.live import check_rows, check_unique_ids
from optimizers.preflight import check_search_numbers
from optimizers.semantic_search import check_declaration
from optimizers.select import Objective
from optimizers.stages import Job, run
from optimizers.whole_form import add_whole_form
from pipelines import paths
from pipelines.answer_checks import AnswerChecks
from pipelines.artifact import load_state, program_from_body
from pipelines.cache import CallCache
from pipelines.decomposition import DecomposedTask, is_decomposed
from pipelines.errors import ConfigError, TierwiseError
from pipelines.programs import ExampleTask, example_row, factory_spec, input_keys_of
from pipelines.tiers import Catalog, load_catalog


class TierOptimizer(Teleprompter):
    """Per predictor, a ladder of model tiers and escalation thresholds, searched for your objective.

    Objective (at most one; default: the lowest cost at flagship-only quality, a paired tie within 1 point):
    `min_quality` (lowest cost with quality >= Q), `match_tier` (match that tier's quality),
    `max_cost_per_1k` (best quality under a cost per 1,000 calls of the program).
    `tiers`: a TOML tiers file or a pipelines.tiers.Catalog (default: the local tiers).
    `budget_usd` caps uncached spend for this compile across reruns (BudgetExceeded when reached).
    `holdout`: share of the trainset kept for the final check when no `valset` is given.
    `storage`: Optuna storage URL (default a SQLite file under `work_dir`, `.tierwise/`).
    `predictor_correct(name, example, outputs) -> bool | None`: optional per-predictor correctness,
    used to fit the learned confidence scorer (else agreement with the flagship's answer).
    `semantic_cache`: {"predictors": [names], "entities": [regex, ...]} also searches a semantic cache (and its
    threshold) in front of those predictors, as a task file's SEMANTIC_CACHE does for `cli.py optimize
    --semantic-cache`; a request answers from it only when every entity the regexes find matches.
    `allow_incomplete`: when a tier could not answer some rows (an outage, timeouts after retries), compile on
    the rows every tier answered (the summary's notes say how many were left out) instead of raising.
    `checks`: {predictor name: check or [checks]}, your own answer checks `check(inputs, prediction) -> number or
    bool` that the learned confidence reads beside its generic signals (pipelines.answer_checks); production
    passes them again: `load(path, checks=...)`.
    `decompose=True` compiles the program split into one predictor per output field (pipelines.decompose), as
    `cli.py optimize --decompose` does, and measures the chosen policy against the program as written on the
    reference tier, on the same holdout rows (`summary_["whole_form"]`: saving and paired quality gap).

    After `compile`: `summary_` (dict), `policy_` (pipelines.policy.Policy), `study_` (optuna.Study),
    `artifact_` (the artifact body that `compiled.save` writes)."""

    def __init__(self, metric, tiers=None, min_quality: float | None = None, match_tier: str | None = None,
                 max_cost_per_1k: float | None = None, trials: int = defaults.TRIALS, budget_usd: float | None = None,
                 holdout: float = defaults.HOLDOUT, storage: str | None = None, seed: int = defaults.SEED,
                 predictor_correct=None, work_dir=None, progress: bool = False, scripts: dict | None = None,
                 semantic_cache: dict | None = None, allow_incomplete: bool = False, decompose: bool = False,
                 checks: dict | None = None):
        if not callable(metric):
            raise ConfigError("metric must be a callable metric(example, prediction, trace=None)")
        self.metric = metric
        self.tiers = tiers
        with python_names():  # checked before any call, as the CLI does
            self.objective = Objective(min_quality, match_tier, max_cost_per_1k)  # validates the combination
            check_search_numbers(seed, trials, holdout, budget_usd)
        self.trials, self.budget_usd, self.holdout = trials, budget_usd, holdout
        self.storage, self.seed = storage, seed
        self.predictor_correct = predictor_correct
        AnswerChecks.of(checks)  # its shape checked now; its predictor names against the program at compile
        self.checks = checks
        self.work_dir = paths.work_dir(work_dir)
        self.progress = progress
        self.scripts = scripts  # fake/ tiers (tests)
        self.semantic_cache = semantic_settings(semantic_cache)
        for name, value in (("allow_incomplete", allow_incomplete), ("decompose", decompose), ("progress", progress)):
            if not isinstance(value, bool):  # "no" would be true: say so rather than do the opposite
                raise ConfigError(f"{name}= takes True or False, got {value!r}")
        self.allow_incomplete = allow_incomplete
        self.decompose = decompose

    def _catalog(self) -> Catalog:
        return self.tiers if isinstance(self.tiers, Catalog) else load_catalog(self.tiers)

    def compile(self, student, *, trainset, valset=None, teacher=None):
        """A compiled copy of `student`: a pipelines.cascade.CompiledProgram, called like the program."""
        with python_names():
            return self._compile(student, trainset, valset, teacher)

    def _compile(self, student, trainset, valset, teacher):
        if teacher is not None:
            raise ConfigError("TierOptimizer takes no teacher: it assigns tiers, it does not bootstrap demos")
        if self.decompose and is_decomposed(student):
            raise ConfigError("decompose=True takes the program as written (the optimizer splits it and compares "
                              "the two forms); this one is decompose()d already")
        task = ExampleTask.from_examples(student, self.metric, list(trainset), source=factory_spec(student),
                                         predictor_correct=self.predictor_correct, checks=self.checks)
        if self.decompose:
            task = DecomposedTask(task)
        hold_rows = None
        if valset is not None:
            valset_keys = input_keys_of(valset, "valset")
            if set(valset_keys) != set(task.input_keys):
                raise ConfigError(f"valset inputs {sorted(valset_keys)} differ from the trainset's "
                                  f"{sorted(task.input_keys)}")
            offset = len(task.rows)
            hold_rows = [example_row(e, offset + i) for i, e in enumerate(valset)]
        program = task.build_program()  # inputs and labels checked before any call is paid for, as the CLI does
        check_rows(task.rows, task, "trainset", program)
        if hold_rows is not None:
            check_rows(hold_rows, task, "valset", program)
            check_unique_ids(task.rows + hold_rows, "trainset + valset")
        notes = overlap_note(task.rows, hold_rows or [])
        names = [name for name, _ in program.named_predictors()]
        unknown = [n for n in (self.semantic_cache or {}).get("predictors", ()) if n not in names]
        if unknown:
            raise ConfigError(f"semantic_cache names predictors {unknown} that the program lacks; it has {names}")
        catalog = self._catalog()
        job = Job(task=task, rows=task.rows, catalog=catalog, objective=self.objective, trials=self.trials,
                  seed=self.seed, budget_usd=self.budget_usd, holdout=self.holdout, holdout_rows=hold_rows,
                  storage=self.storage, work_dir=self.work_dir, dataset="trainset", scripts=self.scripts,
                  semantic_cache=self.semantic_cache is not None, semantic_settings=self.semantic_cache,
                  allow_incomplete=self.allow_incomplete, notes=notes)
        if self.progress:
            from optimizers.progress import LiveProgress

            with LiveProgress() as progress:
                result = run(job, progress)
        else:
            result = run(job)
        if self.decompose:
            add_whole_form(job, task, result)
        self.summary_, self.policy_, self.study_ = result.summary, result.policy, result.study
        self.artifact_ = result.body
        program = copy.deepcopy(task.build_program())
        load_state(program, result.body)
        return program_from_body(result.body, program, "compiled program",
                                 cache=CallCache(paths.cache_dir(self.work_dir)), scripts=self.scripts,
                                 checks=self.checks)


# The compile's messages name the command line's flags; from Python they name this class's parameters.
FLAG_PARAMETERS = {"--min-quality": "min_quality=", "--match-tier": "match_tier=",
                   "--max-cost-per-1k": "max_cost_per_1k=", "--holdout": "holdout=", "--budget-usd": "budget_usd=",
                   "--trials": "trials=", "--allow-incomplete": "allow_incomplete=True", "--seed": "seed=",
                   "--decompose": "decompose=True"}
_FLAG = re.compile("|".join(re.escape(flag) for flag in sorted(FLAG_PARAMETERS, key=len, reverse=True)) + r"\b")


@contextlib.contextmanager
def python_names():
    """A tierwise error raised inside names TierOptimizer's parameters where it named the CLI's flags (the same
    error object and class, its message translated)."""
    try:
        yield
    except TierwiseError as error:
        if error.args and isinstance(error.args[0], str):
            error.args = (_FLAG.sub(lambda m: FLAG_PARAMETERS[m.group(0)], error.args[0]), *error.args[1:])
        raise


def overlap_note(train_rows: list[dict], hold_rows: list[dict]) -> list[str]:
    """A valset that repeats trainset examples is not an independent check: say how many."""
    def content(row):
        return json.dumps({k: v for k, v in row.items() if k not in ("id", "segment")}, sort_keys=True, default=str)

    seen = {content(r) for r in train_rows}
    repeated = sum(content(r) in seen for r in hold_rows)
    if not repeated:
        return []
    return [f"{repeated} of {len(hold_rows)} valset examples are also in the trainset: the holdout check on them "
            "is not independent of the search"]


def semantic_settings(value) -> dict | None:
    """`semantic_cache=` checked as a task file's SEMANTIC_CACHE is (optimizers.semantic_search.check_declaration)."""
    return None if value is None else check_declaration(value, "semantic_cache")
