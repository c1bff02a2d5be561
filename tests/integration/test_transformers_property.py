"""Property: for generated drops, the system's exported outputs equal the reference
implementation's (tests/reference.py), after the first uploads and after re-uploads and
deletes. Everything runs through the real local stack: S3 uploads -> persistence -> catapult
-> the five transformers."""

from __future__ import annotations

import os
import uuid

import boto3
import pytest
from drops import DATES, ENTITIES, assert_matches, csv_files, delete_upload, drops, key
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.integration

TENANTS = 2


@st.composite
def changes(draw: st.DrawFn) -> list[tuple[int, str, str, bytes | None]]:
    """Re-uploads (new content) and deletes of any input, present or not."""
    return draw(
        st.lists(
            st.tuples(
                st.integers(0, TENANTS - 1),
                st.sampled_from(DATES),
                st.sampled_from(ENTITIES),
            ).flatmap(
                lambda target: st.tuples(
                    st.just(target[0]),
                    st.just(target[1]),
                    st.just(target[2]),
                    st.none() | csv_files(target[2]),
                )
            ),
            min_size=1,
            max_size=3,
        )
    )


@settings(
    max_examples=int(os.environ.get("DATAHARVEST_PROPERTY_EXAMPLES", "15")),
    deadline=None,
    # No shrinking: one example costs seconds on the stack, and the failing drop is printed.
    phases=(Phase.explicit, Phase.reuse, Phase.generate),
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(initial=drops(tenants=TENANTS), later=changes())
def test_exports_equal_the_reference_through_uploads_reuploads_and_deletes(
    stack_info, db, wait_quiet, initial, later
):
    s3 = boto3.client("s3")
    bucket = os.environ["LANDING_BUCKET"]
    tenants = [f"p-{uuid.uuid4().hex[:10]}" for _ in range(TENANTS)]
    current: dict[tuple[int, str, str], bytes] = {}

    def check() -> None:
        for tenant, client_id in enumerate(tenants):
            for day in DATES:
                files = {e: c for (t, d, e), c in current.items() if t == tenant and d == day}
                assert_matches(db, client_id, day, files)

    for (tenant, day, entity), content in initial.items():
        s3.put_object(Bucket=bucket, Key=key(tenants[tenant], day, entity), Body=content)
        current[(tenant, day, entity)] = content
    wait_quiet()
    check()

    for tenant, day, entity, content in later:
        object_key = key(tenants[tenant], day, entity)
        if content is None:
            delete_upload(stack_info, object_key)
            current.pop((tenant, day, entity), None)
        else:
            s3.put_object(Bucket=bucket, Key=object_key, Body=content)
            current[(tenant, day, entity)] = content
    wait_quiet()
    check()
