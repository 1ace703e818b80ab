"""bridge.spack.stack: a Spack site's specs and module names as the CentralStack of a create.

Runs everywhere, without Spack: on tests/data/spack-tree (what Spack 1.1.0 wrote for
ci/spack-site.sh) and on a small fake file system laid out as Debian lays out its OpenMPI,
parallel HDF5 and Python under /usr. The same functions serve ``spack envmod``; the tests in
test_spack_ext.py check that both front ends build the same stack on a live site.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from tests.recorded_spack_tree import ARCH, HDF5, OPENMPI, PYTHON, copy_recorded_site
from tests.spack.tree_stack import matches_selector, stack_from_tree

from bridge.build.rules import load_rules, resolve_rule
from bridge.config import load_settings
from bridge.discover.stack import CentralModule, CentralStack
from bridge.emit.export import read_export, render_export
from bridge.errors import DiscoveryError, PlanError, UsageError
from bridge.session import CreateRequest, CreateSession
from bridge.spack import stack as ss
from bridge.spack.tree import ModuleIndex, SpackTree
from bridge.store.record import LinkEvidence, read_record, write_record

TRIPLET = "usr/lib/x86_64-linux-gnu"


@pytest.fixture
def site(tmp_path: Path) -> Path:
    return copy_recorded_site(tmp_path / "site")


def _exe(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def _link(path: Path, target: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target)


def _file(path: Path, text: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def sysroot(tmp_path: Path) -> Path:
    """Debian's layout of python3.11, libopenmpi-dev and libhdf5-openmpi-dev, in miniature."""
    root = tmp_path / "sysroot"
    lib = root / TRIPLET
    for exe in ("python3.11", "mpicc", "h5pcc"):
        _exe(root / "usr/bin" / exe)
    _link(root / "usr/bin/python3", "python3.11")
    _file(lib / "libpython3.11.so.1.0")
    _file(lib / "libmpi.so.40.30.4")
    _link(lib / "libmpi.so.40", "libmpi.so.40.30.4")
    _link(lib / "openmpi/lib/libmpi.so", "../../libmpi.so.40")
    _file(lib / "openmpi/include/mpi.h")
    _file(lib / "libhdf5_openmpi.so.103.3.1")
    _link(lib / "libhdf5_openmpi.so.103", "libhdf5_openmpi.so.103.3.1")
    _link(lib / "hdf5/openmpi/libhdf5.so", "../../libhdf5_openmpi.so.103")
    _link(lib / "hdf5/openmpi/lib", ".")
    _file(lib / "hdf5/openmpi/include/hdf5.h")
    _file(lib / "hdf5/openmpi/include/H5pubconf.h", "#define H5_HAVE_PARALLEL 1\n")
    _file(lib / "libhdf5_serial.so.103.3.1")
    _link(lib / "hdf5/serial/libhdf5.so", "../../libhdf5_serial.so.103.3.1")
    _file(lib / "hdf5/serial/include/hdf5.h")
    return root


@pytest.fixture
def tree(site: Path) -> SpackTree:
    return SpackTree.open(site / "opt")


@pytest.fixture
def indexes(site: Path) -> dict:
    return {"lmod": ModuleIndex.open(site / "modules/lmod"), "tcl": ModuleIndex.open(site / "modules/tcl")}


def by_kind(stack: CentralStack) -> dict[str, CentralModule]:
    return {m.kind: m for m in stack.modules}


# ------------------------------------------------------------------------------- from the tree


def test_tree_stack_lmod_names_kinds_order(tree, indexes, site, sysroot):
    stack = stack_from_tree(tree, indexes, module_type="lmod", sysroot=str(sysroot))
    assert [(m.name, m.kind) for m in stack.modules] == [
        ("python/3.11.2-nuf5uir", "python"), ("openmpi/4.1.4-d2lqwco", "mpi"), ("hdf5/1.10.8-bsz4j7z", "hdf5")]
    core = site / "modules/lmod" / ARCH / "Core"
    assert [m.modulefile for m in stack.modules] == [
        str(core / "python/3.11.2-nuf5uir.lua"), str(core / "openmpi/4.1.4-d2lqwco.lua"), str(core / "hdf5/1.10.8-bsz4j7z.lua")]
    assert all(m.facts["spack_modulepath"] == str(core) for m in stack.modules)
    assert by_kind(stack)["mpi"].facts["spack_unlocks"] == [str(site / "modules/lmod" / ARCH / "openmpi/4.1.4-d2lqwco/Core")]


