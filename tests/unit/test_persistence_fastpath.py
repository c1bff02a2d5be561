"""The fast path's line check: it accepts only lines whose typed COPY stores exactly what the
staged validation would, and sends everything else to the staged path."""

from __future__ import annotations

import re

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from dataharvest.persistence import fastpath
from dataharvest.persistence.header import match_header
from dataharvest.schemas import DECIMAL_PATTERN, ENTITIES, INTEGER_PATTERN

TRANSACTIONS = ENTITIES["transactions"]
HEADER = ["record_id", "account_number", "transaction_reference", "amount", "keyword"]


def block(entity: str, names: list[str]) -> re.Pattern[bytes]:
    planned = fastpath.plan(ENTITIES[entity], match_header(names, ENTITIES[entity], {}))
    assert planned is not None
    return planned.block


@pytest.mark.parametrize(
    "line",
    [
        b"1,42,T-1,12.50,DEPOSIT\n",
        b"1,42,T-1,-12.50,TAX\r\n",
        b"007,+42,T 1 with spaces inside,0,FEE\n",
        "1,42,Tø-13,1,DEPOSIT\n".encode(),
        b"1,42,T-1,999999999999999999999.123456,OTHER_KEYWORD-2\n",
        b'"1","42","T-1, with a comma","12.50","DEPOSIT"\n',
        b'1,42,"T ""quoted"" 1",12.50,DEPOSIT\n',
    ],
)
def test_plain_lines_are_accepted(line: bytes) -> None:
    assert block("transactions", HEADER).fullmatch(line)


@pytest.mark.parametrize(
    ("line", "why"),
    [
        (b"1,42,T-1,12,5,DEPOSIT\n", "a field too many"),
        (b'1,42,"T-1\n",12.50,DEPOSIT\n', "a quoted newline"),
        (b'1,42," T-1",12.50,DEPOSIT\n', "quoted leading white space (trimmed by the rules)"),
        (b'1,42,T"-1,12.50,DEPOSIT\n', "a quote inside an unquoted field"),
        (b'1,42,"",12.50,DEPOSIT\n', "a quoted empty value (an empty string to COPY)"),
        (b"1,42, T-1,12.50,DEPOSIT\n", "leading white space (trimmed by the rules)"),
        (b"1,42,T-1 ,12.50,DEPOSIT\n", "trailing white space"),
        (b"1,42,T-1,12.50,deposit\n", "a lower-case keyword (upper-cased on load)"),
        (b"1,42,T-1,12.50,D\xc3\xa9POSIT\n", "non-ASCII keyword"),
        (b"1,42,T-1,1e3,DEPOSIT\n", "an exponent"),
        (b"1,42,T-1,.5,DEPOSIT\n", "no digit before the point"),
        (b"1,42,T-1,5.,DEPOSIT\n", "no digit after the point"),
        (b"1,42,,12.50,DEPOSIT\n", "a missing required value"),
        (b"1,1234567890123456789,T-1,1,DEPOSIT\n", "19 digits: maybe out of bigint range"),
        (b"1,0x1F,T-1,1,DEPOSIT\n", "a hexadecimal integer PostgreSQL would accept"),
        (b"1,1_000,T-1,1,DEPOSIT\n", "an underscore PostgreSQL would accept"),
        (b"\n", "a blank line"),
    ],
)
def test_lines_needing_the_staged_path_are_refused(line: bytes, why: str) -> None:
    assert block("transactions", HEADER).fullmatch(line) is None, why


def test_non_negative_and_currency_columns() -> None:
    accounts = block(
        "accounts", ["record_id", "account_number", "cash_balance", "currency", "taxes_paid"]
    )
    assert accounts.fullmatch(b"1,42,-5.00,EUR,0.00\n")
    assert accounts.fullmatch(b"1,42,-5.00,EUR,-0.01\n") is None
    assert accounts.fullmatch(b"1,42,-5.00,EUR,+1\n") is None  # left to the staged rules
    assert accounts.fullmatch(b"1,42,-5.00,eur,1\n") is None


