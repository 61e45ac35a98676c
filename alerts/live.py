"""The alerts app's only caller of the channel layer: the live alert board's group.

Whatever changes what the board shows (the intake, an incident's status, a flush that
resolves one) calls ``board_changed()`` inside its transaction; the board hears about it
once that transaction has committed, never before (a browser that refetches on the
message must find the change in the database) and never for a rolled-back one.

Publishing is cheap and coalesced. ``board_changed`` only registers an ``on_commit``
callback that adds incident ids to an in-process buffer; one daemon thread per process
sends what the buffer holds as a single group message, then waits ``INTERVAL`` while
later commits pile up in the buffer. A storm of intake requests therefore costs each
request a lock and a set update, and the board at most a few messages a second per
process. The message is a hint ("these incidents changed"), not the record: browsers
refetch the board from the database, and refetch everything after a reconnect.
"""

import asyncio
import atexit
import logging
import os
import threading
import time

from channels.layers import get_channel_layer
from django.db import transaction
from prometheus_client import Counter

logger = logging.getLogger(__name__)

BOARD_GROUP = "alerts.board"
# Seconds between two messages from one process: changes in between are merged.
INTERVAL = 0.25
# More changed incidents than this in one message: the browser is told "everything".
MAX_IDS = 200

published = Counter("opsplane_alert_board_messages_total",
                    "Change messages published to the live alert board.")
publish_failures = Counter("opsplane_alert_board_publish_failures_total",
                           "Board messages that could not be published (browsers catch up "
                           "at their next refetch).")


def board_changed(incidents=()):
    """Tell the live board, once the current transaction commits, that these incidents
    (ids; none: "something", e.g. alerts only) changed. Outside a transaction Django
    runs the callback at once."""
    ids = frozenset(incidents)
    transaction.on_commit(lambda: _publisher().add(ids))


class _Publisher:
    """The buffer and the thread that empties it (see the module's docstring)."""

    def __init__(self):
        self.pid = os.getpid()
        self.lock = threading.Condition()
        self.pending = None  # None: nothing to send; else a set of ids (maybe empty)
        self.overflow = False
        self.loop = None
        self.thread = threading.Thread(target=self._run, name="alerts-board-publisher",
                                       daemon=True)
        self.thread.start()

    def add(self, ids):
        with self.lock:
            if self.pending is None:
                self.pending = set()
            if not self.overflow:
                self.pending.update(ids)
                if len(self.pending) > MAX_IDS:
                    self.overflow, self.pending = True, set()
            self.lock.notify()

    def _take(self, wait=True):
        with self.lock:
            while wait and self.pending is None:
                self.lock.wait()
            if self.pending is None:
                return None
            message = {"type": "board.changed", "incidents": sorted(self.pending),
                       "all": self.overflow}
            self.pending, self.overflow = None, False
            return message

    def _run(self):
        self.loop = asyncio.new_event_loop()
        while True:
            self._send(self._take())
            # Coalesce: whatever commits meanwhile goes out in the next single message.
            time.sleep(INTERVAL)

    def _send(self, message):
        try:
            self.loop.run_until_complete(get_channel_layer().group_send(BOARD_GROUP, message))
            published.inc()
        except Exception:  # Redis away: live is best effort, the database is the record
            publish_failures.inc()
            logger.warning("could not publish to the alert board", exc_info=True)

    def flush(self):
        """Send what is buffered now, from the calling thread (at exit)."""
        message = self._take(wait=False)
        if message is not None:
            loop = asyncio.new_event_loop()
            try:
                loop.run_until_complete(get_channel_layer().group_send(BOARD_GROUP, message))
            except Exception:
                logger.warning("could not publish to the alert board", exc_info=True)
            finally:
                loop.close()


_instance = None
_instance_lock = threading.Lock()


def _publisher():
    """This process' publisher, started on first use (after a fork: a new one)."""
    global _instance
    if _instance is None or _instance.pid != os.getpid():
        with _instance_lock:
            if _instance is None or _instance.pid != os.getpid():
                _instance = _Publisher()
    return _instance


@atexit.register
def _flush_at_exit():
    # A short-lived process (a management command) must not take its last change along.
    if _instance is not None and _instance.pid == os.getpid():
        _instance.flush()
