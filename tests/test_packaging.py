"""The wheel: built from this tree (pip, build isolation as `pip install .` does), it holds the dev sets
and the `tierwise` command, and the installed copy finds its datasets outside the repository."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from conftest import ROOT

pytestmark = pytest.mark.packaging


SOURCES = ("pyproject.toml", "README.md", "cli.py", "pipelines", "optimizers", "metrics", "datasets")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """Built from a copy of the sources: setuptools writes build/ and *.egg-info next to them."""
    out, src = tmp_path_factory.mktemp("wheel"), tmp_path_factory.mktemp("src")
    for name in SOURCES:
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy2
        copy(ROOT / name, src / name, **({"ignore": shutil.ignore_patterns("__pycache__")}
                                         if (ROOT / name).is_dir() else {}))
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "-w", str(out), "-q"],
                           capture_output=True, text=True, timeout=600, cwd=out)
    if build.returncode != 0 and "Could not find a version" in build.stderr + build.stdout:
        pytest.skip("no package index or cache for the isolated build's setuptools")
    assert build.returncode == 0, build.stderr
    (path,) = out.glob("tierwise-*.whl")
    return path


def test_wheel_holds_the_datasets_and_the_tierwise_command(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        entry_points = next(z.read(n).decode() for n in names if n.endswith("entry_points.txt"))
        metadata = next(z.read(n).decode() for n in names if n.endswith("METADATA"))
    shipped = {p.name for p in (ROOT / "datasets").glob("*.jsonl")}
    assert {"support.jsonl", "math.jsonl", "invoices.jsonl"} <= shipped
    assert {f"pipelines/datasets/{name}" for name in shipped} <= names
    assert "[console_scripts]\ntierwise = cli:main" in entry_points
    assert "cli.py" in names and "optimizers/tier_optimizer.py" in names and "pipelines/paths.py" in names
    assert not any(n.startswith(("tests/", "benchmarks/", "datasets/")) for n in names)
    for dependency in ("rich", "pydantic", "dspy==3.4.1", "optuna"):
        assert f"Requires-Dist: {dependency}" in metadata


def test_installed_copy_reads_its_own_datasets_and_runs_the_command(wheel, tmp_path):
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    env = {**os.environ, "PYTHONPATH": str(site)}  # the shared venv's packages stay importable for dependencies
    probe = subprocess.run(
        [sys.executable, "-c", "import json, pipelines.tasks as t; from pipelines.tasks import load_task; "
         "print(json.dumps([t.__file__, str(load_task('support').default_dataset())]))"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=True)
    module_file, dataset = json.loads(probe.stdout.strip().splitlines()[-1])
    assert module_file.startswith(str(site)) and dataset.startswith(str(site))
    assert open(dataset).read() == (ROOT / "datasets" / "support.jsonl").read_text()  # the whole dev set ships
    command = subprocess.run([str(site / "bin" / "tierwise"), "tiers", "--json"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=120)
    assert command.returncode == 0, command.stderr
    assert [t["name"] for t in json.loads(command.stdout)] == ["cheap", "mid", "flagship"]
