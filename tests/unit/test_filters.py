"""Unit tests for dataharvest.filters, the local AWS Lambda event-filtering engine.

Every case cites the AWS page it comes from. Abbreviations:
  LDG    AWS Lambda Developer Guide, "Control which events Lambda sends to your function"
         (invocation-eventfiltering.html), section "Filter rule syntax" unless stated.
  LDG-DDB  AWS Lambda Developer Guide, "Using event filtering with a DynamoDB event source"
         (with-ddb-filtering.html).
  EB     Amazon EventBridge User Guide: "Comparison operators for use in event patterns"
         (eb-create-pattern-operators.html), "Content filtering in event patterns",
         "Arrays in event patterns", "Matching null values and empty strings".
  RULER  aws/event-ruler README, the open-source matcher behind EventBridge patterns.
"""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from dataharvest.filters import FilterPatternError, matches, validate

# A DynamoDB stream record shaped like the ones our pipeline consumes.
DDB_MODIFY = {
    "eventName": "MODIFY",
    "dynamodb": {
        "Keys": {"pk": {"S": "partner#42"}, "sort_key": {"S": "20240102"}},
        "NewImage": {
            "client_persisted": {"BOOL": True},
            "sort_key": {"S": "20240102"},
            "rows": {"N": "12"},
        },
        "OldImage": {
            "client_persisted": {"BOOL": False},
            "sort_key": {"S": "20240102"},
            "rows": {"N": "3"},
        },
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    },
}

# LDG-DDB, "DynamoDB event": the example stream record.
DDB_DOC_RECORD = {
    "eventID": "1",
    "eventVersion": "1.0",
    "dynamodb": {
        "ApproximateCreationDateTime": "1678831218.0",
        "Keys": {"CustomerName": {"S": "AnyCompany Industries"}},
        "NewImage": {
            "AccountManager": {"S": "Pat Candella"},
            "PaymentTerms": {"S": "60 days"},
            "CustomerName": {"S": "AnyCompany Industries"},
        },
        "SequenceNumber": "111",
        "SizeBytes": 26,
        "StreamViewType": "NEW_IMAGE",
    },
}


def _case(pattern, record, expected, doc):
    return pytest.param(pattern, record, expected, id=doc)


