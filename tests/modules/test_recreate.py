"""``envmod create --from`` across sites with real Lmod and real Environment Modules, compiling
nothing: an env with no packages made on the plain site (``--keep-loaded``, so its export names
python, openmpi and hdf5) is exported, then made again where the names differ, or refused in one
line with nothing made: the Spack site's MPICH (another MPI ABI), a Python of another minor
version, ``--map`` to a module that does not exist or is of another kind. The compiled half is
tests/e2e/test_recreate_sites.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tests.conftest import ModuleShell, require_site

from bridge.store.record import read_record

pytestmark = pytest.mark.modules

SPACK_SITE = Path(os.environ.get("ENVMOD_SPACK_SITE", "/opt/envmod-spack-site"))
SPACK_USE = {"lmod": SPACK_SITE / "modules/lmod/linux-debian12-x86_64/Core",
             "envmodules": SPACK_SITE / "modules/tcl/linux-debian12-x86_64"}
SPACK_NAMES = {"lmod": {"python": "python/3.11.2-nuf5uir", "mpich": "mpich/4.0.2-7s2yxit",
                        "openmpi": "openmpi/4.1.4-d2lqwco", "hdf5": "hdf5/1.10.8-bsz4j7z"},
               "envmodules": {"python": "python/3.11.2-none-none-nuf5uir", "mpich": "mpich/4.0.2-none-none-7s2yxit",
                              "openmpi": "openmpi/4.1.4-none-none-d2lqwco",
                              "hdf5": "hdf5/1.10.8-none-none-bsz4j7z"}}
OWN = {"lmod": "lua", "envmodules": "tcl"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    require_site()
    work = tmp_path_factory.mktemp("recreate-export")
    shell = ModuleShell("lmod", work / "root", work / "cache")
    out = work / "small.yaml"
    shell.run(f"""
module load python/3.11 openmpi/4.1.4 hdf5/1.10.8
$ENVMOD create small --keep-loaded -q
$ENVMOD export small -o {out}
""").check()
    return out


@pytest.fixture(params=["lmod", "envmodules"])
def spack_shell(request, tmp_path):
    require_site()
    if not SPACK_USE[request.param].is_dir():
        pytest.skip(f"the Spack site is not built ({SPACK_USE[request.param]} missing: ci/spack-site.sh)")
    return ModuleShell(request.param, tmp_path / "root", tmp_path / "cache"), SPACK_NAMES[request.param]


def _error(run) -> str:
    """The one error line of a refused create (and that it was refused)."""
    assert run.returncode != 0, run.stdout
    lines = [line for line in run.stderr.splitlines() if line.startswith("envmod: error:")]
    assert len(lines) == 1 and "Traceback" not in run.stderr, run.stderr
    return lines[0]


def _nothing_made(shell: ModuleShell) -> None:
    made = [p for d in ("envs", "modules") for p in (shell.root / d).rglob("*") if not p.is_dir()]
    assert made == []


def test_export_describes_the_plain_sites_modules(exported):
    import yaml

    modules = yaml.safe_load(exported.read_text())["modules"]
    assert modules == [
        {"name": "python/3.11", "kind": "python", "family": "cpython", "version": "3.11.2"},
        {"name": "openmpi/4.1.4", "kind": "mpi", "family": "openmpi", "version": "4.1.4", "abi": "openmpi"},
        {"name": "hdf5/1.10.8", "kind": "hdf5", "family": "hdf5", "version": "1.10.8", "parallel": True}]


def test_mpich_of_the_spack_site_is_refused_naming_both_sides(exported, spack_shell):
    shell, names = spack_shell
    run = shell.run(f"""
module unuse "$ENVMOD_SITE/modules/{OWN[shell.system]}"
module use {SPACK_USE[shell.system]}
module load {names['python']} {names['mpich']}
$ENVMOD create moved --from {exported}
""")
    line = _error(run)
    assert f"built against openmpi/4.1.4 (Open MPI 4.1.4, openmpi ABI); the loaded {names['mpich']} is " \
           "MPICH 4.0.2, mpich ABI: an incompatible MPI family" in line
    _nothing_made(shell)


def test_spack_site_modules_found_by_the_module_tool_are_named_to_load(exported, spack_shell):
    shell, names = spack_shell
    run = shell.run(f"""
