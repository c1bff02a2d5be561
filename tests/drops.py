"""Hypothesis strategies for partner drops, and helpers to upload them and compare the system's
exports with the reference (tests/reference.py). Shared by the property tests."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from datetime import date
from typing import Any

import reference
from hypothesis import strategies as st

DATES = ("20240102", "20240103")
ENTITIES = ("clients", "portfolios", "accounts", "transactions")

# Small pools make links, shared accounts and orphans likely; references include unicode,
# padding white space and a comma or a quote (CSV quoting).
CLIENT_REFS = ("C1", "C2", "Ünïcødé-3", "客户4", " C5 ", 'C"6')
PORTFOLIO_REFS = ("P1", "P2", "P3", "Pörtfolio,4", "P5", "P6", "P7")
ACCOUNTS = (1, 2, 3, 7, 42)
TRANSACTION_REFS = (*tuple(f"T{i}" for i in range(1, 13)), "Tø-13")
KEYWORDS = ("DEPOSIT", "deposit", " Deposit ", "TAX", "FEE")

# Values that break a rule of the column (docs/SPEC.md §2).
BAD = {
    "record_id": ("x1", ""),
    "account_number": ("12a", "1.5", "99999999999999999999"),
    "tax_free_allowance": ("-1", "1,5", "1e3"),
    "cash_balance": ("12,50", "", "1 000"),
    "taxes_paid": ("-0.01", "abc"),
    "currency": ("eur", "EURO", ""),
    "amount": ("12,5", "", "--1"),
    "client_reference": ("", "  "),
    "portfolio_reference": ("",),
    "transaction_reference": ("",),
    "keyword": ("",),
}


@st.composite
def decimals(draw: st.DrawFn, non_negative: bool = False) -> str:
    whole = draw(st.integers(0, 10**9) | st.sampled_from([0, 1, 5, 100]))
    scale = draw(st.sampled_from([0, 0, 1, 2, 2, 4]))
    text = str(whole)
    if scale:
        text += "." + "".join(
            draw(st.lists(st.sampled_from("0123456789"), min_size=scale, max_size=scale))
        )
    if draw(st.sampled_from([False, False, True])):
        text = "00" + text  # leading zeros are valid and must not change the value
    sign = "" if non_negative else draw(st.sampled_from(["", "", "-", "+"]))
    return sign + text


def account_text(draw: st.DrawFn, number: int) -> str:
    return draw(st.sampled_from([str(number), str(number), f"00{number}", f"+{number}"]))


@st.composite
def rows_for(draw: st.DrawFn, entity: str) -> list[dict[str, str]]:
    size = draw(st.integers(0, 7))
    rows = []
    for i in range(size):
        if entity == "clients":
            row = {
                "record_id": str(i + 1),
                "first_name": draw(st.sampled_from(["Åsa", "", "O'Brien, Jr.", "Zoë"])),
                "last_name": draw(st.sampled_from(["Öberg", "", "Smith"])),
                "client_reference": draw(st.sampled_from(CLIENT_REFS)),
                "tax_free_allowance": draw(decimals(non_negative=True)),
            }
        elif entity == "portfolios":
            row = {
                "record_id": str(i + 1),
                "account_number": account_text(draw, draw(st.sampled_from(ACCOUNTS))),
                "portfolio_reference": draw(st.sampled_from(PORTFOLIO_REFS)),
                "client_reference": draw(st.sampled_from((*CLIENT_REFS, "C-orphan"))),
                "agent_code": draw(st.sampled_from(["", "AG1"])),
            }
        elif entity == "accounts":
            row = {
                "record_id": str(i + 1),
                "account_number": account_text(draw, draw(st.sampled_from(ACCOUNTS))),
                "cash_balance": draw(decimals()),
                "currency": draw(st.sampled_from(["EUR", "USD", "SEK"])),
                "taxes_paid": draw(decimals(non_negative=True)),
            }
        else:
            row = {
                "record_id": str(i + 1),
                "account_number": account_text(draw, draw(st.sampled_from((*ACCOUNTS, 99)))),
                "transaction_reference": draw(st.sampled_from(TRANSACTION_REFS)),
                "amount": draw(decimals()),
                "keyword": draw(st.sampled_from(KEYWORDS)),
            }
        if draw(st.integers(0, 9)) == 0:  # now and then a row that breaks a rule
            column = draw(st.sampled_from([c for c in row if c in BAD]))
            row[column] = draw(st.sampled_from(BAD[column]))
        rows.append(row)
    return rows


@st.composite
def csv_files(draw: st.DrawFn, entity: str) -> bytes:
    """A file as a partner might send it: any column order, header case, quoting, line ends,
    optional BOM and an unknown extra column."""
    rows = draw(rows_for(entity))
    columns = [c[0] for c in reference.SCHEMA[entity]]
    columns = draw(st.permutations(columns))
    extra = draw(st.booleans())
    header = [c.upper() if draw(st.booleans()) else c for c in columns]
    if extra:
        header.append("comment")
    buffer = io.StringIO()
    writer = csv.writer(
        buffer,
        lineterminator=draw(st.sampled_from(["\n", "\r\n"])),
        quoting=draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL])),
    )
    writer.writerow(header)
    for row in rows:
        writer.writerow([row[c] for c in columns] + (["note, with comma"] if extra else []))
    bom = b"\xef\xbb\xbf" if draw(st.booleans()) else b""
    return bom + buffer.getvalue().encode()


@st.composite
def drops(draw: st.DrawFn, tenants: int = 2) -> dict[tuple[int, str, str], bytes]:
    """(tenant index, date, entity) -> file content; missing keys are files not sent."""
    files = {}
    for tenant in range(tenants):
        for day in draw(st.lists(st.sampled_from(DATES), min_size=1, max_size=2, unique=True)):
            for entity in ENTITIES:
                if draw(st.integers(0, 5)) > 0:  # most inputs present, some missing
                    files[(tenant, day, entity)] = draw(csv_files(entity))
    return files


def key(client_id: str, day: str, entity: str) -> str:
    return f"{client_id}/{entity}_{day}.csv"


def delete_upload(stack_info: Any, object_key: str) -> None:
    """Delete an uploaded key as a partner would (the delete marker notifies persistence)."""
    import boto3

    bucket = stack_info.export("LandingBucketName")
    boto3.client("s3").delete_object(Bucket=bucket, Key=object_key)


def upload_examples(stack_info: Any, client_id: str, day: str = "20240102") -> None:
    """Upload the bundled example files of one date (examples/acme-bank) as `client_id`'s."""
    from pathlib import Path

    import boto3

    s3 = boto3.client("s3")
    examples = Path(__file__).resolve().parents[1] / "examples" / "acme-bank"
    for path in sorted(examples.glob(f"*_{day}.csv")):
        s3.put_object(
            Bucket=stack_info.export("LandingBucketName"),
            Key=f"{client_id}/{path.name}",
            Body=path.read_bytes(),
        )


