"""Runtime: one place that turns tier names into ready dspy.LM objects over a shared cache and ledger."""

from __future__ import annotations

import threading

import dspy

from pipelines.adapter import STOP_MARKER, TierwiseAdapter
from pipelines.backends import backend_for
from pipelines.cache import CallCache
from pipelines.engine import TierEngine
from pipelines.ledger import Ledger
from pipelines.tiers import Catalog, default_catalog

ADAPTER = TierwiseAdapter()


class Runtime:
    def __deepcopy__(self, memo):  # a copied program (dspy.BestOfN, Refine) shares its runtime
        return self

    def __init__(self, catalog: Catalog | None = None, cache: CallCache | None = None,
                 ledger: Ledger | None = None, scripts: dict | None = None):
        self.catalog = catalog or default_catalog()
        self.cache = cache if cache is not None else CallCache()
        self.ledger = ledger if ledger is not None else Ledger()
        self.scripts = scripts  # fake/<name> tiers only
        self._lms: dict[str, dspy.LM] = {}
        self._engines: dict[str, TierEngine] = {}
        self._lock = threading.Lock()

    def engine(self, tier_name: str) -> TierEngine:
        with self._lock:
            if tier_name not in self._engines:
                tier = self.catalog[tier_name]
                self._engines[tier_name] = TierEngine(tier, backend_for(tier, self.scripts), self.cache, self.ledger)
            return self._engines[tier_name]

    def lm(self, tier_name: str) -> dspy.LM:
        engine = self.engine(tier_name)
        with self._lock:
            if tier_name not in self._lms:
                tier = engine.tier
                wants_logprobs = tier.is_local or tier.model.startswith("fake/")
                extra = {"logprobs": True, "top_logprobs": 1} if wants_logprobs else {}
                self._lms[tier_name] = dspy.LM(
                    tier.model, engine=engine, cache=False, num_retries=0,
                    temperature=tier.setting("temperature"), max_tokens=tier.setting("max_tokens"),
                    stop=tier.setting("stop") or [STOP_MARKER], **extra,
                )
            return self._lms[tier_name]

    def close(self) -> None:
        for engine in self._engines.values():
            engine.close()
        self.cache.close()

