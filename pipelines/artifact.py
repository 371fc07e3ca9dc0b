"""Compiled artifact: one JSON file that production code loads. It never executes code from the file.

Holds: the program's identity (task source to rebuild it, and a fingerprint of its predictor names
and signatures), the DSPy state (instructions, demos), the tier catalog (model ids, prices,
settings; never keys), the policy, fitted scorer parameters, the metrics it was compiled against,
library versions, a schema version and a SHA-256 checksum over everything else, and optionally an
HMAC-SHA256 signature (pipelines.signing) that `run`/`load` can require.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import get_args, get_origin

from pipelines.answers import field_type
from pipelines.errors import ArtifactError, ConfigError, TierwiseError
from pipelines.policy import Policy
from pipelines.signing import canonical, sign, verify
from pipelines.tiers import Catalog

log = logging.getLogger("tierwise")
SCHEMA_VERSION = 1
KIND = "tierwise-artifact"
_SECRET_WORDS = ("api_key", "apikey", "secret", "password", "authorization")


# How a fingerprint names a class or validator function of the user's own: by its qualified name, the same
# whether the program was compiled from a script (`__main__.Person`) or imported (`people.Person`). Artifacts
# of older namings still load: classes and functions by module (before 2026-12-01), functions by module (12-01).
NAMINGS = ("qualified", "function_modules", "modules")


def program_fingerprint(program, naming: str = "qualified") -> str:
    """Predictor names, signatures (fields, output types, instructions), demos and generation settings:
    what a policy and state are bound to, and what decides a recorded answer (a type's validator can
    reject one). `naming`: one of NAMINGS."""
    parts = []
    for name, predictor in program.named_predictors():
        sig = predictor.signature
        parts.append({"name": name, "inputs": list(sig.input_fields), "outputs": list(sig.output_fields),
                      "types": [_type_name(field_type(f), naming) for f in sig.output_fields.values()],
                      "instructions": sig.instructions,
                      "demos": [dict(d.items()) for d in getattr(predictor, "demos", [])],
                      # its own generation settings (max_tokens=...) decide its answers too; only when set,
                      # so that programs without any keep the fingerprint (and the outcomes) they had
                      **({"config": predictor.config} if getattr(predictor, "config", None) else {})})
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _type_name(annotation, naming: str = "qualified") -> str:
    """Stable across processes: a validator by its name, not its repr (which holds an address); a class of
    the user's own by its qualified name, not its module (a script's is `__main__`)."""
    def name(arg):
        func = getattr(arg, "func", None)
        if func:
            module = f"{func.__module__}." if naming != "qualified" else ""
            return f"{type(arg).__name__}({module}{func.__qualname__})"
        if naming != "modules" and isinstance(arg, type) and arg.__module__ not in ("builtins", "typing"):
            return f"<class {arg.__qualname__}>"
        return repr(arg)

    args = get_args(annotation)
    return f"{get_origin(annotation)}[{', '.join(map(name, args))}]" if args else name(annotation)


def _checksum(body: dict) -> str:
    return hashlib.sha256(canonical(body)).hexdigest()


def _versions() -> dict:
    out = {}
    for package in ("dspy", "optuna", "litellm", "xllamacpp", "tierwise"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return out


def _refuse_secrets(value, where="artifact") -> None:
    if isinstance(value, dict):
        for key, inner in value.items():
            if any(word in str(key).lower() for word in _SECRET_WORDS) and inner:
                raise ArtifactError(f"refusing to write {where}.{key}: secrets never go into an artifact")
            _refuse_secrets(inner, f"{where}.{key}")
    elif isinstance(value, list):
        for item in value:
            _refuse_secrets(item, where)


def build(*, task_source: str | None, program=None, catalog: Catalog, policy: Policy, scorers: dict | None = None,
          metrics: dict | None = None, summary: dict | None = None, extra: dict | None = None,
          routers: dict | None = None) -> dict:
    """The artifact's body (everything but the checksum)."""
    from pipelines.decomposition import is_decomposed

    body = {
        "kind": KIND,
        "schema_version": SCHEMA_VERSION,
        "program": {
            "task": task_source,
            "fingerprint": program_fingerprint(program) if program is not None else None,
            "predictors": [n for n, _ in program.named_predictors()] if program is not None else list(policy.predictors),
            "state": program.dump_state() if program is not None else None,
            # compiled as decompose(YourProgram()): load splits the program it rebuilds or is given the same way
            **({"decomposed": True} if program is not None and is_decomposed(program) else {}),
        },
        "catalog": catalog.to_dict(),
        "policy": policy.to_dict(),
        "scorers": {name: s.to_dict() for name, s in (scorers or {}).items()},
        # Only the routers the policy reads (a route, or a scorer fitted with the router's prior).
        "routers": {name: r.router.to_dict() for name, r in (routers or {}).items()
                    if name in policy.predictors and (policy[name].route is not None
                                                      or getattr((scorers or {}).get(name), "uses_prior", False))},
        "metrics": metrics or {},
        "summary": summary or {},
        "versions": _versions(),
        **(extra or {}),
    }
    _refuse_secrets(body)
    return finite_json(json.loads(json.dumps(body, default=str)))  # plain JSON types only


