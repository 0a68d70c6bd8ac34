"""One error type for bad input, one collector that gathers every problem, one way to report.

Every error a user can fix (a malformed protocol line, a bad config field, a score file that does
not match its key, a checkpoint of another layout, an unreadable audio file) is a
:class:`SpoofdetError`: a ``ValueError`` whose message names the file, line or field and says
what to do, with the individual problems in ``.problems``. ``spoofdet`` commands print it as one
line, ``spoofdet <command>: error: <message>``, and exit with code 2.

:class:`Problems` collects ``file:line: message`` items so that a user sees them all at once: it
keeps the first ``limit`` (all when None) and counts the rest.

:func:`run_command` is the one place that turns exceptions into exit codes (the CLI and every
job's ``main``): bad input (:func:`is_bad_input`: SpoofdetError, any ValueError, OSError such as a
missing or unreadable file, an MLflow error from the tracking store) is one line and exit 2;
anything else is a bug: one line naming the log file that holds the full traceback, exit 1 (the
traceback itself is printed with ``spoofdet --verbose`` or ``SPOOFDET_DEBUG=1``).
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

#: Problems listed in full in one error message; the others are counted.
MAX_LISTED = 10
#: Exit code of every ``spoofdet`` command for bad input (1 = unexpected, 0 = success).
EXIT_BAD_INPUT = 2
#: Exit code for an unexpected error (a bug): its traceback goes to a log file.
EXIT_UNEXPECTED = 1
#: Exit code after Ctrl-C.
EXIT_INTERRUPTED = 130
#: Set to 1 to print the traceback of unexpected errors (as ``spoofdet --verbose`` does).
DEBUG_ENV = "SPOOFDET_DEBUG"
#: Folder for the traceback logs of unexpected errors (default: the system's temporary folder).
LOG_DIR_ENV = "SPOOFDET_LOG_DIR"
#: Longest one-line message printed; the rest is cut with a note (the full text is in .problems).
MAX_LINE = 2000


class SpoofdetError(ValueError):
    """Bad input: the message names what is wrong and where; ``problems`` lists each item."""

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems) or [message]


class Problems:
    """Problem messages in the order found: the first ``limit`` kept, every one counted.

    ``append`` takes a finished message; ``add`` prefixes ``path:line``. A ``Problems`` is falsy
    while empty and iterates over the kept messages.
    """

    def __init__(self, limit: int | None = None) -> None:
        self.items: list[str] = []
        self.total = 0
        self.limit = limit

    def append(self, message: str) -> None:
        self.total += 1
        if self.limit is None or len(self.items) < self.limit:
            self.items.append(message)

    def extend(self, messages: Iterable[str]) -> None:
        for message in messages:
            self.append(message)

    def add(self, path: os.PathLike | str, lineno: int | None, message: str) -> None:
        where = f"{path}:{lineno}" if lineno is not None else f"{path}"
        self.append(f"{where}: {message}")

    def listing(self, limit: int | None = None, indent: str = "\n  ") -> str:
        """The kept messages, one per line, and ``... and N more`` for those not shown."""
        shown = self.items if limit is None else self.items[:limit]
        more = f"{indent}... and {self.total - len(shown)} more" if self.total > len(shown) else ""
        return indent.join(shown) + more

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[str]:
        return iter(self.items)

    def __bool__(self) -> bool:
        return self.total > 0


def one_line(exc: BaseException | str) -> str:
    """The message of ``exc`` on one line: its lines joined with ``; `` (a ``:``-ended line with a
    space), cut at :data:`MAX_LINE` characters. A Ray task error is reported by its cause."""
    exc = unwrap(exc) if isinstance(exc, BaseException) else exc
    text = str(exc)
    if isinstance(exc, BaseException) and not text.strip():
        text = type(exc).__name__
    parts = [line.strip() for line in text.splitlines() if line.strip()]
    joined = ""
    for part in parts:
        joined += part if not joined else (" " if joined.endswith(":") else "; ") + part
    if len(joined) > MAX_LINE:
        cut = len(joined) - MAX_LINE
        joined = f"{joined[:MAX_LINE].rstrip()} ... ({cut} more characters)"
    return joined


def unwrap(exc: BaseException) -> BaseException:
    """The exception a Ray task raised, for a ``RayTaskError`` (which wraps it with a remote
    traceback); ``exc`` itself otherwise."""
    seen = 0
    while "RayTaskError" in type(exc).__name__ and getattr(exc, "cause", None) is not None:
        exc, seen = exc.cause, seen + 1  # type: ignore[attr-defined]
        if seen > 5:
            break
    return exc


def is_bad_input(exc: BaseException) -> bool:
    """Whether ``exc`` is something the user can fix, reported as bad input (exit 2):
    a SpoofdetError or other ValueError, an OSError (missing, unreadable or unwritable path, an
    unreachable server) or an MLflow error (unknown model, refused request)."""
    exc = unwrap(exc)
    if isinstance(exc, ValueError | OSError):
        return True
    return any(c.__name__ == "MlflowException" for c in type(exc).__mro__)


def debugging() -> bool:
    """Whether tracebacks are wanted (``spoofdet --verbose`` or ``SPOOFDET_DEBUG=1``)."""
    return _VERBOSE[0] or os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false")


_VERBOSE = [False]


def set_verbose(on: bool) -> bool:
    """Turn traceback printing on or off for this process (``spoofdet --verbose``); returns the
    previous setting so that a caller can restore it."""
    before, _VERBOSE[0] = _VERBOSE[0], bool(on)
    return before


def bad_input(command: str, exc: BaseException | str) -> int:
    """The one bad-input path of the ``spoofdet`` commands and jobs: print
    ``spoofdet COMMAND: error: EXC`` on stderr as one line and return :data:`EXIT_BAD_INPUT`."""
    if debugging() and isinstance(exc, BaseException):
        traceback.print_exception(exc, file=sys.stderr)
    print(f"spoofdet {command}: error: {one_line(exc)}", file=sys.stderr)
    return EXIT_BAD_INPUT


def unexpected(command: str, exc: BaseException) -> int:
    """Report an unexpected error (a bug) as one line naming the log file that holds its full
    traceback (printed too when :func:`debugging`); returns :data:`EXIT_UNEXPECTED`."""
    text = "".join(traceback.format_exception(exc))
    log = _write_log(command, text)
    if debugging():
        print(text, file=sys.stderr, end="")
    where = f"full traceback in {log}" if log else "no log file could be written"
    print(
        f"spoofdet {command}: error: unexpected {type(exc).__name__}: {one_line(exc)} ({where}; "
        f"rerun with spoofdet --verbose or {DEBUG_ENV}=1 to print it, and please report it)",
        file=sys.stderr,
    )
    return EXIT_UNEXPECTED


def _write_log(command: str, text: str) -> Path | None:
    """Write ``text`` to ``<log dir>/spoofdet-<command>-<time>-<pid>.log``; None if impossible."""
    folder = Path(os.environ.get(LOG_DIR_ENV) or tempfile.gettempdir())
    path = folder / f"spoofdet-{command}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(f"spoofdet {command}: {' '.join(sys.argv)}\n\n{text}", encoding="utf-8")
    except OSError:
        return None
    return path


def run_command(command: str, func: Callable[..., int], *args: Any, **kwargs: Any) -> int:
    """Call ``func(*args, **kwargs)`` and return its exit code; turn an exception into one line on
    stderr and an exit code: :data:`EXIT_BAD_INPUT` for :func:`is_bad_input`,
    :data:`EXIT_INTERRUPTED` for Ctrl-C, :data:`EXIT_UNEXPECTED` (traceback to a log file) else."""
    try:
        return func(*args, **kwargs)
    except KeyboardInterrupt:
        print(f"spoofdet {command}: error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - the one place that turns errors into exit codes
        if is_bad_input(exc):
            return bad_input(command, exc)
        return unexpected(command, exc)


@contextlib.contextmanager
def json_stdout(enabled: bool) -> Iterator[Any]:
    """For a command's ``--json``: while the block runs, ``sys.stdout`` points at stderr, so that
    what Ray's driver prints meanwhile (worker and raylet lines) cannot land in the JSON; the
    yielded stream is the real stdout, for the one JSON object. Without ``enabled``: stdout."""
    real = sys.stdout
    if not enabled:
        yield real
        return
    with contextlib.redirect_stdout(sys.stderr):
        yield real
