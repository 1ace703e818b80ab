"""A local conda channel made from what is on the machine (no network to conda-forge), stdlib only.

What it holds (packages are ``.tar.bz2``: info/index.json, info/paths.json, info/files, plus
info/link.json for noarch:python; repodata.json written here):

- ``python``: a venv-style interpreter over a base CPython already installed (``pyvenv.cfg`` with
  ``home = <base>/bin`` and a ``bin/python3.X`` symlink to the base, which conda 26.7.1 links as
  a copy since it points out of the env), so that conda has a real python record to install
  noarch:python packages against, without relocating CPython (no patchelf);
- ``pip``: noarch:python, made from the base's own bundled pip wheel (ensurepip);
- ``envmod-hello``: a small pure noarch:python package;
- ``envmod-activate``: noarch:generic, an ``etc/conda/activate.d`` script that sets a variable;
- on request (``--pure N``, for bench/backends): ``envmod-pure-1`` ... ``envmod-pure-N``, small
  pure noarch:python packages, each a module ``envmod_pure_I`` (the same bytes on every build);
- under the label ``mpi-external`` (``<channel>/label/mpi-external/<subdir>``), external-MPI
  placeholders modelled on conda-forge's: ``openmpi`` and ``mpich`` with no files, each depending
  on the ``mpi`` metapackage of its flavour, their build strings without ``external_`` (as
  conda-forge's since they moved to the label in January 2026).

With ``conda_mpi=True`` the main label also holds a real (non-placeholder) conda ``openmpi``
(``CONDA_MPI``: a library file, as conda-forge's) and ``envmod-mpi-app``, a small package that
needs it (``openmpi >=5``, which no placeholder of the label satisfies): what the conda backend
must refuse unless told ``--allow-conda-mpi``.

Used by tests/conda (a session fixture) and by ci/conda-site.sh (the site's channel):
``python3 tests/conda/channel.py --base-python /path/to/bin/python3 DEST``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import platform
import subprocess
import sys
import tarfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

MPI_LABEL = "mpi-external"
HELLO_MODULE = "envmod_hello"
ACTIVATE_VARIABLE = "ENVMOD_CONDA_ACTIVATED"
# (name, version, build string) of the external-MPI placeholders, one per MPI flavour
MPI_PLACEHOLDERS = (("openmpi", "4.1.4", "h0c3b9f2_100"), ("mpich", "4.0.2", "h5e1d8a4_100"))
# (name, version, build string) of the real conda MPI, and the package that drags it in
CONDA_MPI = ("openmpi", "5.0.3", "h_conda_mpi_0")
MPI_APP = "envmod-mpi-app"
# Fixed member times: the same inputs give the same archive bytes (and repodata sums).
EPOCH = 1_700_000_000


def conda_subdir() -> str:
    """The conda platform subdir of this machine (linux-64, linux-aarch64, ...)."""
    machine = platform.machine()
    return {"x86_64": "linux-64", "aarch64": "linux-aarch64", "ppc64le": "linux-ppc64le"}.get(machine,
                                                                                              f"linux-{machine}")


@dataclass
class PackageFile:
    """One file of a package: bytes, or a symlink to ``link_target``."""
    path: str
    data: bytes = b""
    link_target: str | None = None
    mode: int = 0o644


@dataclass
class Package:
    name: str
    version: str
    build: str
    subdir: str
    files: list[PackageFile] = field(default_factory=list)
    depends: list[str] = field(default_factory=list)
    noarch: str | None = None          # "python", "generic" or None
    entry_points: list[str] = field(default_factory=list)   # noarch:python console scripts

    @property
    def filename(self) -> str:
        return f"{self.name}-{self.version}-{self.build}.tar.bz2"

    def index(self) -> dict:
        machine = None if self.noarch else platform.machine()
        record = {"name": self.name, "version": self.version, "build": self.build, "build_number": 0,
                  "depends": self.depends, "subdir": self.subdir, "license": "BSD-3-Clause",
                  "arch": machine, "platform": None if self.noarch else "linux", "timestamp": EPOCH * 1000}
        if self.noarch:
            record["noarch"] = self.noarch
        return record


def _add(tar: tarfile.TarFile, name: str, data: bytes = b"", mode: int = 0o644, link_target: str | None = None) -> None:
    info = tarfile.TarInfo(name)
    info.mtime = EPOCH
    if link_target is not None:
        info.type, info.linkname, info.mode = tarfile.SYMTYPE, link_target, 0o777
        tar.addfile(info)
        return
    info.size, info.mode = len(data), mode
    tar.addfile(info, io.BytesIO(data))


def _paths_json(files: list[PackageFile]) -> dict:
    entries = []
    for f in files:
        if f.link_target is not None:
            entries.append({"_path": f.path, "path_type": "softlink"})
        else:
            entries.append({"_path": f.path, "path_type": "hardlink", "sha256": hashlib.sha256(f.data).hexdigest(),
                            "size_in_bytes": len(f.data)})
    return {"paths": entries, "paths_version": 1}


def write_package(pkg: Package, subdir_dir: Path) -> dict:
    """Write ``pkg`` as a .tar.bz2 into ``subdir_dir``; its repodata record."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:bz2") as tar:
        for f in pkg.files:
            _add(tar, f.path, f.data, f.mode, f.link_target)
        _add(tar, "info/index.json", json.dumps(pkg.index(), indent=2, sort_keys=True).encode())
        _add(tar, "info/paths.json", json.dumps(_paths_json(pkg.files), indent=2).encode())
        _add(tar, "info/files", "".join(f.path + "\n" for f in pkg.files).encode())
        if pkg.noarch == "python":
            link = {"noarch": {"type": "python", "entry_points": pkg.entry_points}, "package_metadata_version": 1}
            _add(tar, "info/link.json", json.dumps(link, indent=2).encode())
    data = buffer.getvalue()
    subdir_dir.mkdir(parents=True, exist_ok=True)
    (subdir_dir / pkg.filename).write_bytes(data)
    record = pkg.index()
    record.update(md5=hashlib.md5(data).hexdigest(), sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    return record


def write_repodata(channel: Path, packages: list[Package], subdirs: tuple[str, ...]) -> None:
    """Write every package and each subdir's repodata.json (an empty one too: conda reads noarch
    and the platform subdir of every channel)."""
    by_subdir: dict[str, dict] = {s: {} for s in subdirs}
    for pkg in packages:
        by_subdir.setdefault(pkg.subdir, {})[pkg.filename] = write_package(pkg, channel / pkg.subdir)
    for subdir, records in by_subdir.items():
        (channel / subdir).mkdir(parents=True, exist_ok=True)
        repodata = {"info": {"subdir": subdir}, "packages": records, "packages.conda": {}, "removed": [],
                    "repodata_version": 1}
        (channel / subdir / "repodata.json").write_text(json.dumps(repodata, indent=1, sort_keys=True))


@dataclass
class BasePython:
    executable: str        # absolute, as given (not resolved: a module's bin/python3)
    version: str           # 3.11.2
    short: str             # 3.11
    prefix: str            # sys.base_prefix


def describe_python(executable: str) -> BasePython:
    code = ("import sys, json; print(json.dumps([sys.version.split()[0], "
            "'%d.%d' % sys.version_info[:2], sys.base_prefix]))")
    out = subprocess.run([executable, "-c", code], capture_output=True, text=True, check=True).stdout
    version, short, prefix = json.loads(out)
    return BasePython(str(Path(executable).absolute()), version, short, prefix)


def python_package(base: BasePython, subdir: str) -> Package:
    """A ``python`` whose interpreter is a venv over ``base``: pyvenv.cfg and bin/ symlinks."""
    cfg = (f"home = {Path(base.executable).parent}\ninclude-system-site-packages = false\n"
           f"version = {base.version}\n")
    exe = f"python{base.short}"
    files = [PackageFile("pyvenv.cfg", cfg.encode()),
             PackageFile(f"bin/{exe}", link_target=base.executable),
             PackageFile("bin/python3", link_target=exe),
             PackageFile("bin/python", link_target=exe)]
    return Package("python", base.version, "h_envmod_venv_0", subdir, files)


def _console_scripts(entry_points_txt: str) -> list[str]:
    """``name = module:func`` lines of a wheel's [console_scripts] section."""
    scripts, section = [], ""
    for line in entry_points_txt.splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif line and section == "[console_scripts]":
            scripts.append(line)
    return scripts


def pip_package(base: BasePython) -> Package:
    """noarch:python pip from the base Python's bundled wheel (ensurepip)."""
    bundled = Path(base.prefix) / "lib" / f"python{base.short}" / "ensurepip" / "_bundled"
    wheels = sorted(bundled.glob("pip-*.whl"))
    if not wheels:
        raise SystemExit(f"channel: error: no pip wheel in {bundled} (a Python built without ensurepip?)")
    wheel = wheels[-1]
    version = wheel.name.split("-")[1]
    files, entry_points = [], []
    with zipfile.ZipFile(wheel) as zf:
        for name in zf.namelist():
            if name.endswith("/"):
                continue
            data = zf.read(name)
            files.append(PackageFile(f"site-packages/{name}", data))
            if name.endswith(".dist-info/entry_points.txt"):
                entry_points = _console_scripts(data.decode())
    return Package("pip", version, "pyh_envmod_0", "noarch", files, depends=["python >=3.7"], noarch="python",
                   entry_points=entry_points)


def hello_package() -> Package:
    source = b'"""A small pure package from the local conda channel."""\n\nGREETING = "hello from conda"\n'
    return Package("envmod-hello", "1.0", "pyh_envmod_0", "noarch",
                   [PackageFile(f"site-packages/{HELLO_MODULE}/__init__.py", source)],
                   depends=["python >=3.8"], noarch="python")


def pure_packages(count: int) -> list[Package]:
    """``count`` small pure noarch:python packages, deterministic (bench/backends installs them)."""
    packages = []
    for i in range(1, count + 1):
        source = f'"""Pure package {i} of the bench channel."""\n\nNUMBER = {i}\n'.encode()
        packages.append(Package(f"envmod-pure-{i}", "1.0", "pyh_envmod_0", "noarch",
                                [PackageFile(f"site-packages/envmod_pure_{i}/__init__.py", source)],
                                depends=["python >=3.8"], noarch="python"))
    return packages


def activate_package() -> Package:
    files = [PackageFile("etc/conda/activate.d/envmod-activate.sh", f"export {ACTIVATE_VARIABLE}=yes\n".encode()),
             PackageFile("etc/conda/deactivate.d/envmod-activate.sh", f"unset {ACTIVATE_VARIABLE}\n".encode())]
    return Package("envmod-activate", "1.0", "h_envmod_0", "noarch", files, noarch="generic")


def mpi_placeholders(subdir: str) -> list[Package]:
    """conda-forge's "use the system MPI" packages: no files, only the mpi metapackage they select."""
    packages = []
    for name, version, build in MPI_PLACEHOLDERS:
        packages.append(Package(name, version, build, subdir, depends=[f"mpi 1.0 {name}"]))
        packages.append(Package("mpi", "1.0", name, "noarch", noarch="generic"))
    return packages


def conda_mpi_packages(subdir: str) -> list[Package]:
    """A real conda Open MPI (a library of its own, as conda-forge's) and a package needing it."""
    name, version, build = CONDA_MPI
    library = PackageFile("lib/libmpi.so.40", b"not a real library: the conda MPI envmod refuses\n")
    return [Package(name, version, build, subdir, [library], depends=[f"mpi 1.0 {name}"]),
            Package(MPI_APP, "1.0", "h_envmod_0", "noarch", depends=[f"{name} >=5"], noarch="generic")]


def build_channel(dest: Path, base_python: str, conda_mpi: bool = False, pure: int = 0) -> Path:
    """Make the channel in ``dest`` (created; must not exist) over ``base_python``; returns ``dest``.
    ``conda_mpi``: the main label also holds a real conda MPI and a package needing it; ``pure``:
    that many extra pure packages (:func:`pure_packages`)."""
    base = describe_python(base_python)
    subdir = conda_subdir()
    dest.mkdir(parents=True)
    main = [python_package(base, subdir), pip_package(base), hello_package(), activate_package(), *pure_packages(pure)]
    write_repodata(dest, main + (conda_mpi_packages(subdir) if conda_mpi else []), (subdir, "noarch"))
    write_repodata(dest / "label" / MPI_LABEL, mpi_placeholders(subdir), (subdir, "noarch"))
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-python", required=True, help="the CPython the channel's python package is a venv over")
    parser.add_argument("--pure", type=int, default=0, metavar="N",
                        help="add N small pure packages envmod-pure-1..N (for bench/backends)")
    parser.add_argument("dest", type=Path, help="the channel directory to create")
    args = parser.parse_args(argv)
    if args.dest.exists():
        print(f"channel: error: {args.dest} exists already", file=sys.stderr)
        return 1
    started = time.monotonic()
    build_channel(args.dest, args.base_python, args.pure)
    print(f"channel: {args.dest} in {time.monotonic() - started:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
