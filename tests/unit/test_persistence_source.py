"""Byte-level handling of the S3 body: gzip, BOM, header split; bounded memory."""

from __future__ import annotations

import gzip

import pytest

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
    with pytest.raises(FileRejected, match="header line is longer"):
        source.split_header(iter([b"x" * (source.MAX_HEADER_BYTES + 1)]))
