"""bridge.scan.evidence: link and requirement evidence, on small trees built with the real compiler.

The oracle for link evidence is the real dynamic loader: the test's Python dlopen()s the env
file with the modules' LD_LIBRARY_PATH set and reads /proc/self/maps, and every library the
scan says is loaded must be mapped (and vice versa for the file's own part of the map).
Attribution is tested on the layouts sites really have: a prefix per module, modules sharing a
prefix, site installs that wrap Debian's libraries with symlinks, EasyBuild RPATH'd builds
(DT_RPATH with $ORIGIN, as its compiler wrappers link), EasyBuild's SystemMPI at /usr and Spack
externals at /usr (with the machine's real Open MPI and HDF5 where installed).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.discover.pyinfo import PythonInfo
from bridge.discover.stack import CentralModule
from bridge.scan.evidence import (
    Attributor,
    attribute_install_trees,
    central_package_dirs,
    check_declared_modules,
    display_path,
    distributions_in,
    easybuild_install_roots,
    format_evidence,
    format_links,
    module_ld_library_path,
    required_modules,
    scan_links,
    scan_requirements,
    tree_module,
)
from bridge.store.record import (
    EnvRecord,
    LinkEvidence,
    ModuleRecord,
    PackageRecord,
    Provenance,
    PythonRecord,
    RequirementEvidence,
)

GCC = shutil.which("gcc")
IS_LINUX_X86_64 = sys.platform.startswith("linux") and os.uname().machine == "x86_64"
needs_gcc = pytest.mark.skipif(not (GCC and IS_LINUX_X86_64), reason="needs gcc on x86_64 Linux")
MULTIARCH = "/usr/lib/x86_64-linux-gnu"
DEB_LIBMPI = f"{MULTIARCH}/libmpi.so.40"
DEB_HDF5 = f"{MULTIARCH}/libhdf5_openmpi.so.103"
needs_debian_openmpi = pytest.mark.skipif(not os.path.exists(DEB_LIBMPI), reason="needs Debian's libopenmpi3")
needs_debian_hdf5 = pytest.mark.skipif(not os.path.exists(DEB_HDF5), reason="needs Debian's libhdf5-openmpi")
# The interpreter that dlopen()s extension modules, as a venv's bin/python points to it.
PYTHON = os.path.realpath(sys.executable)
CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("LD_")}


# ---------------------------------------------------------------------------------------------
# helpers: a compiler, a site, an env


def cc(out: Path, src: str, *args: str, shared: bool = True) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    c = out.parent / (out.name + ".c")
    c.write_text(src)
    cmd = [GCC, *(["-shared", "-fPIC"] if shared else []), "-o", str(out), str(c), *args]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    c.unlink()
    return out


def lib(directory: Path, soname: str, *args: str, symbol: str = "f", value: int = 1) -> Path:
    """A shared library with its SONAME, plus the libNAME.so link name next to it."""
    path = cc(directory / soname, f"int {symbol}(void){{return {value};}}\n", f"-Wl,-soname,{soname}", *args)
    link = directory / (soname.split(".so")[0] + ".so")
    if not link.exists():
        link.symlink_to(soname)
    return path


def module(name: str, prefix: Path | str | None, kind: str = "other", ld: list[Path | str] = (),
           libpath: list[Path | str] = (), pythonpath: list[Path | str] = (), prefixes: dict | None = None,
           facts: dict | None = None) -> CentralModule:
    paths = {}
    if ld:
        paths["LD_LIBRARY_PATH"] = tuple(str(p) for p in ld)
    if libpath:
        paths["LIBRARY_PATH"] = tuple(str(p) for p in libpath)
    if pythonpath:
        paths["PYTHONPATH"] = tuple(str(p) for p in pythonpath)
    return CentralModule(name, f"/modules/{name}", kind, str(prefix) if prefix else None, paths,
                         {k: str(v) for k, v in (prefixes or {}).items()}, facts or {})


def make_env(root: Path) -> tuple[Path, Path]:
    """A venv-shaped env: bin/python -> the real interpreter, and its site-packages."""
    sp = root / "lib/python3.11/site-packages"
    sp.mkdir(parents=True)
    (root / "bin").mkdir()
    (root / "bin/python").symlink_to(PYTHON)
    (root / "lib64").symlink_to("lib")
    return root, sp


def ext(sp: Path, rel: str, needs: list[tuple[Path, str]], *args: str) -> Path:
    """An extension module at site-packages/rel linking each (dir, libname) (as DT_NEEDED, used or not)."""
    link = [a for d, name in needs for a in (f"-L{d}", f"-l:{name}")]
    return cc(sp / rel, "int mod(void){return 0;}\n", "-Wl,--no-as-needed", *link, *args)


def loader_maps(target: Path, ld_library_path: list[str]) -> set[str]:
    """What the real loader maps when Python dlopen()s target with that LD_LIBRARY_PATH."""
    code = ("import ctypes,sys; ctypes.CDLL(sys.argv[1]); "
            "print('\\n'.join(sorted({l.split()[-1] for l in open('/proc/self/maps') "
            "if '/' in l.split()[-1]})))")
    env = dict(CLEAN_ENV, LD_LIBRARY_PATH=":".join(ld_library_path))
    p = subprocess.run([PYTHON, "-c", code, str(target)], capture_output=True, text=True, env=env, check=True)
    return set(p.stdout.split())


def by_need(links: list[LinkEvidence], file_end: str, via: str | None = None) -> dict[str, LinkEvidence]:
    return {e.needs: e for e in links if e.file.endswith(file_end) and e.via == via}


@pytest.fixture
def site(tmp_path: Path):
    """Two modules with prefixes of their own: an MPI, and an HDF5 linked against it."""
    if not (GCC and IS_LINUX_X86_64):
        pytest.skip("needs gcc on x86_64 Linux")
    sw = tmp_path / "sw"
    mpi_lib = sw / "mpi/4.1/lib"
    lib(mpi_lib, "libmpi.so.40", symbol="f_mpi")
    hdf_lib = sw / "hdf5/1.10/lib"
    cc(hdf_lib / "libhdf5.so.103", "int f_mpi(void); int f(void){return f_mpi();}\n",
       "-Wl,-soname,libhdf5.so.103", f"-L{mpi_lib}", "-l:libmpi.so.40")
    mpi = module("mpi/4.1", sw / "mpi/4.1", "mpi", ld=[mpi_lib])
    hdf5 = module("hdf5/1.10", sw / "hdf5/1.10", "hdf5", ld=[hdf_lib])
    return sw, [mpi, hdf5]


# ---------------------------------------------------------------------------------------------
# the scan, against the real loader


@needs_gcc
def test_scan_attributes_direct_and_indirect_needs_like_the_loader(tmp_path: Path, site) -> None:
    sw, modules = site
    env, sp = make_env(tmp_path / "env")
    mpi_lib, hdf_lib = sw / "mpi/4.1/lib", sw / "hdf5/1.10/lib"
    target = ext(sp, "pkg/_h5.cpython-311-x86_64-linux-gnu.so", [(hdf_lib, "libhdf5.so.103"),
                                                                  (mpi_lib, "libmpi.so.40")])
    links = scan_links(env, modules)
    direct = by_need(links, "_h5.cpython-311-x86_64-linux-gnu.so")
    assert direct["libhdf5.so.103"].provider == "hdf5/1.10"
    assert direct["libmpi.so.40"].provider == "mpi/4.1"
    assert direct["libc.so.6"].provider == "system"
    assert direct["libhdf5.so.103"].path == f"{hdf_lib}/libhdf5.so.103"
    assert direct["libhdf5.so.103"].soname == "libhdf5.so.103"
    assert direct["libmpi.so.40"].sha256 and len(direct["libmpi.so.40"].sha256) == 64
    assert direct["libc.so.6"].sha256 is None           # system libraries are not hashed
    indirect = by_need(links, "_h5.cpython-311-x86_64-linux-gnu.so", via="libhdf5.so.103")
    assert indirect["libmpi.so.40"].provider == "mpi/4.1"
    assert indirect["libmpi.so.40"].file == "lib/python3.11/site-packages/pkg/_h5.cpython-311-x86_64-linux-gnu.so"
    # The loader agrees on every file the scan says is loaded.
    llp = module_ld_library_path(modules)
    assert llp == [str(hdf_lib), str(mpi_lib)]            # later-loaded module first
    mapped = loader_maps(target, llp)
    for e in links:
        assert e.path is not None and os.path.realpath(e.path) in mapped, e
    for lib_name in ("libhdf5.so.103", "libmpi.so.40"):
        assert any(os.path.basename(m) == lib_name for m in mapped)


@needs_gcc
def test_later_loaded_module_wins_the_loader_path(tmp_path: Path, site) -> None:
    # Two modules both holding libmpi.so.40: the one loaded last comes first on LD_LIBRARY_PATH.
    sw, (mpi, hdf5) = site
    other_lib = sw / "mpi-other/1/lib"
    lib(other_lib, "libmpi.so.40", symbol="f_mpi", value=2)
    other = module("mpi-other/1", sw / "mpi-other/1", "mpi", ld=[other_lib])
    env, sp = make_env(tmp_path / "env")
    target = ext(sp, "m.so", [(sw / "mpi/4.1/lib", "libmpi.so.40")])
    for order, expected in (([mpi, other], "mpi-other/1"), ([other, mpi], "mpi/4.1")):
        links = scan_links(env, order)
        assert by_need(links, "m.so")["libmpi.so.40"].provider == expected
        mapped = loader_maps(target, module_ld_library_path(order))
        assert os.path.realpath(by_need(links, "m.so")["libmpi.so.40"].path) in mapped


@needs_gcc
def test_env_libraries_through_origin_runpath_and_missing(tmp_path: Path, site) -> None:
    sw, modules = site
    env, sp = make_env(tmp_path / "env")
    bundled = lib(sp / "pkg.libs", "libbundled-1a2b.so", "-Wl,--no-as-needed", "-lm", symbol="f_b")
    ext(sp, "pkg/_core.so", [(bundled.parent, bundled.name)], "-Wl,--enable-new-dtags",
        "-Wl,-rpath,$ORIGIN/../pkg.libs")
    gone = lib(tmp_path / "gone", "libgone.so.1", symbol="f_g")
    ext(sp, "pkg/_broken.so", [(gone.parent, gone.name)])
    shutil.rmtree(gone.parent)
    (env / "bin/tool").write_text("#!/bin/sh\n")            # not ELF: skipped
    links = scan_links(env, modules)
    core = by_need(links, "pkg/_core.so")
    assert core["libbundled-1a2b.so"].provider == "env"
    assert os.path.realpath(core["libbundled-1a2b.so"].path) == str(bundled.resolve())
    broken = by_need(links, "pkg/_broken.so")
    assert broken["libgone.so.1"].provider == "missing" and broken["libgone.so.1"].path is None
    # The bundled library is scanned as an env file of its own, and bin/python (a link to the
    # central interpreter) is not the env's.
    files = {e.file for e in links}
    assert by_need(links, "pkg.libs/libbundled-1a2b.so")["libm.so.6"].provider == "system"
    assert not any(f.startswith("bin/") for f in files)


@needs_gcc
def test_as_prefix_rebases_env_paths(tmp_path: Path, site) -> None:
    sw, modules = site
    env, sp = make_env(tmp_path / "staging")
    bundled = lib(sp / "pkg.libs", "libbundled.so", symbol="f_b")
    ext(sp, "pkg/_core.so", [(bundled.parent, bundled.name)], "-Wl,-rpath,$ORIGIN/../pkg.libs")
    links = scan_links(env, modules, as_prefix="/home/u/envs/final")
    e = by_need(links, "pkg/_core.so")["libbundled.so"]
    assert e.provider == "env"
    assert e.path == "/home/u/envs/final/lib/python3.11/site-packages/pkg/../pkg.libs/libbundled.so"
    assert e.file == "lib/python3.11/site-packages/pkg/_core.so"


@needs_gcc
def test_executables_are_resolved_as_run(tmp_path: Path, site) -> None:
    sw, modules = site
    env, _ = make_env(tmp_path / "env")
    cc(env / "bin/mpitool", "int f_mpi(void); int main(void){return f_mpi();}\n",
       f"-L{sw / 'mpi/4.1/lib'}", "-l:libmpi.so.40", shared=False)
    links = scan_links(env, modules)
    assert by_need(links, "bin/mpitool")["libmpi.so.40"].provider == "mpi/4.1"


# ---------------------------------------------------------------------------------------------
# EasyBuild: RPATH'd builds, EBROOT* prefixes, SystemMPI at /usr


def eb_link_flags(*lib_dirs: Path) -> list[str]:
    """What EasyBuild's rpath compiler wrapper adds to a link (its rpath_args.py): DT_RPATH (not
    RUNPATH), $ORIGIN-relative entries first, then every -L directory outside /usr."""
    flags = ["-Wl,--disable-new-dtags", "-Wl,-rpath=$ORIGIN", "-Wl,-rpath=$ORIGIN/../lib",
             "-Wl,-rpath=$ORIGIN/../lib64"]
    return flags + [f"-Wl,-rpath={d}" for d in lib_dirs if not str(d).startswith("/usr")]


@needs_gcc
def test_easybuild_rpath_beats_ld_library_path(tmp_path: Path) -> None:
    sw = tmp_path / "software"
    eb_hdf = sw / "HDF5/1.10.8/lib"
    eb_mpi = sw / "OpenMPI/4.1.4/lib"
    lib(eb_mpi, "libmpi.so.40", symbol="f_mpi")
    # HDF5 itself was built by EasyBuild: DT_RPATH to OpenMPI.
    cc(eb_hdf / "libhdf5.so.103", "int f_mpi(void); int f(void){return f_mpi();}\n",
       "-Wl,-soname,libhdf5.so.103", f"-L{eb_mpi}", "-l:libmpi.so.40", *eb_link_flags(eb_mpi))
    # A decoy module that also has libmpi.so.40 and comes first on LD_LIBRARY_PATH.
    decoy_lib = tmp_path / "decoy/lib"
    lib(decoy_lib, "libmpi.so.40", symbol="f_mpi", value=9)
    modules = [
        module("OpenMPI/4.1.4", sw / "OpenMPI/4.1.4", "mpi", prefixes={"EBROOTOPENMPI": sw / "OpenMPI/4.1.4"}),
        module("HDF5/1.10.8", sw / "HDF5/1.10.8", "hdf5", prefixes={"EBROOTHDF5": sw / "HDF5/1.10.8"}),
        module("decoy/1", tmp_path / "decoy", "mpi", ld=[decoy_lib]),
    ]
    env, sp = make_env(tmp_path / "env")
    target = ext(sp, "h5py/_x.so", [(eb_hdf, "libhdf5.so.103"), (eb_mpi, "libmpi.so.40")],
                 *eb_link_flags(eb_hdf, eb_mpi))
    links = scan_links(env, modules)
    direct = by_need(links, "h5py/_x.so")
    assert direct["libhdf5.so.103"].provider == "HDF5/1.10.8"
    assert direct["libmpi.so.40"].provider == "OpenMPI/4.1.4"       # RPATH, not the decoy first on LLP
    assert by_need(links, "h5py/_x.so", via="libhdf5.so.103")["libmpi.so.40"].provider == "OpenMPI/4.1.4"
    mapped = loader_maps(target, module_ld_library_path(modules))
    assert str((eb_mpi / "libmpi.so.40").resolve()) in mapped
    assert str((decoy_lib / "libmpi.so.40").resolve()) not in mapped


@needs_gcc
def test_easybuild_origin_rpath_inside_env(tmp_path: Path) -> None:
    # EasyBuild builds an env in place: $ORIGIN/../lib points into the env itself.
    env, sp = make_env(tmp_path / "env")
    inner = lib(env / "lib", "libinner.so.1", symbol="f_i")
    cc(env / "bin/prog", "int f_i(void); int main(void){return f_i() != 1;}\n", f"-L{inner.parent}",
       "-l:libinner.so.1", *eb_link_flags(), shared=False)
    links = scan_links(env, [])
    e = by_need(links, "bin/prog")["libinner.so.1"]
    assert e.provider == "env" and e.path.endswith("/bin/../lib/libinner.so.1")
    out = subprocess.run([str(env / "bin/prog")], env=CLEAN_ENV)
    assert out.returncode == 0                   # the loader found it the same way


@needs_gcc
@needs_debian_openmpi
def test_easybuild_systemmpi_at_usr_is_known_by_library_name(tmp_path: Path) -> None:
    # EasyBuild's SystemMPI: EBROOTOPENMPI=/usr and LD_LIBRARY_PATH=/usr/lib64 (absent on
    # Debian); libmpi.so.40 comes from the ld.so cache, in a directory every package shares.
    modules = [module("OpenMPI/4.1.4", "/usr", "mpi", ld=["/usr/lib64"], libpath=["/usr/lib64"],
                      prefixes={"EBROOTOPENMPI": "/usr"})]
    env, sp = make_env(tmp_path / "env")
    ext(sp, "mpi4py/MPI.so", [(f"{MULTIARCH}/openmpi/lib", "libmpi.so")])
    links = scan_links(env, modules)
    direct = by_need(links, "mpi4py/MPI.so")
    assert direct["libmpi.so.40"].provider == "OpenMPI/4.1.4"
    assert direct["libc.so.6"].provider == "system"
    indirect = by_need(links, "mpi4py/MPI.so", via="libmpi.so.40")
    assert indirect["libopen-rte.so.40"].provider == "OpenMPI/4.1.4"
    assert indirect["libopen-pal.so.40"].provider == "OpenMPI/4.1.4"
    assert all(e.provider == "system" for n, e in indirect.items() if n.startswith(("libhwloc", "libz")))


def eb_tree(tmp_path: Path) -> Path:
    """An EasyBuild install root: ROOT/modules/all and ROOT/software/<name>/<version>."""
    root = tmp_path / "eb"
    (root / "modules/all").mkdir(parents=True)
    (root / "software").mkdir()
    return root


def test_easybuild_install_roots_from_modulepath(tmp_path: Path) -> None:
    root, other = eb_tree(tmp_path), tmp_path / "plain/modules"
    other.mkdir(parents=True)
    (root / "modules/mpi").mkdir()
    path = f"{root}/modules/all:{root}/modules/mpi/:{other}:{tmp_path}/nowhere/modules/all::"
    assert easybuild_install_roots(path) == [str(root)]
    assert easybuild_install_roots([f"{root}/modules/all"]) == [str(root)]
    assert easybuild_install_roots("") == [] and easybuild_install_roots(None) == []


def test_tree_module_names_the_installing_module_by_path_or_realpath(tmp_path: Path) -> None:
    root = eb_tree(tmp_path)
    real = root / "software/Foo/1.0/lib/libfoo.so.1"
    real.parent.mkdir(parents=True)
    real.write_text("")
    elsewhere = tmp_path / "lib/libfoo.so.1"
    elsewhere.parent.mkdir()
    elsewhere.symlink_to(real)
    assert tree_module(str(real), [str(root)]) == "Foo/1.0"
    assert tree_module(str(elsewhere), [str(root)]) == "Foo/1.0"       # a link into the tree
    assert tree_module(f"{root}/software/Foo", [str(root)]) is None     # no version level
    assert tree_module("/usr/lib/x86_64-linux-gnu/libc.so.6", [str(root)]) is None
    links = [L("a.so", "libfoo.so.1", "system", path=str(real)), L("a.so", "libc.so.6", "system"),
             L("a.so", "libbar.so", "Bar/2", path=str(real)), L("a.so", "libgone.so", "missing", path=None)]
    out = attribute_install_trees(links, [str(root)])
    assert [e.provider for e in out] == ["Foo/1.0", "system", "Bar/2", "missing"]


def record_with(links, packages=(), requirements=(), python_module="Python/3.11.2") -> EnvRecord:
    return EnvRecord(name="e", backend="venv", prefix="/e",
                     python=PythonRecord(version="3.11.2", executable="/p/bin/python3", module=python_module),
                     module=ModuleRecord(name="e/1", type="lmod"),
                     created=Provenance(at="t", by="u", host="h", envmod_version="0"),
                     packages=list(packages), links=list(links), requirements=list(requirements))


@needs_gcc
def test_check_declared_names_an_unloaded_easybuild_module_an_env_file_links(tmp_path: Path) -> None:
    # ext.so links Foo's library through an RPATH (as EasyBuild's wrappers link) while Foo's
    # module is not loaded: the scan can only call it the system's; the install tree names it.
    root = eb_tree(tmp_path)
    foo = lib(root / "software/Foo/1.0/lib", "libfoo.so.1", symbol="foo")
    env, sp = make_env(tmp_path / "env")
    ext(sp, "pkg/ext.so", [(foo.parent, "libfoo.so.1")], *eb_link_flags(foo.parent))
    python = module("Python/3.11.2", None, "python")
    links = scan_links(env, [python])
    assert by_need(links, "pkg/ext.so")["libfoo.so.1"].provider == "system"
    record = record_with(links)
    check = check_declared_modules(record, ["Python/3.11.2"], easybuild_install_roots(f"{root}/modules/all"))
    assert dict(check.undeclared) == {"Foo/1.0": ("pkg/ext.so needs libfoo.so.1",)}
    assert check.linked == ("Foo/1.0",) and check.unused == ()
    # without the install roots the library passes for the system's: nothing to add
    assert dict(check_declared_modules(record, ["Python/3.11.2"]).undeclared) == {}
    # loaded and declared, it is simply used
    loaded = module("Foo/1.0", root / "software/Foo/1.0", prefixes={"EBROOTFOO": root / "software/Foo/1.0"})
    check = check_declared_modules(record_with(scan_links(env, [python, loaded])), ["Python/3.11.2", "Foo/1.0"])
    assert dict(check.undeclared) == {} and check.unused == () and check.linked == ("Foo/1.0",)


def test_check_declared_counts_what_the_env_itself_uses() -> None:
    links = [L("lib/python3.11/site-packages/h5py/h5.so", "libhdf5.so.103", "HDF5/1.10.8"),
             L("lib/python3.11/site-packages/h5py/h5.so", "libmpi.so.40", "OpenMPI/4.1.4", via="libhdf5.so.103"),
             L("lib/python3.11/site-packages/x/y.so", "libz.so.1", "system")]
    packages = [PackageRecord("h5py", "3.15.1", "source", True, built_against=["HDF5/1.10.8"])]
    reqs = [RequirementEvidence("h5py", "numpy>=1.21", "SciPy-bundle/2024", "/s/numpy-2.dist-info")]
    record = record_with(links, packages, reqs)
    # OpenMPI comes only through HDF5's own library: HDF5's module loads it, the env need not
    check = check_declared_modules(record, ["Python/3.11.2", "HDF5/1.10.8", "SciPy-bundle/2024", "CMake/3"])
    assert dict(check.undeclared) == {} and check.unused == ("CMake/3",)
    assert check.linked == ("HDF5/1.10.8", "OpenMPI/4.1.4")
    check = check_declared_modules(record, ["Python/3.11.2"])
    assert dict(check.undeclared) == {
        "HDF5/1.10.8": ("h5py is compiled against it", "h5py/h5.so needs libhdf5.so.103"),
        "SciPy-bundle/2024": ("h5py requires numpy>=1.21",)}
    # a package compiled against a module makes it used even if nothing links it (yet)
    quiet = record_with([], [PackageRecord("mpi4py", "4.1", "source", True, built_against=["OpenMPI/4.1.4"])])
    assert check_declared_modules(quiet, ["Python/3.11.2", "OpenMPI/4.1.4"]).unused == ()


# ---------------------------------------------------------------------------------------------
# shared prefixes and symlink-wrapped site installs


@needs_gcc
def test_modules_sharing_a_prefix_are_told_apart_by_their_lib_dirs(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    a_dir, b_dir = shared / "lib/a", shared / "lib/b"
    lib(a_dir, "liba.so.1", symbol="fa")
    lib(b_dir, "libb.so.1", symbol="fb")
    lib(shared / "lib", "libcommon.so.1", symbol="fc")
    modules = [module("a/1", shared, ld=[a_dir]), module("b/1", shared, libpath=[b_dir])]
    att = Attributor(modules)
    assert att.provider(str(a_dir / "liba.so.1")) == "a/1"
    assert att.provider(str(b_dir / "libb.so.1")) == "b/1"
    # Both claim the shared prefix: the later-loaded one wins the tie, as on the loader path.
    assert att.provider(str(shared / "lib/libcommon.so.1")) == "b/1"


def test_system_prefix_and_dirs_never_claim_by_containment() -> None:
    libc = next((p for p in (f"{MULTIARCH}/libc.so.6", "/lib64/libc.so.6", "/usr/lib64/libc.so.6")
                 if os.path.exists(p)), None)
    if libc is None:
        pytest.skip("no libc.so.6 in a known place")
    modules = [module("sysmod/1", "/usr", ld=[os.path.dirname(libc)], libpath=["/usr/lib64"])]
    att = Attributor(modules)
    assert att.provider(libc, "libc.so.6") == "system"
    assert att.provider(None) == "missing"


@needs_gcc
def test_symlinked_site_install_is_matched_by_realpath(tmp_path: Path) -> None:
    # ci/site.sh's hdf5: the module's lib dir holds libhdf5.so -> the distribution's
    # libhdf5_openmpi.so.103.3.1, but DT_NEEDED names libhdf5_openmpi.so.103, which is not in
    # the module's dir, so the loader finds it elsewhere (here a RUNPATH; on the site, the cache).
    dist = tmp_path / "usr/lib"
    real = cc(dist / "libhdf5_openmpi.so.103.3.1", "int f(void){return 1;}\n",
              "-Wl,-soname,libhdf5_openmpi.so.103")
    (dist / "libhdf5_openmpi.so.103").symlink_to(real.name)
    wrap = tmp_path / "site/hdf5/1.10.8/lib"
    wrap.mkdir(parents=True)
    (wrap / "libhdf5.so").symlink_to(real)
    modules = [module("hdf5/1.10.8", wrap.parent, "hdf5", ld=[wrap])]
    env, sp = make_env(tmp_path / "env")
    ext(sp, "h5py/h5.so", [(dist, "libhdf5_openmpi.so.103")], f"-Wl,-rpath,{dist}")
    e = by_need(scan_links(env, modules), "h5py/h5.so")["libhdf5_openmpi.so.103"]
    assert e.path == f"{dist}/libhdf5_openmpi.so.103"
    assert e.provider == "hdf5/1.10.8"


@needs_gcc
@needs_debian_hdf5
def test_library_from_ld_so_cache_is_the_wrapping_modules(tmp_path: Path) -> None:
    # The same with the real distribution library found through the real ld.so cache.
    wrap = tmp_path / "site/hdf5/1.10.8/lib"
    wrap.mkdir(parents=True)
    (wrap / "libhdf5.so").symlink_to(os.path.realpath(DEB_HDF5))
    modules = [module("hdf5/1.10.8", wrap.parent, "hdf5", ld=[wrap])]
    env, sp = make_env(tmp_path / "env")
    target = ext(sp, "h5py/h5.so", [(wrap, "libhdf5.so")])
    e = by_need(scan_links(env, modules), "h5py/h5.so")["libhdf5_openmpi.so.103"]
    assert e.path and not e.path.startswith(str(wrap))
    assert e.provider == "hdf5/1.10.8"
    assert os.path.realpath(e.path) in loader_maps(target, [str(wrap)])


@needs_debian_openmpi
@needs_debian_hdf5
def test_spack_externals_at_usr() -> None:
    # How bridge.spack.stack describes Debian's Open MPI and HDF5 as Spack externals: prefix
    # /usr, their own corner of the multiarch dir as LIBRARY_PATH, and the real library files.
    ompi = module("openmpi/4.1.4", "/usr", "mpi", libpath=[f"{MULTIARCH}/openmpi/lib"])
    hdf5 = module("hdf5/1.10.8", f"{MULTIARCH}/hdf5/openmpi", "hdf5", libpath=[f"{MULTIARCH}/hdf5/openmpi"],
                  facts={"libraries": [os.path.realpath(DEB_HDF5)]})
    att = Attributor([ompi, hdf5])
    # As the ld.so cache names them.
    assert att.provider("/lib/x86_64-linux-gnu/libmpi.so.40", "libmpi.so.40") == "openmpi/4.1.4"
    assert att.provider("/lib/x86_64-linux-gnu/libopen-pal.so.40", "libopen-pal.so.40") == "openmpi/4.1.4"
    assert att.provider("/lib/x86_64-linux-gnu/libhdf5_openmpi.so.103", "libhdf5_openmpi.so.103") == "hdf5/1.10.8"
    assert att.provider("/lib/x86_64-linux-gnu/libc.so.6", "libc.so.6") == "system"


# ---------------------------------------------------------------------------------------------
# requirements


def pyinfo(purelib: Path | str, version: str = "3.11.2", prefix: str = "/site/python") -> PythonInfo:
    return PythonInfo(version=version, implementation="CPython", executable=f"{prefix}/bin/python3",
                      prefix=prefix, base_prefix=prefix, platform="linux-x86_64", soabi="cpython-311-x86_64-linux-gnu",
                      purelib=str(purelib), has_pip=True)


def dist(site_packages: Path, name: str, version: str, requires: list[str] = ()) -> Path:
    d = site_packages / f"{name.replace('-', '_')}-{version}.dist-info"
    d.mkdir(parents=True)
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    lines += [f"Requires-Dist: {r}" for r in requires]
    (d / "METADATA").write_text("\n".join(lines) + "\n\nLong description.\nRequires-Dist: not-a-header\n")
    return d


def test_requirements_satisfied_by_central_modules(tmp_path: Path) -> None:
    central = tmp_path / "site/python/3.11.2"
    purelib = central / "lib/python3.11/site-packages"
    np = dist(purelib, "numpy", "2.2.1")
    dist(purelib, "packaging", "24.0")
    pymods = tmp_path / "site/pymods/lib"
    dist(pymods, "mpi4py", "3.1.0")
    dist(pymods, "Cython", "3.0.0")
    env, sp = make_env(tmp_path / "env")
    dist(sp, "h5py", "3.16.0", ["numpy>=1.21.2", "mpi4py>=3.1.1; extra == 'mpi'"])
    dist(sp, "my-tool", "1.0", ["numpy", "h5py", "cython<1", "packaging>=23; python_version >= '3.8'",
                                "tomli; python_version < '3.11'", "scipy"])
    modules = [module("python/3.11", central, "python"), module("pymods/1", tmp_path / "site/pymods",
                                                                 pythonpath=[pymods])]
    info = pyinfo(purelib, prefix=str(central))
    reqs = scan_requirements(env, modules, info)
    got = {(r.package, r.requires, r.provider) for r in reqs}
    assert got == {("h5py", "numpy>=1.21.2", "python/3.11"), ("my-tool", "numpy", "python/3.11"),
                   ("my-tool", "packaging>=23; python_version >= \"3.8\"", "python/3.11")}
    assert next(r.location for r in reqs if r.package == "h5py") == str(np)


def test_pythonpath_comes_before_central_site_packages(tmp_path: Path) -> None:
    central = tmp_path / "python"
    purelib = central / "lib/python3.11/site-packages"
    dist(purelib, "numpy", "2.2.1")
    newer = tmp_path / "numpy-mod/lib/python3.11/site-packages"
    dist(newer, "numpy", "2.3.0")
    env, sp = make_env(tmp_path / "env")
    dist(sp, "pkg", "1", ["numpy"])
    modules = [module("python/3.11", central, "python"), module("numpy/2.3", tmp_path / "numpy-mod", pythonpath=[newer])]
    info = pyinfo(purelib, prefix=str(central))
    assert [d for d, _ in central_package_dirs(modules, info)][:1] == [str(newer)]
    assert [r.provider for r in scan_requirements(env, modules, info)] == ["numpy/2.3"]
    # A version the first one on the path does not satisfy is not satisfied by the module.
    (sp / "pkg-1.dist-info").rename(sp / "old")
    dist(sp, "pkg", "2", ["numpy<2.3"])
    shutil.rmtree(sp / "old")
    assert scan_requirements(env, modules, info) == []


def test_easybuild_prefix_site_packages_count(tmp_path: Path) -> None:
    # EasyBuild's Python packages modules: EBPYTHONPREFIXES=root, packages in root/lib/pythonX.Y/site-packages.
    root = tmp_path / "software/SciPy-bundle/2023.07"
    dist(root / "lib/python3.11/site-packages", "scipy", "1.11.1")
    env, sp = make_env(tmp_path / "env")
    dist(sp, "mine", "0.1", ["scipy>=1.10"])
    modules = [module("SciPy-bundle/2023.07", root, prefixes={"EBROOTSCIPYMINBUNDLE": root})]
    reqs = scan_requirements(env, modules, pyinfo(tmp_path / "nowhere"))
    assert [(r.package, r.provider) for r in reqs] == [("mine", "SciPy-bundle/2023.07")]


def test_distributions_in_reads_dist_info_and_egg_info(tmp_path: Path) -> None:
    dist(tmp_path, "Foo.Bar", "1.0", ["baz"])
    egg = tmp_path / "old_pkg-0.5-py3.11.egg-info"
    egg.mkdir()
    (egg / "PKG-INFO").write_text("Metadata-Version: 1.1\nName: old-pkg\nVersion: 0.5\n")
    (egg / "requires.txt").write_text("six\n\n[test]\npytest\n")
    found = distributions_in(tmp_path)
    assert found["foo-bar"].version == "1.0" and found["foo-bar"].requires == ("baz",)
    assert found["old-pkg"].requires == ("six",)
    assert distributions_in(tmp_path / "absent") == {}


# ---------------------------------------------------------------------------------------------
# what the evidence means, and how it reads


def L(file, needs, provider, via=None, path="/x"):
    return LinkEvidence(file=file, needs=needs, path=path, provider=provider, soname=needs, via=via)


def test_required_modules_are_python_plus_providers_in_load_order() -> None:
    links = [L("a.so", "libhdf5.so.103", "hdf5/1.10.8"), L("a.so", "libc.so.6", "system"),
             L("a.so", "libmpi.so.40", "openmpi/4.1.4", via="libhdf5.so.103"), L("b.so", "libx.so", "env"),
             L("c.so", "libgone.so", "missing", path=None)]
    reqs = [RequirementEvidence("h5py", "numpy", "python/3.11", "/p/numpy-2.dist-info")]
    order = ["gcc/12", "python/3.11", "openmpi/4.1.4", "hdf5/1.10.8", "cmake/3"]
    assert required_modules(links, reqs, "python/3.11", order) == ["python/3.11", "openmpi/4.1.4", "hdf5/1.10.8"]
    assert required_modules([], [], "python/3.11", order) == ["python/3.11"]
    assert required_modules(links, [], None) == ["hdf5/1.10.8", "openmpi/4.1.4"]


def test_format_lines() -> None:
    f = "lib/python3.11/site-packages/mpi4py/MPI.cpython-311-x86_64-linux-gnu.so"
    assert display_path(f) == "mpi4py/MPI.cpython-311-x86_64-linux-gnu.so"
    assert display_path("bin/tool") == "bin/tool"
    links = [L(f, "libmpi.so.40", "openmpi/4.1.4"), L(f, "libc.so.6", "system"),
             L("lib/python3.11/site-packages/h5py/h5.so", "libmpi.so.40", "openmpi/4.1.4", via="libhdf5_openmpi.so.103"),
             L("lib/python3.11/site-packages/x/y.so", "libgone.so.1", "missing", path=None),
             L("lib/python3.11/site-packages/x/z.so", "libb.so", "env",
               path="/e/lib/python3.11/site-packages/x.libs/libb.so")]
    lines = format_links(links, env_prefix="/e")
    assert lines[0] == "mpi4py/MPI.cpython-311-x86_64-linux-gnu.so → libmpi.so.40 → openmpi/4.1.4"
    assert lines[1] == "h5py/h5.so → libhdf5_openmpi.so.103 → libmpi.so.40 → openmpi/4.1.4"
    assert lines[2] == "x/y.so → libgone.so.1 → NOT FOUND"
    assert lines[3] == "x/z.so → libb.so → this env (x.libs/libb.so)"
    assert lines[4] == "system libraries: libc.so.6"
    reqs = [RequirementEvidence("h5py", "numpy>=1.21.2", "python/3.11", "/s/numpy-2.2.1.dist-info")]
    assert format_evidence([], reqs) == ["h5py requires numpy>=1.21.2 → python/3.11 (numpy-2.2.1.dist-info)"]


def test_evidence_is_json_serialisable(tmp_path: Path) -> None:
    from dataclasses import asdict

    e = L("a.so", "libmpi.so.40", "openmpi/4.1.4")
    assert json.loads(json.dumps(asdict(e)))["provider"] == "openmpi/4.1.4"


def test_kind_names_for_modules_in_system_prefixes() -> None:
    # Modules that own no directory of their own: known by the library names of their kind.
    mpich = module("mpich/4.0", "/usr", "mpi")
    hdf5 = module("hdf5/1.10", None, "hdf5")
    py = module("python/3.11", "/usr", "python")
    att = Attributor([mpich, hdf5, py])
    lib_dir = "/nonexistent-system-like/lib"
    assert att.module_of(f"{lib_dir}/libmpich.so.12", "libmpich.so.12") is mpich
    assert att.module_of(f"{lib_dir}/libhdf5_openmpi_hl.so.100", "libhdf5_openmpi_hl.so.100") is hdf5
    assert att.module_of(f"{lib_dir}/libpython3.11.so.1.0", "libpython3.11.so.1.0") is py
    assert att.module_of(f"{lib_dir}/libmpfr.so.6", "libmpfr.so.6") is None
    # A module with a lib dir of its own is judged by its dirs, never by names.
    own = module("openmpi/4.1", "/opt/ompi", "mpi", ld=["/opt/ompi/lib"])
    assert Attributor([own]).module_of(f"{lib_dir}/libmpi.so.40", "libmpi.so.40") is None
