"""The wheel cache and `envmod rebuild` on a private copy of the central site, where MPI can
really be swapped: a wheel compiled against one MPI is never installed against another, one
compiled against the same libraries is reused, and rebuild recompiles what drifted.

MPICH comes from Debian (libmpich-dev), OpenMPI from the site; both are real."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from tests.conftest import REPO, ModuleShell, require_site, site_dir, write_wheel

from bridge.store.record import read_record

RANKS = REPO / "ci/ranks.py"

pytestmark = pytest.mark.slow
MULTIARCH = "/usr/lib/x86_64-linux-gnu"
# The reuse and swap tests run for each backend, venv first (after the swap it compiles, uv may reuse).
BACKENDS = ("venv", "uv")
ENV_NAMES = {"venv": ("a2", "a3"), "uv": ("u1", "u2")}     # the envs of the reuse and the swap tests
MPI_USER_WHEEL = "envmod_mpi_user-1.0-py3-none-any.whl"


def wrap_mpich(prefix: Path) -> None:
    """A module prefix over Debian's MPICH, shaped like the site's OpenMPI wrapper."""
    if prefix.exists():
        shutil.rmtree(prefix)
    (prefix / "bin").mkdir(parents=True)
    (prefix / "lib").mkdir()
    for tool in ("mpicc", "mpicxx", "mpirun", "mpiexec"):
        os.symlink(f"/usr/bin/{tool}.mpich", prefix / "bin" / tool)
    for helper in Path("/usr/bin").glob("hydra_*"):   # mpiexec looks for its proxy beside itself
        os.symlink(helper, prefix / "bin" / helper.name)
    for lib in Path(MULTIARCH).glob("libmpich*.so*"):
        os.symlink(lib, prefix / "lib" / lib.name)


def lua_module(path: Path, prefix: Path, extra: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'family("mpi")\nprepend_path("PATH", "{prefix}/bin")\n'
                    f'prepend_path("LD_LIBRARY_PATH", "{prefix}/lib")\nsetenv("MPI_HOME", "{prefix}")\n{extra}')


@pytest.fixture(scope="module")
def private_site(tmp_path_factory):
    require_site()
    if not Path(f"{MULTIARCH}/libmpich.so.12").exists():
        pytest.fail("MPICH is missing: ci/setup.sh installs libmpich-dev")
    base = tmp_path_factory.mktemp("private-site")
    site = site_dir()
    shutil.copytree(site / "software/openmpi/4.1.4", base / "software/openmpi/4.1.4", symlinks=True)
    wrap_mpich(base / "software/mpich/4.0.2")
    modules = base / "modules"
    shutil.copytree(site / "modules/lua/python", modules / "python")
    lua_module(modules / "openmpi/4.1.4.lua", base / "software/openmpi/4.1.4")
    lua_module(modules / "mpich/4.0.2.lua", base / "software/mpich/4.0.2")
    shell = ModuleShell("lmod", base / "root", base / "cache")
    # a pure package needing mpi4py: what uv installs in the backend tests' creates
    write_wheel(base / MPI_USER_WHEEL, {
        "envmod_mpi_user/__init__.py": b"from mpi4py import MPI\n",
        "envmod_mpi_user-1.0.dist-info/METADATA":
            b"Metadata-Version: 2.1\nName: envmod-mpi-user\nVersion: 1.0\nRequires-Dist: mpi4py\n",
        "envmod_mpi_user-1.0.dist-info/WHEEL":
            b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"})
    return base, modules, shell


def run(shell: ModuleShell, modules: Path, script: str, timeout: float = 1800):
    return shell.run(f'export MODULEPATH={modules}\n' + script, timeout=timeout,
                     extra_env={"ENVMOD_WHEEL_CACHE": str(modules.parent / "wheels")})


def links_of(shell: ModuleShell, env: str) -> str:
    so = next((shell.root / "envs" / env).glob("lib/python3.11/site-packages/mpi4py/MPI.*.so"))
    return subprocess.run(["readelf", "-d", str(so)], capture_output=True, text=True).stdout


def test_first_build_compiles_and_is_cached(private_site):
    base, modules, shell = private_site
    result = run(shell, modules, "module load python/3.11 openmpi/4.1.4\n$ENVMOD create a1 --with mpi4py").check()
    assert "] compile mpi4py" in result.stderr and "] cache mpi4py" in result.stderr
    # <cache>/<writer>/mpi4py/<version>/<key>/<entry>/entry.json
    assert [p for p in (base / "wheels").rglob("entry.json") if p.parents[3].name == "mpi4py"]
    assert "libmpi.so.40" in links_of(shell, "a1")


def uv_cache(modules: Path) -> Path:
    """The uv cache every uv create of this file shares."""
    return modules.parent / "uv-cache"


def create_script(modules: Path, name: str, mpi: str, backend: str) -> str:
    """Make an env of mpi4py and a pure package requiring it (installed by uv in a uv env) with
    ``backend`` over python/3.11 and ``mpi``."""
    return (f"export UV_CACHE_DIR={uv_cache(modules)}\nmodule load python/3.11 {mpi}\n"
            f"$ENVMOD create {name} --backend {backend} --with mpi4py {modules.parent / MPI_USER_WHEEL}\n")


def mpi4py_in_uv_cache(modules: Path) -> list[Path]:
    """uv's cache keys a build by its sdist, not by the MPI it linked: an mpi4py there could be
    handed to an env over another MPI. The rule package never reaches uv, so there is none."""
    return [p for p in uv_cache(modules).rglob("*") if "mpi4py" in p.name.lower()]


@pytest.mark.parametrize("backend", BACKENDS)
def test_same_libraries_reuse_the_cached_wheel(private_site, backend):
    base, modules, shell = private_site
    name = ENV_NAMES[backend][0]
    result = run(shell, modules, create_script(modules, name, "openmpi/4.1.4", backend) + f"""
