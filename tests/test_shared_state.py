"""One compile across processes on one PostgreSQL URL, and a call cache shared by replicas (PostgreSQL or
Redis): against real servers started on 127.0.0.1 for this session (tests/db_servers.py)."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time

import pytest

from conftest import PYTHON, ROOT, fake_catalog, answer, last_json_line, run_python
from db_servers import Postgres, Redis, postgres_missing, redis_missing


def _started(missing, server_class):
    """A real server on 127.0.0.1 for the session; skipped, with the reason, when its binaries are missing."""
    reason = missing()
    if reason:
        pytest.skip(reason)
    with server_class() as server:
        yield server


@pytest.fixture(scope="session")
def postgres():
    yield from _started(postgres_missing, Postgres)


@pytest.fixture(scope="session")
def redis_server():
    yield from _started(redis_missing, Redis)


# One optimize worker, as on its own machine: its own working folder, the shared storage URL, scripted tiers
# that take 30 ms a call. Prints its summary.
WORKER = """
import json, sys
sys.path.insert(0, "tests")
from fakes import support_script, write_tiers
from optimizers.live import OptimizeOptions, optimize
from pathlib import Path

folder, storage, trials, limit = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
folder.mkdir(parents=True, exist_ok=True)
script = support_script()
def slow(tier, messages):
    text, confidence = script(tier, messages)
    return f"sleep:0.03:{text}", confidence
options = OptimizeOptions(task="support", tiers=str(write_tiers(folder)), trials=trials, limit=limit,
                          storage=storage, work_dir=folder / ".tierwise", out=str(folder / "a.json"),
                          scripts={"*": slow}, budget_usd=float(sys.argv[5]) if len(sys.argv) > 5 else None)
print(json.dumps(optimize(options)))
"""

ROWS, TRIALS = 30, 60
FULL_MATRIX = ROWS * 2 * 2  # rows x predictors (classify, extract) x tiers (small, big)


def workers(tmp_path, storage: str, n: int, *extra: str) -> list[dict]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([PYTHON, "-c", WORKER, str(tmp_path / f"w{i}"), storage, str(TRIALS), str(ROWS), *extra],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(n)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0] * n, [err[-2000:] for _, err in outs]
    return [last_json_line(out) for out, _ in outs]


def artifact(path):
    body = json.loads(path.read_text())
    return {k: body[k] for k in ("policy", "metrics")}, body["evaluation"]["trials"]


def test_two_workers_on_one_url_pay_what_one_pays(postgres, tmp_path):
    import optuna

    one = workers(tmp_path / "one", postgres.new_database(), 1)[0]
    assert one["paid_calls"] == FULL_MATRIX

    storage = postgres.new_database()
    two = workers(tmp_path / "two", storage, 2)
    # Every cell paid once across the two machines: neither re-paid what the other recorded.
    assert sum(s["paid_calls"] for s in two) == one["paid_calls"]
    assert all(0 < s["paid_calls"] < FULL_MATRIX for s in two)  # both did a share of the work
    # The spend counter is the compile's, read from the database by both.
    assert two[0]["spent_usd_compile"] == pytest.approx(sum(s["spent_usd"] for s in two))
    assert two[1]["spent_usd_compile"] == pytest.approx(two[0]["spent_usd_compile"])
    # One study, exactly --trials complete trials in it, and both chose from all of them, identically.
    (study,) = optuna.get_all_study_summaries(storage.replace("postgresql://", "postgresql+psycopg://"))
    complete = optuna.load_study(study_name=study.study_name,
                                 storage=storage.replace("postgresql://", "postgresql+psycopg://")).get_trials(
        states=[optuna.trial.TrialState.COMPLETE])
    assert len(complete) == TRIALS
    from metrics.report import load_report  # `report STUDY --storage URL` reads the shared study

    assert len(load_report(study.study_name, storage=storage).tables["trials"]) == TRIALS
    assert [s["trials"] for s in two] == [TRIALS, TRIALS]
    first, second = artifact(tmp_path / "two" / "w0" / "a.json"), artifact(tmp_path / "two" / "w1" / "a.json")
    assert first == second
    # A replica loading the artifact with the compile's URL as its cache answers the dev rows it saw for free.
    from fakes import support_rows, support_script
    from pipelines import load

    program = load(tmp_path / "two" / "w0" / "a.json", cache_url=storage, scripts={"*": support_script()})
    dev_id = json.loads((tmp_path / "two" / "w0" / "a.json").read_text())["split"]["dev"][0]
    program(message=next(m for m, row in support_rows().items() if str(row["id"]) == dev_id))
    frame = program.ledger.to_frame()
    assert len(frame) >= 2 and frame["cache_hit"].all() and frame["cost_usd"].sum() == 0.0
    # Nothing landed in the workers' own folders but the ledger: the cache and the outcomes are in the database.
    for worker in ("w0", "w1"):
        assert not (tmp_path / "two" / worker / ".tierwise" / "cache").exists()
        assert not (tmp_path / "two" / worker / ".tierwise" / "outcomes").exists()


def test_the_budget_holds_across_workers(postgres, tmp_path):
    """Three workers with a cap of a third of the matrix's price: together they never pass it."""
    probe = workers(tmp_path / "probe", postgres.new_database(), 1)[0]
    cap = probe["spent_usd"] / 3
    storage = postgres.new_database()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([PYTHON, "-c", WORKER, str(tmp_path / f"b{i}"), storage, str(TRIALS), str(ROWS),
                               str(cap)], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(3)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode != 0 and "budget reached" in err for p, (_, err) in zip(procs, outs)), \
        [err[-500:] for _, err in outs]
    import psycopg

    with psycopg.connect(storage) as db:
        (spent,), = db.execute("SELECT spent FROM tierwise_spend").fetchall()
        left = db.execute("SELECT count(*) FROM tierwise_reservations").fetchone()[0]
    # The workers stop at the first call whose upper-bound price no longer fits beside the others' reservations:
    # together they never pass the cap (each alone, with its own counter, could spend up to it).
    assert 0 < spent / 1e12 <= cap
    assert left == 0  # every reservation settled


