"""A central Python that is a conda base, as desiconda's and NERSC's ``python`` modules are: a
channel of its own (beside tests/conda/channel.py's, whose ``python`` stays a venv-style one) with

- ``python`` built ``h_envmod_relocated_0``: a relocated copy of a CPython tree, the real
  interpreter and its standard library inside the conda prefix (``sys.prefix`` is the base, not
  a venv over another Python), debug sections stripped to keep the package small;
- ``pip`` (channel.py's, from the CPython's bundled wheel);
- ``envmod-base-lib``: a pure noarch:python package *with* its ``.dist-info``, as conda-forge's
  Python packages have, so pip sees it as installed in the base.

The base is made by the site's real conda (``conda create -p``), so it has the ``conda-meta/``
of a real conda prefix; :func:`write_python_modules` gives it a site's ``python`` module in Lua
and Tcl.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

from tests.conda.channel import (
    BasePython,
    Package,
    PackageFile,
    conda_subdir,
    describe_python,
    pip_package,
    write_repodata,
)

RELOCATED_BUILD = "h_envmod_relocated_0"
BASE_LIB = "envmod-base-lib"
BASE_LIB_MODULE = "envmod_base_lib"
# Parts of the stdlib directory a base Python can do without here: tests, IDLE and Tk, the
# CPython's own site-packages (the base gets its packages from conda), the static libpython.
_LEFT_OUT = {"test", "idlelib", "tkinter", "turtledemo", "site-packages", "__pycache__"}


def _is_elf(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(4) == b"\x7fELF"


def _file(path: Path, relative: str, strip: str) -> PackageFile:
    """``path`` as the package file ``relative``; an ELF file without its debug sections."""
    mode = path.stat().st_mode & 0o777
    if not _is_elf(path):
        return PackageFile(relative, path.read_bytes(), mode=mode)
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / path.name
        subprocess.run([strip, "--strip-debug", "-o", str(out), str(path)], capture_output=True, check=True)
        return PackageFile(relative, out.read_bytes(), mode=mode)


def relocated_python_package(base: BasePython, subdir: str, strip: str) -> Package:
    """``python``: ``base``'s interpreter and standard library, copied into the package (the
    interpreter finds its prefix from its own location). The site's CPython links libpython
    statically, so nothing needs its RPATH changed."""
    root = Path(base.prefix)
    exe = f"python{base.short}"
    files = [_file(root / "bin" / exe, f"bin/{exe}", strip),
             PackageFile("bin/python3", link_target=exe), PackageFile("bin/python", link_target=exe)]
    for dirpath, dirnames, filenames in os.walk(root / "lib" / exe):
        dirnames[:] = sorted(d for d in dirnames if d not in _LEFT_OUT and not d.startswith("config-"))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if not path.is_symlink():
                files.append(_file(path, str(path.relative_to(root)), strip))
    return Package("python", base.version, RELOCATED_BUILD, subdir, files)


def base_lib_package() -> Package:
    """A pure package with its dist-info, so that pip (and envmod's evidence) see it as installed."""
    dist = f"{BASE_LIB_MODULE}-1.0.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {BASE_LIB}\nVersion: 1.0\n".encode()
    files = [PackageFile(f"site-packages/{BASE_LIB_MODULE}/__init__.py", b'WHERE = "the conda base"\n'),
             PackageFile(f"site-packages/{dist}/METADATA", metadata),
             PackageFile(f"site-packages/{dist}/INSTALLER", b"conda\n"),
             PackageFile(f"site-packages/{dist}/RECORD", b"")]
    return Package(BASE_LIB, "1.0", "pyh_envmod_0", "noarch", files, depends=["python >=3.8"], noarch="python")


def build_base_channel(dest: Path, base_python: str, strip: str) -> Path:
    """The channel of the conda base in ``dest`` (created): relocated python, pip, the base lib."""
    base = describe_python(base_python)
    subdir = conda_subdir()
    dest.mkdir(parents=True)
    write_repodata(dest, [relocated_python_package(base, subdir, strip), pip_package(base), base_lib_package()],
                   (subdir, "noarch"))
    return dest


def write_python_modules(modules: Path, name: str, base: Path) -> None:
    """``name`` (e.g. python/3.11-conda) in ``modules``/lua and ``modules``/tcl: the conda base's
    bin on PATH and CONDA_PREFIX, as a site's module for a conda-based Python sets them."""
    lua = modules / "lua" / f"{name}.lua"
    tcl = modules / "tcl" / name
    for path in (lua, tcl):
        path.parent.mkdir(parents=True, exist_ok=True)
    lua.write_text(f'whatis("Python from a conda base")\nprepend_path("PATH", "{base}/bin")\n'
                   f'setenv("CONDA_PREFIX", "{base}")\n')
    tcl.write_text(f'#%Module\nmodule-whatis "Python from a conda base"\nprepend-path PATH {{{base}/bin}}\n'
                   f'setenv CONDA_PREFIX {{{base}}}\n')
