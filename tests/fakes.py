"""A scripted stand-in for real models: answers from the dataset's gold labels, right or wrong by
a rule the test chooses, with the confidence the test chooses (as token log-probabilities)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from pipelines.tasks import DATASETS_DIR

FAKE_TIERS = """
[[tier]]
name = "small"
model = "fake/small"
input_per_1m = 0.1
output_per_1m = 0.4

[[tier]]
name = "big"
model = "fake/big"
input_per_1m = 1.0
output_per_1m = 4.0
"""


def write_tiers(tmp_path: Path) -> Path:
    path = tmp_path / "tiers.toml"
    path.write_text(FAKE_TIERS)
    return path


def support_rows() -> dict[str, dict]:
    rows = [json.loads(line) for line in open(DATASETS_DIR / "support.jsonl")]
    return {r["message"]: r for r in rows}


def _message(messages) -> str:
    text = messages[-1]["content"]
    found = re.search(r"\[\[ ## message ## \]\]\n(.*?)\n\n", text, re.S)
    return found.group(1) if found else text


def support_script(small_right=lambda row: row["difficulty"] == "simple"):
    """big: always right, confident. small: right (confidence 0.95) where `small_right(row)`,
    else a wrong label with confidence 0.4. Fields follow the ChatAdapter format."""
    rows = support_rows()

    def script(tier, messages):
        row = rows[_message(messages)]
        system = messages[0]["content"]
        field = "intent" if "`intent`" in system else "order_id"
        gold = row[field]
        if tier == "big" or small_right(row):
            value, confidence = gold, 0.95
        else:
            value = ("billing" if gold != "billing" else "shipping") if field == "intent" else \
                ("none" if gold != "none" else "Z99999")
            confidence = 0.4
        return f"[[ ## {field} ## ]]\n{value}\n\n[[ ## completed ## ]]", confidence

    return script