def test_reservations_are_atomic_across_threads_and_connections(postgres):
    """Eight threads on two stores race to reserve 10 units under a cap of 35: exactly three win."""
    from pipelines.stores import PostgresStore, SharedSpend

    url = postgres.new_database()
    stores = [PostgresStore(url, "outcomes", "outcome table") for _ in range(2)]
    spends = [SharedSpend(s, "k") for s in stores]
    wins = []
    barrier = threading.Barrier(8)

    def one(i):
        barrier.wait()
        rid, _, _ = spends[i % 2].reserve(10, 35)
        if rid is not None:
            wins.append(i % 2)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(wins) == 3
    # A worker that dies holding reservations (its connection gone) stops holding the cap.
    stores[0].close()
    time.sleep(0.3)  # the server ends the closed session's backend
    stores.append(PostgresStore(url, "outcomes", "outcome table"))
    rid, spent, reserved = SharedSpend(stores[2], "k").reserve(10, 35)
    assert spent == 0 and reserved == 10 * wins.count(1) and rid is not None
    for s in stores[1:]:
        s.close()


CLAIMED_CALL = """
import json, sys, time
sys.path.insert(0, "tests")
from conftest import fake_catalog, answer
from pipelines.cache import CallCache
from pipelines.runtime import Runtime
calls = []
def script(tier, messages):
    calls.append(1)
    time.sleep(0.5)
    return answer(intent="billing")
runtime = Runtime(fake_catalog("small"), cache=CallCache(url=sys.argv[1]), scripts={"*": script})
result = runtime.engine("small").call({"messages": [{"role": "user", "content": "hi"}], "config": {}})
print(json.dumps({"paid": len(calls), "text": result.text}))
"""


@pytest.mark.parametrize("server", ["postgres", "redis_server"])
def test_processes_sharing_a_cache_url_pay_a_call_once(server, request):
    """Three processes ask one uncached call at once through a shared cache: one pays, two wait and reuse it."""
    found = request.getfixturevalue(server)
    url = found.new_database() if server == "postgres" else found.url
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([PYTHON, "-c", CLAIMED_CALL, url], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err[-1000:] for _, err in outs]
    results = [last_json_line(out) for out, _ in outs]
    assert sorted(r["paid"] for r in results) == [0, 0, 1]
    assert {r["text"] for r in results} == {answer(intent="billing")}


