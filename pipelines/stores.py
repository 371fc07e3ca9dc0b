"""Shared stores behind one URL: the call cache, the outcome table and the spend counter in PostgreSQL, or
the call cache in Redis, so that workers on several machines join one compile and replicas share answers.

Each store has the disk store's surface (`get`, `set(key, value, expire=)`, `claim(key)`, `close`), so
CallCache and OutcomeTable keep one code path. Values are JSON text: the same keys (pipelines.cache.call_key)
and the same values as the disk cache.

psycopg 3 rather than SQLAlchemy for these stores: a claim is a session-level advisory lock held for the
length of a paid call on a connection of its own, and the server drops it when its holder dies (kill -9
included), as the OS drops the disk cache's flock. That wants plain connections we own, not a pool that
hands a session back mid-lock. Optuna keeps SQLAlchemy (`optuna_url` names the psycopg driver for it).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
import uuid
from contextlib import contextmanager
from urllib.parse import urlsplit

from pipelines.errors import ConfigError, StoreError

SQL_SCHEMES = ("postgresql://", "postgres://", "postgresql+psycopg://")
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def is_sql_url(url) -> bool:
    return isinstance(url, str) and url.startswith(SQL_SCHEMES)


def is_shared_url(url) -> bool:
    return isinstance(url, str) and (url.startswith(SQL_SCHEMES) or url.startswith(REDIS_SCHEMES))


def optuna_url(url: str) -> str:
    """A PostgreSQL URL as SQLAlchemy needs it to load psycopg 3 (its default driver is psycopg2)."""
    for scheme in ("postgresql://", "postgres://"):
        if url.startswith(scheme):
            return "postgresql+psycopg://" + url[len(scheme):]
    return url


def _conninfo(url: str) -> str:
    return "postgresql://" + url.split("://", 1)[1]


def _lock_id(text: str) -> int:
    """A signed 64-bit advisory-lock id for a key."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big", signed=True)


def check_url(url: str, what: str, named: str = "") -> None:
    """Refuse, before any connection or call, a store URL that cannot work: an unknown scheme, a port
    that is not a number. `named`: where the URL came from (TIERWISE_CACHE_URL), for the message."""
    where = f"{named} {redact(url)!r}" if named else repr(redact(url))
    if not url.startswith(SQL_SCHEMES + REDIS_SCHEMES):
        raise ConfigError(f"{where}: unknown store scheme for the {what}; use postgresql://... or redis://...")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsed only when read
    except ValueError:
        raise ConfigError(f"{where}: the port is not a number") from None
    database = parts.path.strip("/")
    if url.startswith(("redis://", "rediss://")) and database and not database.isdigit():
        raise ConfigError(f"{where}: the Redis database {database!r} is not a number (redis://host:6379/0)")


def open_shared(url: str, table: str, what: str):
    """The store at `url` for one kind of state (`table`: calls, outcomes)."""
    check_url(url, what)
    try:
        if is_sql_url(url):
            return PostgresStore(url, table, what)
        return RedisStore(url, table, what)
    except ImportError as e:
        raise ConfigError(f"{redact(url)}: the {what} needs the {e.name} package (pip install "
                          "'tierwise[shared]')") from None


PURGE_EVERY = 1000  # writes between two deletions of expired rows (PostgresStore)


