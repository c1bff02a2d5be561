"""The S3 side of a load: what version of a key is current, and its bytes as a bounded stream.

Memory stays bounded whatever the object size: the body is read in CHUNK_SIZE pieces and gzip
output is produced at most MAX_INFLATE bytes at a time (a small object can inflate to gigabytes).
Time is bounded too: the client's inflation limits stop a gzip bomb within its first MiBs, and
no line may pass MAX_LINE_BYTES.
"""

from __future__ import annotations

import hashlib
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache

import boto3
from botocore.client import BaseClient
from botocore.exceptions import ClientError

from dataharvest.persistence.exceptions import FileRejected

CHUNK_SIZE = 1 << 20
MAX_INFLATE = 4 << 20
GZIP_WBITS = 16 + zlib.MAX_WBITS
RATIO_JUDGED_FROM = 8 << 20  # inflated bytes before the inflation ratio is judged
MAX_HEADER_BYTES = 1 << 20
MAX_LINE_BYTES = 1 << 20  # no record of these files comes near; PostgreSQL takes up to 1 GB
UTF8_BOM = b"\xef\xbb\xbf"


@lru_cache(maxsize=1)
def s3_client() -> BaseClient:
    """The process's S3 client for the configured endpoint, region and credentials. Building
    one costs ~0.25 s (botocore loads its service model) and a load used two (HEAD, GET)."""
    return _s3_client(
        os.environ.get("AWS_ENDPOINT_URL"),
        os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"),
        os.environ.get("AWS_ACCESS_KEY_ID"),
    )


@lru_cache(maxsize=4)
def _s3_client(endpoint: str | None, region: str | None, key_id: str | None) -> BaseClient:
    return boto3.client("s3")


@dataclass(frozen=True)
class ObjectVersion:
    """One stored version of a key: `version` is the S3 VersionId, or `etag:<ETag>` when the
    bucket is not versioned (then `etag` pins the GET to that content)."""

    bucket: str
    key: str
    version: str
    version_id: str | None
    etag: str
    size: int


def head(bucket: str, key: str) -> ObjectVersion | None:
    """The current version of the key, or None when the key does not exist (deleted)."""
    try:
        response = s3_client().head_object(Bucket=bucket, Key=key)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
            raise
        # HEAD says 404 for a missing bucket too; a misconfigured or unreachable bucket must
        # fail the delivery (and be retried), never read as "deleted" and retract the input.
        s3_client().head_bucket(Bucket=bucket)
        return None
    etag = response["ETag"].strip('"')
    version_id = response.get("VersionId")
    if version_id in (None, "null"):
        version_id = None
    return ObjectVersion(
        bucket=bucket,
        key=key,
        version=version_id or f"etag:{etag}",
        version_id=version_id,
        etag=etag,
        size=int(response.get("ContentLength", 0)),
    )


@dataclass(frozen=True)
class InflationLimits:
    """How far a client's upload may inflate: a small gzip can inflate without end (a bomb),
    and every byte of it would be read, parsed and staged before the function times out."""

    max_bytes: int  # of the file's bytes (after inflation when gzip)
    max_ratio: Decimal  # inflated bytes per compressed byte, judged from RATIO_JUDGED_FROM on


class SourceStream:
    """The decompressed bytes of one object version, with the SHA-256 of the stored bytes."""

    def __init__(
        self,
        obj: ObjectVersion,
        gzip: bool,
        limits: InflationLimits | None = None,
        byte_range: tuple[int, int] | None = None,
    ):
        """`byte_range`: [start, end) of the stored bytes only (a chunk of a large file)."""
        pin = {"VersionId": obj.version_id} if obj.version_id else {"IfMatch": f'"{obj.etag}"'}
        if byte_range is not None:
            pin["Range"] = f"bytes={byte_range[0]}-{byte_range[1] - 1}"
        self._body = s3_client().get_object(Bucket=obj.bucket, Key=obj.key, **pin)["Body"]
        self._gzip = gzip
        self._limits = limits
        self._name = obj.key.rsplit("/", 1)[-1]
        self._hasher = hashlib.sha256()

    def _raw(self) -> Iterator[bytes]:
        while chunk := self._body.read(CHUNK_SIZE):
            self._hasher.update(chunk)
            yield chunk

    def chunks(self) -> Iterator[bytes]:
        """The file's bytes (decompressed, BOM removed) in bounded chunks."""
        return decode(self._raw(), self._gzip, self._limits, self._name)

    def stored(self) -> Iterator[bytes]:
        """The stored bytes as they are (a byte range of a large file has no BOM to remove)."""
        return self._raw()

    def sha256(self) -> str:
        """The hash of the whole stored object; reads whatever was not consumed yet."""
        for _ in self._raw():
            pass
        return self._hasher.hexdigest()

    def close(self) -> None:
        self._body.close()


def decode(
    raw: Iterator[bytes],
    gzip: bool,
    limits: InflationLimits | None = None,
    name: str = "the file",
) -> Iterator[bytes]:
    """Stored bytes -> file bytes: inflated when gzip, without a leading UTF-8 BOM.

    Raises FileRejected (naming `name` and the rule) as soon as the bytes pass `limits`.
    """
    if gzip:
        pieces = _inflate(raw, limits, name)
    elif limits:
        pieces = _limit_plain(raw, limits.max_bytes, name)
    else:
        pieces = raw
    start: bytes | None = b""  # the first bytes, held until the BOM can be recognized
    for piece in pieces:
        if start is not None:
            start += piece
            if len(start) < len(UTF8_BOM):
                continue
            piece, start = start.removeprefix(UTF8_BOM), None
        if piece:
            yield piece
    if start:
        yield start.removeprefix(UTF8_BOM)


