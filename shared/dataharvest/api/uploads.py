"""Presigned uploads: an S3 POST policy a partner can use for one landing key of its own.

The policy binds the bucket, the exact key (which lies under the partner's prefix and follows
the landing layout `{client_id}/{entity}_{YYYYMMDD}.csv[.gz]`), a `starts-with` condition on
the partner's prefix, and a size range. S3 refuses a POST that breaks any condition.
"""

from __future__ import annotations

import os
from typing import Any

import boto3
from botocore.config import Config

from dataharvest.persistence.routing import is_upload_name

DEFAULT_MAX_BYTES = 5 * 1024**3  # an S3 POST carries at most 5 GB
DEFAULT_EXPIRES_S = 900


def max_upload_bytes() -> int:
    return int(os.environ.get("UPLOAD_MAX_BYTES") or DEFAULT_MAX_BYTES)


def policy_conditions(bucket: str, client_id: str, key: str, max_bytes: int) -> list[Any]:
    """The POST policy's conditions (the bucket and key conditions boto3 adds are explicit
    here too, so what is signed is what this function says)."""
    return [
        {"bucket": bucket},
        ["starts-with", "$key", f"{client_id}/"],
        {"key": key},
        ["content-length-range", 1, max_bytes],
    ]


def presign(
    client_id: str, filename: str, max_bytes: int | None = None, expires_s: int = DEFAULT_EXPIRES_S
) -> dict[str, Any]:
    """{url, fields, key, max_bytes, expires_in}; ValueError for a file name that is not an
    upload name or a size beyond the limit."""
    if not is_upload_name(filename):
        raise ValueError(
            f"filename {filename!r}: expected {{entity}}_{{YYYYMMDD}}.csv or .csv.gz with entity "
            "clients, portfolios, accounts or transactions"
        )
    limit = max_upload_bytes()
    if max_bytes is None:
        max_bytes = limit
    if not 1 <= max_bytes <= limit:
        raise ValueError(f"max_bytes must be between 1 and {limit}")
    bucket = os.environ["LANDING_BUCKET"]
    key = f"{client_id}/{filename}"
    # SigV4 (x-amz-* fields, conditions on each): SigV2 is deprecated and off in newer regions.
    # Virtual-hosted addressing gives the bucket's regional URL (bucket.s3.<region>.amazonaws.com)
    # instead of the global one, which S3 answers with a 307 to the region for a bucket outside
    # us-east-1 while its DNS settles: a browser's cross-origin POST should not depend on
    # following that. A local endpoint (an IP address) stays path-style.
    s3 = boto3.client(
        "s3", config=Config(signature_version="s3v4", s3={"addressing_style": "virtual"})
    )
    post = s3.generate_presigned_post(
        Bucket=bucket,
        Key=key,
        Conditions=policy_conditions(bucket, client_id, key, max_bytes),
        ExpiresIn=expires_s,
    )
    return {
        "url": post["url"],
        "fields": post["fields"],
        "key": key,
        "max_bytes": max_bytes,
        "expires_in": expires_s,
    }