# --------------------------------------------------------------------------------------
# One or more rows per operator of the LDG "Filter rule syntax" table, plus the EB rows
# the Lambda page defers to. Each case: (pattern, record, expected match).
# --------------------------------------------------------------------------------------
OPERATOR_CASES = [
    # LDG table row "Null": "UserID": [ null ]
    _case({"UserID": [None]}, {"UserID": None}, True, "LDG Null: null matches"),
    _case({"UserID": [None]}, {"UserID": ""}, False, "LDG Null + EB null/empty: not empty str"),
    _case({"UserID": [None]}, {}, False, "LDG Null: missing key is not null"),
    # LDG table row "Empty": "LastName": [""]
    _case({"LastName": [""]}, {"LastName": ""}, True, "LDG Empty: empty string matches"),
    _case({"LastName": [""]}, {"LastName": None}, False, "EB null/empty note: null is not empty"),
    _case({"LastName": [""]}, {}, False, "LDG Empty: missing key is not empty"),
    # LDG table row "Equals": "Name": [ "Alice" ]
    _case({"Name": ["Alice"]}, {"Name": "Alice"}, True, "LDG Equals"),
    _case({"Name": ["Alice"]}, {"Name": "alice"}, False, "LDG Equals note: no case folding"),
    _case({"Name": ["Alice"]}, {"Other": "Alice"}, False, "LDG Equals: key must be present"),
    # LDG table row "Equals (ignore case)": "Name": [ { "equals-ignore-case": "alice" } ]
    _case({"Name": [{"equals-ignore-case": "alice"}]}, {"Name": "Alice"}, True, "LDG Equals IC"),
    _case({"Name": [{"equals-ignore-case": "alice"}]}, {"Name": "ALICE"}, True, "LDG Equals IC 2"),
    _case({"Name": [{"equals-ignore-case": "alice"}]}, {"Name": "Alicia"}, False, "LDG EqIC neg"),
    # LDG table row "And": "Location": [ "New York" ], "Day": ["Monday"]
    _case(
        {"Location": ["New York"], "Day": ["Monday"]},
        {"Location": "New York", "Day": "Monday"},
        True,
        "LDG And: both keys match",
    ),
    _case(
        {"Location": ["New York"], "Day": ["Monday"]},
        {"Location": "New York", "Day": "Tuesday"},
        False,
        "LDG And: one key differs",
    ),
    _case(
        {"Location": ["New York"], "Day": ["Monday"]},
        {"Location": "New York"},
        False,
        "LDG And: one key missing",
    ),
    # LDG table row "Or": "PaymentType": [ "Credit", "Debit"]
    _case({"PaymentType": ["Credit", "Debit"]}, {"PaymentType": "Debit"}, True, "LDG Or"),
    _case({"PaymentType": ["Credit", "Debit"]}, {"PaymentType": "Cash"}, False, "LDG Or neg"),
    # LDG table row "Or (multiple fields)": "$or": [ {"Location": [..]}, {"Day": [..]} ]
    _case(
        {"$or": [{"Location": ["New York"]}, {"Day": ["Monday"]}]},
        {"Location": "Boston", "Day": "Monday"},
        True,
        "LDG Or (multiple fields): second branch",
    ),
    _case(
        {"$or": [{"Location": ["New York"]}, {"Day": ["Monday"]}]},
        {"Location": "Boston", "Day": "Friday"},
        False,
        "LDG Or (multiple fields): no branch",
    ),
    # LDG table row "Not": "Weather": [ { "anything-but": [ "Raining" ] } ]
    _case({"Weather": [{"anything-but": ["Raining"]}]}, {"Weather": "Sunny"}, True, "LDG Not"),
    _case({"Weather": [{"anything-but": ["Raining"]}]}, {"Weather": "Raining"}, False, "LDG Not 2"),
    _case({"Weather": [{"anything-but": ["Raining"]}]}, {}, False, "LDG Not: key still required"),
    # LDG table row "Numeric (equals)": "Price": [ { "numeric": [ "=", 100 ] } ]
    _case({"Price": [{"numeric": ["=", 100]}]}, {"Price": 100}, True, "LDG Numeric (equals)"),
    _case({"Price": [{"numeric": ["=", 100]}]}, {"Price": 100.0}, True, "LDG Numeric = by value"),
    _case({"Price": [{"numeric": ["=", 100]}]}, {"Price": 101}, False, "LDG Numeric (equals) neg"),
    _case(
        {"Price": [{"numeric": ["=", 100]}]},
        {"Price": "100"},
        False,
        "EB Numeric matching: only JSON numbers, not numeric strings",
    ),
    # LDG table row "Numeric (range)": "Price": [ { "numeric": [ ">", 10, "<=", 20 ] } ]
    _case({"Price": [{"numeric": [">", 10, "<=", 20]}]}, {"Price": 20}, True, "LDG Range <= top"),
    _case({"Price": [{"numeric": [">", 10, "<=", 20]}]}, {"Price": 10.5}, True, "LDG Range mid"),
    _case({"Price": [{"numeric": [">", 10, "<=", 20]}]}, {"Price": 10}, False, "LDG Range > bot"),
    _case({"Price": [{"numeric": [">", 10, "<=", 20]}]}, {"Price": 20.01}, False, "LDG Range top"),
    # EB Content filtering, "Numeric matching" example: "d-count": [ { "numeric": [ "<", 10 ] } ]
    _case({"d-count": [{"numeric": ["<", 10]}]}, {"d-count": 9.999}, True, "EB numeric <"),
    _case({"d-count": [{"numeric": [">=", 10]}]}, {"d-count": 10}, True, "EB numeric >="),
    # LDG table row "Exists": "ProductName": [ { "exists": true } ]
    _case({"ProductName": [{"exists": True}]}, {"ProductName": "x"}, True, "LDG Exists"),
    _case({"ProductName": [{"exists": True}]}, {"Other": "x"}, False, "LDG Exists neg"),
    # LDG table row "Does not exist": "ProductName": [ { "exists": false } ]
    _case({"ProductName": [{"exists": False}]}, {"Other": "x"}, True, "LDG Does not exist"),
    _case({"ProductName": [{"exists": False}]}, {"ProductName": "x"}, False, "LDG Not exist neg"),
    # LDG table row "Begins with": "Region": [ {"prefix": "us-" } ]
    _case({"Region": [{"prefix": "us-"}]}, {"Region": "us-east-1"}, True, "LDG Begins with"),
    _case({"Region": [{"prefix": "us-"}]}, {"Region": "eu-west-1"}, False, "LDG Begins with neg"),
    _case({"Region": [{"prefix": "us-"}]}, {"Region": "US-EAST-1"}, False, "LDG prefix: case"),
    # LDG table row "Ends with": "FileName": [ { "suffix": ".png" } ]
    _case({"FileName": [{"suffix": ".png"}]}, {"FileName": "a/b.png"}, True, "LDG Ends with"),
    _case({"FileName": [{"suffix": ".png"}]}, {"FileName": "b.PNG"}, False, "LDG Ends with: case"),
    # EB operators table "Begins with (ignore case)": {"prefix": {"equals-ignore-case": "eventb"}}
    _case(
        {"service": [{"prefix": {"equals-ignore-case": "eventb"}}]},
        {"service": "EventBridge"},
        True,
        "EB Begins with (ignore case)",
    ),
    # EB Content filtering "Suffix matching while ignoring case"
    _case(
        {"FileName": [{"suffix": {"equals-ignore-case": ".png"}}]},
        {"FileName": "b.PNG"},
        True,
        "EB Ends with (ignore case)",
    ),
    # EB operators table "Anything-but": "state": [ { "anything-but": "initializing" } ]
    _case(
        {"state": [{"anything-but": "initializing"}]},
        {"state": "running"},
        True,
        "EB Anything-but single string",
    ),
    _case(
        {"state": [{"anything-but": "initializing"}]},
        {"state": "initializing"},
        False,
        "EB Anything-but single string neg",
    ),
    # EB Content filtering "Anything-but matching": single number, list of strings / numbers
    _case({"x-limit": [{"anything-but": 123}]}, {"x-limit": 124}, True, "EB Anything-but number"),
    _case({"x-limit": [{"anything-but": 123}]}, {"x-limit": 123}, False, "EB Anything-but n neg"),
    _case(
        {"state": [{"anything-but": ["stopped", "overloaded"]}]},
        {"state": "overloaded"},
        False,
        "EB Anything-but list of strings",
    ),
    _case(
        {"x-limit": [{"anything-but": [100, 200, 300]}]},
        {"x-limit": 250},
        True,
        "EB Anything-but list of numbers",
    ),
    _case(
        {"x-limit": [{"anything-but": [100, 200, 300]}]},
        {"x-limit": 200},
        False,
        "EB Anything-but list of numbers neg",
    ),
    # EB operators table "Anything-but (begins with)": {"anything-but": {"prefix": "us-"}}
    _case(
        {"Region": [{"anything-but": {"prefix": "us-"}}]},
        {"Region": "eu-west-1"},
        True,
        "EB Anything-but (begins with)",
    ),
    _case(
        {"Region": [{"anything-but": {"prefix": "us-"}}]},
        {"Region": "us-east-1"},
        False,
        "EB Anything-but (begins with) neg",
    ),
    # EB operators table "Anything-but (ends with)": {"anything-but": {"suffix": ".png"}}
    _case(
        {"FileName": [{"anything-but": {"suffix": ".png"}}]},
        {"FileName": "a.jpg"},
        True,
        "EB Anything-but (ends with)",
    ),
    _case(
        {"FileName": [{"anything-but": {"suffix": ".png"}}]},
        {"FileName": "a.png"},
        False,
        "EB Anything-but (ends with) neg",
    ),
    # EB operators table "Anything-but (ignore case)"
    _case(
        {"state": [{"anything-but": {"equals-ignore-case": "initializing"}}]},
        {"state": "INITIALIZING"},
        False,
        "EB Anything-but (ignore case) excludes other casing",
    ),
    _case(
        {"state": [{"anything-but": {"equals-ignore-case": ["initializing", "stopped"]}}]},
        {"state": "Running"},
        True,
        "EB Anything-but (ignore case) list",
    ),
    # LDG "Filter rule syntax": a pattern mirrors the record's nesting (multi-level filtering)
    _case(
        {"detail": {"state": ["running"]}},
        {"detail": {"state": "running", "x": 1}},
        True,
        "LDG nested keys",
    ),
    _case(
        {"detail": {"state": ["running"]}},
        {"detail": "running"},
        False,
        "LDG nested keys: scalar where object expected",
    ),
]


