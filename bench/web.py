"""Web intake benchmark: POST /api/web/messages against a real `redesk run`.

Starts `redesk run` on a fresh embedded SQLite database (or on REDESK_BENCH_DATABASE_URL and
REDESK_BENCH_REDIS_URL with `redesk worker` processes), then sends requests from many web
identities at once and reports:

- ingest: accepted messages per second and the p50/p99 latency of the 202 answer;
- end to end: how long until every requester has their receipt (handled and delivered).

Usage: python -m bench web [--identities 50] [--messages 10] [--concurrency 20] [--workers 0]
"""

from __future__ import annotations

import asyncio
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))
    return ordered[index]


async def _run(base: str, identities: int, messages: int, concurrency: int) -> dict[str, float]:
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        tokens = []
        for index in range(identities):
            answer = await client.post("/api/web/session", json={"name": f"居民{index}"})
            tokens.append(answer.json()["token"])
        jobs = [(token, n) for n in range(messages) for token in tokens]
        latencies: list[float] = []
        semaphore = asyncio.Semaphore(concurrency)

        async def post(token: str, n: int) -> None:
            async with semaphore:
                started = time.perf_counter()
                answer = await client.post(
                    "/api/web/messages",
                    headers={"Authorization": f"Bearer {token}"},
                    json={"id": f"bench-{n}", "text": f"第{n}件：小区门口的路灯不亮了"},
                )
                latencies.append(time.perf_counter() - started)
                answer.raise_for_status()

        started = time.perf_counter()
        await asyncio.gather(*(post(token, n) for token, n in jobs))
        ingest_seconds = time.perf_counter() - started

        async def receipts(token: str) -> None:
            seen = 0
            while seen < messages:
                answer = await client.get(
                    "/api/web/messages",
                    params={"after": 0, "wait": 5},
                    headers={"Authorization": f"Bearer {token}"},
                )
                seen = sum("已受理登记" in m["text"] for m in answer.json()["messages"])
                if seen < messages:
                    await asyncio.sleep(0.2)

        await asyncio.gather(*(receipts(token) for token in tokens))
        total_seconds = time.perf_counter() - started
    count = len(jobs)
    return {
        "messages": count,
        "ingest_per_second": count / ingest_seconds,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": _percentile(latencies, 0.99) * 1000,
        "end_to_end_per_second": count / total_seconds,
        "end_to_end_seconds": total_seconds,
    }


def run(identities: int, messages: int, concurrency: int, workers: int) -> None:
    """Runs the benchmark and prints one Markdown table row."""
    redesk = str(Path(sys.executable).with_name("redesk"))
    with tempfile.TemporaryDirectory() as tmp:
        port = _free_port()
        env = {
            **os.environ,
            "REDESK_PORT": str(port),
            "REDESK_HOST": "127.0.0.1",
            "REDESK_DATABASE_URL": os.environ.get(
                "REDESK_BENCH_DATABASE_URL", f"sqlite:///{tmp}/bench.db"
            ),
        }
        if os.environ.get("REDESK_BENCH_REDIS_URL"):
            env["REDESK_REDIS_URL"] = os.environ["REDESK_BENCH_REDIS_URL"]
        subprocess.run([redesk, "db", "upgrade"], env=env, cwd=tmp, check=True, capture_output=True)
        subprocess.run([redesk, "demo"], env=env, cwd=tmp, check=True, capture_output=True)
        log = open(Path(tmp) / "run.log", "w")
        processes = [
            subprocess.Popen(
                [redesk, "run"], env=env, cwd=tmp, stdout=log, stderr=subprocess.STDOUT
            )
        ]
        processes += [
            subprocess.Popen(
                [redesk, "worker"], env=env, cwd=tmp, stdout=log, stderr=subprocess.STDOUT
            )
            for _ in range(workers)
        ]
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(100):
                try:
                    if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
            result = asyncio.run(_run(base, identities, messages, concurrency))
        finally:
            for process in processes:
                process.send_signal(signal.SIGTERM)
            for process in processes:
                process.wait(timeout=30)
            log.close()
    backend = "PostgreSQL" if "postgresql" in env["REDESK_DATABASE_URL"] else "SQLite"
    queue = "Redis" if "REDESK_REDIS_URL" in env else "in-process"
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; database {backend}; queue {queue}; "
        f"workers {workers}"
    )
    print("| messages | ingest msg/s | POST p50 ms | POST p99 ms | end-to-end msg/s |")
    print("|---:|---:|---:|---:|---:|")
    print(
        f"| {result['messages']:.0f} | {result['ingest_per_second']:.0f} | "
        f"{result['p50_ms']:.1f} | {result['p99_ms']:.1f} | "
        f"{result['end_to_end_per_second']:.0f} |"
    )