def _limit_plain(raw: Iterator[bytes], max_bytes: int, name: str) -> Iterator[bytes]:
    size = 0
    for chunk in raw:
        size += len(chunk)
        if size > max_bytes:
            raise FileRejected(
                f"{name} is larger than this client's max_inflated_bytes ({max_bytes:,} bytes)"
            )
        yield chunk


def _inflate(raw: Iterator[bytes], limits: InflationLimits | None, name: str) -> Iterator[bytes]:
    """Inflate a gzip file of any number of members, as gzip.decompress does.

    Members follow each other directly or after zero padding (which gzip ignores too); an
    empty object is an empty file. Output comes at most MAX_INFLATE bytes at a time, and
    `consumed` counts the compressed bytes inflated so far exactly, so the ratio is judged on
    what was really inflated, not on what was read ahead.
    """
    inflater = zlib.decompressobj(wbits=GZIP_WBITS)
    in_member = False  # some bytes of the current member were fed
    members = consumed = inflated = 0
    try:
        for chunk in raw:
            data = chunk
            pending = False  # a full output buffer may leave output with no input left
            while data or pending:
                if not in_member and members:
                    stripped = data.lstrip(b"\0")
                    consumed += len(data) - len(stripped)
                    data = stripped
                    if not data:
                        break
                in_member = True
                out = inflater.decompress(data, MAX_INFLATE)
                if inflater.eof:
                    # At a member's end the rest of the input is unused_data alone: CPython
                    # (3.11 at least) leaves the same bytes in unconsumed_tail too when the
                    # call also hit max_length, and reading both inflated them twice.
                    rest = inflater.unused_data
                    inflater = zlib.decompressobj(wbits=GZIP_WBITS)
                    in_member, pending = False, False
                    members += 1
                else:
                    rest = inflater.unconsumed_tail
                    pending = len(out) == MAX_INFLATE
                consumed += len(data) - len(rest)
                data = rest
                if out:
                    inflated += len(out)
                    if limits:
                        _check_inflation(limits, inflated, consumed, name)
                    yield out
        if in_member:
            raise FileRejected("not a valid gzip file: the compressed stream is truncated")
    except zlib.error as error:
        raise FileRejected(f"not a valid gzip file: {error}") from None


def _check_inflation(limits: InflationLimits, inflated: int, consumed: int, name: str) -> None:
    if inflated > limits.max_bytes:
        raise FileRejected(
            f"{name} inflates to more than this client's max_inflated_bytes "
            f"({limits.max_bytes:,} bytes)"
        )
    # Early on the headers weigh too much for a fair ratio; a bomb shows itself within MiBs.
    if inflated >= RATIO_JUDGED_FROM and inflated > limits.max_ratio * consumed:
        raise FileRejected(
            f"{name} inflates at more than this client's max_inflation_ratio "
            f"{limits.max_ratio}:1 ({inflated:,} bytes from {consumed:,} compressed bytes, "
            f"{inflated // max(consumed, 1):,}:1); real CSV rarely passes 20:1"
        )


def split_header(chunks: Iterator[bytes]) -> tuple[bytes, Iterator[bytes]]:
    """The first line (without its line end) and an iterator over the rest of the bytes, whose
    lines are held to MAX_LINE_BYTES as they stream."""
    buffer = b""
    for chunk in chunks:
        buffer += chunk
        newline = buffer.find(b"\n")
        header = buffer[:newline].removesuffix(b"\r") if newline >= 0 else buffer
        if len(header) > MAX_HEADER_BYTES:
            raise FileRejected(
                f"the header line is longer than {MAX_HEADER_BYTES:,} bytes, the most it may hold"
            )
        if newline >= 0:
            return header, limit_lines(_prepend(buffer[newline + 1 :], chunks), 2)
    return buffer.removesuffix(b"\r"), iter(())


def _prepend(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    if first:
        yield first
    yield from rest


def limit_lines(chunks: Iterator[bytes], line: int) -> Iterator[bytes]:
    """The chunks unchanged, numbered from `line`; FileRejected as soon as a line (its bytes
    before the `\n`, a CR included) passes MAX_LINE_BYTES.

    Each step looks at most one line limit ahead for the last newline, so the chunks are
    scanned in C a few times, never line by line in Python.
    """
    length = 0  # bytes of the current line before `start`
    for chunk in chunks:
        start = 0
        while start < len(chunk):
            reach = start + MAX_LINE_BYTES - length + 1  # the current line must end before
            last = chunk.rfind(b"\n", start, reach)
            if last >= 0:
                line += chunk.count(b"\n", start, last + 1)
                start, length = last + 1, 0
            elif reach > len(chunk):
                length += len(chunk) - start
                break
            else:
                raise FileRejected(
                    f"line {line} is longer than {MAX_LINE_BYTES:,} bytes, the most a line may hold"
                )
        yield chunk
