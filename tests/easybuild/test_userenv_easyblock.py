"""Fast tests of the UserEnv easyblock with a real EasyBuild, in EasyBuild's module-only style.

Each test runs the real ``eb`` (or a few lines under EasyBuild's Python) against small fake
dependency modules (Python, OpenMPI, HDF5 as Lua modules in a temporary MODULEPATH, as EasyBuild
writes them or as a site writes EXTERNAL_MODULE ones), so nothing is compiled and no central site
is needed: ``--module-only --force`` runs the ready, prepare and module steps, ``-x`` prints
every step, ``--stop=configure`` discovers the stack and plans. The end-to-end build is in
test_userenv_eb_e2e.py.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from tests.easybuild.easybuild_site import EASYBLOCK, EXAMPLES, REPO, EasyBuild, Result, find_easybuild, run

from bridge.store.record import (
    CentralModuleRecord,
    EnvRecord,
    ModuleRecord,
    PackageRecord,
    Provenance,
    PythonRecord,
    read_record,
    write_record,
)

pytestmark = pytest.mark.easybuild

DEPS = {"Python/3.11.2": ("PYTHON", "3.11.2"), "OpenMPI/4.1.4": ("OPENMPI", "4.1.4"), "HDF5/1.10.8": ("HDF5", "1.10.8")}


@pytest.fixture(scope="module")
def easybuild() -> EasyBuild:
    found = find_easybuild()
    probe = subprocess.run([found.python, "-c", "import yaml, jinja2, packaging, archspec"],
                           capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    if probe.returncode != 0:
        pytest.skip(f"the Python running EasyBuild ({found.python}) lacks envmod's dependencies: "
                    f"{probe.stderr.strip().splitlines()[-1:]}; run 'bash ci/eb-site.sh'")
    return found


@pytest.fixture(scope="module")
def fake_stack(tmp_path_factory) -> Path:
    """Lua modules standing in for the central Python, OpenMPI and HDF5 (nothing behind them)."""
    base = tmp_path_factory.mktemp("fake-stack")
    for name, (upper, version) in DEPS.items():
        prefix = base / "software" / name
        (prefix / "bin").mkdir(parents=True)
        if upper == "PYTHON":
            (prefix / "bin/python3").symlink_to("/usr/bin/python3")
        modfile = base / "modules/all" / f"{name}.lua"
        modfile.parent.mkdir(parents=True, exist_ok=True)
        modfile.write_text(textwrap.dedent(f"""\
            local root = "{prefix}"
            prepend_path("PATH", pathJoin(root, "bin"))
            setenv("EBROOT{upper}", root)
            setenv("EBVERSION{upper}", "{version}")
            """))
    return base / "modules/all"


class EbRun:
    def __init__(self, easybuild: EasyBuild, modules: Path, work: Path) -> None:
        self.easybuild = easybuild
        self.modules = modules
        self.work = work
        self.prefix = work / "eb"
        self.envmod_root = work / "envmod-root"

    @property
    def installdir(self) -> Path:
        return self.prefix / "software/MyEnv/1.0"

    def env(self, **extra: str) -> dict[str, str]:
        env = self.easybuild.environment(
            MODULEPATH=str(self.modules), ENVMOD_ROOT=str(self.envmod_root), ENVMOD_LIBRARY=str(REPO / "src"),
            XDG_CACHE_HOME=str(self.work / "cache"), HOME=str(self.work))
        env.pop("EASYBUILD_CONFIGFILES", None)      # no site configuration: everything below the test's prefix
        if os.geteuid() == 0:
            env["EASYBUILD_ALLOW_USE_AS_ROOT_AND_ACCEPT_CONSEQUENCES"] = "1"
        env.update(extra)
        return env

    def eb(self, *args: str, syntax: str = "Lua", easyblock: Path = EASYBLOCK, **extra: str) -> Result:
        script = ('source /usr/share/lmod/lmod/init/bash\n'
                  'exec "$EB" "$@"\n')
        argv = ["bash", "--noprofile", "--norc", "-c", script, "eb",
                f"--prefix={self.prefix}", "--modules-tool=Lmod", f"--module-syntax={syntax}",
                f"--include-easyblocks={easyblock}", "--robot-paths=", *args]
        return run(argv, self.env(EB=self.easybuild.eb, **extra), cwd=str(self.work), timeout=300)

    def module_file(self, syntax: str = "Lua") -> Path:
        return self.prefix / "modules/all/MyEnv" / ("1.0.lua" if syntax == "Lua" else "1.0")


@pytest.fixture
def ebrun(easybuild, fake_stack, tmp_path) -> EbRun:
    return EbRun(easybuild, fake_stack, tmp_path)


def fake_env(installdir: Path, name: str = "MyEnv-1.0") -> EnvRecord:
    """What an earlier full build left: the venv's python and its record (module fields stale)."""
    (installdir / "bin").mkdir(parents=True)
    (installdir / "bin/python").symlink_to("/usr/bin/python3")
    (installdir / "pyvenv.cfg").write_text("home = /usr/bin\ninclude-system-site-packages = true\n")
    (installdir / "lib/python3.11/site-packages").mkdir(parents=True)
    record = EnvRecord(
        name=name, backend="venv", prefix=str(installdir),
        python=PythonRecord(version="3.11.2", executable="/central/bin/python3", module="Python/3.11.2"),
        module=ModuleRecord(name="stale/0", type="tcl", depends_on=[], files={"tcl": "/nowhere/stale"}),
        created=Provenance(at="2026-01-01T00:00:00Z", by="someone", host="h", envmod_version="0"),
        central_modules=[CentralModuleRecord(name="OpenMPI/4.1.4", kind="mpi")],
        packages=[PackageRecord(name="mpi4py", version="4.1.2", install="source", requested=True,
                                built_against=["OpenMPI/4.1.4"])],
        requested=["mpi4py"])
    write_record(record, installdir)
    return record


