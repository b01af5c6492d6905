"""The processes redesk runs: the server (`redesk run`), a queue worker and the scheduler.

Each is assembled here: the channels started from the registry, the embedded worker and
scheduler of the default deployment, uvicorn and the signals that stop it. The CLI
(admin_scripts/cli.py) checks the settings and the database, then calls one of `serve`,
`work` or `schedule`.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import TYPE_CHECKING, Any

from bot.channels.base import ChannelError, Say, Stoppable
from storage.settings import Settings

if TYPE_CHECKING:
    from dramatiq import Worker

    from bot.scheduler import Watch


def serve(settings: Settings, say: Say) -> None:
    """Runs the server until SIGINT/SIGTERM: channels, web desk (/desk), health and metrics;
    on the embedded default (no REDESK_REDIS_URL) the worker and scheduler run inside it.

    Raises:
        ChannelError: a channel cannot start as configured (nothing is left running).
    """
    from workflow import broker

    broker.configure(settings.redis_url)
    import uvicorn

    from bot import actors, wake  # noqa: F401  (actors declares the actors on the broker)
    from bot.app import create_app

    embedded = broker.is_in_process()
    banner(settings, embedded=embedded, say=say)
    started = start_channels(settings, say)
    worker = None
    watch = None
    stop = threading.Event()
    if embedded:
        worker = _start_worker(settings)
        threading.Thread(
            target=_schedule, args=(settings, stop), name="scheduler", daemon=True
        ).start()
    else:
        watch = _watch_scheduler(settings)
    asgi = create_app()

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            # Long polls and live streams answer now instead of holding the shutdown.
            asgi.state.stopping = True
            wake.wake_all()
            super().handle_exit(sig, frame)

    # proxy_headers=False: the client's address is decided in one place, by
    # REDESK_TRUSTED_PROXIES (bot.http.client_address), not also by uvicorn's own default.
    server = Server(
        uvicorn.Config(
            asgi,
            host=settings.host,
            port=settings.port,
            log_level="warning",
            timeout_graceful_shutdown=30,
            proxy_headers=False,
        )
    )
    # uvicorn re-raises SIGINT/SIGTERM after its graceful shutdown with the handlers it found;
    # with the default ones the process would die there, before the embedded worker is stopped.
    # The handlers found are the server's own: a signal that comes before uvicorn installs its
    # handlers (inside server.run) still stops it, where one that did nothing would be lost and
    # the server would run on; one re-raised after the shutdown changes nothing.
    previous = {
        signum: signal.signal(signum, server.handle_exit)
        for signum in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        server.run()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        stop.set()
        if watch is not None:
            watch.stop()
        for running in started:
            running.stop()
        if worker is not None:
            worker.stop()


def work(settings: Settings, say: Say) -> None:
    """Runs a queue worker on REDESK_REDIS_URL until SIGINT/SIGTERM."""
    from workflow import broker

    assert settings.redis_url
    broker.configure(settings.redis_url)
    from bot import actors  # noqa: F401

    running = _start_worker(settings)
    say(f"redesk worker: {settings.worker_threads} threads on {settings.redis_url}")
    watch = _watch_scheduler(settings)
    wait_for_signal()
    watch.stop()
    running.stop()


def schedule(settings: Settings, say: Say) -> None:
    """Runs the scheduler until SIGINT/SIGTERM: the sweep of unfinished work and the tick of
    reminders, escalations, the digest and auto-close, while it holds the lease in Redis."""
    from workflow import broker

    assert settings.redis_url
    broker.configure(settings.redis_url)
    from bot import actors  # noqa: F401
    from bot.scheduler import RedisLease

    stop = threading.Event()
    thread = threading.Thread(
        target=_schedule, args=(settings, stop, RedisLease(settings.redis_url)), daemon=True
    )
    thread.start()
    say(
        f"redesk scheduler: a sweep every {settings.sweep_interval:g} s, a tick "
        f"every {settings.tick_interval:g} s (acts while it holds the lease)"
    )
    wait_for_signal()
    stop.set()
    thread.join(timeout=5)


def banner(settings: Settings, *, embedded: bool, say: Say) -> None:
    """What `redesk run` serves and where its data is, each URL and path on its own line."""
    base = f"http://{settings.host}:{settings.port}"
    say(f"redesk listens on {base}")
    say(f"web desk: {base}/desk")
    if settings.metrics_token:
        say(f"metrics: {base}/metrics (REDESK_METRICS_TOKEN as Bearer token)")
    elif settings.env == "production":
        say(
            f"warning: metrics: {base}/metrics has no REDESK_METRICS_TOKEN: it answers only "
            "clients on this machine; keep the reverse proxy from routing /metrics, or set "
            "the token"
        )
    else:
        say(f"metrics: {base}/metrics (open to whoever reaches the port)")
    say(f"database: {safe_url(settings.database_url)}")
    say(f"media: {settings.media_dir}")
    say(
        "queue: "
        + (
            "in-process worker and scheduler (embedded)"
            if embedded
            else "Redis; run `redesk worker` and `redesk scheduler`"
        )
    )


def start_channels(settings: Settings, say: Say) -> list[Stoppable]:
    """Starts every channel that is on (token checks, webhooks, pollers), each saying its
    line; prints the line of each one that is off.

    Raises:
        ChannelError: a channel cannot start; those started before it are stopped.
    """
    from bot import actors
    from bot.channels.registry import CHANNELS
    from bot.runtime import get_runtime

    runtime = get_runtime()
    started: list[Stoppable] = []
    for channel in CHANNELS:
        if not channel.enabled(settings):
            say(f"channel {channel.name}: {channel.describe(settings)}")
            continue
        try:
            running = channel.start(runtime, say, actors.enqueue_inbound)
        except ChannelError:
            for other in started:
                other.stop()
            raise
        if running is not None:
            started.append(running)
    return started


def _start_worker(settings: Settings) -> Worker:
    from dramatiq import Worker

    from workflow import broker

    running = Worker(broker.current(), worker_threads=settings.worker_threads, worker_timeout=100)
    running.start()
    return running


def _schedule(settings: Settings, stop: threading.Event, leadership: Any = None) -> None:
    from bot import actors
    from bot.scheduler import Alone, run

    run(
        stop=stop,
        leadership=leadership or Alone(),
        jobs=[
            (settings.sweep_interval, actors.sweep.send),
            (settings.tick_interval, actors.tick.send),
        ],
    )


def _watch_scheduler(settings: Settings) -> Watch:
    """Starts the look-out for a `redesk scheduler` (production's shape relies on one)."""
    from bot.scheduler import Watch

    assert settings.redis_url
    watch = Watch(settings.redis_url)
    watch.start()
    return watch


def wait_for_signal() -> None:
    """Blocks until SIGINT or SIGTERM."""
    done = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: done.set())
    done.wait()


def safe_url(url: str) -> str:
    """A database URL without its password."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
