"""Which columns of a lake data file get a Parquet dictionary (dataharvest.lake.export)."""

from __future__ import annotations

from decimal import Decimal

import pyarrow as pa

from dataharvest.lake.export import DICTIONARY_MIN_REPEATS, dictionary_columns


def test_repeating_columns_get_a_dictionary_and_unique_ones_do_not():
    rows = 1000
    batch = pa.RecordBatch.from_pydict(
        {
            "client_id": pa.array(["acme"] * rows),
            "keyword": pa.array(["DEPOSIT", "WITHDRAWAL", "FEE", None] * (rows // 4)),
            "transaction_reference": pa.array([f"T-{i}" for i in range(rows)]),
            "amount": pa.array([Decimal(i) / 100 for i in range(rows)], pa.decimal128(38, 18)),
            # Exactly at the limit: every value repeats DICTIONARY_MIN_REPEATS times.
            "account_number": pa.array([i % (rows // DICTIONARY_MIN_REPEATS) for i in range(rows)]),
            # One more distinct value than the limit allows.
            "record_id": pa.array([i % (rows // DICTIONARY_MIN_REPEATS + 1) for i in range(rows)]),
        }
    )

    assert dictionary_columns(batch) == ["client_id", "keyword", "account_number"]


def test_nulls_count_as_a_value():
    batch = pa.RecordBatch.from_pydict({"note": pa.array([None] * 50, pa.string())})

    assert dictionary_columns(batch) == ["note"]


def test_a_batch_too_small_to_show_repeats_gets_no_dictionary():
    batch = pa.RecordBatch.from_pydict({"client_id": pa.array(["acme"] * 3)})

    assert dictionary_columns(batch) == []