@pytest.mark.parametrize("server", ["postgres", "redis_server"])
def test_replicas_share_cached_answers_with_the_disk_cache_keys_and_a_ttl(server, request, tmp_path):
    from pipelines.cache import CallCache
    from pipelines.stores import open_shared

    found = request.getfixturevalue(server)
    url = found.new_database() if server == "postgres" else found.url
    calls = []

    def script(tier, messages):
        calls.append(tier)
        return answer(intent="billing")

    from pipelines.runtime import Runtime

    payload = {"messages": [{"role": "user", "content": "where is my order"}], "config": {"max_tokens": 20}}
    disk = Runtime(fake_catalog("small"), cache=CallCache(tmp_path / "disk"), scripts={"*": script})
    replica_a = Runtime(fake_catalog("small"), cache=CallCache(url=url, ttl_s=1.0), scripts={"*": script})
    replica_b = Runtime(fake_catalog("small"), cache=CallCache(url=url, ttl_s=1.0), scripts={"*": script})
    first = replica_a.engine("small").call(payload)
    again = replica_b.engine("small").call(payload)  # another replica: a hit
    assert len(calls) == 1 and again.text == first.text and again.record.cache_hit
    disk.engine("small").call(payload)
    assert len(calls) == 2
    disk_keys = list(disk.cache.store.iterkeys())
    assert len(disk_keys) == 1 and open_shared(url, "calls", "call cache").get(disk_keys[0]) is not None
    time.sleep(1.2)  # past the TTL: paid again
    replica_b.engine("small").call(payload)
    assert len(calls) == 3
    for runtime in (disk, replica_a, replica_b):
        runtime.close()


def test_redis_lost_mid_run_stops_the_run_instead_of_failing_every_tier():
    """Redis stops between two requests: the next call's cache read is the store's error (StoreError, one
    line), not a tier failure. It was AllRungsFailed naming every tier, after each tier had been asked."""
    from pipelines.cache import CallCache
    from pipelines.errors import StoreError
    from pipelines.runtime import Runtime

    if redis_missing():
        pytest.skip(redis_missing())
    calls = []
    server = Redis().start()
    try:
        runtime = Runtime(fake_catalog("small"), cache=CallCache(url=server.url),
                          scripts={"*": lambda tier, messages: calls.append(tier) or answer(intent="billing")})
        runtime.engine("small").call({"messages": [{"role": "user", "content": "one"}], "config": {}})
    finally:
        server.stop()
    with pytest.raises(StoreError, match=r"redis://127\.0\.0\.1:\d+/0: lost the call cache \("):
        runtime.engine("small").call({"messages": [{"role": "user", "content": "two"}], "config": {}})
    assert calls == ["small"]  # the second request paid nothing


@pytest.mark.parametrize("ttl", [-5, 0, 0.0004, float("nan"), "3600", True])
def test_a_cache_ttl_that_cannot_work_is_refused_when_the_cache_is_made(ttl, tmp_path):
    """0 meant "expire at once" on disk and "never" in Redis; under a millisecond Redis refused the write after
    the call was paid (every tier paid, nothing kept, nothing in the ledger)."""
    from pipelines.cache import CallCache
    from pipelines.errors import ConfigError

    with pytest.raises(ConfigError, match=r"cache_ttl_s must be a number of seconds >= 0\.001"):
        CallCache(tmp_path, ttl_s=ttl)
    assert CallCache(tmp_path, ttl_s=0.001).ttl_s == 0.001


def test_postgres_deletes_expired_rows_when_a_store_opens_and_every_so_many_writes(postgres, monkeypatch):
    from pipelines import stores

    url = postgres.new_database()
    store = stores.PostgresStore(url, "calls", "call cache")
    store.set("gone", {"text": "a"}, expire=0.05)
    store.set("kept", {"text": "b"}, expire=60)
    store.set("forever", {"text": "c"})
    time.sleep(0.1)
    assert store.get("gone") is None  # ignored at once

    def rows(s):
        return sorted(r[0] for r in s.db.execute(f"SELECT key FROM {s.table}").fetchall())

    assert rows(store) == ["forever", "gone", "kept"]
    reopened = stores.PostgresStore(url, "calls", "call cache")  # opening deletes the expired row
    assert rows(reopened) == ["forever", "kept"] and reopened.get("kept") == {"text": "b"}
    monkeypatch.setattr(stores, "PURGE_EVERY", 2)
    reopened.set("brief", {"text": "d"}, expire=0.05)  # write 1
    time.sleep(0.1)
    reopened.set("other", {"text": "e"}, expire=60)  # write 2: purges
    assert rows(reopened) == ["forever", "kept", "other"]


