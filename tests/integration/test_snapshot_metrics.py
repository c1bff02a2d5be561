"""Snapshot-change metrics (issue 17) on the local stack: the EMF documents the persistence and
snapshot_applier workers write for an export's delta (rows by op), the changes published to the
stream and the replica rows applied; dimensions service + entity (the table), the client id only
in the log line beside each document."""

from __future__ import annotations

import json
import time
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from test_snapshots import (
    SIMPLE,
    base_rows,
    register,
    rows_file,
    snapshot_key,
    upload,
    wait_replica,
)

from dataharvest.ops import metrics

pytestmark = pytest.mark.integration

SNAPSHOT_METRICS = (
    metrics.SNAPSHOT_ROWS_INSERTED,
    metrics.SNAPSHOT_ROWS_UPDATED,
    metrics.SNAPSHOT_ROWS_DELETED,
    metrics.SNAPSHOT_ROWS_UNCHANGED,
    metrics.SNAPSHOT_CHANGES_PUBLISHED,
    metrics.SNAPSHOT_CHANGES_APPLIED,
)


def _json_lines(path: Path) -> list[dict[str, Any]]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def emf_of(log_dir: Path, client_id: str) -> list[tuple[str, dict[str, Any]]]:
    """(function log, EMF document) of every snapshot metric emitted for the client: each EMF
    document is followed by its log line (metrics.emit), which names the client."""
    found = []
    for path in sorted(log_dir.glob("*.log")):
        lines = _json_lines(path)
        for before, line in pairwise(lines):
            if (
                line.get("message") == "metric"
                and line.get("client_id") == client_id
                and line.get("metric") in SNAPSHOT_METRICS
                and "_aws" in before
            ):
                found.append((path.name, before))
    return found


def totals(documents: list[tuple[str, dict[str, Any]]]) -> dict[tuple[str, str], float]:
    out: dict[tuple[str, str], float] = {}
    for _, doc in documents:
        (directive,) = doc["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == "DataHarvest/local"
        assert directive["Dimensions"] == [["service", "entity"]]
        assert "client_id" not in doc
        assert doc["entity"] == SIMPLE
        (metric,) = directive["Metrics"]
        name = metric["Name"]
        value = doc[name]  # one value, or a list of values (powertools' EMF writer)
        value = sum(value) if isinstance(value, list) else value
        out[(doc["service"], name)] = out.get((doc["service"], name), 0) + value
    return out


def test_delta_publish_and_apply_emit_emf_per_table(client_id, db, wait_quiet, local_stack):
    log_dir = local_stack.home / "logs"
    register(db, client_id)
    first = base_rows()
    upload(snapshot_key(client_id, "20240102_V0001"), rows_file(first))
    wait_quiet()
    wait_replica(db, client_id, first)
    # 1 update, 1 delete, 1 insert, 18 rows unchanged.
    second = dict(first)
    second[1] = ("name 1 renamed", "1.50", "2024-01-02")
    del second[20]
    second[21] = ("name 21", "0", "2024-01-03")
    upload(snapshot_key(client_id, "20240103_V0001"), rows_file(second))
    wait_quiet()
    wait_replica(db, client_id, second)

    expected = {
        ("persistence", metrics.SNAPSHOT_ROWS_INSERTED): 20 + 1,
        ("persistence", metrics.SNAPSHOT_ROWS_UPDATED): 0 + 1,
        ("persistence", metrics.SNAPSHOT_ROWS_DELETED): 0 + 1,
        ("persistence", metrics.SNAPSHOT_ROWS_UNCHANGED): 0 + 18,
        ("persistence", metrics.SNAPSHOT_CHANGES_PUBLISHED): 20 + 3,
        ("snapshot_applier", metrics.SNAPSHOT_CHANGES_APPLIED): 20 + 3,
    }
    # The applier's log line is written after its commit, which the replica shows first.
    deadline = time.monotonic() + 30
    while totals(emf_of(log_dir, client_id)) != expected and time.monotonic() < deadline:
        time.sleep(0.2)
    documents = emf_of(log_dir, client_id)
    assert totals(documents) == expected
    producers = {name.split("-local-")[0] for name, _ in documents}
    assert producers == {"dataharvest-persistence", "dataharvest-snapshot-applier"}
