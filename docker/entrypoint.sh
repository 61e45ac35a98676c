#!/bin/sh
# Entry point of the opsplane image (web, worker, beat, migrate): start with an empty
# Prometheus multiprocess directory, then become the command.
#
# prometheus_client adds up every file in PROMETHEUS_MULTIPROC_DIR, including those of
# processes that are gone; files left by an earlier life of this container would be
# counted forever (and their pids may be reused), so each start begins empty.
set -eu

dir="${PROMETHEUS_MULTIPROC_DIR:-}"
if [ -n "$dir" ]; then
    case "$dir" in
        /*) ;;
        *) echo "entrypoint: PROMETHEUS_MULTIPROC_DIR must be an absolute path, got '$dir'" >&2
           exit 2 ;;
    esac
    if [ "$dir" = "/" ]; then
        echo "entrypoint: refusing to empty / (PROMETHEUS_MULTIPROC_DIR)" >&2
        exit 2
    fi
    mkdir -p "$dir"
    # Empty it rather than remove it: it may be a mount point (e.g. a tmpfs).
    find "$dir" -mindepth 1 -delete
fi

exec "$@"
