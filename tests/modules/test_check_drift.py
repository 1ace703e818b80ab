"""``envmod check`` against drift made for real on a copy of the ci site's modules.

An env with mpi4py compiled against the site's openmpi/4.1.4 is created once (under Lmod, over a
copy of the site's module tree, so /opt/envmod-site itself is never touched; its mpi4py is the
run's compiled build, conftest's ``compiled_env``, reused from the wheel cache). Each test then
does what site maintenance does to the copy -- retire a module, put MPICH behind the name
openmpi/4.1.4 had, move the Python, add a central package on PYTHONPATH -- and checks the env
with the real Lmod and the real Environment Modules. Where it can, a test also asks the real
loader / interpreter, with the env's module loaded, whether the report tells the truth.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.conftest import ModuleShell, require_site, site_dir

from bridge.check import CheckReport, check_env, format_report
from bridge.discover.modsys import detect_module_system
from bridge.scan.evidence import format_evidence, required_modules
from bridge.store.record import EnvRecord, read_record

pytestmark = [pytest.mark.modules, pytest.mark.slow]

SYNTAX = {"lmod": "lua", "envmodules": "tcl"}
MULTIARCH = "/usr/lib/x86_64-linux-gnu"
MPI_EXT = "mpi4py/MPI.cpython-311-x86_64-linux-gnu.so"


@dataclass
class Drift:
    base: Path
    pristine: Path          # the copied module tree, never changed
    live: Path              # the copy the tests change (restored after each test)
    root: Path              # ENVMOD_ROOT
    record: EnvRecord       # the mpi4py env, as created under Lmod

    def shell(self, system: str) -> ModuleShell:
        return ModuleShell(system, self.root, self.base / "cache")

    def environ(self, system: str, tree: Path | None = None) -> dict[str, str]:
        """A user's shell with ``system`` initialised and only the copied tree on MODULEPATH."""
        return self.shell(system).environment(f"export MODULEPATH={tree or self.live}/{SYNTAX[system]}")

    def modulefile(self, system: str, name: str, tree: Path | None = None) -> Path:
        return (tree or self.live) / SYNTAX[system] / (name + (".lua" if system == "lmod" else ""))

    def edit(self, name: str, old: str, new: str, tree: Path | None = None) -> None:
        for system in SYNTAX:
            path = self.modulefile(system, name, tree)
            text = path.read_text()
            assert old in text, (path, old)
            path.write_text(text.replace(old, new))

    def append(self, name: str, lua: str, tcl: str) -> None:
        for system, line in (("lmod", lua), ("envmodules", tcl)):
            path = self.modulefile(system, name)
            path.write_text(path.read_text() + line + "\n")


def as_created_under(record: EnvRecord, system: str, lua_tree: Path, tcl_tree: Path) -> EnvRecord:
    """The same env as if created under Environment Modules: its modulefiles are the Tcl ones."""
    if system == "lmod":
        return record
    other = copy.deepcopy(record)
    for m in other.central_modules:
        if m.modulefile and m.modulefile.startswith(str(lua_tree)):
            rel = os.path.relpath(m.modulefile, lua_tree)
            m.modulefile = str(tcl_tree / rel[:-4] if rel.endswith(".lua") else tcl_tree / rel)
    return other


@pytest.fixture(scope="module")
def drift(tmp_path_factory, compiled_env) -> Drift:
    require_site()
    base = tmp_path_factory.mktemp("drift")
    pristine = base / "pristine-modules"
    shutil.copytree(site_dir() / "modules", pristine, symlinks=True)
    live = base / "modules"
    shutil.copytree(pristine, live, symlinks=True)
    root = base / "envmod-root"
    root.mkdir()
    shell = ModuleShell("lmod", root, base / "cache")
    shell.run(f"""
export MODULEPATH={live}/lua
module load python/3.11 openmpi/4.1.4
$ENVMOD create mpienv --with mpi4py -q
$ENVMOD module mpienv --module-type tcl
""", timeout=1700, extra_env={"ENVMOD_WHEEL_CACHE": str(compiled_env.wheels)}).check()
    return Drift(base, pristine, live, root, read_record(root / "envs/mpienv/envmod.yaml"))


@pytest.fixture
def site(drift: Drift):
    yield drift
    shutil.rmtree(drift.live)
    shutil.copytree(drift.pristine, drift.live, symlinks=True)


def check(drift: Drift, system: str, record: EnvRecord | None = None) -> CheckReport:
    environ = drift.environ(system)
    rec = as_created_under(record or drift.record, system, drift.live / "lua", drift.live / "tcl")
    report = check_env(rec, detect_module_system(environ), environ)
    print(format_report(report))
    return report