# ---- parameters ---------------------------------------------------------------------------------

def test_eb_avail_easyconfig_params_documents_the_custom_parameters(ebrun):
    out = ebrun.eb("-a", "-e", "UserEnv").check().stdout
    custom = out.split("EASYBLOCK-SPECIFIC", 1)[1].split("TOOLCHAIN", 1)[0]
    params = {line.split("*", 1)[0]: line for line in custom.splitlines() if "*" in line}
    assert sorted(params) == ["backend", "compile_against_stack", "conda_channels", "conda_packages", "envmod_register",
                              "packages", "requirements", "sanity_imports", "system_site_packages", "use_wheel_cache"]
    assert params["use_wheel_cache"].endswith("[default: True]")
    assert "envmod's build-rule table" in params["compile_against_stack"]
    assert params["system_site_packages"].endswith("[default: True]")
    assert params["backend"].endswith('[default: "venv"]')


# ---- module-only: the module EasyBuild writes, with envmod's extras ----------------------------

def test_module_only_writes_lua_module_with_dependencies_and_envmod_extras(ebrun):
    fake_env(ebrun.installdir)
    ebrun.eb(str(EXAMPLES / "MyEnv-1.0.eb"), "--module-only", "--force").check()
    text = ebrun.module_file().read_text()
    for dep in DEPS:
        assert f'depends_on("{dep}")' in text
    assert 'prepend_path("PATH", pathJoin(root, "bin"))' in text
    assert 'setenv("VIRTUAL_ENV", root)' in text
    assert 'setenv("PYTHONNOUSERSITE", "1")' in text
    assert 'setenv("ENVMOD_ENV", "MyEnv-1.0")' in text
    assert 'setenv("ENVMOD_RECORD", pathJoin(root, "envmod.yaml"))' in text
    assert 'family("envmod")' in text
    # a venv finds its own site-packages and reaches libraries through RPATHs
    for var in ("PYTHONPATH", "EBPYTHONPREFIXES", "LD_LIBRARY_PATH", "LIBRARY_PATH", "CPATH", "CMAKE_PREFIX_PATH"):
        assert f'"{var}"' not in text, var


def test_module_lists_the_envs_packages_as_a_python_bundle_does(ebrun, fake_stack):
    fake_env(ebrun.installdir)
    ebrun.eb(str(EXAMPLES / "MyEnv-1.0.eb"), "--module-only", "--force").check()
    text = ebrun.module_file().read_text()
    assert 'extensions("mpi4py/4.1.2")' in text
    assert 'setenv("EBEXTSLISTMYENV", "mpi4py-4.1.2")' in text
    script = (f"source /usr/share/lmod/lmod/init/bash\nmodule use {fake_stack} {ebrun.prefix}/modules/all\n"
              "module spider mpi4py/4.1.2 2>&1\n")
    out = run(["bash", "--noprofile", "--norc", "-c", script], ebrun.env(), timeout=60).check().stdout
    assert "MyEnv/1.0" in out, out


