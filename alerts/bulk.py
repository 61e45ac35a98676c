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


def insert(model, columns, rows, *, json_columns=(), returning="", conflict=""):
    """Insert ``rows`` (tuples in ``columns`` order: field names; datetimes aware, JSON
    columns as Python values) into ``model``'s table; ``conflict`` is an optional
    ``ON CONFLICT`` clause. With ``returning`` (a column naming each row uniquely in
    this batch), returns {that value: primary key}."""
    if not rows:
        return {}
    qn = connection.ops.quote_name
    fields = [model._meta.get_field(name) for name in columns]
    names = [field.column for field in fields]
    times = {i for i, field in enumerate(fields) if field.get_internal_type() == "DateTimeField"}
    table = qn(model._meta.db_table)
    target = ", ".join(qn(name) for name in names)
    back = ""
    if returning:
        key = qn(model._meta.get_field(returning).column)
        back = f" RETURNING {key}, {qn(model._meta.pk.column)}"
    if connection.vendor == "postgresql":
        data = [{name: (value.isoformat() if i in times and value is not None else value)
                 for i, (name, value) in enumerate(zip(names, row, strict=True))} for row in rows]
        types = ", ".join(
            f"{qn(name)} {'jsonb' if field.name in json_columns else _pg_type(field)}"
            for name, field in zip(names, fields, strict=True))
        sql = (f"INSERT INTO {table} ({target}) SELECT {target} FROM "  # noqa: S608
               f"jsonb_to_recordset(%s::jsonb) AS x({types}) {conflict}{back}")
    else:
        adapt = connection.ops.adapt_datetimefield_value
        data = [[adapt(value) if i in times and value is not None else value
                 for i, value in enumerate(row)] for row in rows]
        picks = ", ".join(f"json_extract(value, '$[{i}]')" for i in range(len(names)))
        # "WHERE true" keeps SQLite from reading ON CONFLICT as a join constraint.
        sql = (f"INSERT INTO {table} ({target}) SELECT {picks} FROM "  # noqa: S608
               f"json_each(%s) WHERE true {conflict}{back}")
    with connection.cursor() as cursor:
        cursor.execute(sql, [json.dumps(data, separators=(",", ":"))])
        return dict(cursor.fetchall()) if returning else {}


def _pg_type(field):
    kind = field.get_internal_type()
    if kind in ("ForeignKey", "OneToOneField"):
        field = field.target_field
    return field.db_type(connection)