def test_load_reads_the_cache_url_from_the_environment(redis_server, monkeypatch):
    """TIERWISE_CACHE_URL puts a loaded program's cache in Redis, as `load(..., cache_url=)` does."""
    from pipelines.cache import CallCache

    monkeypatch.setenv("TIERWISE_CACHE_URL", redis_server.url)
    cache = CallCache()
    assert cache.url == redis_server.url
    cache.put("k", {"text": "x"})
    assert CallCache(url=redis_server.url).get("k") == {"text": "x"}
    assert not cache.directory.exists()


def test_an_unreachable_storage_url_is_one_named_error():
    from pipelines.errors import StoreError
    from pipelines.stores import PostgresStore
    from db_servers import free_port

    with pytest.raises(StoreError, match=r"127\.0\.0\.1.*cannot open the outcome table"):
        PostgresStore(f"postgresql://u:secret@127.0.0.1:{free_port()}/x", "outcomes", "outcome table")
    try:
        PostgresStore(f"postgresql://u:secret@127.0.0.1:{free_port()}/x", "outcomes", "outcome table")
    except StoreError as e:
        assert "secret" not in str(e)


def test_an_unreachable_study_storage_names_the_url_without_its_password():
    from optimizers.study import _shown, open_study
    from pipelines.errors import TierwiseError
    from db_servers import free_port

    url = f"postgresql+psycopg://u:hunter2@127.0.0.1:{free_port()}/x"
    with pytest.raises(TierwiseError, match=r"postgresql\+psycopg://u@127\.0\.0\.1:\d+/x") as e:
        open_study("s", url, 0)
    assert "hunter2" not in str(e.value)
    assert _shown(url) == url.replace(":hunter2", "")  # also what Optuna's own errors are shown with


HOLD_CLAIM = """
import sys, time
from pipelines.stores import PostgresStore
store = PostgresStore(sys.argv[1], "calls", "call cache")
with store.claim("k"):
    print("held", flush=True)
    time.sleep(600)
"""


def claim_in_thread(store, key: str) -> tuple[threading.Event, threading.Thread]:
    """An event set once a background thread holds `store`'s claim on `key`, and that thread: join it before
    closing the store (it releases the claim through the store's connection)."""
    got = threading.Event()

    def take():
        with store.claim(key):
            got.set()

    thread = threading.Thread(target=take, daemon=True)
    thread.start()
    return got, thread


def test_a_killed_workers_claim_is_released(postgres):
    """kill -9 of a worker paying a call: the server ends its session and its claim with it; the next worker
    gets the claim at once instead of waiting forever."""
    import signal

    from pipelines.stores import PostgresStore

    url = postgres.new_database()
    holder = subprocess.Popen([PYTHON, "-c", HOLD_CLAIM, url], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    store = PostgresStore(url, "calls", "call cache")
    got, taker = claim_in_thread(store, "k")
    assert not got.wait(1.0)  # held by the other process
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert got.wait(10.0)
    taker.join(10.0)
    store.close()


HOLD_REDIS_CLAIM = """
import sys, time
from pipelines.stores import RedisStore
store = RedisStore(sys.argv[1], "calls", "call cache", lease_s=0.6)
with store.claim("k"):
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_redis_claim_outlives_its_lease_while_held_and_frees_soon_after_its_holder_dies(redis_server):
    """A holder slower than the lease keeps its claim (the call is not paid twice); kill -9 of the holder
    frees it within about one lease instead of a fixed two minutes."""
    import signal

    from pipelines.stores import RedisStore

    holder = subprocess.Popen([PYTHON, "-c", HOLD_REDIS_CLAIM, redis_server.url], cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    store = RedisStore(redis_server.url, "calls", "call cache", lease_s=0.6)
    got, taker = claim_in_thread(store, "k")
    assert not got.wait(2.0)  # over three leases: the living holder keeps renewing
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    killed = time.monotonic()
    assert got.wait(5.0)
    assert time.monotonic() - killed < 1.5
    taker.join(10.0)
    store.close()


# --- a spend cap shared by production replicas (load(..., budget_url=...)) ----------------------------

# One production replica: loads the artifact with the shared cap, serves its messages on 2 threads, prints what
# it paid (its ledger) and how many requests the cap refused.
REPLICA = """
import json, sys
sys.path.insert(0, "tests")
from concurrent.futures import ThreadPoolExecutor
from fakes import support_script
from pipelines import load
from pipelines.cache import CallCache
from pipelines.errors import BudgetExceeded
from pipelines.ledger import Ledger

path, cache_dir, url, cap, messages = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), json.loads(sys.argv[5])
ledger = Ledger()
program = load(path, cache=CallCache(cache_dir), ledger=ledger, scripts={"*": support_script()}, budget_usd=cap,
               budget_url=url, budget_key="support-prod")