def test_module_only_keeps_the_record_in_step_and_registers_with_envmod(ebrun):
    fake_env(ebrun.installdir)
    ebrun.eb(str(EXAMPLES / "MyEnv-1.0.eb"), "--module-only", "--force").check()
    record = read_record(ebrun.installdir / "envmod.yaml")
    assert record.module.name == "MyEnv/1.0"
    assert record.module.type == "lmod"
    assert record.module.files == {"lmod": str(ebrun.module_file())}
    assert record.module.depends_on == list(DEPS)
    assert record.packages[0].built_against == ["OpenMPI/4.1.4"]      # the rest is untouched
    link = ebrun.envmod_root / "envs/MyEnv-1.0"
    assert link.is_symlink() and link.resolve() == ebrun.installdir.resolve()

    from bridge.config import load_settings
    from bridge.store.root import Store

    store = Store(load_settings({"ENVMOD_ROOT": str(ebrun.envmod_root), "HOME": str(ebrun.work)}))
    assert store.names() == ["MyEnv-1.0"]
    assert store.load("MyEnv-1.0").module.files["lmod"] == str(ebrun.module_file())


def test_check_of_a_registered_env_names_its_missing_module_and_how_easybuild_writes_it(ebrun, fake_stack):
    # `eb --rebuild` deletes the old module first: an interrupted one leaves the env without it.
    from bridge.check import check_stored
    from bridge.config import load_settings
    from bridge.discover.modsys import Lmod
    from bridge.store.root import Store

    fake_env(ebrun.installdir)
    ebrun.eb(str(EXAMPLES / "MyEnv-1.0.eb"), "--module-only", "--force").check()
    store = Store(load_settings({"ENVMOD_ROOT": str(ebrun.envmod_root), "HOME": str(ebrun.work)}))
    lmod = Lmod(os.environ.get("LMOD_CMD") or "/usr/share/lmod/lmod/libexec/lmod")
    environ = {"PATH": os.environ["PATH"], "HOME": str(ebrun.work), "MODULEPATH": str(fake_stack)}

    def own_module_findings():
        report = check_stored(store, "MyEnv-1.0", lmod, environ)
        assert report.unchecked is None, report.unchecked
        return [f for f in report.findings if f.code.startswith("own-module")], report

    found, report = own_module_findings()
    assert found == [] and report.checked["own modules"] == 1       # Lmod reads EasyBuild's module as ours
    ebrun.module_file().unlink()
    found, report = own_module_findings()
    (gone,) = found
    easyconfig = ebrun.installdir / "easybuild/MyEnv-1.0.eb"
    assert easyconfig.is_file()
    assert gone.code == "own-module-missing" and report.exit_code == 1
    assert f"'eb {easyconfig} --module-only --rebuild'" in gone.advice


def test_module_only_again_leaves_the_install_dir_alone(ebrun):
    fake_env(ebrun.installdir)
    marker = ebrun.installdir / "lib/python3.11/site-packages/marker.py"
    marker.write_text("x = 1\n")
    ebrun.eb(str(EXAMPLES / "MyEnv-1.0.eb"), "--module-only", "--force").check()
    first = ebrun.module_file().stat().st_mtime_ns
    result = ebrun.eb(str(EXAMPLES / "MyEnv-1.0.eb"), "--module-only", "--rebuild", "--skip-sanity-check").check()
    assert "COMPLETED" in result.stdout
    assert marker.read_text() == "x = 1\n"
    assert ebrun.module_file().stat().st_mtime_ns >= first


def with_another_env(ebrun: EbRun, fake_stack: Path, body: str) -> str:
    """stdout of ``body`` run in bash under Lmod with the fake stack, the module eb wrote and
    another envmod env (otherenv/py3.11, in family envmod) on MODULEPATH."""
    other = ebrun.work / "other-modules/otherenv/py3.11.lua"
    other.parent.mkdir(parents=True)
    other.write_text('family("envmod")\nsetenv("ENVMOD_ENV", "otherenv")\n')
    script = (f"source /usr/share/lmod/lmod/init/bash\n"
              f"module use {fake_stack} {ebrun.prefix}/modules/all {other.parent.parent}\n") + body
    return run(["bash", "--noprofile", "--norc", "-c", script], ebrun.env(), timeout=60).check().stdout


def test_module_only_tcl_has_envmods_family_guard(ebrun, fake_stack):
    fake_env(ebrun.installdir)
    ebrun.eb(str(EXAMPLES / "MyEnv-1.0.eb"), "--module-only", "--force", syntax="Tcl").check()
    text = ebrun.module_file("Tcl").read_text()
    # the guard is envmod's own (its conflict template), word for word
    from bridge.emit.modulefile import render_conflict

    assert render_conflict("tcl", "MyEnv-1.0") in text
    assert 'family "envmod"' in text and '$::env(ENVMOD_ENV) ne "MyEnv-1.0"' in text
    assert 'setenv\tVIRTUAL_ENV\t\t"$root"' in text
    assert 'setenv\tENVMOD_RECORD\t\t"$root/envmod.yaml"' in text
    for dep in DEPS:
        assert f"depends-on {dep}" in text
    assert read_record(ebrun.installdir / "envmod.yaml").module.type == "tcl"
    # Lmod reads the Tcl module: it loads, and the envmod family swaps another env out
    out = with_another_env(ebrun, fake_stack, """
module load otherenv/py3.11
module load MyEnv/1.0 2>&1
echo "loaded=$LOADEDMODULES env=$ENVMOD_ENV venv=$VIRTUAL_ENV"
""")
    assert f"loaded=Python/3.11.2:OpenMPI/4.1.4:HDF5/1.10.8:MyEnv/1.0 env=MyEnv-1.0 venv={ebrun.installdir}" in out


