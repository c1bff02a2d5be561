"""Progress of the CLI's long waits (`run`, `transformers replay`, `dlq redrive`, ...): one
line on stderr, at most once a second, so stdout stays the command's parseable result.

Shown when stderr is a terminal (the line is rewritten in place) unless `--no-progress`;
`--progress` shows it anywhere (then each refresh is a line of its own, e.g. in a CI log).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

REFRESH_S = 1.0
CLEAR_LINE = "\r\x1b[K"


class Progress:
    """Refreshes a progress line; `clear()` before printing anything else on the stream."""

    def __init__(
        self,
        enabled: bool | None = None,
        stream: TextIO | None = None,
        interval: float = REFRESH_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        # None: on a terminal only.
        self.enabled = self.tty if enabled is None else enabled
        self.interval = interval
        self.clock = clock
        self._last: float | None = None
        self._shown = False  # a line is on the terminal, not ended
        self.lines = 0  # refreshes written

    def update(self, text: str | Callable[[], str]) -> bool:
        """Show `text` (or what the callable returns, computed only when due) unless the last
        refresh is less than `interval` ago; True when written."""
        if not self.enabled:
            return False
        now = self.clock()
        if self._last is not None and now - self._last < self.interval:
            return False
        self._last = now
        line = text() if callable(text) else text
        if self.tty:
            self.stream.write(CLEAR_LINE + line)
            self._shown = True
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
        self.lines += 1
        return True

    def clear(self) -> None:
        """Remove the line in place (a terminal), so other output starts on a clean line."""
        if self._shown:
            self.stream.write(CLEAR_LINE)
            self.stream.flush()
            self._shown = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.clear()


def waiting_line(
    elapsed: float, status: dict[str, Any], settled: tuple[int, int] | None = None, extra: str = ""
) -> str:
    """`waiting: 3/7 keys settled, 12 s (40 invocations, 2 in flight, 0 failed)`."""
    parts = ["waiting:"]
    if settled is not None:
        parts.append(f"{settled[0]}/{settled[1]} keys settled,")
    if extra:
        parts.append(f"{extra},")
    parts.append(f"{elapsed:.0f} s")
    parts.append(
        f"({status.get('invocations', 0)} invocations, {status.get('in_flight', 0)} in flight,"
        f" {status.get('failures', 0)} failed)"
    )
    return " ".join(parts)


def add_flags(parser: Any) -> None:
    """`--progress` / `--no-progress` on a command that waits (default: on a terminal)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--progress",
        dest="progress",
        action="store_true",
        default=None,
        help="show progress on stderr while waiting, even when it is not a terminal",
    )
    group.add_argument(
        "--no-progress", dest="progress", action="store_false", help="show no progress"
    )


class UploadWatch:
    """`run`'s progress: the uploaded object versions whose load is recorded, and the chunks
    of large files still loading; one query per refresh on a connection kept for the wait."""

    def __init__(self, uploaded: list[tuple[str, str | None]]) -> None:
        self.uploaded = uploaded
        self._conn: Any = None
        self._last: Any = None  # dataharvest.ops.outcomes.UploadProgress

    def settled(self) -> tuple[int, int]:
        from dataharvest import db
        from dataharvest.ops import outcomes

        if self._conn is None:
            self._conn = db.connect()
        self._last = outcomes.upload_progress(self._conn, self.uploaded)
        return self._last.settled, len(self.uploaded)

    def detail(self) -> str:
        """Chunks staged of the loads in chunks still running (after `settled`)."""
        if self._last is None or not self._last.chunks:
            return ""
        return f"chunks {self._last.chunks_staged}/{self._last.chunks} staged"

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> UploadWatch:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
