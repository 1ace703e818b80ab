"""The uv backend lets uv resolve (``uv pip compile``) when that gives pip's answer (issue #12,
sections 4 and 6), else pip resolves and uv installs pip's plan as before. Real uv, real pip, the
real site, Lmod; which path ran is read from the create's log (every command envmod ran)."""

from __future__ import annotations

import re
import signal
import subprocess
from pathlib import Path

import pytest
import yaml
from tests.conftest import site_dir, write_wheel
from tests.e2e.test_failures import _argv, assert_nothing_left, wait_for_step
from tests.e2e.test_pip_one_pass import PIP_RUN, assert_the_dry_runs_one_line, create, log_of, pure_wheel, user_env

UV_COMPILE = re.compile(r"^\$ \S+/uv pip compile ", re.M)
CENTRAL = site_dir() / "software/python/3.11.2/lib/python3.11/site-packages"


@pytest.fixture
def wheels(tmp_path) -> Path:
    """Pure wheels: one needing another, one needing the central Python's numpy, one needing a
    numpy newer than the central 2.4.6, one needing mpi4py (a rule package)."""
    where = tmp_path / "wheels"
    where.mkdir()
    pure_wheel(where, "uvr-a")
    pure_wheel(where, "uvr-b", ("uvr-a",))
    pure_wheel(where, "uvr-numpy", ("numpy",))
    pure_wheel(where, "uvr-newnumpy", ("numpy>2.4.6",))
    pure_wheel(where, "uvr-mpi", ("mpi4py",))
    return where


def uv_user(tmp_path: Path, wheels: Path, loads: str = "python/3.11", **extra: str) -> tuple[Path, dict[str, str]]:
    return user_env(tmp_path, loads, wheels, UV_CACHE_DIR=str(tmp_path / "uv-cache"), **extra)


def packages(root: Path, name: str) -> dict[str, tuple[str, str, bool]]:
    record = yaml.safe_load((root / "envs" / name / "envmod.yaml").read_text())
    return {p["name"]: (p["version"], p["install"], p["requested"]) for p in record["packages"]}


def test_pure_packages_are_resolved_by_uv_without_pip(tmp_path, wheels):
    root, env = uv_user(tmp_path, wheels)
    proc = create(env, "pure", "--backend", "uv", "--with", "uvr-b")
    assert proc.returncode == 0, proc.stderr
    log = log_of(proc.stderr, root, "pure")
    assert len(UV_COMPILE.findall(log)) == 1 and not PIP_RUN.findall(log), log     # no pip at all
    assert "] resolve: uvr-b 1.0, uvr-a 1.0 (uv)" in proc.stderr or "] resolve: uvr-a 1.0, uvr-b 1.0 (uv)" in proc.stderr
    # the record pip's path gives: what came in, from a wheel, and what was asked for
    assert packages(root, "pure") == {"uvr-a": ("1.0", "wheel", False), "uvr-b": ("1.0", "wheel", True)}


def test_a_requirements_file_is_the_users_request_too(tmp_path, wheels):
    root, env = uv_user(tmp_path, wheels)
    (tmp_path / "more.txt").write_text("uvr-a\n")
    (tmp_path / "reqs.txt").write_text("# mine\n-r more.txt\nuvr-numpy  # needs numpy\n")
    proc = create(env, "files", "--backend", "uv", "-r", str(tmp_path / "reqs.txt"))
    assert proc.returncode == 0, proc.stderr
    assert not PIP_RUN.findall(log_of(proc.stderr, root, "files"))
    assert packages(root, "files") == {"uvr-a": ("1.0", "wheel", True), "uvr-numpy": ("1.0", "wheel", True)}


def test_central_numpy_stays_central_when_uv_resolves(tmp_path, wheels):
    root, env = uv_user(tmp_path, wheels)
    proc = create(env, "keep", "--backend", "uv", "--with", "uvr-numpy", "numpy")
    assert proc.returncode == 0, proc.stderr
    log = log_of(proc.stderr, root, "keep")
    assert UV_COMPILE.findall(log) and not PIP_RUN.findall(log), log
    assert not list((root / "envs/keep").glob("lib/python3.11/site-packages/numpy*"))
    assert packages(root, "keep") == {"uvr-numpy": ("1.0", "wheel", True)}
    record = yaml.safe_load((root / "envs/keep/envmod.yaml").read_text())
    assert {"package": "uvr-numpy", "requires": "numpy", "provider": "python/3.11",
            "location": str(CENTRAL / "numpy-2.4.6.dist-info")} in record["requirements"]


