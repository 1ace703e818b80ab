"""Every front end orders an env's modules for the Lmod hierarchy, on a real one Spack wrote.

The central site registers Debian's HDF5 as an external without a compiler, so its module lands
in ``Core``. Here a private Spack site (its own install tree and module roots, from a config
scope over the central site's) registers the same HDF5 with its C compiler (``%c=gcc``): Spack's
Lmod layout then puts its module in the subtree the OpenMPI module opens
(``<root>/<arch>/openmpi/4.1.4-<hash>/Core/hdf5/...``), as a site that builds its HDF5 with
Spack gets. An env whose only evidence is a library linking that HDF5 needs OpenMPI's module
loaded before HDF5's, or its module cannot load in a fresh shell: every front end (``envmod
create`` over the loaded modules, ``spack envmod create``, ``envmod rebuild``, ``spack envmod
rebuild``) must write ``[python, openmpi, hdf5]``, and the module must load alone in a fresh
real Lmod shell holding only the site's ``Core`` dir.
"""

from __future__ import annotations

import base64
import hashlib
import shlex
import subprocess
import zipfile
from pathlib import Path

import pytest
import yaml

from spack_helpers import Spack, fresh_shell, require_spack
from tests.conftest import ModuleShell, require_site

pytestmark = [pytest.mark.spack, pytest.mark.modules]

ARCH = "linux-debian12-x86_64"
HDF5_LIBDIR = Path("/usr/lib/x86_64-linux-gnu/hdf5/openmpi")


@pytest.fixture(scope="module")
def hierarchy(tmp_path_factory) -> dict:
    """A private Spack site whose Lmod tree has HDF5 in OpenMPI's subtree: the scope, the
    module names and the Core dir."""
    exe = require_spack()
    base = tmp_path_factory.mktemp("hier")
    scope = base / "scope"
    scope.mkdir()
    # install tree at <base>/opt, beside <base>/modules: where envmod looks for the database of
    # loaded Spack modules (Spack's usual layout of a site prefix)
    (scope / "config.yaml").write_text(f"config:\n  install_tree:\n    root: {base / 'opt'}\n")
    (scope / "modules.yaml").write_text(f"modules:\n  default:\n    roots:\n      lmod: {base / 'modules/lmod'}\n"
                                        f"      tcl: {base / 'modules/tcl'}\n")
    (scope / "packages.yaml").write_text(
        "packages:\n  hdf5::\n    buildable: false\n    externals:\n"
        "    - spec: hdf5@1.10.8+mpi+cxx+fortran+hl+shared+szip~threadsafe~java api=v18 %mpi=openmpi %c=gcc\n"
        "      prefix: /usr\n")
    spack = Spack(exe, base / "envmod", base / "cache")
    spack.root.mkdir()
    spack("install", "python", "openmpi", "hdf5", scope=scope, timeout=900).check()
    for module_type in ("lmod", "tcl"):
        spack("module", module_type, "refresh", "-y", scope=scope, timeout=600).check()
    index = yaml.safe_load((base / "modules/lmod/module-index.yaml").read_text())["module_index"]
    names = {entry["use_name"].split("/")[0]: entry for entry in index.values()}
    core = base / "modules/lmod" / ARCH / "Core"
    hdf5 = Path(names["hdf5"]["path"])
    openmpi = names["openmpi"]["use_name"]
    # the premise: HDF5's module lives in the subtree OpenMPI's module opens, not in Core
    assert hdf5.parent.parent == base / "modules/lmod" / ARCH / openmpi / "Core", hdf5
    return {"base": base, "scope": scope, "spack": exe, "core": core,
            "python": names["python"]["use_name"], "mpi": openmpi, "hdf5": names["hdf5"]["use_name"],
            "wheel": hdf5_linking_wheel(base)}


def hdf5_linking_wheel(directory: Path) -> Path:
    """A real wheel holding a shared object that links Debian's parallel HDF5 and nothing of the
    MPI directly: the scan's evidence names the HDF5 module alone."""
    if not (HDF5_LIBDIR / "libhdf5.so").exists():
        pytest.skip(f"Debian's parallel HDF5 is not installed ({HDF5_LIBDIR}/libhdf5.so)")
    source = directory / "h5link.c"
    # H5open declared by hand: hdf5.h of the parallel flavour includes mpi.h
    source.write_text("extern int H5open(void);\nint h5link_open(void) { return H5open(); }\n")
    lib = directory / "_h5link.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(lib), str(source), f"-L{HDF5_LIBDIR}",
                    "-Wl,--no-as-needed", "-lhdf5"], check=True)
    name, dist = "h5user", "h5user-1.0.dist-info"
    files = {f"{name}/__init__.py": b"import ctypes, os\n"
                                    b"LIB = ctypes.CDLL(os.path.join(os.path.dirname(__file__), '_h5link.so'))\n",
             f"{name}/_h5link.so": lib.read_bytes(),
             f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n".encode(),
             f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: envmod-tests\nRoot-Is-Purelib: false\n"
                              b"Tag: py3-none-linux_x86_64\n"}
    record = "".join(f"{p},sha256={base64.urlsafe_b64encode(hashlib.sha256(d).digest()).rstrip(b'=').decode()},{len(d)}\n"
                     for p, d in files.items()) + f"{dist}/RECORD,,\n"
    wheel = directory / f"{name}-1.0-py3-none-linux_x86_64.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, data in files.items():
            zf.writestr(path, data)
        zf.writestr(f"{dist}/RECORD", record)
    return wheel