def test_optional_columns_may_be_empty() -> None:
    clients = block(
        "clients",
        ["record_id", "first_name", "last_name", "client_reference", "tax_free_allowance"],
    )
    assert clients.fullmatch(b"1,,,C1,0\n")
    assert clients.fullmatch(b"1,A, ,C1,0\n") is None  # a blank value is trimmed to missing
    assert clients.fullmatch(b'1,"",,C1,0\n') is None  # "" would be stored as '', not NULL


def test_a_field_that_is_no_contract_column_goes_to_a_placeholder() -> None:
    header = match_header([*HEADER, "comment"], TRANSACTIONS, {})
    planned = fastpath.plan(TRANSACTIONS, header)
    assert planned.columns == [*HEADER, "ignored_field_6"]
    assert planned.block.fullmatch(b'1,42,T-1,12.50,DEPOSIT,"anything, at all"\n')
    assert planned.block.fullmatch(b"1,42,T-1,12.50,DEPOSIT,\n")
    assert planned.block.fullmatch(b'1,42,T-1,12.50,DEPOSIT,"two\nlines"\n') is None


def test_column_order_follows_the_file() -> None:
    names = ["keyword", "amount", "transaction_reference", "account_number", "record_id"]
    planned = fastpath.plan(TRANSACTIONS, match_header(names, TRANSACTIONS, {}))
    assert planned is not None
    assert planned.columns == names
    assert planned.block.fullmatch(b"DEPOSIT,1.5,T-1,42,1\n")
    assert planned.block.fullmatch(b"1,42,T-1,1.5,DEPOSIT\n") is None


@given(st.text(alphabet="0123456789+-._ xe", max_size=8))
def test_numbers_it_accepts_are_numbers_the_rules_accept(value: str) -> None:
    line = f"1,{value},T-1,{value},DEPOSIT\n".encode()
    if block("transactions", HEADER).fullmatch(line):
        assert re.fullmatch(INTEGER_PATTERN.strip("^$"), value)
        assert re.fullmatch(DECIMAL_PATTERN.strip("^$"), value)


# The backtracking forms the possessive patterns replaced: an edge, then any characters and an
# edge. The fast forms must accept exactly the same values, or a value would change paths.
BACKTRACKING_TEXT = rb'[^,"\r\n \t](?:[^,"\r\n]*[^,"\r\n \t])?'
BACKTRACKING_UPPER = rb"[!#-+\--`{-~](?:[ \t!#-+\--`{-~]*[!#-+\--`{-~])?"


@settings(max_examples=1000)
@given(st.text(alphabet=' \tAb,"\r\n-#~`{', max_size=10))
@example("A\tb")
@example("A \t b ")
@example("\tA")
def test_possessive_text_patterns_accept_what_the_backtracking_ones_did(value: str) -> None:
    raw = value.encode()
    for fast, reference in (
        (fastpath.TEXT, BACKTRACKING_TEXT),
        (fastpath.UPPER_TEXT, BACKTRACKING_UPPER),
    ):
        assert bool(re.fullmatch(fast, raw)) == bool(re.fullmatch(reference, raw)), (fast, raw)


@given(st.lists(st.sampled_from([b"1,42,T-1,1.5,DEPOSIT", b"1,42, T-1,1.5,TAX", b""]), max_size=6))
def test_a_block_matches_only_when_every_line_does(lines: list[bytes]) -> None:
    planned = block("transactions", HEADER)
    data = b"".join(line + b"\n" for line in lines)
    line = re.compile(planned.pattern.removeprefix(b"(?:").removesuffix(rb"\r?\n)*+"))
    assert bool(planned.fullmatch(data)) == all(line.fullmatch(text) for text in lines)


def key_order(names: list[str] = HEADER) -> fastpath.KeyOrder:
    return fastpath.KeyOrder(TRANSACTIONS, match_header(names, TRANSACTIONS, {}))