def finite_json(value):
    """NaN and infinities become null: bare NaN is not JSON, and other tools refuse the file."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite_json(v) for v in value]
    return value


def check_destination(path: str | Path, flag: str = "--out", example: str = "task.tierwise.json") -> Path:
    """Refuse an output path that cannot be written, before anything is paid for or computed."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{flag} {path}: is a directory; give a file name such as {path / example}")
    if path.exists() and not path.is_file():  # an atomic save replaces what is there: /dev/null itself, as root
        raise ConfigError(f"{flag} {path}: is not a regular file (a device, pipe or socket); give a file name "
                          f"such as {example}")
    parent = path.parent if str(path.parent) else Path(".")
    existing = next((p for p in [parent, *parent.parents] if p.exists()), Path("."))
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} {path}: cannot write there ({existing} is not a writable folder)")
    try:  # permission bits do not tell everything (root, /proc, a read-only mount): try a file there
        tempfile.TemporaryFile(dir=existing).close()
    except OSError as e:
        raise ConfigError(f"{flag} {path}: cannot write there ({existing}: {e.strerror or e})") from None
    return path


def save(body: dict, path: str | Path, sign_key_env: str | None = None) -> Path:
    """Write atomically with the checksum (and a signature when a key variable is named), so a crash
    never leaves half an artifact."""
    path = check_destination(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = finite_json(body)
    if sign_key_env:
        body = {**body, "signature": sign(body, sign_key_env)}
    document = {**body, "checksum": _checksum(body)}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(document, f, indent=1, sort_keys=True, allow_nan=False)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)  # never a stray .tmp beside the artifact
        raise
    return path


def read(path: str | Path, *, require_signature: bool | None = None, key_env: str | None = None) -> dict:
    """Parse and verify an artifact: JSON, kind, schema version, checksum, signature. Returns its body.

    A signature is required when `require_signature` is true, or it is None and TIERWISE_REQUIRE_SIGNATURE=1;
    the key is read from the environment variable `key_env` (default TIERWISE_SIGNING_KEY)."""
    path = Path(path)
    if path.is_dir():
        raise ArtifactError(f"{path}: is a directory, not an artifact file")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"artifact not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise ArtifactError(f"{path}: not a tierwise artifact (not valid JSON: {e})") from None
    except OSError as e:
        raise ArtifactError(f"{path}: cannot read ({e.strerror})") from None
    if not isinstance(document, dict) or document.get("kind") != KIND:
        raise ArtifactError(f"{path}: not a tierwise artifact")
    version = document.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ArtifactError(f"{path}: schema_version {version!r} is not a whole number; the file was not "
                            "written by tierwise")
    if version > SCHEMA_VERSION:
        raise ArtifactError(f"{path}: schema version {version} is newer than this tierwise understands "
                            f"({SCHEMA_VERSION}); upgrade tierwise to load it")
    checksum = document.pop("checksum", None)
    if checksum != _checksum(document):
        raise ArtifactError(f"{path}: checksum mismatch: the file was modified after it was compiled")
    signature = document.pop("signature", None)
    verify(document, signature, path, required=require_signature, key_env=key_env)
    return document


