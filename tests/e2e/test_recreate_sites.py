"""``envmod create --from`` on other sites, for real: the env compiled on the plain site
(conftest's ``compiled_env``: python/3.11, openmpi/4.1.4, hdf5/1.10.8) is exported and made
again on the EasyBuild site (``Python/3.11.2``, ``OpenMPI/4.1.4``, ``HDF5/1.10.8``) and on the Spack
site (``openmpi/4.1.4-d2lqwco`` ...), its mpi4py and h5py compiled again against that site's
modules; each copy runs the 2-rank parallel HDF5 write with only its own module loaded.
One create per site: the refusals, which compile nothing, are in tests/modules/test_recreate.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tests.conftest import REPO, ModuleShell, loaded
from tests.easybuild.easybuild_site import site_dir as eb_site_dir

from bridge.store.record import read_record

# Each test may wait for conftest's compile of mpi4py and h5py and then compiles them again
# against the other site: two compiles, more than the default timeout on a busy 2-core machine.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]

SPACK_SITE = Path(os.environ.get("ENVMOD_SPACK_SITE", "/opt/envmod-spack-site"))
SPACK_CORE = SPACK_SITE / "modules/lmod/linux-debian12-x86_64/Core"
SPACK_NAMES = ("python/3.11.2-nuf5uir", "openmpi/4.1.4-d2lqwco", "hdf5/1.10.8-bsz4j7z")


@pytest.fixture(scope="module")
def exported(compiled_env, tmp_path_factory) -> Path:
    compiled_env.result.check()
    out = tmp_path_factory.mktemp("export") / "myenv.yaml"
    compiled_env.shell.run(f"$ENVMOD export myenv -o {out}").check()
    return out


def _require(path: Path, what: str) -> None:
    if not path.exists():
        if os.environ.get("ENVMOD_REQUIRE_SITE") == "1":
            pytest.fail(f"{what} not built ({path} missing)")
        pytest.skip(f"{what} not built ({path} missing)")


def _run_demo(shell: ModuleShell, name: str, site_modules: Path, tmp_path: Path):
    """In a fresh shell of the other site (its module path, not the plain site's): the env's module alone."""
    return shell.run(f"""
module unuse "$ENVMOD_SITE/modules/lua"
module use {site_modules}
module use "$ENVMOD_ROOT/modules"
module load {name}/py3.11
snap during
mpirun -n 2 python {REPO}/ci/ranks.py
mpirun -n 2 python {REPO}/ci/demo.py {tmp_path}/demo.h5
""", timeout=600).check()


def test_recreated_on_the_easybuild_site_with_its_own_names(exported, tmp_path):
    site = eb_site_dir()
    _require(site / "modules/all/OpenMPI/4.1.4.lua", "the EasyBuild site (ci/eb-site.sh)")
    shell = ModuleShell("lmod", tmp_path / "root", tmp_path / "cache")
    made = shell.run(f"""
module unuse "$ENVMOD_SITE/modules/lua"
module use {site}/modules/all
module load Python/3.11.2
if $ENVMOD create moved --from {exported} 2>{tmp_path}/first.err; then exit 9; fi
module load OpenMPI/4.1.4 HDF5/1.10.8
$ENVMOD create moved --from {exported}
""", timeout=2400).check()
    first = (tmp_path / "first.err").read_text()
    # found by the module tool but not loaded: envmod names the command to type, and builds nothing
    assert "module load OpenMPI/4.1.4 HDF5/1.10.8, then run the same command again" in first
    assert "map: openmpi/4.1.4 -> OpenMPI/4.1.4 (Open MPI 4.1.4, openmpi ABI; available)" in first
    assert "map: hdf5/1.10.8 -> HDF5/1.10.8 (HDF5 1.10.8, parallel; loaded)" in made.stderr
    record = read_record(shell.root / "envs/moved/envmod.yaml")
    assert record.created_from["substitutions"] == [
        {"kind": "python", "exported": "python/3.11", "used": "Python/3.11.2", "how": "loaded"},
        {"kind": "mpi", "exported": "openmpi/4.1.4", "used": "OpenMPI/4.1.4", "how": "loaded"},
        {"kind": "hdf5", "exported": "hdf5/1.10.8", "used": "HDF5/1.10.8", "how": "loaded"}]
    packages = {p.name.lower(): p for p in record.packages}
    assert packages["h5py"].install == "source" and packages["h5py"].built_against == ["HDF5/1.10.8", "OpenMPI/4.1.4"]
    assert record.module.depends_on == ["Python/3.11.2", "OpenMPI/4.1.4", "HDF5/1.10.8"]
    run = _run_demo(shell, "moved", site / "modules/all", tmp_path)
    assert loaded(run.snapshots["during"])[-1] == "moved/py3.11"
    assert "ranks [0, 1] of 2 library Open" in run.stdout
    assert "2 ranks wrote" in run.stdout and "mpi=True" in run.stdout


def test_recreated_on_the_spack_site_with_spacks_names(exported, tmp_path):
    _require(SPACK_CORE / "openmpi", "the Spack site (ci/spack-site.sh)")
    if not os.access("/usr/bin/python3.11", os.X_OK):
        pytest.skip("the Spack site's Python (/usr/bin/python3.11) is not on this machine")
    shell = ModuleShell("lmod", tmp_path / "root", tmp_path / "cache")
    made = shell.run(f"""
module unuse "$ENVMOD_SITE/modules/lua"
module use {SPACK_CORE}
module load {' '.join(SPACK_NAMES)}
$ENVMOD create moved --from {exported}
""", timeout=2400).check()
    assert f"map: openmpi/4.1.4 -> {SPACK_NAMES[1]} (Open MPI 4.1.4, openmpi ABI; loaded)" in made.stderr
    record = read_record(shell.root / "envs/moved/envmod.yaml")
    assert [s["used"] for s in record.created_from["substitutions"]] == list(SPACK_NAMES)
    assert {p.name.lower(): p.install for p in record.packages}["mpi4py"] == "source"
    # the Spack builds the env was made against are recorded by their DAG hashes
    assert all(m.facts.get("spack_hash") for m in record.central_modules if m.name in SPACK_NAMES)
    run = _run_demo(shell, "moved", SPACK_CORE, tmp_path)
    assert "ranks [0, 1] of 2 library Open" in run.stdout
    assert "2 ranks wrote" in run.stdout and "mpi=True" in run.stdout
