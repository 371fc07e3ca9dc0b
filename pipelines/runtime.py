"""Runtime: one place that turns tier names into ready dspy.LM objects over a shared cache and ledger."""

from __future__ import annotations

import contextlib
import threading

import dspy

from pipelines.adapter import TierwiseAdapter
from pipelines.backends import backend_for
from pipelines.cache import CallCache
from pipelines.engine import TierEngine
from pipelines.ledger import Ledger
from pipelines.run_time_predictors import RunTimeEngine
from pipelines.tier_lm import TierLM, lm_settings, tier_lm
from pipelines.tiers import DEFAULT_SETTINGS, LOCAL_PREFIX, Catalog, default_catalog, load_catalog

ADAPTER = TierwiseAdapter()


class Runtime:
    def __deepcopy__(self, memo):  # a copied program (dspy.BestOfN, Refine) shares its runtime
        return self

    def __init__(self, catalog: Catalog | None = None, cache: CallCache | None = None,
                 ledger: Ledger | None = None, scripts: dict | None = None, guard=None, checks=None):
        self.checks = checks  # pipelines.answer_checks.AnswerChecks: the user's checks the learned confidence reads
        self.guard = guard  # pipelines.engine.Guard on every tier's uncached calls (a SpendCap's reserve)
        self.catalog = catalog or default_catalog()
        self.cache = cache if cache is not None else CallCache()
        self.ledger = ledger if ledger is not None else Ledger()
        self.scripts = scripts  # fake/<name> tiers only
        self._lms: dict[str, dspy.LM] = {}
        self._run_time_lm: dspy.LM | None = None
        self._engines: dict[str, TierEngine] = {}
        self._lock = threading.Lock()

    def engine(self, tier_name: str) -> TierEngine:
        with self._lock:
            if tier_name not in self._engines:
                tier = self.catalog[tier_name]
                self._engines[tier_name] = TierEngine(tier, backend_for(tier, self.scripts), self.cache, self.ledger)
                self._engines[tier_name].guard = self.guard
            return self._engines[tier_name]

    def lm(self, tier_name: str) -> dspy.LM:
        engine = self.engine(tier_name)
        with self._lock:
            if tier_name not in self._lms:
                self._lms[tier_name] = tier_lm(engine.tier, engine)
            return self._lms[tier_name]

    def run_time_lm(self) -> dspy.LM:
        """The LM of predictors a program builds while it runs (pipelines.run_time_predictors): built for
        the top tier, each call answered by the tier of the request's latest answer."""
        with self._lock:
            if self._run_time_lm is None:
                engine = RunTimeEngine(self)
                self._run_time_lm = tier_lm(engine.tier, engine)
            return self._run_time_lm

    @contextlib.contextmanager
    def program_settings(self):
        """dspy settings while a program runs under a policy: tierwise's adapter (a module that wraps the
        adapter, as dspy.Refine does for its hints, wraps this one) and the LM for predictors built at run time."""
        with dspy.context(adapter=ADAPTER, lm=self.run_time_lm()):
            yield

    def release_local_models(self, tier_names, keep=()) -> None:
        """Unload the local models behind `tier_names`, except those a tier in `keep` runs on. Recording a
        compile's outcome table goes tier by tier: the local models need not all be resident at once
        (peak memory: the largest model, not the sum). A later call loads its model again."""
        from pipelines.local import release_server

        needed = {self.catalog[name].model for name in keep}
        for name in tier_names:
            tier = self.catalog[name]
            if tier.is_local and tier.model not in needed:
                release_server(tier.model[len(LOCAL_PREFIX):])

    def close(self) -> None:
        for engine in self._engines.values():
            engine.close()
        self.cache.close()


def standalone_lm(tier: str = "flagship", tiers=None, cache_dir=None, ledger_path=None, **settings) -> dspy.LM:
    """One tier as a plain dspy.LM, through tierwise's disk cache (`cache_dir`, default .tierwise/cache) and
    a ledger of priced calls (`ledger_path`, JSONL; default in memory), with no policy or cascade: for DSPy's
    own optimizers (BootstrapFewShot, MIPROv2) or any dspy code on the local tiers, which no dspy.LM reaches
    otherwise. `tiers`: a TOML tiers file (default: the local tiers). `settings` override the tier's request
    settings; a local tier's 24-token max_tokens, sized for a cascade's rungs (each predictor gets its own
    answer budget there), becomes 256 unless you set one."""
    runtime = Runtime(load_catalog(tiers), cache=CallCache(cache_dir), ledger=Ledger(ledger_path))
    engine = runtime.engine(tier)
    own = lm_settings(engine.tier)
    own["max_tokens"] = max(own["max_tokens"] or 0, DEFAULT_SETTINGS["max_tokens"])
    for key in ("logprobs", "top_logprobs"):  # no confidence is read here; dspy would put them on every prediction
        own.pop(key, None)
    return TierLM(engine.tier.model, engine=engine, cache=False, num_retries=0, **{**own, **settings})