def test_module_loads_its_dependencies_in_lmod_and_swaps_envmod_envs(ebrun, fake_stack):
    fake_env(ebrun.installdir)
    ebrun.eb(str(EXAMPLES / "MyEnv-1.0.eb"), "--module-only", "--force").check()
    out = with_another_env(ebrun, fake_stack, """
module load MyEnv/1.0
echo "loaded=$LOADEDMODULES venv=$VIRTUAL_ENV nousersite=$PYTHONNOUSERSITE env=$ENVMOD_ENV"
module load otherenv/py3.11 2>&1
echo "after=$LOADEDMODULES env=$ENVMOD_ENV"
""")
    assert f"loaded=Python/3.11.2:OpenMPI/4.1.4:HDF5/1.10.8:MyEnv/1.0 venv={ebrun.installdir}" in out
    assert "nousersite=1 env=MyEnv-1.0" in out
    after = [line for line in out.splitlines() if line.startswith("after=")][0]
    assert "MyEnv/1.0" not in after and "otherenv/py3.11" in after and after.endswith("env=otherenv")


# ---- dry run ------------------------------------------------------------------------------------

def test_dry_run_prints_the_plan_and_writes_nothing(ebrun):
    out = ebrun.eb(str(EXAMPLES / "MyEnv-1.0.eb"), "-x").check().stdout
    assert "envmod: plan a venv environment over Python/3.11.2's python3" in out
    assert "mpi4py (against mpi), h5py (against hdf5)" in out
    assert f"envmod: create a venv environment in {ebrun.installdir}" in out
    assert "envmod: pip install mpi4py h5py" in out
    assert "python -c 'import mpi4py'" in out and "python -c 'import h5py'" in out
    assert 'depends_on("OpenMPI/4.1.4")' in out and 'family("envmod")' in out
    assert not ebrun.installdir.exists()
    assert not ebrun.module_file().exists()
    assert not ebrun.envmod_root.exists()


def test_dry_run_refuses_what_a_real_build_refuses_from_the_easyconfig(ebrun):
    # EasyBuild's dry run reports a step's error as a warning and ends in SUCCESS: these must fail.
    deps = str([(d.split("/")[0], d.split("/")[1]) for d in DEPS])
    no_hdf5 = write_ec(ebrun.work / "NoHDF5-1.0.eb", "[('Python', '3.11.2'), ('OpenMPI', '4.1.4')]",
                       "packages = ['mpi4py', 'h5py']\n")
    missing_file = write_ec(ebrun.work / "Missing-1.0.eb", deps, "requirements = ['nope.txt']\n")
    (ebrun.work / "reqs.txt").write_text("# analysis\nh5py>=3.10  # parallel\n")
    hdf5_in_file = write_ec(ebrun.work / "ReqHDF5-1.0.eb", "[('Python', '3.11.2'), ('OpenMPI', '4.1.4')]",
                            "requirements = ['reqs.txt']\n")
    for ec, message in [
            (no_hdf5, "h5py is compiled from source against the site's HDF5 (envmod's build rules), but no "
                      "dependency of MyEnv-1.0 provides one: add ('HDF5', '1.10.8') to dependencies"),
            (missing_file, "requirements file not found: nope.txt"),
            (hdf5_in_file, "h5py is compiled from source against the site's HDF5")]:
        result = ebrun.eb(str(ec), "-x")
        assert result.returncode != 0, result.output[-2000:]
        assert "[SUCCESS]" not in result.output
        assert message in " ".join(result.output.split())
    assert not ebrun.installdir.exists()


