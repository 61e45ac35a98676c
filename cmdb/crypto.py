"""Secrets at rest: credential material as Fernet tokens (AES-128-CBC + HMAC-SHA256).

``settings.OPSPLANE_FERNET_KEYS`` lists keys newest first: the first encrypts, all
decrypt. Rotation: put a new key first, run ``manage.py rotate_credentials``, then
drop the old key.
"""

import json
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


class SecretUnreadable(Exception):
    """No configured key opens this token (a key was removed too early)."""


UNREADABLE = ("no key in OPSPLANE_FERNET_KEYS decrypts this credential: was a key removed "
              "before `manage.py rotate_credentials` re-encrypted it with the newest one?")


@lru_cache(maxsize=4)
def _fernet(keys):
    return MultiFernet([Fernet(key) for key in keys])


def _current():
    return _fernet(tuple(settings.OPSPLANE_FERNET_KEYS))


def encrypt(data):
    """A dict of secret fields -> a token string."""
    return _current().encrypt(json.dumps(data, separators=(",", ":")).encode()).decode()


def decrypt(token):
    try:
        return json.loads(_current().decrypt(token.encode()))
    except InvalidToken:
        raise SecretUnreadable(UNREADABLE) from None


def rotate(token):
    """The same secret, encrypted with the newest key."""
    try:
        return _current().rotate(token.encode()).decode()
    except InvalidToken:
        raise SecretUnreadable(UNREADABLE) from None