@pytest.mark.parametrize(("pattern", "record", "expected"), OPERATOR_CASES)
def test_operator(pattern, record, expected):
    assert matches(pattern, record) is expected


# ------------------------------------------------------------------------- number text


@pytest.mark.parametrize(
    ("pattern_json", "record", "expected"),
    [
        pytest.param('{"a": [300]}', {"a": 300}, True, id="LDG note: 300 equals 300"),
        pytest.param('{"a": [300]}', {"a": 300.0}, False, id="LDG note: 300 vs 300.0 differ"),
        pytest.param('{"a": [3.0e2]}', {"a": 300.0}, False, id="LDG note: 3.0e2 vs 300.0 differ"),
        pytest.param('{"a": [300.0]}', {"a": 300.0}, True, id="LDG note: same text matches"),
        pytest.param('{"a": ["300"]}', {"a": 300}, False, id="LDG Equals: string is not number"),
        pytest.param('{"a": [true]}', {"a": 1}, False, id="LDG Equals: true is not 1"),
        pytest.param(
            '{"a": [{"numeric": ["=", 3.0e2]}]}',
            {"a": 300},
            True,
            id="EB Numeric matching example 3.018e2 style: numeric compares values",
        ),
    ],
)
def test_exact_number_matching_uses_string_representation(pattern_json, record, expected):
    # LDG "Filter rule syntax" note: "For numbers, Lambda also uses string representation.
    # For example, 300, 300.0, and 3.0e2 are not considered equal." Only `numeric` compares
    # by value.
    assert matches(pattern_json, record) is expected