def expected(files: dict[str, bytes]) -> reference.Outputs:
    """The reference outputs of one client and date from its current files (entity -> bytes)."""
    return reference.outputs({e: reference.load_file(e, c) for e, c in files.items()})


def _sorted(records: list[dict[str, Any]]) -> list[str]:
    return sorted(json.dumps(r, sort_keys=True, ensure_ascii=False) for r in records)


def assert_matches(conn: Any, client_id: str, day: str, files: dict[str, bytes]) -> None:
    """The system's exports of (client, date) equal the reference computed from `files`."""
    from dataharvest import exports
    from dataharvest.ops import notices

    business_date = date(int(day[:4]), int(day[4:6]), int(day[6:]))
    want = expected(files)
    got = {t: exports.rows(conn, t, client_id, business_date) for t in exports.EXPORTS}
    # Partner notices (whole-file rejections, late inputs: issue 17) are tested on their own;
    # the publisher's messages are compared with the reference here.
    notice_ids = {n["deduplication_id"] for n in notices.rows_for(conn, client_id, business_date)}
    got["messages"] = [m for m in got["messages"] if m["deduplication_id"] not in notice_ids]
    where = f"{client_id} {day} ({sorted(files)})"
    assert _sorted(got["portfolio-summary"]) == _sorted(want.portfolio_summary), where
    assert _sorted(got["client-tax"]) == _sorted(want.client_tax), where
    assert _sorted(got["quality-issues"]) == _sorted(want.quality_issues), where

    # Rejections: the same rejected lines per file, and a whole-file record exactly when the
    # reference rejects the file whole.
    loaded = {e: reference.load_file(e, c) for e, c in files.items()}
    for entity, result in loaded.items():
        records = [r for r in got["rejections"] if r["entity"] == entity]
        lines = {r["line_number"] for r in records if r["line_number"] is not None}
        assert lines == result.rejected_lines, (where, entity, records)
        whole = any(r["line_number"] is None for r in records)
        assert whole == result.whole_file_rejected, (where, entity, records)
    assert {r["entity"] for r in got["rejections"]} <= set(files), where

    # Messages: the reference's bodies exactly, plus one error message per rejection record,
    # all present only while the client summary exists.
    got_messages = Counter(
        (m["message_type"], json.dumps(json.loads(m["body"]), sort_keys=True, ensure_ascii=False))
        for m in got["messages"]
    )
    want_messages = Counter(
        (t, json.dumps(b, sort_keys=True, ensure_ascii=False)) for t, b in want.messages
    )
    assert got_messages - want_messages == Counter(
        {k: v for k, v in (got_messages - want_messages).items() if k[0] == "error_message"}
    ), where
    assert want_messages - got_messages == Counter(), (where, want_messages - got_messages)
    published = _tax_inputs_present(loaded)
    rejection_messages = sum((got_messages - want_messages).values())
    # Row rejections only: a whole-file rejection is a partner notice.
    row_rejections = [r for r in got["rejections"] if r["line_number"] is not None]
    assert rejection_messages == (len(row_rejections) if published else 0), where
    assert all(m["message_group_id"] == client_id for m in got["messages"]), where
    assert all(m["deduplication_id"] for m in got["messages"]), where


def _tax_inputs_present(loaded: dict[str, reference.LoadedFile]) -> bool:
    return all(e in loaded and loaded[e].persisted for e in ("clients", "portfolios", "accounts"))
