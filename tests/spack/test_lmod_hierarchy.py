"""Every front end orders an env's modules for the Lmod hierarchy, on a real one Spack wrote.

A private Spack site (lmod_hierarchy.py) puts HDF5's module in the subtree the OpenMPI module
opens, as a site that builds its HDF5 with Spack gets. An env whose only evidence is a library
linking that HDF5 needs OpenMPI's module loaded before HDF5's, or its module cannot load in a
fresh shell: every front end (``envmod create`` over the loaded modules, ``spack envmod
create``, ``envmod rebuild``, ``spack envmod rebuild``; EasyBuild's ``UserEnv`` in
test_eb_lmod_hierarchy.py) must write ``[python, openmpi, hdf5]``, and the module must load alone in a fresh
real Lmod shell holding only the site's ``Core`` dir.
"""

from __future__ import annotations

import shlex

import pytest
import yaml
from spack_helpers import Spack, fresh_shell
from tests.conftest import ModuleShell, require_site

pytestmark = [pytest.mark.spack, pytest.mark.modules]


@pytest.fixture(scope="module")
def hierarchy(lmod_hierarchy) -> dict:
    """The private Spack site whose Lmod tree has HDF5 in OpenMPI's subtree (lmod_hierarchy.py):
    the scope, the module names, the Core dir and a wheel linking that HDF5."""
    return lmod_hierarchy


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
