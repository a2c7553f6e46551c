"""A one-line progress bar for a terminal, redrawn in place with carriage returns.

``analyze`` shows two phases per file: the upload (bytes sent of the file's size) and the
analysis (windows done of those expected; without an estimate, windows done alone). The line is
erased when the file is done, so the terminal keeps only the one-line summaries. Whether to show
it at all is the caller's choice (a terminal on stderr, or a flag); this class only draws.
"""

from __future__ import annotations

from typing import IO, Literal

__all__ = ["ProgressBar", "Unit"]

Unit = Literal["bytes", "windows"]
BAR_CHARS = 20
LABEL_CHARS = 24
_KIB = 1024
_MIB = 1024 * 1024


class ProgressBar:
    """``label  phase [#####.....]  50%  1.2/2.4 MiB``, drawn on ``stream``.

    ``start`` begins a phase, ``update``/``advance`` move it (a total that turns out too small
    grows to what is done), ``clear`` erases the line. A line is written only when its text
    changes, so callers may update as often as they like.
    """

    def __init__(self, stream: IO[str], label: str) -> None:
        self._stream = stream
        self._label = _shorten(label, LABEL_CHARS)
        self._phase = ""
        self._unit: Unit = "bytes"
        self._done = 0.0
        self._total: float | None = None
        self._shown = ""

    def start(self, phase: str, unit: Unit, total: float | None = None) -> None:
        self._phase, self._unit, self._done, self._total = phase, unit, 0.0, total
        self._draw()

    def update(self, done: float, total: float | None = None) -> None:
        self._done = done
        if total is not None:
            self._total = total
        self._draw()

    def advance(self, amount: float) -> None:
        self.update(self._done + amount)

    def clear(self) -> None:
        if self._shown:
            self._stream.write("\r" + " " * len(self._shown) + "\r")
            self._stream.flush()
            self._shown = ""

    def render(self) -> str:
        """The line as it stands (without the carriage return)."""
        head = f"{self._label}  {self._phase}"
        if self._total is None or self._total <= 0:
            return f"{head}  {_amount(self._done, self._unit)}"
        total = max(self._total, self._done)
        filled = int(BAR_CHARS * self._done / total)  # full only when done
        bar = "#" * filled + "." * (BAR_CHARS - filled)
        percent = int(100 * self._done / total)
        return f"{head} [{bar}] {percent:3d}%  {_amount(self._done, self._unit, total)}"

    def _draw(self) -> None:
        line = self.render()
        if line == self._shown:
            return
        padding = " " * max(0, len(self._shown) - len(line))
        self._stream.write("\r" + line + padding)
        self._stream.flush()
        self._shown = line


def _shorten(text: str, chars: int) -> str:
    return text if len(text) <= chars else "…" + text[-(chars - 1) :]


def _amount(done: float, unit: Unit, total: float | None = None) -> str:
    """``1.2/2.4 MiB``, ``10/25 windows``; ``10 windows`` without a total."""
    if unit == "windows":
        count = f"{int(done)}" if total is None else f"{int(done)}/{int(total)}"
        return f"{count} windows"
    scale_of = total if total is not None else done
    if scale_of >= _MIB:
        scale, name, digits = _MIB, "MiB", 1
    elif scale_of >= _KIB:
        scale, name, digits = _KIB, "KiB", 0
    else:
        scale, name, digits = 1, "B", 0
    text = f"{done / scale:.{digits}f}"
    if total is not None:
        text += f"/{total / scale:.{digits}f}"
    return f"{text} {name}"
