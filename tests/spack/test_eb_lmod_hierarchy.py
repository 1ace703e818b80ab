"""EasyBuild's front end (the ``UserEnv`` easyblock) on a real Lmod hierarchy that Spack wrote.

The private Spack site of lmod_hierarchy.py puts HDF5's module in the subtree OpenMPI's module
opens. An easyconfig names that site's Python, OpenMPI and HDF5 modules as EXTERNAL_MODULE
dependencies, with ``--external-modules-metadata`` for their names, versions and prefixes
(EasyBuild does not check that an external module is visible before the ones listed earlier are
loaded, and loads them all in one ``module load``, which Lmod takes in order). The env's only
compiled evidence is a small gcc-built wheel linking that HDF5 (no h5py compile). ``eb`` runs as
the unprivileged test user; the module it writes must depend on [python, openmpi, hdf5] in that
order and load alone in a fresh real Lmod shell holding only the site's ``Core`` dir.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import time

import pytest
from spack_helpers import fresh_shell
from tests.easybuild.easybuild_site import (
    UserShell,
    copy_for_user,
    find_easybuild,
    require_site,
    unprivileged_user,
    user_workdir,
)

from bridge.store.record import read_record

pytestmark = [pytest.mark.easybuild, pytest.mark.spack, pytest.mark.modules]

NAME, VERSION = "H5Hier", "1.0"


@pytest.fixture
def eb_user():
    """The central EasyBuild site, run as the unprivileged test user in a directory of its own."""
    easybuild = find_easybuild()
    site = require_site()
    user = unprivileged_user()
    work = user_workdir(user, prefix="envmod-eb-hier-")
    paths = copy_for_user(work, user)
    yield UserShell(easybuild, site, work, user, paths["library"]), paths
    shutil.rmtree(work, ignore_errors=True)


def external_modules_metadata(hierarchy: dict) -> str:
    """What EasyBuild cannot learn from Spack's modules: each one's software name, version, prefix
    (Debian's, as the Spack site registers them)."""
    sections = []
    for key, software in (("python", "Python"), ("mpi", "OpenMPI"), ("hdf5", "HDF5")):
        module = hierarchy[key]
        version = module.split("/", 1)[1].split("-", 1)[0]
        sections.append(f"[{module}]\nname = {software}\nversion = {version}\nprefix = /usr\n")
    return "\n".join(sections)


def easyconfig(hierarchy: dict, name: str = NAME, order: tuple[str, ...] = ("python", "mpi", "hdf5")) -> str:
    deps = "".join(f"    ('{hierarchy[key]}', EXTERNAL_MODULE),\n" for key in order)
    return (f"easyblock = 'UserEnv'\n\nname = '{name}'\nversion = '{VERSION}'\n\n"
            "homepage = '(a personal environment)'\n"
            "description = \"A library linking the site's parallel HDF5, from a Spack Lmod hierarchy\"\n\n"
            f"toolchain = SYSTEM\n\ndependencies = [\n{deps}]\n\n"
            f"packages = ['{hierarchy['wheel']}']\n\nmoduleclass = 'tools'\n")


def run_eb(hierarchy: dict, shell: UserShell, paths: dict, text: str, name: str):
    """``eb`` on an easyconfig as the test user, with only the site's Core dir of the hierarchy
    added to MODULEPATH (besides the EasyBuild site's own modules)."""
    metadata = shell.work / "external-modules.cfg"
    metadata.write_text(external_modules_metadata(hierarchy))
    ec = shell.work / f"{name}-{VERSION}.eb"
    ec.write_text(text)
    for path in (metadata, ec):
        os.chmod(path, 0o644)
    return shell.run(f"module use {shlex.quote(str(hierarchy['core']))}\n"
                     f"eb {ec} --include-easyblocks={paths['easyblock']} --external-modules-metadata={metadata}",
                     timeout=900)


def test_userenv_over_hierarchy_modules_depends_on_them_in_load_order(lmod_hierarchy, eb_user):
    hierarchy = lmod_hierarchy
    shell, paths = eb_user
    started = time.monotonic()
    build = run_eb(hierarchy, shell, paths, easyconfig(hierarchy), NAME).check()
    print(f"\n{NAME}-{VERSION} built by eb in {time.monotonic() - started:.0f}s")
    assert "COMPLETED: Installation ended successfully" in build.stdout
    assert re.search(rf"envmod scan: \d+ compiled files; central modules linked: .*{re.escape(hierarchy['hdf5'])}",
                     build.stdout), build.stdout[-3000:]
    # OpenMPI opens HDF5's subtree: the env needs it, whatever the scan attributes to it
    assert "is not used by" not in build.output, build.output[-3000:]

    wanted = [hierarchy["python"], hierarchy["mpi"], hierarchy["hdf5"]]
    installdir = shell.work / f"eb/software/{NAME}/{VERSION}"
    assert read_record(installdir / "envmod.yaml").module.depends_on == wanted
    module = (shell.work / f"eb/modules/all/{NAME}/{VERSION}.lua").read_text()
    written = re.findall(r'^depends_on\("([^"]+)"\)', module, re.M)
    assert written == wanted, module

    loaded = fresh_shell("lmod", f"""
export MODULEPATH={shlex.quote(str(hierarchy['core']))}
module use {shlex.quote(str(shell.work / 'eb/modules/all'))}
module load {NAME}/{VERSION}
echo "LOADED=$LOADEDMODULES"
python -c 'import h5user; print("opened", h5user.LIB.h5link_open())'
""").check()
    modules = loaded.stdout.split("LOADED=", 1)[1].split()[0].split(":")
    # HDF5's own module loads the compiler it was built with (gcc), after OpenMPI
    assert [m for m in modules if not m.startswith("gcc/")] == wanted + [f"{NAME}/{VERSION}"]
    assert "opened 0" in loaded.stdout


@pytest.mark.parametrize("order", [("python", "hdf5", "mpi"), ("python", "hdf5")], ids=["hdf5-first", "no-openmpi"])
def test_hierarchy_module_listed_before_its_opener_fails_before_installing(lmod_hierarchy, eb_user, order):
    """EasyBuild loads the dependencies in the easyconfig's order (one ``module load``), so HDF5
    listed before OpenMPI, or without it, cannot load: EasyBuild stops in its prepare step, with
    Lmod's message naming the module, before the easyblock creates anything."""
    hierarchy = lmod_hierarchy
    shell, paths = eb_user
    name = NAME + "Bad"
    build = run_eb(hierarchy, shell, paths, easyconfig(hierarchy, name, order), name)
    assert build.returncode != 0
    assert f'cannot be loaded as requested: "{hierarchy["hdf5"]}"' in build.output, build.output[-3000:]
    assert f"module spider {hierarchy['hdf5']}" in build.output
    # the easyblock's configure step (its "envmod: ..." lines) never ran
    assert "envmod: " not in build.stdout and ">> envmod [" not in build.stdout
    # (EasyBuild itself makes the empty install and module directories)
    assert not (shell.work / f"eb/modules/all/{name}/{VERSION}.lua").exists()
    assert not list((shell.work / f"eb/software/{name}").glob("*/envmod.yaml"))
