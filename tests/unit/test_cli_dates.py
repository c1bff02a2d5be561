"""The CLI's --date arguments: ASCII digits only, matched as a whole."""

from __future__ import annotations

import pytest

from dataharvest_local.cli import _yyyymmdd


@pytest.mark.parametrize(
    ("value", "digits"), [("2024-01-02", "20240102"), ("20240102", "20240102")]
)
def test_dates_in_either_form(value: str, digits: str) -> None:
    assert _yyyymmdd(value) == digits


@pytest.mark.parametrize(
    "value",
    ["2024010", "20240102\n", "\uff12\uff10\uff12\uff14\uff10\uff11\uff10\uff12", "2024/01/02"],
)
def test_anything_else_is_refused(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        _yyyymmdd(value)
    # Bad arguments: exit code 2 and one line on stderr (docs/SPEC.md §5.3).
    assert raised.value.code == 2
    assert capsys.readouterr().err == (
        f"dataharvest: {value!r} is not a date (YYYY-MM-DD or YYYYMMDD)\n"
    )
