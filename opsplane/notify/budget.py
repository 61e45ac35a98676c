"""Per-channel rate budgets in Redis: a sliding-window log, shared by every worker.

Each channel has one sorted set of the sends it made (score = time). ``take()`` runs one
Lua script, so checking every window and recording the send is atomic across workers:
either the send fits in all of the channel's windows (``[(20, 60)]``: 20 a minute;
``[(5, 1), (100, 60)]``: 5 a second and 100 a minute) and is recorded, or nothing is
recorded and the answer says how long until it would fit.

A sliding log rather than a token bucket: a robot that blocks at "20 in any minute"
is kept under exactly that, never a burst of 40 across a bucket refill.
"""

import time
import uuid
from functools import lru_cache

import redis
from django.conf import settings

KEY_PREFIX = "opsplane:notify:budget:"

# KEYS[1]: the channel's log. ARGV: now, member, then (limit, period) pairs.
# Returns {1, "0"} when the send was recorded, {0, "<seconds to wait>"} when not.
TAKE = """
local now = tonumber(ARGV[1])
local longest = 0
for i = 3, #ARGV, 2 do
  local period = tonumber(ARGV[i + 1])
  if period > longest then longest = period end
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - longest)
local wait = 0
for i = 3, #ARGV, 2 do
  local limit = tonumber(ARGV[i])
  local period = tonumber(ARGV[i + 1])
  local since = '(' .. tostring(now - period)
  local count = redis.call('ZCOUNT', KEYS[1], since, '+inf')
  if count >= limit then
    -- the entry that has to leave this window before one more send fits in it
    local entry = redis.call('ZRANGEBYSCORE', KEYS[1], since, '+inf', 'WITHSCORES',
                             'LIMIT', count - limit, 1)
    local w = tonumber(entry[2]) + period - now
    if w > wait then wait = w end
  end
end
if wait > 0 then
  return {0, tostring(wait)}
end
redis.call('ZADD', KEYS[1], now, ARGV[2])
redis.call('PEXPIRE', KEYS[1], math.ceil(longest * 1000) + 1000)
return {1, '0'}
"""


def clock():
    """Seconds since the epoch. Tests replace this to move time by hand."""
    return time.time()


@lru_cache(maxsize=1)
def _client(url):
    return redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)


@lru_cache(maxsize=1)
def _script(url):
    return _client(url).register_script(TAKE)


def key(channel_id):
    return f"{KEY_PREFIX}{channel_id}"


def take(channel_id, windows, *, member=None):
    """Record one send for the channel if every window in ``windows`` has room.

    Returns ``(granted, wait_seconds, member)``: ``member`` identifies the recorded send
    (for ``refund``); ``wait_seconds`` is how long until a send would fit. No windows:
    always granted, nothing recorded."""
    if not windows:
        return True, 0.0, None
    member = member or uuid.uuid4().hex
    args = [repr(clock()), member]
    for limit, period in windows:
        args += [int(limit), float(period)]
    granted, wait = _script(settings.REDIS_URL)(keys=[key(channel_id)], args=args)
    return bool(granted), float(wait), member if granted else None


def refund(channel_id, member):
    """Forget a recorded send that was not made after all."""
    if member:
        _client(settings.REDIS_URL).zrem(key(channel_id), member)


def used(channel_id, period):
    """How many sends the channel made in the last ``period`` seconds (for pages)."""
    return _client(settings.REDIS_URL).zcount(key(channel_id), f"({clock() - period}", "+inf")


def client():
    return _client(settings.REDIS_URL)
