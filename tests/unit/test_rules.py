"""bridge.build.rules: the build-rule table (built-in + site file) and filling a rule from the stack."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bridge.build.rules import BuildRule, canonical_name, load_rules, resolve_rule, select_rules
from bridge.discover.stack import CentralModule, CentralStack
from bridge.errors import ConfigError, PlanError, UsageError


def mpi(mpicc: str | None = "/sw/openmpi/bin/mpicc") -> CentralModule:
    return CentralModule("openmpi/4.1.4", "/m/openmpi", "mpi", "/sw/openmpi",
                         facts={"mpicc": mpicc} if mpicc else {})


def hdf5(parallel: bool, prefix: str | None = "/sw/hdf5") -> CentralModule:
    return CentralModule("hdf5/1.10.8", "/m/hdf5", "hdf5", prefix, facts={"parallel": parallel})


def stack(*modules: CentralModule) -> CentralStack:
    return CentralStack(None, tuple(modules))


def rules_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    return path


# ---- load_rules ---------------------------------------------------------------------------

def test_builtin_rules_cover_mpi4py_and_h5py():
    rules = load_rules()
    assert rules["mpi4py"].against == ("mpi",)
    assert rules["mpi4py"].env == {"MPICC": "{mpi.mpicc}"}
    assert rules["h5py"].against == ("hdf5",)
    assert rules["h5py"].when[0]["if"] == "hdf5.parallel"


def test_site_file_adds_a_rule(tmp_path):
    path = rules_file(tmp_path, "netCDF4:\n  against: [hdf5]\n  env:\n    HDF5_DIR: '{hdf5.prefix}'\n")
    rules = load_rules([path])
    assert rules["netcdf4"] == BuildRule("netcdf4", ("hdf5",), {"HDF5_DIR": "{hdf5.prefix}"})
    assert "mpi4py" in rules and "h5py" in rules


def test_site_file_overrides_a_builtin_rule_by_canonical_name(tmp_path):
    path = rules_file(tmp_path, "MPI4Py:\n  against: [mpi, compiler]\n  env:\n    MPICC: '{mpi.prefix}/bin/mpicc'\n")
    rule = load_rules([path])["mpi4py"]
    assert rule.against == ("mpi", "compiler")
    assert rule.env == {"MPICC": "{mpi.prefix}/bin/mpicc"}


def test_later_site_files_win(tmp_path):
    first = tmp_path / "a.yaml"
    first.write_text("pkg:\n  against: [mpi]\n")
    second = tmp_path / "b.yaml"
    second.write_text("pkg:\n  against: [hdf5]\n")
    assert load_rules([first, second])["pkg"].against == ("hdf5",)


def test_empty_site_file_changes_nothing(tmp_path):
    assert load_rules([rules_file(tmp_path, "")]) == load_rules()


def test_env_values_become_strings(tmp_path):
    path = rules_file(tmp_path, "pkg:\n  against: []\n  env:\n    JOBS: 4\n    FLAG: true\n")
    assert load_rules([path])["pkg"].env == {"JOBS": "4", "FLAG": "True"}


def test_missing_site_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read build rules"):
        load_rules([tmp_path / "nope.yaml"])


def test_invalid_yaml_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_rules([rules_file(tmp_path, "pkg: [unclosed\n")])


def test_top_level_list_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="mapping of package names"):
        load_rules([rules_file(tmp_path, "- mpi4py\n")])


def test_entry_without_a_mapping_body_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="'pkg' needs 'against"):
        load_rules([rules_file(tmp_path, "pkg: mpi\n")])


def test_against_that_is_not_a_list_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="needs 'against"):
        load_rules([rules_file(tmp_path, "pkg:\n  against: mpi\n")])


def test_variant_without_if_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="needs 'if: kind.fact'"):
        load_rules([rules_file(tmp_path, "pkg:\n  against: [hdf5]\n  when:\n    - against: [mpi]\n")])


def test_env_that_is_not_a_mapping_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError):
        load_rules([rules_file(tmp_path, "pkg:\n  against: [mpi]\n  env: [MPICC]\n")])


def test_variant_env_that_is_not_a_mapping_is_a_config_error(tmp_path):
    text = "pkg:\n  against: [hdf5]\n  when:\n    - if: hdf5.parallel\n      env: [HDF5_MPI]\n"
    with pytest.raises(ConfigError):
        load_rules([rules_file(tmp_path, text)])


def test_canonical_name_follows_pep_503():
    assert canonical_name("H5Py") == "h5py"
    assert canonical_name("zope.interface") == canonical_name("Zope_Interface") == "zope-interface"
    assert canonical_name("a--b__c..d") == "a-b-c-d"


# ---- resolve_rule ------------------------------------------------------------------------

def test_mpi4py_gets_the_loaded_mpicc():
    build = resolve_rule(load_rules()["mpi4py"], stack(mpi()))
    assert build.package == "mpi4py"
    assert build.module_names == ["openmpi/4.1.4"]
    assert dict(build.env) == {"MPICC": "/sw/openmpi/bin/mpicc"}


def test_h5py_over_serial_hdf5_needs_no_mpi():
    build = resolve_rule(load_rules()["h5py"], stack(hdf5(parallel=False)))
    assert build.module_names == ["hdf5/1.10.8"]
    assert dict(build.env) == {"HDF5_DIR": "/sw/hdf5"}


def test_h5py_over_serial_hdf5_ignores_a_loaded_mpi():
    build = resolve_rule(load_rules()["h5py"], stack(mpi(), hdf5(parallel=False)))
    assert build.module_names == ["hdf5/1.10.8"]


def test_h5py_over_parallel_hdf5_builds_with_mpi():
    build = resolve_rule(load_rules()["h5py"], stack(mpi(), hdf5(parallel=True)))
    assert build.module_names == ["hdf5/1.10.8", "openmpi/4.1.4"]
    assert dict(build.env) == {"HDF5_DIR": "/sw/hdf5", "HDF5_MPI": "ON", "CC": "/sw/openmpi/bin/mpicc"}


def test_h5py_over_parallel_hdf5_without_mpi_loaded_says_to_load_mpi():
    with pytest.raises(PlanError) as info:
        resolve_rule(load_rules()["h5py"], stack(hdf5(parallel=True)))
    assert info.value.message == "h5py must be compiled against the site's MPI but no mpi module is loaded"
    assert "load your site's mpi module" in info.value.hint


def test_mpi4py_without_mpi_loaded_is_a_plan_error():
    with pytest.raises(PlanError, match="mpi4py must be compiled against the site's MPI"):
        resolve_rule(load_rules()["mpi4py"], stack(hdf5(parallel=False)))


def test_missing_fact_names_the_module_it_should_come_from():
    with pytest.raises(PlanError) as info:
        resolve_rule(load_rules()["mpi4py"], stack(mpi(mpicc=None)))
    assert info.value.message == "mpi4py: cannot tell mpi.mpicc from openmpi/4.1.4"
    assert "set MPICC, or a *_ROOT/*_DIR variable naming a prefix with bin/mpicc" in info.value.hint


def test_missing_prefix_is_a_plan_error():
    with pytest.raises(PlanError, match="cannot tell hdf5.prefix"):
        resolve_rule(load_rules()["h5py"], stack(hdf5(parallel=False, prefix=None)))


def test_first_module_of_a_kind_is_used():
    other = CentralModule("mpich/4", "/m/mpich", "mpi", "/sw/mpich", facts={"mpicc": "/sw/mpich/bin/mpicc"})
    build = resolve_rule(load_rules()["mpi4py"], stack(other, mpi()))
    assert dict(build.env) == {"MPICC": "/sw/mpich/bin/mpicc"}


def test_name_and_version_fields_fill_in(tmp_path):
    path = rules_file(tmp_path, "pkg:\n  against: [mpi]\n  env:\n    TAG: '{mpi.name} {mpi.version}'\n")
    build = resolve_rule(load_rules([path])["pkg"], stack(mpi()))
    assert dict(build.env) == {"TAG": "openmpi/4.1.4 4.1.4"}


def test_resolving_does_not_change_the_rule():
    rule = load_rules()["h5py"]
    before = (rule.against, dict(rule.env))
    resolve_rule(rule, stack(mpi(), hdf5(parallel=True)))
    assert (rule.against, dict(rule.env)) == before


# ---- select_rules: which packages a front end asks to compile ----------------------------

def test_select_rules_whole_table_or_only_the_named_packages():
    table = {"mpi4py": BuildRule("mpi4py", ("mpi",)), "h5py": BuildRule("h5py", ("hdf5",))}
    assert select_rules(table, None) == table
    assert select_rules(table, ["MPI4PY", "foo_bar"]) == {"mpi4py": table["mpi4py"],
                                                         "foo-bar": BuildRule("foo-bar", ())}
    assert select_rules(table, []) == {}


@pytest.mark.parametrize("names, says", [
    ("mpi4py", "must be a list of names, not the string 'mpi4py'"),
    (["h5py>=3"], "'h5py>=3' is not a package name"),
    (["mpi4py", ""], "'' is not a package name"),
    ([None], "None is not a package name"),
])
def test_select_rules_refuses_what_is_not_a_list_of_names(names, says):
    with pytest.raises(UsageError) as info:
        select_rules(load_rules(), names)
    assert says in info.value.one_line() and "\n" not in info.value.one_line()


def plan_with(tmp_path, source_builds, packages=("mpi4py", "h5py")):
    from bridge.config import Settings
    from bridge.session import CreateRequest, CreateSession

    python = "/usr/bin/python3"
    if not os.access(python, os.X_OK):
        pytest.skip("needs /usr/bin/python3 (a Python that is not a venv)")
    request = CreateRequest(name="e", packages=list(packages), python=python, module_type="lmod",
                            source_builds=source_builds)
    session = CreateSession(request, Settings(root=tmp_path / "root", cache_dir=tmp_path / "cache"))
    return session.plan(None, stack(mpi()))


def test_session_plans_with_the_rules_source_builds_selects(tmp_path):
    # the whole table: h5py needs an HDF5 module, and none is loaded
    with pytest.raises(PlanError, match="h5py must be compiled against the site's HDF5"):
        plan_with(tmp_path, None)
    # only mpi4py compiled against the stack: h5py comes from pip as any other package
    assert sorted(plan_with(tmp_path, ["mpi4py"]).rules) == ["mpi4py"]
    # a package the table lacks is compiled from source, against nothing in particular
    assert plan_with(tmp_path, ["mpi4py", "cffi"]).rules["cffi"] == BuildRule("cffi", ())
    with pytest.raises(UsageError, match="'h5py<3' is not a package name"):
        plan_with(tmp_path, ["h5py<3"])