def test_dry_run_leaves_a_dependency_of_unknown_kind_to_the_real_build(ebrun, fake_stack):
    site_hdf5 = fake_stack / "site-h5/1.0.lua"
    site_hdf5.parent.mkdir(exist_ok=True)
    site_hdf5.write_text('setenv("HDF5_DIR", "/nowhere")\n')
    ec = write_ec(ebrun.work / "MyEnv-1.0.eb", "[('Python', '3.11.2'), ('OpenMPI', '4.1.4'), "
                  "('site-h5/1.0', EXTERNAL_MODULE)]", "packages = ['mpi4py', 'h5py']\n")
    try:
        assert "[SUCCESS]" in ebrun.eb(str(ec), "-x").check().output
    finally:
        site_hdf5.unlink()


def test_try_amend_sets_the_custom_parameters_and_sanity_imports_run_in_the_module(ebrun):
    # (EasyBuild 5.4.1 cannot combine --try-amend with -x: the tweaked easyconfig is not written in
    # a dry run, so this runs the module-only path, where the sanity check imports for real.)
    fake_env(ebrun.installdir)
    result = ebrun.eb(str(EXAMPLES / "MyEnv-1.0.eb"), "--module-only", "--rebuild",
                      "--try-amend=sanity_imports=json,email", "--try-amend=envmod_register=False").check()
    assert "running command 'python -c 'import json''" in result.stdout.replace('"', "'")
    assert "import email" in result.stdout
    assert "import mpi4py" not in result.stdout
    assert not (ebrun.envmod_root / "envs/MyEnv-1.0").exists()
    failed = ebrun.eb(str(EXAMPLES / "MyEnv-1.0.eb"), "--module-only", "--rebuild",
                      "--try-amend=sanity_imports=no_such_module_here")
    assert failed.returncode != 0
    assert "no_such_module_here" in failed.output and "Sanity check failed" in failed.output


# ---- errors a user can act on -------------------------------------------------------------------

def write_ec(path: Path, deps: str, extra: str = "") -> Path:
    path.write_text(textwrap.dedent(f"""\
        easyblock = 'UserEnv'
        name = 'MyEnv'
        version = '1.0'
        homepage = '(test)'
        description = "test"
        toolchain = SYSTEM
        dependencies = {deps}
        packages = ['mpi4py']
        """) + extra)
    return path


def test_no_python_dependency_is_refused_naming_one_to_add(ebrun):
    ec = write_ec(ebrun.work / "MyEnv-1.0.eb", "[('OpenMPI', '4.1.4')]")
    result = ebrun.eb(str(ec), "--module-only", "--force")
    assert result.returncode != 0
    assert "UserEnv needs the central Python among the dependencies: add one, e.g. ('Python', '3.11.2')" in result.output


def test_unknown_backend_is_refused_listing_the_known_ones(ebrun):
    result = ebrun.eb(str(EXAMPLES / "MyEnv-1.0.eb"), "--module-only", "--force", "--try-amend=backend=pipenv")
    assert result.returncode != 0
    assert "unknown backend 'pipenv'; available: conda, rattler, uv, venv" in result.output



def test_system_site_packages_false_is_refused_saying_why(ebrun):
    result = ebrun.eb(str(EXAMPLES / "MyEnv-1.0.eb"), "--module-only", "--force",
                      "--try-amend=system_site_packages=False")
    assert result.returncode != 0
    assert "system_site_packages = False is not supported yet" in result.output


def test_requirements_files_are_read_from_the_easyconfigs_directory(ebrun):
    deps = str([(d.split("/")[0], d.split("/")[1]) for d in DEPS])
    (ebrun.work / "reqs.txt").write_text("mpi4py\n")
    ec = write_ec(ebrun.work / "MyEnv-1.0.eb", deps, "requirements = ['reqs.txt']\n")
    assert "envmod: pip install mpi4py -r reqs.txt" in ebrun.eb(str(ec), "-x").check().stdout
    missing = write_ec(ebrun.work / "Missing-1.0.eb", deps, "requirements = ['nope.txt']\n")
    result = ebrun.eb(str(missing), "--stop=configure", "--force")
    assert result.returncode != 0
    assert (f"requirements file not found: nope.txt (relative paths are taken from the easyconfig's directory "
            f"{ebrun.work})") in " ".join(result.output.split())

def test_configure_names_only_what_it_compiles_and_the_wheel_cache_can_be_refused(ebrun):
    ec = write_ec(ebrun.work / "MyEnv-1.0.eb", str([(d.split("/")[0], d.split("/")[1]) for d in DEPS]),
                  "use_wheel_cache = False\n")
    out = " ".join(ebrun.eb(str(ec), "--stop=configure", "--force").check().stdout.split())
    assert ("compiled against the stack: mpi4py (against OpenMPI/4.1.4; MPICC=") in out
    assert "; also h5py, if a requested package requires it" in out
    assert "h5py (against" not in out
    assert "envmod: use_wheel_cache = False: no compiled wheel is reused" in out


