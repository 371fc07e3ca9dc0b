"""While the search re-runs the program on recorded answers (hundreds of trials over the dev rows), what
the program prints and logs would repeat in the terminal once per trial and row: dspy.Refine prints each
failed attempt, dspy warns on each call it dislikes. That goes to a file instead, and the compile's notes
say how much and where. Recording (each row on each tier once) still prints to the terminal, and errors
still show."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

OURS = ("tierwise", "optimizers", "pipelines", "metrics")  # tierwise's own log records stay where they go


class _CountingFile:
    def __init__(self, file):
        self.file, self.lines = file, 0

    def write(self, text: str) -> int:
        self.lines += text.count("\n")
        return self.file.write(text)

    def flush(self) -> None:
        self.file.flush()


class ProgramOutput:
    """A context: stdout and the log records of the program's libraries (below ERROR) go to `path`."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.out: _CountingFile | None = None

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._stack = contextlib.ExitStack()
        self.out = _CountingFile(self._stack.enter_context(open(self.path, "w", encoding="utf-8")))
        self._stack.enter_context(contextlib.redirect_stdout(self.out))
        # Filters on the handlers, not the loggers: a logger's filter does not see its children's records.
        handlers = {*logging.getLogger().handlers, *logging.getLogger("dspy").handlers}
        for handler in handlers:
            handler.addFilter(self._divert)
            self._stack.callback(handler.removeFilter, self._divert)
        return self

    def __exit__(self, *exc):
        self._stack.close()

    def _divert(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR or record.name.split(".")[0] in OURS:
            return True
        self.out.write(f"{record.levelname} {record.name}: {record.getMessage()}\n")
        return False

    def note(self) -> str | None:
        if not self.out or not self.out.lines:
            return None
        return (f"the program printed or logged {self.out.lines} lines while the search re-ran it on recorded "
                f"answers; they are in {self.path} (recording showed each row on each tier once)")