def test_tree_stack_records_dag_hashes_and_both_names(tree, indexes, sysroot):
    stack = stack_from_tree(tree, indexes, module_type="lmod", sysroot=str(sysroot))
    mods = by_kind(stack)
    assert {k: m.facts["spack_hash"] for k, m in mods.items()} == {"python": PYTHON, "mpi": OPENMPI, "hdf5": HDF5}
    assert mods["mpi"].facts["spack_spec"] == "openmpi@4.1.4/d2lqwco"
    assert {t: e["name"] for t, e in mods["mpi"].facts["spack_modules"].items()} == {
        "lmod": "openmpi/4.1.4-d2lqwco", "tcl": "openmpi/4.1.4-none-none-d2lqwco"}
    tcl = mods["mpi"].facts["spack_modules"]["tcl"]
    assert tcl["modulefile"].endswith(f"modules/tcl/{ARCH}/openmpi/4.1.4-none-none-d2lqwco")
    assert tcl["modulepath"].endswith(f"modules/tcl/{ARCH}")
    assert all(m.facts["spack_external"] and m.facts["spack_prefix"] == "/usr" for m in mods.values())


def test_tree_stack_tcl_uses_tcl_names(tree, indexes, sysroot):
    stack = stack_from_tree(tree, indexes, module_type="tcl", sysroot=str(sysroot))
    assert [m.name for m in stack.modules] == [
        "python/3.11.2-none-none-nuf5uir", "openmpi/4.1.4-none-none-d2lqwco", "hdf5/1.10.8-none-none-bsz4j7z"]
    assert all(m.facts["spack_modulepath"].endswith(f"modules/tcl/{ARCH}") for m in stack.modules)


def test_usr_externals_get_their_specific_dirs(tree, indexes, sysroot):
    mods = by_kind(stack_from_tree(tree, indexes, module_type="lmod", sysroot=str(sysroot)))
    py, mpi, hdf5 = mods["python"], mods["mpi"], mods["hdf5"]
    # only the Python keeps /usr/bin: it is where its interpreter is, and the pipeline finds the
    # interpreter's module by it
    assert py.paths["PATH"] == ("/usr/bin",) and "PATH" not in mpi.paths and "PATH" not in hdf5.paths
    assert py.facts["python"] == "/usr/bin/python3.11"
    assert py.facts["libraries"] == [f"/{TRIPLET}/libpython3.11.so.1.0"]
    assert mpi.prefix == "/usr" and mpi.facts["mpicc"] == "/usr/bin/mpicc"
    assert mpi.paths["LIBRARY_PATH"] == (f"/{TRIPLET}/openmpi/lib",)
    assert mpi.paths["CPATH"] == (f"/{TRIPLET}/openmpi/include",)
    assert mpi.facts["libraries"] == [f"/{TRIPLET}/libmpi.so.40.30.4"]       # behind openmpi/lib/libmpi.so
    # parallel HDF5: the openmpi flavour's own root, which holds include/hdf5.h and lib/libhdf5.so
    assert hdf5.prefix == f"/{TRIPLET}/hdf5/openmpi"
    assert hdf5.facts["parallel"] is True
    assert hdf5.facts["libraries"] == [f"/{TRIPLET}/libhdf5_openmpi.so.103.3.1"]
    assert hdf5.facts["spack_prefix"] == "/usr"


def test_build_rules_fill_from_the_spack_stack(tree, indexes, sysroot):
    stack = stack_from_tree(tree, indexes, module_type="lmod", sysroot=str(sysroot))
    rules = load_rules()
    mpi4py = resolve_rule(rules["mpi4py"], stack)
    assert mpi4py.env == {"MPICC": "/usr/bin/mpicc"} and mpi4py.module_names == ["openmpi/4.1.4-d2lqwco"]
    h5py = resolve_rule(rules["h5py"], stack)
    assert h5py.env == {"HDF5_DIR": f"/{TRIPLET}/hdf5/openmpi", "HDF5_MPI": "ON", "CC": "/usr/bin/mpicc"}
    assert h5py.module_names == ["hdf5/1.10.8-bsz4j7z", "openmpi/4.1.4-d2lqwco"]


