"""Scratch directories never outlive their run: one a SIGKILLed process left in ``$TMPDIR`` is
removed by the next run of the same user on the same host; anyone else's is left alone.
Real processes are killed for real."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from bridge import fsutil

KILLED_CHILD = """
import os, sys
sys.path.insert(0, sys.argv[1])
from bridge.fsutil import scratch_dir
with scratch_dir("install") as path:
    (path / "half-built.o").write_text("x")
    print(path, flush=True)
    os.kill(os.getpid(), 9)
"""


def _killed_scratch(tmpdir: Path) -> Path:
    """The scratch directory of a run killed with SIGKILL inside it."""
    src = str(Path(fsutil.__file__).resolve().parent.parent)
    proc = subprocess.run([sys.executable, "-c", KILLED_CHILD, src], env={**os.environ, "TMPDIR": str(tmpdir)},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    left = Path(proc.stdout.strip())
    assert left.is_dir() and left.parent == tmpdir
    return left


@pytest.fixture
def tmpdir_env(tmp_path, monkeypatch):
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmpdir))
    monkeypatch.setattr("tempfile.tempdir", None)       # tempfile reads TMPDIR again
    monkeypatch.setattr(fsutil, "_swept", False)
    return tmpdir


def test_a_scratch_dir_is_gone_after_its_block_even_on_an_error(tmpdir_env):
    with pytest.raises(RuntimeError):
        with fsutil.scratch_dir("load") as path:
            (path / "sub").mkdir()
            (path / "sub").chmod(0o500)          # pip leaves read-only directories
            raise RuntimeError("boom")
    assert list(tmpdir_env.iterdir()) == []


def test_the_next_run_removes_what_a_killed_run_left(tmpdir_env):
    left = _killed_scratch(tmpdir_env)
    with fsutil.scratch_dir("check") as path:
        assert not left.exists()
        assert path.is_dir()
    assert list(tmpdir_env.iterdir()) == []


def test_a_running_processes_scratch_and_others_are_left_alone(tmpdir_env):
    host = socket.gethostname()
    alive = subprocess.Popen(["sleep", "60"])
    try:
        running = tmpdir_env / f"envmod-install.{alive.pid}.{host}.abc123"
        elsewhere = tmpdir_env / f"envmod-install.{_dead_pid()}.not-{host}.abc123"   # a shared TMPDIR
        not_ours = tmpdir_env / "envmod-notes.txt"
        unrelated = tmpdir_env / f"pip-build.{_dead_pid()}.{host}.abc123"
        for path in (running, elsewhere, unrelated):
            path.mkdir()
        not_ours.write_text("")
        with fsutil.scratch_dir("install"):
            pass
        assert running.is_dir() and elsewhere.is_dir() and unrelated.is_dir() and not_ours.is_file()
    finally:
        alive.kill()
        alive.wait()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a directory to another user")
def test_another_users_orphan_is_left_alone(tmpdir_env):
    theirs = tmpdir_env / f"envmod-install.{_dead_pid()}.{socket.gethostname()}.abc123"
    theirs.mkdir()
    os.chown(theirs, 65534, 65534)
    with fsutil.scratch_dir("install"):
        pass
    assert theirs.is_dir()


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid
