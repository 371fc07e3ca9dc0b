"""Cost ledger: one record per LM call (tier, model, predictor, tokens, USD, latency, cache hit),
plus cascade decisions (confidence, threshold, escalated). Readable as a pandas DataFrame and
appendable to a JSONL file that survives restarts."""

from __future__ import annotations

import fcntl
import json
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path


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
    estimator: str = ""
    confidence: float | None = None
    threshold: float | None = None
    decision: str = ""  # accepted | escalated | failed | fallback
    error: str = ""
    ts: float = field(default_factory=time.time)
    call_id: str = field(default_factory=lambda: uuid.uuid4().hex)


class Ledger:
    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else None
        self.records: list[CallRecord] = []
        self._lock = threading.Lock()

    def add(self, record: CallRecord) -> CallRecord:
        with self._lock:
            self.records.append(record)
        if self.path is not None:
            self._append_line(json.dumps(asdict(record)))
        return record

    def _append_line(self, line: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)  # several processes may share one ledger file
            f.write(line + "\n")
            fcntl.flock(f, fcntl.LOCK_UN)

    def annotate(self, record: CallRecord, **changes) -> None:
        """Add cascade decisions to a record already taken (in memory; the file gets a decision line)."""
        for key, value in changes.items():
            setattr(record, key, value)
        if self.path is not None:
            self._append_line(json.dumps(asdict(record)))  # read_frame keeps the last line per call_id

    def total_cost(self) -> float:
        return sum(r.cost_usd for r in self.records)

    def to_frame(self):
        import pandas as pd  # report time only: the run time never imports pandas eagerly

        return pd.DataFrame([asdict(r) for r in self.records], columns=list(CallRecord.__dataclass_fields__))

    @staticmethod
    def read_frame(path: str | Path):
        """The ledger file as a DataFrame, one row per call with its final decision."""
        import pandas as pd

        rows = {}
        with open(path) as f:
            for line in f:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line torn by a process killed mid-write: the others stand
                rows[row["call_id"]] = row
        return pd.DataFrame(list(rows.values()), columns=list(CallRecord.__dataclass_fields__))
