"""Multi-row INSERTs for the intake's hot tables (alerts, their events, incident links).

Why not ``bulk_create``: on PostgreSQL, Django 5.2 inserts many rows through
``UNNEST(array, ...)``, and with psycopg's client-side binding each array is quoted in
Python, string by string; a statement with a placeholder per value is no better (the
driver re-parses the long statement every time). With model instantiation and per-field
preparation that was most of a 100-alert request's time. Here all rows travel as ONE
JSON parameter that the database unpacks itself (``jsonb_to_recordset`` on PostgreSQL,
``json_each`` on SQLite): one statement, one parameter, encoded by the C JSON encoder.
"""

import json

from django.db import connection


def insert(model, columns, rows, *, json_columns=(), returning="", conflict="", computed=None):
    """Insert ``rows`` (tuples in ``columns`` order: field names; datetimes aware, JSON
    columns as Python values) into ``model``'s table; ``conflict`` is an optional
    ``ON CONFLICT`` clause. With ``returning`` (a column naming each row uniquely in
    this batch), returns {that value: primary key}. ``computed``: {field name: SQL
    expression} for more columns, computed by the database; the expression reads the
    row being inserted as ``x`` (``x."host_hint"``)."""
    if not rows:
        return {}
    sql, params = statement(model, columns, rows, json_columns=json_columns,
                            returning=returning, conflict=conflict, computed=computed)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return dict(cursor.fetchall()) if returning else {}


def insert_all(*inserts):
    """Several ``insert``s without ``returning``, each given as (model, columns, rows,
    {keyword arguments}); on PostgreSQL they travel as ONE statement (all but the last in
    data-modifying WITH clauses): one round trip."""
    statements = [statement(model, columns, rows, **options)
                  for model, columns, rows, options in inserts if rows]
    if connection.vendor == "postgresql" and len(statements) > 1:
        *first, (last, _params) = statements
        sql = "WITH " + ", ".join(f"w{i} AS ({part})" for i, (part, _p) in enumerate(first))
        statements = [(f"{sql} {last}", [p for _s, params in statements for p in params])]
    with connection.cursor() as cursor:
        for sql, params in statements:
            cursor.execute(sql, params)


def statement(model, columns, rows, *, json_columns=(), returning="", conflict="",
              computed=None):
    """(sql, params) of what ``insert`` executes, for a caller that sends it itself."""
    computed = computed or {}
    key = (connection.vendor, model, tuple(columns), tuple(json_columns), returning, conflict,
           tuple(computed.items()))
    shape = _SHAPES.get(key)
    if shape is None:
        shape = _SHAPES[key] = _shape(model, columns, json_columns, returning, conflict,
                                      computed)
    sql, names, times = shape
    if connection.vendor == "postgresql":
        data = [{name: (value.isoformat() if i in times and value is not None else value)
                 for i, (name, value) in enumerate(zip(names, row, strict=True))} for row in rows]
    else:
        adapt = connection.ops.adapt_datetimefield_value
        data = [[adapt(value) if i in times and value is not None else value
                 for i, value in enumerate(row)] for row in rows]
    return sql, [json.dumps(data, separators=(",", ":"))]


# (vendor, model, columns, ...) -> (sql, column names, indexes of datetime columns): the
# statement of a given shape is built once per process.
_SHAPES = {}


def _shape(model, columns, json_columns, returning, conflict, computed):
    qn = connection.ops.quote_name
    fields = [model._meta.get_field(name) for name in columns]
    names = [field.column for field in fields]
    times = {i for i, field in enumerate(fields) if field.get_internal_type() == "DateTimeField"}
    table = qn(model._meta.db_table)
    extra = [model._meta.get_field(name).column for name in computed]
    target = ", ".join(qn(name) for name in names + extra)
    picks = ", ".join([f"x.{qn(name)}" for name in names] + list(computed.values()))
    back = ""
    if returning:
        key = qn(model._meta.get_field(returning).column)
        back = f" RETURNING {key}, {qn(model._meta.pk.column)}"
    if connection.vendor == "postgresql":
        types = ", ".join(
            f"{qn(name)} {'jsonb' if field.name in json_columns else _pg_type(field)}"
            for name, field in zip(names, fields, strict=True))
        sql = (f"INSERT INTO {table} ({target}) SELECT {picks} FROM "  # noqa: S608
               f"jsonb_to_recordset(%s::jsonb) AS x({types}) {conflict}{back}")
    else:
        unpack = ", ".join(f"json_extract(value, '$[{i}]') AS {qn(name)}"
                           for i, name in enumerate(names))
        # "WHERE true" keeps SQLite from reading ON CONFLICT as a join constraint.
        sql = (f"INSERT INTO {table} ({target}) SELECT {picks} FROM "  # noqa: S608
               f"(SELECT {unpack} FROM json_each(%s)) AS x WHERE true {conflict}{back}")
    return sql, names, times


def _pg_type(field):
    kind = field.get_internal_type()
    if kind in ("ForeignKey", "OneToOneField"):
        field = field.target_field
    return field.db_type(connection)
