"""redesk benchmarks: `python -m bench [web|telegram-*|wechat-ingest|admin|all]`.

- web: POST /api/web/messages against a real `redesk run` (bench/web.py);
- telegram-ingest: POST /telegram/webhook throughput and latency (PostgreSQL + Redis) against a
  static file on the same server and a bare app in the same uvicorn configuration;
- wechat-ingest: POST /wechat in safe mode against the Telegram webhook and the bare app in the
  same run (closed loop), and its p99 latency at steady offered rates (open loop), against
  WeChat's 5-second deadline;
- telegram-e2e: resident message -> receipt at the fake Bot API, at steady offered rates, with
  2 `redesk worker` processes;
- telegram-delivery: 3,000 notifications to 300 chats through the limit-enforcing fake Bot API;
- admin: `redesk stats` over 1,000,000 generated requests held across 1,050 centres against
  the same figures in hand-written SQL run by psql, and `redesk export` of all of them
  (bench/admin.py);
- tick: ms per tick of the reminders with nothing due, 10,000 against 100,000 open requests,
  and with 100 and 1,000 due (bench/tick.py).

Without a subcommand (`make bench`) all of them run with their defaults (a few minutes each;
admin about 19 minutes).
Results are printed as Markdown; docs/benchmarks.md keeps them with the machine and date.
"""

from __future__ import annotations

import argparse
import sys
import time

from bench import common


def _web(args: argparse.Namespace) -> None:
    """POST /api/web/messages and the receipts over the long poll."""
    from bench import web

    print("\n### web intake\n")
    web.run(args.identities, args.messages, args.concurrency, args.workers)


def _ingest(args: argparse.Namespace) -> None:
    """POST /telegram/webhook against a static file and a bare app."""
    from bench import telegram

    print("\n### telegram ingest: POST /telegram/webhook\n")
    print(
        f"PostgreSQL + Redis, webhook mode, no workers running (jobs wait in Redis); "
        f"closed loop, {args.seconds:g} s per endpoint after a 3 s warm-up.\n"
    )
    telegram.print_ingest(
        telegram.ingest(seconds=args.seconds, concurrency=args.concurrency, chats=args.chats)
    )


def _wechat_ingest(args: argparse.Namespace) -> None:
    """POST /wechat (safe mode) against the Telegram webhook and a bare app; p99 at steady
    rates."""
    from bench import wechat

    print("\n### wechat ingest: POST /wechat (safe mode)\n")
    print(
        f"PostgreSQL + Redis, WeChat in safe mode and Telegram in webhook mode, no workers "
        f"running (jobs wait in Redis); closed loop, {args.seconds:g} s per endpoint after a "
        f"3 s warm-up; open loop, {args.rate_seconds:g} s per rate.\n"
    )
    rates = [float(rate) for rate in args.rates.split(",") if rate.strip()] or None
    wechat.print_report(
        wechat.ingest(
            seconds=args.seconds,
            concurrency=args.concurrency,
            openids=args.openids,
            chats=args.chats,
            rates=rates,
            rate_seconds=args.rate_seconds,
            max_connections=args.max_connections,
            refine=not args.no_refine,
        )
    )


def _e2e(args: argparse.Namespace) -> None:
    """Resident message -> receipt at steady offered rates."""
    from bench import telegram

    print("\n### telegram end to end: resident message -> receipt\n")
    rates = [float(r) for r in args.rates.split(",")] if args.rates else None
    trials = telegram.end_to_end_series(
        rates=rates,
        seconds=args.seconds,
        overload_seconds=args.overload_seconds,
        chats=args.chats,
        workers=args.workers,
        drain=args.drain,
    )
    telegram.print_trials(trials, args.workers, args.chats)
    held = [trial.rate for trial in trials if trial.sustained]
    print(
        f"\nHighest steady rate sustained: {max(held):g} msg/s."
        if held
        else "\nNo rate tried was sustained."
    )
    for trial in trials:
        telegram.print_samples(trial)


def _delivery(args: argparse.Namespace) -> None:
    """Notifications through the limit-enforcing fake Bot API."""
    from bench import telegram

    print("\n### telegram delivery: notifications through the limits\n")
    telegram.print_delivery(
        telegram.delivery(
            notifications=args.notifications,
            chats=args.chats,
            workers=args.workers,
            timeout=args.timeout,
        )
    )


