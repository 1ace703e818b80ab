"""UserEnv end to end with the real EasyBuild 5.4 of the central EasyBuild site (ci/eb-site.sh),
run as an unprivileged user made for the test, with the installpath under that user's own
directory: `eb MyEnv-1.0.eb --include-easyblocks=...` compiles mpi4py and h5py against the
site's OpenMPI and parallel HDF5; then `module purge`, load only the new module, 2 MPI ranks.
EasyBuild's own workflow (skip when installed, --module-only --rebuild, -x, --sanity-check-only,
--rebuild with --try-amend) and the missing-dependency failures run against the same site, and
an env over the site's Open MPI as a hand-written EXTERNAL_MODULE with metadata is compiled
against it, loads it and runs 2 ranks.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest
from tests.easybuild.easybuild_site import (
    UserShell,
    copy_for_user,
    find_easybuild,
    require_site,
    unprivileged_user,
    user_workdir,
)

from bridge.store.record import read_record

pytestmark = [pytest.mark.easybuild, pytest.mark.slow]

DEPS = ["Python/3.11.2", "OpenMPI/4.1.4", "HDF5/1.10.8"]


@pytest.fixture(scope="module")
def eb_user():
    easybuild = find_easybuild()
    site = require_site()
    user = unprivileged_user()
    work = user_workdir(user)
    paths = copy_for_user(work, user)
    shell = UserShell(easybuild, site, work, user, paths["library"])
    yield shell, paths
    shutil.rmtree(work, ignore_errors=True)


def eb(paths, *args: str) -> str:
    return " ".join(["eb", *args, f"--include-easyblocks={paths['easyblock']}"])


@pytest.fixture(scope="module")
def myenv(eb_user):
    """MyEnv-1.0 built once (compiling mpi4py and h5py costs minutes), shared by the tests below."""
    shell, paths = eb_user
    started = time.monotonic()
    result = shell.run(eb(paths, str(paths["examples"] / "MyEnv-1.0.eb")), timeout=3000)
    elapsed = time.monotonic() - started
    print(f"\nMyEnv-1.0 built by eb in {elapsed:.0f}s")
    installdir = shell.work / "eb/software/MyEnv/1.0"
    return shell, paths, result, installdir


def test_eb_builds_the_env_as_the_user_in_their_own_installpath(myenv):
    shell, paths, result, installdir = myenv
    result.check()
    assert "COMPLETED: Installation ended successfully" in result.stdout
    if shell.user:
        import pwd

        assert installdir.stat().st_uid == pwd.getpwnam(shell.user).pw_uid
        assert "WARNING: Using EasyBuild as root" not in result.output
    assert (shell.work / "eb/modules/all/MyEnv/1.0.lua").is_file()
    for step in ("compile mpi4py", "compile h5py"):
        assert step in result.stdout


def test_record_is_envmods_and_says_what_was_compiled_against_what(myenv):
    shell, paths, result, installdir = myenv
    result.check()
    record = read_record(installdir / "envmod.yaml")
    assert record.name == "MyEnv-1.0" and record.backend == "venv"
    assert record.prefix == str(installdir.resolve())
    assert record.python.version == "3.11.2" and record.python.module == "Python/3.11.2"
    assert record.module.name == "MyEnv/1.0" and record.module.type == "lmod"
    assert record.module.depends_on == DEPS
    assert record.module.files == {"lmod": str(shell.work / "eb/modules/all/MyEnv/1.0.lua")}
    packages = {p.name.lower(): p for p in record.packages}
    assert packages["mpi4py"].install == "source" and packages["mpi4py"].built_against == ["OpenMPI/4.1.4"]
    assert packages["h5py"].install == "source"
    assert packages["h5py"].built_against == ["HDF5/1.10.8", "OpenMPI/4.1.4"]
    assert packages["h5py"].build_env["HDF5_MPI"] == "ON"
    assert record.description.startswith("MPI + parallel HDF5 analysis")
    assert record.created.log and Path(record.created.log).is_file()


def test_scan_saw_the_central_libraries(myenv):
    shell, paths, result, installdir = myenv
    result.check()
    line = next(line for line in result.stdout.splitlines() if "envmod scan:" in line)
    assert re.search(r"envmod scan: \d+ compiled files; central modules linked: HDF5/1.10.8, OpenMPI/4.1.4$",
                     line), line
    assert "is not used by" not in result.output
    # the record keeps that evidence: mpi4py's extension needs Open MPI's library directly
    record = read_record(installdir / "envmod.yaml")
    assert any(e.provider == "OpenMPI/4.1.4" and e.needs.startswith("libmpi.so") and e.via is None
               and "mpi4py/" in e.file for e in record.links)


def test_module_alone_runs_parallel_hdf5_with_two_mpi_ranks(myenv):
    shell, paths, result, installdir = myenv
    result.check()
    run = shell.run(f"""
