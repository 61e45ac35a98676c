"""The run page in a real Chromium, served by uvicorn (HTTP and websockets) under the
site's Content-Security-Policy: lines show while the run goes, the host terminal
(xterm.js) opens from the keyboard, search works. The `page` fixture fails the test on
any console error or CSP violation."""


import pytest
from live_support import (  # noqa: F401 - lab_inventory_fixture provides lab_inventory
    lab_inventory_fixture,
    make_change,
    wait_for,
)
from playwright.sync_api import expect

from changes import services
from changes.models import Run
from opsplane.testing.fixtures import login

pytestmark = pytest.mark.django_db(transaction=True)

COLOURFUL = """
steps:
  - name: talk
    kind: shell
    command: |
      i=1
      while [ $i -le 25 ]; do
        printf '\\033[32m%s\\033[0m line %s\\n' "$OPSPLANE_LAB_HOST" $i
        i=$((i+1)); sleep 0.2
      done
      echo "$OPSPLANE_LAB_HOST warns" >&2
"""


@pytest.fixture
def live_server(asgi_server):
    """The `page` fixture browses the ASGI server (websockets)."""
    return asgi_server


def test_run_page_shows_lines_live_and_a_host_terminal(
        page, celery_worker, lab_inventory, operator, approver, screenshots):
    change = make_change(operator, COLOURFUL, "role=web", approvers=[approver],
                         parallelism=6)
    login(page, operator)
    run = services.start_run(change, by=operator)
    page.goto(f"/changes/{change.pk}/runs/{run.number}/")
    rows = page.locator("#merged .ln .t")
    expect(rows.filter(has_text="line 3").first).to_be_visible(timeout=15_000)
    assert not Run.objects.get(pk=run.pk).is_terminal, "the lines must come while it runs"
    expect(page.locator("#live-state")).to_have_text("live")
    # The ANSI colour became a class, not an inline style.
    expect(page.locator("#merged .ln .t .a-f2").first).to_be_visible()
    page.screenshot(path=screenshots / "run-live.png")

    # Keyboard: j selects the first host, Enter opens its terminal, Esc goes back.
    page.locator("#merged").focus()
    page.keyboard.press("j")
    first = page.locator("#host-grid li").first
    expect(first.locator("a")).to_be_focused()
    host = first.inner_text()
    page.keyboard.press("Enter")
    terminal = page.locator("#terminal")
    expect(terminal).to_be_visible()
    expect(terminal.locator(".xterm-rows")).to_contain_text(f"{host} line", timeout=10_000)
    expect(page.locator(".host-head .host-name")).to_have_text(host)
    page.screenshot(path=screenshots / "run-host-terminal.png")
    page.keyboard.press("Escape")
    expect(page.locator("#merged")).to_be_visible()

    # Server-side search; a result jumps to its line in the merged view.
    page.fill("#output-q", "warns")
    page.keyboard.press("Enter")
    wait_for(run, timeout=30)
    results = page.locator(".search-results .matches li")
    page.fill("#output-q", "line 25")
    page.locator(".output-search button").click()
    expect(results.first).to_contain_text("line 25", timeout=10_000)
    results.first.click()
    expect(page.locator("#merged .ln.hit")).to_contain_text("line 25")

    # The end: every tile ok, the indicator says the output is complete.
    expect(page.locator("#live-state")).to_have_text("complete", timeout=15_000)
    expect(page.locator("#host-grid li.hs-ok")).to_have_count(6)
    page.screenshot(path=screenshots / "run-finished.png")
