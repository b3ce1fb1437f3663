"""The Celery broker transport: kombu's Redis transport, with one Redis client per channel for publishing.

kombu's Redis channel builds a new ``redis.Redis`` client object for every command it sends outside the
consumer's event loop (``Channel.conn_or_acquire``), so for every task the web process publishes; building
one fills a table of response callbacks. The clients all share the channel's connection pool, and a
redis-py client is safe to share, so this channel keeps one and builds a new one only when the channel
replaces its pool (after a connection error). Consuming (the worker's asynchronous client) is unchanged.
A channel whose connection is closing answers with a connection error instead of kombu's AttributeError
(see ``_create_client``).

Selected by ``CELERY_BROKER_TRANSPORT`` in the settings; the broker URL stays ``redis://...``. It overrides
kombu's private ``Channel._create_client`` and reads ``Channel.pool``: kombu is pinned to one minor version
in pyproject.toml, and tests/test_launch_path_parts.py fails if those move.
"""

from __future__ import annotations

from typing import Any

import redis
from kombu.transport import redis as kombu_redis

_RedisChannel: Any = kombu_redis.Channel  # untyped: kombu's stubs do not know its private methods


class Channel(_RedisChannel):
    _publish_client: Any = None

    def _create_client(self, asynchronous: bool = False) -> Any:
        if getattr(self.connection, "client", None) is None:
            # The broker connection was lost and is being closed: kombu then still acknowledges finished tasks
            # through this channel, and building a client for it fails with an AttributeError that stops the
            # worker for good ("Unrecoverable error"). As a connection error, the worker logs it and reconnects
            # (the message stays unacknowledged; a redelivery finds the action already claimed).
            raise redis.ConnectionError("the broker connection is closed")
        if asynchronous:
            return super()._create_client(asynchronous=True)
        client = self._publish_client
        if client is None or client.connection_pool is not self.pool:
            client = self._publish_client = super()._create_client()
        return client


class Transport(kombu_redis.Transport):
    Channel = Channel
