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

from bridge.store.record import read_record
from tests.conftest import REPO, ModuleShell, require_site, site_dir

RANKS = REPO / "ci/ranks.py"

pytestmark = pytest.mark.slow
MULTIARCH = "/usr/lib/x86_64-linux-gnu"


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


def test_same_libraries_reuse_the_cached_wheel(private_site):
    base, modules, shell = private_site
    result = run(shell, modules, f"""
module load python/3.11 openmpi/4.1.4
$ENVMOD create a2 --with mpi4py
module purge
module use "$ENVMOD_ROOT/modules"
module load a2/py3.11
mpirun -n 2 python {RANKS}
""").check()
    assert "] reuse mpi4py" in result.stderr and "] compile mpi4py" not in result.stderr
    assert "ranks [0, 1] of 2 library Open" in result.stdout
    record = read_record(shell.root / "envs/a2/envmod.yaml")
    assert next(p for p in record.packages if p.name.lower() == "mpi4py").cached_wheel


def uv_create(shell: ModuleShell, modules: Path, name: str, mpi: str):
    """A uv env with mpi4py, every uv create of this file sharing one uv cache."""
    return run(shell, modules, f'export UV_CACHE_DIR={modules.parent / "uv-cache"}\n'
                               f"module load python/3.11 {mpi}\n$ENVMOD create {name} --backend uv --with mpi4py")


def test_uv_env_gets_the_openmpi_build_from_envmods_cache(private_site):
    base, modules, shell = private_site
    result = uv_create(shell, modules, "u1", "openmpi/4.1.4").check()
    assert "] reuse mpi4py" in result.stderr
    assert "libmpi.so.40" in links_of(shell, "u1")


def test_another_mpi_module_compiles_again(private_site):
    base, modules, shell = private_site
    result = run(shell, modules, "module load python/3.11 mpich/4.0.2\n$ENVMOD create m1 --with mpi4py").check()
    assert "] compile mpi4py" in result.stderr and "] reuse mpi4py" not in result.stderr
    assert "libmpich.so.12" in links_of(shell, "m1")
    assert read_record(shell.root / "envs/m1/envmod.yaml").module.depends_on == ["python/3.11", "mpich/4.0.2"]


def test_mpich_behind_the_openmpi_name_never_gets_the_openmpi_wheel(private_site):
    base, modules, shell = private_site
    # Maintenance: the module keeps its name and paths, but MPICH is now behind them.
    wrap_mpich(base / "software/openmpi/4.1.4")
    result = run(shell, modules, "module load python/3.11 openmpi/4.1.4\n$ENVMOD create a3 --with mpi4py").check()
    assert "] compile mpi4py" in result.stderr and "] reuse mpi4py" not in result.stderr
    assert "link other central libraries" in result.stderr
    assert "libmpich.so.12" in links_of(shell, "a3") and "libmpi.so.40" not in links_of(shell, "a3")


def test_uv_env_after_the_swap_never_gets_the_openmpi_build(private_site):
    """The MPICH swap for the uv backend: u1 put OpenMPI's mpi4py through this uv cache's hands
    if any backend let uv install it; the env made after the swap must link MPICH."""
    base, modules, shell = private_site
    result = uv_create(shell, modules, "u2", "openmpi/4.1.4").check()
    assert "] reuse mpi4py" in result.stderr or "] compile mpi4py" in result.stderr
    assert "libmpich.so.12" in links_of(shell, "u2") and "libmpi.so.40" not in links_of(shell, "u2")


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
