"""Cost ledger: one record per LM call (tier, model, predictor, tokens, USD, latency, cache hit),
plus cascade decisions (confidence, threshold, escalated). Readable as a pandas DataFrame and
appendable to a JSONL file that survives restarts."""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pipelines.errors import DatasetError, LedgerError


# Calls a ledger keeps in memory (records, to_frame); at twice as many the oldest go (about 25-50 MB).
KEEP_IN_MEMORY = 50_000
SEMANTIC_TIER = "semantic-cache"  # pipelines.semantic_cache's lookups, recorded as calls of this tier

# An annotation line of the ledger file: {"call_id": ..., "annotation": true, <the fields the cascade set>}.
ANNOTATION = "annotation"


@dataclass
class CallRecord:
    tier: str
    model: str
    predictor: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float  # what this call cost now: 0 on a cache hit
    saved_usd: float  # what a cache hit saved (the original call's cost)
    latency_s: float
    cache_hit: bool
    request_id: str = ""
    cached_tokens: int = 0  # of prompt_tokens, read from the provider's prompt cache (priced at its rate)
    cache_write_tokens: int = 0  # of prompt_tokens, written to it (Anthropic prices writes apart)
    rung: int = -1
    call: int = 0  # which call of its predictor in the request (a program may call one per item of a list)
    estimator: str = ""
    confidence: float | None = None
    threshold: float | None = None
    decision: str = ""  # accepted | escalated | failed | fallback
    error: str = ""
    similarity: float | None = None  # a semantic-cache lookup (tier "semantic-cache"): the nearest stored request's
    matched_request: str = ""  # its request_id: which stored request answered (on a hit)
    matched_text: str = ""
    ts: float = field(default_factory=time.time)
    call_id: str = field(default_factory=lambda: uuid.uuid4().hex)


class Ledger:
    def __deepcopy__(self, memo):  # a copied program (dspy.BestOfN, Refine) shares its ledger
        return self

    def __init__(self, path: str | Path | None = None, keep: int | None = None):
        self.path = Path(path) if path else None
        self.records: list[CallRecord] = []  # the latest `keep` calls (its file, when it has one, keeps every call)
        self.keep = KEEP_IN_MEMORY if keep is None else keep
        self.calls, self.paid_usd, self.cache_hits = 0, 0.0, 0  # every call since it was made, however many kept
        self._lock = threading.Lock()
        if self.path is not None:
            self._check_writable()

    def _check_writable(self) -> None:
        """Refuse a ledger path that cannot be appended to before any call is paid for (a directory, a
        read-only file or folder): otherwise each paid call would be lost from the record."""
        path = self.path
        if path.is_dir():
            raise LedgerError(f"ledger {path}: is a directory; give a file such as {path / 'ledger.jsonl'}")
        if path.exists():
            if not os.access(path, os.W_OK):
                raise LedgerError(f"ledger {path}: the file is not writable")
            return
        folder = next((p for p in path.parents if p.exists()), Path("."))
        if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
            raise LedgerError(f"ledger {path}: cannot create it ({folder} is not a writable folder)")

    def add(self, record: CallRecord) -> CallRecord:
        with self._lock:
            self.records.append(record)
            self.calls += 1
            self.paid_usd += record.cost_usd
            self.cache_hits += record.cache_hit and record.tier != SEMANTIC_TIER  # the exact call cache's hits
            if len(self.records) >= 2 * self.keep:  # a service runs for weeks: memory holds the latest calls
                del self.records[:len(self.records) - self.keep]
        if self.path is not None:
            self._append_line(json.dumps(asdict(record)))
        return record

    def _append_line(self, line: str) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a+b") as f:
                fcntl.flock(f, fcntl.LOCK_EX)  # several processes may share one ledger file
                data = line.encode() + b"\n"
                if f.seek(0, os.SEEK_END) > 0:
                    f.seek(-1, os.SEEK_END)
                    if f.read(1) != b"\n":  # a line torn by a killed writer: do not glue this record to it
                        data = b"\n" + data
                f.write(data)
                f.flush()
                fcntl.flock(f, fcntl.LOCK_UN)
        except OSError as e:
            raise LedgerError(f"ledger {self.path}: cannot append ({e.strerror}); the run stopped so that no "
                              "call goes unrecorded (calls already paid are in the cache)") from None

    def annotate(self, record: CallRecord, **changes) -> None:
        """Add cascade decisions to a record already taken. The file gets an annotation line: the call_id and
        the changed fields only, no cost, so summing a column of the file counts each call once (read_frame
        merges it into the call's line)."""
        for key, value in changes.items():
            setattr(record, key, value)
        if self.path is not None:
            self._append_line(json.dumps({"call_id": record.call_id, ANNOTATION: True, **changes}))

    def total_cost(self) -> float:
        """What every call since this ledger was made cost (0 for a cache hit), kept in memory or not."""
        return self.paid_usd

    def to_frame(self):
        import pandas as pd  # report time only: the run time never imports pandas eagerly

        return pd.DataFrame([asdict(r) for r in self.records], columns=list(CallRecord.__dataclass_fields__))

    @staticmethod
    def read_frame(path: str | Path):
        """The ledger file as a DataFrame, one row per call with its final decision."""
        import pandas as pd

        rows = {}
        with open(path, "rb") as f:
            for number, raw in enumerate(f, 1):
                try:
                    row = json.loads(raw.decode("utf-8"))
                except (json.JSONDecodeError, UnicodeDecodeError):
                    continue  # a line torn by a process killed mid-write: the others stand
                if not isinstance(row, dict) or not isinstance(row.get("call_id"), str):
                    raise DatasetError(f"{path}:{number}: not a ledger record (expected a JSON object with a call_id)")
                # an annotation line adds to its call's line (older ledgers repeated the whole record: last wins)
                rows[row["call_id"]] = {**rows.get(row["call_id"], {}), **row}
        calls = [row for row in rows.values() if "tier" in row]  # an annotation whose call line was torn: no call
        return pd.DataFrame(calls, columns=list(CallRecord.__dataclass_fields__))
