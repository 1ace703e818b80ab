"""The pip installer's one pass (issue #12, section 6): a create that needs no rule package runs
pip once, with a constraint no rule package can meet; anything else takes the full path (dry run,
compile, install) as before, with the same outcome and messages. Real pip, the real site, Lmod."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from tests.conftest import ModuleShell, require_site, write_wheel
from tests.e2e.test_failures import SLOWPKG, _argv, assert_nothing_left, wait_for_step

#: what Reporter.run writes to the log before each command: one line per pip run
PIP_RUN = re.compile(r"^\$ \S+ -m pip ", re.M)


def pure_wheel(directory: Path, name: str, requires: tuple[str, ...] = ()) -> Path:
    module, dist = name.replace("-", "_"), f"{name.replace('-', '_')}-1.0.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n" + "".join(f"Requires-Dist: {r}\n" for r in requires)
    return write_wheel(directory / f"{module}-1.0-py3-none-any.whl", {
        f"{module}/__init__.py": f"NAME = {name!r}\n".encode(), f"{dist}/METADATA": metadata.encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"})


@pytest.fixture
def wheels(tmp_path) -> Path:
    """A local wheel directory: two pure wheels (one needing the other), one needing the central
    Python's numpy, one needing mpi4py (a rule package)."""
    where = tmp_path / "wheels"
    where.mkdir()
    pure_wheel(where, "onepass-a")
    pure_wheel(where, "onepass-b", ("onepass-a",))
    pure_wheel(where, "onepass-numpy", ("numpy",))
    pure_wheel(where, "onepass-mpi", ("mpi4py",))
    return where


def user_env(tmp_path: Path, loads: str, wheels: Path, **extra: str) -> tuple[Path, dict[str, str]]:
    """A Lmod user with ``loads`` loaded, pip finding ``wheels`` (and the machine's index) and
    every temporary file in a directory of its own."""
    require_site()
    shell = ModuleShell("lmod", tmp_path / "root", tmp_path / "cache")
    env = shell.environment(f"module load {loads}")
    (tmp_path / "tmpdir").mkdir()
    env.update(ENVMOD_ROOT=str(shell.root), XDG_CACHE_HOME=str(shell.cache), TMPDIR=str(tmp_path / "tmpdir"),
               PIP_FIND_LINKS=" ".join(filter(None, [str(wheels), env.get("PIP_FIND_LINKS")])), **extra)
    return shell.root, env


def create(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*_argv(), "create", *args], env=env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=900)


def log_of(stderr: str, root: Path, name: str) -> str:
    logs = sorted((root / "logs" / name).glob("create-*.log"))
    assert logs, stderr
    return logs[-1].read_text()


def test_a_pure_create_runs_pip_once_and_keeps_the_central_numpy(tmp_path, wheels):
    root, env = user_env(tmp_path, "python/3.11", wheels)
    proc = create(env, "pure", "--with", "onepass-b", "onepass-numpy")
    assert proc.returncode == 0, proc.stderr
    log = log_of(proc.stderr, root, "pure")
    assert len(PIP_RUN.findall(log)) == 1, log            # observed: the one pip command envmod ran
    assert "--dry-run" not in log and "--constraint" in log
    announced = re.search(r"\] install: (.*) \(one pass: nothing to compile\)", proc.stderr)
    assert announced and sorted(announced[1].split(", ")) == ["onepass-a", "onepass-b", "onepass-numpy"], proc.stderr
    record = yaml.safe_load((root / "envs/pure/envmod.yaml").read_text())
    # the same plan the dry run gave: what came in, from which wheel, and what was asked for
    assert {p["name"]: (p["install"], p["requested"]) for p in record["packages"]} == {
        "onepass-a": ("wheel", False), "onepass-b": ("wheel", True), "onepass-numpy": ("wheel", True)}
    # numpy stays the central Python's: not installed into the env, recorded as its provider
    assert not list((root / "envs/pure/lib/python3.11/site-packages").glob("numpy*"))
    assert {(r["requires"], r["provider"]) for r in record["requirements"]} == {("numpy", "python/3.11")}
    assert sorted(p.name for p in (tmp_path / "tmpdir").iterdir()) == []


def assert_the_dry_runs_one_line(proc: subprocess.CompletedProcess, root: Path, name: str) -> str:
    """A create of a package no index has: the steps before the install, then exactly the error
    the dry run has always given; the create's log."""
    assert proc.returncode == 7, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert [re.sub(r"^\[ *[\d.]+s\] ", "", line).split(":")[0] for line in lines[:-1]] == ["discover", "python", "create"]
    assert re.fullmatch(r"envmod: error: resolve failed \(exit 1\): ERROR: No matching distribution found for "
                        r"envmod-no-such-package; full log: \S+", lines[-1]), lines[-1]
    return log_of(proc.stderr, root, name)


def test_a_nonexistent_package_gives_the_full_paths_one_line_and_the_attempt_shows_nothing(tmp_path, wheels):
    root, env = user_env(tmp_path, "python/3.11", wheels, PIP_NO_INDEX="1")
    proc = create(env, "bogus", "--with", "onepass-a", "envmod-no-such-package")
    log = assert_the_dry_runs_one_line(proc, root, "bogus")
    assert len(PIP_RUN.findall(log)) == 2 and "the one-pass install stopped before installing anything" in log
    assert_nothing_left(root, "bogus")
    assert sorted(p.name for p in (tmp_path / "tmpdir").iterdir()) == []


