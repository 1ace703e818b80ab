"""Shared test helpers: the real central site built by ci/site.sh, and real module shells.

Tests that need the site skip with a reason when it is absent, unless ENVMOD_REQUIRE_SITE=1
(set by .ci/run), where a missing site is a failure: CI must never pass by skipping.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import importlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import NoReturn, Sequence

import pytest

REPO = Path(__file__).resolve().parent.parent
SYSTEMS = ("lmod", "envmodules")


def site_dir() -> Path:
    return Path(os.environ.get("ENVMOD_SITE", "/opt/envmod-site"))


def missing_reason(what: str, needed: Sequence[Path], build_with: str) -> str | None:
    """Why ``what`` (a central site) cannot be used: the files of ``needed`` it lacks, and the
    script that builds it; None when it is all there."""
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        return f"{what} not built ({', '.join(missing)} missing): run 'bash {build_with}'"
    return None


def site_missing_reason() -> str | None:
    site = site_dir()
    return missing_reason("central test site", [site / "software/python/3.11.2/bin/python3", site / "modules/lua",
                                                site / "modules/tcl", site / "envmodules", REPO / "ci/modules.sh"],
                          "ci/site.sh")


def require_site() -> None:
    reason = site_missing_reason()
    if reason:
        if os.environ.get("ENVMOD_REQUIRE_SITE") == "1":
            pytest.fail(reason)
        pytest.skip(reason)


def skip_or_fail(reason: str) -> NoReturn:
    """Skip with ``reason`` locally, fail under ENVMOD_REQUIRE_SITE=1 (require_site's rule), for
    anything CI always has: the site setup's tools (lmod brings lua, tcl brings tclsh, binutils
    readelf) and the [test] extra. There, its absence is a broken setup, not a reason to pass."""
    if os.environ.get("ENVMOD_REQUIRE_SITE") == "1":
        pytest.fail(reason + " (ENVMOD_REQUIRE_SITE=1: CI must not pass by skipping)")
    pytest.skip(reason)


# Programs the site setup installs (ci/site.sh: lmod, which brings lua5.x, tcl, build-essential,
# which brings binutils): the names to try on PATH, first first, and where each comes from.
SITE_TOOLS: dict[str, tuple[tuple[str, ...], str]] = {
    "lua": (("lua", "lua5.4", "lua5.3", "lua5.2", "lua5.1"), "Lmod's lua5.x package"),
    "luac": (("luac", "luac5.4", "luac5.3", "luac5.2", "luac5.1"), "Lmod's lua5.x package"),
    "tclsh": (("tclsh", "tclsh8.6", "tclsh9.0"), "the tcl package"),
    "readelf": (("readelf",), "binutils (build-essential)"),
    "bash": (("bash",), "bash"),
    "find": (("find",), "findutils"),
    "zsh": (("zsh",), "the zsh package"),
    "tcsh": (("tcsh",), "the tcsh package"),
    "fish": (("fish",), "the fish package"),
}


def require_tool(tool: str) -> str:
    """The path of ``tool`` (or of the first of its SITE_TOOLS names found on PATH), else
    skip_or_fail saying what provides it."""
    names, provider = SITE_TOOLS.get(tool, ((tool,), tool))
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    skip_or_fail(f"{' or '.join(names)} not found on PATH (it comes with {provider}, which the ci/ set-up installs)")


def require_module(name: str, provider: str) -> ModuleType:
    """``import name``, else skip_or_fail, saying what provides it."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        skip_or_fail(f"cannot import {name} ({exc}; it comes with {provider})")


def envmod_command() -> str:
    exe = Path(sys.executable).with_name("envmod")
    return shlex.quote(str(exe)) if exe.exists() else f"{shlex.quote(sys.executable)} -m bridge"


@dataclass
class ShellResult:
    returncode: int
    stdout: str
    stderr: str
    snapshots: dict[str, dict[str, str]]

    def check(self) -> "ShellResult":
        assert self.returncode == 0, f"exit {self.returncode}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"
        return self