module unuse "$ENVMOD_SITE/modules/{OWN[shell.system]}"
module use {SPACK_USE[shell.system]}
module load {names['python']}
$ENVMOD create moved --from {exported}
""")
    line = _error(run)
    assert f"(module load {names['openmpi']} {names['hdf5']}, then run the same command again)" in line
    # the Spack HDF5 is parallel by its +mpi variant (its module says nothing of it)
    assert f"map: hdf5/1.10.8 -> {names['hdf5']} (HDF5 1.10.8, parallel; available)" in run.stderr
    _nothing_made(shell)


def test_loaded_spack_modules_are_used_and_recorded(exported, spack_shell):
    """The env has no packages (nothing compiles): what is proved is the mapping, in both tools."""
    shell, names = spack_shell
    run = shell.run(f"""
module unuse "$ENVMOD_SITE/modules/{OWN[shell.system]}"
module use {SPACK_USE[shell.system]}
module load {names['python']} {names['openmpi']} {names['hdf5']}
$ENVMOD create moved --from {exported}
""").check()
    assert f"map: openmpi/4.1.4 -> {names['openmpi']} (Open MPI 4.1.4, openmpi ABI; loaded)" in run.stderr
    record = read_record(shell.root / "envs/moved/envmod.yaml")
    assert record.created_from == {"export": str(exported), "substitutions": [
        {"kind": "python", "exported": "python/3.11", "used": names["python"], "how": "loaded"},
        {"kind": "mpi", "exported": "openmpi/4.1.4", "used": names["openmpi"], "how": "loaded"},
        {"kind": "hdf5", "exported": "hdf5/1.10.8", "used": names["hdf5"], "how": "loaded"}]}


def test_loaded_easybuild_modules_are_used_and_recorded(exported, tmp_path):
    from tests.easybuild.easybuild_site import site_dir

    all_modules = site_dir() / "modules/all"
    if not (all_modules / "OpenMPI/4.1.4.lua").is_file():
        pytest.skip(f"the EasyBuild site is not built ({all_modules} missing: ci/eb-site.sh)")
    shell = ModuleShell("lmod", tmp_path / "root", tmp_path / "cache")
    run = shell.run(f"""
module unuse "$ENVMOD_SITE/modules/lua"
module use {all_modules}
module load Python/3.11.2 OpenMPI/4.1.4 HDF5/1.10.8
$ENVMOD create moved --from {exported}
$ENVMOD show moved
""").check()
    assert "map: hdf5/1.10.8 -> HDF5/1.10.8 (HDF5 1.10.8, parallel; loaded)" in run.stderr
    assert f"created from: {exported} (python/3.11 -> Python/3.11.2, openmpi/4.1.4 -> OpenMPI/4.1.4, " \
           "hdf5/1.10.8 -> HDF5/1.10.8)" in run.stdout
    record = read_record(shell.root / "envs/moved/envmod.yaml")
    assert [s["used"] for s in record.created_from["substitutions"]] == ["Python/3.11.2", "OpenMPI/4.1.4",
                                                                          "HDF5/1.10.8"]


@pytest.mark.parametrize("maps, message", [
    (["mpi=nope/1.0"], "--map mpi=nope/1.0: no such module on this site"),
    (["mpi=hdf5/1.10.8"], "--map mpi=hdf5/1.10.8: hdf5/1.10.8 is of kind hdf5, not mpi"),
    (["gpu=cuda/12"], "--map 'gpu=cuda/12': unknown kind 'gpu'"),
])
@pytest.mark.parametrize("system", ["lmod", "envmodules"])
def test_bad_map_is_one_line_and_nothing_is_made(exported, system, maps, message, tmp_path):
    shell = ModuleShell(system, tmp_path / "root", tmp_path / "cache")
    args = " ".join(f"--map {m}" for m in maps)
    run = shell.run(f"""
module load python/3.11 openmpi/4.1.4 hdf5/1.10.8
$ENVMOD create moved --from {exported} {args}
""")
    assert message in _error(run)
    _nothing_made(shell)


def test_python_of_another_minor_version_is_refused(exported, tmp_path):
    """The export edited to say it was made on Python 3.10 (its module's description, as
    another site's export would have it): the loaded 3.11 is refused naming both."""
    edited = tmp_path / "py310.yaml"
    edited.write_text(exported.read_text().replace("version: 3.11.2", "version: 3.10.12"))
    shell = ModuleShell("lmod", tmp_path / "root", tmp_path / "cache")
    run = shell.run(f"""
module load python/3.11
$ENVMOD create moved --from {edited}
""")
    assert "built against python/3.11 (Python 3.10.12); the loaded python/3.11 is Python 3.11.2: another minor " \
           "version" in _error(run)
    _nothing_made(shell)
