"""A conda env is as safe as a venv (tests/e2e/test_failures.py, test_rebuild_safety.py), made
by the site's real conda or by py-rattler (each test for both backends): a create killed with SIGKILL at any point leaves nothing a user sees and
the next create removes what it left; under --force the older env keeps loading; eight
concurrent creates of one name make one env; hostile names, descriptions and conda specs are
refused in one line or stay text in both module tools; bad input is one line and changes nothing.
Pure conda packages only (no compile): each create takes seconds."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.conda.channel import HELLO_MODULE, MPI_APP, MPI_LABEL, build_channel
from tests.conda.conda_user import CondaUser, one_line
from tests.conda.conftest import conda_site
from tests.conda.test_rattler_engine import envmod_without_rattler  # noqa: F401  (a fixture)
from tests.conftest import site_dir, write_wheel

pytestmark = pytest.mark.conda

SPECS = ("--conda", "python", "envmod-hello")
HOSTILE = "it's \"q\" ]] ]==] $(touch {mark}) `touch {mark}` [exec touch {mark}] ${{HOME}} \\ end"


BACKENDS = ("conda", "rattler")


def site_channels() -> list[str]:
    """The conda site's channels, as its .condarc names them (rattler reads none: the config does)."""
    return [f"file://{conda_site()}/channel", f"file://{conda_site()}/channel/label/{MPI_LABEL}"]


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    if request.param == "rattler":
        pytest.importorskip("rattler", reason="py-rattler is not installed (envmod's [test] extra has it)")
    return request.param


@pytest.fixture
def user(tmp_path, conda_pkgs, backend) -> CondaUser:
    return CondaUser.make(tmp_path / "u", conda_pkgs, config=yaml.safe_dump({"conda_channels": site_channels(),
                                                                            "backend": backend}))


