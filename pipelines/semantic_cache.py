"""Semantic cache: reuse a predictor's earlier answer when a new request is close enough in meaning.

Opt-in per predictor (PredictorPolicy.semantic = {"threshold": t, ...}). Before a predictor's ladder
runs, its request text (pipelines.routing.route_text) is embedded with the local sentence encoder
(pipelines.embeddings, each text once) and compared, by cosine similarity, with the stored requests
of the same predictor and signature whose answer came from a tier at least as good as the ladder's
start tier. The nearest one at or above the threshold answers at zero model tokens; otherwise the
ladder runs and its answer is stored.

Similarity alone is known to be unsafe (GPTCache, LiteLLM): two messages that differ only in an order
number embed almost alike. So a stored request is a candidate only when its guard key equals the new
one's: every token holding a digit (order ids, amounts, phone numbers, numeric dates), number words,
month/weekday/relative-day words, whether the text is negated, and any named entities the policy
declares (regular expressions). Requests whose entities differ never hit each other, whatever the
similarity.

Entries live in memory (a matrix per predictor) and, given a folder, in a diskcache store too, so a
restarted process keeps them; TTL and a size limit (oldest entries go first) apply to both.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field

import numpy as np

from pipelines.errors import ConfigError
from pipelines.ledger import SEMANTIC_TIER  # noqa: F401 - the trail's and the ledger's name for a lookup
from pipelines.tiers import is_number

DEFAULT_MAX_ENTRIES = 10_000
EMBED_MEMO = 8192  # request texts whose vectors are kept in memory (embed() keeps all of them on disk)

_WORD = re.compile(r"[\w'’]+")
_UNITS = "zero one two three four five six seven eight nine".split()
_TEENS = "ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split()
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()
_ORDINALS = ("first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth thirteenth "
             "fourteenth fifteenth sixteenth seventeenth eighteenth nineteenth twentieth thirtieth fortieth "
             "fiftieth sixtieth seventieth eightieth ninetieth hundredth thousandth millionth").split()
_NUMBER_WORDS = set(_UNITS + _TEENS + _TENS + _ORDINALS + "hundred thousand million billion dozen once twice "
                    "thrice half quarter double triple last".split())
_DATE_WORDS = {**{m: m[:3] for m in "january february march april may june july august september october "
                  "november december".split()},
               **{m: m for m in "jan feb mar apr jun jul aug sep sept oct nov dec".split()},
               **{d: d[:3] for d in "monday tuesday wednesday thursday friday saturday sunday".split()},
               **{w: w for w in "today tomorrow yesterday tonight weekend week month year".split()}}
_NEGATIONS = set("not no never nothing none nobody nowhere neither nor cannot without cant dont didnt doesnt isnt "
                 "wasnt werent wont havent hasnt hadnt couldnt wouldnt shouldnt arent aint".split())


def guard_key(text: str, entity_patterns: tuple = ()) -> tuple:
    """What must be equal for two requests to share an answer (see the module docstring)."""
    words = [w.replace("’", "'").lower() for w in _WORD.findall(str(text))]
    digits = sorted({w.strip("'").upper() for w in words if any(c.isdigit() for c in w)})
    numbers = sorted({w for w in words if w in _NUMBER_WORDS})
    dates = sorted({_DATE_WORDS[w] for w in words if w in _DATE_WORDS})
    negated = any(w.replace("'", "") in _NEGATIONS or w.endswith("n't") for w in words)
    named = sorted({m.group().lower() for p in entity_patterns for m in p.finditer(str(text))})
    return (tuple(digits), tuple(numbers), tuple(dates), negated, tuple(named))


def compile_patterns(patterns, where: str) -> tuple:
    try:
        return tuple(re.compile(p, re.I) for p in patterns or ())
    except (re.error, TypeError) as e:
        raise ConfigError(f"{where}: a declared entity pattern is not a regular expression ({e})") from None


SETTINGS_KEYS = ("threshold", "ttl_s", "max_entries", "entities")


def validate_settings(settings: dict, where: str) -> None:
    """A policy's `semantic` entry: {"threshold": 0..1, "ttl_s": s|None, "max_entries": n, "entities": [regex]}.
    Strict: a misspelt key ("ttl") or a quoted number would otherwise be ignored or read another way."""
    if not isinstance(settings, dict):
        raise ConfigError(f"{where}: 'semantic' must be a table such as {{\"threshold\": 0.9}}")
    unknown = sorted(set(settings) - set(SETTINGS_KEYS))
    if unknown:
        raise ConfigError(f"{where}: 'semantic' has unknown key(s) {unknown}; it takes {list(SETTINGS_KEYS)}")
    threshold, ttl = settings.get("threshold"), settings.get("ttl_s")
    size = settings.get("max_entries", DEFAULT_MAX_ENTRIES)
    if not (is_number(threshold) and 0.0 <= threshold <= 1.0):
        raise ConfigError(f"{where}: semantic 'threshold' must be a number in [0, 1], got {threshold!r}")
    if ttl is not None and not (is_number(ttl) and ttl > 0):
        raise ConfigError(f"{where}: semantic 'ttl_s' must be a number of seconds > 0 (or absent), got {ttl!r}")
    if not is_number(size, whole=True) or size < 1:
        raise ConfigError(f"{where}: semantic 'max_entries' must be a whole number >= 1, got {size!r}")
    entities = settings.get("entities", ())
    if not isinstance(entities, (list, tuple)) or not all(isinstance(p, str) for p in entities):
        raise ConfigError(f"{where}: semantic 'entities' must be a list of regular expressions, got {entities!r}")
    compile_patterns(entities, where)


def signature_key(predictor) -> str:
    """Same signature: its instructions, fields and demos (what its answer depends on besides the input)."""
    sig = predictor.signature
    blob = json.dumps({"instructions": sig.instructions, "inputs": list(sig.input_fields),
                       "outputs": list(sig.output_fields),
                       "demos": [dict(d) if hasattr(d, "keys") else str(d) for d in getattr(predictor, "demos", [])]},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class Entry:
    request_id: str  # which stored request answered (the ledger's request_id of that call)
    text: str
    guard: tuple
    tier_rank: int
    tier: str
    outputs: dict
    cost_usd: float  # what the ladder paid for it: what a hit saves
    stored_at: float
    candidates: list = field(default_factory=list)  # the other candidates' outputs, for a predictor asking n > 1


@dataclass
class Lookup:
    hit: bool
    similarity: float | None  # the nearest guarded candidate's, None when there was none
    threshold: float
    entry: Entry | None  # the nearest guarded candidate (the answer on a hit)
    latency_s: float


class _Index:
    """One predictor+signature's entries: vectors as rows of a matrix, entries beside them."""

    def __init__(self):
        self.vectors = np.zeros((0, 0), np.float32)
        self.entries: list[Entry] = []
        self.keys: list[str] = []


