"""The plugin's own files in llm's user directory: lenient reads that warn once, and locked, atomic updates."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from .errors import MistralSuiteError

T = TypeVar("T")
LOCK_TIMEOUT = 30.0  # seconds to wait for another `llm` process to finish writing the same file

_warned: set[str] = set()


def warn_once(path: Path, problem: str) -> None:
    """One ``Warning: ...`` line on stderr per file and problem per process (the hooks run more than once)."""
    message = f"Warning: {path}: {problem}"
    if message in _warned:
        return
    _warned.add(message)
    import click

    click.echo(message, err=True)


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON object from a file of ours; ``{}`` when missing, and ``{}`` with a warning when it cannot be read,
    is not JSON or is not an object. Never raises (the hooks read these files on every `llm` command)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:  # a directory, no permission, not UTF-8
        warn_once(path, f"cannot be read ({_reason(exc)}); ignoring it.")
        return {}
    try:
        data = json.loads(text)
    except ValueError:
        warn_once(path, "is not valid JSON; ignoring it. Fix or delete it.")
        return {}
    if not isinstance(data, dict):
        warn_once(path, f"holds a JSON {type(data).__name__}, not an object; ignoring it. Fix or delete it.")
        return {}
    return data


def _reason(exc: BaseException) -> str:
    if isinstance(exc, IsADirectoryError):
        return "it is a directory"
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return "it is not UTF-8 text"


@contextlib.contextmanager
def locked(path: Path, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (through ``<path>.lock``) against other processes and threads."""
    import time

    lock_path = path.with_name(path.name + ".lock")
    try:
        handle = open(lock_path, "a+b")
    except OSError as exc:
        raise MistralSuiteError(f"Cannot write {path}: cannot create {lock_path} ({_reason(exc)}).") from None
    deadline = time.monotonic() + timeout
    with handle:
        while not _try_lock(handle):
            if time.monotonic() > deadline:
                raise MistralSuiteError(
                    f"{path} stayed locked by another `llm` command for {timeout:.0f} s; try again."
                )
            time.sleep(0.01)
        try:
            yield
        finally:
            _unlock(handle)


def _try_lock(handle: Any) -> bool:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            handle.seek(0)
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _unlock(handle: Any) -> None:
    try:
        import fcntl
    except ImportError:
        import msvcrt

        handle.seek(0)
        msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
        return
    fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON through a temporary file of its own, so a reader never sees half a file and two writers
    never share one. Call it under ``locked(path)`` (``update_json_object`` does) when others may write too."""
    import tempfile

    try:
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise MistralSuiteError(f"Cannot write {path}: {_reason(exc)}.") from None
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2)
        os.replace(temporary, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise MistralSuiteError(f"Cannot write {path}: {_reason(exc)}.") from None


def update_json_object(path: Path, change: Callable[[dict[str, Any]], T], *, replace_damaged: bool = False) -> T:
    """Read-modify-write one of our JSON files under its lock: ``change`` edits the object in place (and may
    raise to leave the file as it was); returns what ``change`` returned.

    A file that exists but cannot be read as a JSON object is an error (its entries would be lost), unless
    ``replace_damaged`` (a cache that ``change`` rewrites whole).
    """
    with locked(path):
        data = _read_for_update(path, replace_damaged)
        result = change(data)
        write_json_atomic(path, data)
    return result


def check_updatable(path: Path) -> None:
    """Raise now what ``update_json_object(path, ...)`` would raise later on reading ``path`` (damaged) or on writing
    beside it (a directory that takes no new file): for an update that must not fail after something that cannot be
    undone, such as remembering a batch job once Mistral has created it."""
    import tempfile

    _read_for_update(path, replace_damaged=False)
    try:
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise MistralSuiteError(f"Cannot write {path}: {_reason(exc)}.") from None
    os.close(descriptor)
    os.unlink(temporary)


def _read_for_update(path: Path, replace_damaged: bool) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        if replace_damaged:
            return {}
        what = "is not valid JSON" if isinstance(exc, json.JSONDecodeError) else f"cannot be read ({_reason(exc)})"
        raise MistralSuiteError(f"{path} {what}; fix or delete it.") from None
    if not isinstance(data, dict):
        if replace_damaged:
            return {}
        raise MistralSuiteError(f"{path} holds a JSON {type(data).__name__}, not an object; fix or delete it.")
    return data


def plain_name(name: Any, max_length: int = 100) -> bool:
    """A name usable in a model id: ASCII letters, digits, '.', '_' and '-', starting with a letter or digit (no regex:
    the hooks check every name on every `llm` command, and compiling a pattern costs more than this loop)."""
    return (isinstance(name, str) and 0 < len(name) <= max_length and name[0].isascii() and name[0].isalnum()
            and all(char.isascii() and (char.isalnum() or char in "._-") for char in name))


# What a field of an entry may be (the classes its JSON value may have), for ``entry_problem``. A list is a list of
# names (non-empty strings), a number a count (above 0), a required text is not blank.
TEXT = (str,)
OPTIONAL_TEXT = (str, type(None))
OPTIONAL_FLAG = (bool, type(None))
OPTIONAL_COUNT = (int, type(None))
OPTIONAL_NAMES = (list, type(None))
OPTIONAL_OBJECT = (dict, type(None))


def entry_problem(entry: Any, fields: dict[str, tuple[type, ...]]) -> str | None:
    """What is wrong with one entry of a file of ours, in words (None: nothing): an entry that is not an object,
    or a field whose value is not what ``fields`` allows. Type checks, no calls per field: the hooks check every
    entry on every `llm` command."""
    if entry.__class__ is not dict:
        return f"is a JSON {type(entry).__name__}, not an object"
    for name, allowed in fields.items():
        value = entry.get(name)
        cls = value.__class__
        if cls not in allowed or (
            (cls is str and allowed is TEXT and not value.strip())
            or (cls is int and value <= 0)
            or (cls is list and not all(item.__class__ is str and item.strip() for item in value))
        ):
            return f'has a bad "{name}" ({json.dumps(value)[:60]})' if name in entry else f'has no "{name}"'
    return None


def skip_entry(path: Path, entry: str, problem: str) -> None:
    """Warn (once) that one entry of a file of ours is skipped."""
    warn_once(path, f"skipping {entry}, which {problem}. Fix or remove it.")
