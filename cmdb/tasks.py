from celery import shared_task
from django.contrib.auth import get_user_model

from cmdb import services
from cmdb.models import Host

CHUNK = 200


@shared_task(name="cmdb.gather_facts", soft_time_limit=900, time_limit=960)
def gather_facts(host_ids, user_id=None):
    """Read-only on the hosts, so a redelivered task is harmless."""
    user = get_user_model().objects.filter(pk=user_id).first() if user_id else None
    if user_id and user is None:
        return
    services.gather_facts(Host.objects.filter(pk__in=host_ids, enabled=True), by=user)


@shared_task(name="cmdb.gather_facts_scheduled", soft_time_limit=60)
def gather_facts_scheduled():
    """Beat: refresh every enabled host's facts, in chunks the workers share."""
    ids = list(Host.objects.filter(enabled=True).values_list("id", flat=True))
    for start in range(0, len(ids), CHUNK):
        gather_facts.delay(ids[start:start + CHUNK])
