"""``envmod create --backend uv`` end to end on the real central site, under real Lmod: a pure
package (uv pip) plus mpi4py compiled from source against the site's openmpi/4.1.4 (envmod's pip
path, never uv), purge, load only the env's module in a fresh shell, run 2 MPI ranks. The one
compile of the uv backend's tests; uv's own cache is the test's, and must never hold an mpi4py."""

from __future__ import annotations

import pytest
from tests.conftest import REPO, ModuleShell, require_site

from bridge.store.record import read_record

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def uv_env(tmp_path_factory):
    require_site()
    base = tmp_path_factory.mktemp("uv-e2e")
    shell = ModuleShell("lmod", base / "root", base / "cache")
    shell.root.mkdir()
    uv_cache = base / "uv-cache"
    result = shell.run("""
module load python/3.11 openmpi/4.1.4
$ENVMOD create uvenv --backend uv --with cma mpi4py
""", timeout=1800, extra_env={"UV_CACHE_DIR": str(uv_cache), "ENVMOD_WHEEL_CACHE": str(base / "wheels")})
    return shell, result, uv_cache


def test_uv_env_compiles_mpi4py_against_the_site_and_installs_the_rest_with_uv(uv_env):
    shell, result, _ = uv_env
    result.check()
    assert "created uvenv: uv over python/3.11 (Python 3.11.2)" in result.stdout
    assert "] compile mpi4py" in result.stderr and "] install: cma (uv)" in result.stderr
    record = read_record(shell.root / "envs/uvenv/envmod.yaml")
    assert record.backend == "uv"
    mpi4py = next(p for p in record.packages if p.name.lower() == "mpi4py")
    assert (mpi4py.install, mpi4py.built_against) == ("source", ["openmpi/4.1.4"])
    assert record.module.depends_on == ["python/3.11", "openmpi/4.1.4"]


def test_only_its_module_runs_two_ranks_in_a_fresh_shell(uv_env):
    shell, result, _ = uv_env
    result.check()
    run = shell.run(f"""
module use "$ENVMOD_ROOT/modules"
module load uvenv/py3.11
python -c 'import cma'
mpirun -n 2 python {REPO / 'ci/ranks.py'}
""").check()
    assert "ranks [0, 1] of 2 library Open" in run.stdout


def test_uvs_cache_never_holds_an_mpi4py(uv_env):
    """uv's cache is keyed by the sdist, not by the MPI a build linked: a build there could be
    handed to an env over another MPI. mpi4py never reaches uv, so there is none to hand back."""
    _, result, uv_cache = uv_env
    result.check()
    assert uv_cache.is_dir()                     # uv did install (cma) with this cache
    assert not [p for p in uv_cache.rglob("*") if "mpi4py" in p.name.lower()]
