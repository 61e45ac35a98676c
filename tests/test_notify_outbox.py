"""The outbox: idempotent enqueue, one send per row under redelivery, retries with backoff,
rate budgets that fold storms into one digest, and the sweep that picks up what the
broker or a worker dropped. Services are called directly (the broker replaced by a
recorder) and through a real Celery worker on the real broker."""

import threading
import time
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from opsplane.notify import budget, services, tasks
from opsplane.notify import metrics as notify_metrics
from opsplane.notify.message import Message
from opsplane.notify.models import Attempt, Notification
from opsplane.notify.testing import FakeProvider, clear_budgets, make_channel

OK = (200, {"errcode": 0, "errmsg": "ok"})
SIGN_MISMATCH = (200, {"errcode": 310000, "errmsg": "sign not match"})


@pytest.fixture(autouse=True)
def _clean_budgets():
    clear_budgets()
    yield
    clear_budgets()


@pytest.fixture
def robot():
    with FakeProvider() as provider:
        yield provider


@pytest.fixture
def queued(monkeypatch):
    """The broker, replaced by a list: ``[("deliver"|"flush", id, countdown), ...]``."""
    calls = []

    def recorder(name):
        def apply_async(args, countdown=None, **kwargs):
            calls.append((name, args[0], countdown))
        return apply_async

    monkeypatch.setattr(tasks.deliver, "apply_async", recorder("deliver"))
    monkeypatch.setattr(tasks.flush, "apply_async", recorder("flush"))
    return calls


@pytest.fixture
def clock(monkeypatch):
    """The rate budget's clock, moved by hand: ``clock.now += 61``."""

    class Clock:
        now = 1_800_000_000.0

    monkeypatch.setattr(budget, "clock", lambda: Clock.now)
    return Clock


def dingtalk(robot, **fields):
    return make_channel("dingtalk", url=f"{robot.url}/robot/send?access_token=t", **fields)


def message(n=1, **fields):
    return Message(title=fields.pop("title", f"alert {n}"), **fields)


def make_due(row):
    """The clock moved on to the row's next attempt."""
    Notification.objects.filter(pk=row.pk).update(next_attempt_at=timezone.now())


def wait_until(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


# --- enqueue -----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_enqueue_is_idempotent_by_key(robot, queued, django_capture_on_commit_callbacks):
    channel = dingtalk(robot)
    with django_capture_on_commit_callbacks(execute=True):
        first = services.enqueue(channel, message(), key="alert:1:round:1")
    with django_capture_on_commit_callbacks(execute=True):
        again = services.enqueue(channel, message(title="changed"), key="alert:1:round:1")
    assert again.pk == first.pk and again.title == "alert 1"
    assert Notification.objects.count() == 1
    assert queued == [("deliver", first.pk, None)]  # queued once, on commit
    services.deliver(first.pk)
    services.deliver(first.pk)
    assert len(robot.requests) == 1


@pytest.mark.django_db
def test_enqueue_belongs_to_the_callers_transaction(robot, queued,
                                                    django_capture_on_commit_callbacks):
    channel = dingtalk(robot)
    with (django_capture_on_commit_callbacks(execute=True) as callbacks,
          pytest.raises(RuntimeError), transaction.atomic()):
        services.enqueue(channel, message(), key="k")
        raise RuntimeError("the caller's transaction fails")
    assert callbacks == [] and queued == []
    assert not Notification.objects.exists()


@pytest.mark.django_db
def test_a_duplicate_key_leaves_the_callers_transaction_usable(robot, queued):
    channel = dingtalk(robot)
    with transaction.atomic():
        services.enqueue(channel, message(), key="k")
        services.enqueue(channel, message(), key="k")
        make_channel("webhook", url="http://127.0.0.1:9/x")  # the transaction still works
    assert Notification.objects.count() == 1


@pytest.mark.django_db
def test_a_key_of_another_channel_is_a_conflict(robot, queued):
    services.enqueue(dingtalk(robot), message(), key="k")
    with pytest.raises(services.IdempotencyConflict):
        services.enqueue(dingtalk(robot), message(), key="k")


@pytest.mark.django_db
def test_a_disabled_channel_records_the_notification_as_dead(robot, queued):
    row = services.enqueue(dingtalk(robot, enabled=False), message(), key="k")
    assert (row.state, row.last_error) == ("dead", "channel disabled")
    assert services.deliver(row.pk) is None and robot.requests == []


def test_message_validates_severity():
    with pytest.raises(ValueError, match="severity"):
        Message(title="x", severity="fatal")
    assert Message.from_dict(message(mentions=["1"]).as_dict()) == message(mentions=["1"])


# --- retries -----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_errcode_failure_is_retried_with_backoff(robot, queued, settings,
                                                 django_capture_on_commit_callbacks):
    settings.OPSPLANE_NOTIFY_RETRY_SECONDS = 10
    robot.answer(*SIGN_MISMATCH)
    row = services.enqueue(dingtalk(robot), message(), key="k")
    before = timezone.now()
    with django_capture_on_commit_callbacks(execute=True):
        services.deliver(row.pk)
    row.refresh_from_db()
    assert (row.state, row.attempts, row.provider_code) == ("failed", 1, "310000")
    delay = (row.next_attempt_at - before).total_seconds()
    assert 5 <= delay <= 10.5  # 10 s with equal jitter: between half and all of it
    [(name, pk, countdown)] = queued
    assert (name, pk) == ("deliver", row.pk) and 5 <= countdown <= 10

    assert services.deliver(row.pk) is None  # not due yet: a early task changes nothing
    make_due(row)
    services.deliver(row.pk)
    row.refresh_from_db()
    assert (row.state, row.attempts, row.last_error, row.provider_code) == ("sent", 2, "", "0")
    assert [(a.number, a.ok, a.provider_code) for a in row.attempt_set.all()] == [
        (1, False, "310000"), (2, True, "0")]
    assert len(robot.requests) == 2