@pytest.mark.parametrize(
    ("blocks", "proven"),
    [
        ([b"1,42,T-1,1,TAX\n2,42,T-2,1,TAX\n", b"3,42,T-3,1,TAX\n"], True),
        ([b"1,42,T-1,1,TAX\n2,42,T-2,1,TAX"], True),  # the last line without its line end
        ([b"1,42,T-1,1,TAX\r\n2,42,T-2,1,TAX\r\n"], True),
        ([b"1,42,T-1,1,TAX\n\n2,42,T-2,1,TAX\n"], True),  # a blank line holds no key
        ([b"1,42,T-2,1,TAX\n2,42,T-1,1,TAX\n"], False),  # not in order
        ([b"1,42,T-1,1,TAX\n2,42,T-1,1,TAX\n"], False),  # a duplicate next to its first
        ([b"1,42,T-1,1,TAX\n2,42,T-2,1,TAX\n", b"3,42,T-2,1,TAX\n"], False),  # across blocks
        ([b'1,42,"T-1",1,TAX\n2,42,T-2,1,TAX\n'], False),  # a quote: the value may differ
        ([b"1,42,T-1,1,TAX\n2,42,T-10,1,TAX\n3,42,T-9,1,TAX\n"], True),  # byte order, as text
    ],
)
def test_keys_in_strictly_increasing_order_are_proven_distinct(
    blocks: list[bytes], proven: bool
) -> None:
    keys = key_order()
    for lines in blocks:
        keys.feed(lines)
    assert keys.proven is proven


def test_a_key_in_the_first_field_and_a_blank_line_end_the_proof_conservatively() -> None:
    names = ["transaction_reference", "record_id", "account_number", "amount", "keyword"]
    keys = key_order(names)
    keys.feed(b"T-1,1,42,1,TAX\nT-2,2,42,1,TAX\n")
    assert keys.proven
    keys.feed(b"\nT-3,3,42,1,TAX\n")  # an empty first field reads as an empty key
    assert not keys.proven


def test_once_given_up_the_proof_never_returns() -> None:
    keys = key_order()
    keys.feed(b"1,42,T-2,1,TAX\n")
    keys.give_up()
    keys.feed(b"2,42,T-3,1,TAX\n")
    assert not keys.proven


@given(st.lists(st.text(alphabet="ABC-01", min_size=1, max_size=4), min_size=1, max_size=30))
@settings(max_examples=200, deadline=None)
def test_a_proof_only_stands_when_the_keys_are_distinct(references: list[str]) -> None:
    keys = key_order()
    lines = b"".join(f"{i},42,{r},1,TAX\n".encode() for i, r in enumerate(references))
    keys.feed(lines)
    if keys.proven:
        assert len(set(references)) == len(references)
    assert keys.proven == (references == sorted(set(references)))


LINE_CHOICES = [
    b"1,42,T-1,1.5,DEPOSIT",
    b"2,42,T-2,1.5,TAX\r",
    b"3,42,T-3,x,TAX",  # not plain: not a decimal
    b"4,42, T-4,1.5,TAX",  # not plain: white space
    b'5,42,"T-5",1.5,TAX',  # plain, quoted key
    b"6,42,T-6,1.5",  # a field short
    b"",  # blank
]


@given(st.lists(st.sampled_from(LINE_CHOICES), min_size=1, max_size=8))
@settings(max_examples=300, deadline=None)
def test_the_keyed_check_accepts_exactly_the_blocks_the_block_check_does(
    lines: list[bytes],
) -> None:
    """`plain_block` takes the one-pass keyed check while the proof stands; it must decide
    every block as the block pattern does, and prove only what is so."""
    planned = fastpath.plan(TRANSACTIONS, match_header(HEADER, TRANSACTIONS, {}))
    data = b"".join(line + b"\n" for line in lines)
    keys = key_order()
    assert fastpath.plain_block(planned, data, keys) == bool(planned.block.fullmatch(data))
    if keys.proven and bool(planned.block.fullmatch(data)):
        plain_keys = [line.split(b",")[2] for line in lines]
        assert plain_keys == sorted(set(plain_keys))


def test_the_keyed_check_is_not_built_for_an_integer_key() -> None:
    accounts = ENTITIES["accounts"]
    names = [c.name for c in accounts.columns if c.required]
    planned = fastpath.plan(accounts, match_header(names, accounts, {}))
    assert planned.keyed is None
    assert fastpath.plan(TRANSACTIONS, match_header(HEADER, TRANSACTIONS, {})).keyed is not None