def load_program(path, *, program=None, task=None, cache=None, ledger=None, scripts=None, require_signature=None,
                 key_env=None, semantic_dir=None, semantic=None, budget_usd=None, budget_url=None, budget_key=None,
                 budget_period=None, checks=None):
    """Rebuild the program (or take `program`, an instance the caller built), check it is the one
    compiled, restore its state and policy: ready to call.

    `task` overrides the recorded task source (a name or a .py path); `cache`/`ledger` are a
    pipelines.cache.CallCache and pipelines.ledger.Ledger; `scripts` drives fake/ tiers in tests;
    `require_signature`/`key_env`: see read(); `semantic_dir` keeps a policy's semantic caches on disk
    there (one folder per predictor), across restarts, instead of in the program's memory; `semantic`
    ({"ttl_s": s, "max_entries": n, "threshold": t}) overrides those settings of every semantic cache the
    policy has (the search chose the threshold; freshness and size are production's choice); `budget_usd`
    caps what this loaded program may pay for uncached calls (pipelines.spend_cap: a call that could pass it
    raises BudgetExceeded before it is paid; `program.spend_cap.spent_usd` says how much was paid); with
    `budget_url` (redis://, postgresql://) one cap for every replica loading with that URL and `budget_key`
    (default: the artifact's file name and program fingerprint), per UTC day or month with `budget_period`;
    `checks` ({predictor: [check, ...]}, pipelines.answer_checks): the answer checks the artifact was compiled
    with, which its learned confidence reads (a task file's own `checks` when the artifact rebuilds from it)."""
    from pipelines.spend_cap import spend_cap

    if isinstance(program, type):
        raise ConfigError(f"load {path}: program= takes an instance, {program.__name__}(), not the class")
    body = read(path, require_signature=require_signature, key_env=key_env)
    source = task or body["program"]["task"]
    made_by = "the program you passed has" if program is not None else f"task {source!r} builds"
    if program is None:
        program, task_checks = _rebuild(path, body, source, explicit=task is not None)
        checks = task_checks if checks is None else checks
    if body["program"].get("decomposed"):
        from pipelines.decomposition import decompose

        program = decompose(program)
    load_state(program, body)  # a fresh instance gets the compiled demos first, as DSPy's program.load does
    try:
        actual = program_fingerprint(program)
    except Exception as e:  # noqa: BLE001 - state edited by hand (demos not a list of examples ...): the file's fault
        raise ArtifactError(f"{path}: malformed program state ({type(e).__name__}: {e})") from None
    expected = body["program"]["fingerprint"]
    if expected != actual and expected not in {program_fingerprint(program, naming) for naming in NAMINGS[1:]}:
        raise ArtifactError(f"{path}: compiled for a different program (fingerprint {expected}, {made_by} "
                            f"{actual}): predictor names or signatures changed; recompile")
    # default cap name: the artifact's file and its program, so two services whose files share a name do not share one
    cap = spend_cap(budget_usd, budget_url, budget_key, budget_period,
                    default_key=f"{Path(path).name}:{expected}")
    return program_from_body(body, program, path, cache=cache, ledger=ledger, scripts=scripts,
                             semantic_dir=semantic_dir, semantic=semantic, spend_cap=cap, checks=checks)


SEMANTIC_OVERRIDES = ("ttl_s", "max_entries", "threshold")


def override_semantic(policy, semantic: dict) -> None:
    """`load(..., semantic={...})`: those settings on every semantic cache of the policy, checked as the
    artifact's own entries are."""
    from pipelines.semantic_cache import validate_settings

    if not isinstance(semantic, dict) or set(semantic) - set(SEMANTIC_OVERRIDES):
        raise ConfigError(f"semantic= takes a dict of {list(SEMANTIC_OVERRIDES)}, got {semantic!r}")
    cached = [name for name, pp in policy.predictors.items() if pp.semantic is not None]
    if not cached:
        raise ConfigError("semantic= was given, but the policy has no semantic cache (compile with "
                          "--semantic-cache, or TierOptimizer(semantic_cache=...))")
    for name in cached:
        merged = {**policy.predictors[name].semantic, **semantic}
        validate_settings(merged, f"semantic= for predictor {name!r}")
        policy.predictors[name].semantic = merged


def load_state(program, body: dict) -> None:
    """The artifact's DSPy state (demos, instructions) onto `program`; a program it does not fit is left to
    the fingerprint check, which names the mismatch."""
    try:
        if body["program"].get("state"):
            program.load_state(body["program"]["state"])
    except Exception:  # noqa: BLE001 - other predictors: the fingerprint differs and says so
        pass


