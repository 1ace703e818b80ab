"""``envmod rebuild`` is atomic like create, and compiles again only what was compiled against the
site: a failed or interrupted rebuild leaves the old env byte for byte as it was and usable, a
package not compiled against the site is left alone, and ``--from-loaded`` refreshes the record
and gives a module that still runs a 2-rank MPI program.

One env (mpi4py compiled from source against openmpi/4.1.4, plus the pure-Python ``six`` from a
binary wheel and the local ``slowpkg`` built from source against nothing) is created once, under
real Lmod, over a copy of the site's module tree (so /opt/envmod-site is never touched), with the
run's warm wheel cache (conftest's ``compiled_env`` compiled mpi4py against these very libraries),
so its create and the rebuilds that are about something else take seconds; the interrupted
rebuild uses an empty cache, so its compile is real.

The one fake: a broken MPI compiler wrapper. Maintenance breaking ``mpicc`` cannot be caused on
the real site without breaking it for everyone, so the copied openmpi/4.1.4 module is made to
put a failing ``mpicc`` (a script that exits 1) first on PATH; pip, mpi4py's build and envmod
all run for real and fail for real because of it.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.conftest import REPO, ModuleShell, require_site, site_dir

from bridge.store.record import read_record

pytestmark = pytest.mark.slow

RANKS = REPO / "ci/ranks.py"
SLOWPKG = REPO / "tests/e2e/pkgs/slowpkg"
ENV = "safe"
OPENMPI_PATH_LINE = 'prepend_path("PATH", pathJoin(root, "bin"))'


@dataclass
class Built:
    base: Path
    pristine: Path        # the copied module tree, never changed
    live: Path            # the tree MODULEPATH points at (a test may break it, then restores it)
    wheels: Path          # the wheel cache the env was built with (holds its mpi4py wheel)
    shell: ModuleShell

    @property
    def root(self) -> Path:
        return self.shell.root

    @property
    def env(self) -> Path:
        return self.root / "envs" / ENV

    @property
    def record_file(self) -> Path:
        return self.env / "envmod.yaml"

    @property
    def modulefile(self) -> Path:
        return self.root / "modules" / ENV / "py3.11.lua"

    def run(self, script: str, wheels: Path | None = None, timeout: float = 1800):
        return self.shell.run(f"export MODULEPATH={self.live}/lua\n" + script, timeout=timeout,
                              extra_env={"ENVMOD_WHEEL_CACHE": str(wheels or self.wheels)})

    def restore_site(self) -> None:
        shutil.rmtree(self.live)
        shutil.copytree(self.pristine, self.live, symlinks=True)


@pytest.fixture(scope="module")
def built(tmp_path_factory, compiled_env) -> Built:
    require_site()
    base = tmp_path_factory.mktemp("rebuild-safety")
    pristine = base / "pristine-modules"
    shutil.copytree(site_dir() / "modules", pristine, symlinks=True)
    live = base / "modules"
    shutil.copytree(pristine, live, symlinks=True)
    (base / "root").mkdir()
    # The run's compiled env filled this cache with an mpi4py built against these very libraries.
    b = Built(base, pristine, live, compiled_env.wheels, ModuleShell("lmod", base / "root", base / "cache"))
    result = b.run(f"module load python/3.11 openmpi/4.1.4\n$ENVMOD create {ENV} --with mpi4py six {SLOWPKG}").check()
    assert "] reuse mpi4py" in result.stderr and "] compile mpi4py" not in result.stderr, result.stderr
    return b


@pytest.fixture
def site(built: Built):
    yield built
    built.restore_site()


# ---- what "unchanged" means --------------------------------------------------------------------

def tree_digest(top: Path) -> dict[str, tuple]:
    """Every entry under ``top``: a file's content hash and mode, a link's target, a dir's mode."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(top))
            st = path.lstat()
            if path.is_symlink():
                out[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                out[rel] = ("dir", st.st_mode)
            else:
                out[rel] = ("file", st.st_mode, st.st_size, st.st_mtime_ns,
                            hashlib.sha256(path.read_bytes()).hexdigest())
    return out


@dataclass
class Snapshot:
    record: bytes
    modulefile: bytes
    tree: dict[str, tuple]

    @classmethod
    def of(cls, b: Built) -> "Snapshot":
        return cls(b.record_file.read_bytes(), b.modulefile.read_bytes(), tree_digest(b.env))


def assert_untouched(b: Built, before: Snapshot) -> None:
    assert b.record_file.read_bytes() == before.record, "the record changed"
    assert b.modulefile.read_bytes() == before.modulefile, "the modulefile changed"
    now = tree_digest(b.env)
    changed = sorted(k for k in before.tree.keys() | now.keys() if before.tree.get(k) != now.get(k))
    assert not changed, f"env files changed: {changed[:20]}"
    assert sorted(p.name for p in (b.root / "modules").iterdir()) == [ENV]
    assert sorted(p.name for p in (b.root / "modules" / ENV).iterdir()) == ["py3.11.lua"]


def assert_no_leftovers(b: Built) -> None:
    """Nothing of the rebuild is left in the store's state dirs (src/bridge/store/root.py's layout)."""
    state = b.root / ".envmod"
    for kind in ("staging", "trash"):
        d = state / kind
        assert not d.exists() or not any(d.iterdir()), (kind, list(d.iterdir()))
    assert sorted(p.name for p in (b.root / "envs").iterdir()) == [ENV]


def assert_still_works(b: Built) -> None:
    result = b.run(f"""
module purge
module use "$ENVMOD_ROOT/modules"
module load {ENV}/py3.11
python -c 'import mpi4py.MPI as M, six, slowpkg; print("MPI", M.Get_library_version().split()[0], six.__version__, slowpkg.VALUE)'
""").check()
    assert re.search(r"^MPI Open \S+ 42$", result.stdout, flags=re.M), result.stdout


def dist_files(env: Path, dist: str) -> dict[str, tuple]:
    """Each file a distribution's RECORD lists (and the RECORD): (mtime_ns, size, sha256)."""
    site = next(env.glob("lib/python3.11/site-packages"))
    record = next(site.glob(f"{dist}-*.dist-info/RECORD"))
    out = {}
    for line in record.read_text().splitlines():
        rel = line.split(",", 1)[0]
        path = (site / rel).resolve()
        if path.is_file():
            st = path.stat()
            out[rel] = (st.st_mtime_ns, st.st_size, hashlib.sha256(path.read_bytes()).hexdigest())
    assert out, dist
    return out


def envmod_argv() -> list[str]:
    exe = Path(sys.executable).with_name("envmod")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "bridge"]


