"""Tier catalog: the embedded default, TOML parsing, prices, user errors, `cli.py tiers`."""

from __future__ import annotations

import json
import os

import pytest

from conftest import ROOT, run_python
from pipelines import local
from pipelines.errors import ConfigError
from pipelines.tiers import (LOCAL_INPUT_PER_1M_PER_B, LOCAL_OUTPUT_PER_1M_PER_B, Catalog, Tier,
                             default_catalog, load_catalog)


def write(tmp_path, text, name="tiers.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_default_catalog_is_three_local_tiers_priced_by_parameters():
    catalog = default_catalog()
    assert catalog.names == ["cheap", "mid", "flagship"]
    assert [t.model for t in catalog] == ["local/smollm2-135m", "local/qwen2.5-coder-0.5b", "local/qwen2.5-coder-1.5b"]
    assert catalog.flagship.name == "flagship"
    params = [local.LOCAL_MODELS[t.model.split("/", 1)[1]].params_billions for t in catalog]
    assert params == [0.135, 0.494, 1.54]
    for tier, p in zip(catalog, params):
        assert tier.is_local
        assert tier.input_per_1m == pytest.approx(p * LOCAL_INPUT_PER_1M_PER_B)
        assert tier.output_per_1m == pytest.approx(p * LOCAL_OUTPUT_PER_1M_PER_B)
        assert tier.price_source == "local: parameter-proportional"
    # proportional: the flagship costs 1.54/0.135 = 11.4x the cheap tier per token
    assert catalog["flagship"].input_per_1m / catalog["cheap"].input_per_1m == pytest.approx(1.54 / 0.135, rel=1e-4)
    # a call's price: 1000 prompt + 100 completion tokens on the flagship
    assert catalog["flagship"].cost(1000, 100) == pytest.approx((1000 * 0.154 + 100 * 0.616) / 1e6)


def test_toml_parsing_prices_settings_and_local_defaults(tmp_path):
    path = write(tmp_path, """
[[tier]]
name = "small"
model = "fake/small"
input_per_1m = 0.5
output_per_1m = 1.5
[tier.settings]
max_tokens = 64
temperature = 0.2

[[tier]]
name = "local-mid"
model = "local/qwen2.5-coder-0.5b"
[tier.settings]
max_tokens = 100

[[tier]]
name = "cheap-override"
model = "local/smollm2-135m"
input_per_1m = 0.01
""")
    catalog = load_catalog(path)
    assert catalog.names == ["small", "local-mid", "cheap-override"]
    small, mid, cheap = catalog.tiers
    assert (small.input_per_1m, small.output_per_1m, small.price_source) == (0.5, 1.5, "tiers file")
    assert small.setting("max_tokens") == 64 and small.setting("temperature") == 0.2
    assert small.setting("retries") == 2  # the API default
    assert small.cost(2_000_000, 1_000_000) == pytest.approx(0.5 * 2 + 1.5)
    # a local tier keeps its local defaults (no retries), with the file's settings on top
    assert mid.input_per_1m == pytest.approx(0.494 * LOCAL_INPUT_PER_1M_PER_B)
    assert mid.setting("max_tokens") == 100 and mid.setting("retries") == 0
    # overriding one price keeps the other at its default
    assert cheap.input_per_1m == 0.01
    assert cheap.output_per_1m == pytest.approx(0.135 * LOCAL_OUTPUT_PER_1M_PER_B)
    assert cheap.price_source == "tiers file"


def test_tier_identity_depends_on_model_and_generation_settings_only():
    a = Tier("a", "fake/x", 1, 2, {"max_tokens": 10})
    assert a.identity() == Tier("renamed", "fake/x", 5, 6, {"max_tokens": 10, "retries": 7}).identity()
    assert a.identity() != Tier("a", "fake/x", 1, 2, {"max_tokens": 11}).identity()
    assert a.identity() != Tier("a", "fake/y", 1, 2, {"max_tokens": 10}).identity()


def test_api_model_priced_from_shipped_map_offline(tmp_path):
    from dspy.clients.model_metadata import model_info

    path = write(tmp_path, '[[tier]]\nname = "mini"\nmodel = "openai/gpt-4o-mini"\n')
    tier = load_catalog(path)["mini"]
    info = model_info("openai", "gpt-4o-mini")
    assert tier.input_per_1m == pytest.approx(info["input_cost_per_token"] * 1e6)
    assert tier.output_per_1m == pytest.approx(info["output_cost_per_token"] * 1e6)
    assert (tier.input_per_1m, tier.output_per_1m) == pytest.approx((0.15, 0.60))
    assert tier.price_source.startswith("price map")


@pytest.mark.parametrize("body, message", [
    ('[[tier]]\nname = "x"\nmodel = "local/nope-7b"\n', "unknown local model 'local/nope-7b'"),
    ('[[tier]]\nname = "x"\nmodel = "someprovider/unpriced-model-9000"\n', "no price known"),
    ('[[tier]]\nname = "x"\nmodel = "openai/gpt-4o-mini"\napi_key = "sk-123"\n', "API keys belong in environment"),
    ('[[tier]]\nname = "x"\nmodel = "openai/gpt-4o-mini"\n[tier.settings]\napi_key = "sk-123"\n',
     "API keys belong in environment"),
    ('[[tier]]\nname = "x"\nmodel = "fake/x"\n[tier.settings]\nseed = 3\n', "unknown settings ['seed']"),
    ('[[tier]]\nname = "x"\nmodel = "fake/x"\ncolour = "red"\n', "unknown keys ['colour']"),
    ('[[tier]]\nname = "x"\nmodel = "fake/x"\ninput_per_1m = -1\n', "must not be negative"),
    ('[[tier]]\nname = "x"\nmodel = "fake/x"\ninput_per_1m = "cheap"\n', "prices must be numbers"),
    ('[[tier]]\nname = "x"\n', "'model' must be a non-empty string"),
    ('[[tier]]\nname = "x"\nmodel = "fake/x"\n[[tier]]\nname = "x"\nmodel = "fake/y"\n', "'x' named twice"),
    ('title = "no tiers"\n', "expected one or more [[tier]] tables"),
    ('[[tier]\nname = "x"\n', "not valid TOML"),
])
def test_bad_tiers_files_raise_config_error_naming_the_file(tmp_path, body, message):
    path = write(tmp_path, body)
    with pytest.raises(ConfigError) as err:
        load_catalog(path)
    assert message in str(err.value)
    assert str(path) in str(err.value)
    assert "\n" not in str(err.value).strip() or "TOML" in message


def test_missing_tiers_file(tmp_path):
    with pytest.raises(ConfigError, match="tiers file not found: .*nowhere.toml"):
        load_catalog(tmp_path / "nowhere.toml")


def test_unknown_tier_name_lists_the_catalog():
    with pytest.raises(ConfigError, match="unknown tier 'huge'; catalog has: cheap, mid, flagship"):
        default_catalog()["huge"]
    with pytest.raises(ConfigError, match="empty"):
        Catalog([])


def test_availability_is_judged_without_network_or_weights(monkeypatch):
    loaded_before = dict(local._servers)  # other tests in this process may have loaded models
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert Tier("a", "openai/gpt-4o-mini", 1, 1).availability() == (False, "OPENAI_API_KEY not set")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    assert Tier("a", "openai/gpt-4o-mini", 1, 1).availability() == (True, "key present")
    ok, why = Tier("f", "fake/f", 0, 0).availability()
    assert not ok and "scripted test engines" in why  # a user's tiers file: nothing would answer it
    assert Tier("f", "fake/f", 0, 0).availability({"f": lambda *a: "x"}) == (True, "scripted engine")
    ok, why = Tier("u", "acme/model-x", 1, 1).availability()
    assert not ok and "no provider serves this model id" in why  # an unknown provider prefix never answers
    ok, why = Tier("u", "local/nope", 0, 0).availability()
    assert not ok and "unknown local model" in why
    monkeypatch.setattr(local, "runtime_installed", lambda: False)
    ok, why = default_catalog()["flagship"].availability()
    assert not ok and "xllamacpp missing" in why and local.INSTALL_HINT in why
    assert local._servers == loaded_before


def test_importing_pipelines_sets_local_cost_map():
    env = {k: v for k, v in os.environ.items() if k != "LITELLM_LOCAL_MODEL_COST_MAP"}
    code = ("import os; before = os.environ.get('LITELLM_LOCAL_MODEL_COST_MAP'); import pipelines; "
            "print(repr(before), os.environ.get('LITELLM_LOCAL_MODEL_COST_MAP'))")
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True, check=True).stdout
    assert out.split() == ["None", "True"]


