"""Accessibility basics on every page without parameters: each form field has a label
(``<label for>``, a wrapping ``<label>``, ``aria-label`` or ``aria-labelledby``), the page
has one ``<h1>`` and a language, and images have alternative text."""

from html.parser import HTMLParser

import pytest
from django.urls import URLPattern, URLResolver, get_resolver

pytestmark = pytest.mark.django_db

SKIP_NAMESPACES = {"admin", "api", "djdt"}
UNLABELLED_OK = {"hidden", "submit", "button", "reset", "image"}


def _pages(resolver=None, prefix="", namespace=None):
    """The path of every named page whose URL takes no argument."""
    resolver = resolver or get_resolver()
    for entry in resolver.url_patterns:
        if isinstance(entry, URLResolver):
            ns = entry.namespace or namespace
            if ns in SKIP_NAMESPACES or str(entry.pattern).startswith("api/"):
                continue
            yield from _pages(entry, prefix + str(entry.pattern), ns)
        elif (isinstance(entry, URLPattern) and not entry.pattern.converters
              and "(?P<" not in str(entry.pattern) and entry.name):
            path = "/" + prefix + str(entry.pattern)
            if any(c in path for c in "^$\\"):
                continue
            yield path


class _Form(HTMLParser):
    def __init__(self):
        super().__init__()
        self.labels_for, self.fields, self.h1, self.lang, self.images = set(), [], 0, None, []
        self.in_label = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "html":
            self.lang = a.get("lang")
        elif tag == "label":
            self.in_label += 1
            if a.get("for"):
                self.labels_for.add(a["for"])
        elif tag == "h1":
            self.h1 += 1
        elif tag == "img":
            self.images.append(a)
        elif tag in ("input", "select", "textarea"):
            if tag == "input" and a.get("type", "text") in UNLABELLED_OK:
                return
            self.fields.append((a, self.in_label > 0))

    def handle_endtag(self, tag):
        if tag == "label" and self.in_label:
            self.in_label -= 1


def _unlabelled(parser):
    return [a.get("name") or a.get("id") for a, wrapped in parser.fields
            if not (wrapped or a.get("aria-label") or a.get("aria-labelledby")
                    or (a.get("id") and a["id"] in parser.labels_for))]


def test_every_page_labels_its_fields_and_has_a_heading(client, admin_user):
    client.force_login(admin_user)
    checked, problems = 0, []
    for path in sorted(set(_pages())):
        response = client.get(path)
        # Redirects (login, language) and POST-only endpoints aside, every page answers:
        # one that started to refuse or vanish would otherwise drop out unseen.
        if response.status_code not in (200, 302, 405):
            problems.append(f"{path}: status {response.status_code}")
        html = response.content.decode() if response.status_code == 200 else ""
        if path.startswith("/api/") or "<html" not in html:
            continue  # the API (and Swagger UI's page), htmx fragments
        parser = _Form()
        parser.feed(html)
        checked += 1
        if unlabelled := _unlabelled(parser):
            problems.append(f"{path}: fields without a label: {unlabelled}")
        if parser.h1 != 1:
            problems.append(f"{path}: {parser.h1} <h1> elements")
        if not parser.lang:
            problems.append(f"{path}: no lang on <html>")
        if missing := [i.get("src") for i in parser.images if "alt" not in i]:
            problems.append(f"{path}: images without alt: {missing}")
    assert checked > 20
    assert problems == [], "\n".join(problems)