class SemanticCache:
    """Thread-safe store of (request vector, guard key, answer) per predictor and signature."""

    def __init__(self, ttl_s: float | None = None, max_entries: int = DEFAULT_MAX_ENTRIES, directory=None,
                 clock=time.time):
        self.ttl_s, self.max_entries, self.clock = ttl_s, max_entries, clock
        self._indexes: dict[str, _Index] = {}
        self._lock = threading.Lock()
        self._memo: dict[str, np.ndarray] = {}
        self._disk = None
        if directory is not None:
            from pipelines.cache import open_store

            self._disk = open_store(directory, "semantic cache", "Move the folder aside: the cache starts empty")
            self._load()

    # --- embeddings ------------------------------------------------------------------------------
    def vector(self, text: str) -> np.ndarray:
        vec = self._memo.get(text)
        if vec is None:
            from pipelines.embeddings import embed

            vec = embed([text])[0]
            if len(self._memo) >= EMBED_MEMO:
                self._memo.clear()
            self._memo[text] = vec
        return vec

    # --- lookup and store ------------------------------------------------------------------------
    def lookup(self, space: str, text: str, guard: tuple, min_rank: int, threshold: float) -> Lookup:
        started = time.perf_counter()
        vec = self.vector(text)
        now = self.clock()
        with self._lock:
            index = self._indexes.get(space)
            best, best_sim = None, None
            if index is not None and index.entries:
                sims = index.vectors @ vec
                for i in np.argsort(-sims):
                    entry = index.entries[i]
                    if entry.guard != guard or entry.tier_rank < min_rank or self._expired(entry, now):
                        continue
                    best, best_sim = entry, float(sims[i])
                    break
        hit = best is not None and best_sim >= threshold
        return Lookup(hit, best_sim, threshold, best, time.perf_counter() - started)

    def store(self, space: str, text: str, guard: tuple, tier: str, tier_rank: int, outputs: dict,
              cost_usd: float, request_id: str = "", candidates=()) -> Entry:
        entry = Entry(request_id or uuid.uuid4().hex[:12], text, guard, tier_rank, tier, dict(outputs),
                      float(cost_usd), self.clock(), [dict(c) for c in candidates])
        key = f"{space}|{uuid.uuid4().hex}"
        self._insert(space, key, entry, self.vector(text))
        if self._disk is not None:
            self._disk.set(key, {"space": space, "entry": entry.__dict__, "vector": self.vector(text).tobytes()},
                           expire=self.ttl_s)
        return entry

    def __len__(self) -> int:
        return sum(len(i.entries) for i in self._indexes.values())

    def _insert(self, space, key, entry, vec) -> None:
        dropped = []
        with self._lock:
            index = self._indexes.setdefault(space, _Index())
            if not index.entries:
                index.vectors = np.zeros((0, len(vec)), np.float32)
            now = self.clock()
            drop = {i for i, e in enumerate(index.entries) if self._expired(e, now)}
            live = [i for i in range(len(index.entries)) if i not in drop]
            drop.update(live[:max(len(live) + 1 - self.max_entries, 0)])  # over the limit: the oldest go first
            if drop:
                keep = [i for i in range(len(index.entries)) if i not in drop]
                dropped = [index.keys[i] for i in sorted(drop)]
                index.vectors = index.vectors[keep]
                index.entries = [index.entries[i] for i in keep]
                index.keys = [index.keys[i] for i in keep]
            index.vectors = np.vstack([index.vectors, vec[None, :].astype(np.float32)])
            index.entries.append(entry)
            index.keys.append(key)
        if self._disk is not None:
            for old in dropped:
                self._disk.delete(old)

    def _expired(self, entry: Entry, now: float) -> bool:
        return self.ttl_s is not None and now - entry.stored_at > self.ttl_s

    def _load(self) -> None:
        rows = []
        for key in self._disk.iterkeys():
            value = self._disk.get(key)
            if value is not None:
                rows.append((key, value))
        for key, value in sorted(rows, key=lambda kv: kv[1]["entry"]["stored_at"]):
            e = value["entry"]
            entry = Entry(e["request_id"], e["text"], _tuples(e["guard"]), int(e["tier_rank"]), e["tier"],
                          e["outputs"], float(e["cost_usd"]), float(e["stored_at"]), e.get("candidates") or [])
            self._insert(value["space"], key, entry, np.frombuffer(value["vector"], np.float32))

    def close(self) -> None:
        if self._disk is not None:
            self._disk.close()
            self._disk = None


def _tuples(value):
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value
