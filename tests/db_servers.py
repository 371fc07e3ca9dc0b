"""Real PostgreSQL and Redis servers on 127.0.0.1 for tests and benchmarks: a temporary data folder, a free
port, stopped (and the folder removed) after. Never a system service.

PostgreSQL refuses to run as root: as root, the server runs as an unprivileged user (`tierwise-test`,
created if missing) that owns the data folder.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

def _pg_bin() -> Path:
    """TIERWISE_PG_BIN, else the newest /usr/lib/postgresql/<version>/bin (Debian's layout)."""
    if os.environ.get("TIERWISE_PG_BIN"):
        return Path(os.environ["TIERWISE_PG_BIN"])
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    return found[-1].parent if found else Path("/usr/lib/postgresql/15/bin")


PG_BIN = _pg_bin()
PG_USER = "tierwise-test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postgres_missing() -> str | None:
    """Why PostgreSQL cannot be started here, or None."""
    if not (PG_BIN / "initdb").exists() or not (PG_BIN / "pg_ctl").exists():
        return f"PostgreSQL server binaries not found in {PG_BIN} (apt-get install postgresql; or set TIERWISE_PG_BIN)"
    return None


def redis_missing() -> str | None:
    return None if shutil.which("redis-server") else "redis-server not found on PATH (apt-get install redis-server)"


def _as_user() -> list[str]:
    """The command prefix that runs the server as a non-root user (nothing when not root)."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam(PG_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_USER],
                       check=True, capture_output=True)
    return ["runuser", "-u", PG_USER, "--"]


class Postgres:
    """`with Postgres() as pg: pg.new_database()` -> a URL of a fresh, empty database."""

    def __init__(self):
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="tierwise-pg-"))
        self.data = self.dir / "data"
        self.prefix = _as_user()

    def _run(self, *args, **kwargs):
        return subprocess.run([*self.prefix, *map(str, args)], check=True, capture_output=True, text=True, **kwargs)

    def start(self) -> "Postgres":
        if self.prefix:
            shutil.chown(self.dir, PG_USER)
            os.chmod(self.dir, 0o700)
        self._run(PG_BIN / "initdb", "-D", self.data, "-U", "postgres", "--auth=trust", "-E", "UTF8",
                  "--no-sync")
        options = f"-h 127.0.0.1 -p {self.port} -k {self.dir} -c fsync=off -c max_connections=200"
        self._run(PG_BIN / "pg_ctl", "-D", self.data, "-l", self.dir / "log", "-o", options, "-w", "start")
        return self

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def new_database(self) -> str:
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url, autocommit=True) as db:
            db.execute(f"CREATE DATABASE {name}")
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        try:
            self._run(PG_BIN / "pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class Redis:
    def __init__(self):
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="tierwise-redis-"))
        self.proc = None

    def start(self) -> "Redis":
        self.proc = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--dir",
                                      str(self.dir), "--save", "", "--appendonly", "no"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not listen on 127.0.0.1:{self.port}")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
