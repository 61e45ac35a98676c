"""Notification channels and their delivery outbox, shared by every app.

Callers use ``opsplane.notify.services.enqueue(channel, Message(...), key=...)`` inside
their own transaction (``opsplane.notify.message.Message``). See ``services.py``.
"""
