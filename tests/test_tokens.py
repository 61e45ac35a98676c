"""API tokens: created in the browser, shown once, stored hashed, used by scripts."""

import hashlib
from datetime import timedelta

import pytest
from django.utils import timezone

from opsplane import tokens
from opsplane.models import ApiToken, AuditEvent

pytestmark = pytest.mark.django_db


def test_token_authenticates_api_requests_with_the_users_roles(client, operator):
    token, plaintext = tokens.create_token(operator, "deploy pipeline", by=operator)
    response = client.get("/api/v1/me/", HTTP_AUTHORIZATION=f"Bearer {plaintext}")
    assert response.status_code == 200
    assert response.json() == {"username": operator.username, "roles": ["operator"]}
    token.refresh_from_db()
    assert token.last_used_at is not None


def test_only_a_digest_is_stored(operator):
    token, plaintext = tokens.create_token(operator, "ci", by=operator)
    stored = ApiToken.objects.filter(pk=token.pk).values().get()
    assert plaintext not in str(stored)
    assert stored["digest"] == hashlib.sha256(plaintext.encode()).hexdigest()


@pytest.mark.parametrize("header", [
    "Bearer ops_deadbeef_not-a-real-token",
    "Bearer",
    "Bearer a b",
])
def test_bad_tokens_are_401(client, header):
    response = client.get("/api/v1/me/", HTTP_AUTHORIZATION=header)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_api_without_credentials_is_401_not_a_login_redirect(client):
    response = client.get("/api/v1/me/")
    assert response.status_code == 401
    assert response["Content-Type"].startswith("application/json")


def test_schema_needs_authentication(client, operator):
    assert client.get("/api/schema/").status_code == 401
    client.force_login(operator)
    assert client.get("/api/schema/").status_code == 200


def test_revoked_and_expired_tokens_stop_working(client, operator):
    token, plaintext = tokens.create_token(operator, "old", by=operator)
    assert tokens.revoke_token(token, by=operator)
    assert client.get("/api/v1/me/", HTTP_AUTHORIZATION=f"Bearer {plaintext}").status_code == 401

    token, plaintext = tokens.create_token(
        operator, "short", by=operator, expires_at=timezone.now() + timedelta(seconds=60)
    )
    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert client.get("/api/v1/me/", HTTP_AUTHORIZATION=f"Bearer {plaintext}").status_code == 401


def test_deactivated_user_token_stops_working(client, operator):
    _, plaintext = tokens.create_token(operator, "ci", by=operator)
    operator.is_active = False
    operator.save()
    assert client.get("/api/v1/me/", HTTP_AUTHORIZATION=f"Bearer {plaintext}").status_code == 401


def test_nobody_revokes_someone_elses_token(operator, approver):
    token, _ = tokens.create_token(operator, "ci", by=operator)
    with pytest.raises(tokens.TokenError):
        tokens.revoke_token(token, by=approver)


def test_token_page_shows_the_secret_once_and_never_again(client, operator):
    client.force_login(operator)
    response = client.post("/account/tokens/", {"name": "nightly report"})
    html = response.content.decode()
    token = ApiToken.objects.get(user=operator)
    assert f"ops_{token.prefix}_" in html and 'id="new-token"' in html
    again = client.get("/account/tokens/").content.decode()
    assert "nightly report" in again and 'id="new-token"' not in again
    assert AuditEvent.objects.filter(action="api_token.create", actor=operator).exists()


def test_token_form_errors_are_next_to_the_field_and_keep_input(client, operator):
    client.force_login(operator)
    past = (timezone.now() - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    html = client.post("/account/tokens/", {"name": "keep me", "expires_at": past}).content.decode()
    assert "The expiry must be in the future." in html
    assert 'value="keep me"' in html
    assert not ApiToken.objects.exists()


def test_revoke_from_the_page(client, operator, approver):
    token, _ = tokens.create_token(operator, "ci", by=operator)
    client.force_login(approver)
    assert client.post(f"/account/tokens/{token.pk}/revoke/").status_code == 404
    client.force_login(operator)
    assert client.post(f"/account/tokens/{token.pk}/revoke/").status_code == 302
    token.refresh_from_db()
    assert token.revoked_at is not None


def test_api_docs_page_is_served_locally(client, operator):
    client.force_login(operator)
    html = client.get("/api/docs/").content.decode()
    assert "swagger-ui" in html
    assert "cdn." not in html and "https://" not in html.split("<body", 1)[0]
    script = client.get("/api/docs/?script=")
    assert script.status_code == 200
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json")
    paths = schema.json()["paths"]
    assert "/api/v1/hosts/" in paths and "/api/v1/selector/" in paths