def test_a_numpy_newer_than_the_central_one_falls_back_to_pip_and_lands_in_the_env(tmp_path, wheels):
    """uv, held to the central numpy 2.4.6, cannot resolve a need for a newer one; pip installs
    it in the env as today (test data: a pure wheel named numpy 99.0 in the local wheel dir)."""
    dist = "numpy-99.0.dist-info"
    write_wheel(wheels / "numpy-99.0-py3-none-any.whl", {
        "numpy/__init__.py": b"__version__ = '99.0'\n",
        f"{dist}/METADATA": b"Metadata-Version: 2.1\nName: numpy\nVersion: 99.0\n",
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"})
    root, env = uv_user(tmp_path, wheels, PIP_NO_INDEX="1")
    proc = create(env, "newer", "--backend", "uv", "--with", "uvr-newnumpy")
    assert proc.returncode == 0, proc.stderr
    log = log_of(proc.stderr, root, "newer")
    assert UV_COMPILE.findall(log) and "--dry-run" in log and "uv could not resolve it" in log, log
    assert packages(root, "newer") == {"numpy": ("99.0", "wheel", False), "uvr-newnumpy": ("1.0", "wheel", True)}
    assert (root / "envs/newer/lib/python3.11/site-packages/numpy-99.0.dist-info").is_dir()


def test_an_indirect_rule_package_falls_back_to_pips_path_and_its_compile(tmp_path, wheels):
    """uv cannot resolve mpi4py (held to a version no release has): pip resolves and the rule
    package is compiled against the central MPI, as today. Stopped once the compile starts."""
    root, env = uv_user(tmp_path, wheels, "python/3.11 openmpi/4.1.4")
    proc = subprocess.Popen([*_argv(), "create", "ind", "--backend", "uv", "--with", "uvr-mpi"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        seen = wait_for_step(proc, "] compile mpi4py", timeout=300)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=120)
    assert re.search(r"\] resolve: .*mpi4py", seen) and "(uv)" not in seen, seen
    log = log_of(seen, root, "ind")
    assert UV_COMPILE.findall(log) and "mpi4py==0+envmod.compiled.separately" in log, log
    assert "--dry-run" in log and "uv could not resolve it" in log
    assert_nothing_left(root, "ind")


def test_an_untranslatable_pip_setting_keeps_pips_path(tmp_path, wheels):
    config = tmp_path / "pip.conf"
    config.write_text("[global]\ntrusted-host = example.org\n")
    root, env = uv_user(tmp_path, wheels, PIP_CONFIG_FILE=str(config))
    proc = create(env, "trusted", "--backend", "uv", "--with", "uvr-b")
    assert proc.returncode == 0, proc.stderr
    log = log_of(proc.stderr, root, "trusted")
    assert not UV_COMPILE.findall(log) and "--dry-run" in log, log
    assert "a setting uv cannot take" in log and "trusted-host" in log
    assert "] install: uvr-b, uvr-a (uv)" in proc.stderr or "] install: uvr-a, uvr-b (uv)" in proc.stderr
    assert packages(root, "trusted") == {"uvr-a": ("1.0", "wheel", False), "uvr-b": ("1.0", "wheel", True)}


def test_a_changed_pip_conf_or_pip_variable_is_seen_by_the_next_create(tmp_path, wheels):
    config = tmp_path / "pip.conf"
    config.write_text("[global]\nno-color = true\n")
    root, env = uv_user(tmp_path, wheels, PIP_CONFIG_FILE=str(config))
    first = create(env, "one", "--backend", "uv", "--with", "uvr-a")
    assert first.returncode == 0 and UV_COMPILE.findall(log_of(first.stderr, root, "one")), first.stderr
    # the cached answer is keyed by the file: a new setting is seen
    config.write_text("[install]\nproxy = http://proxy.invalid:3128\n")
    second = create(env, "two", "--backend", "uv", "--with", "uvr-a")
    assert second.returncode == 0, second.stderr
    log = log_of(second.stderr, root, "two")
    assert not UV_COMPILE.findall(log) and "--dry-run" in log and "proxy" in log, log
    # ... and by every PIP_* variable: an index of pip's becomes uv's
    config.write_text("")
    index = tmp_path / "index"
    index.mkdir()
    third = create({**env, "PIP_INDEX_URL": index.as_uri()}, "three", "--backend", "uv", "--with", "uvr-a")
    assert third.returncode == 0, third.stderr
    log = log_of(third.stderr, root, "three")
    assert re.search(rf"^\$ \S+/uv pip compile .*--index-url {re.escape(index.as_uri())} ", log, re.M), log


def test_a_nonexistent_package_gives_todays_one_line(tmp_path, wheels):
    root, env = uv_user(tmp_path, wheels, PIP_NO_INDEX="1")
    proc = create(env, "bogus", "--backend", "uv", "--with", "uvr-a", "envmod-no-such-package")
    log = assert_the_dry_runs_one_line(proc, root, "bogus")
    assert UV_COMPILE.findall(log) and "--dry-run" in log
    assert_nothing_left(root, "bogus")
    assert sorted(p.name for p in (tmp_path / "tmpdir").iterdir()) == []
