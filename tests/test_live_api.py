"""Scripts tail a run over the REST API (long-poll and NDJSON) with no gap and no
repeat; the run page's own endpoints stay small on a 1,000-host run."""

import json
import time

import pytest
from live_support import (  # noqa: F401 - lab_inventory_fixture provides lab_inventory
    assert_numbered,
    content,
    event_lines,
    lab_inventory_fixture,
    make_change,
    stored_lines,
    wait_for,
)
from test_live_output import bare_run, feed

from changes import output, services
from changes.models import HostResult, Run

pytestmark = pytest.mark.django_db(transaction=True)

SLOW = """
steps:
  - name: count
    kind: shell
    command: |
      i=1
      while [ $i -le 40 ]; do echo "$OPSPLANE_LAB_HOST $i"; i=$((i+1)); sleep 0.04; done
      echo "$OPSPLANE_LAB_HOST done" >&2
"""


def _events(client, url):
    response = client.get(url)
    assert response.status_code == 200, content(response)[:500]
    return json.loads(content(response))


def test_long_poll_tails_a_running_run_without_gap_or_repeat(
        celery_worker, lab_inventory, operator, approver, client):
    change = make_change(operator, SLOW, "role=web", approvers=[approver], parallelism=6)
    run = services.start_run(change, by=operator)
    client.force_login(operator)
    url = f"/api/v1/changes/{change.pk}/runs/{run.number}/events/"
    lines, after, calls, waited = [], 0, 0, 0.0
    while True:
        started = time.monotonic()
        body = _events(client, f"{url}?after={after}&wait=10&limit=50")
        calls += 1
        if not body["events"]:
            waited = max(waited, time.monotonic() - started)
        got = event_lines([[e["seq"], e["host"], e["step"], e["stream"], e["text"], e["at"]]
                           for e in body["events"]])
        lines.extend(got)
        if got:
            assert body["last_seq"] == got[-1][0]
        after = body["last_seq"]
        if body["finished"]:
            break
        assert calls < 500
    assert_numbered(lines)
    assert lines == stored_lines(run.pk)
    assert sum(1 for line in lines if line[2] == "stdout") == 6 * 40
    assert calls > 3  # it did follow the run, not read it at the end
    # Nothing more: an immediate answer saying so.
    body = _events(client, f"{url}?after={after}&wait=5")
    assert body == {"events": [], "last_seq": after, "finished": True}


def test_ndjson_stream_and_plain_logs_of_a_finished_run(operator, client, make_user):
    run = bare_run(operator, ["a", "b"])
    feed(run, [("output", "a", 0, "stdout", "one\ntwo\n"), ("output", "b", 0, "stderr", "x\n"),
               ("output", "a", 0, "stdout", "three\n")], pause=0.06)
    Run.objects.filter(pk=run.pk).update(status=Run.Status.SUCCEEDED,
                                         finished_at=run.queued_at)
    client.force_login(operator)
    base = f"/api/v1/changes/{run.change_id}/runs/1"
    response = client.get(f"{base}/events/?stream=ndjson&after=1")
    assert response["Content-Type"] == "application/x-ndjson"
    rows = [json.loads(line) for line in content(response).decode().splitlines()]
    assert rows[-1] == {"type": "end", "last_seq": 4}
    assert [(r["seq"], r["host"], r["text"]) for r in rows[:-1]] == [
        (2, "a", "two\n"), (3, "b", "x\n"), (4, "a", "three\n")]
    response = client.get(f"{base}/events/", HTTP_ACCEPT="application/x-ndjson")
    assert content(response).decode().splitlines()[-1] == '{"type": "end", "last_seq": 4}'
    assert content(client.get(f"{base}/hosts/b/log/")) == b"[stderr] x\n"
    assert content(client.get(f"{base}/log/")) == b"a | one\na | two\nb | [stderr] x\na | three\n"
    assert client.get(f"{base}/events/?after=x").status_code == 400
    client.force_login(make_user(None))
    assert client.get(f"{base}/events/").status_code == 403
    client.logout()
    assert client.get(f"{base}/events/").status_code == 401


def test_the_run_page_of_1000_hosts_stays_small(operator, client, django_assert_max_num_queries):
    hosts = [f"web-{i:04d}" for i in range(1000)]
    run = bare_run(operator, hosts)
    feed(run, [("output", host, 0, "stdout", f"{host} says hello\n" * 20) for host in hosts])
    HostResult.objects.filter(run=run, host_name__lt="web-0400").update(state="ok")
    client.force_login(operator)
    page_url = f"/changes/{run.change_id}/runs/1/"
    page = client.get(page_url).content.decode()
    assert "400 of 1000 hosts done" in page and 'data-last-seq="20000"' in page
    assert len(page) < 110_000, len(page)  # the grid, never the output
    assert "says hello" not in page
    with django_assert_max_num_queries(8):
        partial = client.get(page_url, HTTP_HX_REQUEST="true")
    assert b"<html" not in partial.content and b'id="hosts"' in partial.content
    assert len(partial.content) < 4000, len(partial.content)
    # The viewer's endpoint: a bounded tail, one host's lines, search.
    tail = client.get(f"{page_url}output/?limit=100").json()
    assert sum(output.line_count(e[4]) for e in tail["events"]) == 100
    assert tail["last_seq"] == 20000 and tail["events"][-1][1] == "web-0999"
    mine = client.get(f"{page_url}output/?host=web-0500&limit=5").json()
    assert {e[1] for e in mine["events"]} == {"web-0500"} and mine["host"]["state"] == "pending"
    found = client.get(f"{page_url}output/?q=web-0777+SAYS&limit=3").json()
    assert [m[1] for m in found["matches"]] == ["web-0777"] * 3 and not found["done"]
    window = client.get(f"{page_url}output/?after=10000&limit=500").json()
    assert window["events"][0][0] == 10001
    assert client.get(f"{page_url}output/?after=-1").status_code == 400
    download = content(client.get(f"{page_url}log/"))
    assert download.count(b"\n") == 20000
    metrics = client.get("/metrics").content.decode()
    assert "opsplane_change_output_lines_total" in metrics
    assert 'opsplane_change_output_stored_rows{state="live"}' in metrics


def test_compaction_and_retention_show_on_the_run_page(operator, client, settings):
    run = bare_run(operator, ["a"])
    feed(run, [("output", "a", 0, "stdout", "kept\n")])
    Run.objects.filter(pk=run.pk).update(status=Run.Status.SUCCEEDED,
                                         finished_at=run.queued_at)
    output.compact(run.pk)
    client.force_login(operator)
    page_url = f"/changes/{run.change_id}/runs/1/"
    assert client.get(f"{page_url}output/").json()["events"][0][4] == "kept\n"
    settings.OPSPLANE_OUTPUT_RETENTION_DAYS = 1
    from datetime import timedelta

    assert output.expire(now=run.queued_at + timedelta(days=2)) == 1
    page = client.get(page_url).content.decode()
    assert "was deleted on" in page and 'data-expired="1"' in page
    assert client.get(f"{page_url}output/").json()["events"] == []
    wait_for(run)