def test_backoff_doubles_with_equal_jitter_up_to_the_cap(settings, monkeypatch):
    settings.OPSPLANE_NOTIFY_RETRY_SECONDS = 10
    settings.OPSPLANE_NOTIFY_RETRY_MAX_SECONDS = 600
    monkeypatch.setattr(services.random, "uniform", lambda low, high: high)
    assert [services.backoff(n) for n in (1, 2, 3, 4, 7, 8, 20)] == [
        10, 20, 40, 80, 600, 600, 600]
    monkeypatch.setattr(services.random, "uniform", lambda low, high: low)
    assert [services.backoff(n) for n in (1, 2, 3)] == [5, 10, 20]
    assert services.backoff(1, throttled=True) == 60


@pytest.mark.django_db
def test_a_robot_that_says_too_fast_is_left_alone_longer(robot, queued):
    robot.answer(200, {"errcode": 130101, "errmsg": "send too fast"})
    row = services.enqueue(dingtalk(robot), message(), key="k")
    services.deliver(row.pk)
    row.refresh_from_db()
    assert row.state == "failed"
    assert (row.next_attempt_at - timezone.now()).total_seconds() > 55


@pytest.mark.django_db
def test_gives_up_after_the_last_attempt(robot, queued, settings):
    settings.OPSPLANE_NOTIFY_MAX_ATTEMPTS = 3
    robot.default = (500, "down")
    channel = dingtalk(robot)
    row = services.enqueue(channel, message(), key="k")
    dead_before = notify_metrics.dead.labels("dingtalk")._value.get()
    for _attempt in range(5):
        make_due(row)
        services.deliver(row.pk)
    row.refresh_from_db()
    assert (row.state, row.attempts, row.provider_code) == ("dead", 3, "500")
    assert len(robot.requests) == 3 and row.attempt_set.count() == 3
    assert notify_metrics.dead.labels("dingtalk")._value.get() == dead_before + 1

    services.retry(row, by=make_admin())  # an admin tries again: a fresh set of attempts
    row.refresh_from_db()
    assert (row.state, row.attempts) == ("pending", 0)


def make_admin():
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_user("admin-x", is_superuser=True)
    return user


