"""``create --from`` on another site, without a site: how central modules are described (from
their headers, link evidence and names), which stand in for which, and bad exports and ``--map``
arguments refused in one line. The real-module half is tests/modules/test_recreate.py."""

from __future__ import annotations

import sys

import pytest
import yaml
from tests.unit.test_cli import one_error_line
from tests.unit.test_record import make_record

from bridge.discover.mapping import (
    Description,
    describe_central,
    describe_need,
    describe_recorded,
    hdf5_header_facts,
    incompatibility,
    mpi_header_facts,
    parse_maps,
    version_from_name,
)
from bridge.discover.stack import CentralModule
from bridge.emit.export import EXPORT_SCHEMA, export_data, read_export
from bridge.errors import UsageError
from bridge.store.record import CentralModuleRecord, write_record

OPEN_MPI = Description("mpi", "openmpi", "4.1.4", abi="openmpi", name="openmpi/4.1.4")
PARALLEL_HDF5 = Description("hdf5", "hdf5", "1.10.8", parallel=True, name="hdf5/1.10.8")
PYTHON = Description("python", "cpython", "3.11.2", name="python/3.11")


# ------------------------------------------------------------------ facts
def test_versions_from_site_names_of_three_kinds():
    assert version_from_name("openmpi/4.1.4") == "4.1.4"                 # plain
    assert version_from_name("OpenMPI/4.1.4-GCC-12.2.0") == "4.1.4"      # EasyBuild
    assert version_from_name("openmpi/4.1.4-d2lqwco") == "4.1.4"         # Spack (Lmod)
    assert version_from_name("hdf5/1.10.8-none-none-bsz4j7z") == "1.10.8"  # Spack (Tcl)
    assert version_from_name("openmpi") is None


def test_headers_tell_the_mpi_family_and_version(tmp_path):
    (tmp_path / "ompi").mkdir()
    (tmp_path / "ompi/mpi.h").write_text("#define OMPI_MAJOR_VERSION 4\n#define OMPI_MINOR_VERSION 1\n"
                                         "#define OMPI_RELEASE_VERSION 4\n")
    (tmp_path / "mvapich").mkdir()
    (tmp_path / "mvapich/mpi.h").write_text('#define MPICH_VERSION "3.2.1"\n#define MVAPICH2_VERSION "2.3.7"\n')
    (tmp_path / "mpich").mkdir()
    (tmp_path / "mpich/mpi.h").write_text('#define MPICH_VERSION "4.0.2"\n')
    from bridge.discover.mapping import load_family_table

    table = load_family_table()
    assert mpi_header_facts([str(tmp_path / "none"), str(tmp_path / "ompi")], table) == ("openmpi", "4.1.4")
    assert mpi_header_facts([str(tmp_path / "mvapich")], table) == ("mvapich", "2.3.7")
    assert mpi_header_facts([str(tmp_path / "mpich")], table) == ("mpich", "4.0.2")


def test_hdf5_header_tells_version_and_parallel(tmp_path):
    (tmp_path / "H5pubconf.h").write_text('#define H5_HAVE_PARALLEL 1\n#define H5_VERSION "1.12.2"\n')
    assert hdf5_header_facts([str(tmp_path)]) == ("1.12.2", True)


def test_a_module_whose_name_says_nothing_is_known_by_its_header(tmp_path):
    (tmp_path / "include").mkdir()
    (tmp_path / "include/mpi.h").write_text('#define MPICH_VERSION "4.1"\n')
    module = CentralModule("site-mpi/2024", str(tmp_path / "mod.lua"), "mpi", prefix=str(tmp_path))
    found = describe_central(module)
    assert (found.family, found.version, found.abi) == ("mpich", "4.1", "mpich")


def test_recorded_module_is_described_from_the_record_and_its_link_evidence(tmp_path):
    record = make_record(tmp_path)
    record.central_modules[0] = CentralModuleRecord(name="site-mpi/4.1.4", kind="mpi", facts={})
    record.links[0].provider = "site-mpi/4.1.4"      # the env linked libmpi.so.40 from it: Open MPI's ABI
    found = describe_recorded(record, record.central_modules[0])
    assert (found.family, found.version, found.abi) == ("openmpi", "4.1.4", "openmpi")


def test_export_describes_each_module_and_reads_back_as_needs(tmp_path):
    record = make_record(tmp_path)
    data = export_data(record)
    assert data["envmod_export"] == EXPORT_SCHEMA
    path = tmp_path / "e.yaml"
    path.write_text(yaml.safe_dump(data))
    needs = read_export(path).needs
    assert [(n.kind, n.family, n.version, n.abi, n.name) for n in needs] == [
        ("python", "cpython", "3.11.2", None, "python/3.11.2"), ("mpi", "openmpi", "4.1.4", "openmpi", "openmpi/4.1.4")]


