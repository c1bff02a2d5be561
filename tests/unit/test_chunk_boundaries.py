"""Where a large file is cut into chunks: after a line end outside quotes, with each chunk's
first line counted from the start of the file."""

from __future__ import annotations

import csv
import io

from hypothesis import given, settings
from hypothesis import strategies as st

from dataharvest.persistence.chunks import split

HEADER = b"record_id,account_number,transaction_reference,amount,keyword\n"


def blocks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


def test_a_quoted_newline_is_never_a_boundary() -> None:
    first = b'1,7,"T\n1",1.00,DEPOSIT\n'
    body = first + b"2,7,T2,2.00,TAX\n"
    header, chunks = split(iter([HEADER + body]), chunk_bytes=8)
    assert header == HEADER.rstrip(b"\n")
    # The first chunk would end at the quoted newline after 8 bytes; it ends after the record.
    assert [(c.byte_start, c.byte_end, c.first_line) for c in chunks] == [
        (len(HEADER), len(HEADER) + len(first), 2),
        (len(HEADER) + len(first), len(HEADER) + len(body), 4),
    ]


def test_one_chunk_when_the_file_is_small() -> None:
    body = b"1,7,T1,1.00,DEPOSIT\n"
    _, chunks = split(iter([HEADER + body]), chunk_bytes=1 << 20)
    assert [(c.chunk, c.byte_start, c.byte_end, c.first_line) for c in chunks] == [
        (0, len(HEADER), len(HEADER) + len(body), 2)
    ]


def test_a_header_only_file_has_no_chunk() -> None:
    _, chunks = split(iter([HEADER]), chunk_bytes=4)
    assert chunks == []


records = st.lists(
    st.tuples(
        st.integers(0, 10**6),
        st.text(alphabet='ab ,"\n\r', min_size=1, max_size=6),
        st.sampled_from(["1.00", "-2", "3.5"]),
    ),
    max_size=30,
)


@settings(max_examples=200)
@given(rows=records, chunk_bytes=st.integers(1, 64), block=st.integers(1, 50))
def test_chunks_parse_to_the_same_records_with_the_right_lines(rows, chunk_bytes, block):
    buffer = io.StringIO(newline="")
    csv.writer(buffer, lineterminator="\n").writerows(
        [n, n, ref, amount, "DEPOSIT"] for n, ref, amount in rows
    )
    body = buffer.getvalue().encode()
    data = HEADER + body
    _, chunks = split(iter(blocks(data, block)), chunk_bytes)

    # Together the chunks are the body, in order, without gaps or overlaps.
    assert b"".join(data[c.byte_start : c.byte_end] for c in chunks) == body
    assert [c.chunk for c in chunks] == list(range(len(chunks)))
    expected = list(csv.reader(io.StringIO(body.decode(), newline="")))
    parsed = []
    for c in chunks:
        piece = data[c.byte_start : c.byte_end].decode()
        # Each chunk starts on a record: it parses on its own, and its first line is the
        # physical line that record starts on.
        assert c.first_line == data[: c.byte_start].count(b"\n") + 1
        parsed.extend(csv.reader(io.StringIO(piece, newline="")))
    assert parsed == expected