@pytest.mark.skipif(not Path("/usr/lib/x86_64-linux-gnu/hdf5/openmpi/include/hdf5.h").is_file(),
                    reason="Debian's libhdf5-openmpi-dev is not installed")
def test_real_debian_hdf5_root_has_what_h5py_needs(tree, indexes):
    hdf5 = by_kind(stack_from_tree(tree, indexes, module_type="lmod"))["hdf5"]
    assert os.path.isfile(os.path.join(hdf5.prefix, "include", "hdf5.h"))
    assert os.path.exists(os.path.join(hdf5.prefix, "lib", "libhdf5.so"))


def test_prefix_of_its_own_is_specific_as_it_is(tmp_path):
    prefix = tmp_path / "opt/openmpi-5.0.5-abcdefg"
    _exe(prefix / "bin/mpicc")
    (prefix / "lib").mkdir()
    (prefix / "include").mkdir()
    spec = ss.SpecFacts("openmpi", "5.0.5", "a" * 32, str(prefix))
    module = ss.SpackModule("openmpi/5.0.5-aaaaaaa", "/m/Core/openmpi/5.0.5-aaaaaaa.lua", "/m/Core")
    m = ss.central_module(spec, module, "mpi")
    assert m.prefix == str(prefix) and m.facts["mpicc"] == str(prefix / "bin/mpicc")
    assert m.paths == {"PATH": (str(prefix / "bin"),), "LIBRARY_PATH": (str(prefix / "lib"),),
                       "CPATH": (str(prefix / "include"),)}
    assert "libraries" not in m.facts


def test_serial_hdf5_of_the_system_uses_the_serial_flavour(sysroot):
    spec = ss.SpecFacts("hdf5", "1.10.8", "b" * 32, "/usr", external=True, parallel=False)
    m = ss.central_module(spec, ss.SpackModule("hdf5/1.10.8", "/m/hdf5/1.10.8", "/m"), "hdf5", fs=ss._Fs(str(sysroot)))
    assert m.prefix == f"/{TRIPLET}/hdf5/serial" and m.facts["parallel"] is False


def test_missing_module_in_the_index_says_to_refresh(tree, indexes, site, sysroot):
    index = site / "modules/lmod/module-index.yaml"
    index.write_text(index.read_text().replace(f"  {OPENMPI}:", "  zzz:"))
    with pytest.raises(DiscoveryError) as err:
        stack_from_tree(tree, {"lmod": ModuleIndex.open(site / "modules/lmod")}, module_type="lmod",
                           sysroot=str(sysroot))
    assert "no lmod module for openmpi@4.1.4/d2lqwco" in err.value.one_line()
    assert "spack module lmod refresh" in err.value.one_line()


# ------------------------------------------------------------------------------- choosing specs


def test_selectors_without_spack(tree):
    facts = {s.name: ss.spec_facts_from_tree(tree, s) for s in tree.specs()}
    py, mpi, hdf5 = facts["python"], facts["openmpi"], facts["hdf5"]
    provides = lambda s, v: tree.provides(tree.get(s.dag_hash), v)  # noqa: E731
    assert matches_selector(py, "python@3.11") and matches_selector(py, "python@3.11.2")
    assert not matches_selector(py, "python@3.1") and not matches_selector(py, "python@3.12")
    assert matches_selector(mpi, "/d2lqwco") and matches_selector(mpi, "openmpi/d2lq")
    assert not matches_selector(mpi, "/nuf5uir")
    assert matches_selector(mpi, "mpi", provides) and not matches_selector(py, "mpi", provides)
    assert matches_selector(hdf5, "hdf5+mpi") and not matches_selector(hdf5, "hdf5~mpi")
    assert hdf5.mpi_name == "openmpi" and hdf5.mpi_hash == OPENMPI and hdf5.parallel is True
    with pytest.raises(UsageError):
        matches_selector(py, "python %gcc ^zlib")


def _spec(name, h, **kw):
    return ss.SpecFacts(name, kw.pop("version", "1.0"), h.ljust(32, "x"), kw.pop("prefix", "/usr"), **kw)


