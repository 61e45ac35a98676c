"""Websockets through the real Redis channel layer, authenticated as a browser is:
by the session cookie of a login."""

import pytest
from channels.db import database_sync_to_async
from django.test import Client

from opsplane import live

pytestmark = pytest.mark.django_db(transaction=True)

@database_sync_to_async
def _session_cookie(user):
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


async def test_logged_in_user_receives_what_is_published_for_them(make_user, websockets):
    user = await database_sync_to_async(make_user)("operator")
    communicator = await websockets("/ws/live/", user)
    connected, _ = await communicator.connect()
    assert connected
    await live.apublish_to_user(user.pk, {"type": "notice", "text": "change 7 approved"})
    assert await communicator.receive_json_from(timeout=5) == {
        "type": "notice", "text": "change 7 approved",
    }
    await communicator.send_json_to({"type": "ping"})
    assert await communicator.receive_json_from(timeout=5) == {"type": "pong"}
    await communicator.disconnect()


async def test_events_for_another_user_do_not_arrive(make_user, websockets):
    alice = await database_sync_to_async(make_user)("operator")
    bob = await database_sync_to_async(make_user)("operator")
    communicator = await websockets("/ws/live/", alice)
    assert (await communicator.connect())[0]
    await live.apublish_to_user(bob.pk, {"type": "notice", "text": "for bob"})
    assert await communicator.receive_nothing(timeout=0.5)
    await communicator.disconnect()


async def test_anonymous_user_is_refused(websockets):
    communicator = await websockets("/ws/live/")
    connected, code = await communicator.connect()
    assert not connected
    assert code == 4401


async def test_deactivated_user_is_refused(make_user, websockets):
    user = await database_sync_to_async(make_user)("operator")
    cookie = await _session_cookie(user)
    user.is_active = False
    await database_sync_to_async(user.save)()
    communicator = await websockets("/ws/live/", headers=[(b"cookie", cookie)])
    connected, _ = await communicator.connect()
    assert not connected


async def test_foreign_origin_is_refused(make_user, websockets):
    user = await database_sync_to_async(make_user)("operator")
    communicator = await websockets("/ws/live/", user, origin=b"https://evil.example")
    connected, _ = await communicator.connect()
    assert not connected