def by_code(report: CheckReport) -> dict[str, list]:
    out: dict[str, list] = {}
    for f in report.findings:
        out.setdefault(f.code, []).append(f)
    return out


def mapped_libmpi(drift: Drift, system: str) -> str:
    """Which libmpi the real interpreter maps importing mpi4py.MPI with the env's module loaded."""
    script = f"""
export MODULEPATH={drift.live}/{SYNTAX[system]}
module use "$ENVMOD_ROOT/modules"
module load {drift.record.module.name}
python -c 'import mpi4py.MPI; print("\\n".join(sorted({{l.split()[-1] for l in open("/proc/self/maps") if "libmpi" in l}})))'
"""
    out = drift.shell(system).run(script).check().stdout
    return next(line for line in out.splitlines() if "/libmpi.so" in line)


# ---------------------------------------------------------------------------------------------


def test_evidence_of_the_real_env(drift: Drift) -> None:
    # What `envmod create` recorded: the evidence, and the modules it makes the env's module load.
    assert drift.record.module.depends_on == ["python/3.11", "openmpi/4.1.4"]
    links = drift.record.links
    mpi_lib = str(site_dir() / "software/openmpi/4.1.4/lib")
    direct = {e.needs: e for e in links if e.file.endswith(MPI_EXT) and e.via is None}
    assert direct["libmpi.so.40"].provider == "openmpi/4.1.4"
    assert direct["libmpi.so.40"].path == f"{mpi_lib}/libmpi.so.40"
    assert direct["libmpi.so.40"].sha256
    assert direct["libc.so.6"].provider == "system"
    indirect = {e.needs: e for e in links if e.via == "libmpi.so.40"}
    assert indirect["libopen-rte.so.40"].provider == "openmpi/4.1.4"
    assert f"{MPI_EXT} → libmpi.so.40 → openmpi/4.1.4" in format_evidence(links, drift.record.requirements)
    order = [m.name for m in drift.record.central_modules]
    assert required_modules(links, drift.record.requirements, drift.record.python.module, order) == \
        ["python/3.11", "openmpi/4.1.4"]
    # The evidence agrees with the real interpreter under the env's module.
    assert os.path.realpath(mapped_libmpi(drift, "lmod")) == os.path.realpath(direct["libmpi.so.40"].path)


@pytest.mark.parametrize("system", SYNTAX)
def test_unchanged_site_is_healthy(site: Drift, system: str) -> None:
    report = check(site, system)
    assert report.problems == [] and report.exit_code == 0
    assert report.checked["modules"] == 2 and report.checked["files"] >= 1


@pytest.mark.parametrize("system", SYNTAX)
def test_retired_module(site: Drift, system: str) -> None:
    for s in SYNTAX:
        site.modulefile(s, "openmpi/4.1.4").unlink()
    report = check(site, system)
    found = by_code(report)
    assert report.exit_code == 1
    (missing,) = found["module-missing"]
    assert missing.what == "module openmpi/4.1.4" and missing.severity == "error"
    # Without the module, libmpi.so.40 comes from the ld.so cache: Debian's, not the site's.
    (moved,) = found["library-provider-changed"]
    assert moved.what == "library libmpi.so.40"
    assert "now comes from a system directory" in moved.detail and "openmpi/4.1.4 is not available" in moved.detail


@pytest.fixture(scope="module")
def mpich(drift: Drift) -> Path:
    """Debian's MPICH presented as a site install (file symlinks, as ci/site.sh wraps Open MPI),
    with the libmpi.so.12 names an upstream MPICH install has."""
    real = Path(MULTIARCH) / "libmpich.so.12"
    if not real.exists():
        reason = "needs Debian's MPICH (apt-get install libmpich-dev; ci/setup.sh does)"
        if os.environ.get("ENVMOD_REQUIRE_SITE") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    prefix = drift.base / "software/mpich/4.0.2"
    (prefix / "lib").mkdir(parents=True)
    target = os.path.realpath(real)
    for name in ("libmpich.so.12", "libmpich.so", "libmpi.so.12", "libmpi.so"):
        (prefix / "lib" / name).symlink_to(target)
    (prefix / "bin").mkdir()
    for tool in ("mpicc", "mpiexec"):
        if os.path.exists(f"/usr/bin/{tool}.mpich"):
            (prefix / "bin" / tool).symlink_to(f"/usr/bin/{tool}.mpich")
    return prefix