PY = _spec("python", "py1", version="3.11.2")
OMPI = _spec("openmpi", "ompi1", version="4.1.4")
MPICH = _spec("mpich", "mpich1", version="4.0")
H5_OMPI = _spec("hdf5", "h5o", parallel=True, mpi_name="openmpi", mpi_hash=OMPI.dag_hash)
H5_MPICH = _spec("hdf5", "h5m", parallel=True, mpi_name="mpich", mpi_hash=MPICH.dag_hash)


def choose(cands, requested=None, matching=None, need=True):
    requested = {"python": None, "mpi": None, "hdf5": None, **(requested or {})}
    matching = {"python": None, "mpi": None, "hdf5": None, **(matching or {})}
    return ss.choose_specs(cands, matching, requested, need_libraries=need)


def test_one_candidate_each_is_the_default():
    chosen = choose({"python": [PY], "mpi": [OMPI], "hdf5": [H5_OMPI]})
    assert chosen == {"python": PY, "mpi": OMPI, "hdf5": H5_OMPI}


def test_several_candidates_are_an_error_listing_them():
    with pytest.raises(PlanError) as err:
        choose({"python": [PY], "mpi": [OMPI, MPICH], "hdf5": []})
    text = err.value.one_line()
    assert "2 installed mpi specs" in text and "openmpi@4.1.4/ompi1xx" in text and "mpich@4.0/mpich1x" in text
    assert "--mpi" in text and "--mpi none" in text


def test_several_mpis_but_nothing_to_compile_leaves_mpi_out():
    assert choose({"python": [PY], "mpi": [OMPI, MPICH], "hdf5": []}, need=False) == {"python": PY}


def test_the_hdf5_decides_the_mpi():
    cands = {"python": [PY], "mpi": [OMPI, MPICH], "hdf5": [H5_MPICH]}
    assert choose(cands)["mpi"] == MPICH


def test_a_named_mpi_narrows_the_hdf5s():
    cands = {"python": [PY], "mpi": [OMPI, MPICH], "hdf5": [H5_OMPI, H5_MPICH]}
    chosen = choose(cands, {"mpi": "mpich"}, {"mpi": [MPICH]})
    assert chosen["mpi"] == MPICH and chosen["hdf5"] == H5_MPICH


def test_named_mpi_and_hdf5_that_disagree_are_an_error():
    cands = {"python": [PY], "mpi": [OMPI, MPICH], "hdf5": [H5_OMPI, H5_MPICH]}
    with pytest.raises(PlanError, match="was built against mpich"):
        choose(cands, {"mpi": "openmpi", "hdf5": "/h5m"}, {"mpi": [OMPI], "hdf5": [H5_MPICH]})


def test_no_match_lists_what_is_installed():
    with pytest.raises(PlanError) as err:
        choose({"python": [PY], "mpi": [OMPI], "hdf5": []}, {"mpi": "mpich"}, {"mpi": []})
    assert "--mpi mpich: no installed spec matches" in err.value.one_line()
    assert "openmpi@4.1.4" in err.value.one_line()


def test_none_leaves_a_role_out_but_not_the_python():
    cands = {"python": [PY], "mpi": [OMPI], "hdf5": [H5_OMPI]}
    assert choose(cands, {"mpi": "none", "hdf5": "none"}) == {"python": PY}
    with pytest.raises(UsageError):
        choose(cands, {"python": "none"})


def test_no_python_is_an_error():
    with pytest.raises(PlanError, match="no installed python"):
        choose({"python": [], "mpi": [], "hdf5": []})


def test_module_type_choice():
    class Shell:
        module_type = "tcl"

    assert ss.choose_module_type(None, None, None, ["lmod", "tcl"]) == "lmod"
    assert ss.choose_module_type(None, None, Shell(), ["lmod", "tcl"]) == "tcl"
    assert ss.choose_module_type(None, "tcl", None, ["lmod", "tcl"]) == "tcl"
    assert ss.choose_module_type("lmod", "tcl", Shell(), ["lmod", "tcl"]) == "lmod"
    with pytest.raises(PlanError, match="writes no tcl modules"):
        ss.choose_module_type("tcl", None, None, ["lmod"])
    with pytest.raises(DiscoveryError):
        ss.choose_module_type(None, None, None, [])