@pytest.mark.django_db(transaction=True)
def test_concurrent_deliveries_of_one_row_send_once(robot, queued):
    robot.delay = 0.3  # the first send is in flight while the others try
    row = services.enqueue(dingtalk(robot), message(), key="k")
    start = threading.Barrier(4)

    def deliver():
        try:
            start.wait()
            services.deliver(row.pk)
        finally:
            connection.close()

    threads = [threading.Thread(target=deliver) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(robot.requests) == 1
    row.refresh_from_db()
    assert (row.state, row.attempts, row.attempt_set.count()) == ("sent", 1, 1)


# --- rate budget and digests ---------------------------------------------------------------


def test_budget_windows(clock):
    assert budget.take(9001, [(2, 10)])[:2] == (True, 0.0)
    clock.now += 3
    assert budget.take(9001, [(2, 10)])[:2] == (True, 0.0)
    clock.now += 1
    granted, wait, _member = budget.take(9001, [(2, 10)])
    assert not granted and wait == pytest.approx(6)  # the first send leaves the window
    clock.now += 6.01
    assert budget.take(9001, [(2, 10)])[0]
    # several windows: 2 a second and 3 a minute
    windows = [(2, 1), (3, 60)]
    assert budget.take(9002, windows)[0] and budget.take(9002, windows)[0]
    assert budget.take(9002, windows)[1] == pytest.approx(1)
    clock.now += 1.01
    assert budget.take(9002, windows)[0]
    clock.now += 1.01
    assert budget.take(9002, windows)[1] == pytest.approx(60 - 2.02)
    assert budget.take(9003, [])[:2] == (True, 0.0)  # no budget: never waits


@pytest.mark.django_db
def test_a_storm_is_sent_within_budget_and_the_rest_in_one_digest(robot, queued, clock):
    channel = dingtalk(robot)  # DingTalk's default budget: 20 a minute
    rows = [services.enqueue(channel, message(n, severity="critical" if n == 30 else "warning",
                                              link=f"https://ops.example/i/{n}"),
                             key=f"storm:{n}") for n in range(1, 51)]
    for row in rows:
        services.deliver(row.pk)
    assert len(robot.requests) == 20
    states = dict(Notification.objects.values_list("pk", "state"))
    assert [states[r.pk] for r in rows] == ["sent"] * 20 + ["held"] * 30
    flushes = [call for call in queued if call[0] == "flush"]
    assert len(flushes) == 1 and flushes[0][1] == channel.pk
    assert flushes[0][2] == pytest.approx(60)  # when the first send leaves the window

    clock.now += 30
    assert services.flush(channel.pk) == pytest.approx(30)  # still spent: nothing sent
    assert len(robot.requests) == 20

    clock.now += 30.5
    assert services.flush(channel.pk) == 0
    assert len(robot.requests) == 21
    digest = Notification.objects.get(is_digest=True)
    assert digest.state == "sent" and digest.attempts == 1
    folded = Notification.objects.filter(digest=digest)
    assert sorted(folded.values_list("pk", flat=True)) == [r.pk for r in rows[20:]]
    assert set(folded.values_list("state", flat=True)) == {"folded"}
    # nothing lost: every row was sent or went out in the digest
    assert Notification.objects.filter(is_digest=False).exclude(
        state__in=["sent", "folded"]).count() == 0

    body = robot.requests[-1].json["markdown"]
    assert body["title"] == "+30 more notifications"
    text = body["text"]
    assert "- **CRITICAL** [alert 30](https://ops.example/i/30)" in text
    assert "- **WARNING** [alert 21](https://ops.example/i/21)" in text
    assert "alert 20]" not in text  # sent on its own, not in the digest
    assert "… and 10 more" in text  # 20 lines listed, then the count of the rest
    assert digest.payload["severity"] == "critical"
    assert digest.payload["data"]["count"] == 30
    assert [item["id"] for item in digest.payload["data"]["items"]] == [r.pk for r in rows[20:]]


@pytest.mark.django_db
def test_a_digest_has_a_line_per_digest_key(robot, queued, clock):
    channel = dingtalk(robot, rate_budget="1/60s")
    keys = ["a", "b", "a", "c", "a", "b", "a"]  # the first is sent, the rest held
    rows = [services.enqueue(channel, message(title=f"incident {key} round {n}",
                                              digest_key=f"incident:{key}",
                                              mentions=[f"1380000000{n % 2}"]),
                             key=f"k{n}") for n, key in enumerate(keys)]
    for row in rows:
        services.deliver(row.pk)
    clock.now += 61
    services.flush(channel.pk)
    body = robot.requests[-1].json
    assert body["markdown"]["title"] == "+6 more notifications"
    lines = [line for line in body["markdown"]["text"].splitlines() if line.startswith("- ")]
    assert lines == ["- **INFO** incident b round 5 (×2)", "- **INFO** incident a round 6 (×3)",
                     "- **INFO** incident c round 3"]  # in order of first appearance
    assert body["at"]["atMobiles"] == ["13800000001", "13800000000"]


@pytest.mark.django_db
def test_one_held_row_goes_out_as_itself(robot, queued, clock):
    channel = dingtalk(robot, rate_budget="1/10s")
    first, second = (services.enqueue(channel, message(n), key=f"k{n}") for n in (1, 2))
    services.deliver(first.pk)
    services.deliver(second.pk)
    assert Notification.objects.get(pk=second.pk).state == "held"
    clock.now += 10.5
    services.flush(channel.pk)
    second.refresh_from_db()
    assert second.state == "sent" and not Notification.objects.filter(is_digest=True).exists()
    assert robot.requests[-1].json["markdown"]["title"] == "alert 2"


@pytest.mark.django_db
def test_new_rows_join_the_held_ones_until_the_digest_goes(robot, queued, clock):
    channel = dingtalk(robot, rate_budget="2/10s")
    rows = [services.enqueue(channel, message(n), key=f"k{n}") for n in range(1, 6)]
    for row in rows[:3]:
        services.deliver(row.pk)
    assert len(robot.requests) == 2  # the third is held
    clock.now += 10.5  # the budget is back, and a new row comes before the flush task
    services.deliver(rows[3].pk)
    assert len(robot.requests) == 3
    digest = Notification.objects.get(is_digest=True)
    assert sorted(digest.folded.values_list("pk", flat=True)) == [rows[2].pk, rows[3].pk]
    services.deliver(rows[4].pk)  # no row held any more: sent on its own
    assert len(robot.requests) == 4 and robot.requests[-1].json["markdown"]["title"] == "alert 5"


@pytest.mark.django_db
def test_a_digest_that_fails_is_retried_and_never_folded_again(robot, queued, clock):
    channel = dingtalk(robot, rate_budget="1/10s")
    rows = [services.enqueue(channel, message(n), key=f"k{n}") for n in range(3)]
    for row in rows:
        services.deliver(row.pk)
    clock.now += 10.5
    robot.answer(*SIGN_MISMATCH)
    services.flush(channel.pk)
    digest = Notification.objects.get(is_digest=True)
    assert digest.state == "failed" and digest.folded.count() == 2
    make_due(digest)
    services.deliver(digest.pk)  # the budget is spent again: the digest waits for it
    digest.refresh_from_db()
    assert digest.state == "pending" and digest.next_attempt_at > timezone.now()
    clock.now += 10.5
    make_due(digest)
    services.deliver(digest.pk)
    digest.refresh_from_db()
    assert digest.state == "sent" and digest.attempts == 2


# --- the sweep -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_sweep_requeues_what_was_left_behind(robot, queued, settings,
                                             django_capture_on_commit_callbacks):
    settings.OPSPLANE_NOTIFY_SWEEP_GRACE = 60
    channel = dingtalk(robot)
    long_ago = timezone.now() - timedelta(minutes=10)
    lost = services.enqueue(channel, message(1), key="lost")     # broker down at commit
    fresh = services.enqueue(channel, message(2), key="fresh")   # its task is on its way
    stuck = services.enqueue(channel, message(3), key="stuck")   # worker died mid-send
    busy = services.enqueue(channel, message(4), key="busy")     # a worker is on it
    other = dingtalk(robot)
    held = services.enqueue(other, message(5), key="held")       # its flush was lost
    Notification.objects.filter(pk=lost.pk).update(next_attempt_at=long_ago)
    Notification.objects.filter(pk=stuck.pk).update(state="sending", claimed_at=long_ago)
    Notification.objects.filter(pk=busy.pk).update(state="sending", claimed_at=timezone.now())
    Notification.objects.filter(pk=held.pk).update(state="held", next_attempt_at=long_ago)
    queued.clear()

    with django_capture_on_commit_callbacks(execute=True):
        assert services.sweep() == {"recovered": 1, "requeued": 1, "flushed": 1}
    stuck.refresh_from_db()
    assert (stuck.state, stuck.attempts) == ("failed", 1)
    assert stuck.attempt_set.get().error.startswith("interrupted")
    assert sorted(queued) == sorted([("deliver", lost.pk, None), ("deliver", stuck.pk, None),
                                     ("flush", other.pk, 0)])
    assert Notification.objects.get(pk=busy.pk).state == "sending"
    assert Notification.objects.get(pk=fresh.pk).state == "pending"

    states = dict(Notification.objects.values_list("pk", "state"))
    services.sweep()  # again: nothing changes state; queueing twice is harmless
    assert dict(Notification.objects.values_list("pk", "state")) == states
    for pk in (lost.pk, stuck.pk, lost.pk, stuck.pk):
        services.deliver(pk)
    services.flush(other.pk)
    services.flush(other.pk)
    assert len(robot.requests) == 3  # lost, stuck and held, once each
    assert set(Notification.objects.exclude(pk__in=[fresh.pk, busy.pk])
               .values_list("state", flat=True)) == {"sent"}


