"""Fixtures of the unit tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

DYNAMODB_ENDPOINT = "https://dynamodb.us-east-1.amazonaws.com"


@pytest.fixture(scope="module")
def dynamodb() -> Iterator[Any]:
    """A DynamoDB client on moto in this process (the local moto patches' tests)."""
    with mock_aws():
        yield boto3.client(
            "dynamodb",
            region_name="us-east-1",
            endpoint_url=DYNAMODB_ENDPOINT,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