class PostgresStore:
    """A key-value table in PostgreSQL. One connection for reads and writes (psycopg serializes its use
    across threads), one per thread for claims (a session lock is reentrant within its session, so threads
    sharing one would not exclude each other)."""

    def __init__(self, url: str, table: str, what: str):
        import psycopg

        self.url, self.table, self.what = url, f"tierwise_{table}", what
        self._psycopg = psycopg
        self._local = threading.local()
        self._lock = threading.Lock()
        self.db = self._connect()
        with self._lock:
            # Concurrent first runs race on CREATE TABLE IF NOT EXISTS (a pg_type unique violation): serialize.
            self.db.execute("SELECT pg_advisory_lock(%s)", (_lock_id("tierwise-schema"),))
            try:
                self.db.execute(f"CREATE TABLE IF NOT EXISTS {self.table} (key text PRIMARY KEY, value text NOT NULL,"
                                " expires_at double precision)")
                self.db.execute("CREATE TABLE IF NOT EXISTS tierwise_spend (key text PRIMARY KEY,"
                                " spent bigint NOT NULL DEFAULT 0)")
                self.db.execute("CREATE TABLE IF NOT EXISTS tierwise_reservations (id bigserial PRIMARY KEY,"
                                " key text NOT NULL, amount bigint NOT NULL, owner text NOT NULL)")
            finally:
                self.db.execute("SELECT pg_advisory_unlock(%s)", (_lock_id("tierwise-schema"),))
        self._writes = 0
        self.purge_expired()

    def purge_expired(self) -> int:
        """Delete the rows whose TTL has passed (get already ignores them; this keeps the table from growing
        for ever). Runs when a store opens and every PURGE_EVERY writes; returns the number deleted."""
        with self._reachable(), self._lock:
            cursor = self.db.execute(f"DELETE FROM {self.table} WHERE expires_at IS NOT NULL AND expires_at < %s",
                                     (time.time(),))
        return cursor.rowcount

    def _connect(self):
        try:
            return self._psycopg.connect(_conninfo(self.url), autocommit=True, connect_timeout=10)
        except self._psycopg.OperationalError as e:
            raise StoreError(f"{redact(self.url)}: cannot open the {self.what} ({_first_line(e)})") from None

    @contextmanager
    def _reachable(self):
        """A server gone mid-run is one line naming the URL, not a driver traceback (everything stored so
        far stays in the database)."""
        if self.db.closed:  # lost earlier (a server restart, a failover): this operation reconnects
            with self._lock:
                if self.db.closed:
                    self.db = self._connect()
        try:
            yield
        except self._psycopg.OperationalError as e:
            if not self.db.closed and self.db.broken:
                self.db.close()  # the next operation opens a fresh connection
            raise StoreError(f"{redact(self.url)}: lost the {self.what} ({_first_line(e)})") from None

    def get(self, key: str, default=None):
        with self._reachable(), self._lock:
            row = self.db.execute(f"SELECT value, expires_at FROM {self.table} WHERE key = %s", (key,)).fetchone()
        if row is None or (row[1] is not None and row[1] < time.time()):
            return default
        return json.loads(row[0])

    def set(self, key: str, value, expire: float | None = None) -> None:
        expires_at = time.time() + expire if expire else None
        with self._reachable(), self._lock:
            self.db.execute(f"INSERT INTO {self.table} (key, value, expires_at) VALUES (%s, %s, %s) ON CONFLICT (key)"
                            " DO UPDATE SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at",
                            (key, json.dumps(value), expires_at))
            self._writes += 1
        if expire and self._writes % PURGE_EVERY == 0:
            self.purge_expired()

    @contextmanager
    def claim(self, key: str):
        """Hold the right to compute `key` across every process on this database; the server releases it
        when the holder's connection ends, so a killed worker never blocks the others."""
        db = getattr(self._local, "claims", None)
        if db is None or db.closed:
            db = self._local.claims = self._connect()
        lock = _lock_id(f"{self.table}|{key}")
        with self._reachable():
            db.execute("SELECT pg_advisory_lock(%s)", (lock,))
        try:
            yield
        finally:
            db.execute("SELECT pg_advisory_unlock(%s)", (lock,))

    def close(self) -> None:
        with self._lock:
            self.db.close()
        claims = getattr(self._local, "claims", None)
        if claims is not None:
            claims.close()


