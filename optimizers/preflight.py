"""What `optimize` checks before its first paid call: everything a user can get wrong that would
otherwise surface only after the outcome table was paid for (or after the whole search)."""

from __future__ import annotations

import math
import os
from pathlib import Path

from optimizers import defaults
from optimizers.study import check_storage, default_storage
from pipelines import artifact
from pipelines.engine import UNAVAILABLE
from pipelines.errors import ConfigError
from pipelines.signing import signing_key
from pipelines.tiers import check_settings


SEED_MAX = 2**32 - 1  # Optuna's samplers and numpy take seeds in [0, 2**32 - 1]


def check_seed(seed) -> None:
    """Before any work: Optuna refused a negative seed only when the study opened, after recording, and the
    error read as the storage's."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX:
        raise ConfigError(f"--seed must be a whole number from 0 to {SEED_MAX}, got {seed!r}")


def check_search_numbers(seed, trials, holdout, budget_usd) -> None:
    """Seed, trial count, holdout share and budget in range: a NaN budget would cap nothing and a negative one
    stop the first call; a holdout of 0 leaves no row to check the chosen policy on."""
    check_seed(seed)
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ConfigError(f"--trials must be a whole number of at least 1, got {trials!r}")
    if isinstance(holdout, bool) or not isinstance(holdout, (int, float)) or not (
            math.isfinite(holdout) and 0 < holdout < 1):
        raise ConfigError(f"--holdout must lie in (0, 1), got {holdout!r}: the chosen policy is checked on "
                          "rows the search never saw")
    if budget_usd is not None and (isinstance(budget_usd, bool) or not isinstance(budget_usd, (int, float)) or not (
            math.isfinite(budget_usd) and budget_usd >= 0)):
        raise ConfigError(f"--budget-usd must be a finite amount >= 0, got {budget_usd!r}")


def check_options(options, task_name: str) -> None:
    """Flags: counts and fractions in range, the artifact path writable, the signing key present."""
    check_search_numbers(options.seed, options.trials, options.holdout, options.budget_usd)
    if options.limit is not None and options.limit < defaults.LIMIT_MIN:
        raise ConfigError(f"--limit must be at least {defaults.LIMIT_MIN}, got {options.limit}")
    artifact.check_destination(options.out or defaults.artifact_name(task_name, options.decompose))
    if getattr(options, "sign_key_env", None):
        signing_key(options.sign_key_env)


def check_tiers(catalog, scripts: dict | None) -> None:
    """Every tier can answer: a tier that cannot would be listed, searched and silently fallen back on."""
    for tier in catalog:
        ok, why = tier.availability(scripts)
        if not ok:
            raise ConfigError(f"tier {tier.name} ({tier.model}) is not available: {why}")


def check_program_settings(program) -> None:
    """A predictor's own generation settings (dspy.Predict(Sig, max_tokens=N)) hold the same rules as a
    tier's: a bad one would otherwise fail every call, and read as a tier that cannot be reached."""
    for name, predictor in program.named_predictors():
        check_settings(getattr(predictor, "config", None) or {}, f"predictor {name!r}", prefix="")


def check_stores(options) -> None:
    """The working folder (.tierwise/: call cache, outcomes, studies) can be created and written, and the
    study storage opened (an intact SQLite file, a known scheme)."""
    work = Path(options.work_dir)
    existing = next((p for p in [work, *work.parents] if p.exists()), Path("."))
    if not existing.is_dir():
        raise ConfigError(f"{work}: {existing} is a file, not a folder for tierwise's cache and studies")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{work}: cannot write in {existing} (the call cache and studies live there)")
    check_storage(options.storage or default_storage(create=False))


COOLING_DOWN = "cooling down"  # pipelines.engine.TierCooledDown: says a tier rests, not why it failed