def test_a_build_failure_after_resolving_is_the_installs_own_error_and_not_tried_again(tmp_path, wheels):
    root, env = user_env(tmp_path, "python/3.11", wheels, SLOWPKG_FAIL="1")
    proc = create(env, "broken", "--with", str(SLOWPKG))
    assert proc.returncode == 7, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("envmod: error: install failed")
    log = log_of(proc.stderr, root, "broken")
    assert log.count("deliberate build failure") >= 1 and len(PIP_RUN.findall(log)) == 1
    assert_nothing_left(root, "broken")
    assert sorted(p.name for p in (tmp_path / "tmpdir").iterdir()) == []


def _tree(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (pip runs in a session of its own), from /proc."""
    parent: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                parent[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
    found, todo = [], [pid]
    while todo:
        here = todo.pop()
        children = [c for c, p in parent.items() if p == here]
        found += children
        todo += children
    return found


def test_sigkill_during_the_one_pass_install_leaves_nothing_visible_and_the_next_create_cleans_up(tmp_path, wheels):
    root, env = user_env(tmp_path, "python/3.11", wheels)
    proc = subprocess.Popen([*_argv(), "create", "killed", "--with", str(SLOWPKG)], env={**env, "SLOWPKG_SLEEP": "120"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    wait_for_step(proc, "] install")           # the one-pass pip is building slowpkg
    time.sleep(1)
    for pid in [proc.pid, *_tree(proc.pid)]:   # as the end of a job does: everything, at once
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    assert not (root / "envs/killed").exists() and not (root / "modules/killed").exists()
    tmpdir = Path(env["TMPDIR"])
    assert [p.name for p in tmpdir.iterdir() if p.name.startswith("envmod-install.")], "pip's scratch was killed too"
    again = create(env, "killed", "--with", "onepass-a")
    assert again.returncode == 0, again.stderr
    assert_nothing_left_but(root, "killed")
    assert list(tmpdir.iterdir()) == []         # the next run removed the killed one's scratch


def assert_nothing_left_but(root: Path, name: str) -> None:
    staging = root / ".envmod" / "staging"
    assert not staging.exists() or not any(staging.iterdir()), list(staging.iterdir())
    assert (root / "modules" / name / "py3.11.lua").is_file()


@pytest.mark.slow
def test_an_indirect_rule_package_takes_the_full_path_and_is_built_against_the_central_mpi(
        tmp_path, wheels, compiled_env):
    root, env = user_env(tmp_path, "python/3.11 openmpi/4.1.4", wheels,
                         ENVMOD_WHEEL_CACHE=str(compiled_env.wheels))
    proc = create(env, "indirect", "--with", "onepass-mpi")
    assert proc.returncode == 0, proc.stderr
    steps = [re.sub(r"^\[ *[\d.]+s\] ", "", line).split(":")[0] for line in proc.stderr.splitlines()]
    # the failed attempt printed nothing: the full path's steps only, in its order
    assert steps[2:4] == ["create", "resolve"] and steps[4].startswith(("reuse mpi4py", "compile mpi4py")), proc.stderr
    assert "install" in steps[5:], proc.stderr
    assert "conflict" not in proc.stderr.lower() and "one pass" not in proc.stderr
    log = log_of(proc.stderr, root, "indirect")
    assert "mpi4py==0+envmod.compiled.separately" in log and "--dry-run" in log
    record = yaml.safe_load((root / "envs/indirect/envmod.yaml").read_text())
    mpi4py = next(p for p in record["packages"] if p["name"] == "mpi4py")
    assert mpi4py["requested"] is False and mpi4py["built_against"] == ["openmpi/4.1.4"]
    assert "openmpi/4.1.4" in record["module"]["depends_on"]

    # a rule package asked for by name skips the attempt
    named = create(env, "named", "--with", "mpi4py", "onepass-a")
    assert named.returncode == 0, named.stderr
    assert "--constraint" not in log_of(named.stderr, root, "named")


def test_the_uv_backend_keeps_the_dry_run_whose_plan_it_installs(tmp_path, wheels):
    """When pip resolves for uv (here: a pip setting uv cannot take; see test_uv_resolve.py)."""
    (tmp_path / "pip.conf").write_text("[global]\ntrusted-host = example.org\n")
    root, env = user_env(tmp_path, "python/3.11", wheels, UV_CACHE_DIR=str(tmp_path / "uv-cache"),
                         PIP_CONFIG_FILE=str(tmp_path / "pip.conf"))
    proc = create(env, "viauv", "--backend", "uv", "--with", "onepass-b")
    assert proc.returncode == 0, proc.stderr
    log = log_of(proc.stderr, root, "viauv")
    assert len(PIP_RUN.findall(log)) == 1 and "--dry-run" in log and "--constraint" not in log
    assert "(uv)" in proc.stderr and "one pass" not in proc.stderr