def test_numeric_uses_exact_decimals_not_floats():
    # LDG "Numeric (range)" row; values compared as decimals. As floats, both records below
    # would collapse onto the bound and match.
    assert not matches({"p": [{"numeric": ["<=", 0.3]}]}, {"p": Decimal("0.30000000000000001")})
    big = 9007199254740993  # 2**53 + 1: float(big) == float(big - 1)
    assert matches({"p": [{"numeric": ["=", big]}]}, {"p": big})
    assert not matches({"p": [{"numeric": ["=", big]}]}, {"p": big - 1})
    assert matches('{"p": [{"numeric": [">", 0.1, "<", 0.2]}]}', {"p": 0.15})


def test_numeric_accepts_boto3_decimal_records():
    # LDG "Numeric (equals)" row; boto3's TypeDeserializer yields Decimal for numbers.
    assert matches({"Price": [{"numeric": ["=", 100]}]}, {"Price": Decimal("100.00")})
    assert not matches({"Price": [{"numeric": ["=", 100]}]}, {"Price": True})


# ------------------------------------------------------------------------------ arrays


def test_array_in_record_matches_if_any_element_matches():
    # EB "Arrays in event patterns": the pattern matches if the intersection of the pattern
    # array and the event array is non-empty (its "resources" example).
    pattern = {
        "resources": [
            "arn:aws:ec2:us-east-1:123456789012:instance/i-b188560f",
            "arn:aws:ec2:us-east-1:111122223333:instance/i-b188560f",
        ]
    }
    record = {
        "resources": [
            "arn:aws:autoscaling:us-east-1:123456789012:autoScalingGroup:eb56d16b",
            "arn:aws:ec2:us-east-1:123456789012:instance/i-b188560f",
        ]
    }
    assert matches(pattern, record)
    assert not matches(pattern, {"resources": ["arn:aws:s3:::bucket"]})


def test_array_elements_with_operators():
    # EB "Arrays in event patterns" + "Begins with" row: any element may satisfy the rule.
    assert matches({"tags": [{"prefix": "pii-"}]}, {"tags": ["public", "pii-email"]})
    assert matches({"n": [{"numeric": [">", 10]}]}, {"n": [1, 2, 30]})
    assert not matches({"n": [{"numeric": [">", 10]}]}, {"n": [1, 2, 3]})


def test_anything_but_against_array_is_any_element():
    # EB "Arrays in event patterns" applied to "Anything-but": one element that is not
    # excluded is enough - a surprising consequence worth pinning down.
    assert matches({"s": [{"anything-but": "a"}]}, {"s": ["a", "b"]})
    assert not matches({"s": [{"anything-but": "a"}]}, {"s": ["a", "a"]})


def test_empty_array_has_no_values():
    # EB "Arrays in event patterns": an empty event array intersects nothing; with no leaf
    # value the key "does not exist" for the exists operator (EB "Exists matching").
    assert not matches({"s": ["a"]}, {"s": []})
    assert matches({"s": [{"exists": False}]}, {"s": []})


