"""bridge.discover.stack: what the loaded central modules are, read from real (temporary) module trees.

The "central software" here is a set of real files (bin/mpicc, include/H5pubconf.h, a
python3 that is the real base interpreter); modulefiles are shown by the real Lmod (and
Environment Modules where the test site has it).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from test_modsys import lmod_command, modulecmd_tcl, tool_env, write

from bridge.cache import JsonCache
from bridge.discover.modsys import EnvironmentModules, Lmod, LoadedModule, ModuleEffect
from bridge.discover.stack import (
    CentralModule,
    CentralStack,
    classify,
    describe_module,
    discover_stack,
    find_central_python,
    load_kind_table,
)
from bridge.errors import NoPython

PARALLEL_H = "/* H5pubconf.h */\n#define H5_HAVE_PARALLEL 1\n#define H5_VERSION \"1.10.8\"\n"
SERIAL_H = "/* H5pubconf.h */\n/* #undef H5_HAVE_PARALLEL */\n#define H5_VERSION \"1.10.8\"\n"


def base_python() -> str:
    for candidate in (Path(sys.base_prefix) / "bin" / "python3", Path(getattr(sys, "_base_executable", ""))):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    pytest.skip("cannot find the base interpreter of the running Python")


def executable(path: Path, body: str = "#!/bin/sh\nexit 0\n") -> Path:
    write(path, body)
    path.chmod(0o755)
    return path


@pytest.fixture(scope="module")
def table():
    return load_kind_table()


@pytest.fixture
def site(tmp_path):
    """Prefixes of a small central site: python, openmpi, parallel and serial hdf5, gcc."""
    sw = tmp_path / "sw"
    py = sw / "python/3.11"
    (py / "bin").mkdir(parents=True)
    os.symlink(base_python(), py / "bin/python3")
    mpi = sw / "openmpi/4.1"
    executable(mpi / "bin/mpicc")
    (mpi / "lib").mkdir()
    phdf5 = sw / "hdf5/1.10-mpi"
    write(phdf5 / "include/H5pubconf.h", PARALLEL_H)
    executable(phdf5 / "bin/h5pcc")
    shdf5 = sw / "hdf5/1.10"
    write(shdf5 / "include/H5pubconf.h", SERIAL_H)
    executable(shdf5 / "bin/h5cc")
    gcc = sw / "gcc/12"
    executable(gcc / "bin/gcc")
    return {"python": py, "mpi": mpi, "phdf5": phdf5, "shdf5": shdf5, "gcc": gcc}


def effect_of(prefix: Path, **setenv: str) -> ModuleEffect:
    return ModuleEffect(prepend={"PATH": [str(prefix / "bin")]}, setenv=setenv)


# ---- classify ---------------------------------------------------------------------------

@pytest.mark.parametrize("name,kind", [("python/3.11", "python"), ("Python/3.11.2", "python"),
                                       ("OpenMPI/4.1.4", "mpi"), ("cray-mpich/8", "mpi"),
                                       ("hdf5/1.10", "hdf5"), ("phdf5/1.12", "hdf5"),
                                       ("GCC/12.2.0", "compiler"), ("cmake/3.27", "other")])
def test_classify_by_module_name(table, name, kind):
    assert classify(name, {}, table) == kind


def test_classify_by_executable_on_path(table, site):
    assert classify("site-mpi/1", {"PATH": (str(site["mpi"] / "bin"),)}, table) == "mpi"


def test_classify_hdf5_by_h5cc(table, site):
    assert classify("netcdf-deps/1", {"PATH": (str(site["shdf5"] / "bin"),)}, table) == "hdf5"


def test_classify_name_wins_over_executables(table, site):
    # A python module that also carries an mpicc is still the python module.
    assert classify("python/3.11", {"PATH": (str(site["mpi"] / "bin"),)}, table) == "python"


def test_classify_unknown_without_telling_executables_is_other(table, tmp_path):
    assert classify("tools/1", {"PATH": (str(tmp_path),)}, table) == "other"


# ---- describe_module ----------------------------------------------------------------------

def test_describe_mpi_finds_mpicc_and_prefix(table, site):
    module = describe_module(LoadedModule("openmpi/4.1", "/m/openmpi/4.1.lua"),
                             effect_of(site["mpi"]), table)
    assert module.kind == "mpi"
    assert module.prefix == str(site["mpi"])
    assert module.facts == {"mpicc": str(site["mpi"] / "bin/mpicc")}


def test_describe_prefers_a_root_variable_to_the_bin_parent(table, site, tmp_path):
    effect = ModuleEffect(prepend={"PATH": [str(tmp_path / "wrapper/bin")]}, setenv={"MPI_HOME": str(site["mpi"])})
    module = describe_module(LoadedModule("openmpi/4.1", "/m"), effect, table)
    assert module.prefix == str(site["mpi"])
    assert module.prefixes == {"MPI_HOME": str(site["mpi"])}


def test_describe_prefers_ebroot_among_prefix_variables(table, site):
    effect = ModuleEffect(setenv={"HDF5_DIR": str(site["shdf5"]), "EBROOTHDF5": str(site["phdf5"])})
    module = describe_module(LoadedModule("hdf5/1.10", "/m"), effect, table)
    assert module.prefix == str(site["phdf5"])


def test_describe_ignores_prefix_variables_naming_missing_directories(table, site, tmp_path):
    effect = effect_of(site["gcc"], GCC_ROOT=str(tmp_path / "not-there"))
    module = describe_module(LoadedModule("gcc/12", "/m"), effect, table)
    assert module.prefix == str(site["gcc"])
    assert module.prefixes == {}


def test_describe_module_without_bin_or_root_has_no_prefix(table):
    module = describe_module(LoadedModule("licence/1", "/m"), ModuleEffect(setenv={"LM_LICENSE_FILE": "1@x"}), table)
    assert module.prefix is None and module.kind == "other"


def test_describe_keeps_only_search_path_variables(table, site):
    effect = ModuleEffect(prepend={"PATH": [str(site["mpi"] / "bin")], "LD_LIBRARY_PATH": [str(site["mpi"] / "lib")],
                                   "UNRELATED_LIST": ["/x"]})
    module = describe_module(LoadedModule("openmpi/4.1", "/m"), effect, table)
    assert set(module.paths) == {"PATH", "LD_LIBRARY_PATH"}


def test_hdf5_with_parallel_header_on_cpath_is_parallel(table, site):
    effect = ModuleEffect(prepend={"CPATH": [str(site["phdf5"] / "include")]})
    module = describe_module(LoadedModule("hdf5/1.10", "/m"), effect, table)
    assert module.facts == {"parallel": True}


def test_hdf5_with_serial_header_is_serial(table, site):
    module = describe_module(LoadedModule("hdf5/1.10", "/m"), effect_of(site["shdf5"]), table)
    assert module.facts == {"parallel": False}


def test_hdf5_header_is_found_under_the_prefix(table, site):
    module = describe_module(LoadedModule("hdf5/1.10", "/m"),
                             ModuleEffect(setenv={"HDF5_DIR": str(site["phdf5"])}), table)
    assert module.facts == {"parallel": True}


def test_hdf5_without_header_but_with_h5pcc_is_parallel(table, site):
    (site["phdf5"] / "include/H5pubconf.h").unlink()
    module = describe_module(LoadedModule("hdf5/1.10", "/m"), effect_of(site["phdf5"]), table)
    assert module.facts == {"parallel": True}


def test_hdf5_without_header_saying_hdf5_mpi_on_is_parallel(table, tmp_path):
    module = describe_module(LoadedModule("hdf5/1.10", "/m"), ModuleEffect(setenv={"HDF5_MPI": "ON"}), table)
    assert module.facts == {"parallel": True}


def test_describe_python_module_finds_python3(table, site):
    module = describe_module(LoadedModule("python/3.11", "/m"), effect_of(site["python"]), table)
    assert module.facts == {"python": str(site["python"] / "bin/python3")}


def test_describe_mpi_without_mpicc_has_no_mpicc_fact(table, tmp_path):
    (tmp_path / "bin").mkdir()
    module = describe_module(LoadedModule("openmpi/4.1", "/m"), effect_of(tmp_path), table)
    assert module.kind == "mpi" and "mpicc" not in module.facts


def test_central_module_family_and_version():
    module = CentralModule("openmpi/4.1.4", "/m")
    assert (module.family, module.version) == ("openmpi", "4.1.4")
    assert CentralModule("cmake", "/m").version is None


def test_owner_of_path_is_the_module_that_added_its_directory(site):
    mpi = CentralModule("openmpi/4.1", "/m", "mpi", paths={"PATH": (str(site["mpi"] / "bin") + "/",)})
    stack = CentralStack(None, (mpi,))
    assert stack.owner_of_path(str(site["mpi"] / "bin/mpicc")) is mpi
    assert stack.owner_of_path("/usr/bin/cc") is None


def test_stack_first_of_kind_keeps_load_order():
    a, b = CentralModule("openmpi/4", "/a", "mpi"), CentralModule("mpich/3", "/b", "mpi")
    stack = CentralStack(None, (a, CentralModule("gcc/12", "/g", "compiler"), b))
    assert stack.first("mpi") is a and stack.of_kind("mpi") == [a, b] and stack.first("hdf5") is None


# ---- find_central_python ------------------------------------------------------------------

def python_module(name: str, prefix: Path) -> CentralModule:
    return CentralModule(name, f"/m/{name}", "python", str(prefix), {"PATH": (str(prefix / "bin"),)})


@pytest.fixture
def two_pythons(site, tmp_path):
    other = tmp_path / "sw/python/3.12"
    (other / "bin").mkdir(parents=True)
    os.symlink(base_python(), other / "bin/python3")
    return python_module("python/3.11", site["python"]), python_module("python/3.12", other)


def test_central_python_is_the_first_module_python_on_path(two_pythons):
    py311, py312 = two_pythons
    stack = CentralStack(None, (py311, py312))
    path = ":".join(["/usr/local/bin", py312.paths["PATH"][0], py311.paths["PATH"][0]])
    exe, module = find_central_python(stack, {"PATH": path})
    assert module is py312
    assert exe == os.path.join(py312.paths["PATH"][0], "python3")


def test_central_python_skips_path_entries_no_module_added(two_pythons, tmp_path):
    py311, _ = two_pythons
    stray = tmp_path / "stray"
    (stray).mkdir()
    os.symlink(base_python(), stray / "python3")
    exe, module = find_central_python(CentralStack(None, (py311,)), {"PATH": f"{stray}:{py311.paths['PATH'][0]}"})
    assert module is py311 and not exe.startswith(str(stray))


def test_no_module_python_is_no_python_naming_the_loaded_modules(site):
    mpi = CentralModule("openmpi/4.1", "/m", "mpi", paths={"PATH": (str(site["mpi"] / "bin"),)})
    with pytest.raises(NoPython) as info:
        find_central_python(CentralStack(None, (mpi,)), {"PATH": str(site["mpi"] / "bin")})
    assert "openmpi/4.1" in info.value.message
    assert "--python" in info.value.hint


def test_python_module_named_by_its_facts_serves_when_path_has_none(site):
    # A stack a front end (Spack, EasyBuild) described names its Python in the module's facts.
    exe = str(site["python"] / "bin/python3")
    module = CentralModule("python/3.11", "/m", "python", str(site["python"]), facts={"python": exe})
    assert find_central_python(CentralStack(None, (module,)), {"PATH": "/usr/bin"}) == (exe, module)


def test_python_on_path_wins_over_a_python_named_by_facts(two_pythons):
    py311, py312 = two_pythons
    named = CentralModule(py311.name, py311.modulefile, "python", py311.prefix, {},
                          facts={"python": os.path.join(py311.paths["PATH"][0], "python3")})
    exe, module = find_central_python(CentralStack(None, (named, py312)), {"PATH": py312.paths["PATH"][0]})
    assert module is py312


def test_explicit_python_path_is_used_and_its_module_found(two_pythons):
    py311, py312 = two_pythons
    explicit = os.path.join(py311.paths["PATH"][0], "python3")
    exe, module = find_central_python(CentralStack(None, (py311, py312)), {"PATH": ""}, explicit)
    assert exe == explicit and module is py311


def test_explicit_python_outside_any_module_has_no_module(two_pythons):
    exe, module = find_central_python(CentralStack(None, two_pythons), {"PATH": ""}, base_python())
    assert exe == os.path.abspath(base_python()) and module is None


def test_explicit_python_name_is_looked_up_on_path(two_pythons):
    py311, _ = two_pythons
    exe, module = find_central_python(CentralStack(None, (py311,)), {"PATH": py311.paths["PATH"][0]}, "python3")
    assert module is py311 and exe.endswith("/python3")


def test_explicit_python_that_does_not_exist_is_no_python(tmp_path):
    with pytest.raises(NoPython, match="no such interpreter"):
        find_central_python(CentralStack(None, ()), {"PATH": str(tmp_path)}, str(tmp_path / "python9"))


def test_explicit_python_name_not_on_path_is_no_python(tmp_path):
    with pytest.raises(NoPython, match="python9"):
        find_central_python(CentralStack(None, ()), {"PATH": str(tmp_path)}, "python9")


# ---- discover_stack with a real module tool -----------------------------------------------

def lua_tree(root: Path, site: dict) -> Path:
    tree = root / "lua"
    write(tree / "python/3.11.lua", f'prepend_path("PATH", "{site["python"]}/bin")\n')
    write(tree / "openmpi/4.1.lua", f'prepend_path("PATH", "{site["mpi"]}/bin")\n'
                                    f'prepend_path("LD_LIBRARY_PATH", "{site["mpi"]}/lib")\n'
                                    f'setenv("MPI_HOME", "{site["mpi"]}")\n')
    write(tree / "hdf5/1.10-mpi.lua", f'prepend_path("PATH", "{site["phdf5"]}/bin")\n'
                                      f'prepend_path("CPATH", "{site["phdf5"]}/include")\n'
                                      f'setenv("HDF5_DIR", "{site["phdf5"]}")\n'
                                      'depends_on("openmpi/4.1")\n')
    write(tree / "gcc/12.lua", f'prepend_path("PATH", "{site["gcc"]}/bin")\nfamily("compiler")\n')
    return tree


def loaded_env(tmp: Path, tree: Path, names: list[str], suffix: str) -> dict[str, str]:
    env = tool_env(tmp, tree)
    env["LOADEDMODULES"] = ":".join(names)
    env["_LMFILES_"] = ":".join(str(tree / (n + suffix)) for n in names)
    return env


LOADED = ["gcc/12", "python/3.11", "openmpi/4.1", "hdf5/1.10-mpi"]


@pytest.fixture
def lmod_stack(tmp_path, site):
    tree = lua_tree(tmp_path, site)
    env = loaded_env(tmp_path, tree, LOADED, ".lua")
    return discover_stack(Lmod(lmod_command()), env, JsonCache(tmp_path / "cache")), env, tree


def test_discover_keeps_load_order(lmod_stack):
    stack, _, _ = lmod_stack
    assert [m.name for m in stack.modules] == LOADED


def test_discover_classifies_each_module(lmod_stack):
    stack, _, _ = lmod_stack
    assert [m.kind for m in stack.modules] == ["compiler", "python", "mpi", "hdf5"]


def test_discover_learns_prefixes_and_facts(lmod_stack, site):
    stack, _, _ = lmod_stack
    assert stack.first("mpi").prefix == str(site["mpi"])
    assert stack.first("mpi").facts == {"mpicc": str(site["mpi"] / "bin/mpicc")}
    assert stack.first("hdf5").prefix == str(site["phdf5"])
    assert stack.first("hdf5").facts == {"parallel": True}


def test_discovered_stack_gives_the_central_python(lmod_stack, site):
    stack, env, _ = lmod_stack
    path = ":".join(e for m in reversed(stack.modules) for e in m.paths.get("PATH", ())) + ":/usr/bin"
    exe, module = find_central_python(stack, {**env, "PATH": path})
    assert module.name == "python/3.11" and exe == str(site["python"] / "bin/python3")


def test_discover_reuses_the_cached_show(lmod_stack, tmp_path):
    stack, env, _ = lmod_stack
    # With an empty MODULEPATH a new 'module show' would fail: the cached answer must be used.
    empty = tmp_path / "empty"
    empty.mkdir()
    again = discover_stack(Lmod(lmod_command()), {**env, "MODULEPATH": str(empty)}, JsonCache(tmp_path / "cache"))
    assert again.modules == stack.modules


def test_discover_asks_again_when_a_modulefile_changes(lmod_stack, tmp_path, site):
    _, env, tree = lmod_stack
    write(tree / "openmpi/4.1.lua", f'prepend_path("PATH", "{site["mpi"]}/bin")\nsetenv("CHANGED", "yes")\n')
    again = discover_stack(Lmod(lmod_command()), env, JsonCache(tmp_path / "cache"))
    assert again.first("mpi").prefix == str(site["mpi"])
    assert again.first("mpi").prefixes == {}


def test_discover_without_a_module_system_is_empty():
    assert discover_stack(None, {}).modules == ()


def test_discover_with_nothing_loaded_is_empty():
    system = Lmod("/nonexistent/lmod")
    stack = discover_stack(system, {})
    assert stack.modules == () and stack.module_system is system


def test_discover_with_environment_modules(tmp_path, site):
    cmd = modulecmd_tcl()
    tree = tmp_path / "tcl"
    write(tree / "python/3.11", f"#%Module1.0\nprepend-path PATH {site['python']}/bin\n")
    write(tree / "hdf5/1.10", f"#%Module1.0\nprepend-path PATH {site['shdf5']}/bin\n"
                              f"prepend-path CPATH {site['shdf5']}/include\nsetenv HDF5_ROOT {site['shdf5']}\n")
    env = loaded_env(tmp_path, tree, ["python/3.11", "hdf5/1.10"], "")
    stack = discover_stack(EnvironmentModules(cmd), env)
    assert [(m.name, m.kind) for m in stack.modules] == [("python/3.11", "python"), ("hdf5/1.10", "hdf5")]
    assert stack.first("hdf5").prefix == str(site["shdf5"])
    assert stack.first("hdf5").facts == {"parallel": False}


# ---- the MPI compiler of a module that does not put it on PATH (issue #9, item 8) ------------

def _site_mpicc() -> Path:
    from tests.conftest import require_site, site_dir

    require_site()
    return site_dir() / "software/openmpi/4.1.4/bin/mpicc"


@pytest.fixture
def offpath_mpi(tmp_path):
    """Two MPI prefixes whose bin/mpicc is the site's real Open MPI wrapper, on no PATH: one
    module names its prefix (MPI_ROOT), the other sets MPICC; both real, for both tools."""
    real = _site_mpicc()
    prefixes = {}
    for name in ("rootmpi", "mpiccmpi"):
        prefix = tmp_path / "sw" / name
        (prefix / "bin").mkdir(parents=True)
        os.symlink(real, prefix / "bin/mpicc")
        prefixes[name] = prefix
    lua, tcl = tmp_path / "lua", tmp_path / "tcl"
    write(lua / "openmpi/root.lua", f'setenv("MPI_ROOT", "{prefixes["rootmpi"]}")\n')
    write(tcl / "openmpi/root", f"#%Module1.0\nsetenv MPI_ROOT {prefixes['rootmpi']}\n")
    write(lua / "openmpi/mpicc.lua", f'setenv("MPICC", "{prefixes["mpiccmpi"]}/bin/mpicc")\n')
    write(tcl / "openmpi/mpicc", f"#%Module1.0\nsetenv MPICC {prefixes['mpiccmpi']}/bin/mpicc\n")
    return prefixes, {"lmod": lua, "envmodules": tcl}


@pytest.mark.parametrize("tool", ["lmod", "envmodules"])
@pytest.mark.parametrize("module, prefix", [("openmpi/root", "rootmpi"), ("openmpi/mpicc", "mpiccmpi")])
def test_mpicc_is_found_through_the_prefix_or_mpicc_a_module_sets(tmp_path, offpath_mpi, tool, module, prefix):
    from bridge.build.rules import load_rules, resolve_rule

    prefixes, trees = offpath_mpi
    system = Lmod(lmod_command()) if tool == "lmod" else EnvironmentModules(modulecmd_tcl())
    env = loaded_env(tmp_path, trees[tool], [module], ".lua" if tool == "lmod" else "")
    stack = discover_stack(system, env)
    mpicc = str(prefixes[prefix] / "bin/mpicc")
    assert stack.first("mpi").facts == {"mpicc": mpicc}
    build = resolve_rule(load_rules()["mpi4py"], stack)
    assert build.env == {"MPICC": mpicc}
    # ... and it is a working MPI compiler (what mpi4py's build will run)
    source = tmp_path / "hello.c"
    source.write_text('#include <mpi.h>\nint main(int c, char **v) { MPI_Init(&c, &v); MPI_Finalize(); return 0; }\n')
    import subprocess

    subprocess.run([mpicc, str(source), "-o", str(tmp_path / "hello")], check=True, capture_output=True)


def test_mpicc_on_the_module_path_wins_over_a_prefix(table, site, tmp_path):
    other = tmp_path / "other"
    executable(other / "bin/mpicc")
    module = describe_module(LoadedModule("openmpi/4.1", "/m"), effect_of(site["mpi"], MPI_ROOT=str(other)), table)
    assert module.facts == {"mpicc": str(site["mpi"] / "bin/mpicc")}


def test_mpicc_the_module_sets_wins_and_a_bare_name_is_looked_up_on_its_path(table, site, tmp_path):
    own = executable(tmp_path / "wrap/mpicc-wrapper")
    module = describe_module(LoadedModule("openmpi/4.1", "/m"), effect_of(site["mpi"], MPICC=str(own)), table)
    assert module.facts == {"mpicc": str(own)}
    module = describe_module(LoadedModule("openmpi/4.1", "/m"), effect_of(site["mpi"], MPICC="mpicc"), table)
    assert module.facts == {"mpicc": str(site["mpi"] / "bin/mpicc")}


def test_an_mpicc_setting_that_names_no_program_is_passed_over(table, tmp_path):
    prefix = tmp_path / "mpi"
    executable(prefix / "bin/mpicc")
    effect = ModuleEffect(setenv={"MPICC": str(tmp_path / "missing"), "MPI_ROOT": str(prefix)})
    module = describe_module(LoadedModule("openmpi/4.1", "/m"), effect, table)
    assert module.facts == {"mpicc": str(prefix / "bin/mpicc")}