class SharedSpend:
    """The compile's spend counter in PostgreSQL, shared by every worker: `reserve` is one transaction
    that locks the counter row, so two workers cannot both fit under the cap with one slot left.

    A reservation belongs to this process's connection (its `owner`); reservations of owners whose
    connection is gone (a killed worker) are dropped before counting, so they never hold the cap."""

    def __init__(self, store: PostgresStore, key: str):
        self.store, self.key = store, key
        self.tag = f"|{uuid.uuid4().hex}"  # after the connection's pid (the server's, read per reservation)
        with store._reachable(), store._lock:
            store.db.execute("INSERT INTO tierwise_spend (key) VALUES (%s) ON CONFLICT DO NOTHING", (key,))

    @contextmanager
    def _transaction(self):
        """One transaction on the store's connection as it is now (reopened after a server restart)."""
        with self.store._reachable(), self.store._lock:
            db = self.store.db
            with db.transaction():
                yield db

    def spent(self) -> int:
        with self.store._reachable(), self.store._lock:
            return self.store.db.execute("SELECT spent FROM tierwise_spend WHERE key = %s", (self.key,)).fetchone()[0]

    def reserve(self, amount: int, cap: int | None) -> tuple[int | None, int, int]:
        """(reservation id or None when it would pass `cap`, spent, reserved by calls in flight)."""
        with self._transaction() as db:
            spent = db.execute("SELECT spent FROM tierwise_spend WHERE key = %s FOR UPDATE", (self.key,)).fetchone()[0]
            db.execute("DELETE FROM tierwise_reservations r WHERE key = %s AND NOT EXISTS (SELECT 1 FROM "
                       "pg_stat_activity a WHERE a.pid = split_part(r.owner, '|', 1)::int)", (self.key,))
            reserved = db.execute("SELECT coalesce(sum(amount), 0) FROM tierwise_reservations WHERE key = %s",
                                  (self.key,)).fetchone()[0]
            if cap is not None and spent + reserved + amount > cap:
                return None, spent, int(reserved)
            rid = db.execute("INSERT INTO tierwise_reservations (key, amount, owner) VALUES (%s, %s, "
                             "pg_backend_pid()::text || %s) RETURNING id", (self.key, amount, self.tag)).fetchone()[0]
        return rid, spent, int(reserved)

    def settle(self, rid: int, cost: int) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM tierwise_reservations WHERE id = %s", (rid,))
            if cost:
                db.execute("UPDATE tierwise_spend SET spent = spent + %s WHERE key = %s", (cost, self.key))


REDIS_TIMEOUT_S = 10.0


class RedisStore:
    """The call cache in Redis, for production replicas: values as JSON text with the TTL as Redis's own
    expiry; a claim is SET NX with a short lease that the holder renews while it works, so a call slower
    than the lease keeps its claim (never paid twice) and a holder that dies frees it within `lease_s`."""

    def __init__(self, url: str, table: str, what: str, lease_s: float = 10.0):
        import redis

        self.url, self.prefix, self.what, self.lease_s = url, f"tierwise:{table}:", what, lease_s
        self._redis = redis
        # A read timeout too: a server that accepts and never answers (or is paused) must fail, not hang a request.
        self.db = redis.Redis.from_url(url, socket_connect_timeout=10, socket_timeout=REDIS_TIMEOUT_S)
        try:
            self.db.ping()
        except redis.RedisError as e:
            raise StoreError(f"{redact(url)}: cannot open the {what} ({e})") from None

    @contextmanager
    def _reached(self):
        """Redis lost mid-run is the store's failure, not the tier's: the run stops (a StoreError), where
        a cascade would have read it as every tier failing (and paid each one)."""
        try:
            yield
        except self._redis.RedisError as e:
            raise StoreError(f"{redact(self.url)}: lost the {self.what} ({_first_line(e)})") from None

    def get(self, key: str, default=None):
        with self._reached():
            raw = self.db.get(self.prefix + key)
        return default if raw is None else json.loads(raw)

    def set(self, key: str, value, expire: float | None = None) -> None:
        with self._reached():
            self.db.set(self.prefix + key, json.dumps(value), px=int(expire * 1000) if expire else None)

    @contextmanager
    def claim(self, key: str):
        name, token = f"{self.prefix}claim:{key}", uuid.uuid4().hex
        lease_ms = max(int(self.lease_s * 1000), 1)
        while True:
            with self._reached():
                if self.db.set(name, token, nx=True, px=lease_ms):
                    break
            time.sleep(0.02)
        done = threading.Event()

        def renew():  # only while the claim is still ours
            while not done.wait(self.lease_s / 3):
                try:
                    self.db.eval("if redis.call('get', KEYS[1]) == ARGV[1] then "
                                 "return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0", 1, name, token, lease_ms)
                except self._redis.RedisError:
                    return  # Redis is gone: the holder's own calls will say so; the lease lapses

        renewer = threading.Thread(target=renew, name=f"tierwise-claim-{key[:12]}", daemon=True)
        renewer.start()
        try:
            yield
        finally:
            done.set()
            renewer.join()
            # Release only our own claim (one that expired and was taken over is the new holder's).
            with self._reached():
                self.db.eval("if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) "
                             "end return 0", 1, name, token)

    def close(self) -> None:
        self.db.close()


