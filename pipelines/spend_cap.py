"""A production spend cap: `load(path, budget_usd=X)`. Every uncached call reserves its upper-bound price
(Tier.cost_bound) before it is made and settles at its real price after, so calls in flight, from any
thread, cannot pass the cap together; a call that fits once they settle waits for them. A call that could
pass it is refused with BudgetExceeded, before it is paid; cached answers cost nothing and are still served.

SpendCap is one loaded program's. With `budget_url` (Redis or PostgreSQL) the cap is SharedSpendCap: one
counter for every replica that loads with the same URL and `budget_key`, optionally per UTC day or month."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone

from pipelines.errors import BudgetExceeded, ConfigError
from pipelines.tiers import is_number

STILL_SERVED = "Cached answers are still served"


def refused(message: str, bound_usd: float) -> BudgetExceeded:
    """The refusal, with the refused call's upper-bound price (`bound_usd`) for callers that explain it."""
    error = BudgetExceeded(message)
    error.bound_usd = bound_usd
    return error


def _checked_cap(cap_usd) -> float:
    if not (is_number(cap_usd) and cap_usd >= 0):
        raise ConfigError(f"budget_usd must be a finite amount >= 0, got {cap_usd!r}")
    return float(cap_usd)


class _Bookkeeping:
    """What a cap counts in this process: calls in flight and paid calls, each call settled once; and whether it
    is closed (`run` closes it at its first refusal: from then on only cached answers, so a later request does
    not pay its cheap rung and then get refused its next one)."""

    closed = False

    def check_open(self, tier, bound: float) -> None:
        if self.closed:
            raise refused(f"budget_usd reached earlier: only cached answers are served now ({tier.name})", bound)

    def _settler(self, then):
        """settle(cost_usd | None), once: the call leaves the calls in flight (a paid one counts), then `then(cost_usd)`,
        all under the cap's lock."""
        settled = []

        def settle(cost_usd: float | None) -> None:
            with self._lock:
                if settled:
                    return
                settled.append(True)
                self.in_flight -= 1
                if cost_usd is not None:
                    self.paid_calls += 1
                then(cost_usd)

        return settle


class SpendCap(_Bookkeeping):
    def __init__(self, cap_usd: float):
        self.cap_usd = _checked_cap(cap_usd)
        self.spent_usd = 0.0
        self.reserved_usd = 0.0
        self.paid_calls = 0
        self.in_flight = 0
        self._lock = threading.Condition()

    def reserve(self, tier, payload: dict):
        """The engine's guard (pipelines.engine.Guard): refuse, or reserve and return settle(cost_usd | None)."""
        bound = tier.cost_bound(payload)
        self.check_open(tier, bound)
        with self._lock:
            # Calls in flight hold their upper bound, several times their real price: wait for them to settle
            # while they alone stand in the way, so concurrency does not refuse calls the cap has room for.
            while self.in_flight and self.spent_usd + bound <= self.cap_usd < \
                    self.spent_usd + self.reserved_usd + bound:
                self._lock.wait(timeout=1.0)
            if self.spent_usd + self.reserved_usd + bound > self.cap_usd:
                raise refused(
                    f"budget_usd reached: this program has spent ${self.spent_usd:.6f} of ${self.cap_usd:.6f} in "
                    f"{self.paid_calls} paid calls" + (f" (${self.reserved_usd:.6f} reserved by calls in flight)"
                                                       if self.in_flight else "")
                    + f"; the next call ({tier.name}, at most ${bound:.6f}) could pass it. {STILL_SERVED}; load "
                    "again with a larger budget_usd to continue", bound)
            self.reserved_usd += bound
            self.in_flight += 1

        def settled(cost_usd: float | None) -> None:
            self.reserved_usd = self.reserved_usd - bound if self.in_flight else 0.0  # no float dust left
            self.spent_usd += cost_usd or 0.0
            self._lock.notify_all()

        return self._settler(settled)


# How long a call waits for other replicas' calls in flight when their reservations alone stand in the way.
WAIT_FOR_OTHERS_S = 30.0
# A reservation's lease: a replica killed mid-call stops holding the cap after it (Redis; PostgreSQL drops a
# dead connection's reservations at once). Longer than any call, so a slow call keeps its reservation.
LEASE_S = 600.0
PERIODS = {"day": ("%Y-%m-%d", 3 * 86400), "month": ("%Y-%m", 62 * 86400)}  # window name, how long Redis keeps it


