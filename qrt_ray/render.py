"""Plain-text tables and a progress line for the CLI and the demo."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A fixed-width text table; numbers right-aligned."""
    cells = [[_fmt(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, v in enumerate(row):
            widths[i] = max(widths[i], len(v))
    numeric = [
        all(isinstance(r[i], (int, float)) for r in rows if r[i] is not None) and bool(rows)
        for i in range(len(headers))
    ]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ).rstrip()

    out = [line(list(headers)), line(["-" * w for w in widths])]
    out.extend(line(r) for r in cells)
    return "\n".join(out)


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


class Progress:
    """A one-line progress display on a terminal; a plain line now and then elsewhere.

    On a terminal the line redraws at most 10 times a second. Piped to a file or a CI
    log it writes a full line at most every ``log_every_s`` seconds, so long work still
    shows it is moving.
    """

    def __init__(
        self, total: int, label: str, stream: TextIO = sys.stderr, log_every_s: float = 30.0
    ) -> None:
        self.total = total
        self.label = label
        self.stream = stream
        self.start = time.monotonic()
        self._tty = stream.isatty()
        self._last = -1.0
        self._log_every_s = log_every_s

    def update(self, done: int, detail: str = "") -> None:
        """Report ``done`` of ``total`` finished (rate-limited)."""
        now = time.monotonic()
        elapsed = now - self.start
        if self._tty and now - self._last >= 0.1:
            self._last = now
            width = 30
            filled = int(width * done / max(1, self.total))
            bar = "#" * filled + "." * (width - filled)
            line = f"{self.label} [{bar}] {done}/{self.total} {elapsed:5.1f}s {detail}"
            self.stream.write("\r" + line)
            self.stream.flush()
        elif not self._tty and now - max(self._last, self.start) >= self._log_every_s:
            self._last = now
            line = f"{self.label}: {done}/{self.total} after {elapsed:.0f}s {detail}".rstrip()
            self.stream.write(line + "\n")
            self.stream.flush()

    def close(self, detail: str = "") -> None:
        """Finish the line."""
        elapsed = time.monotonic() - self.start
        end = f"{self.label}: {self.total}/{self.total} in {elapsed:.1f}s {detail}".rstrip()
        self.stream.write(("\r" if self._tty else "") + end + "\n")
        self.stream.flush()
