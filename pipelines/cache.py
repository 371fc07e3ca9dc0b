"""Disk cache of LM calls (diskcache), shared safely by threads and processes, with optional TTL.

The key holds the tier's identity (model and generation settings) as well as the request: dspy's
own cache key ignores the engine, so two tiers with one model string would share answers.
A per-key lock spanning processes makes a second process wait for, then reuse, a call the first is
already paying for, instead of paying it again. The lock is an fcntl file lock, which the OS drops
when its holder dies: a killed run never leaves a claim behind that would block the rerun.

With a `url` (or TIERWISE_CACHE_URL) the same keys and values live in a shared server instead
(pipelines.stores: PostgreSQL or Redis), so compile workers and production replicas share answers.
"""

from __future__ import annotations

import hashlib
import fcntl
import json
import os
import sqlite3
from contextlib import contextmanager
from pathlib import Path

import diskcache

from pipelines import paths
from pipelines.errors import ConfigError, StoreError
from pipelines.tiers import is_number


def default_cache_dir() -> Path:
    return paths.cache_dir()


CALL_CACHE_RECOVERY = ("Kept: the recorded outcomes (.tierwise/outcomes) and the studies. To recover, move the folder "
                       "aside and rerun: the cache starts empty, and only calls not yet recorded as outcomes are "
                       "paid again")


class GuardedStore(diskcache.Cache):
    """A diskcache store whose reads and writes report damage found mid-run as a StoreError (what, where,
    how to recover) instead of a SQLite traceback."""

    what, recovery = "store", ""

    def _guarded(self, method, *args, **kwargs):
        try:
            return method(*args, **kwargs)
        except sqlite3.DatabaseError as e:
            raise StoreError(store_problem(self.directory, self.what, self.recovery, e)) from None

    def get(self, *args, **kwargs):
        return self._guarded(super().get, *args, **kwargs)

    def set(self, *args, **kwargs):
        return self._guarded(super().set, *args, **kwargs)

    def incr(self, *args, **kwargs):
        return self._guarded(super().incr, *args, **kwargs)


def store_problem(directory, what: str, recovery: str, error: sqlite3.DatabaseError) -> str:
    """SQLite says "corrupted" and "cannot write" in the same exception class: a store on a full disk or a
    read-only folder is not damaged, and moving it aside (the recovery for damage) would throw good answers away."""
    text = str(error)
    if "disk is full" in text:
        return f"{directory}: the {what} cannot grow: the disk is full ({text}); free space and rerun (nothing is lost)"
    if "readonly" in text or "read-only" in text or "unable to open" in text and not os.access(directory, os.W_OK):
        return f"{directory}: the {what} cannot be written ({text}): the folder is read-only for this process; " \
               "give a writable folder (TIERWISE_CACHE_DIR) or make this one writable"
    return f"{directory}: the {what} is corrupted ({text}). {recovery}"


def open_store(directory: str | Path, what: str, recovery: str, **settings) -> GuardedStore:
    """A diskcache store; a corrupted or unopenable one is a StoreError naming the folder and how to recover,
    not a SQLite traceback."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        store = GuardedStore(str(directory), **settings)
    except sqlite3.DatabaseError as e:
        raise StoreError(store_problem(directory, what, recovery, e)) from None
    except OSError as e:
        raise StoreError(f"{directory}: cannot open the {what} ({e.strerror or e})") from None
    store.what, store.recovery = what, recovery
    return store


def call_key(tier_identity: str, payload: dict) -> str:
    blob = json.dumps({"tier": tier_identity, "request": payload}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def check_ttl(ttl_s):
    """None (answers kept until evicted) or a number of seconds of at least a millisecond: 0 meant "expire
    at once" on disk and "never" in Redis and PostgreSQL, and under a millisecond Redis refuses the write
    after the call was paid."""
    if ttl_s is None:
        return None
    if not is_number(ttl_s) or ttl_s < 0.001:
        raise ConfigError(f"cache_ttl_s must be a number of seconds >= 0.001 (or None: kept until evicted), "
                          f"got {ttl_s!r}")
    return float(ttl_s)


class CallCache:
    """get/put of JSON-able responses by key. `enabled=False` turns caching off entirely."""

    def __init__(self, directory: str | Path | None = None, ttl_s: float | None = None, enabled: bool = True,
                 url: str | None = None):
        self.directory = Path(directory) if directory else default_cache_dir()
        self.url = url if url is not None else (os.environ.get("TIERWISE_CACHE_URL") or None)
        if self.url:  # a URL that cannot work fails here, not inside every tier's call
            from pipelines.stores import check_url

            check_url(self.url, "call cache", "cache_url" if url is not None else "TIERWISE_CACHE_URL")
        self.ttl_s = check_ttl(ttl_s)
        self.enabled = enabled
        self._store = None

    @property
    def store(self):
        if self._store is None:  # lazily, so a disabled or unused cache creates no folder or connection
            if self.url:
                from pipelines.stores import open_shared

                self._store = open_shared(self.url, "calls", "call cache")
            else:
                self._store = open_store(self.directory, "call cache", CALL_CACHE_RECOVERY, timeout=60,
                                         size_limit=2**34)
        return self._store

    def get(self, key: str):
        if not self.enabled:
            return None
        return self.store.get(key)

    def put(self, key: str, value) -> None:
        if self.enabled:
            self.store.set(key, value, expire=self.ttl_s)

    @contextmanager
    def claim(self, key: str):
        """Hold the right to compute `key` across processes; others wait until it is stored."""
        if not self.enabled:
            yield
            return
        if self.url:
            with self.store.claim(key):
                yield
            return
        # One lock file per bucket of keys (4096 buckets): flock conflicts between processes and
        # between threads (each opens its own file description), and dies with its holder.
        folder = self.directory / "claims"
        folder.mkdir(parents=True, exist_ok=True)
        bucket = hashlib.sha256(key.encode()).hexdigest()[:3]
        fd = os.open(folder / f"{bucket}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
