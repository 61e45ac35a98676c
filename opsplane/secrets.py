"""Secrets at rest, for every app: Fernet tokens (AES-128-CBC + HMAC-SHA256).

SSH credentials, secret change parameters, notification channel secrets and alert
integration secrets all go through here. ``settings.OPSPLANE_FERNET_KEYS`` lists keys
newest first; the first encrypts, all decrypt. ``rotate()`` re-encrypts with the newest
key (``manage.py rotate_credentials`` does it for every stored secret). A value is a
JSON-able dict of secret fields, so one token holds everything secret about one object.
"""

import json
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


class SecretUnreadable(Exception):
    """No configured key opens this token (a key was removed too early)."""


UNREADABLE = ("no key in OPSPLANE_FERNET_KEYS decrypts this secret: was a key removed "
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
    """A token -> the dict it holds; an empty token is an empty dict."""
    if not token:
        return {}
    try:
        return json.loads(_current().decrypt(token.encode()))
    except InvalidToken:
        raise SecretUnreadable(UNREADABLE) from None


def rotate(token):
    """The same secret, encrypted with the newest key."""
    if not token:
        return token
    try:
        return _current().rotate(token.encode()).decode()
    except InvalidToken:
        raise SecretUnreadable(UNREADABLE) from None
