"""What a report is: its source, kind, tables and facts (metrics.report builds one from each kind of source)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

SPLITS = ("all", "dev", "holdout")
STEP_COLUMNS = ["query_id", "split", "segment", "predictor", "call", "rung", "tier", "confidence", "threshold",
                "decision", "cost_usd", "tokens"]


@dataclass
class Report:
    source: str
    kind: str  # artifact | replay artifact | study | ledger
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    summary: dict | None = None  # the optimizer's summary (artifacts only)
