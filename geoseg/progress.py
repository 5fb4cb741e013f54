"""How long work reports itself: a bar on a terminal, JSON lines for programs, or nothing.

``geoseg --progress-json COMMAND …`` turns every report of the command into one JSON
object per line on stderr, for a program that runs geoseg (the QGIS plugin reads them):

* ``{"event": "progress", "stage": "predict", "done": 12, "total": 40, "fraction": 0.3}``:
  the work's fraction done, over the whole command (training: over all epochs);
* ``{"event": "log", "message": "epoch 1/4  loss …"}``: what geoseg would print as a line;
* ``{"event": "warning", "message": "…"}``: a warning, the one line the CLI prints;
* ``{"event": "error", "message": "…", "exit_code": 1}``: the one-line error, last.

stdout keeps the command's result lines (``mask: …``) as they are.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
from collections.abc import Iterator
from typing import Any

JSON = False  # set by ``geoseg --progress-json``
STEP = 0.01  # a progress event at least every 1 % of the work (and at its end)
_lock = threading.Lock()
_within = (0.0, 1.0)  # the share of the command the bars now made report on


@contextlib.contextmanager
def within(start: float, stop: float) -> Iterator[None]:
    """Bars made inside report on ``start`` … ``stop`` of the command's fraction (a
    command of several stages: a teacher's map, then training)."""
    global _within
    outer = _within
    low, size = outer[0], outer[1] - outer[0]
    _within = (low + size * start, low + size * stop)
    try:
        yield
    finally:
        _within = outer


def wanted(flag: bool | None) -> bool:
    """Whether to report progress: always in JSON mode; else ``--progress/--no-progress``,
    by default when stderr is a terminal."""
    if JSON:
        return True
    return sys.stderr.isatty() if flag is None else flag


def emit(event: str, **fields: Any) -> None:
    """Write one JSON event line to stderr (whole lines, from any thread)."""
    line = json.dumps({"event": event, **fields}, ensure_ascii=False, default=str)
    with _lock:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()


class JsonBar:
    """A progress bar as JSON events: ``fraction`` of the whole command is
    ``start + span * done / total``."""

    def __init__(self, total: int, stage: str, start: float = 0.0, span: float = 1.0) -> None:
        low, high = _within
        self.total, self.stage = max(int(total), 0), stage
        self.start, self.span = low + (high - low) * start, (high - low) * span
        self.n = 0
        self.said = -1.0
        self._report(force=True)

    def update(self, n: int = 1) -> None:
        self.n += n
        self._report()

    def set(self, done: int, total: int) -> None:
        """The work as another counter says it is (distributed's scheduler)."""
        self.n, self.total = done, max(int(total), 0)
        self._report()

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        """tqdm's, for the bar's text: nothing to say in JSON."""

    def close(self) -> None:
        if self.total and self.n >= self.total:
            self._report(force=self.said < self.start + self.span)

    def __enter__(self) -> JsonBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _report(self, force: bool = False) -> None:
        done = min(self.n / self.total, 1.0) if self.total else 0.0
        fraction = round(self.start + self.span * done, 4)
        if force or fraction - self.said >= STEP or (done >= 1.0 and fraction > self.said):
            self.said = fraction
            emit("progress", stage=self.stage, done=self.n, total=self.total,
                 fraction=fraction)


def bar(total: int, stage: str, *, unit: str = "task", start: float = 0.0,
        span: float = 1.0) -> Any:
    """A progress bar over ``total`` units: JSON events in JSON mode (over ``start`` …
    ``start + span`` of the command), else a tqdm bar on stderr."""
    if JSON:
        return JsonBar(total, stage, start, span)
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, desc=stage, file=sys.stderr, leave=False)