class RedisSpend:
    """A spend counter in Redis shared by production replicas (pipelines.spend_cap.SharedSpendCap), with the
    surface of SharedSpend: `reserve` is one script, atomic on the server, so two replicas cannot both fit
    under the cap with one slot left. A reservation is a lease on the server's clock (a replica killed
    mid-call stops holding the cap after `lease_s`); `expire_s` lets a period's counter go once it is over."""

    RESERVE = """
    local now = redis.call('TIME')
    local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
    for _, rid in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now_ms)) do
        redis.call('HDEL', KEYS[2], rid)
        redis.call('ZREM', KEYS[3], rid)
    end
    local spent = tonumber(redis.call('GET', KEYS[1]) or '0')
    local reserved = 0
    for _, amount in ipairs(redis.call('HVALS', KEYS[2])) do reserved = reserved + tonumber(amount) end
    local amount, cap = tonumber(ARGV[1]), tonumber(ARGV[2])
    if cap >= 0 and spent + reserved + amount > cap then return {0, tostring(spent), tostring(reserved)} end
    redis.call('HSET', KEYS[2], ARGV[3], ARGV[1])
    redis.call('ZADD', KEYS[3], now_ms + tonumber(ARGV[4]), ARGV[3])
    if tonumber(ARGV[5]) > 0 then
        for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ARGV[5]) end
    end
    return {1, tostring(spent), tostring(reserved)}
    """
    SETTLE = """
    redis.call('HDEL', KEYS[2], ARGV[1])
    redis.call('ZREM', KEYS[3], ARGV[1])
    if tonumber(ARGV[2]) > 0 then
        redis.call('INCRBY', KEYS[1], ARGV[2])
        if tonumber(ARGV[3]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
    end
    return 1
    """

    def __init__(self, store: RedisStore, key: str, lease_s: float, expire_s: float | None = None):
        self.store, self.lease_ms = store, int(lease_s * 1000)
        self.expire_ms = int(expire_s * 1000) if expire_s else 0
        base = f"tierwise:spend:{key}"
        self.keys = [base, f"{base}:reserved", f"{base}:leases"]

    def spent(self) -> int:
        with self.store._reached():
            return int(self.store.db.get(self.keys[0]) or 0)

    def reserve(self, amount: int, cap: int | None) -> tuple[str | None, int, int]:
        """(reservation id or None when it would pass `cap`, spent, reserved by calls in flight)."""
        rid = uuid.uuid4().hex
        with self.store._reached():
            ok, spent, reserved = self.store.db.eval(self.RESERVE, 3, *self.keys, amount,
                                                     -1 if cap is None else cap, rid, self.lease_ms, self.expire_ms)
        return (rid if ok else None), int(float(spent)), int(float(reserved))

    def settle(self, rid: str, cost: int) -> None:
        with self.store._reached():
            self.store.db.eval(self.SETTLE, 3, *self.keys, rid, cost, self.expire_ms)


def _first_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


_QUERY_SECRET = re.compile(r"([?&](?:password|passwd|pwd|pass|secret|token|api_?key)=)[^&\s'\"]+", re.I)
_USERINFO_PASSWORD = re.compile(r"(://[^\s:/@'\"]*):[^\s@'\"]+@")


def redact(url: str) -> str:
    """The URL without its password, for messages: the user-info's (`user:pw@`, also with no scheme or
    a mistyped one) and a query's (`?password=...`)."""
    url = _QUERY_SECRET.sub(r"\1***", url)
    head, at, host = url.rpartition("@")
    if not at:
        return url
    scheme, sep, userinfo = head.rpartition("//")
    return f"{scheme}{sep}{userinfo.split(':')[0]}{at}{host}"


def redact_text(text: str) -> str:
    """Any URL's password in a message (a driver's error may quote its URL whole)."""
    return _QUERY_SECRET.sub(r"\1***", _USERINFO_PASSWORD.sub(r"\1@", text))
