"""The browser shell: login, role-aware navigation, language, security headers."""

import re

import pytest
from django.urls import URLPattern, URLResolver, get_resolver

pytestmark = pytest.mark.django_db

OPEN_PATHS = {"/login/", "/healthz", "/readyz", "/metrics", "/i18n/setlang/"}


def _page_paths(resolver=None, prefix=""):
    """Every HTML page path the URLconf serves (API, admin and probes aside)."""
    resolver = resolver or get_resolver()
    for entry in resolver.url_patterns:
        route = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            if route.startswith(("admin/", "api/")):
                continue
            yield from _page_paths(entry, route)
        elif isinstance(entry, URLPattern):
            path = "/" + re.sub(r"<int:\w+>", "1", route)
            if "<" not in path and not path.startswith("/api/"):
                yield path


def test_every_page_needs_login(client):
    paths = sorted(set(_page_paths()) - OPEN_PATHS)
    assert "/inventory/" in paths and "/account/tokens/" in paths
    for path in paths:
        response = client.get(path)
        assert response.status_code == 302, path
        assert response["Location"].startswith("/login/?next="), path


def test_login_page_renders_and_logs_in(client, make_user):
    make_user("operator", username="olga", password="a long passphrase")
    page = client.get("/login/")
    assert page.status_code == 200
    assert b'name="username"' in page.content
    response = client.post("/login/", {"username": "olga", "password": "a long passphrase"})
    assert response.status_code == 302 and response["Location"] == "/"
    home = client.get("/")
    assert b"olga" in home.content


def test_wrong_password_shows_an_error_and_keeps_the_username(client, make_user):
    make_user("operator", username="olga", password="a long passphrase")
    response = client.post("/login/", {"username": "olga", "password": "nope"})
    assert response.status_code == 200
    assert b'value="olga"' in response.content
    assert b"form-error" in response.content


def test_logout_is_a_post(client, operator):
    client.force_login(operator)
    assert client.get("/logout/").status_code == 405
    assert client.post("/logout/").status_code == 302
    assert client.get("/").status_code == 302


def _nav(client, user):
    client.force_login(user)
    html = client.get("/").content.decode()
    nav = html.split('class="mainnav"', 1)[1].split("</nav>", 1)[0]
    return re.findall(r'href="([^"]+)"', nav)


@pytest.mark.parametrize(("role", "expected"), [
    ("operator", ["/inventory/", "/changes/", "/approvals/", "/alerts/board/", "/oncall/"]),
    ("approver", ["/inventory/", "/changes/", "/approvals/"]),
    ("oncall", ["/inventory/", "/changes/", "/alerts/board/", "/oncall/"]),
    ("admin", ["/inventory/", "/changes/", "/approvals/", "/alerts/board/", "/oncall/",
               "/notifications/channels/",
               "/system/", "/admin/"]),
    (None, []),
])
def test_each_role_sees_its_navigation(client, make_user, role, expected):
    assert _nav(client, make_user(role)) == expected


@pytest.mark.parametrize("path", ["/alerts/board/", "/alerts/", "/alerts/silences/",
                                  "/alerts/incidents/"])
def test_the_alerts_entry_opens_the_board_and_stays_marked_across_alert_pages(
        client, oncall, path):
    client.force_login(oncall)
    html = client.get(path).content.decode()
    assert html.count('aria-current="page"') == 1
    assert '<a href="/alerts/board/" class="active" aria-current="page">' in html


@pytest.mark.parametrize(("role", "path", "status"), [
    ("oncall", "/changes/new/", 403),
    ("oncall", "/alerts/", 200),
    ("approver", "/alerts/", 403),
    ("operator", "/system/", 403),
    ("admin", "/system/", 200),
    (None, "/inventory/", 403),
])
def test_pages_check_the_same_roles_as_the_navigation(client, make_user, role, path, status):
    client.force_login(make_user(role))
    assert client.get(path).status_code == status


def test_user_without_role_is_told_what_to_do(client, outsider):
    client.force_login(outsider)
    assert b"You have no role yet." in client.get("/").content


def test_language_switch_to_simplified_chinese(client, operator):
    client.force_login(operator)
    response = client.post("/i18n/setlang/", {"language": "zh-hans", "next": "/"})
    assert response.status_code == 302
    html = client.get("/").content.decode()
    assert '<html lang="zh-hans">' in html
    assert "退出" in html  # "Log out"
    assert "资产" in html  # "Inventory"


def test_pages_carry_a_strict_content_security_policy(client, operator):
    client.force_login(operator)
    response = client.get("/")
    policy = response["Content-Security-Policy"]
    assert "script-src 'self'" in policy
    assert "unsafe-inline" not in policy
    html = response.content.decode()
    # The UI satisfies it: no inline script or style, no event-handler attributes.
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html)
    assert "<style" not in html and " style=" not in html
    assert not re.search(r"\son[a-z]+=", html)
    assert response["X-Frame-Options"] == "DENY"


def test_static_assets_are_served_locally(client):
    for path in ("/static/vendor/htmx/htmx.min.js", "/static/opsplane/app.css",
                 "/static/opsplane/app.js"):
        response = client.get(path)
        assert response.status_code == 200, path


def test_csrf_token_is_in_htmx_headers(client, operator):
    client.force_login(operator)
    html = client.get("/").content.decode()
    assert re.search(r'<body hx-headers=\'\{"X-CSRFToken": "[^"]+"\}\'>', html)


def test_repeated_failed_logins_lock_the_account_from_that_address(client, make_user, settings):
    make_user("operator", username="olga", password="a long passphrase")
    for _ in range(settings.AXES_FAILURE_LIMIT):
        client.post("/login/", {"username": "olga", "password": "wrong"})
    response = client.post("/login/", {"username": "olga", "password": "a long passphrase"})
    assert response.status_code == 429
    assert b"Too many failed logins" in response.content
    assert client.get("/").status_code == 302  # still not logged in


def test_password_change_applies_the_validators(client, make_user):
    user = make_user("operator", username="olga", password="a long passphrase")
    client.force_login(user)
    html = client.post("/account/password/", {
        "old_password": "a long passphrase", "new_password1": "12345678",
        "new_password2": "12345678",
    }).content.decode()
    assert "This password is too short" in html
    assert "This password is entirely numeric" in html
    response = client.post("/account/password/", {
        "old_password": "a long passphrase", "new_password1": "violet mountain ledger",
        "new_password2": "violet mountain ledger",
    })
    assert response.status_code == 302
    user.refresh_from_db()
    assert user.check_password("violet mountain ledger")