@pytest.mark.django_db
def test_a_claim_taken_over_by_the_sweep_cannot_finish_the_row(robot, queued):
    channel = dingtalk(robot)
    row = services.enqueue(channel, message(), key="k")
    claimed = services._claim(row.pk)  # a worker claims it, then stalls past the lease
    Notification.objects.filter(pk=row.pk).update(
        claimed_at=timezone.now() - timedelta(hours=1))
    services.sweep()
    services.deliver(row.pk)  # another worker sends it
    row.refresh_from_db()
    assert row.state == "sent"
    robot.answer(500, "late")
    services._send_claimed(claimed, channel)  # the stalled worker wakes up and fails
    row.refresh_from_db()
    assert row.state == "sent"  # its result is recorded, but it decides nothing
    assert [a.ok for a in row.attempt_set.all()] == [False, True, False]


# --- metrics -----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_metrics_count_by_kind_and_show_the_oldest_waiting_row(robot, queued, client,
                                                               settings):
    settings.OPSPLANE_NOTIFY_RETRY_SECONDS = 0.01
    sent_before = notify_metrics.sent.labels("dingtalk")._value.get()
    failed_before = notify_metrics.failed.labels("dingtalk")._value.get()
    retried_before = notify_metrics.retried.labels("dingtalk")._value.get()
    robot.answer(500, "x")
    row = services.enqueue(dingtalk(robot), message(), key="k")
    services.deliver(row.pk)
    services.deliver(row.pk)
    assert notify_metrics.sent.labels("dingtalk")._value.get() == sent_before + 1
    assert notify_metrics.failed.labels("dingtalk")._value.get() == failed_before + 1
    assert notify_metrics.retried.labels("dingtalk")._value.get() == retried_before + 1

    waiting = services.enqueue(dingtalk(robot), message(), key="w")
    Notification.objects.filter(pk=waiting.pk).update(
        created_at=timezone.now() - timedelta(minutes=5))
    body = client.get("/metrics").content.decode()
    oldest = next(line for line in body.splitlines()
                  if line.startswith("opsplane_notify_outbox_oldest_seconds "))
    assert 299 < float(oldest.split()[1]) < 330
    assert 'opsplane_notify_outbox_rows{state="pending"} 1.0' in body
    assert "opsplane_notify_sent_total" in body