class ModuleShell:
    """Runs bash scripts with one real module system initialised (ci/modules.sh), as a user would.

    Inside a script, ``snap NAME`` records the whole environment at that point, and ``$ENVMOD``
    runs the envmod command under test.
    """

    def __init__(self, system: str, root: Path, cache: Path) -> None:
        self.system = system
        self.root = root
        self.cache = cache

    def run(self, script: str, timeout: float = 600, extra_env: dict | None = None) -> ShellResult:
        preamble = f"""
set -e
source {shlex.quote(str(REPO / 'ci/modules.sh'))}
{'use_lmod' if self.system == 'lmod' else 'use_envmodules'}
export ENVMOD_ROOT={shlex.quote(str(self.root))} XDG_CACHE_HOME={shlex.quote(str(self.cache))}
ENVMOD={envmod_command()}
snap() {{ printf '@@SNAP %s ' "$1"; env -0 | base64 -w0; echo; }}
"""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("LMOD", "MODULE", "__LMOD", "_ModuleTable", "__MODULES"))
               and k not in ("LOADEDMODULES", "_LMFILES_", "VIRTUAL_ENV", "ENVMOD_ROOT")}
        env["ENVMOD_SITE"] = str(site_dir())
        # A PATH naming a directory twice (as an inherited one may) is folded by Lmod when a
        # module's prepend is taken back; start from what a login shell would have.
        env["PATH"] = ":".join(dict.fromkeys(p for p in env.get("PATH", "/usr/bin:/bin").split(":") if p))
        env.update(extra_env or {})
        proc = subprocess.run(["bash", "--noprofile", "--norc", "-c", preamble + script], capture_output=True,
                              text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL)
        snapshots, lines = {}, []
        for line in proc.stdout.splitlines():
            if line.startswith("@@SNAP "):
                _, name, data = line.split(" ", 2)
                raw = base64.b64decode(data).decode(errors="replace")
                snapshots[name] = dict(item.split("=", 1) for item in raw.split("\0") if "=" in item)
            else:
                lines.append(line)
        return ShellResult(proc.returncode, "\n".join(lines), proc.stderr, snapshots)

    def environment(self, script: str = "") -> dict[str, str]:
        """The environment after ``script`` (e.g. module loads), to run envmod directly in."""
        return self.run(script + "\nsnap env").check().snapshots["env"]


def write_wheel(wheel: Path, files: dict[str, bytes]) -> Path:
    """Write ``files`` (archive path -> bytes, the .dist-info's METADATA and WHEEL among them) as
    the wheel ``wheel``, with the RECORD of their sha256 that pip checks on install."""
    dist = next(p.split("/", 1)[0] for p in files if p.split("/", 1)[0].endswith(".dist-info"))
    record = "".join(f"{p},sha256={base64.urlsafe_b64encode(hashlib.sha256(d).digest()).rstrip(b'=').decode()},{len(d)}\n"
                     for p, d in files.items()) + f"{dist}/RECORD,,\n"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, data in files.items():
            zf.writestr(path, data)
        zf.writestr(f"{dist}/RECORD", record)
    return wheel


@pytest.fixture
def envmod_root(tmp_path: Path) -> Path:
    root = tmp_path / "envmod-root"
    root.mkdir()
    return root


@pytest.fixture(params=SYSTEMS)
def shell(request, tmp_path: Path, envmod_root: Path) -> ModuleShell:
    """A module shell for each real module system."""
    require_site()
    return ModuleShell(request.param, envmod_root, tmp_path / "cache")


@pytest.fixture
def lmod_shell(tmp_path: Path, envmod_root: Path) -> ModuleShell:
    require_site()
    return ModuleShell("lmod", envmod_root, tmp_path / "cache")


@pytest.fixture
def tcl_shell(tmp_path: Path, envmod_root: Path) -> ModuleShell:
    require_site()
    return ModuleShell("envmodules", envmod_root, tmp_path / "cache")


@pytest.fixture(scope="module")
def users():
    """alice and bob, real users, both in a group the test made (tests/users.py; removed afterwards)."""
    from tests.users import make_users

    made, remove = make_users()
    try:
        yield made
    finally:
        remove()


@dataclass
class CompiledEnv:
    """``myenv``: mpi4py and h5py compiled from source against the plain site (python/3.11,
    openmpi/4.1.4, hdf5/1.10.8) by a real ``envmod create`` under Lmod."""

    shell: ModuleShell      # its root; Lmod
    result: ShellResult     # what the create printed
    wheels: Path            # the wheel cache it filled: mpi4py and h5py built against the plain site