def one(message):
    try:
        program(message=message)
        return 0
    except BudgetExceeded:
        return 1

with ThreadPoolExecutor(2) as pool:
    refused = sum(pool.map(one, messages))
print(json.dumps({"paid": ledger.paid_usd, "calls": program.spend_cap.paid_calls, "refused": refused}))
"""


@pytest.mark.parametrize("server", ["postgres", "redis_server"])
def test_replicas_sharing_a_budget_url_hold_one_cap_together(server, request, tmp_path):
    """Two replicas, each with its own disk cache and its own requests: alone each would pay up to the cap; with
    one budget_url and budget_key they pay at most the cap together, and the server's counter is what they paid."""
    from test_artifact import compile_support, sample_messages

    from pipelines.spend_cap import SharedSpendCap

    found = request.getfixturevalue(server)
    url = found.new_database() if server == "postgres" else found.url
    from fakes import support_script

    from pipelines import load
    from pipelines.cache import CallCache
    from pipelines.ledger import Ledger

    path = compile_support(tmp_path)
    messages = sample_messages(24)
    uncapped = load(path, cache=CallCache(tmp_path / "uncapped"), ledger=Ledger(), scripts={"*": support_script()})
    for message in messages:
        uncapped(message=message)
    total = uncapped.runtime.ledger.paid_usd  # what the replicas' requests cost together, uncapped
    # A call reserves its upper bound (every input byte a token, every allowed output token: many times its real
    # price); beyond one such bound the cap leaves 60% of what both replicas' requests cost: together they cannot
    # all be served.
    cap = load_catalog_bound(tmp_path, messages[0]) + 0.6 * total
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([PYTHON, "-c", REPLICA, str(path), str(tmp_path / f"cache{i}"), url, str(cap),
                               json.dumps(messages[i::2])], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-1500:] for _, err in outs]
    results = [last_json_line(out) for out, _ in outs]
    paid = sum(r["paid"] for r in results)
    assert 0 < paid <= cap + 1e-12 and sum(r["refused"] for r in results) >= 1, results
    assert all(r["calls"] >= 1 for r in results), results  # both replicas paid for some calls
    counter = SharedSpendCap(cap, url, "support-prod")
    assert counter.spent_usd == pytest.approx(paid, abs=1e-9)
    assert SharedSpendCap(cap, url, "another-program").spent_usd == 0.0  # a cap is its key's
    default = load(path, cache=CallCache(tmp_path / "d"), budget_usd=cap, budget_url=url,
                   scripts={"*": support_script()}).spend_cap
    assert default.key.startswith("support.tierwise.json:") and len(default.key) > len("support.tierwise.json:")
    counter.close()


def load_catalog_bound(tmp_path, message: str) -> float:
    """The fake flagship's upper-bound price of one request (what a call reserves)."""
    from fakes import write_tiers

    from pipelines.tiers import load_catalog

    return load_catalog(write_tiers(tmp_path)).flagship.cost_bound({"messages": [{"content": message * 4}]})


@pytest.mark.parametrize("server", ["postgres", "redis_server"])
def test_a_shared_cap_per_day_starts_again_each_day(server, request, monkeypatch):
    from pipelines.errors import BudgetExceeded
    from pipelines.spend_cap import SharedSpendCap

    found = request.getfixturevalue(server)
    url = found.new_database() if server == "postgres" else found.url
    tier = fake_catalog("small")["small"]
    payload = {"messages": [{"content": "x" * 400}]}
    bound = tier.cost_bound(payload)
    cap = SharedSpendCap(bound * 1.5, url, "daily-test", period="day")
    monkeypatch.setattr(cap, "window", lambda: "2026-12-01")
    cap.reserve(tier, payload)(bound)
    with pytest.raises(BudgetExceeded, match=r"budget_key 'daily-test' \(day 2026-12-01 UTC\) have spent \$.*; the "
                                             r"cap starts again with the next day"):
        cap.reserve(tier, payload)
    monkeypatch.setattr(cap, "window", lambda: "2026-12-02")
    cap.reserve(tier, payload)(bound / 2)  # a new day, a new counter
    assert cap.spent_usd == pytest.approx(bound / 2) and cap.paid_calls == 2
    cap.closed = True  # as `run` closes a cap at its first refusal: only cached answers from then on (it was ignored)
    with pytest.raises(BudgetExceeded, match=r"budget_usd reached earlier: only cached answers are served now"):
        cap.reserve(tier, payload)
    assert cap.in_flight == 0 and cap.spent_usd == pytest.approx(bound / 2)
    if server == "redis_server":  # a day's counter does not outlive its use by more than a few days
        import redis

        ttl = redis.Redis.from_url(url).pttl("tierwise:spend:daily-test:2026-12-02")
        assert 0 < ttl <= 3 * 86400 * 1000
    cap.close()