class SharedSpendCap(_Bookkeeping):
    """One cap for every replica loading with the same `url` and `key`: the counter and the reservations live
    in Redis or PostgreSQL (pipelines.stores: RedisSpend, SharedSpend), each reservation one atomic step on
    the server. With `period` ("day", "month") the cap is per UTC day or month, a fresh counter each window."""

    UNITS = 10**12  # whole picodollars: the servers count integers

    def __init__(self, cap_usd: float, url: str, key: str, period: str | None = None):
        from pipelines.stores import check_url, open_shared

        self.cap_usd = _checked_cap(cap_usd)
        if not isinstance(key, str) or not key.strip():
            raise ConfigError(f"budget_key must be a non-empty name, got {key!r}")
        if period is not None and period not in PERIODS:
            raise ConfigError(f"budget_period must be one of {', '.join(PERIODS)} (or None), got {period!r}")
        if not isinstance(url, str):
            raise ConfigError(f"budget_url must be a redis:// or postgresql:// URL, got {url!r}")
        check_url(url, "spend cap", "budget_url")
        self.url, self.key, self.period = url, key, period
        self.store = open_shared(url, "calls", "spend cap")
        self.paid_calls = 0  # by this process
        self.in_flight = 0
        self._counters: dict = {}
        self._lock = threading.Lock()

    def window(self) -> str:
        """The current period's name (UTC), '' without a period."""
        return datetime.now(timezone.utc).strftime(PERIODS[self.period][0]) if self.period else ""

    def _counter(self):
        from pipelines.stores import PostgresStore, RedisSpend, SharedSpend

        window = self.window()
        name = f"{self.key}:{window}" if window else self.key
        with self._lock:
            if name not in self._counters:
                self._counters[name] = SharedSpend(self.store, f"cap:{name}") if isinstance(self.store, PostgresStore) \
                    else RedisSpend(self.store, name, LEASE_S, PERIODS[self.period][1] if self.period else None)
            return self._counters[name], window

    @property
    def spent_usd(self) -> float:
        """What every replica has paid under this cap (this window's)."""
        return self._counter()[0].spent() / self.UNITS

    def reserve(self, tier, payload: dict):
        """The engine's guard: refuse, or reserve on the server and return settle(cost_usd | None)."""
        bound = tier.cost_bound(payload)
        self.check_open(tier, bound)
        units, cap = int(bound * self.UNITS) + 1, round(self.cap_usd * self.UNITS)  # a bound rounded up stays one
        counter, window = self._counter()
        deadline = time.monotonic() + WAIT_FOR_OTHERS_S
        while True:
            rid, spent, reserved = counter.reserve(units, cap)
            if rid is not None:
                break
            if reserved and spent + units <= cap and time.monotonic() < deadline:
                time.sleep(0.05)  # calls in flight alone stand in the way: they settle far below their bound
                continue
            where = f" ({self.period} {window} UTC)" if window else ""
            raise refused(
                f"budget_usd reached: the replicas sharing budget_key {self.key!r}{where} have spent "
                f"${spent / self.UNITS:.6f} of ${self.cap_usd:.6f}"
                + (f" (${reserved / self.UNITS:.6f} reserved by calls in flight)" if reserved else "")
                + f"; the next call ({tier.name}, at most ${bound:.6f}) could pass it. {STILL_SERVED}"
                + ("; the cap starts again with the next " + self.period if self.period else ""), bound)
        with self._lock:
            self.in_flight += 1
        return self._settler(lambda cost_usd: counter.settle(rid, round((cost_usd or 0.0) * self.UNITS)))

    def close(self) -> None:
        self.store.close()


def spend_cap(budget_usd, budget_url=None, budget_key=None, budget_period=None, default_key: str = ""):
    """The guard `load` puts on a program's tiers: none, this program's SpendCap, or a SharedSpendCap."""
    if budget_usd is None:
        given = [name for name, value in (("budget_url", budget_url), ("budget_key", budget_key),
                                          ("budget_period", budget_period)) if value is not None]
        if given:
            raise ConfigError(f"{', '.join(given)} given without budget_usd: no cap to share")
        return None
    if budget_url is None:
        if budget_key is not None or budget_period is not None:
            raise ConfigError("budget_key and budget_period name a cap shared through budget_url; give budget_url "
                              "(redis://... or postgresql://...)")
        return SpendCap(budget_usd)
    return SharedSpendCap(budget_usd, budget_url, budget_key if budget_key is not None else default_key, budget_period)