def program_from_body(body: dict, program, where="artifact", *, cache=None, ledger=None, scripts=None,
                      semantic_dir=None, semantic=None, spend_cap=None, checks=None):
    """`program` (its state loaded, checked against the body's fingerprint) with the body's policy applied;
    `spend_cap` (pipelines.spend_cap) guards its tiers' uncached calls; `checks`: see load_program."""
    from pipelines.cascade import CompiledProgram
    from pipelines.confidence import LogisticScorer
    from pipelines.routing import InputRouter, Router
    from pipelines.runtime import Runtime

    try:
        catalog = Catalog.from_dict(body["catalog"])
        unreachable = [f"{t.name} ({t.model}) cannot answer here: {why}"
                       for t in catalog for ok, why in [t.availability(scripts)] if not ok]
        policy = Policy.from_dict(body["policy"]).validate(catalog.names)
        scorers = {n: LogisticScorer.from_dict(d) for n, d in body.get("scorers", {}).items()}
        routers = {n: InputRouter(Router.from_dict(d)) for n, d in body.get("routers", {}).items()}
    except ConfigError as e:  # a policy or tier entry the file got wrong: name the file too
        raise ArtifactError(f"{where}: {e}") from None
    except TierwiseError:
        raise
    except Exception as e:  # noqa: BLE001 - a malformed section is the file's fault, say which
        raise ArtifactError(f"{where}: malformed artifact ({type(e).__name__}: {e})") from None
    if unreachable:  # every call would fall back, silently paying another tier
        raise ArtifactError(f"{where}: tier {unreachable[0]}")
    if semantic:
        override_semantic(policy, semantic)
    runtime = Runtime(catalog, cache=cache, ledger=ledger, scripts=scripts,
                      guard=spend_cap.reserve if spend_cap else None,
                      checks=checks_read(body, policy, scorers, checks, where))
    compiled = CompiledProgram(program, policy, runtime, scorers, routers=routers, semantic_dir=semantic_dir)
    compiled.artifact, compiled.write_artifact, compiled.spend_cap = body, save, spend_cap
    return compiled


def checks_read(body: dict, policy, scorers: dict, checks, where) -> "AnswerChecks | None":
    """The user's answer checks that the policy's learned confidence reads, matched against the artifact's record
    (one line when one is missing or unknown; a warning when its code changed since the compile)."""
    from pipelines.answer_checks import AnswerChecks

    given = AnswerChecks.of(checks, f"load {where}: checks=", strict=False)
    recorded = body.get("checks") or {}
    needed = [n for n in recorded if n in policy.predictors and policy[n].estimator == "learned"
              and getattr(scorers.get(n), "checks", ())]
    for note in given.match(recorded, needed, f"load {where}"):
        log.warning("tierwise: %s", note)
    used = AnswerChecks({n: given.by_predictor[n] for n in needed}, strict=False)
    return used or None


def _rebuild(path, body, source, explicit: bool):
    """The program the artifact names (a task name, a task file (only when the caller names it: the
    checksum is not a signature and must not choose which file runs) or an importable factory), and the
    task's answer checks (pipelines.answer_checks) when it has any."""
    from pipelines.programs import build_from_factory, is_factory
    from pipelines.tasks import is_shipped_task, load_task

    if not source:
        if body.get("policy") and not body["program"].get("fingerprint"):
            raise ArtifactError(f"{path}: holds a replay policy, not a runnable program; use `cli.py replay apply`")
        raise ArtifactError(f"{path}: records no way to rebuild its program (it was compiled from an instance "
                            "whose class is not importable); pass one: load(path, program=MyProgram())")
    if not explicit and not (is_shipped_task(source) or is_factory(source)):
        # The artifact must not choose which file gets executed (`evil.py/` and `evil.py/.` name a file too):
        # on its own word only a shipped task, by name, or a factory class of an imported module is built.
        raise ArtifactError(f"{path}: was compiled from the task file {str(source)[:200]!r}; pass it explicitly "
                            "(load(path, task=...) or `cli.py run --task FILE`) to run it")
    if is_factory(source):
        module = source.partition(":")[0]
        if not explicit and module not in sys.modules:  # importing a module runs its code: the caller's choice
            raise ArtifactError(f"{path}: its program is {source[:200]!r}; import {module[:200]} first (an artifact "
                                "never makes tierwise import a module), pass the program: load(path, program=...), "
                                f"or name it: `cli.py run --task {source[:200]}`")
        return build_from_factory(source), None
    task = load_task(source)
    return task.build_program(), getattr(task, "checks", None)

