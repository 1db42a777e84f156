"""Progress on standard error while a long upload or request runs: shown on a terminal, never in pipes or logs."""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from typing import Any, BinaryIO, Iterator, Optional, TextIO


class Progress:
    """One status line on ``stream`` (standard error), rewritten in place; silent unless it is a terminal."""

    def __init__(self, stream: Optional[TextIO] = None, enabled: Optional[bool] = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = bool(self.stream.isatty()) if enabled is None else enabled
        self._lock = threading.Lock()
        self._shown = 0  # characters on the status line now

    def show(self, text: str) -> None:
        """Replace the status line with ``text``."""
        if not self.enabled:
            return
        with self._lock:
            padding = " " * max(0, self._shown - len(text))
            self.stream.write(f"\r{text}{padding}")
            self.stream.flush()
            self._shown = len(text)

    def clear(self) -> None:
        if not self.enabled or not self._shown:
            return
        with self._lock:
            self.stream.write("\r" + " " * self._shown + "\r")
            self.stream.flush()
            self._shown = 0

    def note(self, text: str) -> None:
        """A line that stays (the status line is cleared first)."""
        if self.enabled:
            self.clear()
            self.stream.write(text + "\n")
            self.stream.flush()

    def warn(self, text: str) -> None:
        """A warning line, shown whether or not standard error is a terminal."""
        self.clear()
        self.stream.write(f"Warning: {text}\n")
        self.stream.flush()

    @contextlib.contextmanager
    def waiting(self, text: str) -> Iterator[None]:
        """``text`` with the seconds spent so far, updated every second until the block ends."""
        if not self.enabled:
            yield
            return
        stop = threading.Event()
        start = time.monotonic()

        def tick() -> None:
            while not stop.is_set():
                self.show(f"{text} {time.monotonic() - start:.0f} s")
                stop.wait(1.0)

        ticker = threading.Thread(target=tick, name="mistral-progress", daemon=True)
        ticker.start()
        try:
            yield
        finally:
            stop.set()
            ticker.join()
            self.clear()

    def reading(self, source: BinaryIO, total: int, label: str) -> "CountingReader":
        """``source`` wrapped so that reading it (an upload) shows how much has gone."""
        return CountingReader(source, total, lambda done: self.show(f"{label}: {percent(done, total)}"))


def percent(done: int, total: int) -> str:
    """``45% (5.6 MB of 12.4 MB)``"""
    share = 100 * done // total if total else 100
    return f"{share}% ({file_size(done)} of {file_size(total)})"


def file_size(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.1f} kB"


class CountingReader:
    """A binary file that reports, after each read, how many bytes have been read since the last rewind."""

    def __init__(self, source: BinaryIO, total: int, report: Any) -> None:
        self.source, self.total, self.report = source, total, report
        self.done = 0

    def read(self, size: int = -1) -> bytes:
        block = self.source.read(size)
        self.done += len(block)
        self.report(self.done)
        return block

    def seek(self, offset: int, whence: int = 0) -> int:
        position = self.source.seek(offset, whence)
        if whence == 0:
            self.done = position
        return position

    def tell(self) -> int:
        return self.source.tell()

    def fileno(self) -> int:
        return self.source.fileno()

    def close(self) -> None:
        self.source.close()

    def __enter__(self) -> "CountingReader":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()