def test_cli_tiers_json_lists_catalog_and_loads_no_weights(tmp_path):
    # The CLI in a fresh interpreter: after the command, no llama.cpp server exists and xllamacpp
    # (the runtime that would load weights) was never imported.
    code = """
import json, sys
from typer.testing import CliRunner
import cli, pipelines.local as local
result = CliRunner().invoke(cli.app, ["tiers", "--json"])
print(json.dumps({"exit": result.exit_code, "rows": json.loads(result.stdout),
                  "servers": len(local._servers), "xllamacpp_imported": "xllamacpp" in sys.modules}))
"""
    out = json.loads(run_python(code, cwd=tmp_path).stdout.strip().splitlines()[-1])
    assert out["exit"] == 0
    assert out["servers"] == 0 and out["xllamacpp_imported"] is False
    rows = out["rows"]
    assert [r["name"] for r in rows] == ["cheap", "mid", "flagship"]
    for r in rows:
        assert set(r) >= {"name", "model", "input_per_1m", "output_per_1m", "settings", "available", "status"}
        assert isinstance(r["available"], bool) and r["status"]
    assert rows[2]["input_per_1m"] == pytest.approx(0.154)


def test_cli_tiers_script_with_tiers_file(tmp_path):
    path = write(tmp_path, '[[tier]]\nname = "s"\nmodel = "fake/s"\ninput_per_1m = 1\noutput_per_1m = 2\n')
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, str(ROOT / "cli.py"), "tiers", "--tiers", str(path), "--json"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert rows == [{"name": "s", "model": "fake/s", "input_per_1m": 1.0, "output_per_1m": 2.0, "settings": {},
                     "price_source": "tiers file", "available": False,
                     "status": "fake/ models are scripted test engines; nothing answers them outside tests"}]