class TierProbe:
    """Reachability, judged on the answers a tier gives while its outcomes are recorded (no extra call).

    A tier whose first `rows` rows all failed at the call itself (a connection refused, an unknown model, a
    refused key) and that never answered is refused before the search trusts it. Malformed answers do not
    count: the model was reached. After recording (`check_complete`), a tier that could not answer some
    rows for a passing reason (an outage, timeouts, rate limits: pipelines.engine.TierUnavailable) leaves
    the outcome table incomplete: its baseline would be its fallback's answers. The compile stops and says
    so; the answers recorded are kept, and a rerun pays only for the missing cells. A failure that would
    recur (a prompt too long for the model) is an answer the cascade falls back on, not a gap."""

    PARSE_FAILURES = ("AdapterParseError", "missing output fields")

    # A tier down on this many rows in a row is down, not blipping: without --allow-incomplete the compile
    # would stop after recording anyway, so it stops now instead of paying every row's retries and waits.
    DOWN_ROWS = 5
    RERUN = ("The answers recorded are kept: rerun when the tier answers again (no call is paid twice), or pass "
             "--allow-incomplete to compile on the rows every tier answered")

    def __init__(self, catalog, rows: int = 3, task_source: str = "the task", stop_when_down: bool = False):
        self.catalog, self.rows, self.task_source = catalog, rows, task_source
        self.stop_when_down = stop_when_down
        self.down_streak: dict[str, int] = {}
        self.top_errors: list | None = []  # the top tier's first rows while each raised the same task error
        self.failed_rows: dict[str, int] = {}
        self.answered: set[str] = set()
        self.first_error: dict[str, str] = {}  # the first failure that is not a cool-down (that says why)
        self.unavailable_rows: dict[str, int] = {}
        self.observed_rows: dict[str, int] = {}
        self.gap_ids: set[str] = set()  # rows some tier could not answer for a passing reason

    def observe(self, tier: str, results) -> None:
        for result in results:
            gap = self._note_failures(tier, [s for s in result.steps if s.tier == tier])
            if gap:
                self.gap_ids.add(result.row_id)
            self.down_streak[tier] = self.down_streak.get(tier, 0) + 1 if gap else 0
            if self.stop_when_down and self.down_streak[tier] >= self.DOWN_ROWS:
                raise ConfigError(f"{self.gap_line(tier)}, the last {self.DOWN_ROWS} in a row: it looks down, so "
                                  "recording stopped there. " + self.RERUN)
        if tier == self.catalog.names[-1]:
            self._watch_task_errors(tier, results)
        if tier in self.answered:
            return
        steps = [s for r in results for s in r.steps if s.tier == tier]
        if any(s.decision != "failed" or any(p in s.error for p in self.PARSE_FAILURES) for s in steps):
            self.answered.add(tier)
            return
        if not steps:
            return
        self.failed_rows[tier] = self.failed_rows.get(tier, 0) + 1
        if self.failed_rows[tier] >= self.rows:
            raise ConfigError(f"tier {tier} ({self._where(tier)}) cannot be reached: its first {self.rows} rows all "
                              f"failed at the call ({self.first_error[tier][:200]}); check the model id, its key "
                              "and the network")

    def _watch_task_errors(self, tier: str, results) -> None:
        """The program or its metric raising the very same error on the top tier's first rows (a typo such as
        `prediction.anwser`) is a bug: stop before every other row and tier is paid for. Errors that differ
        from row to row (int() of each answer's words) are left to the majority rule after recording."""
        for result in results if self.top_errors is not None else ():
            answered = all(s.decision != "failed" for s in result.steps)  # else the tier's failure, not the task's
            if not result.error or not answered or (self.top_errors and result.error != self.top_errors[0].error):
                self.top_errors = None
                return
            self.top_errors.append(result)
        if self.top_errors and len(self.top_errors) >= self.rows:
            first = self.top_errors[0]
            raise ConfigError(f"task {self.task_source}: the program or its metric raised the same error on the "
                              f"first {len(self.top_errors)} rows with every predictor on {tier}; row "
                              f"{first.row_id}: {first.error}. Every paid call is cached: fix it and rerun")

    def _note_failures(self, tier: str, steps) -> bool:
        """Count the row's failures on `tier`; True when one was a passing one (the row has a gap)."""
        self.observed_rows[tier] = self.observed_rows.get(tier, 0) + 1
        failed = [s.error for s in steps if s.decision == "failed"]
        if not failed:
            return False
        telling = [e for e in failed if COOLING_DOWN not in e]
        if tier not in self.first_error or (telling and COOLING_DOWN in self.first_error[tier]):
            self.first_error[tier] = (telling or failed)[0]
        if any(UNAVAILABLE.search(e) for e in failed):
            self.unavailable_rows[tier] = self.unavailable_rows.get(tier, 0) + 1
            return True
        return False

    def _where(self, tier: str) -> str:
        spec = self.catalog[tier]
        return spec.model + (f" at {spec.api_base}" if spec.api_base else "")

    def check_complete(self) -> None:
        """Raise when a tier could not answer some rows for a passing reason (see the class)."""
        if self.unavailable_rows:  # every tier with gaps, in recording order (the top tier first)
            raise ConfigError(
                f"{'; '.join(map(self.gap_line, self.unavailable_rows))}: without them the outcome table, and "
                "those tiers' baselines, would be wrong. " + self.RERUN)

    def gap_line(self, tier: str) -> str:
        room = 200 // len(self.unavailable_rows)  # one line whatever the number of tiers with gaps
        return (f"tier {tier} ({self._where(tier)}) could not answer {self.unavailable_rows[tier]} of "
                f"{self.observed_rows[tier]} rows (first: {self.first_error[tier][:room]})")
