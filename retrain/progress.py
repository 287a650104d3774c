"""Progress of a long job on a terminal: one line per stage, with a bar.

Ops run the retrain by hand too, and a silent minute of reading or tuning looks
like a hang. On a terminal each stage shows as a line with a spinner, a bar
with its count and its time (rich's progress display): records read from the
changelog, seconds of the tuning budget spent, ALS iterations done. Anywhere
else (a CronJob's log, a pipe) it prints nothing: the job's one JSON summary
line is what machines read. While the display is live, log records go through
it (rich's handler), above the lines.
"""

from __future__ import annotations

import logging
import sys
from types import TracebackType
from typing import TextIO

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)


class StageProgress:
    """Context manager: ``stage(name)`` starts a stage, ``advance(done, total)`` moves its bar."""

    def __init__(self, stream: TextIO | None = None, enabled: bool | None = None) -> None:
        stream = stream or sys.stderr
        self.enabled = stream.isatty() if enabled is None else enabled
        self._progress = Progress(
            SpinnerColumn(finished_text="[green]✓"),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(file=stream, force_terminal=self.enabled or None),
            disable=not self.enabled,
        )
        self._task: TaskID | None = None
        self._handlers: list[logging.Handler] | None = None

    def __enter__(self) -> StageProgress:
        self._progress.start()
        if self.enabled:
            # log records print above the live lines instead of through them
            root = logging.getLogger()
            self._handlers = root.handlers[:]
            handler = RichHandler(console=self._progress.console, show_path=False)
            handler.setLevel(min((h.level for h in self._handlers), default=logging.NOTSET))
            root.handlers = [handler]
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._finish()
        self._progress.stop()
        if self._handlers is not None:
            logging.getLogger().handlers = self._handlers

    def _finish(self) -> None:
        if self._task is not None:
            task = self._progress.tasks[self._task]
            total = task.total if task.total is not None else 1
            self._progress.update(self._task, total=total, completed=total)
            self._task = None

    def stage(self, name: str) -> None:
        """Close the current stage and open ``name`` (indeterminate until ``advance``)."""
        self._finish()
        self._task = self._progress.add_task(name, total=None)

    def describe(self, text: str) -> None:
        """Rename the current stage's line (the tuning search's trials and best score)."""
        if self._task is not None:
            self._progress.update(self._task, description=text)

    def advance(self, done: float, total: float) -> None:
        """Set the current stage's count (records read, seconds, iterations out of ``total``)."""
        if self._task is not None:
            self._progress.update(self._task, completed=done, total=max(total, done))
