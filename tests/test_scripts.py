"""scripts/run and scripts/venv.sh: the project is installed into .venv only when the venv
is missing or pyproject.toml changed, so a start needs neither 7 s nor a package index.

The real scripts run in a copy of the project whose `python3` and `.venv/bin/python` are
stand-ins that log what they were asked: nothing is installed for real, no network."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# .venv/bin/python: logs its arguments; a pip install fails when FAIL_PIP is set (no index).
FAKE_PYTHON = """#!/bin/sh
echo "$*" >>"{log}"
case "$*" in *"pip install"*) [ -z "$FAIL_PIP" ] || exit 1 ;; esac
"""
# python3 on PATH: `python3 -m venv .venv` makes a .venv holding the stand-ins above.
FAKE_PYTHON3 = """#!/bin/sh
echo "python3 $*" >>"{log}"
mkdir -p .venv/bin && cp "{bin}/fake-python" .venv/bin/python && cp "{bin}/fake-blf-panel" .venv/bin/blf-panel
"""
FAKE_BLF_PANEL = """#!/bin/sh
echo "blf-panel $*"
"""


class Project:
    """A copy of the project's scripts and pyproject.toml, with stand-ins for Python."""

    def __init__(self, where: Path) -> None:
        self.dir = where / "project"
        (self.dir / "scripts").mkdir(parents=True)
        for name in ("run", "venv.sh"):
            shutil.copy2(ROOT / "scripts" / name, self.dir / "scripts" / name)
        shutil.copy2(ROOT / "pyproject.toml", self.dir / "pyproject.toml")
        self.log = where / "calls.log"
        self.log.touch()
        self.bin = where / "bin"
        self.bin.mkdir()
        for name, text in (
            ("fake-python", FAKE_PYTHON),
            ("fake-blf-panel", FAKE_BLF_PANEL),
            ("python3", FAKE_PYTHON3),
        ):
            path = self.bin / name
            path.write_text(text.format(log=self.log, bin=self.bin))
            path.chmod(0o755)

    def _env(self, fail_pip: bool) -> dict[str, str]:
        env = {**os.environ, "PATH": f"{self.bin}:{os.environ['PATH']}"}
        env.pop("FAIL_PIP", None)
        return {**env, "FAIL_PIP": "1"} if fail_pip else env

    def run(self, *args: str, fail_pip: bool = False) -> subprocess.CompletedProcess[str]:
        """scripts/run ARGS, as a user starts it."""
        return subprocess.run(
            [str(self.dir / "scripts" / "run"), *args],
            env=self._env(fail_pip),
            capture_output=True,
            text=True,
            timeout=30,
        )

    def make_venv(self, extras: str, fail_pip: bool = False) -> subprocess.CompletedProcess[str]:
        """`make_venv EXTRAS`, as scripts/test calls it (with "[test]")."""
        return subprocess.run(
            ["bash", "-c", 'source scripts/venv.sh; make_venv "$1"', "bash", extras],
            cwd=self.dir,
            env=self._env(fail_pip),
            capture_output=True,
            text=True,
            timeout=30,
        )

    def installs(self) -> list[str]:
        """What pip was asked to install, in order: the argument after -e."""
        lines = self.log.read_text().splitlines()
        return [line.split(" -e ")[1] for line in lines if "pip install" in line]

    def venvs_made(self) -> int:
        return sum(line.startswith("python3 -m venv") for line in self.log.read_text().splitlines())


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return Project(tmp_path)


def test_run_installs_once_then_starts_at_once_without_a_package_index(project: Project) -> None:
    first = project.run("--port", "9000")
    assert first.returncode == 0, first.stderr
    assert first.stdout == "blf-panel serve --port 9000\n"
    assert project.venvs_made() == 1 and project.installs() == ["."]

    again = project.run("--port", "9001", fail_pip=True)  # a pip install would fail now
    assert again.returncode == 0, again.stderr
    assert again.stdout == "blf-panel serve --port 9001\n"
    assert project.venvs_made() == 1 and project.installs() == ["."], "no second install"


def test_a_changed_pyproject_installs_again(project: Project) -> None:
    assert project.run().returncode == 0
    with (project.dir / "pyproject.toml").open("a") as file:
        file.write('\n[tool.example]\nchanged = "a dependency, an entry point"\n')
    assert project.run().returncode == 0
    assert project.installs() == [".", "."]
    assert project.run().returncode == 0
    assert project.installs() == [".", "."]


def test_the_stamp_covers_the_extras_asked_for(project: Project) -> None:
    """scripts/test asks for [test]: a plain install is not enough for it; a [test] install
    is enough for scripts/run (the extras come on top of the plain install)."""
    assert project.make_venv("").returncode == 0
    assert project.make_venv("[test]").returncode == 0
    assert project.installs() == [".", ".[test]"]
    for extras in ("[test]", ""):
        assert project.make_venv(extras).returncode == 0
    assert project.run().returncode == 0
    assert project.installs() == [".", ".[test]"]

    with (project.dir / "pyproject.toml").open("a") as file:
        file.write("\n# changed\n")
    assert project.make_venv("[test]").returncode == 0
    assert project.make_venv("").returncode == 0, "[test] of the new file serves a plain start"
    assert project.installs() == [".", ".[test]", ".[test]"]


def test_a_failed_install_is_tried_again_next_time(project: Project) -> None:
    failed = project.run(fail_pip=True)
    assert failed.returncode != 0 and "blf-panel serve" not in failed.stdout
    assert project.installs() == ["."]
    assert project.run().returncode == 0
    assert project.installs() == [".", "."]