def test_an_export_of_schema_1_without_descriptions_is_still_read(tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text("envmod_export: 1\nname: old\npython: {version: 3.11.2, module: python/3.11}\n"
                    "modules: [{name: python/3.11}, {name: openmpi/4.1.4, kind: mpi}, {name: hdf5/1.10.8, kind: hdf5}]\n"
                    "requirements: [mpi4py==4.1.1]\n")
    needs = read_export(path).needs
    assert needs[0] == Description("python", "cpython", "3.11.2", name="python/3.11")
    assert needs[1] == Description("mpi", "openmpi", "4.1.4", abi="openmpi", name="openmpi/4.1.4")
    assert (needs[2].kind, needs[2].version, needs[2].parallel) == ("hdf5", "1.10.8", None)


# ------------------------------------------------------------------ compatibility
@pytest.mark.parametrize("have, why", [
    (Description("mpi", "openmpi", "4.1.6", abi="openmpi", name="OpenMPI/4.1.6"), None),
    (Description("mpi", "mpich", "4.0.2", abi="mpich", name="mpich/4.0.2"), "an incompatible MPI family"),
    (Description("mpi", "openmpi", "5.0.5", abi="openmpi", name="openmpi/5.0.5"), "another major version"),
    (Description("mpi", None, "1.0", abi=None, name="mystery/1.0"), "an incompatible MPI family"),
    (Description("hdf5", "hdf5", "1.10.8", parallel=True, name="HDF5/1.10.8"), "of kind hdf5, not mpi"),
])
def test_mpi_stands_in_by_abi_and_major_version(have, why):
    reason = incompatibility(OPEN_MPI, have)
    assert (reason is None) if why is None else (why in reason and have.name in reason)


def test_mpich_abi_family_members_stand_in_for_each_other():
    need = Description("mpi", "mpich", "4.0.2", abi="mpich", name="mpich/4.0.2")
    assert incompatibility(need, Description("mpi", "intel-mpi", "2021.6", abi="mpich", name="impi/2021.6")) is None


@pytest.mark.parametrize("have, why", [
    (Description("hdf5", "hdf5", "1.10.9", parallel=True, name="HDF5/1.10.9"), None),
    (Description("hdf5", "hdf5", "1.12.2", parallel=True, name="HDF5/1.12.2"), "another minor version"),
    (Description("hdf5", "hdf5", "1.10.8", parallel=False, name="hdf5/1.10.8-serial"), "not a parallel HDF5"),
])
def test_hdf5_stands_in_by_minor_version_and_parallel(have, why):
    reason = incompatibility(PARALLEL_HDF5, have)
    assert (reason is None) if why is None else why in reason


def test_python_stands_in_by_minor_version():
    assert incompatibility(PYTHON, Description("python", "cpython", "3.11.9", name="Python/3.11.9")) is None
    reason = incompatibility(PYTHON, Description("python", "cpython", "3.12.1", name="Python/3.12.1"))
    assert reason == "Python/3.12.1 is Python 3.12.1: another minor version"


# ------------------------------------------------------------------ bad input: one line, nothing changed
@pytest.mark.parametrize("text, message", [
    ("envmod_export: 2\nname: x\n", "export schema 2 is newer than this envmod reads (up to 1)"),
    ("envmod_export: one\n", "'one' is not a schema number"),
    ("envmod_export: 1\npython: {}\nmodules: []\nrequirements: []\n", "missing key 'name'"),
    ("envmod_export: 1\nname: x\npython: {}\nmodules: {a: b}\nrequirements: []\n", "'modules' must be a list"),
    ("envmod_export: 1\nname: x\npython: {}\nmodules: []\nrequirements: [1]\n", "a list of strings"),
    ("envmod_export: 1\nname: x\npython: {}\nmodules: [openmpi/4.1.4]\nrequirements: []\n",
     "modules[0] must be a mapping with a 'name'"),
    ("envmod_export: 1\nname: x\npython: {}\nmodules: [{name: cuda/12, kind: gpu}]\nrequirements: []\n",
     "modules[0] (cuda/12) has unknown kind 'gpu'"),
    ("envmod_export: 1\nname: x\npython: {}\nmodules: [{name: h/1, kind: hdf5, parallel: yes please}]\n"
     "requirements: []\n", "'parallel' must be true or false"),
])
def test_hand_edited_or_newer_exports_are_refused_in_one_line(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(UsageError) as err:
        read_export(path)
    assert message in err.value.one_line() and str(path) in err.value.one_line()
    assert "\n" not in err.value.one_line()


@pytest.mark.parametrize("value, message", [
    ("mpi", "expected KIND=MODULE"),
    ("=OpenMPI/4.1.4", "expected KIND=MODULE"),
    ("gpu=cuda/12", "unknown kind 'gpu'"),
])
def test_bad_map_arguments_are_refused(value, message):
    with pytest.raises(UsageError, match=message):
        parse_maps([value])


def test_map_twice_for_one_kind_is_refused():
    with pytest.raises(UsageError, match="given twice"):
        parse_maps(["mpi=a/1", "mpi=b/2"])


def test_map_without_from_and_map_of_a_kind_the_export_does_not_need(run, tmp_path):
    proc = run("create", "x", "--map", "mpi=OpenMPI/4.1.4", "--python", sys.executable, "--module-type", "lmod")
    assert "--map needs --from FILE" in one_error_line(proc)
    prefix = run.root / "envs" / "myenv"
    prefix.mkdir(parents=True)
    write_record(make_record(prefix), prefix)
    out = tmp_path / "e.yaml"
    assert run("export", "myenv", "-o", str(out)).returncode == 0
    proc = run("create", "x", "--from", str(out), "--map", "hdf5=HDF5/1.10.8", "--python", sys.executable,
               "--module-type", "lmod")
    assert "needs no hdf5 module" in one_error_line(proc)
    assert not (run.root / "envs" / "x").exists()


def test_describe_need_takes_the_exports_own_description_first():
    need = describe_need({"name": "mpi/site", "kind": "mpi", "family": "mpich", "version": "4.0.2", "abi": "mpich"},
                         "3.11.2")
    assert need == Description("mpi", "mpich", "4.0.2", abi="mpich", name="mpi/site")
