"""Operations (issue 17), pure logic: metric documents (EMF), expectation arguments, due times,
the `--stage` guard."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time

import pytest

from dataharvest.ops import late, metrics


def test_a_metric_is_one_emf_document_with_service_and_entity_only(monkeypatch, capsys, caplog):
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "dataharvest-persistence-prod-persist")
    monkeypatch.setenv("DATAHARVEST_STAGE", "prod")
    from dataharvest import config

    config.environment.cache_clear()
    try:
        metrics.emit("persistence", "accounts", metrics.FILES_REJECTED, 1, client_id="acme")
    finally:
        config.environment.cache_clear()
    documents = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]
    emf = next(d for d in documents if "_aws" in d)
    (directive,) = emf["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "DataHarvest/prod"
    assert directive["Dimensions"] == [["service", "entity"]]
    assert directive["Metrics"] == [{"Name": "FilesRejected", "Unit": "Count"}]
    assert emf["service"] == "persistence" and emf["entity"] == "accounts"
    assert "client_id" not in emf  # never a dimension, and not in the metric document
    # The client id is in the structured log line beside it.
    (record,) = [r for r in caplog.records if r.getMessage() == "metric"]
    assert record.client_id == "acme" and record.metric == "FilesRejected"


def test_outside_lambda_only_the_log_line(monkeypatch, capsys):
    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_NAME", raising=False)
    metrics.emit("persistence", "accounts", metrics.FILES_LOADED, 1, client_id="acme")
    assert "_aws" not in capsys.readouterr().out


@pytest.mark.parametrize(
    ("value", "days"),
    [
        ("mon-fri", (1, 2, 3, 4, 5)),
        ("mon,wed,fri", (1, 3, 5)),
        ("sat-sun", (6, 7)),
        ("daily", (1, 2, 3, 4, 5, 6, 7)),
        ("Monday-Tuesday", (1, 2)),
    ],
)
def test_days(value, days):
    assert late.parse_days(value) == days


@pytest.mark.parametrize("value", ["", "fri-mon", "funday", "mon-"])
def test_bad_days(value):
    with pytest.raises(late.ExpectationError):
        late.parse_days(value)


def test_times_entities_and_zones():
    assert late.parse_time("06:00") == time(6, 0)
    for bad in ("6:00", "24:00", "06:60", "6am"):
        with pytest.raises(late.ExpectationError):
            late.parse_time(bad)
    assert late.parse_entities("clients, accounts,clients") == ("clients", "accounts")
    with pytest.raises(late.ExpectationError):
        late.parse_entities("clients,users")
    assert late.parse_timezone("Europe/Berlin") == "Europe/Berlin"
    with pytest.raises(late.ExpectationError):
        late.parse_timezone("Europe/Nowhere")


def test_due_times_follow_the_zone_across_daylight_saving():
    expectation = late.Expectation(
        "acme", ("accounts",), time(6, 0), "Europe/Berlin", (1, 2, 3, 4, 5), 0, date(2024, 1, 1)
    )
    assert expectation.due_at(date(2024, 1, 15)) == datetime(2024, 1, 15, 5, 0, tzinfo=UTC)
    assert expectation.due_at(date(2024, 7, 15)) == datetime(2024, 7, 15, 4, 0, tzinfo=UTC)
    # Before 06:00 Berlin on Monday 15 January nothing is due that day; the Friday before is.
    due = late.due_inputs(expectation, datetime(2024, 1, 15, 4, 59, tzinfo=UTC))
    assert [d.business_date for d in due] == [
        date(2024, 1, 8),
        date(2024, 1, 9),
        date(2024, 1, 10),
        date(2024, 1, 11),
        date(2024, 1, 12),
    ]


def test_stage_flag_allows_only_stage_commands(capsys):
    from dataharvest_local import cli

    for argv in (
        ["--stage", "prod", "run", "x.csv", "--client", "acme"],
        ["--stage", "prod", "transformers", "register", "services/x"],
        ["--stage", "prod", "late", "check"],
    ):
        with pytest.raises(SystemExit) as raised:
            cli.main(argv)
        assert raised.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "local stack only" in err
