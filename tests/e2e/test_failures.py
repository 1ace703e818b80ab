"""Bad input, failures and interruptions never leave a half-made env or module behind, and never
touch an existing one. Real pip builds a real (tiny) package whose build sleeps or fails."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.conftest import ModuleShell, require_site

SLOWPKG = Path(__file__).with_name("pkgs") / "slowpkg"
SCRIPTPKG = Path(__file__).with_name("pkgs") / "scriptpkg"


@pytest.fixture
def site_env(tmp_path):
    """A user environment with Lmod initialised and the central Python loaded."""
    require_site()
    shell = ModuleShell("lmod", tmp_path / "root", tmp_path / "cache")
    env = shell.environment("module load python/3.11")
    env.update(ENVMOD_ROOT=str(shell.root), XDG_CACHE_HOME=str(shell.cache))
    return shell.root, env


def envmod(*args: str, env: dict, **kw) -> subprocess.CompletedProcess:
    argv = [*_argv(), *args]
    return subprocess.run(argv, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, **kw)


def _argv() -> list[str]:
    exe = Path(sys.executable).with_name("envmod")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "bridge"]


def assert_nothing_left(root: Path, name: str) -> None:
    assert not (root / "envs" / name).exists()
    assert not (root / "modules" / name).exists()
    staging = root / ".envmod" / "staging"
    assert not staging.exists() or not any(staging.iterdir()), list(staging.iterdir())


def start_slow_create(name: str, env: dict, seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen([*_argv(), "create", name, "--with", str(SLOWPKG)], env={**env, "SLOWPKG_SLEEP": str(seconds)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    wait_for_step(proc, "] install")
    return proc


def wait_for_step(proc: subprocess.Popen, marker: str, timeout: float = 120) -> str:
    seen, deadline = "", time.monotonic() + timeout
    assert proc.stderr is not None
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        seen += line
        if marker in line:
            return seen
        if not line and proc.poll() is not None:
            break
    raise AssertionError(f"never saw {marker!r}: {seen}")


@pytest.mark.parametrize("name", ["../up", "a;b", "$(touch x)", "a b", "-rf", ".hidden", "x" * 65, "envs", "a/b"])
def test_hostile_or_bad_names_are_refused_with_one_line(site_env, name):
    root, env = site_env
    proc = envmod("create", name, env=env)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("envmod: error:")
    assert not (root / "envs").exists() or not any((root / "envs").iterdir())


@pytest.mark.parametrize("name, char", [("A+1", "+"), ("a~b", "~"), ("a@1", "@"), ("a=b", "=")])
def test_names_environment_modules_cannot_load_are_refused_at_create_in_one_line(site_env, name, char):
    root, env = site_env
    proc = envmod("create", name, env=env)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("envmod: error:")
    assert f"Environment Modules reads {char!r}" in proc.stderr
    assert not (root / "envs").exists() or not any((root / "envs").iterdir())
    assert not (root / "modules").exists()


def assert_refused_in_one_line(proc: subprocess.CompletedProcess, root: Path, says: str, code: int = 2) -> None:
    assert proc.returncode == code, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("envmod: error:"), proc.stderr
    assert says in proc.stderr
    assert not (root / "envs").exists() or not any((root / "envs").iterdir())
    assert not (root / "modules").exists()


@pytest.mark.parametrize("spec", ["--index-url=http://127.0.0.1:9/simple", "--pre", "--no-index"])
def test_a_pip_option_given_as_a_package_is_refused_in_one_line(site_env, spec):
    root, env = site_env
    proc = envmod("create", "opt", f"--with={spec}", env=env)
    assert_refused_in_one_line(proc, root, "is a pip option, not a package")


def test_a_directory_named_like_an_option_is_no_option(site_env, tmp_path):
    root, env = site_env
    (tmp_path / "--pre").mkdir()
    proc = envmod("create", "dashdir", "--with=--pre", env=env, cwd=tmp_path)
    assert_refused_in_one_line(proc, root, "a directory whose name starts with '-' is written ./NAME")


def test_an_index_option_in_a_requirements_file_is_refused_in_one_line(site_env, tmp_path):
    root, env = site_env
    req = tmp_path / "req.txt"
    req.write_text(f"{SLOWPKG}\n--extra-index-url http://127.0.0.1:9/simple\n")
    proc = envmod("create", "reqopt", "-r", str(req), env=env)
    assert_refused_in_one_line(proc, root, f"{req} line 2: option '--extra-index-url' is not allowed")


@pytest.mark.parametrize("how", ["--with", "-r"])
def test_a_spec_pip_fails_on_with_a_traceback_is_one_line_with_the_reason(site_env, tmp_path, how):
    root, env = site_env
    if how == "-r":
        (tmp_path / "req.txt").write_text("foo @ http://[::1/foo.tar.gz\n")
        args = ["-r", str(tmp_path / "req.txt")]
    else:
        args = ["--with", "foo @ http://[::1/foo.tar.gz"]
    proc = envmod("create", "badurl", *args, env=env)
    assert_refused_in_one_line(proc, root, "is not a valid URL: Invalid IPv6 URL", code=3)
    assert "Exception" not in proc.stderr


# ---- the envmod root is data (issue #9, item 5) ------------------------------------------------

@pytest.mark.parametrize("how", ["ENVMOD_ROOT", "--root", "config"])
@pytest.mark.parametrize("part, char", [("$(touch {marker})", "$"), ("`touch {marker}`", "`"), ("a\tb", "\t"),
                                        ('a"b', '"'), ("a\\b", "\\"), ("a!b", "!")])
def test_a_root_scripts_could_run_or_break_under_is_refused_in_one_line(site_env, tmp_path, how, part, char):
    _, env = site_env
    marker = tmp_path / "pwned"
    root = tmp_path / "x" / part.format(marker=marker)
    proc = _create_under_root(root, how, env, tmp_path, "rooted", "--with", str(SCRIPTPKG))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("envmod: error: envmod root"), proc.stderr
    assert f"contains {char!r}" in proc.stderr
    assert not (tmp_path / "x").exists() and not marker.exists()


@pytest.mark.parametrize("how", ["ENVMOD_ROOT", "--root", "config"])
def test_a_root_below_a_regular_file_is_one_line_not_a_traceback(site_env, tmp_path, how):
    _, env = site_env
    (tmp_path / "plain").write_text("a file\n")
    proc = _create_under_root(tmp_path / "plain" / "root", how, env, tmp_path, "under")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert f"{tmp_path / 'plain'} is a file" in proc.stderr


def test_every_script_starts_and_runs_the_env_python_under_a_root_of_spaces_and_punctuation(site_env, tmp_path):
    _, env = site_env
    # Spaces (and a long path) make pip write its /bin/sh launchers; the rest is shell syntax
    # that must stay text.
    root = tmp_path / ("long " * 12) / "r o;o&t|(x)'y'#{z}*?~<>"
    marker = tmp_path / "pwned"
    proc = _create_under_root(root, "ENVMOD_ROOT", {**env, "PWNED": str(marker)}, tmp_path, "spaced",
                              "--with", str(SCRIPTPKG))
    assert proc.returncode == 0, proc.stderr
    prefix = root / "envs" / "spaced"
    script = prefix / "bin" / "scriptpkg-where"
    assert script.read_text().startswith("#!/bin/sh\n"), "pip wrote no /bin/sh launcher: the test proves nothing"
    run = subprocess.run([str(script)], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split(" ", 1) == ["SCRIPTPKG", f"{prefix} {prefix / 'bin' / 'python'}\n"]
    for launcher in (p for p in (prefix / "bin").iterdir() if p.name.startswith("pip")):
        started = subprocess.run([str(launcher), "--version"], capture_output=True, text=True, env=env)
        assert started.returncode == 0, (launcher, started.stderr)
    assert not marker.exists()


def _create_under_root(root: Path, how: str, env: dict, tmp_path: Path, name: str, *args: str):
    env = {k: v for k, v in env.items() if k != "ENVMOD_ROOT"}
    if how == "ENVMOD_ROOT":
        return envmod("create", name, *args, env={**env, "ENVMOD_ROOT": str(root)})
    if how == "--root":
        return envmod("--root", str(root), "create", name, *args, env=env)
    import yaml

    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"root": str(root)}))
    return envmod("create", name, *args, env={**env, "ENVMOD_CONFIG": str(config)})


def test_missing_python_is_one_clear_line(site_env):
    root, env = site_env
    proc = envmod("create", "nopy", "--python", "/nonexistent/python3", env=env)
    assert proc.returncode == 3
    assert proc.stderr == "envmod: error: --python /nonexistent/python3: no such interpreter\n"
    assert_nothing_left(root, "nopy")


def test_no_module_system_is_one_clear_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LMOD", "MODULES"))}
    env["ENVMOD_ROOT"] = str(tmp_path / "root")
    proc = envmod("create", "nomods", env=env)
    assert proc.returncode == 3
    assert "no module system is initialised" in proc.stderr and proc.stderr.count("\n") == 1


def test_no_python_module_loaded_is_one_clear_line(tmp_path):
    require_site()
    shell = ModuleShell("lmod", tmp_path / "root", tmp_path / "cache")
    env = shell.environment("module load openmpi/4.1.4")
    env["ENVMOD_ROOT"] = str(shell.root)
    proc = envmod("create", "nopymod", env=env)
    assert proc.returncode == 3
    assert "no central Python: none of the loaded modules (openmpi/4.1.4) puts python3 on PATH" in proc.stderr


def test_mpi4py_without_an_mpi_module_fails_before_creating_anything(site_env):
    root, env = site_env
    proc = envmod("create", "nompi", "--with", "mpi4py", env=env)
    assert proc.returncode == 3
    assert "mpi4py must be compiled against the site's MPI but no mpi module is loaded" in proc.stderr
    assert_nothing_left(root, "nompi")


def test_pip_failure_leaves_nothing_and_names_cause_and_log(site_env):
    root, env = site_env
    proc = envmod("create", "broken", "--with", str(SLOWPKG), env={**env, "SLOWPKG_FAIL": "1"})
    assert proc.returncode == 7, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("envmod: error: install failed") and "full log: " in last
    log = Path(last.split("full log: ")[1])
    assert "deliberate build failure" in log.read_text()
    assert_nothing_left(root, "broken")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_create_leaves_nothing(site_env, sig):
    root, env = site_env
    proc = start_slow_create("interrupted", env, seconds=120)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted; nothing was put in place" in err
    assert_nothing_left(root, "interrupted")
    # pip (whose command line names the package) went with envmod.
    leftover = subprocess.run(["pgrep", "-af", str(SLOWPKG)], capture_output=True, text=True).stdout
    assert leftover == ""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_compile_leaves_no_temporary_files(site_env, tmp_path, sig):
    # pip killed mid-build cannot clean its own temporary directories (issue #9, item 9): they
    # must live in a place envmod removes on any exit.
    root, env = site_env
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    proc = start_slow_create("interrupted", {**env, "TMPDIR": str(tmpdir)}, seconds=120)
    deadline = time.monotonic() + 60
    while not any(tmpdir.rglob("pip-*")) and time.monotonic() < deadline:
        time.sleep(0.2)         # pip has made its temporary directories: it is building
    time.sleep(2)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert_nothing_left(root, "interrupted")
    assert sorted(p.name for p in tmpdir.iterdir()) == []


def test_failed_and_successful_creates_leave_no_temporary_files(site_env, tmp_path):
    root, env = site_env
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    failed = envmod("create", "broken", "--with", str(SLOWPKG), env={**env, "SLOWPKG_FAIL": "1", "TMPDIR": str(tmpdir)})
    assert failed.returncode == 7, failed.stderr
    assert sorted(p.name for p in tmpdir.iterdir()) == []
    made = envmod("create", "made", "--with", str(SLOWPKG), env={**env, "TMPDIR": str(tmpdir)})
    assert made.returncode == 0, made.stderr
    assert sorted(p.name for p in tmpdir.iterdir()) == []


def test_second_concurrent_create_of_same_name_fails_clearly(site_env):
    root, env = site_env
    first = start_slow_create("racy", env, seconds=5)
    second = envmod("create", "racy", env=env)
    assert second.returncode == 5
    assert "environment 'racy' is busy: envmod (pid" in second.stderr and "creating it" in second.stderr
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert (root / "modules/racy/py3.11.lua").is_file()


def test_existing_env_is_not_touched_without_force(site_env):
    root, env = site_env
    assert envmod("create", "keep", "-q", env=env).returncode == 0
    before = (root / "envs/keep/envmod.yaml").read_text()
    proc = envmod("create", "keep", env=env)
    assert proc.returncode == 4 and "already exists" in proc.stderr and "--force" in proc.stderr
    assert (root / "envs/keep/envmod.yaml").read_text() == before


def test_failed_force_keeps_old_env_and_module_working(site_env):
    root, env = site_env
    assert envmod("create", "sturdy", "-q", "--description", "old", env=env).returncode == 0
    record_before = (root / "envs/sturdy/envmod.yaml").read_text()
    module_before = (root / "modules/sturdy/py3.11.lua").read_text()
    proc = envmod("create", "sturdy", "--force", "--with", str(SLOWPKG), env={**env, "SLOWPKG_FAIL": "1"})
    assert proc.returncode == 7
    assert (root / "envs/sturdy/envmod.yaml").read_text() == record_before
    assert (root / "modules/sturdy/py3.11.lua").read_text() == module_before
    run = subprocess.run([str(root / "envs/sturdy/bin/python"), "-c", "import sys; print(sys.prefix)"],
                         capture_output=True, text=True)
    assert run.stdout.strip() == str(root / "envs/sturdy")


def test_interrupted_force_keeps_old_env(site_env):
    root, env = site_env
    assert envmod("create", "steady", "-q", env=env).returncode == 0
    record_before = (root / "envs/steady/envmod.yaml").read_text()
    proc = subprocess.Popen([*_argv(), "create", "steady", "--force", "--with", str(SLOWPKG)],
                            env={**env, "SLOWPKG_SLEEP": "120"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    wait_for_step(proc, "] install")
    # While the new env builds, the old one is still whole and usable.
    assert (root / "envs/steady/envmod.yaml").read_text() == record_before
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert (root / "envs/steady/envmod.yaml").read_text() == record_before
    assert (root / "modules/steady/py3.11.lua").is_file()


def test_force_replaces_env_and_installs_package(site_env):
    root, env = site_env
    assert envmod("create", "renew", "-q", "--description", "first", env=env).returncode == 0
    proc = envmod("create", "renew", "--force", "--with", str(SLOWPKG), "--description", "second", env=env)
    assert proc.returncode == 0, proc.stderr
    record = (root / "envs/renew/envmod.yaml").read_text()
    assert "second" in record and "slowpkg" in record
    run = subprocess.run([str(root / "envs/renew/bin/python"), "-c", "import slowpkg; print(slowpkg.VALUE)"],
                         capture_output=True, text=True)
    assert run.stdout.strip() == "42"
    trash = root / ".envmod" / "trash"
    assert not trash.exists() or not any(trash.iterdir())


def test_remove_needs_confirmation_then_removes_module_first(site_env):
    root, env = site_env
    assert envmod("create", "gone", "-q", env=env).returncode == 0
    refused = envmod("remove", "gone", env=env)
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert (root / "envs/gone").is_dir()
    removed = envmod("remove", "gone", "--yes", env=env)
    assert removed.returncode == 0
    assert_nothing_left(root, "gone")
    assert envmod("show", "gone", env=env).returncode == 4
