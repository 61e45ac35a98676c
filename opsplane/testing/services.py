"""pytest plugin (``-p opsplane.testing.services``): the backing services for a test run.

Loaded before pytest-django configures Django, because the settings read the
environment once. With ``REDIS_URL`` unset it starts the embedded Redis (as ``make run``
does) in a temporary directory; with ``DATABASE_URL`` unset the test database is a
SQLite file in that directory. Everything goes through the production settings code.
"""

import atexit
import os
import shutil
import tempfile

_tmp = tempfile.mkdtemp(prefix="opsplane-test-")
atexit.register(shutil.rmtree, _tmp, ignore_errors=True)

# Never the developer's var/: the test run gets its own secret key, SQLite file and lab.
os.environ.setdefault("OPSPLANE_VAR_DIR", os.path.join(_tmp, "var"))
# Metrics as in production: one directory the processes of this host count into.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", os.path.join(_tmp, "metrics"))
os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)

if not os.environ.get("REDIS_URL"):
    from opsplane.embedded_redis import EmbeddedRedis

    _redis = EmbeddedRedis(os.path.join(_tmp, "redis"), persist=False).start()
    atexit.register(_redis.stop)
    os.environ["REDIS_URL"] = _redis.url
