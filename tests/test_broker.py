"""Choosing the broker: in-process by default, Redis when configured; actors follow it."""

from __future__ import annotations

from collections.abc import Iterator

import dramatiq
import pytest
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker

from bot import actors
from workflow import broker as broker_module

#: Every actor bot.actors declares, by name, with its queue.
ACTORS = {"handle_inbound": "inbound", "deliver": "outbound", "sweep": "maintenance"}


#: Redis brokers made by the current test, whose connections are closed after it.
_opened: list[RedisBroker] = []


def use(redis_url: str | None) -> dramatiq.Broker:
    """Configures the process broker (remembering Redis ones to close their connections)."""
    broker = broker_module.configure(redis_url)
    if isinstance(broker, RedisBroker):
        _opened.append(broker)
    return broker


@pytest.fixture(autouse=True)
def in_process_afterwards() -> Iterator[None]:
    """Whatever a test configures, the rest of the run gets the in-process broker back."""
    yield
    broker_module.configure(None)
    while _opened:
        # RedisBroker.close() leaves its connection pool open.
        _opened.pop().client.connection_pool.disconnect()


def declared_on(broker: dramatiq.Broker) -> dict[str, str]:
    """The actors declared on a broker, with their queues."""
    return {name: broker.get_actor(name).queue_name for name in broker.get_declared_actors()}


def test_without_redis_the_broker_is_in_process() -> None:
    # When no Redis is configured
    broker = use(None)

    # Then messages stay in this process, on the broker everyone uses
    assert isinstance(broker, StubBroker)
    assert broker_module.is_in_process()
    assert broker_module.current() is broker
    assert dramatiq.get_broker() is broker
    assert actors.handle_inbound.broker is broker


def test_with_redis_the_already_declared_actors_move_to_a_redis_broker(redis_url: str) -> None:
    # Given the actors declared on the in-process broker
    before = use(None)
    assert ACTORS.items() <= declared_on(before).items()

    # When Redis is configured
    broker = use(redis_url)

    # Then it is a Redis broker, and every actor sends through it
    assert isinstance(broker, RedisBroker)
    assert not broker_module.is_in_process()
    assert broker_module.current() is broker
    assert dramatiq.get_broker() is broker
    for actor in (actors.handle_inbound, actors.deliver, actors.sweep):
        assert actor.broker is broker
    assert ACTORS.items() <= declared_on(broker).items()
    assert set(ACTORS.values()) <= broker.get_declared_queues()


def test_a_message_sent_with_redis_configured_is_stored_in_redis(redis_url: str) -> None:
    # Given Redis configured
    use(redis_url)
    client = redis.Redis.from_url(redis_url)

    # When an actor is sent a message
    actors.handle_inbound.send("web", "chat-1")

    # Then Redis holds it, with its arguments
    try:
        stored = client.hvals("dramatiq:inbound.msgs")
    finally:
        client.close()
    assert len(stored) == 1
    assert isinstance(stored[0], bytes)
    message = dramatiq.Message.decode(stored[0])
    assert message.actor_name == "handle_inbound"
    assert list(message.args) == ["web", "chat-1"]


def test_back_in_process_messages_no_longer_reach_redis(redis_url: str) -> None:
    # Given Redis configured, then the in-process broker again
    use(redis_url)
    broker = use(None)

    # When an actor is sent a message
    actors.deliver.send(7)

    # Then it waits in this process, and Redis saw nothing
    assert actors.deliver.broker is broker
    assert broker.queues["outbound"].qsize() == 1
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.hlen("dramatiq:outbound.msgs") == 0
    finally:
        client.close()


def test_switching_brokers_repeatedly_keeps_every_actor(redis_url: str) -> None:
    for url in (redis_url, None, redis_url, redis_url, None):
        broker = use(url)

        assert ACTORS.items() <= declared_on(broker).items()
        assert actors.sweep.broker is broker