def test_nested_pattern_must_match_within_one_array_element():
    # RULER "JSON Array Matching" (array-consistent matching, as EventBridge does): fields
    # from different elements of the same array never combine into a match.
    record = {
        "employees": [
            {"firstName": "John", "lastName": "Doe"},
            {"firstName": "Anna", "lastName": "Smith"},
            {"firstName": "Peter", "lastName": "Jones"},
        ]
    }
    assert matches({"employees": {"firstName": ["Anna"]}}, record)
    assert matches({"employees": {"firstName": ["Anna"], "lastName": ["Smith"]}}, record)
    assert not matches({"employees": {"firstName": ["Anna"], "lastName": ["Jones"]}}, record)


# ------------------------------------------------------------------------------ exists


def test_exists_only_sees_leaf_nodes():
    # LDG "Filter rule syntax": "the Exists operator only works on leaf nodes ... the filter
    # pattern { "person": { "address": [ { "exists": true } ] } } wouldn't find a match".
    record = {
        "person": {
            "name": "John Doe",
            "age": 30,
            "address": {"street": "123 Main St", "city": "Anytown", "country": "USA"},
        }
    }
    assert not matches({"person": {"address": [{"exists": True}]}}, record)
    assert matches({"person": {"address": {"city": [{"exists": True}]}}}, record)


def test_exists_false_matches_intermediate_node():
    # EB Content filtering, "Exists matching": {"detail": {"c-count": [{"exists": false}]}}
    # "also matches the following event because c-count isn't a leaf node".
    pattern = {"detail": {"c-count": [{"exists": False}]}}
    assert matches(pattern, {"detail": {"state": ["initializing", "running"]}})
    assert matches(pattern, {"detail": {"state": "running", "c-count": {"c1": 100}}})
    assert not matches(pattern, {"detail": {"c-count": 5}})


def test_exists_false_when_parent_missing():
    # EB Content filtering, "Exists matching": matches "any event that does not have a
    # detail.c-count field", including one with no "detail" at all.
    assert matches({"detail": {"c-count": [{"exists": False}]}}, {"source": "x"})


def test_exists_combined_with_values_is_or():
    # LDG "Or" row: values in one list are alternatives, operators included.
    pattern = {"status": ["FAILED", {"exists": False}]}
    assert matches(pattern, {"status": "FAILED"})
    assert matches(pattern, {})
    assert not matches(pattern, {"status": "OK"})


# ---------------------------------------------------------------------------------- $or


def test_or_nested_below_top_level():
    # LDG "Or (multiple fields)" row; EB "$or" may sit at any level (RULER "Parallel Or").
    pattern = {
        "source": ["aws.cloudwatch"],
        "detail": {"$or": [{"state": ["ALARM"]}, {"severity": [{"numeric": [">=", 3]}]}]},
    }
    assert matches(pattern, {"source": "aws.cloudwatch", "detail": {"severity": 4}})
    assert matches(pattern, {"source": "aws.cloudwatch", "detail": {"state": "ALARM"}})
    assert not matches(pattern, {"source": "aws.cloudwatch", "detail": {"severity": 1}})
    assert not matches(pattern, {"source": "other", "detail": {"state": "ALARM"}})


def test_or_branches_can_hold_and_and_nested_or():
    # RULER "Nested 'Or' and 'And'" example: source && (metricName || (metricType && namespace
    # && (metricId || spaceId)) || scope).
    pattern = {
        "source": ["aws.cloudwatch"],
        "$or": [
            {"metricName": ["CPUUtilization", "ReadLatency"]},
            {
                "metricType": ["MetricType"],
                "namespace": ["AWS/EC2", "AWS/ES"],
                "$or": [{"metricId": [1234]}, {"spaceId": [1000]}],
            },
            {"scope": ["Service"]},
        ],
    }
    base = {"source": "aws.cloudwatch", "metricType": "MetricType", "namespace": "AWS/EC2"}
    assert matches(pattern, {**base, "spaceId": 1000})
    assert not matches(pattern, {**base, "spaceId": 999})
    assert matches(pattern, {"source": "aws.cloudwatch", "scope": "Service"})


# ----------------------------------------------------------------------------- DynamoDB


def test_ddb_filter_on_table_key():
    # LDG-DDB "Filtering with table keys".
    pattern = {"dynamodb": {"Keys": {"CustomerName": {"S": ["AnyCompany Industries"]}}}}
    assert matches(pattern, DDB_DOC_RECORD)
    assert not matches(
        {"dynamodb": {"Keys": {"CustomerName": {"S": ["Other Corp"]}}}}, DDB_DOC_RECORD
    )


