"""/metrics of a real `redesk run` in production: the token, and loopback without it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.conftest import Deployment, base_env, serve

#: The token of the guarded deployment (long and random, as production asks).
TOKEN = "Qm8-Vx3_Lr7Kp2Wz9Nd4Hs6T"


def production(tmp_path_factory: pytest.TempPathFactory, **extra: str) -> Iterator[Deployment]:
    """`redesk run` with REDESK_ENV=production on its own SQLite database."""
    directory = tmp_path_factory.mktemp("redesk-e2e-metrics")
    env = base_env(directory, f"sqlite:///{directory / 'redesk.db'}")
    env.update({"REDESK_ENV": "production", **extra})
    yield from serve(Deployment(directory, env), "run")


@pytest.fixture(scope="module")
def open_production(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """Production without REDESK_METRICS_TOKEN."""
    yield from production(tmp_path_factory)


@pytest.fixture(scope="module")
def guarded_production(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """Production with REDESK_METRICS_TOKEN."""
    yield from production(tmp_path_factory, REDESK_METRICS_TOKEN=TOKEN)


def test_without_a_token_a_scrape_passed_on_by_a_local_proxy_is_refused(
    open_production: Deployment,
) -> None:
    with open_production.http() as http:
        # When Prometheus on this machine scrapes directly
        direct = http.get("/metrics")
        # And a reverse proxy on this machine passes on a scrape from outside, naming the
        # client the way nginx's $proxy_add_x_forwarded_for does (a forged first entry too)
        forwarded = http.get("/metrics", headers={"X-Forwarded-For": "127.0.0.1, 203.0.113.9"})

    # Then the direct scrape gets the figures and the forwarded one is refused with a sentence
    assert direct.status_code == 200 and "redesk_requests" in direct.text
    assert forwarded.status_code == 403, forwarded.text
    assert "redesk_" not in forwarded.text and forwarded.json()["error"]
    # And the server said at start that /metrics has no token
    log = (open_production.directory / "run.log").read_text(errors="replace")
    assert "has no REDESK_METRICS_TOKEN: it answers only clients on this machine" in log


def test_with_a_token_only_a_scrape_carrying_it_gets_the_figures(
    guarded_production: Deployment,
) -> None:
    with guarded_production.http() as http:
        # When scraped without the token, with a wrong one, and with it
        bare = http.get("/metrics")
        wrong = http.get("/metrics", headers={"Authorization": "Bearer not-the-token"})
        right = http.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})

    # Then only the last gets the figures
    assert bare.status_code == wrong.status_code == 401
    assert "redesk_" not in bare.text + wrong.text
    assert right.status_code == 200 and "redesk_requests" in right.text
    # And the token is not in the server's output
    log = (guarded_production.directory / "run.log").read_text(errors="replace")
    assert TOKEN not in log
