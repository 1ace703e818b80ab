"""bridge.spack.tree: reading a Spack install tree and module indexes without Spack.

Most tests run on tests/data/spack-tree (what Spack 1.1.0 wrote for ci/spack-site.sh; see its
README.md); tests/spack/test_spacktree_live.py compares the reader with a live Spack.
"""

from __future__ import annotations

import copy
import json
import pickle
from pathlib import Path
from typing import Any

import pytest
from tests.recorded_spack_tree import ARCH, DATA, HDF5, OPENMPI, PYTHON, copy_recorded_site
from tests.unit.spacktree_helpers import modulefile, modulepath_dirs, use_name

from bridge.spack.tree import (
    KNOWN_PROVIDERS,
    CorruptSpackData,
    ModuleIndex,
    NotASpackTree,
    SpackTree,
    SpackTreeError,
    UnsupportedDatabaseVersion,
)


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A copy of the recorded site with @SITE@ made real, so module paths point at files."""
    return copy_recorded_site(tmp_path / "site")


@pytest.fixture
def tree(site: Path) -> SpackTree:
    return SpackTree.open(site / "opt")


@pytest.fixture
def lmod(site: Path) -> ModuleIndex:
    return ModuleIndex.open(site / "modules" / "lmod")


@pytest.fixture
def tcl(site: Path) -> ModuleIndex:
    return ModuleIndex.open(site / "modules" / "tcl")


def load_db(site: Path) -> dict[str, Any]:
    return json.loads((site / "opt/.spack-db/index.json").read_text())


def save_db(site: Path, data: Any) -> None:
    (site / "opt/.spack-db/index.json").write_text(json.dumps(data))


def built_record(name: str, dag_hash: str, root: Path, **parameters: Any) -> dict[str, Any]:
    """A database record shaped like one Spack writes for a spec it built itself."""
    return {
        "spec": {
            "name": name,
            "version": "1.0",
            "arch": {"platform": "linux", "platform_os": "debian12", "target": {"name": "zen2"}},
            "namespace": "builtin",
            "parameters": {"build_system": "generic", "cflags": ["-O2"], **parameters},
            "hash": dag_hash,
        },
        "path": str(root / f"linux-zen2/{name}-1.0-{dag_hash}"),
        "installed": True,
        "explicit": True,
        "ref_count": 0,
        "installation_time": 0.0,
        "deprecated_for": None,
    }


# --------------------------------------------------------------------------- the tree


def test_open_reads_every_recorded_spec(tree: SpackTree, site: Path) -> None:
    assert tree.db_version == "8"
    assert tree.root == site / "opt"
    assert len(tree) == 3
    assert [s.name for s in tree.specs()] == ["hdf5", "openmpi", "python"]
    assert [s.name for s in tree] == ["hdf5", "openmpi", "python"]
    assert HDF5 in tree and "nope" not in tree


def test_spec_fields_match_the_database(tree: SpackTree) -> None:
    (hdf5,) = tree.specs("hdf5")
    assert (hdf5.name, hdf5.version, hdf5.dag_hash) == ("hdf5", "1.10.8", HDF5)
    assert hdf5.short_hash == "bsz4j7z"
    assert hdf5.short_spec == str(hdf5) == "hdf5@1.10.8/bsz4j7z"
    assert hdf5.external and hdf5.external_path == Path("/usr") and hdf5.prefix == Path("/usr")
    assert hdf5.external_modules == ()
    assert (hdf5.platform, hdf5.os, hdf5.target) == ("linux", "debian12", "x86_64")
    assert hdf5.namespace == "builtin"
    assert hdf5.installed and hdf5.explicit and hdf5.ref_count == 0
    assert hdf5.deprecated_for is None
    # variants and flags as Spack recorded them: booleans, single values, multi-valued as tuples
    assert hdf5.parameters["mpi"] is True and hdf5.parameters["java"] is False
    assert hdf5.parameters["api"] == ("v18",)
    assert hdf5.parameters["build_system"] == "cmake"
    assert hdf5.parameters["cflags"] == ()
    (edge,) = hdf5.dependencies
    assert (edge.name, edge.dag_hash, edge.deptypes, edge.virtuals) == (
        "openmpi",
        OPENMPI,
        ("build", "link"),
        ("mpi",),
    )
    assert edge.provides("mpi")
    assert tree.get(OPENMPI).ref_count == 1  # hdf5 depends on it


def test_specs_filters_by_name(tree: SpackTree) -> None:
    assert [s.dag_hash for s in tree.specs("python")] == [PYTHON]
    assert tree.specs("mpich") == []


def test_get_by_hash_and_unique_prefix(tree: SpackTree) -> None:
    assert tree.get(HDF5).name == "hdf5"
    assert tree.get("bsz4j7z").name == "hdf5"
    with pytest.raises(KeyError, match="no spec"):
        tree.get("zzzzzzz")
    with pytest.raises(KeyError):
        tree.get("")


def test_find_by_name_and_by_virtual(tree: SpackTree) -> None:
    assert [s.dag_hash for s in tree.find("hdf5")] == [HDF5]
    # hdf5's edge records openmpi as its 'mpi'
    assert [s.dag_hash for s in tree.find("mpi")] == [OPENMPI]
    assert tree.find("blas") == []
    assert tree.provides(tree.get(OPENMPI), "mpi")
    assert not tree.provides(tree.get(HDF5), "mpi")


def test_dependency_follows_names_and_virtuals(tree: SpackTree) -> None:
    hdf5, openmpi, python = tree.get(HDF5), tree.get(OPENMPI), tree.get(PYTHON)
    assert tree.dependency(hdf5, "mpi") == openmpi
    assert tree.dependency(hdf5, "openmpi") == openmpi
    assert tree.dependency(hdf5, "hdf5") == hdf5  # like spec["hdf5"] on hdf5 itself
    assert tree.dependency(python, "mpi") is None
    assert tree.dependency(openmpi, "hdf5") is None


def test_graph_navigation(tree: SpackTree) -> None:
    hdf5, openmpi = tree.get(HDF5), tree.get(OPENMPI)
    assert tree.dependencies(hdf5) == [openmpi]
    assert tree.dependencies(hdf5, deptype="link") == [openmpi]
    assert tree.dependencies(hdf5, deptype="run") == []
    assert tree.traverse(hdf5) == [hdf5, openmpi]
    assert hdf5.edges("mpi") == hdf5.edges("openmpi") == list(hdf5.dependencies)
    assert hdf5.edges(deptype="run") == []


def test_specs_are_immutable_hashable_and_picklable(tree: SpackTree) -> None:
    hdf5 = tree.get(HDF5)
    with pytest.raises(AttributeError):
        hdf5.name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        hdf5.parameters["mpi"] = False  # type: ignore[index]
    assert {hdf5, tree.get(HDF5)} == {hdf5}
    again = pickle.loads(pickle.dumps(hdf5))
    assert again == hdf5 and again.parameters == hdf5.parameters
    assert copy.deepcopy(hdf5) == hdf5
    json.dumps(dict(hdf5.parameters))  # plain JSON values


def test_open_accepts_the_db_directory(site: Path) -> None:
    assert len(SpackTree.open(site / "opt" / ".spack-db")) == 3
    assert len(SpackTree.open(str(site / "opt"))) == 3


def test_built_spec_and_known_provider_without_dependents(site: Path) -> None:
    data = load_db(site)
    installs = data["database"]["installs"]
    del installs[HDF5]  # now nothing says openmpi is an 'mpi'
    installs["a" * 32] = built_record("nvhpc", "a" * 32, site / "opt", mpi=False)
    installs["b" * 32] = built_record("nvhpc", "b" * 32, site / "opt", mpi=True)
    save_db(site, data)
    tree = SpackTree.open(site / "opt")
    # KNOWN_PROVIDERS: openmpi always, nvhpc only when built +mpi
    assert [s.dag_hash for s in tree.find("mpi")] == ["b" * 32, OPENMPI]
    built = tree.get("a" * 32)
    assert not built.external and built.external_path is None
    assert built.prefix == site / "opt" / f"linux-zen2/nvhpc-1.0-{'a' * 32}"
    assert (built.platform, built.os, built.target) == ("linux", "debian12", "zen2")
    assert built.parameters["cflags"] == ("-O2",)
    assert "openmpi" in KNOWN_PROVIDERS["mpi"]


def test_dependency_falls_back_to_known_providers(site: Path) -> None:
    data = load_db(site)
    # a DAG recorded without virtuals on its edges
    data["database"]["installs"][HDF5]["spec"]["dependencies"][0]["parameters"]["virtuals"] = []
    save_db(site, data)
    tree = SpackTree.open(site / "opt")
    assert tree.dependency(tree.get(HDF5), "mpi") == tree.get(OPENMPI)


def test_missing_and_deprecated_records_are_hidden_by_default(site: Path) -> None:
    data = load_db(site)
    data["database"]["installs"][OPENMPI]["installed"] = False
    data["database"]["installs"][PYTHON]["deprecated_for"] = "x" * 32
    save_db(site, data)
    tree = SpackTree.open(site / "opt")
    assert [s.name for s in tree.specs()] == ["hdf5"]
    assert [s.name for s in tree.specs(include_missing=True)] == ["hdf5", "openmpi"]
    assert [s.name for s in tree.specs(include_deprecated=True)] == ["hdf5", "python"]
    assert tree.find("mpi") == []
    assert [s.name for s in tree.find("mpi", include_missing=True)] == ["openmpi"]
    # the edge still resolves: hdf5's record points at it
    assert tree.dependency(tree.get(HDF5), "mpi") == tree.get(OPENMPI)


def test_dependency_in_another_database_is_none(site: Path) -> None:
    data = load_db(site)
    del data["database"]["installs"][OPENMPI]  # as if openmpi lived in an upstream
    save_db(site, data)
    tree = SpackTree.open(site / "opt")
    hdf5 = tree.get(HDF5)
    assert tree.dependency(hdf5, "mpi") is None
    assert tree.dependencies(hdf5) == []
    assert hdf5.edges("mpi")[0].dag_hash == OPENMPI


def test_versions_sort_numerically(site: Path) -> None:
    data = load_db(site)
    installs = data["database"]["installs"]
    for n, version in enumerate(["1.9", "1.10.2", "1.10.10"]):
        rec = built_record("zlib", str(n) * 32, site / "opt")
        rec["spec"]["version"] = version
        installs[str(n) * 32] = rec
    save_db(site, data)
    assert [s.version for s in SpackTree.open(site / "opt").specs("zlib")] == ["1.9", "1.10.2", "1.10.10"]


def test_empty_db_directory_is_an_empty_tree(tmp_path: Path) -> None:
    (tmp_path / ".spack-db").mkdir()
    tree = SpackTree.open(tmp_path)
    assert len(tree) == 0 and tree.specs() == [] and tree.find("mpi") == []


# --------------------------------------------------------------------------- errors


def test_not_a_tree(tmp_path: Path) -> None:
    with pytest.raises(NotASpackTree, match="not a Spack install tree") as info:
        SpackTree.open(tmp_path)
    assert str(tmp_path) in str(info.value)
    assert "install_tree" in str(info.value)  # the hint says what to pass
    with pytest.raises(NotASpackTree):
        SpackTree.open(tmp_path / "missing")


@pytest.mark.parametrize("version", ["7", "9", "", 8.5])
def test_unsupported_database_version(site: Path, version: Any) -> None:
    data = load_db(site)
    data["database"]["version"] = version
    save_db(site, data)
    with pytest.raises(UnsupportedDatabaseVersion, match="format version"):
        SpackTree.open(site / "opt")


def test_corrupt_json(site: Path) -> None:
    index = site / "opt/.spack-db/index.json"
    index.write_text(index.read_text()[:500])  # cut short
    with pytest.raises(CorruptSpackData, match="not valid JSON"):
        SpackTree.open(site / "opt")


@pytest.mark.parametrize(
    "content, message",
    [
        ([], "no 'database'"),
        ({"installs": {}}, "no 'database'"),
        ({"database": {"version": "8"}}, "no 'installs'"),
        ({"database": {"version": "8", "installs": {HDF5: 3}}}, "not an object"),
        ({"database": {"version": "8", "installs": {HDF5: {"spec": {"version": "1"}}}}}, "no spec name"),
        (
            {"database": {"version": "8", "installs": {HDF5: {"spec": {"name": "x", "version": "1",
                                                                         "dependencies": [{"name": "y"}]}}}}},
            "malformed",
        ),
    ],
)
def test_database_of_the_wrong_shape(site: Path, content: Any, message: str) -> None:
    save_db(site, content)
    with pytest.raises(CorruptSpackData, match=message):
        SpackTree.open(site / "opt")


def test_errors_share_one_base(tmp_path: Path) -> None:
    for cls in (NotASpackTree, UnsupportedDatabaseVersion, CorruptSpackData):
        assert issubclass(cls, SpackTreeError) and issubclass(cls, Exception)
    err = SpackTreeError("broken", hint="do this")
    assert str(err) == "broken (do this)" and err.message == "broken" and err.hint == "do this"


# --------------------------------------------------------------------------- module indexes


def test_lmod_index(tree: SpackTree, lmod: ModuleIndex, site: Path) -> None:
    core = site / "modules/lmod" / ARCH / "Core"
    assert lmod.kind == "lmod" and len(lmod) == 3
    assert use_name(lmod, tree.get(PYTHON)) == "python/3.11.2-nuf5uir"
    assert use_name(lmod, tree.get(OPENMPI)) == "openmpi/4.1.4-d2lqwco"
    assert use_name(lmod, HDF5) == "hdf5/1.10.8-bsz4j7z"
    entry = lmod.module_for(tree.find("mpi")[0])
    assert entry is not None and entry.path == core / "openmpi/4.1.4-d2lqwco.lua"
    assert entry.path.is_file()
    # externals, hdf5+mpi included, all land in Core
    assert modulepath_dirs(lmod) == [core]
    assert [e.use_name for e in lmod.entries()] == sorted(e.use_name for e in lmod.entries())
    assert tree.get(HDF5) in lmod and "x" * 32 not in lmod
    assert lmod.module_for("x" * 32) is None


def test_tcl_index(tree: SpackTree, tcl: ModuleIndex, site: Path) -> None:
    flat = site / "modules/tcl" / ARCH
    assert tcl.kind == "tcl"
    # externals have no compiler: 'none-none' in the default Tcl projection
    assert {use_name(tcl, s) for s in tree.specs()} == {
        "python/3.11.2-none-none-nuf5uir",
        "openmpi/4.1.4-none-none-d2lqwco",
        "hdf5/1.10.8-none-none-bsz4j7z",
    }
    assert modulefile(tcl, HDF5) == flat / "hdf5/1.10.8-none-none-bsz4j7z"
    assert modulepath_dirs(tcl) == [flat]
    assert all(e.path.is_file() for e in tcl.entries())


def test_recorded_modulefiles_agree_with_the_reader(tree: SpackTree, lmod: ModuleIndex, tcl: ModuleIndex,
                                                    site: Path) -> None:
    hdf5 = tree.get(HDF5)
    mpi = tree.dependency(hdf5, "mpi")
    assert mpi is not None
    hdf5_lua = modulefile(lmod, hdf5).read_text()
    assert f'depends_on("{use_name(lmod, mpi)}")' in hdf5_lua
    mpi_lua = modulefile(lmod, mpi).read_text()
    assert 'family("mpi")' in mpi_lua
    # the MPI module opens its own subtree of the hierarchy: <arch>/<name>/<version>-<hash7>/Core
    subtree = site / "modules/lmod" / ARCH / mpi.name / f"{mpi.version}-{mpi.short_hash}" / "Core"
    assert f'prepend_path("MODULEPATH", "{subtree}")' in mpi_lua
    hdf5_tcl = modulefile(tcl, hdf5).read_text()
    assert hdf5_tcl.startswith("#%Module")
    assert f"depends-on {use_name(tcl, mpi)}" in hdf5_tcl


def test_module_index_accepts_the_file_itself(site: Path) -> None:
    assert len(ModuleIndex.open(site / "modules/lmod/module-index.yaml")) == 3


def test_module_index_errors(tmp_path: Path) -> None:
    with pytest.raises(NotASpackTree, match="refresh"):
        ModuleIndex.open(tmp_path)
    index = tmp_path / "module-index.yaml"
    index.write_text("module_index: {a: [unclosed\n")
    with pytest.raises(CorruptSpackData, match="not valid YAML"):
        ModuleIndex.open(tmp_path)
    index.write_text("module_index: [1, 2]\n")
    with pytest.raises(CorruptSpackData, match="no 'module_index'"):
        ModuleIndex.open(tmp_path)
    index.write_text("module_index:\n  abc:\n    path: /x\n")
    with pytest.raises(CorruptSpackData, match="malformed"):
        ModuleIndex.open(tmp_path)


@pytest.mark.parametrize("text", ["", "module_index: {}\n", "module_index:\n"])
def test_empty_module_index(tmp_path: Path, text: str) -> None:
    (tmp_path / "module-index.yaml").write_text(text)
    index = ModuleIndex.open(tmp_path)
    assert len(index) == 0 and index.kind is None and index.entries() == []


def test_recorded_data_is_portable() -> None:
    for path in DATA.rglob("*"):
        if path.is_file() and path.name not in ("README.md", "record.sh"):
            text = path.read_text(encoding="utf-8")
            assert "envmod-spack-site" not in text, path
            assert "://" not in text, path
