"""tierwise run time: what production code imports. Never imports optuna or pandas at import time.

    from pipelines import load
    program = load("support.tierwise.json")              # or load(path, program=MyProgram())
    prediction = program(message="Where is my order A12345?")
    program.last_trail   # tiers tried, confidences, cost of that call
    trail_of(prediction), cost_of(prediction)   # the same, per prediction (rows of program.batch)

    from pipelines import lm
    dspy.configure(lm=lm("flagship"))   # a tier as a plain dspy.LM (DSPy's optimizers on the local tiers)

    from pipelines import BudgetExceeded, TierwiseError   # what it raises (pipelines.errors): catch these
"""

import os

# Both dspy and litellm try to download a price map on first use; the shipped snapshot is enough
# and nothing may reach the network unless a user configured an API model.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from pipelines.errors import (  # noqa: E402 - plain exception classes, no imports of their own
    AllRungsFailed, ArtifactError, BudgetExceeded, ConfigError, DatasetError, InputError, LedgerError,
    MissingExtraError, ModelFileError, StoreError, TierwiseError)


def load(path, program=None, cache_url=None, cache_ttl_s=None, **runtime_options):
    """Load a compiled artifact and return a ready DSPy module (see pipelines.artifact.load_program).

    `cache_url` (else TIERWISE_CACHE_URL) keeps the call cache in Redis or PostgreSQL, shared by replicas
    (redis://host:6379/0, postgresql://...), answers kept `cache_ttl_s` seconds; default the disk cache.

    Without `program`, the artifact rebuilds its own (a shipped task, or the importable class it was
    compiled from); `load(path, program=MyProgram())` applies it to an instance you built, as DSPy's
    `program.load(path)` does, and refuses one whose predictors or signatures differ. `budget_usd=X` caps what
    the loaded program may pay for uncached calls; with `budget_url` (redis://, postgresql://) and `budget_key`
    one cap for every replica, per UTC day or month with `budget_period` (pipelines.spend_cap)."""
    from pipelines.artifact import load_program

    if cache_url is not None or cache_ttl_s is not None:
        from pipelines.cache import CallCache

        runtime_options["cache"] = CallCache(url=cache_url, ttl_s=cache_ttl_s)
    return load_program(path, program=program, **runtime_options)


def decompose(program):
    """A copy of `program` with one predictor per output field, each tiered on its own (pipelines.decomposition)."""
    from pipelines.decomposition import decompose as split

    return split(program)


def lm(tier: str = "flagship", tiers=None, cache_dir=None, ledger_path=None, **settings):
    """One tier as a plain dspy.LM through tierwise's cache and ledger (see pipelines.runtime.standalone_lm)."""
    from pipelines.runtime import standalone_lm

    return standalone_lm(tier, tiers, cache_dir, ledger_path, **settings)


def trail_of(prediction) -> list:
    """The tier trail (pipelines.trail.Step) of the request that returned `prediction`."""
    from pipelines.cascade import trail_of as trail

    return trail(prediction)


def cost_of(prediction) -> float:
    """What the request that returned `prediction` costs in production, in USD: the price of its calls, cached
    or not (the ledger's cost_usd is what was paid now, 0 on a cache hit)."""
    from pipelines.cascade import cost_of as cost

    return cost(prediction)


__all__ = ["cost_of", "decompose", "lm", "load", "trail_of",
           "AllRungsFailed", "ArtifactError", "BudgetExceeded", "ConfigError", "DatasetError", "InputError",
           "LedgerError", "MissingExtraError", "ModelFileError", "StoreError", "TierwiseError"]
