"""A dependency-free progress bar for long CLI commands, on stderr.

On a terminal it redraws one line at most ten times a second; otherwise (a
log file, CI) it prints a plain line every tenth of the way, so logs stay
short and readable.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO


class Progress:
    """Progress of one phase: ``advance(n)`` as work is done, ``finish()`` at the end."""

    def __init__(self, label: str, total: int, stream: TextIO | None = None) -> None:
        self.label = label
        self.total = max(total, 1)
        self.done = 0
        self.stream = sys.stderr if stream is None else stream
        self.tty = self.stream.isatty()
        self.started = time.monotonic()
        self._drawn_at = 0.0
        self._tenth = 0

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if self.tty:
            if now - self._drawn_at >= 0.1:
                self._drawn_at = now
                self.stream.write("\r" + self._line(now))
                self.stream.flush()
        elif n and self.done * 10 // self.total > self._tenth:
            self._tenth = self.done * 10 // self.total
            self.stream.write(self._line(now) + "\n")
            self.stream.flush()

    def finish(self) -> float:
        """End the phase; returns its duration in seconds."""
        now = time.monotonic()
        line = self._line(now)
        if self.tty:
            self.stream.write("\r" + line + "\n")
        elif self._tenth < 10:  # the last tenth's line was not printed yet
            self.stream.write(line + "\n")
        self.stream.flush()
        return now - self.started

    def _line(self, now: float) -> str:
        elapsed = max(now - self.started, 1e-9)
        fraction = min(self.done / self.total, 1.0)
        bar = "#" * int(fraction * 30)
        rate = self.done / elapsed
        left = (self.total - self.done) / rate if rate > 0 and self.done < self.total else 0.0
        return (
            f"{self.label:<10} [{bar:<30}] {self.done:>12,}/{self.total:,}"
            f"  {rate:>10,.0f}/s  {elapsed:6.1f}s  eta {left:5.0f}s"
        )


#: How long work reports how far it has got: ``(phase, done, total)``, with
#: ``done`` counted from the start of the phase. The storage layer and the
#: seeder call one of these; only the command line draws.
OnProgress = Callable[[str, int, int], None]


def no_progress(phase: str, done: int, total: int) -> None:
    """An :data:`OnProgress` for callers that show nothing."""


class Bars:
    """An :data:`OnProgress` that draws each phase as a :class:`Progress` bar.

    A report naming another phase finishes the bar in hand and starts the
    next; :meth:`close` finishes the last one.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream
        self._bar: Progress | None = None

    def __call__(self, phase: str, done: int, total: int) -> None:
        if self._bar is None or self._bar.label != phase:
            self.close()
            self._bar = Progress(phase, total, self.stream)
        self._bar.advance(done - self._bar.done)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.finish()
            self._bar = None

    def __enter__(self) -> Bars:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
