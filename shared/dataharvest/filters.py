"""Local evaluation of AWS Lambda event-source-mapping filter patterns (``FilterCriteria``).

Follows the Lambda Developer Guide, "Control which events Lambda sends to your function" ->
"Filter rule syntax" (which adopts EventBridge's event-pattern rules), the EventBridge User
Guide pages on content filtering, arrays and null values, and "Using event filtering with a
DynamoDB event source". Easy-to-miss consequences, all from those pages:

* Records are matched literally: a DynamoDB pattern spells the type key
  (``{"NewImage": {"flag": {"BOOL": [True]}}}``) and ``numeric`` never matches an ``"N"``
  value, because stream records carry DynamoDB numbers as JSON strings.
* Exact matching compares a number's text (``300``, ``300.0``, ``3.0e2`` differ); only
  ``numeric`` compares values, here with ``Decimal``.
* ``null``, ``""`` and a missing key are three different things.
* ``exists`` only sees leaf nodes: an object-valued key "does not exist".
* Against an array, a leaf rule matches if any element does; a nested rule must hold within
  one element (event-ruler's "array consistency").

``wildcard`` and ``cidr`` are EventBridge-only and are rejected, not silently ignored.
"""

from __future__ import annotations

import json
import math
import operator
from decimal import Decimal
from functools import lru_cache
from typing import Any, NoReturn

__all__ = ["FilterPatternError", "matches", "validate"]

_OR = "$or"
_MISSING = object()
_EIC = "equals-ignore-case"
_AFFIXES = ("prefix", "suffix")
_ANYTHING_BUT_NESTED = ("prefix", "suffix", _EIC)
_LOWER_BOUNDS = (">", ">=")
_UPPER_BOUNDS = ("<", "<=")
_COMPARE = {
    "=": operator.eq,
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}
_EVENTBRIDGE_ONLY = ("wildcard", "cidr")


class FilterPatternError(ValueError):
    """An invalid filter pattern; the message names the key path and the offending part."""


def matches(pattern: dict[str, Any] | str, record: dict[str, Any]) -> bool:
    """True if ``record`` satisfies ``pattern`` (a dict or the JSON string Lambda stores)."""
    if isinstance(pattern, str):
        compiled = _compile(pattern)  # parsed + validated once per distinct string
    else:
        # Dict patterns are validated on every call: they are small, and caching by id()
        # would go stale if the caller mutates the dict or the id is reused.
        validate(pattern)
        compiled = pattern
    return _match_object(compiled, record)


def validate(pattern: dict[str, Any] | str) -> None:
    """Raise FilterPatternError if ``pattern`` is not a pattern Lambda would accept."""
    if isinstance(pattern, str):
        _compile(pattern)
        return
    if not isinstance(pattern, dict):
        raise FilterPatternError(
            f"<root>: a pattern must be a JSON object, got {type(pattern).__name__} {pattern!r}"
        )
    _check_object(pattern, ())


@lru_cache(maxsize=512)
def _compile(text: str) -> dict[str, Any]:
    try:
        # parse_float=Decimal keeps the literal text of numbers (3.0e2 stays distinct from
        # 300.0 for exact matching) and keeps numeric bounds exact.
        parsed = json.loads(text, parse_float=Decimal, object_pairs_hook=_merge_duplicate_keys)
    except json.JSONDecodeError as exc:
        raise FilterPatternError(f"<root>: pattern is not valid JSON: {exc}") from exc
    validate(parsed)
    return dict(parsed)


def _merge_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Lambda DG (2022) "Duplicate keys": the last value of a repeated key wins. Yet the DynamoDB
    # page's "Filtering with Boolean expressions" repeats "dynamodb" with two objects and means
    # AND. Both hold if objects merge key by key and only leaves are overwritten - which is
    # also what event-ruler does, as it flattens a rule into key paths before storing it.
    obj: dict[str, Any] = {}
    for key, value in pairs:
        previous = obj.get(key)
        if isinstance(previous, dict) and isinstance(value, dict):
            value = _merge_duplicate_keys([*previous.items(), *value.items()])
        obj[key] = value
    return obj


def _fail(path: tuple[str, ...], message: str) -> NoReturn:
    raise FilterPatternError(f"{'.'.join(path) or '<root>'}: {message}")


