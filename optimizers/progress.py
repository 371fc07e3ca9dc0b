"""Live progress on stderr: calls made, money spent, trials, best point so far."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


# Stderr a file or a pipe (a log, CI, nohup): a bar cannot redraw there, so a plain line at most this often.
PLAIN_EVERY_S = 15.0


class LiveProgress:
    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        # stderr=True, not file=sys.stderr: the console writes to whatever sys.stderr is at each frame.
        # Loading a local model points file descriptor 2 at the llama.cpp log and sys.stderr at a copy
        # of the terminal (pipelines.local); a console holding the old stream would draw into the log.
        # Nor may the display swap sys.stderr for a proxy it later restores: that would restore the
        # stream now pointing at the log, and the final error line would vanish there.
        self.console = Console(stderr=True)
        self.plain = enabled and not self.console.is_terminal  # plain lines instead of a bar (_line)
        self._printed_at = 0.0
        self._shown = None  # (stage, count) of the last plain line
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("{task.fields[status]}"),
                                 console=self.console, transient=False, disable=not enabled or self.plain,
                                 redirect_stderr=False)
        self.task_id = None
        self.best = None

    def __enter__(self):
        return self  # the display starts with the first stage: a run refused before it draws nothing

    def __exit__(self, *exc):
        if self.task_id is None:
            return
        if exc[0] is not None and self.enabled:
            # The error line stands alone: no half-finished bar, nor the blank line Progress.stop adds
            # when stderr is not a terminal.
            self.progress.live.transient = True
            self.progress.live.stop()
            return
        self._line(final=True)  # the last stage's count, as a bar's last frame would show it
        self.progress.__exit__(*exc)

    def stage(self, name: str, total: int, done: int = 0) -> None:
        """A new stage, `done` of its `total` already there (a resumed study's trials)."""
        if self.task_id is None:
            self.progress.__enter__()
        if self.task_id is not None:
            self.progress.update(self.task_id, completed=self.progress.tasks[self.task_id].total)
            self._line(final=True)  # the stage before ends on its last count, however soon this one starts
        self.task_id = self.progress.add_task(name, total=total, completed=min(done, total), status="")
        self._printed_at = time.monotonic()

    def advance(self, budget) -> None:
        self.progress.update(self.task_id, advance=1,
                             status=f"paid calls {budget.paid_calls}  spent ${budget.spent_usd:.6f}")
        self._line()

    def _line(self, final: bool = False) -> None:
        """Where no bar can be drawn: the stage, its count and status as one line, every PLAIN_EVERY_S of a
        stage, and its last count when it ends unless that line was just printed (a compile refused within
        seconds prints its one error line alone, as at a terminal)."""
        if not self.plain:
            return
        task = self.progress.tasks[self.task_id]
        now = time.monotonic()
        shown = (self.task_id, task.completed)
        if shown != self._shown and (final or now - self._printed_at >= PLAIN_EVERY_S):
            self._printed_at, self._shown = now, shown
            status = f"  {task.fields['status']}" if task.fields.get("status") else ""
            self.console.print(f"{task.description}: {task.completed:g}/{task.total:g}{status}", highlight=False,
                               markup=False, soft_wrap=True)

    def trial(self, study, trial, budget) -> None:
        quality, cost = trial.values
        if self.best is None or quality > self.best[0] or (quality == self.best[0] and cost < self.best[1]):
            self.best = (quality, cost)
        self.progress.update(self.task_id, advance=1,
                             status=f"best quality {self.best[0]:.3f} at ${self.best[1]:.6f}/1k  "
                                    f"paid calls {budget.paid_calls}")
        self._line()