def descendants(pid: int) -> set[tuple[int, str]]:
    """(pid, start time) of every live descendant of ``pid``, from /proc."""
    parent: dict[int, int] = {}
    start: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parent[int(entry.name)] = int(fields[1])
            start[int(entry.name)] = fields[19]
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        for child, ppid in parent.items():
            if ppid == p and (child, start[child]) not in out:
                out.add((child, start[child]))
                todo.append(child)
    return out


def alive(proc: tuple[int, str]) -> bool:
    try:
        fields = Path(f"/proc/{proc[0]}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[19] == proc[1] and fields[0] != "Z"


# ---- the tests --------------------------------------------------------------------------------

def test_failed_rebuild_leaves_the_old_env_untouched_and_usable(site):
    b = site
    before = Snapshot.of(b)
    badbin = b.base / "broken-mpicc-bin"
    badbin.mkdir(exist_ok=True)
    mpicc = badbin / "mpicc"
    mpicc.write_text("#!/bin/sh\necho 'mpicc: broken by maintenance (envmod test)' >&2\nexit 1\n")
    mpicc.chmod(0o755)
    lua = b.live / "lua/openmpi/4.1.4.lua"
    text = lua.read_text()
    assert OPENMPI_PATH_LINE in text
    # The site's openmpi/4.1.4 now puts a failing mpicc first on PATH (its real bin after it).
    lua.write_text(text.replace(OPENMPI_PATH_LINE, f'prepend_path("PATH", "{badbin}")\n'
                                                   'append_path("PATH", pathJoin(root, "bin"))'))
    logs_before = set((b.root / "logs" / ENV).iterdir())

    result = b.run(f"$ENVMOD rebuild {ENV} || echo REBUILD-EXIT=$?")

    assert "REBUILD-EXIT=7" in result.stdout, result.stdout + result.stderr
    assert "] compile mpi4py" in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("envmod: error: compile mpi4py failed") and "full log: " in last, last
    # It really was the broken compiler (the build's MPICC) that failed it; the log stays.
    log = Path(last.split("full log: ")[1])
    assert log.parent == b.root / "logs" / ENV and log not in logs_before
    assert f"MPICC={mpicc}" in log.read_text()
    assert "rebuilt" not in result.stdout

    assert_untouched(b, before)
    assert_no_leftovers(b)
    b.restore_site()
    assert_still_works(b)


def test_interrupted_rebuild_leaves_the_old_env_untouched(site, tmp_path):
    b = site
    before = Snapshot.of(b)
    environ = b.shell.environment(f"export MODULEPATH={b.live}/lua")
    # An empty wheel cache: mpi4py is really compiled, and interrupted while it is.
    environ.update(ENVMOD_ROOT=str(b.root), ENVMOD_WHEEL_CACHE=str(tmp_path / "empty-wheels"))
    proc = subprocess.Popen([*envmod_argv(), "rebuild", ENV], env=environ, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        seen = ""
        assert proc.stderr is not None
        deadline = time.monotonic() + 300
        while "] compile mpi4py" not in seen and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line and proc.poll() is not None:
                break
            seen += line
        assert "] compile mpi4py" in seen, seen
        log = max((b.root / "logs" / ENV).glob("rebuild-*.log"), key=lambda p: p.stat().st_mtime_ns)
        # Wait until mpi4py's own build runs (its output reaches the log), so the interruption
        # lands mid-compile, not before pip has started it.
        while time.monotonic() < deadline and not re.search(r"running build_ext|building 'mpi4py|checking for MPI",
                                                           log.read_text(errors="replace")):
            assert proc.poll() is None, seen + proc.stderr.read()
            time.sleep(0.5)
        assert proc.poll() is None
        # While the new build runs, the old env is whole.
        assert b.record_file.read_bytes() == before.record
        children = descendants(proc.pid)
        assert children, "no pip process under envmod"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert f"rebuild of '{ENV}' interrupted; nothing was put in place" in err
    # pip and the compiler it ran went with envmod.
    time.sleep(1)
    assert not [c for c in children if alive(c)], "processes of the interrupted rebuild survived"
    assert_untouched(b, before)
    assert_no_leftovers(b)
    assert not list((tmp_path / "empty-wheels").rglob("*.whl")), "an interrupted compile was cached"
    assert_still_works(b)


def test_rebuild_leaves_packages_not_compiled_against_the_site_alone(built):
    b = built
    old = read_record(b.record_file)
    how = {p.name.lower(): (p.install, p.built_against) for p in old.packages}
    assert how["mpi4py"] == ("source", ["openmpi/4.1.4"])
    assert how["six"] == ("wheel", []) and how["slowpkg"] == ("source", [])
    six_before, slow_before = dist_files(b.env, "six"), dist_files(b.env, "slowpkg")
    mpi_so = next(b.env.glob("lib/python3.11/site-packages/mpi4py/MPI.*.so"))
    mpi_before = mpi_so.stat().st_mtime_ns

    result = b.run(f"$ENVMOD rebuild {ENV}").check()

    version = next(p.version for p in old.packages if p.name.lower() == "mpi4py")
    plan = re.search(r"\] plan: (.*)$", result.stderr, flags=re.M)
    assert plan and plan.group(1) == f"mpi4py {version}", result.stderr
    assert "] reuse mpi4py" in result.stderr      # the fixture's wheel: same libraries
    assert f"rebuilt {ENV}: mpi4py {version} against openmpi/4.1.4" in result.stdout
    assert not re.search(r"\] (compile|reuse|install|cache) (six|slowpkg)", result.stderr), result.stderr
    # mpi4py was installed again; six and slowpkg are the very same files, same mtimes.
    assert mpi_so.stat().st_mtime_ns != mpi_before
    assert dist_files(b.env, "six") == six_before
    assert dist_files(b.env, "slowpkg") == slow_before
    new = read_record(b.record_file)
    assert {p.name.lower(): (p.install, p.built_against) for p in new.packages} == how
    assert new.created == old.created and len(new.rebuilt) == len(old.rebuilt) + 1
    assert_no_leftovers(b)
    assert_still_works(b)


def test_rebuild_from_loaded_refreshes_record_and_module_runs_mpi(built):
    b = built
    old = read_record(b.record_file)
    module_before = b.modulefile.read_text()
    time.sleep(1.1)          # record times have one-second resolution
    result = b.run(f"""
module load python/3.11 openmpi/4.1.4
$ENVMOD rebuild {ENV} --from-loaded
$ENVMOD check {ENV}
module purge
module use "$ENVMOD_ROOT/modules"
module load {ENV}/py3.11
snap during
mpirun -n 2 python {RANKS}
""").check()
    assert "] discover: python/3.11 (python), openmpi/4.1.4 (mpi)" in result.stderr
    assert f"{ENV}/py3.11 now loads python/3.11, openmpi/4.1.4" in result.stdout
    assert "healthy" in result.stdout
    assert "ranks [0, 1] of 2 library Open" in result.stdout
    assert {"python/3.11", "openmpi/4.1.4", f"{ENV}/py3.11"} <= set(result.snapshots["during"]["LOADEDMODULES"].split(":"))

    new = read_record(b.record_file)
    assert new.created == old.created
    assert len(new.rebuilt) == len(old.rebuilt) + 1
    last = new.rebuilt[-1]
    assert last.at > (old.rebuilt[-1].at if old.rebuilt else old.created.at)
    assert last.module_system == "lmod" and last.log and Path(last.log).is_file()
    assert new.module.depends_on == ["python/3.11", "openmpi/4.1.4"]
    assert [m.name for m in new.central_modules][:2] == ["python/3.11", "openmpi/4.1.4"]
    mpi = next(p for p in new.packages if p.name.lower() == "mpi4py")
    assert mpi.built_against == ["openmpi/4.1.4"] and mpi.cached_wheel
    assert any(e.provider == "openmpi/4.1.4" and e.needs.startswith("libmpi.so") for e in new.links)
    assert b.modulefile.read_text() == module_before      # same dependencies, same module text
    assert_no_leftovers(b)
