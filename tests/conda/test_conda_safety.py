"""A conda env is as safe as a venv (tests/e2e/test_failures.py, test_rebuild_safety.py), with
the site's real conda: a create killed with SIGKILL at any point leaves nothing a user sees and
the next create removes what it left; under --force the older env keeps loading; eight
concurrent creates of one name make one env; hostile names, descriptions and conda specs are
refused in one line or stay text in both module tools; bad input is one line and changes nothing.
Pure conda packages only (no compile): each create takes seconds."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time

import pytest
import yaml

from tests.conda.channel import HELLO_MODULE, MPI_APP, MPI_LABEL, build_channel
from tests.conda.conda_user import CondaUser, one_line
from tests.conftest import site_dir

pytestmark = pytest.mark.conda

SPECS = ("--conda", "python", "envmod-hello")
HOSTILE = "it's \"q\" ]] ]==] $(touch {mark}) `touch {mark}` [exec touch {mark}] ${{HOME}} \\ end"


@pytest.fixture
def user(tmp_path, conda_pkgs) -> CondaUser:
    return CondaUser.make(tmp_path / "u", conda_pkgs)


def create(name: str, *extra: str) -> list[str]:
    return ["create", name, "--backend", "conda", *SPECS, *extra]


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the create and everything it started (conda, pip), as the end of a job does."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)


def start_in_group(user: CondaUser, *args: str) -> subprocess.Popen:
    return subprocess.Popen(user.argv(*args), env=user.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, stdin=subprocess.DEVNULL, start_new_session=True)


def loads(user: CondaUser, name: str, system: str = "lmod") -> str:
    """Load ``name``'s module in a fresh shell and import the test package with its Python."""
    module = user.record(name).module.name
    run = user.in_module_shell(system, f"module load {module}\n"
                                       f"python -c 'import {HELLO_MODULE}, sys; print(sys.prefix)'")
    assert run.returncode == 0, f"{system}: {run.stdout}\n{run.stderr}"
    return run.stdout.strip().splitlines()[-1]


def timed_create(user: CondaUser, name: str, *extra: str) -> float:
    started = time.monotonic()
    proc = user.envmod(*create(name, *extra))
    assert proc.returncode == 0, proc.stderr
    return time.monotonic() - started


def kill_points(duration: float, seed: int) -> list[float]:
    """Delays spread over a whole create (solve, install, pip, record, module), jittered."""
    rng = random.Random(seed)
    return [duration * f * rng.uniform(0.85, 1.15) for f in (0.05, 0.2, 0.4, 0.6, 0.8, 0.95)]


