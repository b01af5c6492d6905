"""The admin's working directory: with nothing configured, `redesk run` and every other verb use
the platform's data directory, wherever each is started from.

The processes get a temporary HOME and XDG_DATA_HOME and no REDESK_DATABASE_URL or
REDESK_DATA_DIR, so the default is what is exercised (and the real home is never touched).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.client import WebChat
from tests.e2e.conftest import PROCESS_TIMEOUT, Deployment, base_env, redesk_executable, serve


@pytest.fixture(scope="module")
def default_deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """`redesk run` on the default data directory, started in a directory of its own, its
    banner printed for a terminal 40 columns wide."""
    root = tmp_path_factory.mktemp("redesk-e2e-default")
    (root / "server").mkdir()
    env = base_env(root / "server", "unused")
    for name in ("REDESK_DATABASE_URL", "REDESK_DATA_DIR"):
        env.pop(name)
    env.update({"HOME": str(root / "home"), "XDG_DATA_HOME": str(root / "xdg"), "COLUMNS": "40"})
    yield from serve(Deployment(root / "server", env), "run")


def redesk_in(
    deployment: Deployment, directory: Path, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    """Runs `redesk ARGS` to its end in `directory`, with the deployment's environment."""
    directory.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [redesk_executable(), *args],
        cwd=directory,
        env={**deployment.env, **env},
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT,
        check=False,
    )


def test_an_invitation_made_in_another_directory_binds_on_the_running_server(
    default_deployment: Deployment,
) -> None:
    # Given `redesk run` started in one directory, on the default data directory
    data = Path(default_deployment.env["XDG_DATA_HOME"]) / "redesk"
    assert (data / "redesk.db").is_file()

    # When the admin asks for an invitation from another directory
    admin = default_deployment.directory.parent / "admin"
    done = redesk_in(default_deployment, admin, "invite", "worker")
    assert done.returncode == 0, done.stdout + done.stderr
    code = done.stdout.strip().splitlines()[-1]

    # Then the server accepts the code, and nothing was made where the admin ran it
    with default_deployment.http() as http:
        worker = WebChat.open(http, "王书记")
        worker.send(f"绑定 {code}")
        worker.wait_for("绑定成功", "党务工作者")
    assert list(admin.iterdir()) == []


def test_a_verb_pointed_at_a_data_directory_without_a_database_refuses_and_names_it(
    default_deployment: Deployment,
) -> None:
    # Given a data directory where no server ever ran
    elsewhere = default_deployment.directory.parent / "not-the-server"

    # When an invitation is asked for there
    done = redesk_in(
        default_deployment,
        default_deployment.directory.parent / "admin",
        "invite",
        "worker",
        REDESK_DATA_DIR=str(elsewhere),
    )

    # Then it exits 5 naming the file it looked for, prints no code and creates nothing
    assert done.returncode == 5, done.stdout + done.stderr
    assert f"No database file {elsewhere / 'redesk.db'}" in done.stderr
    assert done.stdout == ""
    assert not elsewhere.exists()


def test_the_banner_shows_the_data_directory_with_no_url_or_path_broken_in_40_columns(
    default_deployment: Deployment,
) -> None:
    # When `redesk run` has printed its banner (COLUMNS=40)
    lines = (default_deployment.directory / "run.log").read_text().splitlines()

    # Then every URL and path is whole on its own line
    base = default_deployment.base_url
    data = Path(default_deployment.env["XDG_DATA_HOME"]) / "redesk"
    assert f"redesk listens on {base}" in lines
    assert f"web desk: {base}/desk" in lines
    assert f"database: sqlite:///{data / 'redesk.db'}" in lines
    assert f"media: {data / 'media'}" in lines