# --- through a real worker on the real broker -----------------------------------------------


def test_the_worker_delivers_after_commit(celery_worker, robot):
    channel = dingtalk(robot)
    with transaction.atomic():
        row = services.enqueue(channel, message(), key="k")
    robot.wait_for(1)
    wait_until(lambda: Notification.objects.get(pk=row.pk).state == "sent")


def test_a_redelivered_task_sends_once(celery_worker, robot):
    robot.delay = 0.3
    channel = dingtalk(robot)
    with transaction.atomic():
        row = services.enqueue(channel, message(), key="k")
    results = [tasks.deliver.delay(row.pk) for _ in range(3)]  # redeliveries
    for result in results:
        result.get(timeout=20)
    wait_until(lambda: Notification.objects.get(pk=row.pk).state == "sent")
    time.sleep(0.3)
    assert len(robot.requests) == 1
    assert Attempt.objects.filter(notification=row).count() == 1


def test_the_worker_retries_provider_errors_with_backoff(celery_worker, robot, settings):
    settings.OPSPLANE_NOTIFY_RETRY_SECONDS = 0.4
    robot.answer(*SIGN_MISMATCH, times=2)
    channel = dingtalk(robot)
    with transaction.atomic():
        row = services.enqueue(channel, message(), key="k")
    wait_until(lambda: Notification.objects.get(pk=row.pk).state == "sent")
    row.refresh_from_db()
    assert row.attempts == 3 and len(robot.requests) == 3
    first, second, third = (r.at for r in robot.requests)
    assert second - first >= 0.2 - 0.05 and third - second >= 0.4 - 0.05  # half or more
    assert [a.provider_code for a in row.attempt_set.all()] == ["310000", "310000", "0"]


