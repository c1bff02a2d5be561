"""Calling the local Data API over HTTP (the stack's own front and handler), and a client whose
files ran through the whole choreography."""

from __future__ import annotations

import json
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import boto3

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "acme-bank"
DAY = "20240102"
# An accounts file with one bad row (currency) on the second date: a rejection to look at.
BAD_ACCOUNTS = (
    "record_id,account_number,cash_balance,currency,taxes_paid\n"
    "1,50001,5000.00,EUR,120.50\n"
    "2,50002,-250.75,euro,0\n"
    "3,50003,12000.10,EUR,310.00\n"
    "4,50004,75.00,USD,4.25\n"
    "5,50005,1.00,EUR,0\n"
    "6,50006,2.00,EUR,0\n"
    "7,50007,3.00,EUR,0\n"
    "8,50008,4.00,EUR,0\n"
    "9,50009,5.00,EUR,0\n"
    "10,50010,6.00,EUR,0\n"
    "11,50011,7.00,EUR,0\n"
)


def call(
    base: str,
    method: str,
    path: str,
    token: str | None = None,
    body: Any = None,
    raw: bytes | None = None,
) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(base + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            status, payload = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, payload = error.code, error.read()
    return status, (json.loads(payload) if payload else None)


def token(home: Path, role: str, client: str | None = None, ttl: int = 600) -> str:
    from dataharvest.api.auth import create_token

    return create_token(home, role, client, ttl)


def run_acme(client_id: str, wait_quiet, tmp: Path) -> None:
    """acme-bank's first date as is, and its second date with a rejected accounts row."""
    s3 = boto3.client("s3")
    bucket = os.environ["LANDING_BUCKET"]
    for path in sorted(EXAMPLES.glob(f"*_{DAY}.csv")):
        s3.upload_file(str(path), bucket, f"{client_id}/{path.name}")
    for path in sorted(EXAMPLES.glob("*_20240103.csv")):
        copy = tmp / path.name
        shutil.copy(path, copy)
        if path.name.startswith("accounts"):
            copy.write_text(BAD_ACCOUNTS)
        s3.upload_file(str(copy), bucket, f"{client_id}/{path.name}")
    wait_quiet(300)