@pytest.mark.parametrize("system", SYNTAX)
def test_mpich_behind_the_openmpi_name(site: Drift, mpich: Path, system: str) -> None:
    site.edit("openmpi/4.1.4", str(site_dir() / "software/openmpi/4.1.4"), str(mpich))
    report = check(site, system)
    found = by_code(report)
    assert report.exit_code == 1
    (prefix,) = found["module-prefix-changed"]
    assert str(mpich) in prefix.detail and prefix.severity == "warning"
    (lib,) = found["library-provider-changed"]
    assert lib.what == "library libmpi.so.40" and lib.severity == "error"
    assert "openmpi/4.1.4 now provides libmpi.so.12 instead" in lib.detail
    assert lib.files == [f"lib/python3.11/site-packages/{MPI_EXT}"]
    # The truth: under the env's module, mpi4py now maps Debian's Open MPI from the ld.so cache,
    # next to an mpiexec that is MPICH's -- the path the report names.
    now = lib.detail.split("now comes from a system directory (", 1)[1].split(")", 1)[0]
    assert os.path.realpath(mapped_libmpi(site, system)) == os.path.realpath(now)


@pytest.mark.parametrize("system", SYNTAX)
def test_central_package_shadows_the_envs(site: Drift, system: str) -> None:
    central = site.base / "central-pylibs"
    if not central.exists():
        (central / "mpi4py").mkdir(parents=True)
        (central / "mpi4py/__init__.py").write_text("__version__ = '3.1.4'\n")
        meta = central / "mpi4py-3.1.4.dist-info"
        meta.mkdir()
        (meta / "METADATA").write_text("Metadata-Version: 2.1\nName: mpi4py\nVersion: 3.1.4\n")
    site.append("python/3.11", f'prepend_path("PYTHONPATH", "{central}")', f"prepend-path PYTHONPATH {central}")
    report = check(site, system)
    (shadow,) = by_code(report)["package-shadowed"]
    assert "mpi4py 3.1.4" in shadow.detail and "hides the mpi4py 4.1" in shadow.detail
    assert report.exit_code == 1
    out = site.shell(system).run(f"""
export MODULEPATH={site.live}/{SYNTAX[system]}
module use "$ENVMOD_ROOT/modules"
module load {site.record.module.name}
python -c 'import mpi4py; print("VERSION", mpi4py.__version__)'
""").check().stdout
    assert "VERSION 3.1.4" in out


@pytest.fixture(scope="module")
def movable(drift: Drift):
    """A copy of the site's Python (hard links) with its own python/3.11 module, and a plain env over it."""
    src = site_dir() / "software/python/3.11.2"
    prefix = drift.base / "pysite/software/python/3.11.2"
    prefix.parent.mkdir(parents=True)
    if subprocess.run(["cp", "-al", str(src), str(prefix)], capture_output=True).returncode != 0:
        shutil.rmtree(prefix, ignore_errors=True)
        shutil.copytree(src, prefix, symlinks=True)
    tree = drift.base / "pysite/modules"
    for syntax, name in (("lua", "python/3.11.lua"), ("tcl", "python/3.11")):
        (tree / syntax / "python").mkdir(parents=True)
        text = (drift.pristine / syntax / name).read_text().replace(str(src), str(prefix))
        (tree / syntax / name).write_text(text)
    shell = drift.shell("lmod")
    shell.run(f"""
export MODULEPATH={tree}/lua
module load python/3.11
$ENVMOD create plain -q
""").check()
    record = read_record(drift.root / "envs/plain/envmod.yaml")
    assert record.python.executable == str(prefix / "bin/python3")
    return prefix, tree, record


@pytest.mark.parametrize("system", SYNTAX)
def test_python_moved(drift: Drift, movable, system: str) -> None:
    prefix, tree, record = movable
    moved = prefix.with_name("3.11.2-moved")
    environ = drift.environ(system, tree)
    rec = as_created_under(record, system, tree / "lua", tree / "tcl")
    assert check_env(rec, detect_module_system(environ), environ).exit_code == 0
    prefix.rename(moved)
    drift.edit("python/3.11", str(prefix), str(moved), tree)
    try:
        report = check_env(rec, detect_module_system(environ), environ)
        print(format_report(report))
        (gone,) = by_code(report)["python-missing"]
        assert gone.severity == "error" and str(prefix / "bin/python3") in gone.detail
        assert f"python/3.11 now provides {moved}/bin/python3" in gone.advice
        assert report.exit_code == 1
        # The truth: the env's python is a dangling link now; it cannot start.
        with pytest.raises(FileNotFoundError):
            subprocess.run([f"{record.prefix}/bin/python", "-c", "pass"], capture_output=True)
    finally:
        moved.rename(prefix)
        drift.edit("python/3.11", str(moved), str(prefix), tree)