# ------------------------------------------------------------------------------- the hierarchy


def _mod(name, kind, where, unlocks=()):
    facts = {"spack_modulepath": where, **({"spack_unlocks": list(unlocks)} if unlocks else {})}
    return CentralModule(name, f"{where}/{name}.lua", kind, facts=facts)


def test_load_order_puts_openers_first():
    core = "/m/linux/Core"
    gcc = _mod("gcc/13.2.0", "compiler", core, ["/m/linux/gcc/13.2.0"])
    ompi = _mod("openmpi/5.0.5", "mpi", "/m/linux/gcc/13.2.0", ["/m/linux/openmpi/5.0.5/gcc/13.2.0"])
    h5 = _mod("hdf5/1.14.5", "hdf5", "/m/linux/openmpi/5.0.5/gcc/13.2.0")
    py = _mod("python/3.11.2", "python", core)
    stack = CentralStack(None, (py, h5, ompi, gcc))
    assert [m.name for m in ss.load_order(stack, [py, h5])] == ["python/3.11.2", "gcc/13.2.0", "openmpi/5.0.5", "hdf5/1.14.5"]
    assert ss.root_modulepaths(stack, ["python/3.11.2", "gcc/13.2.0", "openmpi/5.0.5", "hdf5/1.14.5"]) == [core]


def test_openers_follow_the_dag_and_stop_at_core():
    root = "/m"
    gcc = _spec("gcc", "gcc1")
    ompi = _spec("openmpi", "ompi5", dependency_hashes=(gcc.dag_hash,))
    h5 = _spec("hdf5", "h5x", dependency_hashes=(ompi.dag_hash, gcc.dag_hash))
    mods = {gcc.dag_hash: ss.SpackModule("gcc/13", "/m/linux/Core/gcc/13.lua", "/m/linux/Core", ("/m/linux/gcc/13",)),
            ompi.dag_hash: ss.SpackModule("openmpi/5", "/m/linux/gcc/13/openmpi/5.lua", "/m/linux/gcc/13",
                                          ("/m/linux/openmpi/5/gcc/13",)),
            h5.dag_hash: ss.SpackModule("hdf5/1.14", "/m/linux/openmpi/5/gcc/13/hdf5/1.14.lua", "/m/linux/openmpi/5/gcc/13")}
    others = [(gcc, mods[gcc.dag_hash]), (ompi, mods[ompi.dag_hash])]
    assert ss.openers(h5, mods[h5.dag_hash], root, others) == [gcc, ompi]
    assert ss.openers(gcc, mods[gcc.dag_hash], root, others) == []
    assert ss.is_core_modulepath("/m/linux/Core", root) and ss.is_core_modulepath("/m/linux", root)
    assert not ss.is_core_modulepath("/m/linux/openmpi/5/Core", root)


def _plan(stack, python_module, keep_loaded=False):
    from bridge.session import Plan

    return Plan(CreateRequest(name="x", keep_loaded=keep_loaded), stack, None, python_module, "lmod")


def test_session_dependencies_follow_the_hierarchy(tmp_path):
    """The one create pipeline orders for the hierarchy, whoever calls it (the plain envmod
    create over loaded modules wrote [python, hdf5] before: only the Spack session ordered)."""
    from bridge.session import CreateSession

    core = "/m/linux/Core"
    py = _mod("python/3.11.2", "python", core)
    ompi = _mod("openmpi/5.0.5", "mpi", core, ["/m/linux/openmpi/5.0.5/Core"])
    h5 = _mod("hdf5/1.14.5", "hdf5", "/m/linux/openmpi/5.0.5/Core")
    stack = CentralStack(None, (py, h5, ompi))
    session = CreateSession(CreateRequest(name="x"), load_settings({"HOME": str(tmp_path)}))
    # the scan found h5py linking the HDF5 that lives in the subtree the MPI module opens
    links = [LinkEvidence(file="h5py/_conv.so", needs="libhdf5.so.310", path="/x/libhdf5.so.310",
                          provider="hdf5/1.14.5")]
    deps = session.dependencies(_plan(stack, py), links, [])
    assert [m.name for m in deps] == ["python/3.11.2", "openmpi/5.0.5", "hdf5/1.14.5"]
    # --keep-loaded: every module, still each after the one that opens its subtree
    kept = session.dependencies(_plan(stack, py, keep_loaded=True), links, [])
    assert [m.name for m in kept] == ["python/3.11.2", "openmpi/5.0.5", "hdf5/1.14.5"]


