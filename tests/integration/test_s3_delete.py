"""A real S3 delete on the versioned landing bucket reaches persistence as ObjectRemoved
(moto needs dataharvest_local.aws's patch for that) and retracts the input."""

from __future__ import annotations

import os

import boto3
import pytest

from dataharvest import metastore

pytestmark = pytest.mark.integration

ACCOUNTS = b"record_id,account_number,cash_balance,currency,taxes_paid\n1,100,10.00,EUR,0\n"


def test_deleting_the_object_retracts_the_input(db, client_id, wait_quiet):
    s3 = boto3.client("s3")
    bucket = os.environ["LANDING_BUCKET"]
    key = f"{client_id}/accounts_20240102.csv"
    s3.put_object(Bucket=bucket, Key=key, Body=ACCOUNTS)
    wait_quiet()
    assert metastore.get_item(client_id, "20240102")["account_persisted"] is True
    s3.delete_object(Bucket=bucket, Key=key)
    wait_quiet()
    item = metastore.get_item(client_id, "20240102")
    assert item["account_persisted"] is False
    rows = db.execute("SELECT count(*) FROM raw.accounts WHERE client_id = %s", (client_id,))
    assert rows.fetchone() == (0,)
