"""Fixtures shared by the unit tier's files."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import bridge

# The envmod these tests import (a worktree's src/ on PYTHONPATH, else the installed one): the
# commands they run are that one too, not whichever the venv was installed from.
TESTED_SOURCE = os.path.dirname(os.path.dirname(bridge.__file__))


@pytest.fixture
def run(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    root = tmp_path / "root"

    def run(*args: str, extra_env: dict | None = None) -> subprocess.CompletedProcess:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "ENVMOD_ROOT": str(root),
               "ENVMOD_CONFIG": str(home / "no-config.yaml"), "LANG": "C.UTF-8", "PYTHONPATH": TESTED_SOURCE,
               **(extra_env or {})}
        return subprocess.run([sys.executable, "-m", "bridge", *args], capture_output=True, text=True,
                              timeout=60, env=env, stdin=subprocess.DEVNULL)

    run.root = root
    return run
