"""The contract's row rules as set-based SQL over pg_temp.staging.

Each column's checks form one CASE in rule order: the first broken rule of a column is its
rejection reason, so a row that breaks rules in several columns gets one record per column.
The same CASEs, as booleans, select the rows that load; values are cast only where the
patterns have already proven the cast safe.

Everything here is built from the schema table and field indexes, never from file content;
file values reach SQL only as staged data.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

from dataharvest.persistence.header import HeaderMap
from dataharvest.persistence.staging import STAGING, field
from dataharvest.schemas import CURRENCY_PATTERN, DECIMAL_PATTERN, INTEGER_PATTERN, Column, Entity

REJECTS = sql.Identifier("pg_temp", "rejects")
# Values are trimmed of surrounding white space (SPEC §2.3); an empty value is missing.
WHITE_SPACE = sql.SQL("E' \\t\\r\\n'")
REASON_VALUE_CHARS = 60
LINE = sql.SQL("coalesce(s.line, s.ordinal + 1)")

# A complete statement, which psycopg's Connection.execute accepts (a Composable may be a part).
Statement = sql.SQL | sql.Composed


@dataclass(frozen=True)
class Rule:
    broken: sql.Composable  # true when the value breaks the rule (never NULL where it matters)
    reason: sql.Composable  # text


def value(header: HeaderMap, column: Column) -> Statement:
    """The trimmed value of a column in staging row `s`, NULL when missing."""
    if column.name not in header.columns:
        return sql.SQL("NULL::text")
    return sql.SQL("NULLIF(btrim(s.{}, {}), '')").format(
        field(header.columns[column.name]), WHITE_SPACE
    )


def _reason(column: Column, template: str, v: sql.Composable | None = None) -> sql.Composable:
    text = f"{column.name}: {template}"
    if v is None:
        return sql.Literal(text)
    quoted = sql.SQL("'''' || left({}, {}) || ''''").format(v, sql.Literal(REASON_VALUE_CHARS))
    before, after = text.split("{value}")
    return sql.SQL("{} || {} || {}").format(sql.Literal(before), quoted, sql.Literal(after))


def rules(column: Column, v: sql.Composable) -> list[Rule]:
    """The checks of one column, in the order they are reported."""
    checks: list[Rule] = []
    if column.required:
        checks.append(Rule(sql.SQL("{} IS NULL").format(v), _reason(column, "missing value")))
    if column.type == "integer":
        checks.append(
            Rule(
                sql.SQL("{} !~ {}").format(v, sql.Literal(INTEGER_PATTERN)),
                _reason(column, "{value} is not an integer (digits, optional sign)", v),
            )
        )
        checks.append(
            Rule(
                sql.SQL("NOT pg_input_is_valid({}, 'bigint')").format(v),
                _reason(column, "{value} is out of the integer range (64 bit)", v),
            )
        )
    elif column.type == "decimal":
        checks.append(
            Rule(
                sql.SQL("{} ~ '^[+-]?[0-9]+,[0-9]+$'").format(v),
                _reason(column, "{value} is not a decimal (use '.' as the separator)", v),
            )
        )
        checks.append(
            Rule(
                sql.SQL("{} !~ {}").format(v, sql.Literal(DECIMAL_PATTERN)),
                _reason(
                    column,
                    "{value} is not a decimal (digits with an optional '.' fraction; "
                    "no exponent, no thousands separator)",
                    v,
                ),
            )
        )
    if column.non_negative:
        checks.append(
            Rule(
                sql.SQL("{}::numeric < 0").format(v),
                _reason(column, "{value} is negative (must be >= 0)", v),
            )
        )
    if column.currency:
        checks.append(
            Rule(
                sql.SQL("{} !~ {}").format(v, sql.Literal(CURRENCY_PATTERN)),
                _reason(column, "{value} is not a currency code (3 upper-case letters)", v),
            )
        )
    return checks


def _case(checks: list[Rule], pick: str) -> sql.Composable:
    whens = sql.SQL(" ").join(
        sql.SQL("WHEN {} THEN {}").format(
            check.broken, sql.SQL("true") if pick == "broken" else check.reason
        )
        for check in checks
    )
    otherwise = sql.SQL("false") if pick == "broken" else sql.SQL("NULL::text")
    return sql.SQL("CASE {} ELSE {} END").format(whens, otherwise)


def row_ok(entity: Entity, header: HeaderMap) -> sql.Composable:
    """True for a staged row that breaks no rule (duplicates aside)."""
    broken = [
        _case(rules(c, value(header, c)), "broken")
        for c in entity.columns
        if rules(c, value(header, c))
    ]
    return sql.SQL("s.malformed IS NULL AND NOT ({})").format(sql.SQL(" OR ").join(broken))


def create_rejects() -> Statement:
    return sql.SQL(
        "CREATE TEMP TABLE {} (ordinal bigint, line integer, position integer, column_name text, "
        "value text, reason text NOT NULL) ON COMMIT DROP"
    ).format(REJECTS)


def insert_rule_rejects(entity: Entity, header: HeaderMap) -> Statement:
    """Rejections of malformed records and of broken rules, one per (row, column)."""
    per_column = sql.SQL(", ").join(
        sql.SQL("({}, {}, {}, {})").format(
            sql.Literal(position),
            sql.Literal(c.name),
            _original(header, c),
            _case(rules(c, value(header, c)), "reason"),
        )
        for position, c in enumerate(entity.columns, start=1)
        if rules(c, value(header, c))
    )
    return sql.SQL(
        "INSERT INTO {rejects} (ordinal, line, position, column_name, value, reason) "
        "SELECT s.ordinal, {line}, 0, NULL, s.malformed_value, s.malformed "
        "FROM {staging} s WHERE s.malformed IS NOT NULL "
        "UNION ALL "
        "SELECT s.ordinal, {line}, r.position, r.column_name, r.value, r.reason "
        "FROM {staging} s "
        "CROSS JOIN LATERAL (VALUES {per_column}) AS r(position, column_name, value, reason) "
        "WHERE s.malformed IS NULL AND NOT ({ok}) AND r.reason IS NOT NULL"
    ).format(
        rejects=REJECTS,
        line=LINE,
        staging=STAGING,
        per_column=per_column,
        ok=row_ok(entity, header),
    )


def _original(header: HeaderMap, column: Column) -> sql.Composable:
    """The value as the file has it, for the rejection record (NULL when empty)."""
    if column.name not in header.columns:
        return sql.SQL("NULL::text")
    return sql.SQL("NULLIF(s.{}, '')").format(field(header.columns[column.name]))


def _typed(header: HeaderMap, column: Column) -> sql.Composable:
    v = value(header, column)
    if column.type == "integer":
        return sql.SQL("{}::bigint").format(v)
    if column.type == "decimal":
        return sql.SQL("{}::numeric").format(v)
    return sql.SQL("upper({})").format(v) if column.upper else v


def unique_key(entity: Entity, header: HeaderMap) -> sql.Composable:
    """The within-file key as it is stored (so '007' and '7' are the same account)."""
    return _typed(header, entity.unique_column)


def insert_rows(entity: Entity, header: HeaderMap, leaf: sql.Identifier, dedupe: bool) -> Statement:
    """INSERT ... SELECT of the good staged rows into the load's leaf table.

    The leaf's defaults supply load_id, client_id and business_date. With `dedupe` only the
    first row of each within-file key is taken (the caller found duplicates).
    """
    names = [sql.Identifier(c.name) for c in entity.columns]
    typed = [_typed(header, c) for c in entity.columns]
    target_columns = sql.SQL(", ").join([sql.Identifier("line_number"), *names])
    selected = sql.SQL(", ").join([LINE, *typed])
    distinct = (
        sql.SQL("DISTINCT ON ({}) ").format(unique_key(entity, header)) if dedupe else sql.SQL("")
    )
    order = (
        sql.SQL(" ORDER BY {}, s.ordinal").format(unique_key(entity, header))
        if dedupe
        else sql.SQL("")
    )
    return sql.SQL("INSERT INTO {} ({}) SELECT {}{} FROM {} s WHERE {}{}").format(
        leaf,
        target_columns,
        distinct,
        selected,
        STAGING,
        row_ok(entity, header),
        order,
    )


def distinct_keys(entity: Entity, leaf: sql.Identifier) -> Statement:
    """How many distinct within-file keys the leaf's rows have (fewer than rows: duplicates).

    Text keys are counted by their 64-bit hash (sorting 8-byte values beats hashing or
    sorting the text); equal hashes of different keys only send the load to `has_duplicates`.
    """
    column: sql.Composable = sql.Identifier(entity.unique_column.name)
    if entity.unique_column.type != "integer":
        column = sql.SQL("hashtextextended({}, 0)").format(column)
    return sql.SQL("SELECT count(DISTINCT {}) FROM {}").format(column, leaf)


def has_duplicates(entity: Entity, leaf: sql.Identifier) -> Statement:
    """True when two rows of the leaf share the within-file key (the exact check)."""
    return sql.SQL("SELECT EXISTS (SELECT 1 FROM {} GROUP BY {} HAVING count(*) > 1)").format(
        leaf, sql.Identifier(entity.unique_column.name)
    )


def insert_duplicate_rejects(entity: Entity, header: HeaderMap) -> Statement:
    """Every good row whose key an earlier good row already has: rejected as a duplicate."""
    column = entity.unique_column
    key = unique_key(entity, header)
    reason = sql.SQL("{} || first_line || {}").format(
        sql.Literal(f"{column.name}: duplicate of line "),
        sql.Literal(" (the first row with this key is kept)"),
    )
    return sql.SQL(
        "INSERT INTO {rejects} (ordinal, line, position, column_name, value, reason) "
        "SELECT ordinal, line, {position}, {name}, value, {reason} FROM ("
        " SELECT s.ordinal, {line} AS line, {original} AS value,"
        "  first_value({line}) OVER w AS first_line, row_number() OVER w AS n"
        " FROM {staging} s WHERE {ok} WINDOW w AS (PARTITION BY {key} ORDER BY s.ordinal)"
        ") d WHERE n > 1"
    ).format(
        rejects=REJECTS,
        position=sql.Literal(entity.columns.index(column) + 1),
        name=sql.Literal(column.name),
        reason=reason,
        line=LINE,
        original=_original(header, column),
        staging=STAGING,
        ok=row_ok(entity, header),
        key=key,
    )