def test_a_replica_killed_mid_call_stops_holding_the_redis_cap_after_its_lease(redis_server):
    from pipelines.stores import RedisSpend, open_shared

    store = open_shared(redis_server.url, "calls", "spend cap")
    dead = RedisSpend(store, "lease-test", lease_s=0.3)
    rid, spent, reserved = dead.reserve(900, 1000)  # reserved, never settled: its replica died
    assert rid is not None and (spent, reserved) == (0, 0)
    assert dead.reserve(200, 1000)[0] is None  # 900 held + 200 would pass 1000
    time.sleep(0.4)
    rid, spent, reserved = dead.reserve(200, 1000)
    assert rid is not None and reserved == 0
    dead.settle(rid, 150)
    assert dead.spent() == 150
    store.close()


def test_budget_sharing_options_are_checked_before_any_call(tmp_path):
    from test_artifact import compile_support

    from pipelines import load
    from pipelines.cache import CallCache
    from pipelines.errors import ConfigError

    path = compile_support(tmp_path)
    for options, match in (
        ({"budget_url": "redis://127.0.0.1:1/0"}, r"budget_url given without budget_usd: no cap to share"),
        ({"budget_usd": 1, "budget_key": "x"}, r"budget_key and budget_period name a cap shared through budget_url"),
        ({"budget_usd": 1, "budget_url": "redis://127.0.0.1:1/0", "budget_period": "week"},
         r"budget_period must be one of day, month \(or None\), got 'week'"),
        ({"budget_usd": 1, "budget_url": "redis://127.0.0.1:1/0", "budget_key": " "}, r"budget_key must be a non-empty"),
        ({"budget_usd": 1, "budget_url": "mysql://u:secret@h/db"}, r"budget_url 'mysql://u@h/db': unknown store scheme"),
        ({"budget_usd": 1, "budget_url": "redis://127.0.0.1:6390/abc"}, r"the Redis database 'abc' is not a number"),
    ):
        with pytest.raises(ConfigError, match=match):
            load(path, cache=CallCache(tmp_path / "c"), **options)


def test_a_postgresql_spend_cap_reconnects_after_its_connection_is_dropped(postgres):
    """A server restart or failover ends the connection: that operation fails with one line, the next one opens a
    fresh connection (every later call failed with 'the connection is lost' until the process restarted)."""
    import psycopg

    from pipelines.errors import StoreError
    from pipelines.spend_cap import SharedSpendCap

    url = postgres.new_database()
    tier = fake_catalog("small")["small"]
    payload = {"messages": [{"content": "x" * 100}]}
    cap = SharedSpendCap(1.0, url, "restart-test")
    cap.reserve(tier, payload)(0.25)
    with psycopg.connect(url, autocommit=True) as admin:  # what `pg_ctl restart` does to every session
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
                      "AND datname = current_database()")
    with pytest.raises(StoreError, match="lost the spend cap"):
        cap.spent_usd
    cap.reserve(tier, payload)(0.25)  # reconnected
    assert cap.spent_usd == pytest.approx(0.5)
    cap.close()


def test_a_redis_that_accepts_and_never_answers_fails_within_its_timeout(monkeypatch):
    """A server that takes the connection and never replies (or is paused) hung load() and every request."""
    import socket

    from pipelines import stores
    from pipelines.errors import StoreError

    monkeypatch.setattr(stores, "REDIS_TIMEOUT_S", 0.5)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)
    started = time.monotonic()
    with pytest.raises(StoreError, match=r"cannot open the call cache \(Timeout"):
        stores.open_shared(f"redis://127.0.0.1:{silent.getsockname()[1]}/0", "calls", "call cache")
    assert time.monotonic() - started < 5
    silent.close()
