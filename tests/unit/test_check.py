"""bridge.check: an env's record re-verified against a (small, real) site that drifts.

The site is built in tmp_path: libraries compiled with gcc, modulefiles written for and shown by
the real Lmod and the real Environment Modules, an env whose extension module links the site's
MPI (libfakempi: a name no system directory has, so nothing but the site can provide it). Each test changes one thing the way site maintenance does and reads the report.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_evidence import GCC, IS_LINUX_X86_64, PYTHON, dist, ext, lib, make_env
from test_modsys import lmod_command, modulecmd_tcl, tool_env, write

from bridge.check import (
    CheckReport,
    Finding,
    check_env,
    combined_exit_code,
    format_report,
    query_module,
)
from bridge.discover.modsys import EnvironmentModules, Lmod, ModuleSystem
from bridge.discover.pyinfo import interrogate
from bridge.scan.evidence import scan_links, scan_requirements
from bridge.store.record import (
    CentralModuleRecord,
    EnvRecord,
    ModuleRecord,
    Provenance,
    PythonRecord,
    read_record,
    write_record,
)

pytestmark = pytest.mark.skipif(not (GCC and IS_LINUX_X86_64), reason="needs gcc on x86_64 Linux")

def modulefile_text(syntax: str, prepend: dict[str, str], setenv: dict[str, str]) -> str:
    if syntax == "lua":
        return "".join(f'prepend_path("{k}", "{v}")\n' for k, v in prepend.items()) + \
            "".join(f'setenv("{k}", "{v}")\n' for k, v in setenv.items())
    return "#%Module1.0\n" + "".join(f"prepend-path {k} {v}\n" for k, v in prepend.items()) + \
        "".join(f"setenv {k} {v}\n" for k, v in setenv.items())


@dataclass
class Site:
    """A tmp site, its module tree for one tool, and an env made over it."""

    root: Path
    syntax: str
    tree: Path
    system: ModuleSystem
    environ: dict[str, str]
    env: Path
    record: EnvRecord | None = None

    def modulefile(self, name: str) -> Path:
        return self.tree / (name + (".lua" if self.syntax == "lua" else ""))

    def write_module(self, name: str, prepend: dict[str, str], setenv: dict[str, str] | None = None,
                     tree: Path | None = None) -> Path:
        path = (tree or self.tree) / (name + (".lua" if self.syntax == "lua" else ""))
        return write(path, modulefile_text(self.syntax, prepend, setenv or {}))

    def check(self) -> CheckReport:
        report = check_env(self.record, self.system, self.environ)
        json.dumps(report.to_dict())                # always serialisable
        return report


def codes(report: CheckReport) -> dict[str, list[Finding]]:
    out: dict[str, list[Finding]] = {}
    for f in report.findings:
        out.setdefault(f.code, []).append(f)
    return out


@pytest.fixture(params=["lmod", "envmodules"])
def site(request, tmp_path: Path) -> Site:
    syntax = "lua" if request.param == "lmod" else "tcl"
    system = Lmod(lmod_command()) if request.param == "lmod" else EnvironmentModules(modulecmd_tcl())
    root = tmp_path / "site"
    tree = root / "modules" / syntax
    tree.mkdir(parents=True)
    environ = tool_env(tmp_path, tree)
    # The central Python: a prefix whose bin/python3 is the interpreter running these tests.
    py_prefix = root / "software/python/3.11"
    (py_prefix / "bin").mkdir(parents=True)
    (py_prefix / "bin/python3").symlink_to(PYTHON)
    pylibs = root / "software/pylibs/1/site-packages"
    dist(pylibs, "envmodtest-core", "2.0")
    mpi = root / "software/openmpi/4.1.4"
    lib(mpi / "lib", "libfakempi.so.40", symbol="f_mpi")
    s = Site(root, syntax, tree, system, environ, tmp_path / "env")
    s.write_module("python/3.11", {"PATH": f"{py_prefix}/bin", "PYTHONPATH": str(pylibs)},
                   {"PYTHON_ROOT": str(py_prefix)})
    s.write_module("openmpi/4.1.4", {"PATH": f"{mpi}/bin", "LD_LIBRARY_PATH": f"{mpi}/lib"},
                   {"MPI_HOME": str(mpi), "OPENMPI_ROOT": str(mpi)})
    # The env: an extension module linking the site's libmpi, a package requiring a central one.
    env, sp = make_env(s.env)
    ext(sp, "mpi4py/MPI.cpython-311-x86_64-linux-gnu.so", [(mpi / "lib", "libfakempi.so.40")])
    dist(sp, "mpi4py", "4.1.2")
    dist(sp, "envmodtest-app", "1.0", ["envmodtest-core>=1.5"])
    s.record = make_record(s, ["python/3.11", "openmpi/4.1.4"])
    return s


def make_record(s: Site, names: list[str]) -> EnvRecord:
    """What `envmod create` records: the modules as the tool shows them, and the evidence."""
    modules = [query_module(s.system, n, s.environ).module for n in names]
    python = str(s.root / "software/python/3.11/bin/python3")
    info = interrogate(python)
    record = EnvRecord(
        name="drifty", backend="venv", prefix=str(s.env),
        python=PythonRecord(version=info.version, executable=python, module="python/3.11"),
        module=ModuleRecord(name="drifty/py3.11", type="lmod", depends_on=list(names)),
        created=Provenance(at="2026-01-01T00:00:00Z", by="u", host="h", envmod_version="0"),
        central_modules=[CentralModuleRecord(name=m.name, kind=m.kind, modulefile=m.modulefile, version=m.version,
                                             prefix=m.prefix, facts=dict(m.facts)) for m in modules],
        links=scan_links(s.env, modules, python),
        requirements=scan_requirements(s.env, modules, info))
    write_record(record)
    return read_record(record.path)      # what check reads: the record as stored


# ---------------------------------------------------------------------------------------------


def test_fresh_env_is_healthy(site: Site) -> None:
    assert {e.provider for e in site.record.links} == {"openmpi/4.1.4", "system"}
    assert [(r.package, r.provider) for r in site.record.requirements] == [("envmodtest-app", "python/3.11")]
    report = site.check()
    assert report.findings == [] and report.status == "healthy" and report.exit_code == 0
    assert report.checked["modules"] == 2 and report.checked["files"] == 1
    assert format_report(report).startswith("drifty: healthy (2 modules, ")


def test_hidden_module(site: Site) -> None:
    site.modulefile("openmpi/4.1.4").rename(site.root / "retired")
    report = site.check()
    found = codes(report)
    assert report.exit_code == 1
    (missing,) = found["module-missing"]
    assert missing.severity == "error" and missing.what == "module openmpi/4.1.4"
    assert "envmod rebuild drifty" in missing.advice
    (lib_finding,) = found["library-missing"]
    assert lib_finding.what == "library libfakempi.so.40" and "openmpi/4.1.4 is not available" in lib_finding.detail
    assert lib_finding.files == ["lib/python3.11/site-packages/mpi4py/MPI.cpython-311-x86_64-linux-gnu.so"]
    text = format_report(report)
    assert "error   module openmpi/4.1.4: no longer available" in text and "→ " in text


def test_hidden_module_offers_what_the_site_has_now(site: Site) -> None:
    new = site.root / "software/openmpi/5.0.3"
    lib(new / "lib", "libfakempi.so.40", symbol="f_mpi", value=5)
    site.modulefile("openmpi/4.1.4").rename(site.root / "retired")
    site.write_module("openmpi/5.0.3", {"LD_LIBRARY_PATH": f"{new}/lib"}, {"OPENMPI_ROOT": str(new)})
    (missing,) = codes(site.check())["module-missing"]
    assert "the site now has openmpi/5.0.3" in missing.advice


def test_other_mpi_behind_the_same_name(site: Site) -> None:
    # Maintenance put an MPICH (libfakempi.so.12) behind the name openmpi/4.1.4.
    mpich = site.root / "software/mpich/4.0"
    lib(mpich / "lib", "libfakempi.so.12", symbol="f_mpi")
    site.write_module("openmpi/4.1.4", {"LD_LIBRARY_PATH": f"{mpich}/lib"}, {"MPI_HOME": str(mpich)})
    report = site.check()
    found = codes(report)
    (prefix,) = found["module-prefix-changed"]
    assert str(mpich) in prefix.detail
    (lib_finding,) = found["library-missing"]
    assert "openmpi/4.1.4" in lib_finding.detail and lib_finding.severity == "error"
    assert report.exit_code == 1


def test_provider_change_names_what_the_module_provides_now(site: Site) -> None:
    # The module now holds libfakempi.so.12, while libfakempi.so.40 is still found, elsewhere.
    mpich = site.root / "software/mpich/4.0"
    lib(mpich / "lib", "libfakempi.so.12", symbol="f_mpi")
    old = site.root / "software/openmpi/4.1.4/lib"
    elsewhere = site.root / "leftovers"
    shutil.copytree(old, elsewhere, symlinks=True)
    site.write_module("openmpi/4.1.4", {"LD_LIBRARY_PATH": f"{mpich}/lib:{elsewhere}"}, {"MPI_HOME": str(mpich)})
    report = check_env(site.record, site.system, site.environ)
    (changed,) = codes(report).get("library-provider-changed", []) or [None]
    # leftovers sits on the module's own LD_LIBRARY_PATH, so it is still the module's library ...
    assert changed is None
    # ... until the module stops naming it and only a system-like place has it.
    site.write_module("openmpi/4.1.4", {"LD_LIBRARY_PATH": f"{mpich}/lib"}, {"MPI_HOME": str(mpich)})
    site.write_module("leftover/1", {"LD_LIBRARY_PATH": str(elsewhere)}, {"LEFTOVER_ROOT": str(elsewhere)})
    site.record.module.depends_on.append("leftover/1")
    (changed,) = codes(site.check())["library-provider-changed"]
    assert "now comes from leftover/1" in changed.detail
    assert "openmpi/4.1.4 now provides libfakempi.so.12 instead" in changed.detail


def test_library_rebuilt_in_place(site: Site) -> None:
    lib(site.root / "software/openmpi/4.1.4/lib", "libfakempi.so.40", symbol="f_mpi", value=42)
    report = site.check()
    (changed,) = codes(report)["library-changed"]
    assert changed.severity == "warning" and report.exit_code == 1


def test_modules_moved_to_another_tree_is_a_note(site: Site) -> None:
    moved = site.root / "modules/moved" / site.syntax
    moved.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(site.tree), str(moved))
    site.environ["MODULEPATH"] = str(moved)
    report = site.check()
    assert {f.code for f in report.findings} == {"module-moved"}
    assert all(f.severity == "note" for f in report.findings)
    assert report.exit_code == 0


def test_python_moved(site: Site) -> None:
    old = site.root / "software/python/3.11"
    new = site.root / "software/python/3.11-new"
    old.rename(new)
    site.write_module("python/3.11", {"PATH": f"{new}/bin"}, {"PYTHON_ROOT": str(new)})
    report = site.check()
    (gone,) = codes(report)["python-missing"]
    assert gone.severity == "error" and str(old / "bin/python3") in gone.detail
    assert f"python/3.11 now provides {new}/bin/python3" in gone.advice
    assert report.exit_code == 1


def test_python_of_another_version(site: Site) -> None:
    site.record.python.version = "3.10.4"
    (other,) = codes(site.check())["python-version-changed"]
    assert other.severity == "error" and "(the env was made with 3.10.4)" in other.detail
    major, minor = sys.version_info[:2]
    site.record.python.version = f"{major}.{minor}.0" if sys.version_info[2] else f"{major}.{minor}.99"
    (bugfix,) = codes(site.check())["python-version-changed"]
    assert bugfix.severity == "warning"


def test_central_package_shadows_the_envs(site: Site) -> None:
    pylibs = site.root / "software/pylibs/1/site-packages"
    dist(pylibs, "mpi4py", "3.1.4")
    (shadow,) = codes(site.check())["package-shadowed"]
    assert "mpi4py 3.1.4" in shadow.detail and "mpi4py 4.1.2 installed in this env" in shadow.detail
    assert shadow.what == "package mpi4py"


def test_required_central_package_gone_or_too_old(site: Site) -> None:
    pylibs = site.root / "software/pylibs/1/site-packages"
    shutil.rmtree(pylibs / "envmodtest_core-2.0.dist-info")
    dist(pylibs, "envmodtest-core", "1.0")
    (old,) = codes(site.check())["requirement-unsatisfied"]
    assert "python/3.11 now provides 1.0" in old.detail
    shutil.rmtree(pylibs / "envmodtest_core-1.0.dist-info")
    (gone,) = codes(site.check())["requirement-missing"]
    assert gone.what == "package envmodtest-core"


def test_env_file_removed(site: Site) -> None:
    next(site.env.rglob("MPI.cpython-311-x86_64-linux-gnu.so")).unlink()
    (gone,) = codes(site.check())["file-missing"]
    assert gone.files == ["lib/python3.11/site-packages/mpi4py/MPI.cpython-311-x86_64-linux-gnu.so"]


def test_record_without_evidence_gets_a_note(site: Site) -> None:
    site.record.links = []
    report = site.check()
    assert [f.code for f in report.findings] == ["no-evidence"] and report.exit_code == 0


def test_could_not_check(site: Site, tmp_path: Path) -> None:
    none = check_env(site.record, None, site.environ)
    assert none.exit_code == 2 and "no module system" in none.unchecked
    broken = Lmod(str(tmp_path / "no-such-lmod")) if site.syntax == "lua" else \
        EnvironmentModules(str(tmp_path / "no-such-modulecmd.tcl"))
    report = check_env(site.record, broken, site.environ)
    assert report.exit_code == 2, report.to_dict()
    assert format_report(report).startswith("drifty: could not check: ")
    assert combined_exit_code([site.check(), report]) == 2
    assert combined_exit_code([]) == 0


def test_unreadable_modulefile(site: Site) -> None:
    site.modulefile("openmpi/4.1.4").write_text('prepend_path("PATH",\n' if site.syntax == "lua"
                                                 else "#%Module1.0\nprepend-path PATH {unterminated\n")
    report = site.check()
    (broken,) = codes(report)["module-broken"]
    assert broken.severity == "error" and broken.what == "module openmpi/4.1.4"
    assert f"{site.system.name} cannot read it" in broken.detail
    assert report.exit_code == 1


# ---- the env's own modulefiles ------------------------------------------------------------------


def with_own_modules(s: Site) -> dict[str, Path]:
    """The env's Lua and Tcl modulefiles, written from its record by envmod's writer, as
    ``envmod create`` and ``envmod module NAME --module-type tcl`` leave them."""
    from bridge.emit.modulefile import write_modulefile

    modules = s.root.parent / "envmod-modules"
    written = {t: write_modulefile(s.record, t, modules) for t in ("lmod", "tcl")}
    s.record.module.files = {t: str(p) for t, p in written.items()}
    write_record(s.record)
    return written


def test_own_modulefiles_written_from_the_record_are_healthy(site: Site) -> None:
    with_own_modules(site)
    report = site.check()
    assert report.findings == [] and report.exit_code == 0, format_report(report)
    assert report.checked["own modules"] == 2


def test_own_modulefile_gone_is_an_error_saying_how_to_write_it_again(site: Site) -> None:
    files = with_own_modules(site)
    files["lmod"].unlink()
    report = site.check()
    (gone,) = codes(report)["own-module-missing"]
    assert gone.severity == "error" and report.exit_code == 1
    assert gone.what == "module drifty/py3.11 (lmod)"
    assert f"the env's modulefile {files['lmod']} is gone" in gone.detail
    assert gone.advice == "write it again from the record: 'envmod module drifty'"
    files["tcl"].unlink()
    tcl = [f for f in codes(site.check())["own-module-missing"] if f.what.endswith("(tcl)")]
    assert tcl[0].advice == "write it again from the record: 'envmod module drifty --module-type tcl'"


def test_own_module_of_an_easybuild_built_env_is_written_again_by_easybuild(site: Site) -> None:
    # EasyBuild keeps the easyconfig in the install dir's easybuild/; its --rebuild deletes the
    # module first, so an interrupted one leaves the env without it.
    easyconfig = site.env / "easybuild" / "drifty.eb"
    easyconfig.parent.mkdir()
    easyconfig.write_text("easyblock = 'UserEnv'\n")
    with_own_modules(site)["lmod"].unlink()
    (gone,) = codes(site.check())["own-module-missing"]
    assert gone.advice == (f"EasyBuild built this env: write its module again with 'eb {easyconfig} --module-only "
                           "--rebuild' (same EasyBuild configuration)")


def test_own_modulefile_of_another_env_or_stale_is_an_error(site: Site) -> None:
    files = with_own_modules(site)
    other = site.record.path.parent.parent / "other-env"
    mine = str(site.record.path)
    for path in files.values():
        path.write_text(path.read_text().replace(mine, str(other / "envmod.yaml")))
    report = site.check()
    foreign = codes(report)["own-module-foreign"]
    # Environment Modules cannot read the Lua file: only the Tcl one is evaluated there
    assert len(foreign) == (2 if site.syntax == "lua" else 1), format_report(report)
    assert f"was not written from this env's record: it loads the env whose record is {other}/envmod.yaml" \
        in foreign[0].detail
    files = with_own_modules(site)
    site.record.module.depends_on = ["python/3.11"]         # the record now says: no MPI
    (stale,) = [f for f in codes(site.check())["own-module-stale"] if f.what.endswith("(tcl)")]
    assert stale.detail.endswith("does not load the central modules this env was built against: it also loads "
                                 "openmpi/4.1.4")
    files["tcl"].write_text("#%Module1.0\nsetenv A {unterminated\n")
    broken = codes(site.check())["own-module-broken"]
    assert broken and f"{site.system.name} cannot read the env's modulefile" in broken[0].detail