def test_ddb_filter_on_table_attributes():
    # LDG-DDB "Filtering with table attributes": NewImage AccountManager in two values.
    pattern = {
        "dynamodb": {"NewImage": {"AccountManager": {"S": ["Pat Candella", "Shirley Rodriguez"]}}}
    }
    assert matches(pattern, DDB_DOC_RECORD)


def test_ddb_boolean_expression_with_repeated_dynamodb_key():
    # LDG-DDB "Filtering with Boolean expressions": the documented pattern repeats the
    # "dynamodb" key (NewImage, then OldImage) and means AND of both conditions.
    pattern = (
        '{ "dynamodb" : { "NewImage" : { "AccountManager" : { "S" : [ "Pat Candella" ] } } } , '
        '"dynamodb" : { "OldImage" : { "AccountManager" : { "S" : [ "Terry Whitlock" ] } } } }'
    )
    record = json.loads(json.dumps(DDB_DOC_RECORD))
    record["dynamodb"]["OldImage"] = {"AccountManager": {"S": "Terry Whitlock"}}
    assert matches(pattern, record)
    record["dynamodb"]["NewImage"]["AccountManager"]["S"] = "Someone Else"
    assert not matches(pattern, record)  # the NewImage half still applies


def test_duplicate_leaf_key_last_value_wins():
    # LDG (2022 revision) "Event filtering basics > Duplicate keys": "If a pattern contains
    # duplicate keys with different values, Lambda uses only the last value for that key."
    pattern = (
        '{"Metadata1": ["pattern1"], "data": {"duplicateKey": ["hello"], '
        '"uniqueKey": ["test123"], "duplicateKey": ["world"]}}'
    )
    base = {"Metadata1": "pattern1", "data": {"uniqueKey": "test123"}}
    assert matches(pattern, {**base, "data": {"uniqueKey": "test123", "duplicateKey": "world"}})
    assert not matches(pattern, {**base, "data": {"uniqueKey": "test123", "duplicateKey": "hello"}})


def test_ddb_typed_values_are_matched_literally():
    # LDG "Understanding event filtering basics" multi-level example ("N": [ "4567" ]) and
    # the AWS CDK FilterRule example {"BOOL": FilterRule.isEqual(true)}: the pattern spells
    # the DynamoDB type key and the value as it appears in the stream record.
    pattern = {
        "eventName": ["MODIFY"],
        "dynamodb": {
            "NewImage": {
                "client_persisted": {"BOOL": [True]},
                "sort_key": {"S": [{"prefix": "2024"}]},
                "rows": {"N": ["12"]},
            }
        },
    }
    assert matches(pattern, DDB_MODIFY)
    # Un-typed patterns do not reach into the type wrapper: client_persisted is an object.
    assert not matches({"dynamodb": {"NewImage": {"client_persisted": [True]}}}, DDB_MODIFY)
    assert not matches({"dynamodb": {"NewImage": {"rows": {"N": [12]}}}}, DDB_MODIFY)


def test_ddb_numeric_operators_do_not_match_number_attributes():
    # LDG-DDB note after "Filtering with Boolean expressions": "DynamoDB event filtering
    # doesn't support the use of numeric operators (numeric equals and numeric range). Even
    # if items in your table are stored as numbers, these parameters are converted to
    # strings in the JSON record object."
    numeric_range = {"dynamodb": {"NewImage": {"rows": {"N": [{"numeric": [">", 10]}]}}}}
    numeric_equals = {"dynamodb": {"NewImage": {"rows": {"N": [{"numeric": ["=", 12]}]}}}}
    assert not matches(numeric_range, DDB_MODIFY)
    assert not matches(numeric_equals, DDB_MODIFY)
    # What does work is matching the string form, e.g. LDG "N": [ "4567" ] example.
    assert matches({"dynamodb": {"NewImage": {"rows": {"N": ["12"]}}}}, DDB_MODIFY)


