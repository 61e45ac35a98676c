"""What was notified moves from the incident to each of its receivers (channels).

Every channel an open incident has notified is taken to have been told what the
incident last notified, so nothing is sent again after the upgrade."""

import django.db.models.deletion
from django.db import migrations, models


def forwards(apps, schema_editor):
    Incident = apps.get_model("alerts", "Incident")
    Notification = apps.get_model("alerts", "Notification")
    NotificationLog = apps.get_model("alerts", "NotificationLog")
    incidents = Incident.objects.filter(round__gt=0, last_notified_at__isnull=False) \
        .exclude(status="resolved")
    for incident in incidents.iterator(chunk_size=500):
        last = {}  # channel name -> its latest notification
        for row in Notification.objects.filter(incident=incident).order_by("round", "pk"):
            last[row.channel_name] = row
        logs = [NotificationLog(
            incident=incident, receiver=name, firing=incident.notified_firing,
            resolved=incident.notified_resolved, notified_at=incident.last_notified_at,
            round=row.round, outbox_id=row.outbox_id) for name, row in last.items()]
        NotificationLog.objects.bulk_create(logs or [NotificationLog(
            incident=incident, receiver="", firing=incident.notified_firing,
            resolved=incident.notified_resolved, notified_at=incident.last_notified_at,
            round=incident.round)])


def backwards(apps, schema_editor):
    Incident = apps.get_model("alerts", "Incident")
    NotificationLog = apps.get_model("alerts", "NotificationLog")
    for log in NotificationLog.objects.order_by("incident_id", "notified_at", "pk"):
        Incident.objects.filter(pk=log.incident_id).update(
            notified_firing=log.firing, notified_resolved=log.resolved)


class Migration(migrations.Migration):

    dependencies = [
        ('alerts', '0002_escalation'),
    ]

    operations = [
        migrations.CreateModel(
            name='NotificationLog',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('receiver', models.CharField(blank=True, max_length=100)),
                ('firing', models.JSONField(blank=True, default=list)),
                ('resolved', models.JSONField(blank=True, default=list)),
                ('notified_at', models.DateTimeField()),
                ('round', models.PositiveIntegerField()),
                ('outbox_id', models.BigIntegerField(blank=True, null=True)),
                ('incident', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='receiver_logs', to='alerts.incident')),
            ],
            options={
                'constraints': [models.UniqueConstraint(fields=('incident', 'receiver'), name='alerts_notificationlog_unique')],
            },
        ),
        migrations.RunPython(forwards, backwards),
        migrations.RemoveField(
            model_name='incident',
            name='notified_firing',
        ),
        migrations.RemoveField(
            model_name='incident',
            name='notified_resolved',
        ),
    ]