def wait_for_record_in_a_build(user: CondaUser, name: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    """Until the new build holds its record: the env is complete, the link not yet switched."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if any((user.root / "envs" / ".builds").glob(f"{name}@*/envmod.yaml")):
            return
        time.sleep(0.002)


# ---- SIGKILL at any point -----------------------------------------------------------------

def test_a_create_killed_at_any_point_leaves_nothing_visible_and_the_next_create_cleans_up(user):
    duration = timed_create(user, "probe")
    seen_before = user.visible()
    seed = random.randrange(1 << 30)
    for delay in kill_points(duration, seed):
        proc = start_in_group(user, *create("killed"))
        time.sleep(delay)
        kill_group(proc)
        assert user.visible() == seen_before, f"seed {seed}, killed after {delay:.2f}s"
    proc = start_in_group(user, *create("killed"))
    wait_for_record_in_a_build(user, "killed", proc)
    kill_group(proc)
    visible = user.visible()
    # killed after the build was complete: either it never went live, or it went live whole
    assert visible in (seen_before, sorted(seen_before + ["envs/killed", "killed", "modules/killed"])), visible
    if "killed" in visible:
        loads(user, "killed")
    # the next create of that name leaves only its own build
    assert user.envmod(*create("killed", "--force")).returncode == 0
    live = os.path.realpath(user.root / "envs" / "killed")
    assert user.leftovers("killed") == [live]
    loads(user, "killed")


def test_a_killed_force_create_keeps_the_older_env_loading_in_both_module_tools(user):
    duration = timed_create(user, "steady", "--description", "old")
    before = (user.root / "envs" / "steady" / "envmod.yaml").read_text()
    prefix = loads(user, "steady")
    seed = random.randrange(1 << 30)
    for delay in kill_points(duration, seed)[:4]:
        proc = start_in_group(user, *create("steady", "--force", "--description", "new"))
        time.sleep(delay)
        kill_group(proc)
        assert (user.root / "envs" / "steady" / "envmod.yaml").read_text() == before, f"seed {seed}, {delay:.2f}s"
        assert loads(user, "steady") == prefix
    assert loads(user, "steady", "envmodules") == prefix
    assert user.envmod(*create("steady", "--force", "--description", "new")).returncode == 0
    assert user.record("steady").description == "new"
    assert user.leftovers("steady") == [os.path.realpath(user.root / "envs" / "steady")]


def test_eight_concurrent_creates_of_one_name_make_one_env(user):
    procs = [start_in_group(user, *create("racy")) for _ in range(8)]
    results = [(p.wait(timeout=600), p.stderr.read() if p.stderr else "") for p in procs]
    won = [err for code, err in results if code == 0]
    lost = [(code, err) for code, err in results if code != 0]
    assert len(won) == 1, results
    for code, err in lost:
        assert code in (4, 5), err
        lines = [line for line in err.splitlines() if line.startswith("envmod:")]
        assert len(lines) == 1 and ("is busy" in lines[0] or "already exists" in lines[0]), err
    loads(user, "racy")
    assert user.leftovers("racy") == [os.path.realpath(user.root / "envs" / "racy")]


# ---- hostile input ------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["../up", "a;b", "$(touch x)", "a b", "-rf", ".builds", "a/b", "a]]b", "a`id`"])
def test_hostile_names_are_refused_in_one_line(user, name):
    proc = user.envmod(*create(name))
    assert proc.returncode == 2
    one_line(proc)
    assert user.visible() == []


def test_a_hostile_description_stays_text_in_both_module_tools(user, tmp_path):
    mark = tmp_path / "pwned"
    description = HOSTILE.format(mark=mark)
    assert user.envmod(*create("hostile", "--description", description)).returncode == 0
    module = user.record("hostile").module.name
    for system in ("lmod", "envmodules"):
        run = user.in_module_shell(system, f"module load {module}\nmodule whatis {module} 2>&1\n"
                                           f"python -c 'import {HELLO_MODULE}'")
        assert run.returncode == 0, run.stderr
        assert "]] ]==] $(touch" in run.stdout + run.stderr
    assert not mark.exists()


@pytest.mark.parametrize("spec, says", [
    ("--override-channels", "option"),
    ("-c", "option"),
    ("envmod-hello -c file:///evil", "option"),
    ("envmod-hello\n--override-channels", "control character"),
    ("elsewhere::envmod-hello", "which is not one of the channels"),
    ("envmod-hello[channel=file:///evil]", "names where to fetch it from"),
    ("$(touch {mark})", ""),
    ("`touch {mark}`", ""),
    ("envmod-hello]]", ""),
])
def test_hostile_conda_specs_are_refused_in_one_line(user, tmp_path, spec, says):
    mark = tmp_path / "pwned"
    proc = user.envmod("create", "specs", "--backend", "conda", f"--conda={spec.format(mark=mark)}")
    assert proc.returncode != 0
    assert says in one_line(proc)
    assert user.visible() == [] and not mark.exists()


# ---- bad input: one line, nothing changed -------------------------------------------------

def test_an_unresolvable_spec_is_one_line(user):
    proc = user.envmod("create", "nosuch", "--backend", "conda", "--conda", "python", "envmod-no-such-package")
    assert "envmod-no-such-package" in one_line(proc)
    assert user.visible() == [] and user.leftovers("nosuch") == []


def test_an_unreachable_channel_is_one_line(user, tmp_path):
    envfile = tmp_path / "environment.yml"
    envfile.write_text(yaml.safe_dump({"channels": [f"file://{tmp_path}/no-such-channel"],
                                       "dependencies": ["python", "envmod-hello"]}))
    proc = user.envmod("create", "unreach", "--backend", "conda", "-f", str(envfile))
    assert proc.returncode != 0
    one_line(proc)
    assert user.visible() == [] and user.leftovers("unreach") == []


def test_no_conda_is_one_line_before_anything_is_made(tmp_path, conda_pkgs):
    bare = CondaUser.make(tmp_path / "w", conda_pkgs, loads="")
    proc = bare.envmod(*create("noconda"))
    assert "conda" in one_line(proc)
    assert bare.visible() == [] and bare.leftovers("noconda") == []


def test_a_spec_dragging_in_a_conda_mpi_is_one_line(user, tmp_path):
    channel = build_channel(tmp_path / "mpi-channel", str(site_dir() / "software/python/3.11.2/bin/python3"),
                            conda_mpi=True)
    envfile = tmp_path / "environment.yml"
    envfile.write_text(yaml.safe_dump({"channels": [f"file://{channel}", f"file://{channel}/label/{MPI_LABEL}"],
                                       "dependencies": ["python", MPI_APP]}))
    proc = user.envmod("create", "condampi", "--backend", "conda", "-f", str(envfile))
    assert MPI_APP in one_line(proc) or "MPI" in one_line(proc)
    assert user.visible() == [] and user.leftovers("condampi") == []


def test_a_failed_force_create_changes_nothing(user):
    assert user.envmod(*create("keep", "--description", "old")).returncode == 0
    before = (user.root / "envs" / "keep" / "envmod.yaml").read_text()
    proc = user.envmod("create", "keep", "--force", "--backend", "conda", "--conda", "python", "envmod-no-such")
    one_line(proc)
    assert (user.root / "envs" / "keep" / "envmod.yaml").read_text() == before
    loads(user, "keep", "envmodules")
    assert user.leftovers("keep") == [os.path.realpath(user.root / "envs" / "keep")]