def test_ddb_exists_needs_the_leaf_path():
    # LDG-DDB "Using the Exists operator": "Organizations" is not a leaf node, so the first
    # pattern "would never return a match"; the second is the documented correct form.
    record = {
        "dynamodb": {
            "NewImage": {
                "UserID": {"S": "12345"},
                "Name": {"S": "John Doe"},
                "Organizations": {"L": [{"S": "Sales"}, {"S": "Marketing"}, {"S": "Support"}]},
            }
        }
    }
    wrong = '{ "dynamodb" : { "NewImage" : { "Organizations" : [ { "exists": true } ] } } }'
    right = (
        '{ "dynamodb" : { "NewImage" : '
        '{"Organizations": {"L": {"S": [ {"exists": true } ] } } } } }'
    )
    assert not matches(wrong, record)
    assert matches(right, record)


def test_ddb_modify_that_flips_a_flag():
    # LDG-DDB "Filtering with Boolean expressions" (AND of NewImage and OldImage), applied
    # to our own stream record: only MODIFY events where client_persisted went false -> true.
    pattern = {
        "eventName": ["MODIFY"],
        "dynamodb": {
            "NewImage": {"client_persisted": {"BOOL": [True]}},
            "OldImage": {"client_persisted": {"BOOL": [False]}},
        },
    }
    assert matches(pattern, DDB_MODIFY)
    unchanged = json.loads(json.dumps(DDB_MODIFY))
    unchanged["dynamodb"]["OldImage"]["client_persisted"]["BOOL"] = True
    assert not matches(pattern, unchanged)


# ------------------------------------------------------------------------ JSON patterns


def test_pattern_given_as_json_string():
    # LDG "Understanding event filtering basics": "A pattern is a string representation of a
    # JSON filter rule" - e.g. the console example { "Metadata" : [ 1, 2 ] }.
    assert matches('{ "Metadata" : [ 1, 2 ] }', {"Metadata": 2})
    assert not matches('{ "Metadata" : [ 1, 2 ] }', {"Metadata": 3})
    # Same string twice: the second call is served from the validated-pattern cache.
    assert matches('{ "Metadata" : [ 1, 2 ] }', {"Metadata": 1})


def test_kinesis_example_from_the_guide():
    # LDG (2022 revision) "Filtering examples": partitionKey + data.Location, and the
    # Temperature numeric range "> 50, <= 60".
    pattern = '{ "partitionKey": [ "1" ], "data": { "Location": [ "Los Angeles" ] }}'
    record = {"partitionKey": "1", "data": {"Location": "Los Angeles", "Temperature": 55}}
    assert matches(pattern, record)
    temperature = {"data": {"Temperature": [{"numeric": [">", 50, "<=", 60]}]}}
    assert matches(temperature, record)
    assert not matches(temperature, {"data": {"Temperature": 61}})


# ------------------------------------------------------------------------ invalid patterns


