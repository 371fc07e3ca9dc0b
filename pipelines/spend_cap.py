"""A production spend cap: `load(path, budget_usd=X)`. Every uncached call reserves its upper-bound price
(Tier.cost_bound) before it is made and settles at its real price after, so calls in flight, from any
thread, cannot pass the cap together; a call that fits once they settle waits for them. A call that could
pass it is refused with BudgetExceeded, before it is paid; cached answers cost nothing and are still served.
The cap is this process's (one loaded program)."""

from __future__ import annotations

import threading

from pipelines.errors import BudgetExceeded, ConfigError
from pipelines.tiers import is_number


class SpendCap:
    def __init__(self, cap_usd: float):
        if not (is_number(cap_usd) and cap_usd >= 0):
            raise ConfigError(f"budget_usd must be a finite amount >= 0, got {cap_usd!r}")
        self.cap_usd = float(cap_usd)
        self.spent_usd = 0.0
        self.reserved_usd = 0.0
        self.paid_calls = 0
        self.in_flight = 0
        self._lock = threading.Condition()

    def reserve(self, tier, payload: dict):
        """The engine's guard (pipelines.engine.Guard): refuse, or reserve and return settle(cost_usd | None)."""
        bound = tier.cost_bound(payload)
        with self._lock:
            # Calls in flight hold their upper bound, several times their real price: wait for them to settle
            # while they alone stand in the way, so concurrency does not refuse calls the cap has room for.
            while self.in_flight and self.spent_usd + bound <= self.cap_usd < \
                    self.spent_usd + self.reserved_usd + bound:
                self._lock.wait(timeout=1.0)
            if self.spent_usd + self.reserved_usd + bound > self.cap_usd:
                raise BudgetExceeded(
                    f"budget_usd reached: this program has spent ${self.spent_usd:.6f} of ${self.cap_usd:.6f} in "
                    f"{self.paid_calls} paid calls" + (f" (${self.reserved_usd:.6f} reserved by calls in flight)"
                                                       if self.in_flight else "")
                    + f"; the next call ({tier.name}, at most ${bound:.6f}) could pass it. Cached answers are "
                    "still served; load again with a larger budget_usd to continue")
            self.reserved_usd += bound
            self.in_flight += 1
        settled = []

        def settle(cost_usd: float | None) -> None:
            with self._lock:
                if settled:
                    return
                settled.append(True)
                self.in_flight -= 1
                self.reserved_usd = self.reserved_usd - bound if self.in_flight else 0.0  # no float dust left
                if cost_usd is not None:
                    self.spent_usd += cost_usd
                    self.paid_calls += 1
                self._lock.notify_all()

        return settle
