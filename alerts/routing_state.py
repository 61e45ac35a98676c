"""What the intake and the flush decide with, cached per process: the routing tree in
force (the newest ``RoutingConfig``, parsed once per version) and the silences. One
small query per use tells whether another process saved a new version or changed a
silence; only then are they read again."""

import threading
from datetime import timedelta

from django.db import connection
from django.utils import timezone

from alerts import matchers as m
from alerts import routing
from alerts.models import RoutingConfig, Silence

_lock = threading.Lock()
_cache = {"version": None, "tree": None, "silences_key": None, "silences": None}


def versions_sql():
    """Three columns for a SELECT list: what ``versions_from`` turns into the key of the
    cache. The intake reads them in its authentication query (one round trip less)."""
    routing_table = RoutingConfig._meta.db_table
    silence_table = Silence._meta.db_table
    return (f"(SELECT MAX(version) FROM {routing_table}), "  # noqa: S608
            f"(SELECT MAX(id) FROM {silence_table}), "
            f"(SELECT MAX(updated_at) FROM {silence_table})")


def versions_from(row):
    version, last_silence, last_change = row
    return version or 0, (last_silence, str(last_change))


def _versions():
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {versions_sql()}")
        return versions_from(cursor.fetchone())


def current_tree():
    return snapshot()[0]


def snapshot(versions=None):
    """(routing tree in force, [(silence pk, starts_at, ends_at, matchers)]); callers
    pick the silences in force at their own clock (``active_silences``). ``versions``:
    from ``versions_from``, when the caller has just read them."""
    version, silences_key = versions or _versions()
    with _lock:
        tree = _cache["tree"] if _cache["version"] == version else None
        silences = _cache["silences"] if _cache["silences_key"] == silences_key else None
    if tree is None:
        source = (RoutingConfig.objects.get(version=version).source if version
                  else routing.DEFAULT_YAML)
        tree = routing.parse(source, version=version)
        with _lock:
            _cache.update(version=version, tree=tree)
    if silences is None:
        # Ended silences stay on record for ever; those of the last day are plenty for
        # any clock a caller passes.
        since = timezone.now() - timedelta(days=1)
        silences = [(s.pk, s.starts_at, s.ends_at, m.from_lists(s.matchers)) for s in
                    Silence.objects.filter(ends_at__gt=since).order_by("pk")]
        with _lock:
            _cache.update(silences_key=silences_key, silences=silences)
    return tree, silences


def active_silences(silences, now):
    """[(pk, matchers)] of ``silences`` (from ``snapshot``) in force at ``now``."""
    return [(pk, matchers) for pk, starts_at, ends_at, matchers in silences
            if starts_at <= now < ends_at]


def silence_for(labels, silences):
    """The pk of the first of ``silences`` (from ``active_silences``) matching ``labels``,
    or None."""
    for pk, matchers in silences:
        if m.matches_all(matchers, labels):
            return pk
    return None


def forget():
    """Drop the caches (tests that simulate a restart)."""
    with _lock:
        _cache.update(version=None, tree=None, silences_key=None, silences=None)


def current_source():
    row = RoutingConfig.objects.order_by("-version").first()
    return (row.source, row) if row else (routing.DEFAULT_YAML, None)
