"""The product's main job, end to end on the real central site: compile mpi4py and h5py against
the site's OpenMPI and parallel HDF5, purge, load only the env's module, run 2 MPI ranks that
write one HDF5 file in parallel, read it back."""

from __future__ import annotations

import pytest
from tests.conftest import REPO, ModuleShell, loaded, require_site, user_visible

from bridge.store.record import read_record

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lmod_env(compiled_env):
    """The env compiled once under Lmod for the whole run (conftest's compiled_env): this file's
    tests are the proof of that create; others only reuse its builds."""
    return compiled_env.shell, compiled_env.result


def test_create_reports_steps_and_how_to_load(lmod_env):
    shell, result = lmod_env
    result.check()
    assert "created myenv: venv over python/3.11 (Python 3.11.2)" in result.stdout
    assert "module load myenv/py3.11" in result.stdout
    for step in ("discover", "python", "create", "resolve", "compile mpi4py", "compile h5py", "module"):
        assert f"] {step}" in result.stderr, step


def test_record_says_what_was_compiled_against_what(lmod_env):
    shell, result = lmod_env
    result.check()
    record = read_record(shell.root / "envs/myenv/envmod.yaml")
    packages = {p.name.lower(): p for p in record.packages}
    assert packages["mpi4py"].install == "source"
    assert packages["mpi4py"].built_against == ["openmpi/4.1.4"]
    assert packages["mpi4py"].build_env["MPICC"].endswith("/bin/mpicc")
    assert packages["h5py"].install == "source"
    assert packages["h5py"].built_against == ["hdf5/1.10.8", "openmpi/4.1.4"]
    assert packages["h5py"].build_env["HDF5_MPI"] == "ON"
    assert record.module.depends_on == ["python/3.11", "openmpi/4.1.4", "hdf5/1.10.8"]
    assert record.python.version == "3.11.2"
    assert {m.kind for m in record.central_modules} == {"python", "mpi", "hdf5"}


def test_env_module_alone_runs_parallel_hdf5_with_two_ranks(lmod_env, tmp_path):
    shell, result = lmod_env
    result.check()
    run = shell.run(f"""
module purge
module use "$ENVMOD_ROOT/modules"
snap before
module load myenv/py3.11
snap during
mpirun -n 2 python {REPO}/ci/demo.py {tmp_path}/demo.h5
module unload myenv/py3.11
snap after
""", timeout=300).check()
    assert loaded(run.snapshots["during"]) == ["python/3.11", "openmpi/4.1.4", "hdf5/1.10.8", "myenv/py3.11"]
    assert "2 ranks wrote" in run.stdout and "read back [0, 10]" in run.stdout
    assert "mpi=True" in run.stdout
    assert loaded(run.snapshots["after"]) == []
    # unloading the env releases python, openmpi and hdf5 and every variable they set
    assert user_visible(run.snapshots["after"]) == user_visible(run.snapshots["before"])


def test_compiled_extensions_link_the_site_libraries(lmod_env):
    shell, result = lmod_env
    result.check()
    run = shell.run("""
module use "$ENVMOD_ROOT/modules"
module load myenv/py3.11
python - <<'PY'
import mpi4py.MPI, h5py.defs, subprocess
for mod in (mpi4py.MPI, h5py.defs):
    print(subprocess.run(["ldd", mod.__file__], capture_output=True, text=True).stdout)
PY
""").check()
    assert "libmpi.so.40" in run.stdout
    assert "libhdf5_openmpi.so" in run.stdout


def test_tcl_module_of_same_env_runs_under_environment_modules(lmod_env, tmp_path):
    shell, result = lmod_env
    result.check()
    shell.run("$ENVMOD module myenv --module-type tcl").check()
    tcl = ModuleShell("envmodules", shell.root, shell.cache)
    run = tcl.run(f"""
module use "$ENVMOD_ROOT/modules"
snap before
module load myenv/py3.11
snap during
mpirun -n 2 python {REPO}/ci/demo.py {tmp_path}/demo.h5
module unload myenv/py3.11
snap after
""", timeout=300).check()
    assert set(loaded(run.snapshots["during"])) == {"python/3.11", "openmpi/4.1.4", "hdf5/1.10.8", "myenv/py3.11"}
    assert "read back [0, 10]" in run.stdout
    assert loaded(run.snapshots["after"]) == []
    assert user_visible(run.snapshots["after"]) == user_visible(run.snapshots["before"])


def test_create_under_environment_modules_compiles_mpi4py(tmp_path):
    require_site()
    shell = ModuleShell("envmodules", tmp_path / "root", tmp_path / "cache")
    run = shell.run(f"""
module load python/3.11 openmpi/4.1.4
$ENVMOD create mpionly --with mpi4py
$ENVMOD export mpionly -o {tmp_path}/mpionly.yaml
$ENVMOD create again --from {tmp_path}/mpionly.yaml
module purge
module use "$ENVMOD_ROOT/modules"
module load mpionly/py3.11
snap during
mpirun -n 2 python {REPO}/ci/ranks.py
""", timeout=1800).check()
    assert (shell.root / "modules/mpionly/py3.11").is_file()
    assert set(loaded(run.snapshots["during"])) == {"python/3.11", "openmpi/4.1.4", "mpionly/py3.11"}
    assert "ranks [0, 1] of 2 library Open" in run.stdout
    # recreated from its export: the same pinned packages, mpi4py proved and reused, not compiled
    assert "] reuse mpi4py" in run.stderr
    first, again = (read_record(shell.root / f"envs/{n}/envmod.yaml") for n in ("mpionly", "again"))
    assert {(p.name, p.version) for p in again.packages} == {(p.name, p.version) for p in first.packages}
    assert again.module.depends_on == first.module.depends_on
