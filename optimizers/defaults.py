"""Defaults of a compile, named once: the CLI's flags and the Python API read them from here.
Imports nothing, so `cli.py` can show them without loading the optimizer."""

TRIALS = 600  # on the full support set, 200 TPE trials missed the best ladders that 800 found (measured)
REPLAY_TRIALS = 300
HOLDOUT = 0.3
SEED = 0
LIMIT_MIN = 4  # a --limit sample smaller than this leaves no dev/holdout split worth the name


def artifact_name(task_name: str, decompose: bool = False) -> str:
    """TASK.tierwise.json; decomposed, TASK.decomposed.tierwise.json, so both forms can be compiled and compared."""
    return f"{task_name}.decomposed.tierwise.json" if decompose else f"{task_name}.tierwise.json"