def _check_object(obj: dict[str, Any], path: tuple[str, ...]) -> None:
    if not obj:
        _fail(path, "empty object {} is not allowed")
    for key, value in obj.items():
        here = (*path, str(key))
        if not isinstance(key, str):
            _fail(here, f"key {key!r} must be a string")
        elif key == _OR:
            _check_or(value, path)
        elif isinstance(value, dict):
            _check_object(value, here)
        elif isinstance(value, list):
            _check_leaf(value, here)
        else:
            _fail(here, f"value must be a list of match values or a nested object, got {value!r}")


def _check_or(alternatives: Any, path: tuple[str, ...]) -> None:
    # EventBridge/event-ruler: "$or" takes an array of at least two pattern objects.
    arms = alternatives if isinstance(alternatives, list) else []
    if len(arms) < 2 or not all(isinstance(alt, dict) for alt in arms):
        _fail((*path, _OR), f"needs a list of at least 2 pattern objects, got {alternatives!r}")
    for i, alt in enumerate(arms):
        _check_object(alt, (*path, f"{_OR}[{i}]"))


def _check_leaf(values: list[Any], path: tuple[str, ...]) -> None:
    if not values:
        _fail(path, "empty list [] matches nothing; list at least one value or operator")
    for value in values:
        if isinstance(value, dict):
            _check_operator(value, path)
        elif not (value is None or isinstance(value, str | bool) or _is_number(value)):
            _fail(path, f"match value {value!r} must be a string, number, boolean or null")


def _check_operator(op: dict[str, Any], path: tuple[str, ...]) -> None:
    if len(op) != 1:
        _fail(path, f"an operator object has exactly one key, got {op!r}")
    [(name, arg)] = op.items()
    if name in _AFFIXES:
        ignore_case = isinstance(arg, dict) and list(arg) == [_EIC]
        if not isinstance(arg[_EIC] if ignore_case else arg, str):
            _fail(path, f"{name!r} needs a string or {{{_EIC!r}: string}}, got {arg!r}")
    elif name == _EIC:
        if not isinstance(arg, str):
            _fail(path, f"{name!r} needs a string, got {arg!r}")
    elif name == "exists":
        if not isinstance(arg, bool):
            _fail(path, f"'exists' needs true or false, got {arg!r}")
    elif name == "numeric":
        _check_numeric(arg, path)
    elif name == "anything-but":
        _check_anything_but(arg, path)
    elif name in _EVENTBRIDGE_ONLY:
        _fail(path, f"operator {name!r} is EventBridge-only, not in Lambda's filter rule syntax")
    else:
        _fail(path, f"unknown operator {name!r} in {op!r}")


def _check_numeric(arg: Any, path: tuple[str, ...]) -> None:
    # Allowed shapes (event-ruler): [op, n] with op in = < <= > >=, or a range written
    # lower bound first: [">"|">=", low, "<"|"<=", high].
    shape_ok = isinstance(arg, list) and len(arg) in (2, 4)
    if shape_ok and len(arg) == 2:
        shape_ok = isinstance(arg[0], str) and arg[0] in _COMPARE
    elif shape_ok:
        shape_ok = arg[0] in _LOWER_BOUNDS and arg[2] in _UPPER_BOUNDS
    if not shape_ok:
        _fail(path, f"'numeric' needs [op, number] or ['>'|'>=', low, '<'|'<=', high], got {arg!r}")
    for op, bound in zip(arg[::2], arg[1::2], strict=True):
        if not _is_number(bound):
            _fail(path, f"'numeric' operand of {op!r} must be a number, got {bound!r}")
    if len(arg) == 4 and _decimal(arg[1]) >= _decimal(arg[3]):
        _fail(path, f"'numeric' range {arg!r} is empty (low bound must be below high bound)")


def _check_anything_but(arg: Any, path: tuple[str, ...]) -> None:
    if isinstance(arg, dict):
        name = next(iter(arg), None)
        if len(arg) != 1 or name not in _ANYTHING_BUT_NESTED:
            _fail(path, f"'anything-but' nests only prefix, suffix or {_EIC}, got {arg!r}")
        values = arg[name] if isinstance(arg[name], list) else [arg[name]]
        if not values or not all(isinstance(v, str) and (v or name == _EIC) for v in values):
            _fail(path, f"'anything-but' {name!r} needs non-empty strings, got {arg[name]!r}")
        return
    values = arg if isinstance(arg, list) else [arg]
    all_strings = all(isinstance(v, str) for v in values)
    all_numbers = all(_is_number(v) for v in values)
    if not values or not (all_strings or all_numbers):
        _fail(path, f"'anything-but' needs a string, number, or list of only one of those: {arg!r}")