module purge
module use "$EASYBUILD_PREFIX/modules/all"
module load MyEnv/1.0
echo "LOADED=$LOADEDMODULES"
echo "VENV=$VIRTUAL_ENV NOUSERSITE=$PYTHONNOUSERSITE PY=$(command -v python)"
mpirun -n 2 python {paths['ranks']}
mpirun -n 2 python {paths['demo']} "$PWD/demo.h5"
module unload MyEnv/1.0
echo "AFTER=$LOADEDMODULES"
""", timeout=600).check()
    out = run.stdout
    assert "LOADED=" + ":".join(DEPS + ["MyEnv/1.0"]) in out
    assert f"VENV={installdir} NOUSERSITE=1 PY={installdir}/bin/python" in out
    assert "ranks [0, 1] of 2 library Open" in out
    assert "2 ranks wrote" in out and "read back [0, 10]" in out and "mpi=True" in out
    assert "AFTER=\n" in out + "\n"


def test_envmod_list_and_show_see_the_eb_built_env(myenv):
    shell, paths, result, installdir = myenv
    result.check()
    envmod = f"PYTHONPATH={paths['library']} {shell.easybuild.python} -m bridge"
    run = shell.run(f"{envmod} list --json\necho ===\n{envmod} show MyEnv-1.0").check()
    listing, shown = run.stdout.split("===\n")
    rows = json.loads(listing)
    assert [(r["name"], r["module"], r["prefix"]) for r in rows] == [("MyEnv-1.0", "MyEnv/1.0", str(installdir.resolve()))]
    assert "MyEnv-1.0: venv over Python/3.11.2 (Python 3.11.2)" in shown
    assert "loads:        Python/3.11.2, OpenMPI/4.1.4, HDF5/1.10.8" in shown
    assert "mpi4py" in shown and "compiled against OpenMPI/4.1.4" in shown


def test_a_second_eb_skips_the_installed_env(myenv):
    shell, paths, result, installdir = myenv
    result.check()
    again = shell.run(eb(paths, str(paths["examples"] / "MyEnv-1.0.eb"))).check()
    assert "already installed" in again.output and "skipping" in again.output


def compiled(installdir: Path) -> Path:
    return next(installdir.glob("lib/python3.11/site-packages/mpi4py/MPI.*.so"))


def test_module_only_rebuild_rewrites_only_the_module(myenv):
    shell, paths, result, installdir = myenv
    result.check()
    module = shell.work / "eb/modules/all/MyEnv/1.0.lua"
    so_stat = compiled(installdir).stat()
    module.write_text(module.read_text() + "-- edited by hand\n")
    started = time.monotonic()
    run = shell.run(eb(paths, str(paths["examples"] / "MyEnv-1.0.eb"), "--module-only", "--rebuild")).check()
    assert time.monotonic() - started < 120
    assert "-- edited by hand" not in module.read_text()
    assert 'depends_on("HDF5/1.10.8")' in module.read_text() and 'family("envmod")' in module.read_text()
    assert compiled(installdir).stat().st_mtime_ns == so_stat.st_mtime_ns
    assert "compile mpi4py" not in run.stdout
    assert read_record(installdir / "envmod.yaml").module.files["lmod"] == str(module)


def test_sanity_check_only_imports_the_packages_in_the_module(myenv):
    shell, paths, result, installdir = myenv
    result.check()
    run = shell.run(eb(paths, str(paths["examples"] / "MyEnv-1.0.eb"), "--sanity-check-only")).check()
    text = run.stdout.replace('"', "'")
    for name in ("mpi4py", "h5py"):
        assert f"result for command 'python -c 'import {name}'': OK" in text, name


def test_dry_run_prints_what_it_would_do_and_changes_nothing(myenv):
    shell, paths, result, installdir = myenv
    result.check()
    module = shell.work / "eb/modules/all/MyEnv/1.0.lua"
    before = (sorted(p.name for p in installdir.iterdir()), module.stat().st_mtime_ns,
              (installdir / "envmod.yaml").stat().st_mtime_ns)
    run = shell.run(eb(paths, str(paths["examples"] / "MyEnv-1.0.eb"), "-x", "--rebuild")).check()
    assert f"envmod: create a venv environment in {installdir}" in run.stdout
    assert "envmod: pip install mpi4py h5py" in run.stdout
    assert 'depends_on("OpenMPI/4.1.4")' in run.stdout
    after = (sorted(p.name for p in installdir.iterdir()), module.stat().st_mtime_ns,
             (installdir / "envmod.yaml").stat().st_mtime_ns)
    assert after == before


def test_missing_mpi_dependency_fails_before_installing_naming_the_module(eb_user):
    shell, paths = eb_user
    run = shell.run(eb(paths, str(paths["examples"] / "MyEnvNoMPI-1.0.eb")))
    assert run.returncode != 0
    assert ("mpi4py is compiled from source against the site's MPI (envmod's build rules), but no dependency "
            "of MyEnvNoMPI-1.0 provides one: add ('OpenMPI', '4.1.4') to dependencies") in run.output
    # (EasyBuild itself makes the empty module directory)
    assert not (shell.work / "eb/modules/all/MyEnvNoMPI/1.0.lua").exists()
    assert not (shell.work / "eb/software/MyEnvNoMPI/1.0/envmod.yaml").exists()
    assert "compile mpi4py" not in run.output


def test_dependency_loaded_only_through_another_fails_naming_it(eb_user):
    shell, paths = eb_user
    run = shell.run(eb(paths, str(paths["examples"] / "MyEnvHDF5Only-1.0.eb")))
    assert run.returncode != 0
    assert ("MyEnvHDF5Only-1.0 uses central modules that are not among its dependencies: OpenMPI/4.1.4 "
            "(h5py is compiled against it). Add to dependencies: ('OpenMPI', '4.1.4')") in run.output
    # (EasyBuild itself makes the empty module directory)
    assert not (shell.work / "eb/modules/all/MyEnvHDF5Only/1.0.lua").exists()
    assert not (shell.work / "eb/software/MyEnvHDF5Only/1.0/envmod.yaml").exists()


def test_unused_dependency_warns_then_rebuild_with_try_amend(eb_user):
    shell, paths = eb_user
    ec = shell.work / "MyTools-1.0.eb"
    text = (paths["examples"] / "MyTools-1.0.eb").read_text()
    ec.write_text(text.replace("dependencies = [('Python', '3.11.2')]",
                               "dependencies = [('Python', '3.11.2'), ('OpenMPI', '4.1.4')]"))
    os.chmod(ec, 0o644)
    first = shell.run(eb(paths, str(ec)), timeout=900).check()
    assert ("dependency OpenMPI/4.1.4 is not used by MyTools-1.0: no package was compiled against it and "
            "nothing in the environment links to it") in first.output
    installdir = shell.work / "eb/software/MyTools/1.0"
    assert read_record(installdir / "envmod.yaml").requested == ["tomli", "tomli-w"]

    (installdir / "stray-file").write_text("from the first build\n")
    second = shell.run(eb(paths, str(ec), "--rebuild", "--try-amend=packages=tomli,six"), timeout=900).check()
    assert "COMPLETED" in second.stdout
    assert not (installdir / "stray-file").exists()
    record = read_record(installdir / "envmod.yaml")
    assert record.requested == ["tomli", "six"]
    run = shell.run("module purge\nmodule use \"$EASYBUILD_PREFIX/modules/all\"\nmodule load MyTools/1.0\n"
                    "python -c 'import six, tomli; print(\"imports ok\")'\necho \"LOADED=$LOADEDMODULES\"").check()
    assert "imports ok" in run.stdout
    assert "LOADED=Python/3.11.2:OpenMPI/4.1.4:MyTools/1.0" in run.stdout


EXTERNAL_OPENMPI = """\
-- Debian's Open MPI 4.1.4 (in /usr), a module the site wrote by hand: an EXTERNAL_MODULE for
-- EasyBuild. It says nothing about where Open MPI lives; the metadata file does.
whatis("Open MPI 4.1.4 as Debian 12 provides it")
"""


def test_external_openmpi_with_metadata_is_compiled_against_and_loaded(eb_user):
    shell, paths = eb_user
    external = shell.work / "external"
    (external / "openmpi").mkdir(parents=True)
    (external / "openmpi/4.1.4.lua").write_text(EXTERNAL_OPENMPI)
    metadata = shell.work / "external-modules.cfg"
    metadata.write_text("[openmpi/4.1.4]\nname = OpenMPI\nversion = 4.1.4\nprefix = /usr\n")
    ec = shell.work / "MyEnvExt-1.0.eb"
    ec.write_text((paths["examples"] / "MyEnv-1.0.eb").read_text()
                  .replace("name = 'MyEnv'", "name = 'MyEnvExt'")
                  .replace("    ('OpenMPI', '4.1.4'),\n    ('HDF5', '1.10.8'),\n", "    ('openmpi/4.1.4', EXTERNAL_MODULE),\n")
                  .replace("packages = ['mpi4py', 'h5py']", "packages = ['mpi4py']"))
    for path in (external, external / "openmpi", external / "openmpi/4.1.4.lua", metadata, ec):
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    started = time.monotonic()
    build = shell.run(f"module use {external}\n"
                      + eb(paths, str(ec), f"--external-modules-metadata={metadata}"), timeout=1800).check()
    print(f"\nMyEnvExt-1.0 built by eb in {time.monotonic() - started:.0f}s")
    # mpicc came from the metadata's prefix: the module itself names no prefix and adds no PATH
    assert ("compiled against the stack: mpi4py (against openmpi/4.1.4; MPICC=/usr/bin/mpicc); also h5py, if a "
            "requested package requires it") in " ".join(build.stdout.split())
    assert re.search(r"envmod scan: \d+ compiled files; central modules linked: openmpi/4.1.4$", build.stdout, re.M)
    assert "is not used by" not in build.output
    installdir = shell.work / "eb/software/MyEnvExt/1.0"
    record = read_record(installdir / "envmod.yaml")
    assert record.module.depends_on == ["Python/3.11.2", "openmpi/4.1.4"]
    mpi4py = next(p for p in record.packages if p.name.lower() == "mpi4py")
    assert mpi4py.install == "source" and mpi4py.built_against == ["openmpi/4.1.4"]
    assert 'depends_on("openmpi/4.1.4")' in (shell.work / "eb/modules/all/MyEnvExt/1.0.lua").read_text()
    gather = ("from mpi4py import MPI; c = MPI.COMM_WORLD; ranks = c.gather(c.rank); "
              "c.rank == 0 and print('ranks', ranks, 'of', c.size, flush=True)")
    run = shell.run(f"""
module purge
module use "$EASYBUILD_PREFIX/modules/all"
module use {external}
module load MyEnvExt/1.0
echo "LOADED=$LOADEDMODULES"
mpirun -n 2 python -c "{gather}"
""", timeout=600).check()
    assert "LOADED=Python/3.11.2:openmpi/4.1.4:MyEnvExt/1.0" in run.stdout
    assert "ranks [0, 1] of 2" in run.stdout
