"""``envmod pack`` of conda and rattler envs (issue #14): the image's copy is relocated as conda
relocates a package (text files rewritten, binaries padded with NULs), runs from its node-local
path with the shared build moved away, names the shared prefix nowhere, and the env's module
uses it (CONDA_PREFIX, PATH) under real Lmod and real Environment Modules. Pure packages from
the test channel and a pip-installed wheel: nothing compiled but one small C program, a binary
that names the env's prefix as a package's compiled-in placeholder does (the real compiler)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from bridge.build.backends.rattler import rattler_version
from bridge.emit.modulefile import render_modulefile
from bridge.stage.relocate import padded_replace
from bridge.store.record import read_record
from tests.conda.channel import ACTIVATE_VARIABLE, HELLO_MODULE
from tests.conda.conftest import require_conda
from tests.conda.test_conda_backend_e2e import conda_setup
from tests.conftest import ModuleShell, require_tool, skip_or_fail
from tests.modules.test_pack import unpack, wheel

pytestmark = [pytest.mark.conda]

NAME = "cpack"
MODULE = f"{NAME}/py3.11"
WHERE_C = r"""#include <stdio.h>
static const char data_dir[] = "@PREFIX@/share/cpack-data";
int main(void) { puts(data_dir); return 0; }
"""


@dataclass
class Packed:
    backend: str
    root: Path
    build: Path             # the env's build directory (what its files name)
    home: Path
    channel: Path
    manifest: dict
    env: dict


def compile_where(prefix: Path, cc: str) -> None:
    """``bin/cpack-where``: a binary naming the env's prefix in a C string, as a conda package's
    binary names its prefix once conda filled the placeholder."""
    source = prefix.parent / "where.c"
    source.write_text(WHERE_C.replace("@PREFIX@", str(prefix)))
    subprocess.run([cc, "-O0", "-o", str(prefix / "bin/cpack-where"), str(source)], check=True)
    source.unlink()


@pytest.fixture(scope="module", params=["conda", "rattler"])
def packed(request, channel, tmp_path_factory) -> Packed:
    backend = request.param
    require_conda()
    if backend == "rattler" and rattler_version() is None:
        skip_or_fail("py-rattler is not installed (it comes with envmod's [test] extra)")
    mksquashfs = shutil.which("mksquashfs")
    cc = require_tool("cc")
    base = tmp_path_factory.mktemp(f"{backend}-pack")
    home = base / "home"
    home.mkdir()
    # a node-local base shorter than the build directory, as /tmp is beside a home directory
    node_local = Path(tempfile.mkdtemp(prefix="nl", dir="/tmp"))
    request.addfinalizer(lambda: shutil.rmtree(node_local, ignore_errors=True))
    env = {"ENVMOD_STAGE_BASE": str(node_local)}
    whl = wheel(base)
    shell = ModuleShell("lmod", base / "root", base / "cache")
    loads = "conda/26.7.1 python/3.11" if backend == "conda" else "python/3.11"
    shell.run(conda_setup("lmod", channel, home) + f"""
module load {loads}
$ENVMOD create {NAME} -q --backend {backend} --conda envmod-hello envmod-activate --with {whl}
$ENVMOD module {NAME} --module-type tcl
""", timeout=900, extra_env=env).check()
    build = Path(os.path.realpath(base / "root/envs" / NAME))
    assert build.parent.name == ".builds"
    compile_where(build, cc)
    shell.run(conda_setup("lmod", channel, home) + f"module load {loads}\n"
              f"$ENVMOD pack {NAME} --format {'squashfs' if mksquashfs else 'tar.gz'}",
              extra_env=env).check()
    manifest = json.loads((base / "root/images" / f"{NAME}.json").read_text())
    return Packed(backend, base / "root", build, home, channel, manifest, env)


def files_naming(tree: Path, *paths: Path) -> list[str]:
    needles = [str(p).encode() for p in paths]
    return sorted(str(p.relative_to(tree)) for p in tree.rglob("*") if p.is_file() and not p.is_symlink()
                  and any(n in p.read_bytes() for n in needles))


def test_packed_conda_env_runs_from_its_node_local_path_with_the_build_gone(packed: Packed, tmp_path) -> None:
    staged = unpack(packed.manifest, packed.root / "images")
    link = packed.root / "envs" / NAME
    try:
        assert files_naming(staged, packed.build, link) == []
        meta = [json.loads(p.read_text()) for p in (staged / "conda-meta").glob("*.json")]
        assert meta and all(str(packed.build) not in json.dumps(m) for m in meta)
        assert read_record(staged / "envmod.yaml").prefix == str(staged)
        # the shared env is gone (its link and its build): only the copy can answer
        away = tmp_path / "away"
        away.mkdir()
        packed.build.rename(away / "build")
        link.rename(away / "link")
        try:
            clean = {"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1", "HOME": str(packed.home)}
            run = subprocess.run([str(staged / "bin/python"), "-c", f"import sys, {HELLO_MODULE}, packpkg; "
                                  f"print(sys.prefix); print({HELLO_MODULE}.__file__); print(packpkg.__file__)"],
                                 capture_output=True, text=True, env=clean)
            assert run.returncode == 0, run.stderr
            site = f"{staged}/lib/python3.11/site-packages"
            assert run.stdout.splitlines() == [str(staged), f"{site}/{HELLO_MODULE}/__init__.py",
                                               f"{site}/packpkg/__init__.py"]
            where = subprocess.run([str(staged / "bin/packpkg-where")], capture_output=True, text=True, env=clean)
            assert where.returncode == 0, where.stderr
            assert dict(line.split(" ", 1) for line in where.stdout.splitlines())["prefix"] == str(staged)
            # the binary's C string names the copy, padded with NULs to its old length
            binary = subprocess.run([str(staged / "bin/cpack-where")], capture_output=True, text=True)
            assert binary.stdout.strip() == f"{staged}/share/cpack-data"
            assert (staged / "bin/cpack-where").stat().st_size == (away / "build/bin/cpack-where").stat().st_size
        finally:
            (away / "build").rename(packed.build)
            (away / "link").rename(link)
    finally:
        shutil.rmtree(staged)


@pytest.mark.parametrize("system", ["lmod", "tcl"])
def test_staged_module_sets_conda_prefix_and_path_to_the_copy(packed: Packed, system: str) -> None:
    shell = ModuleShell(system, packed.root, packed.root.parent / "cache")
    load = f"""
