"""API tokens for scripts: create, revoke, authenticate. Secrets are stored hashed.

A token reads ``ops_<prefix>_<secret>``; clients send ``Authorization: Bearer <token>``.
"""

import hashlib
import secrets

from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from opsplane import audit
from opsplane.models import ApiToken

TOKEN_PREFIX = "ops_"  # noqa: S105 - a public marker, not a secret


class TokenError(Exception):
    def __init__(self, message, field=None):
        super().__init__(message)
        self.field = field  # the form field the message belongs to, if any


def _digest(secret):
    return hashlib.sha256(secret.encode()).hexdigest()


def create_token(user, name, *, by, expires_at=None, request=None):
    """Make a token for ``user``; returns ``(ApiToken, plaintext)``. The plaintext is
    shown once and never stored."""
    name = name.strip()
    if not name:
        raise TokenError(_("Give the token a name, e.g. the script that will use it."), "name")
    if by != user and not by.is_superuser:
        raise TokenError(_("You can only create tokens for yourself."))
    if expires_at is not None and expires_at <= timezone.now():
        raise TokenError(_("The expiry must be in the future."), "expires_at")
    prefix = secrets.token_hex(4)
    secret = secrets.token_urlsafe(32)
    plaintext = f"{TOKEN_PREFIX}{prefix}_{secret}"
    with transaction.atomic():
        token = ApiToken.objects.create(
            user=user, name=name[:100], prefix=prefix, digest=_digest(plaintext),
            expires_at=expires_at,
        )
        audit.record("api_token.create", by=by, obj=token, request=request)
    return token, plaintext


def revoke_token(token, *, by, request=None):
    if token.user_id != by.pk and not by.is_superuser:
        raise TokenError(_("You can only revoke your own tokens."))
    with transaction.atomic():
        updated = ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(
            revoked_at=timezone.now()
        )
        if updated:
            audit.record("api_token.revoke", by=by, obj=token, request=request)
    return bool(updated)


def user_for_token(plaintext):
    """The active user a token belongs to, or None. Updates ``last_used_at`` at most
    once a minute, so a busy script does not write on every request."""
    if not plaintext.startswith(TOKEN_PREFIX) or len(plaintext) > 200:
        return None
    token = (
        ApiToken.objects.select_related("user")
        .filter(digest=_digest(plaintext), revoked_at__isnull=True)
        .first()
    )
    if token is None or not token.is_active or not token.user.is_active:
        return None
    now = timezone.now()
    if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token.user, token


class TokenAuthentication(authentication.BaseAuthentication):
    """DRF authentication for ``Authorization: Bearer ops_...`` (or ``Token ops_...``)."""

    keywords = ("bearer", "token")

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1").split()
        if not header or header[0].lower() not in self.keywords:
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed(_("Malformed Authorization header."))
        found = user_for_token(header[1])
        if found is None:
            raise exceptions.AuthenticationFailed(_("Invalid, expired or revoked token."))
        return found

    def authenticate_header(self, request):
        return 'Bearer realm="api"'


class TokenAuthenticationScheme(OpenApiAuthenticationExtension):
    """Tells drf-spectacular how ``TokenAuthentication`` looks in the OpenAPI schema."""

    target_class = "opsplane.tokens.TokenAuthentication"
    name = "bearerToken"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer",
                "description": "An API token from your profile page: `ops_...`."}