def test_a_core_compiler_reopening_core_opens_no_subtree():
    """Spack's module of a Core compiler (gcc, which an HDF5 with a C compiler loads) prepends
    the Core dir it lives in: that makes it neither an opener of Core's modules nor Core a subtree."""
    core = "/m/linux/Core"
    gcc = _mod("gcc/12.2.0", "compiler", core, [core])
    py = _mod("python/3.11.2", "python", core)
    ompi = _mod("openmpi/4.1.4", "mpi", core, ["/m/linux/openmpi/4.1.4/Core"])
    h5 = _mod("hdf5/1.10.8", "hdf5", "/m/linux/openmpi/4.1.4/Core")
    stack = CentralStack(None, (py, ompi, gcc, h5))
    assert [m.name for m in ss.load_order(stack, [py, h5])] == ["python/3.11.2", "openmpi/4.1.4", "hdf5/1.10.8"]
    names = ["python/3.11.2", "openmpi/4.1.4", "hdf5/1.10.8"]
    assert ss.root_modulepaths(stack, names) == [core]
    from bridge.store.record import CentralModuleRecord, EnvRecord, ModuleRecord, Provenance, PythonRecord

    record = EnvRecord(name="e", backend="venv", prefix="/e", python=PythonRecord("3.11.2", "/usr/bin/python3"),
                       module=ModuleRecord(name="e/py3.11", type="lmod", depends_on=names),
                       created=Provenance(at="t", by="u", host="h", envmod_version="0"),
                       central_modules=[CentralModuleRecord.of(m) for m in stack.modules])
    assert ss.record_modulepaths(record) == [core]
    assert ss.record_modulepaths(record, subtrees=True) == [core, "/m/linux/openmpi/4.1.4/Core"]
    assert ss.modulepath_with_record(record, "/a", subtrees=True) == f"{core}:/m/linux/openmpi/4.1.4/Core:/a"


def test_unlocks_read_from_modulefiles(site, tmp_path):
    lua = site / "modules/lmod" / ARCH / "Core/openmpi/4.1.4-d2lqwco.lua"
    assert ss.unlocks_from_modulefile(str(lua)) == (str(site / "modules/lmod" / ARCH / "openmpi/4.1.4-d2lqwco/Core"),)
    assert ss.unlocks_from_modulefile(str(site / "modules/lmod" / ARCH / "Core/python/3.11.2-nuf5uir.lua")) == ()
    tcl = tmp_path / "mpi"
    tcl.write_text("#%Module1.0\nmodule use --prepend /x/mpi/Core\nprepend-path MODULEPATH {/y/z}\n")
    assert ss.unlocks_from_modulefile(str(tcl)) == ("/x/mpi/Core", "/y/z")
    assert ss.unlocks_from_modulefile(str(tmp_path / "nothing")) == ()
    assert ss.modulepath_of("/m/linux/Core/openmpi/4.1.4-d2lqwco.lua", "openmpi/4.1.4-d2lqwco") == "/m/linux/Core"


# ------------------------------------------------------------------------------- records


