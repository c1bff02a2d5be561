"""The IAM policy of one partner's upload identity: its own prefix of the landing bucket and
nothing else (docs/DECISIONS.md, "IAM"). `dataharvest client upload-policy ID` prints it, to
attach to the partner's role or user (one per client)."""

from __future__ import annotations

from typing import Any

from dataharvest.config import resource_name


def landing_bucket(stage: str, account: str) -> str:
    """The landing bucket's name (serverless.yml: <prefix>-landing-<account id>)."""
    return f"{resource_name(stage, 'landing')}-{account}"


def upload_policy(
    client_id: str, stage: str, account: str, region: str, key_arn: str
) -> dict[str, Any]:
    """A managed policy document: put, overwrite, delete and list the client's own objects,
    encrypt them with the landing bucket's key through S3 only."""
    bucket_arn = f"arn:aws:s3:::{landing_bucket(stage, account)}"
    statements: list[dict[str, Any]] = [
        {
            "Sid": "UploadOwnPrefix",
            "Effect": "Allow",
            "Action": ["s3:PutObject", "s3:AbortMultipartUpload", "s3:DeleteObject"],
            "Resource": f"{bucket_arn}/{client_id}/*",
        },
        {
            "Sid": "ListOwnPrefix",
            "Effect": "Allow",
            "Action": "s3:ListBucket",
            "Resource": bucket_arn,
            "Condition": {"StringLike": {"s3:prefix": [f"{client_id}/*", f"{client_id}/"]}},
        },
        {
            # SSE-KMS with an S3 Bucket Key: the encryption context is the bucket's ARN.
            "Sid": "EncryptThroughS3",
            "Effect": "Allow",
            "Action": ["kms:GenerateDataKey", "kms:Decrypt"],
            "Resource": key_arn,
            "Condition": {
                "StringEquals": {
                    "kms:ViaService": f"s3.{region}.amazonaws.com",
                    "kms:EncryptionContext:aws:s3:arn": bucket_arn,
                }
            },
        },
    ]
    return {"Version": "2012-10-17", "Statement": statements}
