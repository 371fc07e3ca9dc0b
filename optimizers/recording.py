"""Recording the outcome table: every row under each tier's uniform policy, up to N calls at once.

An API-bound compile waits on the network, not the CPU: 1,332 cells at one second each take 22
minutes one by one, and a few minutes eight at a time. What stays exact under concurrency is kept
by the layers below, not here: the disk cache's per-key claim (no call paid twice), the budget's
reservations (the cap counts calls in flight) and the outcome store (one cell, one key).

Each tier's limit: `max_concurrency` from the tiers file, at most `--concurrency`; a local tier is
always 1 (one llama.cpp generation at a time is fastest on 2 cores; its model serializes anyway).
"""

from __future__ import annotations

from collections import Counter, deque
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

from optimizers.outcomes import RowResult, evaluate
from pipelines.policy import Policy


def tier_limit(tier, concurrency: int) -> int:
    if tier.is_local:
        return 1
    asked = tier.settings.get("max_concurrency")
    return max(1, min(int(asked), concurrency) if asked else concurrency)


def record_baselines(task, program, catalog, rows: list[dict], table, predictors: list[str],
                     concurrency: int = 1, progress=None, probe=None, done=None) -> dict[str, list[RowResult]]:
    """tier -> one RowResult per row (in `rows` order) of the program on that tier alone.

    One call at a time, tier by tier, the top tier first: a cheaper tier's failed answer then falls back on
    cells already recorded (cache hits that load no model), and a tier done lets its local model go (`done`),
    so one local model at a time is resident (peak memory: the largest model, not the sum). At once
    (`concurrency` > 1), cheaper tiers are started first. A budget stop (or any error) stops new calls,
    lets the ones in flight finish (they are paid: their cells are kept) and is raised after.
    `probe.observe(tier, [result])` sees each result as it comes (optimizers.preflight.TierProbe refuses a
    tier that cannot be reached). `done(tier, remaining)` is told when a tier has answered every row, with
    the tiers still recording."""
    names = catalog.names
    done = done or (lambda tier, remaining: None)
    if progress is not None:
        # rows x tiers, not calls: a program may call a predictor several times per row
        progress.stage("recording outcomes (rows x tiers)", total=len(names) * len(rows))
    if concurrency <= 1:
        results = {}
        top_down = names[::-1]
        for i, tier in enumerate(top_down):
            results[tier] = []
            for row in rows:
                results[tier] += evaluate(task, program, Policy.uniform(predictors, tier), [row], table, names)
                if probe is not None:
                    probe.observe(tier, results[tier][-1:])
                _advance(progress, table)
            done(tier, top_down[i + 1:])
        return {tier: results[tier] for tier in names}

    # apply_policy rewires a program's predictors in place: each tier gets its own copy.
    programs = {tier: program.deepcopy() for tier in names}
    limits = {tier: tier_limit(catalog[tier], concurrency) for tier in names}
    queues = {tier: deque(rows) for tier in names}
    done_rows: dict[str, dict[str, RowResult]] = {tier: {} for tier in names}
    running: Counter = Counter()
    in_flight: dict = {}
    error: BaseException | None = None

    def one(tier: str, row: dict) -> RowResult:
        return evaluate(task, programs[tier], Policy.uniform(predictors, tier), [row], table, names)[0]

    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="record") as pool:
        while True:
            for tier in names if error is None else ():
                while queues[tier] and running[tier] < limits[tier] and len(in_flight) < concurrency:
                    row = queues[tier].popleft()
                    in_flight[pool.submit(one, tier, row)] = tier
                    running[tier] += 1
            if not in_flight:
                break
            finished, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in finished:
                tier = in_flight.pop(future)
                running[tier] -= 1
                if not queues[tier] and not running[tier]:
                    done(tier, [t for t in names if queues[t] or running[t]])
                try:
                    result = future.result()
                except BaseException as e:  # noqa: BLE001 - the first error wins, after the rest land
                    error = error or e
                    continue
                done_rows[tier][result.row_id] = result
                if probe is not None:
                    try:
                        probe.observe(tier, [result])
                    except BaseException as e:  # noqa: BLE001 - stop new calls; those in flight land first
                        error = error or e
                _advance(progress, table)
    if error is not None:
        raise error
    return {tier: [done_rows[tier][str(row["id"])] for row in rows] for tier in names}


def _advance(progress, table) -> None:
    if progress is not None:
        progress.advance(table.budget)