module purge
module use "$ENVMOD_ROOT/modules"
module load {name}/py3.11
python -c 'import envmod_mpi_user'
mpirun -n 2 python {RANKS}
""").check()
    assert "] reuse mpi4py" in result.stderr and "] compile mpi4py" not in result.stderr
    assert "ranks [0, 1] of 2 library Open" in result.stdout
    record = read_record(shell.root / f"envs/{name}/envmod.yaml")
    assert record.backend == backend
    assert f"] install: envmod-mpi-user{' (uv)' if backend == 'uv' else ''}" in result.stderr
    assert next(p for p in record.packages if p.name.lower() == "mpi4py").cached_wheel
    assert "libmpi.so.40" in links_of(shell, name)


def test_another_mpi_module_compiles_again(private_site):
    base, modules, shell = private_site
    result = run(shell, modules, "module load python/3.11 mpich/4.0.2\n$ENVMOD create m1 --with mpi4py").check()
    assert "] compile mpi4py" in result.stderr and "] reuse mpi4py" not in result.stderr
    assert "libmpich.so.12" in links_of(shell, "m1")
    assert read_record(shell.root / "envs/m1/envmod.yaml").module.depends_on == ["python/3.11", "mpich/4.0.2"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_mpich_behind_the_openmpi_name_never_gets_the_openmpi_wheel(private_site, backend):
    """The MPICH swap, for each backend: envmod's cache holds mpi4py built against OpenMPI (a1
    and the reuse test's envs); the module openmpi/4.1.4 keeps its name and paths, but MPICH is
    behind them now. The env made after the swap must link MPICH: the first backend's compiles
    again, the next may reuse that MPICH build (proved against the same libraries), never the
    OpenMPI one, and for uv never anything from uv's own cache."""
    base, modules, shell = private_site
    name = ENV_NAMES[backend][1]
    # Maintenance: the module keeps its name and paths, but MPICH is now behind them.
    wrap_mpich(base / "software/openmpi/4.1.4")
    result = run(shell, modules, create_script(modules, name, "openmpi/4.1.4", backend)).check()
    if backend == BACKENDS[0]:
        assert "] compile mpi4py" in result.stderr and "] reuse mpi4py" not in result.stderr
        assert "link other central libraries" in result.stderr
    else:
        assert "] compile mpi4py" in result.stderr or "] reuse mpi4py" in result.stderr
    assert "libmpich.so.12" in links_of(shell, name) and "libmpi.so.40" not in links_of(shell, name)
    assert read_record(shell.root / f"envs/{name}/envmod.yaml").backend == backend
    if backend == "uv":
        assert "] install: envmod-mpi-user (uv)" in result.stderr
        assert uv_cache(modules).is_dir() and not mpi4py_in_uv_cache(modules)


def test_check_reports_the_drift_and_rebuild_repairs_it(private_site):
    base, modules, shell = private_site
    check = run(shell, modules, "$ENVMOD check a1 || echo CHECK-EXIT=$?")
    assert "CHECK-EXIT=1" in check.stdout, check.stdout + check.stderr
    assert "libmpi.so.40" in check.stdout
    rebuild = run(shell, modules, f"""
$ENVMOD rebuild a1
$ENVMOD check a1
module use "$ENVMOD_ROOT/modules"
module load a1/py3.11
mpirun -n 2 python {RANKS}
""").check()
    # a3 was compiled against exactly these libraries: its cached wheel is proved and reused.
    assert "] reuse mpi4py" in rebuild.stderr
    assert "rebuilt a1: mpi4py" in rebuild.stdout and "healthy" in rebuild.stdout
    assert "ranks [0, 1] of 2 library MPICH" in rebuild.stdout
    record = read_record(shell.root / "envs/a1/envmod.yaml")
    assert record.rebuilt and "libmpich.so.12" in links_of(shell, "a1")