def test_the_sweep_delivers_what_was_committed_while_the_broker_was_down(
        celery_worker, robot, settings, monkeypatch):
    from kombu.exceptions import OperationalError

    def broker_down(*args, **kwargs):
        raise OperationalError("Error 111 connecting to the broker. Connection refused.")

    channel = dingtalk(robot)
    with monkeypatch.context() as outage:
        outage.setattr(tasks.deliver, "apply_async", broker_down)
        with transaction.atomic():
            row = services.enqueue(channel, message(), key="k")
    # the caller's commit stood, and nothing was sent
    assert Notification.objects.get(pk=row.pk).state == "pending"
    time.sleep(0.3)
    assert robot.requests == []

    settings.OPSPLANE_NOTIFY_SWEEP_GRACE = 0
    assert tasks.sweep.delay().get(timeout=20)["requeued"] == 1  # beat's task, on the worker
    robot.wait_for(1)
    wait_until(lambda: Notification.objects.get(pk=row.pk).state == "sent")


def test_a_failing_channel_does_not_block_another(celery_worker, settings):
    settings.OPSPLANE_NOTIFY_TIMEOUT = 0.5
    settings.OPSPLANE_NOTIFY_MAX_ATTEMPTS = 1
    with FakeProvider() as hanging, FakeProvider() as healthy:
        hanging.delay = 2.0
        bad = make_channel("webhook", url=f"{hanging.url}/hook")
        good = dingtalk(healthy)
        with transaction.atomic():
            stuck = services.enqueue(bad, message(0), key="bad")
            rows = [services.enqueue(good, message(n), key=f"good{n}") for n in range(3)]
        healthy.wait_for(3, timeout=10)
        wait_until(lambda: all(Notification.objects.get(pk=r.pk).state == "sent"
                               for r in rows))
        wait_until(lambda: Notification.objects.get(pk=stuck.pk).state == "dead")
        assert Notification.objects.get(pk=stuck.pk).last_error == "timed out"


def test_a_storm_through_the_worker_keeps_the_budget_and_loses_nothing(celery_worker, robot):
    channel = dingtalk(robot, rate_budget="20/3s")
    with transaction.atomic():
        rows = [services.enqueue(channel, message(n), key=f"storm:{n}") for n in range(50)]
    ids = [r.pk for r in rows]

    def settled():
        return not Notification.objects.exclude(state__in=["sent", "folded"]).exists()

    wait_until(settled, timeout=30)
    times = sorted(r.at for r in robot.requests)
    for i, at in enumerate(times):  # never more than 20 in any 3 seconds
        assert sum(1 for t in times[i:] if t - at < 3 - 0.05) <= 20
    sent_alone = Notification.objects.filter(pk__in=ids, state="sent").count()
    digests = Notification.objects.filter(is_digest=True, state="sent")
    folded = Notification.objects.filter(pk__in=ids, state="folded", digest__in=digests)
    assert sent_alone == 20 and sent_alone + folded.count() == 50  # nothing lost
    assert len(robot.requests) == 20 + digests.count()
    titles = [r.json["markdown"]["title"] for r in robot.requests]
    assert sum(int(t.split()[0][1:]) for t in titles if t.startswith("+")) == 30
