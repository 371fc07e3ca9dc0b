"""Local model files: assembled from data-package chunks into $TIERWISE_MODEL_DIR, SHA-256 verified,
rebuilt when corrupted or truncated, refused when the packages' bytes are wrong. Uses a small fake
model in tmp packages: the real model cache (~/.cache/tierwise) is never touched."""

from __future__ import annotations

import hashlib
import importlib
import os
import threading
import uuid

import pytest

from pipelines import local
from pipelines.errors import MissingExtraError, ModelFileError

CHUNKS = [b"GGUF" + bytes(range(256)) * 40, bytes(reversed(range(256))) * 33, b"tail-bytes" * 77]
TRUE_BYTES = b"".join(CHUNKS)


@pytest.fixture
def fake_model(tmp_path, monkeypatch):
    """A LocalModel over three chunk packages in a tmp dir on sys.path, with its true SHA-256."""
    monkeypatch.setenv("TIERWISE_MODEL_DIR", str(tmp_path / "models"))
    site = tmp_path / "site"
    prefix = f"tw_fake_{uuid.uuid4().hex[:8]}_part"
    for n, chunk in enumerate(CHUNKS, 1):
        data = site / f"{prefix}{n}" / "data"
        data.mkdir(parents=True)
        (data.parent / "__init__.py").write_text("raise RuntimeError('data packages are never imported')\n")
        (data / f"part{n:02d}.bin").write_bytes(chunk)
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    return local.LocalModel(
        key=f"fake-{prefix}", upstream="test", params_billions=0.001,
        packages=tuple(f"{prefix}{n}" for n in range(1, len(CHUNKS) + 1)),
        relative_path="data/part{n:02d}.bin", size=len(TRUE_BYTES), sha256=hashlib.sha256(TRUE_BYTES).hexdigest(),
    )


def test_assembles_verified_file_in_model_dir(fake_model, tmp_path):
    assert local.model_dir() == tmp_path / "models"
    assert len(local.source_chunks(fake_model)) == 3
    path = local.ensure_model_file(fake_model)
    assert path == tmp_path / "models" / f"{fake_model.key}.gguf"
    assert path.read_bytes() == TRUE_BYTES
    marker = local._verified_marker(fake_model).read_text().split()
    assert marker[0] == fake_model.sha256 and int(marker[1]) == len(TRUE_BYTES)
    assert [p.name for p in path.parent.iterdir() if ".tmp" in p.name] == []  # no temp file left behind


def test_verified_file_is_not_rehashed(fake_model, monkeypatch):
    local.ensure_model_file(fake_model)

    def no_hash(path):
        raise AssertionError("a verified, unchanged file must not be hashed again")

    monkeypatch.setattr(local, "_sha256", no_hash)
    assert local.ensure_model_file(fake_model).read_bytes() == TRUE_BYTES


def _later_mtime(path):
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))


def test_corrupted_file_is_detected_and_rebuilt(fake_model):
    path = local.ensure_model_file(fake_model)
    data = bytearray(path.read_bytes())
    data[1000] ^= 0xFF  # same size, one byte flipped
    path.write_bytes(bytes(data))
    _later_mtime(path)
    assert local.ensure_model_file(fake_model).read_bytes() == TRUE_BYTES


def test_truncated_file_is_detected_and_rebuilt(fake_model):
    path = local.ensure_model_file(fake_model)
    with open(path, "r+b") as f:
        f.truncate(len(TRUE_BYTES) // 2)
    assert local.ensure_model_file(fake_model).read_bytes() == TRUE_BYTES


def test_file_without_marker_is_verified_before_use(fake_model):
    """A file someone else left (e.g. an interrupted older version) is hashed, not trusted."""
    path = local._gguf_path(fake_model)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"x" * len(TRUE_BYTES))
    assert local.ensure_model_file(fake_model).read_bytes() == TRUE_BYTES


def test_chunks_that_fail_the_sha256_are_refused(fake_model):
    wrong = local.LocalModel(**{**fake_model.__dict__, "sha256": hashlib.sha256(b"other bytes").hexdigest()})
    with pytest.raises(ModelFileError) as err:
        local.ensure_model_file(wrong)
    message = str(err.value)
    assert "fail the SHA-256 check even after a rebuild" in message and wrong.key in message
    assert local.INSTALL_HINT in message
    assert not local._verified_marker(wrong).exists()
    # a corrupted chunk in one package: the same refusal
    chunk = local.source_chunks(fake_model)[1]
    broken = bytearray(chunk.read_bytes())
    broken[7] ^= 0xFF
    chunk.write_bytes(bytes(broken))
    local._gguf_path(fake_model).unlink(missing_ok=True)
    with pytest.raises(ModelFileError):
        local.ensure_model_file(fake_model)


def test_missing_package_names_the_install_command(fake_model):
    missing = local.LocalModel(**{**fake_model.__dict__,
                                  "packages": fake_model.packages[:2] + ("tw_no_such_package_part3",)})
    assert local.source_chunks(missing) is None
    assert not local.is_available(missing)
    with pytest.raises(MissingExtraError) as err:
        local.ensure_model_file(missing)
    assert "pip install" in str(err.value) and local.INSTALL_HINT in str(err.value)


def test_missing_runtime_names_the_install_command(fake_model, monkeypatch):
    monkeypatch.setattr(local, "runtime_installed", lambda: False)
    assert not local.is_available(fake_model)
    with pytest.raises(MissingExtraError, match="pip install"):
        local.LocalServer(fake_model)


def test_threads_assembling_at_once_get_one_good_file(fake_model):
    results, errors = [], []

    def work():
        try:
            results.append(local.ensure_model_file(fake_model).read_bytes())
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and results == [TRUE_BYTES] * 4


def test_data_packages_are_found_without_being_imported(fake_model):
    # their __init__ raises if executed: finding the chunks must not run it
    assert local.source_chunks(fake_model)[0].read_bytes() == CHUNKS[0]
    assert not any(name.startswith(fake_model.packages[0]) for name in __import__("sys").modules)


def test_real_local_models_are_registered_with_pinned_hashes():
    assert {k: (m.size, m.sha256[:12]) for k, m in local.LOCAL_MODELS.items()} == {
        "smollm2-135m": (98_362_432, "b179c9523d0e"),
        "qwen2.5-coder-0.5b": (491_400_064, "1d9614638d18"),
        "qwen2.5-coder-1.5b": (1_117_320_768, "cc324af070c2"),
    }
    assert [len(m.packages) for m in local.LOCAL_MODELS.values()] == [1, 6, 22]