def _match_object(pattern: dict[str, Any], node: Any) -> bool:
    # AND across keys. A non-object node has no fields, so only "absent" rules can match.
    fields = node if isinstance(node, dict) else {}
    for key, rule in pattern.items():
        if key == _OR:
            ok = any(_match_object(alt, node) for alt in rule)
        elif isinstance(rule, dict):
            ok = _match_nested(rule, fields.get(key, _MISSING))
        else:
            ok = _match_leaf(rule, _leaves(fields.get(key, _MISSING)))
        if not ok:
            return False
    return True


def _match_nested(pattern: dict[str, Any], value: Any) -> bool:
    if not isinstance(value, list):
        return _match_object(pattern, value)
    # Array of objects: the whole sub-pattern must hold inside one element.
    elements = [item for item in _flatten(value) if isinstance(item, dict)]
    if not elements:
        return _match_object(pattern, _MISSING)
    return any(_match_object(pattern, item) for item in elements)


def _leaves(value: Any) -> list[Any]:
    """Leaf values under a key: arrays are flattened, objects are not leaves."""
    if value is _MISSING:
        return []
    return [item for item in _flatten(value) if not isinstance(item, dict)]


def _flatten(value: Any) -> list[Any]:
    if not isinstance(value, list):
        return [value]
    return [leaf for item in value for leaf in _flatten(item)]


def _match_leaf(rules: list[Any], leaves: list[Any]) -> bool:
    # OR across the rules in the list; against an array, any element may satisfy a rule.
    for rule in rules:
        if isinstance(rule, dict) and "exists" in rule:
            if rule["exists"] == bool(leaves):
                return True
        elif any(_match_value(rule, leaf) for leaf in leaves):
            return True
    return False


def _match_value(rule: Any, value: Any) -> bool:
    if not isinstance(rule, dict):
        return _json_text(rule) == _json_text(value)
    [(name, arg)] = rule.items()
    if name == "numeric":
        return _is_number(value) and all(
            _COMPARE[op](_decimal(value), _decimal(bound))
            for op, bound in zip(arg[::2], arg[1::2], strict=True)
        )
    if name == "anything-but":
        return _anything_but(arg, value)
    # prefix / suffix / equals-ignore-case only apply to string values.
    if not isinstance(value, str):
        return False
    if isinstance(arg, dict):  # {"prefix": {"equals-ignore-case": "..."}}
        return _string_test(name, arg[_EIC], value, ignore_case=True)
    return _string_test(name, arg, value, ignore_case=name == _EIC)


def _anything_but(arg: Any, value: Any) -> bool:
    if isinstance(arg, dict):
        [(name, excluded)] = arg.items()
        excluded = excluded if isinstance(excluded, list) else [excluded]
        ignore_case = name == _EIC
        return not (
            isinstance(value, str)
            and any(_string_test(name, x, value, ignore_case=ignore_case) for x in excluded)
        )
    excluded = arg if isinstance(arg, list) else [arg]
    if _is_number(excluded[0]):  # numeric lists compare by value, like numeric matching
        return not (_is_number(value) and any(_decimal(value) == _decimal(x) for x in excluded))
    return not (isinstance(value, str) and value in excluded)


def _string_test(name: str, expected: str, value: str, *, ignore_case: bool) -> bool:
    if ignore_case:
        expected, value = expected.casefold(), value.casefold()
    if name == "prefix":
        return value.startswith(expected)
    if name == "suffix":
        return value.endswith(expected)
    return value == expected


def _is_number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return False
    return isinstance(value, int) or (
        value.is_finite() if isinstance(value, Decimal) else math.isfinite(value)
    )


def _decimal(value: int | float | Decimal) -> Decimal:
    # repr() of a float is its shortest round-tripping text, so 0.1 becomes Decimal("0.1")
    # rather than the binary expansion 0.1000000000000000055511151231257827...
    return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)


def _json_text(value: Any) -> tuple[str, str] | None:
    """Type-tagged JSON text of a scalar: exact matching compares this, not Python equality."""
    if value is None:
        return ("null", "null")
    if isinstance(value, bool):  # before int: True must not equal 1
        return ("bool", "true" if value else "false")
    if isinstance(value, str):
        return ("string", value)
    if isinstance(value, float):
        return ("number", repr(value))
    if isinstance(value, int | Decimal):
        return ("number", str(value))
    return None
