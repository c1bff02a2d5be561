"""The local runner's quiet check (runner.wait_settled) on in-memory sources: it never answers
"quiet" while a source still holds work the last invocation left, and it does not wait for a
poll backoff or a long poll to know that a source is empty."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator

import pytest

from dataharvest_local.mappings import Mapping
from dataharvest_local.runner import Runner


class MemorySource(Mapping):
    """A source polled like a stream (short polls with backoff) or like a queue (long polls,
    asked directly by `pending`). Each record is one invocation that may put records into
    other sources, as a function writing to a stream or a queue does."""

    def __init__(self, runner: Runner, name: str, long_polls: bool = False):
        super().__init__(None, runner.activity, runner.stop_event, name)  # type: ignore[arg-type]
        self.long_polls = long_polls
        self.records: queue.Queue[list[MemorySource]] = queue.Queue()
        self.handled = 0
        self.paused = threading.Event()  # records stay in the source, not taken

    def poll_once(self) -> bool:
        if self.paused.is_set():
            time.sleep(0.01)
            return False
        try:
            # A long poll waits for a record; a short poll looks once.
            then = self.records.get(timeout=1.0) if self.long_polls else self.records.get_nowait()
        except queue.Empty:
            return False
        self.activity.begin()
        try:
            time.sleep(0.05)  # the invocation's work
            for target in then:
                target.records.put([])
            self.handled += 1
        finally:
            self.activity.end(False)
        return True

    def pending(self) -> str:
        if self.long_polls:
            return "work" if self.records.qsize() else "none"
        return super().pending()


@pytest.fixture
def runner(tmp_path) -> Iterator[Runner]:
    """A runner with no functions; the tests add in-memory sources. Quiet once at the start."""
    runner = Runner(None, tmp_path, {})  # type: ignore[arg-type]
    yield runner
    runner.stop_event.set()


def add_sources(runner: Runner, *sources: tuple[str, bool]) -> list[MemorySource]:
    """(name, long_polls) each; started, and the runner quiet before the test goes on."""
    mappings = [MemorySource(runner, name, long) for name, long in sources]
    runner.mappings.extend(mappings)
    for mapping in mappings:
        mapping.start()
    assert runner.wait_quiet(timeout=10)
    return mappings


def test_quiet_waits_for_the_record_the_last_invocation_wrote_to_a_stream(runner) -> None:
    queue_source, stream = add_sources(runner, ("queue", True), ("stream", False))
    time.sleep(1.0)  # the stream's backoff grows to its longest
    # One message whose invocation writes a stream record, whose invocation writes one more:
    # quiet only once all three ran.
    queue_source.records.put([stream])
    stream.records.put([])
    assert runner.wait_quiet(timeout=10)
    assert (queue_source.handled, stream.handled) == (1, 2)


def test_a_record_left_in_an_idle_stream_is_seen_before_quiet(runner) -> None:
    (stream,) = add_sources(runner, ("stream", False))
    time.sleep(1.0)
    # Lands while the stream waits out its backoff, its idle flag still from the last empty
    # poll: the check must wake it and see the record, not trust the flag.
    stream.records.put([])
    assert runner.wait_quiet(timeout=10)
    assert stream.handled == 1


def test_a_message_waiting_in_a_queue_is_never_quiet(runner) -> None:
    (queue_source,) = add_sources(runner, ("queue", True))
    # A message the poller does not take yet (a delivery delay, a retry's visibility timeout):
    # the stack looks idle, but the queue says it holds work.
    queue_source.paused.set()
    time.sleep(1.1)  # the long poll under way ends
    queue_source.records.put([])
    threading.Timer(0.5, queue_source.paused.clear).start()
    assert runner.wait_quiet(timeout=10)
    assert queue_source.handled == 1