def _shared_tmp(tmp_path_factory) -> Path:
    """A directory every pytest-xdist worker of this run sees (the workers' common base)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def compiled_env(tmp_path_factory) -> CompiledEnv:
    """Made once per test run, whichever worker asks first (the others wait for it under a lock and
    read what it printed): compiling mpi4py and h5py costs minutes. Tests that need a compiled env
    but are not about compiling give their own creates ``ENVMOD_WHEEL_CACHE=compiled_env.wheels``
    and reuse these builds; the tests about compiling and the wheel cache use empty caches."""
    require_site()
    shared = _shared_tmp(tmp_path_factory) / "compiled-env"
    shared.mkdir(exist_ok=True)
    shell = ModuleShell("lmod", shared / "root", shared / "cache")
    wheels = shared / "wheels"
    done = shared / "result.json"
    with open(shared / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shell.root.mkdir(exist_ok=True)
            result = shell.run("""
module load python/3.11 openmpi/4.1.4 hdf5/1.10.8
$ENVMOD create myenv --with mpi4py h5py --description "MPI + parallel HDF5"
""", timeout=1800, extra_env={"ENVMOD_WHEEL_CACHE": str(wheels)})
            done.write_text(json.dumps(result.__dict__))
    return CompiledEnv(shell, ShellResult(**json.loads(done.read_text())), wheels)


# Bookkeeping variables that the module tools themselves keep; the rest of the environment
# must come back exactly as it was when a module is unloaded.
_TOOL_STATE = ("_ModuleTable", "__LMOD", "LMOD_", "__MODULES_", "_LMFILES_", "LOADEDMODULES", "MODULES_LMALTNAME")


def user_visible(env: dict[str, str]) -> dict[str, str]:
    """``env`` without the module tools' own bookkeeping."""
    return {k: v for k, v in env.items() if not k.startswith(_TOOL_STATE) and k != "_"}


def loaded(env: dict[str, str]) -> list[str]:
    """The loaded modules, in load order, as both tools keep them in LOADEDMODULES."""
    return [m for m in env.get("LOADEDMODULES", "").split(":") if m]


# ------------------------------------------------------------------ the tier table
# CI prints how long each tier took (tests/<tier>/...), so the next slowdown shows where it is.
# Under pytest-xdist the reports of every worker reach the controlling process, so the sums are
# the test time spent in each tier, whichever worker ran it.
_TIERS: dict[str, dict[str, float]] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    parts = Path(report.nodeid.split("::", 1)[0]).parts
    tier = parts[1] if len(parts) > 2 and parts[0] == "tests" else "other"
    row = _TIERS.setdefault(tier, {"seconds": 0.0, "passed": 0, "failed": 0, "skipped": 0})
    row["seconds"] += report.duration
    if report.when == "call" or report.outcome != "passed":
        if report.when != "teardown" or report.outcome == "failed":
            row[report.outcome] += 1


def pytest_terminal_summary(terminalreporter) -> None:
    if not _TIERS:
        return
    write = terminalreporter.write_line
    terminalreporter.section("time per tier (test time summed over workers)")
    write(f"{'tier':<12} {'minutes':>8} {'passed':>7} {'failed':>7} {'skipped':>8}")
    for tier, row in sorted(_TIERS.items(), key=lambda item: -item[1]["seconds"]):
        write(f"{tier:<12} {row['seconds'] / 60:>8.1f} {row['passed']:>7.0f} {row['failed']:>7.0f} {row['skipped']:>8.0f}")


# ------------------------------------------------------------------ the order files run in
# The files that compile go first, longest first, so that under pytest-xdist (one file per worker
# at a time) they start at once and the many short files fill in around them; the two that reuse
# compiled_env's builds come after test_demo.py, which makes it.
LONGEST_FIRST = (
    "tests/easybuild/test_userenv_eb_e2e.py",
    "tests/e2e/test_demo.py",
    "tests/e2e/test_recreate_sites.py",
    "tests/spack/test_spack_ext.py",
    "tests/e2e/test_wheel_cache.py",
    "tests/e2e/test_uv_compile.py",
    "tests/spack/test_lmod_hierarchy.py",
    "tests/modules/test_check_drift.py",
    "tests/e2e/test_rebuild_safety.py",
    "tests/conda/test_conda_backend_e2e.py",
    "tests/conda/test_conda_safety.py",
    "tests/e2e/test_scripts_kernels.py",
    "tests/e2e/test_backends_e2e.py",
    "tests/slurm/test_stage.py",
    "tests/slurm/test_stage_conda.py",
    "tests/conda/test_rattler_engine.py",
    "tests/e2e/test_kernel_backends.py",
)


def pytest_collection_modifyitems(items: list) -> None:
    rank = {path: i for i, path in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))   # stable: files stay whole
