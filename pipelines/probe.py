"""Reachability of a tier, checked only when asked (`cli.py tiers --check`): one GET, never a paid call.

An API tier is asked for its model list (`GET {api_base}/models`, the key from its variable), which
every OpenAI-compatible server answers without generating anything. Local and scripted tiers need no
network: their availability is the answer.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request

from pipelines.tiers import Tier

# Where a provider's model list lives when a tier names no api_base.
PROVIDER_BASES = {"openai": "https://api.openai.com/v1", "anthropic": "https://api.anthropic.com/v1",
                  "mistral": "https://api.mistral.ai/v1", "groq": "https://api.groq.com/openai/v1",
                  "together_ai": "https://api.together.xyz/v1", "deepseek": "https://api.deepseek.com/v1",
                  "openrouter": "https://openrouter.ai/api/v1", "xai": "https://api.x.ai/v1"}


def check(tier: Tier, timeout_s: float = 5.0) -> tuple[bool, str]:
    """(reachable, one line saying why or why not)."""
    ok, why = tier.availability()
    if not ok or not tier.is_api:
        return ok, why
    provider = tier.model.split("/", 1)[0] if "/" in tier.model else "openai"
    base = tier.api_base or PROVIDER_BASES.get(provider)
    if base is None:
        return True, f"{why}; not checked: no model list known for provider {provider!r} (set api_base)"
    headers = dict(tier.header_values())
    key = tier.api_key()
    if key:
        headers["Authorization"] = f"Bearer {key}"
        if provider == "anthropic":
            headers.update({"x-api-key": key, "anthropic-version": "2023-06-01"})
    request = urllib.request.Request(f"{base}/models", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            body = json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as e:
        reason = {401: "key refused", 403: "forbidden", 404: "no /models here (is api_base right?)"}.get(e.code, e.reason)
        return False, f"HTTP {e.code} {reason} from {base}/models"
    except urllib.error.URLError as e:
        return False, f"{_reason(e.reason)} ({base})"
    except (socket.timeout, TimeoutError):
        hint = "; a plain-HTTP server never answers a TLS handshake: is it http://?" if base.startswith("https") else ""
        return False, f"no answer within {timeout_s:g}s ({base}{hint})"
    except (OSError, ValueError) as e:
        return False, f"{type(e).__name__}: {e} ({base})"
    models = body.get("data") or body.get("models") or []
    line = f"reachable at {base} ({len(models)} model{'s' if len(models) != 1 else ''} listed)"
    return True, line + _unlisted(tier.model, models)


def _unlisted(model: str, listed: list) -> str:
    """A warning when the endpoint lists models and the tier's is not among them: most servers refuse an
    unknown id at the first paid call (llama.cpp's answers any name; a provider's alias may be unlisted)."""
    ids = [str(m.get("id", "")) if isinstance(m, dict) else str(m) for m in listed]
    aliases = [str(a) for m in listed if isinstance(m, dict) for a in m.get("aliases") or ()]  # llama.cpp's --alias
    wanted = model.split("/", 1)[1] if "/" in model else model
    if not ids or wanted in ids + aliases or model in ids + aliases:
        return ""
    shown = ", ".join(ids[:5]) + (", ..." if len(ids) > 5 else "")
    return f"; warning: {wanted!r} is not among them ({shown}): check the model id"


def _reason(reason) -> str:
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, socket.gaierror):
        return "host not found"
    if isinstance(reason, (socket.timeout, TimeoutError)):
        return "timed out"
    return str(reason)