@pytest.mark.parametrize(
    ("pattern", "fragments"),
    [
        pytest.param(["a"], ["<root>", "JSON object", "list"], id="pattern not a dict"),
        pytest.param("[1, 2]", ["<root>", "JSON object"], id="JSON string not an object"),
        pytest.param('{"a": [1', ["<root>", "not valid JSON"], id="JSON string malformed"),
        pytest.param({}, ["<root>", "empty object"], id="empty pattern"),
        pytest.param({"a": {"b": "x"}}, ["a.b", "'x'"], id="leaf is not a list"),
        pytest.param({"a": {"b": 5}}, ["a.b", "5"], id="leaf is a bare number"),
        pytest.param({"a": []}, ["a", "empty list"], id="empty leaf list"),
        pytest.param({"a": {}}, ["a", "empty object"], id="empty nested object"),
        pytest.param({"a": [["x"]]}, ["a", "['x']"], id="nested list as a value"),
        pytest.param({"a": {"b": [{"prefx": "us-"}]}}, ["a.b", "'prefx'"], id="unknown operator"),
        pytest.param({"a": [{"prefix": "x", "suffix": "y"}]}, ["a", "exactly one"], id="2 ops"),
        pytest.param({"a": [{"prefix": 5}]}, ["a", "'prefix'", "5"], id="prefix not string"),
        pytest.param(
            {"a": [{"suffix": {"equals-ignore-case": 1}}]}, ["a", "'suffix'"], id="suffix eic"
        ),
        pytest.param({"a": [{"equals-ignore-case": None}]}, ["a", "None"], id="eic not str"),
        pytest.param({"p": [{"numeric": ["!=", 5]}]}, ["p", "'numeric'", "'!='"], id="num op"),
        pytest.param({"p": [{"numeric": [">", "5"]}]}, ["p", "'>'", "'5'"], id="num non-number"),
        pytest.param({"p": [{"numeric": [">", True]}]}, ["p", "True"], id="num bool operand"),
        pytest.param({"p": [{"numeric": [">", 1, ">", 2]}]}, ["p", "'numeric'"], id="num 2 low"),
        pytest.param({"p": [{"numeric": ["<", 5, ">", 1]}]}, ["p", "'numeric'"], id="num order"),
        pytest.param({"p": [{"numeric": [">", 5, "<", 1]}]}, ["p", "empty"], id="num empty rng"),
        pytest.param({"p": [{"numeric": ["=", 1, "<", 2]}]}, ["p", "'numeric'"], id="num = rng"),
        pytest.param({"p": [{"numeric": 5}]}, ["p", "'numeric'", "5"], id="numeric not list"),
        pytest.param({"p": [{"exists": "yes"}]}, ["p", "'exists'", "'yes'"], id="exists str"),
        pytest.param({"p": [{"exists": 1}]}, ["p", "'exists'", "1"], id="exists int"),
        pytest.param({"$or": []}, ["$or", "at least 2"], id="empty $or"),
        pytest.param({"$or": [{"a": ["x"]}]}, ["$or", "at least 2"], id="single-branch $or"),
        pytest.param({"d": {"$or": {"a": ["x"]}}}, ["d.$or"], id="$or not a list"),
        pytest.param({"$or": [{"a": ["x"]}, {"b": "y"}]}, ["$or[1].b", "'y'"], id="bad $or arm"),
        pytest.param({"s": [{"anything-but": [1, "a"]}]}, ["s", "'anything-but'"], id="ab mix"),
        pytest.param({"s": [{"anything-but": []}]}, ["s", "'anything-but'"], id="ab empty"),
        pytest.param({"s": [{"anything-but": None}]}, ["s", "'anything-but'"], id="ab null"),
        pytest.param(
            {"s": [{"anything-but": {"wildcard": "*x"}}]}, ["s", "'wildcard'"], id="ab wildcard"
        ),
        pytest.param(
            {"s": [{"anything-but": {"prefix": ""}}]}, ["s", "'prefix'"], id="ab empty prefix"
        ),
        pytest.param({"s": [{"wildcard": "a*"}]}, ["s", "'wildcard'", "EventBridge"], id="wc"),
        pytest.param({"s": [{"cidr": "10.0.0.0/24"}]}, ["s", "'cidr'"], id="cidr"),
        pytest.param(
            {"dynamodb": {"NewImage": {"rows": {"N": [{"numeric": [">", "10"]}]}}}},
            ["dynamodb.NewImage.rows.N", "'10'"],
            id="deep path named",
        ),
    ],
)
def test_invalid_pattern_names_the_offending_part(pattern, fragments):
    # LDG "JSON format for ... filtering" tables: an invalid pattern is rejected when the
    # event source mapping is created or updated - here, as FilterPatternError.
    with pytest.raises(FilterPatternError) as excinfo:
        validate(pattern)
    for fragment in fragments:
        assert fragment in str(excinfo.value)
    with pytest.raises(FilterPatternError):
        matches(pattern, {"a": "x"})


def test_filter_pattern_error_is_a_value_error():
    # docs/SPEC.md §4.3: callers may catch ValueError.
    with pytest.raises(ValueError, match="prefx"):
        matches({"a": [{"prefx": "x"}]}, {"a": "x"})


def test_validate_accepts_every_documented_operator():
    # LDG "Filter rule syntax" table, every row, in one pattern (with the EB variants).
    validate(
        {
            "UserID": [None],
            "LastName": [""],
            "Name": ["Alice", {"equals-ignore-case": "alice"}],
            "Location": ["New York"],
            "Day": ["Monday"],
            "$or": [{"Location": ["New York"]}, {"Day": ["Monday"]}],
            "Weather": [{"anything-but": ["Raining"]}],
            "Price": [{"numeric": ["=", 100]}, {"numeric": [">", 10, "<=", 20]}],
            "ProductName": [{"exists": True}],
            "Other": [{"exists": False}],
            "Region": [{"prefix": "us-"}, {"anything-but": {"prefix": "us-"}}],
            "FileName": [{"suffix": ".png"}, {"anything-but": {"suffix": ".png"}}],
            "state": [{"anything-but": {"equals-ignore-case": "initializing"}}],
            "x-limit": [{"anything-but": [100, 200, 300]}],
        }
    )
