"""A model-based test of the whole choreography (issue 12): Hypothesis walks random sequences
of uploads, re-uploads (any content, rejected files included), removals and transformer
disable / enable on one client and date of the real local stack. The model is just the
current files and the set of disabled transformers; after every step, once the choreography
is quiet and every transformer is enabled, every export must equal the reference computed
from the current files (tests/reference.py) and no item may be stuck.

`DATAHARVEST_STATEFUL_EXAMPLES` (default 3) and `DATAHARVEST_STATEFUL_STEPS` (default 8) set
the size; each step costs seconds on the stack, so there is no shrinking (the failing
sequence is printed)."""

from __future__ import annotations

import json
import os
import uuid

import boto3
import pytest
from drops import ENTITIES, assert_matches, csv_files, delete_upload, key
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from dataharvest_local import cli

pytestmark = pytest.mark.integration

DAY = "20240102"
TRANSFORMERS = (
    "relationship_transformer",
    "sum_deposit_transformer",
    "transaction_transformer",
    "tax_transformer",
    "partner_publisher",
)


def test_random_walks_converge_to_the_reference(stack_info, db, wait_quiet, capsys):
    class Choreography(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.client_id = f"w-{uuid.uuid4().hex[:10]}"
            self.files: dict[str, bytes] = {}
            self.disabled: set[str] = set()

        @rule(data=st.data(), entity=st.sampled_from(ENTITIES))
        def upload(self, data: st.DataObject, entity: str) -> None:
            content = data.draw(csv_files(entity))
            boto3.client("s3").put_object(
                Bucket=stack_info.export("LandingBucketName"),
                Key=key(self.client_id, DAY, entity),
                Body=content,
            )
            self.files[entity] = content

        @rule(entity=st.sampled_from(ENTITIES))
        def remove(self, entity: str) -> None:
            delete_upload(stack_info, key(self.client_id, DAY, entity))
            self.files.pop(entity, None)

        @rule(name=st.sampled_from(TRANSFORMERS))
        def disable(self, name: str) -> None:
            assert cli.main(["transformers", "disable", name]) == 0
            self.disabled.add(name)

        @precondition(lambda self: self.disabled)
        @rule(data=st.data())
        def enable(self, data: st.DataObject) -> None:
            name = data.draw(st.sampled_from(sorted(self.disabled)))
            # Converges every item to the entry and waits until quiet.
            assert cli.main(["transformers", "enable", name]) == 0
            self.disabled.discard(name)

        @invariant()
        def converged_when_everything_is_enabled(self) -> None:
            wait_quiet()
            if self.disabled:
                return  # a disabled transformer's outputs are frozen on purpose
            assert_matches(db, self.client_id, DAY, self.files)
            capsys.readouterr()
            assert cli.main(["status", "--client", self.client_id, "--json"]) == 0
            items = json.loads(capsys.readouterr().out)
            assert [item["stuck"] for item in items] == [[] for _ in items]

        def teardown(self) -> None:
            for name in sorted(self.disabled):
                cli.main(["transformers", "enable", name])

    run_state_machine_as_test(
        Choreography,
        settings=settings(
            max_examples=int(os.environ.get("DATAHARVEST_STATEFUL_EXAMPLES", "3")),
            stateful_step_count=int(os.environ.get("DATAHARVEST_STATEFUL_STEPS", "8")),
            deadline=None,
            phases=(Phase.explicit, Phase.reuse, Phase.generate),
            suppress_health_check=[
                HealthCheck.function_scoped_fixture,
                HealthCheck.too_slow,
                HealthCheck.data_too_large,
            ],
        ),
    )
