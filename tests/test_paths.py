"""One work folder: a compile given work_dir keeps its cache, outcomes, ledger and (with no --storage) its
Optuna study there, and writes nothing to ./.tierwise."""

from __future__ import annotations

from pipelines import paths
from tests.fakes import support_script, write_tiers


def test_a_compile_keeps_everything_in_its_work_dir(tmp_path, monkeypatch):
    from optimizers.live import OptimizeOptions, optimize

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TIERWISE_CACHE_DIR")
    work = tmp_path / "elsewhere"
    summary = optimize(OptimizeOptions(task="support", tiers=str(write_tiers(tmp_path)), limit=8, trials=6,
                                       work_dir=work, out=str(tmp_path / "a.json"), scripts={"*": support_script()}))
    assert summary["storage"] == f"default ({work / 'studies.db'})"
    assert (work / "studies.db").is_file() and (work / "cache").is_dir() and (work / "outcomes").is_dir()
    assert (work / "ledger.jsonl").is_file()
    assert not (tmp_path / ".tierwise").exists()


def test_paths_default_to_dot_tierwise_and_the_cache_env(monkeypatch):
    monkeypatch.delenv("TIERWISE_CACHE_DIR")
    assert paths.cache_dir() == paths.WORK_DIR / "cache" and paths.studies_db("w").as_posix() == "w/studies.db"
    monkeypatch.setenv("TIERWISE_CACHE_DIR", "/tmp/x")
    assert str(paths.cache_dir()) == "/tmp/x" and paths.cache_dir("w").as_posix() == "w/cache"
    assert (paths.datasets_dir() / "support.jsonl").is_file()