def test_requirements_files_are_archived_with_the_easyconfig(ebrun):
    deps = str([(d.split("/")[0], d.split("/")[1]) for d in DEPS])
    (ebrun.work / "reqs.txt").write_text("mpi4py\n")
    (ebrun.work / "more").mkdir()
    (ebrun.work / "more/reqs.txt").write_text("# more\n")
    ec = write_ec(ebrun.work / "MyEnv-1.0.eb", deps, "requirements = ['reqs.txt', 'more/reqs.txt']\n")
    fake_env(ebrun.installdir)
    ebrun.eb(str(ec), "--module-only", "--force").check()
    archived = ebrun.installdir / "easybuild/reprod/requirements"
    assert (archived / "reqs.txt").read_text() == "mpi4py\n"
    assert (archived / "1-reqs.txt").read_text() == "# more\n"
    assert (ebrun.installdir / "easybuild/reprod/MyEnv-1.0.eb").is_file()


def test_remove_of_a_registered_env_only_unregisters_and_says_so(ebrun):
    fake_env(ebrun.installdir)
    ebrun.eb(str(EXAMPLES / "MyEnv-1.0.eb"), "--module-only", "--force").check()
    envmod = [sys.executable, "-m", "bridge"]
    env = {**os.environ, "ENVMOD_ROOT": str(ebrun.envmod_root), "HOME": str(ebrun.work)}
    # the prompt, on a terminal (script(1) gives the command one), answered "no"
    asked = subprocess.run(["script", "-qec", shlex.join(envmod + ["remove", "MyEnv-1.0"]), "/dev/null"],
                           input="n\n", capture_output=True, text=True, env=env, timeout=60)
    target = os.path.realpath(ebrun.installdir)
    assert (f"unregister environment 'MyEnv-1.0' (only the link to {target}: the tool that built it keeps its "
            "files and module)? [y/N]") in asked.stdout, asked.stdout
    done = subprocess.run(envmod + ["remove", "MyEnv-1.0", "--yes"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (f"unregistered MyEnv-1.0: its install at {target} and the module written with it "
                                   "are untouched (EasyBuild built it: remove them there)")
    assert (ebrun.installdir / "envmod.yaml").is_file() and ebrun.module_file().is_file()
    assert not (ebrun.envmod_root / "envs/MyEnv-1.0").is_symlink()


def test_registering_a_name_another_install_had_says_so(ebrun, easybuild, fake_stack, tmp_path):
    fake_env(ebrun.installdir)
    ebrun.eb(str(EXAMPLES / "MyEnv-1.0.eb"), "--module-only", "--force").check()
    again = EbRun(easybuild, fake_stack, tmp_path / "second")
    again.work.mkdir()
    again.envmod_root = ebrun.envmod_root
    fake_env(again.installdir)
    out = " ".join(again.eb(str(EXAMPLES / "MyEnv-1.0.eb"), "--module-only", "--force").check().output.split())
    assert (f"envmod: MyEnv-1.0 was registered to another install, {os.path.realpath(ebrun.installdir)}; it now "
            f"names this one ({os.path.realpath(again.installdir)})") in out
    quiet = " ".join(again.eb(str(EXAMPLES / "MyEnv-1.0.eb"), "--module-only", "--force").check().output.split())
    assert "was registered to another install" not in quiet


def test_library_not_importable_says_how_to_make_it_so(ebrun, tmp_path):
    empty = tmp_path / "not-envmod"
    empty.mkdir()
    result = ebrun.eb(str(EXAMPLES / "MyEnv-1.0.eb"), "--module-only", "--force", ENVMOD_LIBRARY=str(empty))
    assert result.returncode != 0
    assert "UserEnv cannot import envmod's library" in result.output
    assert "set $ENVMOD_LIBRARY to an envmod checkout" in result.output
    assert str(empty) in result.output


def stock_easybuild_python(easybuild: EasyBuild, where: Path) -> Path:
    """A Python that runs the same EasyBuild but has none of envmod's dependencies: a venv (no
    system site-packages) holding only EasyBuild's own packages, as 'pip install easybuild' makes."""
    venv = where / "stock-eb"
    subprocess.run([easybuild.python, "-c", "import sys, venv; venv.create(sys.argv[1], with_pip=False)",
                    str(venv)], check=True)
    site = next(venv.glob("lib/python3*/site-packages"))
    eb_site = Path(subprocess.run([easybuild.python, "-c", "import easybuild, os; "
                                   "print(os.path.dirname(os.path.dirname(easybuild.__file__)))"],
                                  check=True, capture_output=True, text=True).stdout.strip())
    for entry in eb_site.glob("easybuild*"):
        (site / entry.name).symlink_to(entry)
    python = venv / "bin/python"
    assert subprocess.run([python, "-c", "import easybuild.main"]).returncode == 0
    assert subprocess.run([python, "-c", "import yaml"], capture_output=True).returncode != 0
    return python


def test_library_without_its_dependencies_is_a_clear_error_naming_the_pip_install(ebrun, tmp_path):
    python = stock_easybuild_python(ebrun.easybuild, tmp_path)
    for args in (["--module-only", "--force"], ["-x"]):
        result = ebrun.eb(str(EXAMPLES / "MyEnv-1.0.eb"), *args, EB_PYTHON=str(python))
        assert result.returncode != 0
        assert "EasyBuild crashed" not in result.output and "Traceback" not in result.output, result.output
        text = " ".join(result.output.split())
        assert (f"UserEnv cannot use envmod's library at {REPO / 'src' / 'bridge'}: the Python running EasyBuild "
                f"({python}) lacks its dependencies jinja2>=3.0, pyyaml>=5.4, packaging>=21, archspec>=0.2: install "
                f"them with: {python} -m pip install 'jinja2>=3.0' 'pyyaml>=5.4' 'packaging>=21' 'archspec>=0.2'") in text, text


def test_the_easyblocks_list_of_library_dependencies_is_pyprojects():
    import ast

    import tomllib

    tree = ast.parse(EASYBLOCK.read_text())
    listed = next(ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
                  and getattr(node.targets[0], "id", "") == "LIBRARY_DEPENDENCIES")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert [req for _module, req in listed] == [d for d in project if ";" not in d]


def test_library_older_than_the_easyblock_is_named(ebrun, tmp_path):
    old = tmp_path / "old-envmod/src"
    shutil.copytree(REPO / "src", old, ignore=shutil.ignore_patterns("__pycache__"))
    evidence = old / "bridge/scan/evidence.py"
    evidence.write_text(evidence.read_text().replace("def check_declared_modules(", "def _not_yet_written("))
    result = ebrun.eb(str(EXAMPLES / "MyEnv-1.0.eb"), "--module-only", "--force", ENVMOD_LIBRARY=str(old))
    assert result.returncode != 0
    assert (f"UserEnv cannot import envmod's library: the envmod library at {old}/bridge is older than this "
            "easyblock (it lacks evidence.check_declared_modules)") in result.output


# ---- EXTERNAL_MODULE dependencies with metadata --------------------------------------------------

@pytest.fixture
def external_stack(tmp_path_factory) -> tuple[Path, Path]:
    """Hand-written site modules EasyBuild did not build, as EXTERNAL_MODULE dependencies use
    them, and the metadata file that tells EasyBuild what they are and where they live.

    sitepy/3.11 and sitempi/4.1 put nothing on PATH and set no prefix variable: envmod learns
    their kind and prefix only from the metadata (the Python a symlink to the machine's own,
    the MPI Debian's Open MPI in /usr). hdf5/1.10.8 loads openmpi/4.1.4 itself."""
    base = tmp_path_factory.mktemp("external-stack")
    python_prefix, hdf5_prefix = base / "software/sitepy", base / "software/hdf5"
    (python_prefix / "bin").mkdir(parents=True)
    (python_prefix / "bin/python3").symlink_to("/usr/bin/python3")
    (hdf5_prefix / "include").mkdir(parents=True)
    modules = base / "modules"
    texts = {
        "sitepy/3.11": 'setenv("SITEPY_MODULE", "3.11")\n',
        "sitempi/4.1": 'setenv("SITEMPI_MODULE", "4.1")\n',
        "openmpi/4.1.4": 'setenv("MPI_HOME", "/usr")\n',
        "hdf5/1.10.8": f'depends_on("openmpi/4.1.4")\nsetenv("HDF5_DIR", "{hdf5_prefix}")\nsetenv("HDF5_MPI", "ON")\n',
    }
    for name, text in texts.items():
        (modules / name).parent.mkdir(parents=True, exist_ok=True)
        (modules / f"{name}.lua").write_text(text)
    metadata = base / "external-modules.cfg"
    metadata.write_text(textwrap.dedent(f"""\
        [sitepy/3.11]
        name = Python
        version = 3.11.2
        prefix = {python_prefix}

        [sitempi/4.1]
        name = OpenMPI
        version = 4.1.4
        prefix = /usr

        [hdf5/1.10.8]
        name = HDF5
        version = 1.10.8
        prefix = {hdf5_prefix}
        """))
    return modules, metadata


@pytest.fixture
def extrun(easybuild, external_stack, tmp_path) -> EbRun:
    return EbRun(easybuild, external_stack[0], tmp_path)


EXTERNAL_DEPS = "[('sitepy/3.11', EXTERNAL_MODULE), ('sitempi/4.1', EXTERNAL_MODULE)]"


def test_external_modules_with_metadata_are_the_stack(extrun, external_stack):
    ec = write_ec(extrun.work / "MyEnv-1.0.eb", EXTERNAL_DEPS)
    metadata = f"--external-modules-metadata={external_stack[1]}"
    # the module loads the external modules by their own names
    fake_env(extrun.installdir)
    extrun.eb(str(ec), metadata, "--module-only", "--force", "--skip-sanity-check").check()
    text = extrun.module_file().read_text()
    assert 'depends_on("sitepy/3.11")' in text and 'depends_on("sitempi/4.1")' in text
    assert read_record(extrun.installdir / "envmod.yaml").module.depends_on == ["sitepy/3.11", "sitempi/4.1"]
    # the plan: the metadata says which is the Python (its prefix gives python3) and which the
    # MPI (its prefix gives mpicc), and the Python's module is recorded as the env's Python
    shutil.rmtree(extrun.installdir)
    out = extrun.eb(str(ec), metadata, "--stop=configure", "--force").check().stdout
    assert "envmod: venv over sitepy/3.11 (Python 3." in out
    assert ("compiled against the stack: mpi4py (against sitempi/4.1; MPICC=/usr/bin/mpicc); also h5py, if a "
            "requested package requires it") in " ".join(out.split())
    # without the metadata EasyBuild knows no prefix: nothing says which module is the Python
    failed = extrun.eb(str(ec), "--stop=configure", "--force")
    assert failed.returncode != 0
    assert "UserEnv needs the central Python among the dependencies" in failed.output


def test_external_module_loaded_only_through_another_is_named_as_external(extrun, external_stack):
    ec = write_ec(extrun.work / "MyEnv-1.0.eb", "[('sitepy/3.11', EXTERNAL_MODULE), ('hdf5/1.10.8', EXTERNAL_MODULE)]",
                  "packages = ['h5py']\n")
    result = extrun.eb(str(ec), f"--external-modules-metadata={external_stack[1]}", "--stop=configure", "--force")
    assert result.returncode != 0
    assert ("MyEnv-1.0 uses central modules that are not among its dependencies: openmpi/4.1.4 (h5py is compiled "
            "against it). Add to dependencies: ('openmpi/4.1.4', EXTERNAL_MODULE)") in result.output


# ---- the easyblock's library: compile_against_stack, dependency specs -------------------------------

def test_compile_against_stack_goes_through_the_library(ebrun):
    # (an easyconfig of its own: EasyBuild 5.4.1 cannot combine --try-amend with -x)
    ec = write_ec(ebrun.work / "MyEnv-1.0.eb", str([(d.split("/")[0], d.split("/")[1]) for d in DEPS]),
                  "compile_against_stack = ['mpi4py', 'cffi']\n")
    out = ebrun.eb(str(ec), "-x").check().stdout
    assert "envmod: compiled from source against the stack, when requested: mpi4py (against mpi), cffi" in out
    bad = write_ec(ebrun.work / "Bad-1.0.eb", "[('Python', '3.11.2')]", "compile_against_stack = ['h5py>=3']\n")
    result = ebrun.eb(str(bad), "--module-only", "--force")
    assert result.returncode != 0
    assert "easyconfig parameter 'compile_against_stack': 'h5py>=3' is not a package name" in result.output


def eb_python(easybuild: EasyBuild, code: str, work: Path) -> dict:
    """Run ``code`` under EasyBuild's Python with the easyblock imported as ``ub``; it prints JSON."""
    prelude = textwrap.dedent(f"""\
        import importlib.util, json, sys
        sys.path.insert(0, {str(REPO / 'src')!r})
        spec = importlib.util.spec_from_file_location('userenv', {str(EASYBLOCK)!r})
        ub = importlib.util.module_from_spec(spec); spec.loader.exec_module(ub)
        """)
    proc = subprocess.run([easybuild.python, "-c", prelude + textwrap.dedent(code)], capture_output=True, text=True,
                          cwd=str(work), timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_dependency_specs(easybuild, tmp_path):
    out = eb_python(easybuild, """
        print(json.dumps([ub.dependency_spec('OpenMPI/4.1.4'), ub.dependency_spec('openmpi/4.1.4', external=True),
                          ub.dependency_spec('openmpi')]))
        """, tmp_path)
    assert out == ["('OpenMPI', '4.1.4')", "('openmpi/4.1.4', EXTERNAL_MODULE)", "('openmpi', EXTERNAL_MODULE)"]
