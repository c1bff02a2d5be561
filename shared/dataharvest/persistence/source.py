"""The S3 side of a load: what version of a key is current, and its bytes as a bounded stream.

Memory stays bounded whatever the object size: the body is read in CHUNK_SIZE pieces and gzip
output is produced at most MAX_INFLATE bytes at a time (a small object can inflate to gigabytes).
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

import boto3
from botocore.client import BaseClient
from botocore.exceptions import ClientError

from dataharvest.persistence.exceptions import FileRejected

CHUNK_SIZE = 1 << 20
MAX_INFLATE = 4 << 20
MAX_HEADER_BYTES = 1 << 20
UTF8_BOM = b"\xef\xbb\xbf"


@lru_cache(maxsize=1)
def s3_client() -> BaseClient:
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


class SourceStream:
    """The decompressed bytes of one object version, with the SHA-256 of the stored bytes."""

    def __init__(self, obj: ObjectVersion, gzip: bool, byte_range: tuple[int, int] | None = None):
        """`byte_range`: [start, end) of the stored bytes only (a chunk of a large file)."""
        pin = {"VersionId": obj.version_id} if obj.version_id else {"IfMatch": f'"{obj.etag}"'}
        if byte_range is not None:
            pin["Range"] = f"bytes={byte_range[0]}-{byte_range[1] - 1}"
        self._body = s3_client().get_object(Bucket=obj.bucket, Key=obj.key, **pin)["Body"]
        self._gzip = gzip
        self._hasher = hashlib.sha256()

    def _raw(self) -> Iterator[bytes]:
        while chunk := self._body.read(CHUNK_SIZE):
            self._hasher.update(chunk)
            yield chunk

    def chunks(self) -> Iterator[bytes]:
        """The file's bytes (decompressed, BOM removed) in bounded chunks."""
        return decode(self._raw(), self._gzip)

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


def decode(raw: Iterator[bytes], gzip: bool) -> Iterator[bytes]:
    """Stored bytes -> file bytes: inflated when gzip, without a leading UTF-8 BOM."""
    pieces = _inflate(raw) if gzip else raw
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


def _inflate(raw: Iterator[bytes]) -> Iterator[bytes]:
    decompressor = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        for chunk in raw:
            data = chunk
            while True:
                out = decompressor.decompress(data, MAX_INFLATE)
                if out:
                    yield out
                data = decompressor.unconsumed_tail
                if decompressor.eof and decompressor.unused_data:
                    # Concatenated gzip members (e.g. appended files) are one stream.
                    data = decompressor.unused_data + data
                    decompressor = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
                    continue
                # A full output buffer may leave output pending with no input left.
                if not data and len(out) < MAX_INFLATE:
                    break
        if not decompressor.eof:
            raise FileRejected("not a valid gzip file: the compressed stream is truncated")
    except zlib.error as error:
        raise FileRejected(f"not a valid gzip file: {error}") from None


def split_header(chunks: Iterator[bytes]) -> tuple[bytes, Iterator[bytes]]:
    """The first line (without its line end) and an iterator over the rest of the bytes."""
    buffer = b""
    for chunk in chunks:
        buffer += chunk
        newline = buffer.find(b"\n")
        if newline >= 0:
            header, rest = buffer[:newline], buffer[newline + 1 :]
            return header.removesuffix(b"\r"), _prepend(rest, chunks)
        if len(buffer) > MAX_HEADER_BYTES:
            raise FileRejected(f"the header line is longer than {MAX_HEADER_BYTES} bytes")
    return buffer.removesuffix(b"\r"), iter(())


def _prepend(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    if first:
        yield first
    yield from rest
