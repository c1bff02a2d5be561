"""The CLI's progress reporter: at most one refresh a second, on a terminal by default, in
place on a terminal and one line each elsewhere; off with --no-progress."""

from __future__ import annotations

import argparse
import io

import pytest

from dataharvest_local.progress import CLEAR_LINE, Progress, add_flags, waiting_line


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_forced_progress_writes_lines_at_most_once_a_second() -> None:
    stream, clock = io.StringIO(), FakeClock()
    progress = Progress(True, stream, clock=clock)
    assert progress.update("waiting: 0/2 keys settled, 0 s")
    clock.now += 0.5
    assert not progress.update("waiting: 1/2 keys settled, 0 s")  # too soon: dropped
    clock.now += 0.5
    assert progress.update("waiting: 2/2 keys settled, 1 s")
    assert stream.getvalue().splitlines() == [
        "waiting: 0/2 keys settled, 0 s",
        "waiting: 2/2 keys settled, 1 s",
    ]
    assert progress.lines == 2


def test_a_text_callable_is_computed_only_when_due() -> None:
    clock, calls = FakeClock(), []
    progress = Progress(True, io.StringIO(), clock=clock)

    def text() -> str:
        calls.append(clock.now)
        return "waiting"

    progress.update(text)
    progress.update(text)
    assert calls == [100.0]


def test_off_by_default_when_not_a_terminal_and_with_no_progress() -> None:
    stream = io.StringIO()
    assert not Progress(None, stream).update("waiting")
    assert not Progress(False, Terminal()).update("waiting")
    assert stream.getvalue() == ""


def test_on_a_terminal_the_line_is_rewritten_in_place_and_cleared() -> None:
    stream, clock = Terminal(), FakeClock()
    with Progress(None, stream, clock=clock) as progress:
        progress.update("waiting: 1 s")
        clock.now += 1
        progress.update("waiting: 2 s")
    assert stream.getvalue() == f"{CLEAR_LINE}waiting: 1 s{CLEAR_LINE}waiting: 2 s{CLEAR_LINE}"


def test_waiting_line() -> None:
    status = {"invocations": 40, "in_flight": 2, "failures": 1}
    assert waiting_line(12.4, status, (3, 7)) == (
        "waiting: 3/7 keys settled, 12 s (40 invocations, 2 in flight, 1 failed)"
    )
    assert waiting_line(3, status, (0, 1), "chunks 2/8 staged") == (
        "waiting: 0/1 keys settled, chunks 2/8 staged, 3 s (40 invocations, 2 in flight, 1 failed)"
    )
    assert waiting_line(1, {}) == "waiting: 1 s (0 invocations, 0 in flight, 0 failed)"


@pytest.mark.parametrize(
    ("argv", "expected"), [([], None), (["--progress"], True), (["--no-progress"], False)]
)
def test_flags(argv: list[str], expected: bool | None) -> None:
    parser = argparse.ArgumentParser()
    add_flags(parser)
    assert parser.parse_args(argv).progress is expected


def test_the_flags_exclude_each_other() -> None:
    parser = argparse.ArgumentParser()
    add_flags(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(["--progress", "--no-progress"])
