"""Byte-level handling of the S3 body: gzip, BOM, header split; bounded memory."""

from __future__ import annotations

import gzip

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataharvest.persistence import source
from dataharvest.persistence.exceptions import FileRejected


def pieces(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 1 << 20])
def test_bom_is_removed_whatever_the_chunking(size: int) -> None:
    data = source.UTF8_BOM + "id,name\n1,Zoë\n".encode()
    assert (
        b"".join(source.decode(iter(pieces(data, size)), gzip=False)) == b"id,name\n1,Zo\xc3\xab\n"
    )


def test_tiny_files_pass_through() -> None:
    assert b"".join(source.decode(iter([b"a"]), gzip=False)) == b"a"
    assert b"".join(source.decode(iter([source.UTF8_BOM]), gzip=False)) == b""


def test_gzip_is_inflated_in_bounded_pieces() -> None:
    data = b"x" * (3 * source.MAX_INFLATE + 5)  # compresses to a few KB
    out = list(source.decode(iter(pieces(gzip.compress(data), 1000)), gzip=True))
    assert b"".join(out) == data
    assert max(len(piece) for piece in out) <= source.MAX_INFLATE


def test_concatenated_gzip_members_are_one_file() -> None:
    data = gzip.compress(b"a,b\n1,2\n") + gzip.compress(b"3,4\n")
    assert b"".join(source.decode(iter([data]), gzip=True)) == b"a,b\n1,2\n3,4\n"


def test_broken_gzip_is_a_file_rejection() -> None:
    with pytest.raises(FileRejected, match="not a valid gzip file"):
        list(source.decode(iter([b"plain text, not gzip"]), gzip=True))
    truncated = gzip.compress(b"a,b\n" * 1000)[:-20]
    with pytest.raises(FileRejected, match="truncated"):
        list(source.decode(iter([truncated]), gzip=True))


def test_split_header_across_chunks_and_line_ends() -> None:
    header, rest = source.split_header(iter([b"id,na", b"me\r\n1,", b"x\r\n"]))
    assert header == b"id,name"
    assert b"".join(rest) == b"1,x\r\n"
    header, rest = source.split_header(iter([b"id,name"]))
    assert (header, b"".join(rest)) == (b"id,name", b"")


def test_an_endless_header_line_is_rejected() -> None:
    reason = "the header line is longer than 1,048,576 bytes, the most it may hold"
    with pytest.raises(FileRejected) as raised:
        source.split_header(iter([b"x" * (source.MAX_HEADER_BYTES + 1)]))
    assert raised.value.reason == reason
    # The line end can come in a later chunk: the header is still too long.
    with pytest.raises(FileRejected) as raised:
        source.split_header(iter([b"x" * source.MAX_HEADER_BYTES, b"x\n1\n"]))
    assert raised.value.reason == reason
    header, _ = source.split_header(iter([b"x" * source.MAX_HEADER_BYTES, b"\r\n1\n"]))
    assert header == b"x" * source.MAX_HEADER_BYTES


def _naive_long_line(body: bytes, limit: int) -> int | None:
    """The number of the first line (the body starts at line 2) longer than `limit`."""
    for number, line in enumerate(body.split(b"\n"), start=2):
        if len(line) > limit:
            return number
    return None


@pytest.mark.parametrize("size", [1, 3, 10, 11, 1 << 20])
def test_lines_up_to_the_limit_pass_and_longer_ones_are_rejected(monkeypatch, size) -> None:
    monkeypatch.setattr(source, "MAX_LINE_BYTES", 10)
    body = b"0123456789\n\n12345\n0123456789"
    header, rest = source.split_header(iter(pieces(b"h\n" + body, size)))
    assert (header, b"".join(rest)) == (b"h", body)
    header, rest = source.split_header(iter(pieces(b"h\n" + body + b"\r\n0123456789A", size)))
    with pytest.raises(FileRejected) as raised:
        b"".join(rest)
    assert raised.value.reason == "line 5 is longer than 10 bytes, the most a line may hold"


@settings(max_examples=200, deadline=None)
@given(
    lines=st.lists(st.integers(0, 14), max_size=12),
    chunk=st.integers(1, 40),
    newline_at_end=st.booleans(),
)
def test_line_limit_agrees_with_a_naive_split(lines, chunk, newline_at_end) -> None:
    limit = 10
    body = b"\n".join(b"x" * n for n in lines) + (b"\n" if newline_at_end else b"")
    expected = _naive_long_line(body, limit)
    original = source.MAX_LINE_BYTES
    source.MAX_LINE_BYTES = limit  # hypothesis and function-scoped fixtures do not mix
    try:
        _, rest = source.split_header(iter(pieces(b"h\n" + body, chunk)))
        if expected is None:
            assert b"".join(rest) == body
        else:
            with pytest.raises(FileRejected) as raised:
                b"".join(rest)
            assert raised.value.reason.startswith(f"line {expected} is longer than 10 bytes")
    finally:
        source.MAX_LINE_BYTES = original
