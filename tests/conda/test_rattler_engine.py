"""RattlerEngine: real py-rattler solving and installing from the test channel (no conda, no
network), in child processes; its exit crash never fails a create, over many runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bridge.build.backends.rattler import RattlerEngine, rattler_version
from bridge.config import load_settings
from bridge.errors import BuildError, ConfigError, EnvmodError, PlanError, UsageError
from tests.conda.channel import HELLO_MODULE, MPI_LABEL, MPI_PLACEHOLDERS, conda_subdir
from tests.conftest import REPO, skip_or_fail

FAKE_WORKER = Path(__file__).with_name("rattler_fake_worker.py")
SPECS = ["python", "pip", "envmod-hello", "envmod-activate", "openmpi"]


@pytest.fixture
def channels(channel: Path) -> list[str]:
    return [f"file://{channel}", f"file://{channel}/label/{MPI_LABEL}"]


@pytest.fixture
def engine(tmp_path: Path) -> RattlerEngine:
    """An engine whose settings are a user's with no config files: its cache in the test's HOME.
    (The tests never import rattler themselves: its exit crash would take pytest's worker along.)"""
    if rattler_version() is None:
        skip_or_fail("py-rattler is not installed (it comes with envmod's [test] extra)")
    home = tmp_path / "home"
    return RattlerEngine(load_settings({"HOME": str(home), "ENVMOD_CONFIG": str(home / "none.yaml")}))


def fake(engine: RattlerEngine, mode: str) -> RattlerEngine:
    return RattlerEngine(engine.settings, worker=[sys.executable, str(FAKE_WORKER), mode])


def assert_one_line(error: EnvmodError) -> str:
    line = error.one_line()
    assert "\n" not in line and "Traceback" not in line
    return line


def assert_complete_env(engine: RattlerEngine, prefix: Path, channel: Path) -> None:
    """Every package of SPECS is linked: conda-meta says so and the env's Python imports the pure one."""
    names = {p.name for p in engine.installed(prefix)}
    assert names == {"python", "pip", "envmod-hello", "envmod-activate", "openmpi", "mpi"}, names
    out = subprocess.run([str(prefix / "bin/python"), "-c", f"import sys, {HELLO_MODULE}; print(sys.prefix)"],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == str(prefix)
    assert (prefix / "etc/conda/activate.d/envmod-activate.sh").is_file()


def test_solve_names_each_package_with_its_build_and_channel(engine: RattlerEngine, channels, channel: Path,
                                                             tmp_path: Path) -> None:
    solved = {p.name: p for p in engine.solve(SPECS, channels)}
    assert set(solved) == {"python", "pip", "envmod-hello", "envmod-activate", "openmpi", "mpi"}
    assert (solved["python"].version, solved["python"].build, solved["python"].subdir) == \
        ("3.11.2", "h_envmod_venv_0", conda_subdir())
    assert solved["envmod-hello"].pin == "envmod-hello=1.0=pyh_envmod_0"
    assert solved["envmod-hello"].channel == f"file://{channel}"          # as conda list's base_url
    name, version, build = MPI_PLACEHOLDERS[0]
    assert (solved[name].version, solved[name].build) == (version, build)
    assert solved[name].channel == f"file://{channel}/label/{MPI_LABEL}"   # the label, in the URL
    assert solved["mpi"].build == "openmpi"
    assert list((tmp_path / "home").rglob("conda-meta")) == []             # a dry run: no env anywhere


def test_install_makes_the_env_that_installed_reads_back(engine: RattlerEngine, channels, channel: Path,
                                                         tmp_path: Path) -> None:
    prefix = tmp_path / "env"
    engine.install(prefix, SPECS, channels)
    assert_complete_env(engine, prefix, channel)
    assert sorted(engine.installed(prefix), key=lambda p: p.name) == \
        sorted(engine.solve(SPECS, channels), key=lambda p: p.name)
    # the package cache is envmod's, in the user's own directory
    assert engine.cache_dir.parent == tmp_path / "home/.cache/envmod/rattler"
    assert any((engine.cache_dir / "pkgs").glob("envmod-hello-1.0-pyh_envmod_0*"))


def test_a_relative_prefix_is_made_absolute(engine: RattlerEngine, channels, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    engine.install(Path("rel"), ["python", "pip"], channels)
    shebang = (tmp_path / "rel/bin/pip").read_text().splitlines()[0]
    assert shebang == f"#!{tmp_path}/rel/bin/python3.11"


def test_the_channels_default_to_the_config_and_none_is_one_line(tmp_path: Path, channels) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("conda_channels:\n" + "".join(f"  - {c}\n" for c in channels))
    settings = load_settings({"HOME": str(tmp_path), "ENVMOD_CONFIG": str(config)})
    assert list(settings.conda_channels) == channels
    assert {p.name for p in RattlerEngine(settings).solve(["envmod-hello"], [])} == {"envmod-hello", "python"}
    bare = RattlerEngine(load_settings({"HOME": str(tmp_path), "ENVMOD_CONFIG": str(tmp_path / "none.yaml")}))
    with pytest.raises(ConfigError) as info:
        bare.solve(["python"], [])
    assert "conda_channels" in assert_one_line(info.value)
    bare.check()            # rattler is installed: check() asks no more (channels may come from a file)


def test_an_unresolvable_spec_fails_in_one_line_and_leaves_nothing(engine: RattlerEngine, channels,
                                                                   tmp_path: Path) -> None:
    with pytest.raises(PlanError) as info:
        engine.install(tmp_path / "env", ["python", "envmod-hello >=2"], channels)
    line = assert_one_line(info.value)
    assert "cannot solve" in line and "envmod-hello >=2" in line
    assert not (tmp_path / "env").exists()
    with pytest.raises(UsageError) as spec:
        engine.solve(["python =="], channels)
    assert "not a conda package spec" in assert_one_line(spec.value)


@pytest.mark.parametrize("url", ["file:///nonexistent/envmod-channel", "http://127.0.0.1:9/channel"],
                         ids=["missing-directory", "connection-refused"])
def test_an_unreachable_channel_fails_in_one_line_and_leaves_nothing(engine: RattlerEngine, url: str,
                                                                     tmp_path: Path) -> None:
    with pytest.raises(BuildError) as info:
        engine.install(tmp_path / "env", ["python"], [url])
    line = assert_one_line(info.value)
    assert line.startswith(f"rattler cannot read the channels {url}:"), line
    assert not (tmp_path / "env").exists()


def test_a_prefix_with_files_is_refused_and_kept_an_empty_one_used(engine: RattlerEngine, channels,
                                                                    tmp_path: Path) -> None:
    (tmp_path / "env").mkdir()
    (tmp_path / "env/keep").write_text("mine")
    with pytest.raises(BuildError, match="exists already and is not empty"):
        engine.install(tmp_path / "env", ["python"], channels)
    assert (tmp_path / "env/keep").read_text() == "mine"
    (tmp_path / "empty").mkdir()              # the store's build directory, made for the engine
    with pytest.raises(PlanError):
        engine.install(tmp_path / "empty", ["python", "envmod-hello >=2"], channels)
    assert (tmp_path / "empty").is_dir() and not any((tmp_path / "empty").iterdir())
    engine.install(tmp_path / "empty", ["python"], channels)
    assert {p.name for p in engine.installed(tmp_path / "empty")} == {"python"}


def test_describe_names_rattler_and_its_version(engine: RattlerEngine) -> None:
    import importlib.metadata

    assert engine.describe() == {"tool": "rattler", "version": importlib.metadata.version("py-rattler"),
                                 "executable": sys.executable, "solver": "resolvo", "module": None}


@pytest.fixture(scope="module")
def envmod_without_rattler(tmp_path_factory) -> Path:
    """The Python of a venv holding envmod installed plainly (no [rattler] extra), made by uv."""
    uv = Path(sys.executable).with_name("uv")
    if not uv.exists():
        skip_or_fail("uv is not installed beside the tests' Python (it comes with envmod's [test] extra)")
    venv = tmp_path_factory.mktemp("no-rattler") / "venv"
    subprocess.run([str(uv), "venv", "-q", "--python", sys.executable, str(venv)], check=True)
    subprocess.run([str(uv), "pip", "install", "-q", "--python", str(venv / "bin/python"), str(REPO)], check=True)
    return venv / "bin/python"


def test_rattler_not_installed_is_one_line_naming_the_extra(envmod_without_rattler: Path, channels) -> None:
    """envmod without its [rattler] extra (real, no fake): check() says so before anything is
    built, and a worker asked anyway cannot import it: one line each, naming the extra."""
    code = ("import sys\n"
            "from bridge.build.backends.rattler import RattlerEngine\n"
            "from bridge.errors import EnvmodError\n"
            "for step in (lambda: RattlerEngine().check(), lambda: RattlerEngine().solve(['python'], sys.argv[1:])):\n"
            "    try:\n        step()\n    except EnvmodError as e:\n        print(type(e).__name__, e.one_line())\n")
    out = subprocess.run([str(envmod_without_rattler), "-c", code, *channels], capture_output=True, text=True,
                         cwd="/")
    assert out.returncode == 0, out.stderr
    check, solve = out.stdout.splitlines()
    assert check.startswith("ConfigError the rattler backend needs py-rattler, which is not installed"), check
    assert solve.startswith("ConfigError the rattler backend needs py-rattler, which its worker cannot import"), solve
    assert "pip install 'envmod[rattler]'" in check and "pip install 'envmod[rattler]'" in solve


# -- the exit crash -------------------------------------------------------------------------------

RUNS = int(os.environ.get("ENVMOD_RATTLER_RUNS", "40"))


def test_many_creates_in_a_row_all_succeed_and_are_complete(engine: RattlerEngine, channels, channel: Path,
                                                            tmp_path: Path) -> None:
    """RUNS consecutive solve + install, each in its own worker (the hazard is per process)."""
    expected = sorted(engine.solve(SPECS, channels), key=lambda p: p.name)
    for run in range(RUNS):
        prefix = tmp_path / f"env{run}"
        assert sorted(engine.solve(SPECS, channels), key=lambda p: p.name) == expected, run
        engine.install(prefix, SPECS, channels)
        assert_complete_env(engine, prefix, channel)


def test_workers_that_crash_at_exit_for_real_still_succeed(engine: RattlerEngine, channels) -> None:
    """A worker left to exit normally runs rattler's teardown, a race with rattler's threads that
    crashes (SIGSEGV, SIGABRT) in 3-20 % of short runs here, depending on timing (and rarely after
    the real worker's result write): however many of RUNS crash, every solve returns the solution.
    The certain crash is the fake's, below."""
    exits = []
    normal = fake(engine, "exit-normally")
    original = normal._spawn

    def spawn(op, request):
        proc = original(op, request)
        exits.append(proc.returncode)
        return proc

    normal._spawn = spawn  # type: ignore[method-assign]
    expected = engine.solve(SPECS, channels)
    for run in range(RUNS):
        assert normal.solve(SPECS, channels) == expected, run
    print(f"rattler workers that crashed at exit: {sum(1 for e in exits if e != 0)} of {RUNS}: {exits}")


@pytest.mark.parametrize("mode", ["segv-after", "abort-after"])
def test_a_worker_crashing_after_its_result_is_a_success(engine: RattlerEngine, channels, channel: Path,
                                                         tmp_path: Path, mode: str) -> None:
    """FAKE (rattler_fake_worker.py): the crash made certain, after a complete install."""
    crashing = fake(engine, mode)
    crashing.install(tmp_path / "env", SPECS, channels)
    assert_complete_env(engine, tmp_path / "env", channel)
    assert {p.name for p in crashing.solve(SPECS, channels)} == {p.name for p in engine.solve(SPECS, channels)}


def test_a_worker_dying_before_its_result_is_a_one_line_failure(engine: RattlerEngine, channels,
                                                                 tmp_path: Path) -> None:
    """FAKE (rattler_fake_worker.py): no result written, whatever happened; nothing left behind."""
    with pytest.raises(BuildError) as info:
        fake(engine, "abort-before").install(tmp_path / "env", SPECS, channels)
    line = assert_one_line(info.value)
    assert line.startswith("rattler install failed: its worker ended (SIGABRT) before giving a result"), line
    assert not (tmp_path / "env").exists()


# -- the worker started ahead (RattlerEngine.start: its start overlaps envmod's planning) --------

def _maps(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return ""


def _children() -> set[int]:
    """This process's child processes, from /proc."""
    out = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == os.getpid():
            out.add(int(stat.parent.name))
    return out


def test_a_worker_started_ahead_imports_rattler_before_its_request_then_does_it(engine: RattlerEngine, channels,
                                                                                 channel: Path, tmp_path: Path) -> None:
    engine.start()
    started = engine._started
    assert started is not None
    deadline = time.monotonic() + 60
    while "rattler" not in _maps(started.pid) and time.monotonic() < deadline:   # its import, with no request yet
        time.sleep(0.01)
    assert "rattler" in _maps(started.pid) and started.poll() is None
    engine.install(tmp_path / "env", SPECS, channels)           # handed to the worker started ahead
    assert engine._started is None and started.returncode is not None
    assert_complete_env(engine, tmp_path / "env", channel)
    assert started.pid not in _children()


def test_a_worker_started_ahead_and_never_asked_is_stopped_and_reaped(engine: RattlerEngine) -> None:
    engine.start()
    started = engine._started
    assert started is not None and started.pid in _children()
    engine.close()
    assert started.returncode is not None and started.pid not in _children()
    engine.close()                                              # nothing left to stop


def test_a_worker_whose_stdin_ends_before_a_request_exits_doing_nothing(tmp_path: Path) -> None:
    """The parent died or closed it (its create needed no rattler work): no result, exit 0."""
    proc = subprocess.run(RattlerEngine().worker, input=json.dumps({"parent_pid": os.getpid(), "sys_path": sys.path})
                          + "\n", capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
    assert list(tmp_path.iterdir()) == []


def test_a_create_refused_in_plan_stops_the_worker_it_started_early(engine: RattlerEngine, channels,
                                                                    tmp_path: Path) -> None:
    """The session starts rattler's worker before it plans; a spec refused while planning ends
    the create with the worker stopped, nothing left running."""
    from bridge.discover.stack import CentralStack
    from bridge.progress import Reporter
    from bridge.session import CreateRequest, CreateSession

    before = _children()
    request = CreateRequest(name="early", backend="rattler", conda_specs=["-c", "python"],
                            conda_channels=channels, module_type="lmod")
    session = CreateSession(request, engine.settings, Reporter(quiet=True), environ={"PATH": "/usr/bin:/bin"},
                            stack=CentralStack(None, ()))
    with pytest.raises(UsageError):
        session.run()
    assert _children() == before
    assert isinstance(session._backend.engine, RattlerEngine) and session._backend.engine._started is None