module use "$ENVMOD_ROOT/modules"
snap before
module load {MODULE}
snap loaded
python -c 'import sys, {HELLO_MODULE}; print(sys.prefix)'
module unload {MODULE}
snap after
"""
    setup = conda_setup(system, packed.channel, packed.home)
    plain = shell.run(setup + load, extra_env=packed.env).check()
    assert plain.snapshots["loaded"]["CONDA_PREFIX"] == str(packed.build)
    staged = unpack(packed.manifest, packed.root / "images")
    try:
        job = shell.run(setup + load, extra_env=packed.env).check()
        loaded = job.snapshots["loaded"]
        assert loaded["CONDA_PREFIX"] == loaded["CONDA_DEFAULT_ENV"] == str(staged)
        assert loaded["ENVMOD_RECORD"] == f"{staged}/envmod.yaml"
        assert loaded["PATH"].split(":")[0] == f"{staged}/bin"
        assert str(packed.root / "envs") not in loaded["PATH"]
        assert loaded[ACTIVATE_VARIABLE] == "yes"
        assert job.stdout.strip().splitlines()[-1] == str(staged)
        after = job.snapshots["after"]
        assert "CONDA_PREFIX" not in after and after["PATH"] == job.snapshots["before"]["PATH"]
    finally:
        shutil.rmtree(staged)


def test_activate_d_values_naming_the_prefix_name_the_copy_in_the_staged_branch(packed: Packed) -> None:
    """The channel's activate.d script sets a constant: a value naming the env's build path is
    put in the record here, as activate_variables would record it, and rendered (no load)."""
    record = read_record(packed.root / "envs" / NAME / "envmod.yaml")
    assert record.conda is not None
    record.conda.activate_env = {"CPACK_DATA": f"{packed.build}/share/cpack-data:{packed.build}",
                                 "CPACK_OTHER": f"{packed.build}-not-the-env"}
    staged = packed.manifest["staged_prefix"]
    text = render_modulefile(record, "lmod", staged_prefix=staged)
    branch = text.split("else", 1)[0]
    assert f'setenv("CPACK_DATA", "{staged}/share/cpack-data:{staged}")' in branch
    assert f'setenv("CPACK_OTHER", "{packed.build}-not-the-env")' in branch
    assert f'os.getenv("CONDA_PREFIX") == "{staged}"' in branch


def test_binary_naming_the_prefix_is_refused_when_the_node_local_path_is_longer(packed: Packed) -> None:
    if packed.backend != "conda":
        pytest.skip("one backend is enough: the relocation is the same code")
    images = packed.root / "images"
    before = sorted(p.name for p in images.iterdir())
    long_base = Path(tempfile.mkdtemp(prefix="nl-" + "x" * len(str(packed.build)), dir="/tmp"))
    try:
        shell = ModuleShell("lmod", packed.root, packed.root.parent / "cache")
        result = shell.run(conda_setup("lmod", packed.channel, packed.home) +
                           f"module load conda/26.7.1 python/3.11\n$ENVMOD pack {NAME}",
                           extra_env={"ENVMOD_STAGE_BASE": str(long_base)})
    finally:
        shutil.rmtree(long_base)
    assert result.returncode != 0
    err = result.stderr.strip().splitlines()
    assert len(err) == 1 and "cannot be relocated" in err[0] and "bin/cpack-where" in err[0], result.stderr
    assert sorted(p.name for p in images.iterdir()) == before


def test_padded_replace_keeps_every_offset() -> None:
    data = b"\x7fELF\0/old/prefix/lib:/old/prefix/bin\0tail /old/prefix\0\0end"
    out = padded_replace(data, b"/old/prefix", b"/new")
    assert len(out) == len(data)
    assert out == (b"\x7fELF\0/new/lib:/new/bin" + b"\0" * 14 + b"\0tail /new" + b"\0" * 7 + b"\0\0end")
