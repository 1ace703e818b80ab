"""A real Lmod hierarchy that Spack writes, shared by the tests of every front end on it
(test_lmod_hierarchy.py: ``envmod`` and ``spack envmod``; test_eb_lmod_hierarchy.py: EasyBuild's
``UserEnv``). Built once per run by the ``lmod_hierarchy`` fixture (tests/spack/conftest.py).

The central site registers Debian's HDF5 as an external without a compiler, so its module lands
in ``Core``. Here a private Spack site (its own install tree and module roots, from a config
scope over the central site's) registers the same HDF5 with its C compiler (``%c=gcc``): Spack's
Lmod layout then puts its module in the subtree the OpenMPI module opens
(``<root>/<arch>/openmpi/4.1.4-<hash>/Core/hdf5/...``), as a site that builds its HDF5 with
Spack gets.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml
from spack_helpers import Spack
from tests.conftest import write_wheel

ARCH = "linux-debian12-x86_64"
HDF5_LIBDIR = Path("/usr/lib/x86_64-linux-gnu/hdf5/openmpi")


def build_hierarchy(exe: str, base: Path) -> dict:
    """The private Spack site in ``base``: the scope, the module names, the Core dir and a wheel
    linking its HDF5. ``base`` may be readable by other users (the EasyBuild test runs ``eb`` as
    one): everything in it is written world-readable."""
    old_umask = os.umask(0o022)
    try:
        return _build(exe, base)
    finally:
        os.umask(old_umask)


def _build(exe: str, base: Path) -> dict:
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
    return write_wheel(directory / f"{name}-1.0-py3-none-linux_x86_64.whl", files)