@pytest.fixture
def lmod(hierarchy, tmp_path) -> ModuleShell:
    """A real Lmod shell running this checkout's envmod, its root shared with ``spack envmod``."""
    require_site()
    (tmp_path / "root").mkdir()
    return ModuleShell("lmod", tmp_path / "root", tmp_path / "cache")


def spack_envmod(hierarchy: dict, shell: ModuleShell) -> Spack:
    return Spack(hierarchy["spack"], shell.root, shell.cache)


def depends_on(shell: ModuleShell, name: str) -> list[str]:
    return yaml.safe_load((shell.root / "envs" / name / "envmod.yaml").read_text())["module"]["depends_on"]


def loads_alone_in_a_fresh_shell(hierarchy: dict, shell: ModuleShell, name: str) -> None:
    """Only the site's Core dir and envmod's modules in MODULEPATH: the env's module alone loads
    Python, OpenMPI (which opens HDF5's subtree) and HDF5, and the library linking HDF5 loads."""
    result = fresh_shell("lmod", f"""
export MODULEPATH={shlex.quote(str(hierarchy['core']))}
module use {shlex.quote(str(shell.root / 'modules'))}
module load {name}/py3.11
echo "LOADED=$LOADEDMODULES"
python -c 'import h5user; print("opened", h5user.LIB.h5link_open())'
""").check()
    loaded = result.stdout.split("LOADED=", 1)[1].split()[0].split(":")
    # HDF5's own module loads the compiler it was built with (gcc), after OpenMPI
    assert [m for m in loaded if not m.startswith("gcc/")] == \
        [hierarchy["python"], hierarchy["mpi"], hierarchy["hdf5"], f"{name}/py3.11"]
    assert "opened 0" in result.stdout


def test_plain_create_over_loaded_modules_follows_the_hierarchy(hierarchy, lmod):
    """The bug: ``envmod create`` over the loaded modules wrote [python, hdf5]."""
    lmod.run(f"""
module use {shlex.quote(str(hierarchy['core']))}
module load {hierarchy['python']} {hierarchy['mpi']} {hierarchy['hdf5']}
$ENVMOD create plainh5 -q --with {shlex.quote(str(hierarchy['wheel']))}
""").check()
    assert depends_on(lmod, "plainh5") == [hierarchy["python"], hierarchy["mpi"], hierarchy["hdf5"]]
    loads_alone_in_a_fresh_shell(hierarchy, lmod, "plainh5")

    # rebuilt in a shell with nothing loaded: HDF5's name resolves only in OpenMPI's subtree
    lmod.run("module purge\n$ENVMOD rebuild plainh5 -q").check()
    assert depends_on(lmod, "plainh5") == [hierarchy["python"], hierarchy["mpi"], hierarchy["hdf5"]]
    loads_alone_in_a_fresh_shell(hierarchy, lmod, "plainh5")


def test_spack_create_then_each_rebuild_follow_the_hierarchy(hierarchy, lmod):
    """``spack envmod create`` (it always ordered), then ``envmod rebuild`` (it wrote [python,
    hdf5]) and ``spack envmod rebuild`` in a shell with no module loaded."""
    spack = spack_envmod(hierarchy, lmod)
    spack("envmod", "create", "spackh5", "--module-type", "lmod", "-q", "--with", str(hierarchy["wheel"]),
          scope=hierarchy["scope"]).check()
    wanted = [hierarchy["python"], hierarchy["mpi"], hierarchy["hdf5"]]
    assert depends_on(lmod, "spackh5") == wanted
    loads_alone_in_a_fresh_shell(hierarchy, lmod, "spackh5")

    lmod.run("module purge\n$ENVMOD rebuild spackh5 -q").check()
    assert depends_on(lmod, "spackh5") == wanted
    loads_alone_in_a_fresh_shell(hierarchy, lmod, "spackh5")

    spack_env = {k: v for k, v in spack.environ().items() if k.startswith("SPACK_")}
    result = lmod.run("module purge\n" + shlex.join(spack.argv("envmod", "rebuild", "spackh5", "-q",
                                                                 scope=hierarchy["scope"])),
                      extra_env=spack_env).check()
    assert "rebuilt spackh5" in result.stdout
    assert depends_on(lmod, "spackh5") == wanted
    loads_alone_in_a_fresh_shell(hierarchy, lmod, "spackh5")
