"""Where tierwise keeps its working files: one folder (`.tierwise` under the current directory unless a
compile names another), and everything else inside it. The only place these names are spelled."""

from __future__ import annotations

import os
from pathlib import Path

WORK_DIR = Path(".tierwise")


def datasets_dir() -> Path:
    """The shipped dev sets: inside the installed package (the wheel maps datasets/ to pipelines/datasets/),
    else the repository's datasets/ folder."""
    installed = Path(__file__).resolve().parent / "datasets"
    return installed if installed.is_dir() else Path(__file__).resolve().parents[1] / "datasets"


def work_dir(base: str | Path | None = None) -> Path:
    return Path(base) if base is not None else WORK_DIR


def cache_dir(base: str | Path | None = None) -> Path:
    """Disk cache of LM calls; TIERWISE_CACHE_DIR overrides the default (not an explicit `base`)."""
    if base is None and os.environ.get("TIERWISE_CACHE_DIR"):
        return Path(os.environ["TIERWISE_CACHE_DIR"])
    return work_dir(base) / "cache"


def outcomes_dir(base: str | Path | None = None) -> Path:
    return work_dir(base) / "outcomes"


def ledger_file(base: str | Path | None = None) -> Path:
    return work_dir(base) / "ledger.jsonl"


def studies_db(base: str | Path | None = None) -> Path:
    return work_dir(base) / "studies.db"


def study_storage(base: str | Path | None = None) -> str:
    """The default Optuna storage URL: a SQLite file in the work folder (created on first use)."""
    path = studies_db(base).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def program_output_log(base: str | Path | None = None) -> Path:
    """What a program printed and logged while the search re-ran it (optimizers.program_output)."""
    return work_dir(base) / "program-output.log"