def _admin(args: argparse.Namespace) -> None:
    """redesk stats and redesk export over a million generated requests."""
    from bench import admin

    print("\n### admin: redesk stats and redesk export\n")
    admin.main_from_args(args)


def _tick(args: argparse.Namespace) -> None:
    """ms per tick of the reminders with nothing due, by the number of open requests."""
    from bench import tick

    print("\n### tick: the reminders with many open requests\n")
    tick.main_from_args(args)


def _add_web(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--identities", type=int, default=50)
    parser.add_argument("--messages", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="separate `redesk worker` processes (needs REDESK_BENCH_REDIS_URL "
        "and REDESK_BENCH_DATABASE_URL)",
    )


def _add_ingest(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--seconds",
        type=float,
        default=15.0,
        help="measured seconds per endpoint at full concurrency",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=40,
        help="concurrent connections (Telegram's default max_connections: 40)",
    )
    parser.add_argument("--chats", type=int, default=1000)


def _add_wechat_ingest(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--seconds",
        type=float,
        default=15.0,
        help="measured seconds per endpoint at full concurrency (closed loop)",
    )
    parser.add_argument(
        "--concurrency", type=int, default=40, help="concurrent connections of the closed loop"
    )
    parser.add_argument(
        "--openids", type=int, default=1000, help="distinct WeChat users the callbacks come from"
    )
    parser.add_argument(
        "--chats", type=int, default=1000, help="distinct Telegram chats of the webhook comparison"
    )
    parser.add_argument(
        "--rates",
        default="",
        help="comma-separated steady rates (callbacks/s) of the open loop, "
        "climbed until the first one not sustained; default: 50, 75, 90, "
        "100 and 110 %% of the closed-loop throughput of the same run",
    )
    parser.add_argument(
        "--rate-seconds", type=float, default=8.0, help="seconds of load per open-loop rate"
    )
    parser.add_argument(
        "--max-connections",
        type=int,
        default=40,
        help="most callbacks in flight at once in the open loop",
    )
    parser.add_argument(
        "--no-refine",
        action="store_true",
        help="do not try a rate between the last sustained and the first not",
    )


def _add_e2e(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--rates",
        default="",
        help="comma-separated offered rates (msg/s); default: 200, then a "
        "ladder of steady rates 5 apart from the capacity 200/s showed",
    )
    parser.add_argument(
        "--seconds", type=float, default=20.0, help="seconds of load of a steady trial"
    )
    parser.add_argument(
        "--overload-seconds",
        type=float,
        default=10.0,
        help="seconds of load of the 200/s trial (default series only)",
    )
    parser.add_argument("--chats", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--drain",
        type=float,
        default=20.0,
        help="seconds to wait for the rest of the receipts after the load",
    )


def _add_delivery(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--notifications", type=int, default=3000)
    parser.add_argument("--chats", type=int, default=300)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--timeout",
        type=float,
        default=170.0,
        help="stop waiting after this many seconds and report what was sent",
    )


def _add_admin(parser: argparse.ArgumentParser) -> None:
    from bench import admin

    admin.add_arguments(parser)


def _add_tick(parser: argparse.ArgumentParser) -> None:
    from bench import tick

    tick.add_arguments(parser)


COMMANDS = {
    "web": (_add_web, _web),
    "telegram-ingest": (_add_ingest, _ingest),
    "wechat-ingest": (_add_wechat_ingest, _wechat_ingest),
    "telegram-e2e": (_add_e2e, _e2e),
    "telegram-delivery": (_add_delivery, _delivery),
    "admin": (_add_admin, _admin),
    "tick": (_add_tick, _tick),
}


def main(argv: list[str] | None = None) -> int:
    """Runs one benchmark, or all of them."""
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=(__doc__ or "").split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command")
    for name, (add, run) in COMMANDS.items():
        add(sub.add_parser(name, help=(run.__doc__ or "").strip()))
    sub.add_parser("all", help="every benchmark with its defaults (the default)")
    args = parser.parse_args(argv)
    command = args.command or "all"
    facts = common.machine_facts()
    started = time.monotonic()
    if command == "all":
        for name, (add, run) in COMMANDS.items():
            defaults = argparse.ArgumentParser()
            add(defaults)
            begun = time.monotonic()
            run(defaults.parse_args([]))
            print(f"\n({name}: {time.monotonic() - begun:.0f} s)", file=sys.stderr)
    else:
        COMMANDS[command][1](args)
    common.print_facts(facts)
    print(f"(took {time.monotonic() - started:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
