"""Shared helpers: fake tiers (scripted, no model), ChatAdapter-shaped answers, subprocess runner.

Every test gets its own default cache dir (TIERWISE_CACHE_DIR) so nothing lands in the repo's
.tierwise/, and the real model cache (~/.cache/tierwise) is never touched by unit tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable

import pipelines  # noqa: E402,F401 - sets LITELLM_LOCAL_MODEL_COST_MAP before dspy loads

from pipelines.cache import CallCache  # noqa: E402
from pipelines.ledger import Ledger  # noqa: E402
from pipelines.runtime import Runtime  # noqa: E402
from pipelines.tiers import Catalog, Tier  # noqa: E402


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("TIERWISE_CACHE_DIR", str(tmp_path / "default-cache"))
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")


def fake_tier(name: str, input_per_1m: float, output_per_1m: float, **settings) -> Tier:
    """A scripted tier; no retries unless asked (a retry would call the script again)."""
    return Tier(name, f"fake/{name}", input_per_1m, output_per_1m, {"retries": 0, **settings}, "scripted")


def fake_catalog(*names: str, **settings_by_name) -> Catalog:
    """Tiers priced 1x, 10x, 100x ... in the given order (cheapest first)."""
    return Catalog([fake_tier(n, 1.0 * 10**i, 2.0 * 10**i, **settings_by_name.get(n, {}))
                    for i, n in enumerate(names)])


def answer(**fields) -> str:
    """A completion in the ChatAdapter format for the given output fields."""
    body = "".join(f"[[ ## {k} ## ]]\n{v}\n\n" for k, v in fields.items())
    return body + "[[ ## completed ## ]]"


def user_text(messages) -> str:
    return messages[-1]["content"]


def make_runtime(tmp_path: Path, catalog: Catalog, script, *, cache: bool = True, ledger_path=None) -> Runtime:
    return Runtime(catalog, cache=CallCache(tmp_path / "cache", enabled=cache),
                   ledger=Ledger(ledger_path), scripts={"*": script})


def run_python(code: str, *args: str, cwd=None, env_extra: dict | None = None, timeout: float = 300,
               check: bool = True) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter with the repo importable. Returns the completed process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env_extra or {})}
    proc = subprocess.run([PYTHON, "-c", code, *args], cwd=cwd or ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"subprocess failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def last_json_line(text: str):
    """The last line of `text` that parses as JSON (subprocess scripts print their result last)."""
    for line in reversed(text.strip().splitlines()):
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            continue
    raise AssertionError(f"no JSON line in output:\n{text}")


def compile_fake_support(tmp_path: Path, policy=None, name: str = "support.tierwise.json", **build_kwargs) -> Path:
    """An artifact of the shipped support task over the fake small/big tiers of tests/fakes.py."""
    from pipelines.artifact import build, save
    from pipelines.policy import Policy, PredictorPolicy
    from pipelines.tasks import load_task
    from pipelines.tiers import load_catalog
    from tests.fakes import write_tiers

    policy = policy or Policy({"classify": PredictorPolicy(["small", "big"], "logprob_mean", [0.9]),
                               "extract": PredictorPolicy(["small"])})
    body = build(task_source="support", program=load_task("support").build_program(),
                 catalog=load_catalog(write_tiers(tmp_path)), policy=policy, **build_kwargs)
    return save(body, tmp_path / name)