@pytest.fixture
def created(tmp_path, tree, indexes, monkeypatch):
    """An env created by the standalone library from the recorded tree, no Spack involved."""
    if not os.access("/usr/bin/python3.11", os.X_OK):
        pytest.skip("the recorded site's Python (/usr/bin/python3.11) is not on this machine")
    from bridge.progress import Reporter

    monkeypatch.setenv("ENVMOD_ROOT", str(tmp_path / "root"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    settings = load_settings()
    stack = stack_from_tree(tree, indexes, module_type="lmod")
    python = stack.first("python").facts["python"]
    request = CreateRequest(name="fromtree", python=python, module_type="lmod")
    record = CreateSession(request, settings, Reporter(quiet=True), stack=stack).run()
    return settings, record


def test_standalone_create_from_the_tree_records_spack_evidence(created):
    settings, record = created
    assert record.python.module == "python/3.11.2-nuf5uir"
    assert record.module.depends_on == ["python/3.11.2-nuf5uir"]
    recorded = read_record(settings.envs_dir / "fromtree" / "envmod.yaml")
    facts = {m.kind: m.facts for m in recorded.central_modules}
    assert facts["python"]["spack_hash"] == PYTHON and facts["mpi"]["spack_hash"] == OPENMPI
    text = (settings.modules_dir / "fromtree" / "py3.11.lua").read_text()
    assert 'depends_on("python/3.11.2-nuf5uir")' in text


def test_module_type_switch_uses_spack_names_of_that_type(created):
    _, record = created
    record.links.append(LinkEvidence(file="x.so", needs="libpython3.11.so.1.0", path=None,
                                     provider="python/3.11.2-nuf5uir"))
    switched = ss.with_module_type(record, "tcl")
    assert switched.module.depends_on == ["python/3.11.2-none-none-nuf5uir"]
    assert switched.python.module == "python/3.11.2-none-none-nuf5uir"
    assert switched.links[-1].provider == "python/3.11.2-none-none-nuf5uir"
    mpi = switched.central_module("openmpi/4.1.4-none-none-d2lqwco")
    assert mpi.kind == "mpi" and mpi.modulefile.endswith(f"modules/tcl/{ARCH}/openmpi/4.1.4-none-none-d2lqwco")
    assert ss.record_modulepaths(switched) == [mpi.facts["spack_modulepath"]]
    assert mpi.facts["spack_modulepath"].endswith(f"modules/tcl/{ARCH}")
    back = ss.with_module_type(switched, "lmod")
    assert back.module.depends_on == ["python/3.11.2-nuf5uir"]


def test_check_sees_a_module_pointing_at_another_build(created, site, tree):
    settings, record = created
    installed = lambda h: tree.get(h).short_spec if h in tree else None  # noqa: E731
    assert [(c.name, c.status) for c in ss.check_spack_modules(record, installed)] == [("python/3.11.2-nuf5uir", "ok")]

    # the site rebuilt python and kept the module name (a projection without hash): the name
    # now maps to another DAG hash in module-index.yaml
    index = site / "modules/lmod/module-index.yaml"
    index.write_text(index.read_text().replace(f"  {PYTHON}:", "  " + "q" * 32 + ":"))
    [check] = ss.check_spack_modules(record, installed)
    assert check.status == "changed" and check.current_hash == "q" * 32 and "another build" in check.detail

    # the module is gone altogether
    index.write_text("module_index: {}\n")
    Path(record.central_module("python/3.11.2-nuf5uir").modulefile).unlink()
    [check] = ss.check_spack_modules(record, installed)
    assert check.status == "missing"


def test_check_sees_a_spec_no_longer_installed(created):
    _, record = created
    [check] = ss.check_spack_modules(record, lambda h: None)
    assert check.status == "changed" and "no longer installed" in check.detail


def test_record_round_trip_keeps_spack_facts(created, tmp_path):
    settings, record = created
    path = write_record(record, tmp_path)
    again = read_record(path)
    assert again.central_module("openmpi/4.1.4-d2lqwco").facts["spack_unlocks"] == \
        record.central_module("openmpi/4.1.4-d2lqwco").facts["spack_unlocks"]


# issue #9: an explicit --mpi none is never overridden by the MPI of an HDF5


def test_mpi_none_is_not_overridden_by_the_mpi_of_an_hdf5():
    cands = {"python": [PY], "mpi": [OMPI], "hdf5": [H5_OMPI]}
    assert choose(cands, {"mpi": "none"}, need=False) == {"python": PY}


def test_mpi_none_with_a_package_that_needs_an_mpi_is_refused():
    cands = {"python": [PY], "mpi": [OMPI], "hdf5": [H5_OMPI]}
    with pytest.raises(PlanError) as err:
        ss.choose_specs(cands, {"python": None, "mpi": None, "hdf5": None},
                        {"python": None, "mpi": "none", "hdf5": None}, need_libraries=True,
                        needed={"mpi": "mpi4py"})
    assert "--mpi none: mpi4py must be compiled against an MPI" in err.value.one_line()


def test_mpi_none_and_an_hdf5_built_against_an_mpi_are_refused():
    cands = {"python": [PY], "mpi": [OMPI], "hdf5": [H5_OMPI]}
    with pytest.raises(PlanError) as err:
        choose(cands, {"mpi": "none", "hdf5": "/h5o"}, {"hdf5": [H5_OMPI]})
    text = err.value.one_line()
    assert "was built against openmpi/ompi1xx" in text and "--mpi none" in text


def test_mpi_none_leaves_out_hdf5s_built_against_an_mpi_and_says_so_when_one_is_needed():
    cands = {"python": [PY], "mpi": [OMPI], "hdf5": [H5_OMPI]}
    with pytest.raises(PlanError) as err:
        ss.choose_specs(cands, {"python": None, "mpi": None, "hdf5": None},
                        {"python": None, "mpi": "none", "hdf5": None}, need_libraries=True,
                        needed={"hdf5": "h5py"})
    text = err.value.one_line()
    assert "--mpi none" in text and "hdf5@1.0/h5oxx" in text and "built against an MPI" in text


def test_roles_needed_come_from_the_build_rules():
    rules = load_rules()
    assert ss.roles_needed(["mpi4py>=4", "numpy"], rules) == {"mpi": "mpi4py"}
    assert ss.roles_needed(["numpy"], rules) == {}
    assert ss.roles_needed(["h5py"], rules) == {"hdf5": "h5py"}


def test_the_none_hint_is_not_offered_for_a_role_the_packages_need():
    cands = {"python": [PY], "mpi": [OMPI, MPICH], "hdf5": []}
    with pytest.raises(PlanError) as err:
        ss.choose_specs(cands, {"python": None, "mpi": None, "hdf5": None},
                        {"python": None, "mpi": None, "hdf5": None}, need_libraries=True,
                        needed={"mpi": "mpi4py"})
    text = err.value.one_line()
    assert "--mpi /ompi1xx" in text and "--mpi none" not in text


def test_an_export_names_the_specs_of_a_spack_create_from_it(tmp_path):
    record = read_record_with_spack_facts(tmp_path)
    path = tmp_path / "exp.yaml"
    path.write_text(render_export(record, "yaml"))
    exported = read_export(path)
    assert exported.spack_hashes == {"python": PY.dag_hash, "mpi": OMPI.dag_hash}
    requested = ss.requested_from_export({"python": None, "mpi": None, "hdf5": None}, exported.spack_hashes)
    assert requested == {"python": f"/{PY.dag_hash}", "mpi": f"/{OMPI.dag_hash}", "hdf5": "none"}
    assert ss.requested_from_export({"python": None, "mpi": None, "hdf5": "/h5o"}, {}) == \
        {"python": None, "mpi": None, "hdf5": "/h5o"}
    # what the user names wins over the export
    assert ss.requested_from_export({"python": None, "mpi": "none", "hdf5": None},
                                    exported.spack_hashes)["mpi"] == "none"


def test_show_prints_the_spack_builds(tmp_path):
    record = read_record_with_spack_facts(tmp_path)
    assert ss.format_spack_builds(record) == [
        f"python/3.11.2-aaaaaaa: python@3.11.2/py1xxxx {PY.dag_hash} (external /usr)",
        f"openmpi/4.1.4-bbbbbbb: openmpi@4.1.4/ompi1xx {OMPI.dag_hash}"]


def read_record_with_spack_facts(tmp_path):
    from tests.unit.test_record import make_record

    from bridge.store.record import CentralModuleRecord

    record = make_record(tmp_path, central_modules=[
        CentralModuleRecord(name="python/3.11.2-aaaaaaa", kind="python",
                            facts={"spack_hash": PY.dag_hash, "spack_spec": "python@3.11.2/py1xxxx",
                                   "spack_external": True, "spack_prefix": "/usr"}),
        CentralModuleRecord(name="openmpi/4.1.4-bbbbbbb", kind="mpi",
                            facts={"spack_hash": OMPI.dag_hash, "spack_spec": "openmpi@4.1.4/ompi1xx",
                                   "spack_external": False, "spack_prefix": "/opt/ompi"})])
    record.module.depends_on = ["python/3.11.2-aaaaaaa", "openmpi/4.1.4-bbbbbbb"]
    return record
