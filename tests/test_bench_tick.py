"""A smoke run of the tick benchmark's code path (bench/tick.py) at a tiny size, on PostgreSQL:
the benchmark itself (`python -m bench tick`) never runs in the test suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bench import tick as bench_tick
from storage.db import upgrade
from tests.conftest import fresh_pg_database


@pytest.fixture
def bench_url(pg_url: str) -> Iterator[str]:
    """A database of its own (the benchmark writes fixed ids), migrated."""
    with fresh_pg_database("redesk_bench_smoke") as url:
        upgrade(url)
        yield url


def test_the_tick_benchmark_reads_everything_once_then_only_what_is_due(bench_url: str) -> None:
    # Given 40 open requests loaded as the benchmark loads them
    bench_tick.load(bench_url, 40)

    # When the benchmark's ticks run
    figures = bench_tick.measure(bench_url, 40, ticks=3, scans=1)

    # Then the first tick read all 40 and the ticks with nothing due read none; the requests
    # made due were read, and only they
    assert (figures.first_read, figures.first_done) == (40, {})
    assert figures.idle_read == [0, 0, 0]
    assert figures.due_read == {100: 40, 1000: 40}
    assert len(figures.scan_ms) == 1
    assert "tick_at <=" in figures.plan  # at 40 rows a sequential scan is right