def create(name: str, *extra: str) -> list[str]:
    """A create of the user's backend (the config's 'backend:')."""
    return ["create", name, *SPECS, *extra]


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the create and everything it started (conda, pip: some in sessions of their own),
    as the end of a job does: all of them found first, then killed."""
    for pid in [proc.pid, *(pid for pid, _ in tree(proc.pid))]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.communicate(timeout=60)


def tree(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of every live descendant of ``pid``, from /proc."""
    parent: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                parent[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
    out: list[tuple[int, str]] = []
    todo = [pid]
    while todo:
        here = todo.pop()
        for child in [c for c, p in parent.items() if p == here]:
            with contextlib.suppress(OSError):
                out.append((child, (Path("/proc") / str(child) / "cmdline").read_bytes()
                            .replace(b"\0", b" ").decode(errors="replace")))
            todo.append(child)
    return out


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


def _in_build(user: CondaUser, name: str, what: str) -> bool:
    return any((user.root / "envs" / ".builds").glob(f"{name}@*/{what}"))


def new_builds(user: CondaUser, name: str) -> list[Path]:
    """Build directories of ``name`` that no link names yet (a create's own, in progress)."""
    live = os.path.realpath(user.root / "envs" / name)
    return [b for b in (user.root / "envs" / ".builds").glob(f"{name}@*") if os.path.realpath(b) != live]


def _rattler_working(cmds: list[str]) -> bool:
    return any("rattler_worker.py" in c for c in cmds)


#: each point of a create, as seen from outside: the solve and install into the build directory
#: (one step: conda's `create -p`, rattler's worker), pip installing into the new env, the env
#: complete (its record written) with the link not yet switched
STAGES = {
    "install": lambda user, name, cmds: (any(" create -p " in c and "/.builds/" in c and "--dry-run" not in c
                                             for c in cmds)
                                         or (_rattler_working(cmds) and bool(new_builds(user, name)))),
    "pip": lambda user, name, cmds: any("-m pip install" in c and "--dry-run" not in c for c in cmds),
    "built": lambda user, name, cmds: any((b / "envmod.yaml").exists() for b in new_builds(user, name)),
}


def kill_at(user: CondaUser, stage: str, *args: str, jitter: float = 0.0, timeout: float = 300) -> bool:
    """Start a create and SIGKILL it (and its children) once it reaches ``stage``, at a random
    point up to ``jitter`` seconds into it, or as soon as the stage ends: the kill always lands
    inside the stage or right at its end, however fast the machine runs the stage (a fixed sleep
    could outlast the whole create and kill nothing). False when the create ended before the
    stage was seen (the stage was too short to see)."""
    proc = start_in_group(user, *args)

    def in_stage() -> bool:
        return STAGES[stage](user, args[1], [cmd for _, cmd in tree(proc.pid)])

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if in_stage():
            kill_by = time.monotonic() + random.uniform(0, jitter)
            while time.monotonic() < kill_by and in_stage():
                time.sleep(0.002)
            kill_group(proc)
            return True
        time.sleep(0.005)
    proc.communicate(timeout=60)
    return False


# ---- SIGKILL at any point -----------------------------------------------------------------

def test_a_create_killed_at_any_point_leaves_nothing_visible_and_the_next_create_cleans_up(user, tmp_path):
    wheel = pure_wheel(tmp_path)
    assert user.envmod(*create("other")).returncode == 0
    seen_before = user.visible()
    args = create("killed", "--with", str(wheel))
    for stage, jitter in (("install", 0.0), ("install", 0.3), ("install", 1.5), ("pip", 0.0), ("pip", 0.1)):
        assert kill_at(user, stage, *args, jitter=jitter), f"the create never reached {stage}"
        assert user.visible() == seen_before, f"killed during {stage}"
    # killed once the build is complete: either it never went live, or it went live whole, or
    # (the modulefile is written last) it went live and its module is not yet written
    kill_at(user, "built", *args)
    visible = user.visible()
    live = sorted(seen_before + ["envs/killed", "killed"])
    assert visible in (seen_before, live, sorted(live + ["modules/killed"])), visible
    if "killed" in visible:
        if not list((user.root / "modules" / "killed").glob("*.lua")):
            said = user.envmod("check", "killed")
            assert said.returncode != 0 and "is gone" in said.stdout + said.stderr, said
            assert user.envmod("module", "killed").returncode == 0
        loads(user, "killed")
    # the next create of that name leaves only its own build
    assert user.envmod(*args, "--force").returncode == 0
    assert user.leftovers("killed") == [os.path.realpath(user.root / "envs" / "killed")]
    loads(user, "killed")


def test_a_killed_force_create_keeps_the_older_env_loading_in_both_module_tools(user, tmp_path):
    assert user.envmod(*create("steady", "--description", "old")).returncode == 0
    before = (user.root / "envs" / "steady" / "envmod.yaml").read_text()
    prefix = loads(user, "steady")
    args = create("steady", "--force", "--description", "new", "--with", str(pure_wheel(tmp_path)))
    for stage, jitter in (("install", 0.0), ("install", 1.0), ("pip", 0.1)):
        assert kill_at(user, stage, *args, jitter=jitter), f"the create never reached {stage}"
        assert (user.root / "envs" / "steady" / "envmod.yaml").read_text() == before, f"killed during {stage}"
        assert loads(user, "steady") == prefix
    assert loads(user, "steady", "envmodules") == prefix
    kill_at(user, "built", *args)      # complete: the old env, or the whole new one
    assert user.record("steady").description in ("old", "new")
    loads(user, "steady")
    assert user.envmod(*args).returncode == 0
    assert user.record("steady").description == "new"
    assert user.leftovers("steady") == [os.path.realpath(user.root / "envs" / "steady")]


def pure_wheel(directory: Path) -> Path:
    return write_wheel(directory / "envmod_wheelpkg-1.0-py3-none-any.whl", {
        "envmod_wheelpkg/__init__.py": b"VALUE = 1\n",
        "envmod_wheelpkg-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: envmod-wheelpkg\nVersion: 1.0\n",
        "envmod_wheelpkg-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                               b"Tag: py3-none-any\n"})


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
    proc = user.envmod("create", "specs", f"--conda={spec.format(mark=mark)}")
    assert proc.returncode != 0
    assert says in one_line(proc)
    assert user.visible() == [] and not mark.exists()


# ---- bad input: one line, nothing changed -------------------------------------------------

def test_an_unresolvable_spec_is_one_line(user):
    proc = user.envmod("create", "nosuch", "--conda", "python", "envmod-no-such-package")
    assert "envmod-no-such-package" in one_line(proc)
    assert user.visible() == [] and user.leftovers("nosuch") == []


def test_an_unreachable_channel_is_one_line(user, tmp_path):
    envfile = tmp_path / "environment.yml"
    envfile.write_text(yaml.safe_dump({"channels": [f"file://{tmp_path}/no-such-channel"],
                                       "dependencies": ["python", "envmod-hello"]}))
    proc = user.envmod("create", "unreach", "-f", str(envfile))
    assert proc.returncode != 0
    one_line(proc)
    assert user.visible() == [] and user.leftovers("unreach") == []


def test_no_conda_is_one_line_before_anything_is_made(tmp_path, conda_pkgs):
    bare = CondaUser.make(tmp_path / "w", conda_pkgs, loads="")
    proc = bare.envmod(*create("noconda", "--backend", "conda"))
    assert "conda" in one_line(proc)
    assert bare.visible() == [] and bare.leftovers("noconda") == []


def test_a_spec_dragging_in_a_conda_mpi_is_one_line(user, tmp_path):
    channel = build_channel(tmp_path / "mpi-channel", str(site_dir() / "software/python/3.11.2/bin/python3"),
                            conda_mpi=True)
    envfile = tmp_path / "environment.yml"
    envfile.write_text(yaml.safe_dump({"channels": [f"file://{channel}", f"file://{channel}/label/{MPI_LABEL}"],
                                       "dependencies": ["python", MPI_APP]}))
    proc = user.envmod("create", "condampi", "-f", str(envfile))
    assert MPI_APP in one_line(proc) or "MPI" in one_line(proc)
    assert user.visible() == [] and user.leftovers("condampi") == []


def test_a_failed_force_create_changes_nothing(user):
    assert user.envmod(*create("keep", "--description", "old")).returncode == 0
    before = (user.root / "envs" / "keep" / "envmod.yaml").read_text()
    proc = user.envmod("create", "keep", "--force", "--conda", "python", "envmod-no-such")
    one_line(proc)
    assert (user.root / "envs" / "keep" / "envmod.yaml").read_text() == before
    loads(user, "keep", "envmodules")
    assert user.leftovers("keep") == [os.path.realpath(user.root / "envs" / "keep")]


def test_rattler_not_installed_is_one_line_before_anything_is_made(tmp_path, conda_pkgs,
                                                                   envmod_without_rattler):  # noqa: F811
    """envmod installed without its [rattler] extra (real, no fake: the rattler tier's venv)."""
    plain = CondaUser.make(tmp_path / "w", conda_pkgs, loads="",
                           config=yaml.safe_dump({"conda_channels": site_channels()}))
    proc = subprocess.run([str(envmod_without_rattler.with_name("envmod")), *create("norattler", "--backend", "rattler")],
                          env=plain.env, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)
    assert "needs py-rattler, which is not installed" in one_line(proc)
    assert plain.visible() == [] and plain.leftovers("norattler") == []
