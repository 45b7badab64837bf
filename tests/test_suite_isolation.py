"""The suite keeps to itself: its Redis is a server it started, never one it found running."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

import redis


def test_the_suites_redis_is_a_server_of_its_own(redis_url: str) -> None:
    theirs = os.environ.get("REDIS_URL") or "redis://localhost:6379/0"
    ours = urlsplit(redis_url)
    assert ours.hostname == "127.0.0.1"
    assert ours.port not in (None, 6379, urlsplit(theirs).port or 6379)
    # Started by the suite, with nothing saved: a developer's server would keep its data on disk.
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.config_get("save") == {"save": ""}
        directory = client.config_get("dir")["dir"]
        assert directory is not None
        assert directory.rsplit("/", 1)[-1].startswith("bridge-redis-")
    finally:
        client.close()
