"""Progress on standard error: on a terminal only, cleared when done; warnings always."""

from __future__ import annotations

import io
import time

from _llm_mistral_suite.progress import CountingReader, Progress, percent


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_silent_when_standard_error_is_not_a_terminal():
    pipe = io.StringIO()
    progress = Progress(pipe)
    with progress.waiting("OCR of a.pdf"):
        progress.show("x")
        progress.note("done")
    assert pipe.getvalue() == ""
    progress.warn("kept")
    assert pipe.getvalue() == "Warning: kept\n"


def test_waiting_counts_seconds_and_clears_its_line():
    terminal = Terminal()
    with Progress(terminal).waiting("OCR of a.pdf"):
        time.sleep(0.05)
    shown = terminal.getvalue()
    assert shown.startswith("\rOCR of a.pdf 0 s") and shown.endswith("\r" + " " * len("OCR of a.pdf 0 s") + "\r")


def test_a_note_stays_and_a_shorter_status_covers_a_longer_one():
    terminal = Terminal()
    progress = Progress(terminal)
    progress.show("a long status")
    progress.show("short")
    progress.note("3 pages read")
    assert terminal.getvalue() == "\ra long status\rshort        \r" + " " * 5 + "\r3 pages read\n"


def test_counting_reader_reports_bytes_read_since_the_last_rewind():
    seen = []
    reader = CountingReader(io.BytesIO(b"x" * 10), 10, seen.append)
    assert reader.read(4) == b"xxxx" and reader.read() == b"x" * 6
    reader.seek(0)
    reader.read(3)
    assert seen == [4, 10, 3] and reader.tell() == 3
    assert percent(450, 1000) == "45% (0.5 kB of 1.0 kB)" and percent(5_600_000, 12_400_000) == "45% (5.6 MB of 12.4 MB)"
