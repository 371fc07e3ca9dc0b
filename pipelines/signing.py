"""Optional artifact integrity: an HMAC-SHA256 signature with a key held in an environment variable.

The checksum only catches accidents: anyone who can edit the file can recompute it. A signature can
only be made by whoever holds the key, so `run`/`load` can require one in production. The key is read
from the environment at the moment of signing or verifying and is never written anywhere; the artifact
records only the variable's name, as a hint.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os

from pipelines.errors import ArtifactError, ConfigError

DEFAULT_KEY_ENV = "TIERWISE_SIGNING_KEY"
REQUIRE_ENV = "TIERWISE_REQUIRE_SIGNATURE"
ALGORITHM = "HMAC-SHA256"
MIN_KEY_CHARS = 16  # a short key can be guessed offline from any signed artifact


def canonical(body: dict) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def signing_key(env_name: str) -> bytes:
    """The key in `env_name`, or a ConfigError saying what is missing (never the key itself)."""
    if not env_name or not env_name.replace("_", "a").isalnum():
        raise ConfigError(f"--sign-key-env {env_name!r}: expected the name of an environment variable")
    key = os.environ.get(env_name, "")
    if not key:
        raise ConfigError(f"signing key: environment variable {env_name} is not set")
    if len(key) < MIN_KEY_CHARS:
        raise ConfigError(f"signing key: {env_name} holds {len(key)} characters; use at least {MIN_KEY_CHARS} "
                          "(e.g. python -c 'import secrets; print(secrets.token_hex(32))')")
    return key.encode()


def sign(body: dict, env_name: str) -> dict:
    digest = hmac.new(signing_key(env_name), canonical(body), hashlib.sha256).hexdigest()
    return {"alg": ALGORITHM, "key_env": env_name, "value": digest}


def required_by_environment() -> bool:
    value = os.environ.get(REQUIRE_ENV, "").strip().lower()
    if value in ("", "0", "false", "no"):
        return False
    if value in ("1", "true", "yes"):
        return True
    raise ConfigError(f"{REQUIRE_ENV}={value!r}: expected 1 or 0")


def verify(body: dict, signature, path, *, required: bool | None = None, key_env: str | None = None) -> None:
    """Refuse an unsigned artifact when a signature is required, and a wrongly signed one always
    (when the key is at hand). `body` is the artifact without its checksum and signature."""
    required = required_by_environment() if required is None else required
    env_name = key_env or DEFAULT_KEY_ENV
    if signature is None:
        if required:
            raise ArtifactError(f"{path}: unsigned artifact, and a signature is required; sign it when compiling "
                                f"(optimize --sign-key-env {env_name})")
        return
    if not required and not os.environ.get(env_name):
        return  # signed, not required, no key here: the checksum still guards against accidents
    well_formed = isinstance(signature, dict) and signature.get("alg") == ALGORITHM \
        and isinstance(signature.get("value"), str)
    if not well_formed:
        raise ArtifactError(f"{path}: malformed signature (expected {ALGORITHM})")
    expected = hmac.new(signing_key(env_name), canonical(body), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature["value"]):
        raise ArtifactError(f"{path}: signature mismatch: not signed with the key in {env_name}, or modified "
                            "after signing")
