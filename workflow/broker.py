"""Chooses the dramatiq broker: Redis when configured, in-process otherwise.

Imported (and configured) before any actor is declared, as dramatiq binds actors to the
broker current at declaration time.
"""

from __future__ import annotations

import logging

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker

logger = logging.getLogger(__name__)

_configured: dramatiq.Broker | None = None


def configure(redis_url: str | None) -> dramatiq.Broker:
    """Makes the process-wide broker: RedisBroker for `redis_url`, else an in-process one."""
    global _configured
    broker: dramatiq.Broker
    if redis_url:
        broker = RedisBroker(url=redis_url)  # type: ignore[no-untyped-call]
    else:
        broker = StubBroker()
        broker.emit_after("process_boot")
    dramatiq.set_broker(broker)
    previous = _configured
    names = list(previous.actors) if previous is not None else []
    for actor_name in names:
        # Actors declared on an earlier broker (tests switch brokers) move to the new one.
        assert previous is not None
        actor = previous.get_actor(actor_name)
        actor.broker = broker
        broker.declare_actor(actor)
    _configured = broker
    return broker


def current() -> dramatiq.Broker:
    """The configured broker, configuring from the settings on first use."""
    if _configured is None:
        from storage.settings import get_settings

        return configure(get_settings().redis_url)
    return _configured


def is_in_process() -> bool:
    """Whether messages stay inside this process (the embedded default)."""
    return isinstance(current(), StubBroker)
