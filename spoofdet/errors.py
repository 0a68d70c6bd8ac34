"""One error type for bad input, and one collector that gathers every problem before raising.

Every error a user can fix (a malformed protocol line, a bad config field, a score file that does
not match its key, a checkpoint of another layout, an unreadable audio file) is a
:class:`SpoofdetError`: a ``ValueError`` whose message names the file, line or field and says
what to do, with the individual problems in ``.problems``. ``spoofdet`` commands print it as
``spoofdet <command>: error: <message>`` and exit with code 2.

:class:`Problems` collects ``file:line: message`` items so that a user sees them all at once: it
keeps the first ``limit`` (all when None) and counts the rest.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator, Sequence

#: Problems listed in full in one error message; the others are counted.
MAX_LISTED = 10
#: Exit code of every ``spoofdet`` command for bad input (1 = unexpected, 0 = success).
EXIT_BAD_INPUT = 2


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


def bad_input(command: str, exc: BaseException | str) -> int:
    """The one bad-input path of the ``spoofdet`` commands and jobs: print
    ``spoofdet COMMAND: error: EXC`` on stderr and return :data:`EXIT_BAD_INPUT`."""
    print(f"spoofdet {command}: error: {exc}", file=sys.stderr)
    return EXIT_BAD_INPUT
