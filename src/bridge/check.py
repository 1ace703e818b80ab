"""``envmod check``: re-verify an env against the live site.

Sites change under their users: modules are retired, rebuilt against another library, moved.
`check_env` takes an env's record (the evidence written when it was created) and asks the real
module tool and the real file system what is true now:

* every central module the env's modulefile loads is still available, and what it resolves to
  (modulefile, prefix);
* every library the env's files needed still resolves, with the modules' *current*
  ``LD_LIBRARY_PATH``, to the same SONAME from the same provider (a changed target is reported);
* the Python the env runs on is still there, with the same version;
* every central package the env's packages require is still provided;
* no central module's ``PYTHONPATH`` hides a version the env installed itself;
* the env's own modulefiles the record names are there and were written from this record (they
  load this env, and the central modules the record says), with how to write them again: an
  interrupted ``eb --rebuild`` deletes the old module first, leaving an env nobody can load.

Each problem is a `Finding` with a severity, what it concerns, what is wrong and what to do.
`CheckReport.exit_code`: 0 healthy (notes only), 1 problems found, 2 could not check (the tool
cannot run, or, through `check_stored`, the env does not exist or its record cannot be read);
`combined_exit_code` is the worst of several, 2 winning over 1.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

from .build.rules import canonical_name
from .discover.modsys import LoadedModule, ModuleEffect, ModuleSystem
from .discover.stack import CentralModule, describe_module, load_kind_table
from .errors import EnvmodError
from .frontends import command_for
from .scan.elf import ElfError, read_elf
from .scan.evidence import (
    ENV,
    MISSING,
    SYSTEM,
    Scanner,
    central_package_dirs,
    display_path,
    distributions_in,
    env_elf_files,
    env_site_packages,
    library_stem,
    module_lib_dirs,
)
from .store.record import CentralModuleRecord, EnvRecord, LinkEvidence

if TYPE_CHECKING:
    from .store.root import Store

ERROR, WARNING, NOTE = "error", "warning", "note"
#: How the advice names the command that rebuilds an env against the site as it is now (the
#: command of the front end that made it: frontends.command_for).
REBUILD = "{command} rebuild {name}"
#: How the advice names the commands that write an env's own modulefile again.
REWRITE_MODULE = "{command} module {name}"
REWRITE_EASYBUILD_MODULE = "eb {easyconfig} --module-only --rebuild"


class CannotCheck(EnvmodError):
    """The env could not be checked at all (no module tool, tool not working)."""

    exit_code = 2


@dataclass
class Finding:
    severity: str          # "error" (broken), "warning" (likely to misbehave), "note" (changed, harmless)
    what: str              # what it concerns: "module openmpi/4.1.4", "library libmpi.so.40", "python"
    detail: str            # what is wrong, with the facts
    advice: str            # what to do about it
    code: str = ""         # stable identifier: module-missing, library-provider-changed, ...
    files: list[str] = field(default_factory=list)   # env files concerned (libraries)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CheckReport:
    env: str
    prefix: str
    module_system: str | None
    findings: list[Finding] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=dict)
    #: Why the env could not be checked (exit code 2), or None.
    unchecked: str | None = None

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if f.severity in (ERROR, WARNING)]

    @property
    def status(self) -> str:
        if self.unchecked:
            return "unchecked"
        return "problems" if self.problems else "healthy"

    @property
    def exit_code(self) -> int:
        return {"healthy": 0, "problems": 1, "unchecked": 2}[self.status]

    def to_dict(self) -> dict[str, Any]:
        return {"env": self.env, "prefix": self.prefix, "status": self.status, "exit_code": self.exit_code,
                "module_system": self.module_system, "unchecked": self.unchecked, "checked": dict(self.checked),
                "findings": [f.to_dict() for f in self.findings]}


def combined_exit_code(reports: Iterable[CheckReport]) -> int:
    """For ``envmod check --all``: the worst of the envs' exit codes, where "could not check" (2)
    outranks "problems" (1), which outranks "healthy" (0): a monitor must not read an env it
    could not see as fine because another env had problems."""
    return max((r.exit_code for r in reports), default=0)


def unchecked_report(name: str, why: str, prefix: str = "", module_system: ModuleSystem | None = None) -> CheckReport:
    """The report of an env that could not be checked at all (exit code 2): it does not exist,
    or its record cannot be read."""
    return CheckReport(name, prefix, module_system.name if module_system else None, unchecked=why)


def check_stored(store: "Store", name: str, module_system: ModuleSystem | None,
                 environ: Mapping[str, str] | None = None,
                 environ_for: Callable[[EnvRecord], Mapping[str, str]] | None = None,
                 **kwargs: Any) -> CheckReport:
    """Load ``name``'s record from ``store`` and `check_env` it. Never raises for that env: one
    that does not exist, whose record is truncated, not YAML, not UTF-8 or of a newer schema, or
    that fails in a way envmod reports (`EnvmodError`, a file it cannot read) yields an
    ``unchecked`` report (exit code 2) saying why, so ``--all`` goes on with the others.
    ``environ_for`` gives the environment to check a record in, when it depends on the record
    (Spack's module roots)."""
    try:
        prefix = str(store.env_path(name))
    except EnvmodError as exc:          # a directory whose name is not a valid env name
        return unchecked_report(name, exc.one_line(), "", module_system)
    try:
        record = store.load(name)
    except EnvmodError as exc:          # EnvNotFound, RecordError
        return unchecked_report(name, exc.one_line(), prefix, module_system)
    try:
        if environ_for is not None:
            environ = environ_for(record)
        report = check_env(record, module_system, environ, **kwargs)
        if not report.unchecked:
            _check_image(store, record, report.findings)
        return report
    except EnvmodError as exc:
        return unchecked_report(name, exc.one_line(), record.prefix, module_system)
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        return unchecked_report(name, f"cannot read {where}{exc.strerror or exc}", record.prefix, module_system)


def _check_image(store: "Store", record: EnvRecord, findings: list[Finding]) -> None:
    """A packed image (``envmod pack``) older than the env: staging it is refused, and the env's
    module no longer looks for a staged copy once written again."""
    from pathlib import Path

    from .stage.image import is_stale, read_manifest

    try:
        manifest = read_manifest(store.settings.root, record.name)
    except EnvmodError as exc:
        findings.append(Finding(WARNING, "image", exc.one_line(), f"{command_for(record)} pack {record.name}",
                                "image-unreadable"))
        return
    if manifest is not None and is_stale(manifest, Path(record.prefix)):
        findings.append(Finding(
            WARNING, f"image {manifest.image}", f"the env changed after it was packed ({manifest.packed_at}): "
            "'stage' refuses the stale image", f"{command_for(record)} pack {record.name}", "image-stale"))


# ---------------------------------------------------------------------------------------------
# asking the module tool


@dataclass
class ModuleNow:
    """What the module tool says about one module name now."""

    name: str
    available: bool
    modulefile: str | None = None
    effect: ModuleEffect | None = None
    module: CentralModule | None = None
    message: str | None = None       # the tool's words when the module is not usable
    broken: bool = False             # it exists, but the tool fails to show it


_NOT_FOUND = re.compile(r"Failed to find|Unable to locate a modulefile|unknown module|"
                        r"following module\(s\) are unknown|No module\(s\) or extension\(s\) found|"
                        r"hidden|forbidden", re.I)


def _tool_message(text: str) -> str:
    """The tool's complaint in one line (Lmod wraps it and adds a 'Try: module spider' hint)."""
    lines = []
    for ln in text.splitlines():
        ln = ln.strip()
        if ln.startswith("Try:"):
            break
        if ln and ln != "test 0 = 1;":
            lines.append(ln)
    return " ".join(lines[:4]) or "no output"


def _error_message(text: str) -> str:
    """The error line of a failing modulefile (after the tools' rulers and headers)."""
    lines = [ln.strip() for ln in text.splitlines()]
    for i, ln in enumerate(lines):
        m = re.search(r"(?:Module ERROR|Lmod has detected the following error):\s*(.*)", ln)
        if m:
            out = [m.group(1)] if m.group(1) else []
            for more in lines[i + 1:i + 5]:
                if not more or more.startswith(("Please", "While processing", "while executing", "(file")):
                    break
                out.append(more)
            return " ".join(out) or ln
    return _tool_message(text)


def query_module(system: ModuleSystem, name: str, environ: Mapping[str, str]) -> ModuleNow:
    """``module show NAME`` through the real tool: available or not, its modulefile and effect.

    Raises `CannotCheck` when the tool itself cannot run.
    """
    try:
        proc = system.run(["show", name], environ)
    except OSError as exc:
        raise CannotCheck(f"cannot run {system.name} ({system.command}): {exc.strerror or exc}") from exc
    effects = system.parse_show(proc.stderr)
    text = proc.stderr + proc.stdout
    failed = proc.returncode != 0 or "test 0 = 1" in proc.stdout or re.search(
        r"Module ERROR|Lmod has detected the following error", text)
    if failed and not effects and _NOT_FOUND.search(text):
        return ModuleNow(name, False, message=_tool_message(proc.stderr or proc.stdout))
    if failed:
        # The tool works (see ensure_tool_works) but cannot evaluate this one: a broken modulefile.
        return ModuleNow(name, False, next(iter(effects), None), broken=True,
                         message=_error_message(proc.stderr or proc.stdout))
    if effects:
        path, effect = next(iter(effects.items()))
        described = describe_module(LoadedModule(name, path), effect, load_kind_table())
        return ModuleNow(name, True, path, effect, described)
    if _NOT_FOUND.search(text):
        return ModuleNow(name, False, message=_tool_message(text))
    raise CannotCheck(f"'module show {name}' with {system.name} printed nothing envmod understands: "
                      f"{_tool_message(text)}")


def ensure_tool_works(system: ModuleSystem, environ: Mapping[str, str]) -> None:
    """Raise `CannotCheck` unless the module tool answers ``--version``: a tool that cannot run
    must not make every module look missing."""
    try:
        proc = system.run(["--version"], environ)
    except OSError as exc:
        raise CannotCheck(f"cannot run {system.name} ({system.command}): {exc.strerror or exc}") from exc
    out = proc.stderr + proc.stdout
    if proc.returncode != 0 or not re.search(r"Modules|Lmod|Version|Release", out, re.I):
        raise CannotCheck(f"{system.name} ({system.command}) does not work: {_tool_message(out)}")


def available_versions(system: ModuleSystem, family: str, environ: Mapping[str, str]) -> list[str]:
    """The module names ``module avail -t FAMILY`` lists (for advice; empty on any failure)."""
    try:
        proc = system.run(["avail", "-t", family], environ)
    except OSError:
        return []
    names = []
    for line in (proc.stderr + "\n" + proc.stdout).splitlines():
        item = line.strip()
        item = re.sub(r"\s*\((default|D|L|H)\)$|\(@[^)]*\)$", "", item).rstrip("/")
        if item.lower().startswith(family.lower() + "/") and " " not in item and item not in names:
            names.append(item)
    return names


# ---------------------------------------------------------------------------------------------
# the checks


def _same_file(a: str | None, b: str | None) -> bool:
    if not a or not b:
        return False
    return os.path.realpath(a) == os.path.realpath(b)


def _check_modules(record: EnvRecord, system: ModuleSystem, environ: Mapping[str, str],
                   findings: list[Finding]) -> dict[str, ModuleNow]:
    now: dict[str, ModuleNow] = {}
    rebuild = REBUILD.format(command=command_for(record), name=record.name)
    for name in record.module.depends_on:
        was: CentralModuleRecord | None = record.central_module(name)
        q = query_module(system, name, environ)
        now[name] = q
        if q.broken:
            findings.append(Finding(
                ERROR, f"module {name}", f"{system.name} cannot read it: {q.message}",
                "loading this env's module will fail too; tell your site", "module-broken"))
            continue
        if not q.available:
            family = name.split("/", 1)[0]
            others = [n for n in available_versions(system, family, environ) if n != name]
            findings.append(Finding(
                ERROR, f"module {name}",
                f"no longer available from {system.name}"
                + (f" (it was {was.modulefile})" if was and was.modulefile else "")
                + (f": {q.message}" if q.message else ""),
                (f"the site now has {', '.join(others)}; " if others else "ask your site what replaced it; ")
                + f"loading this env's module will fail. Rebuild the env against what the site provides now "
                  f"({rebuild})", "module-missing"))
            continue
        if was is None:
            continue
        if was.modulefile and not _same_file(q.modulefile, was.modulefile):
            findings.append(Finding(
                NOTE, f"module {name}", f"now resolves to {q.modulefile} (was {was.modulefile})",
                "nothing to do if the libraries below still check out; the env loads the module by name",
                "module-moved"))
        cur = q.module
        if cur is not None and was.prefix and cur.prefix and os.path.normpath(cur.prefix) != os.path.normpath(was.prefix):
            findings.append(Finding(
                WARNING, f"module {name}", f"now points to {cur.prefix} (was {was.prefix})",
                f"the software behind the name changed; see the library findings, and rebuild if any ({rebuild})",
                "module-prefix-changed"))
        if cur is not None and was.kind and cur.kind != was.kind and cur.kind != "other":
            findings.append(Finding(
                WARNING, f"module {name}", f"now looks like a {cur.kind} module (was {was.kind})",
                f"check what the site put behind this name; rebuild if needed ({rebuild})", "module-kind-changed"))
    return now


def _check_python(record: EnvRecord, now: Mapping[str, ModuleNow], findings: list[Finding]):
    """The PythonInfo of the recorded interpreter if it still works, else None."""
    from .discover.pyinfo import interrogate

    exe = record.python.executable
    rebuild = REBUILD.format(command=command_for(record), name=record.name)
    module_python = None
    q = now.get(record.python.module or "")
    if q is not None and q.module is not None:
        module_python = q.module.facts.get("python") or q.module.find_executable("python3")
    offer = ""
    if module_python and not _same_file(module_python, exe):
        offer = f"{record.python.module} now provides {module_python}; "
    if not os.path.exists(exe):
        findings.append(Finding(
            ERROR, "python", f"the env's Python {exe} (Python {record.python.version}) is gone",
            f"{offer}the env cannot start; rebuild it over the site's current Python ({rebuild})",
            "python-missing"))
        return None
    try:
        info = interrogate(exe)
    except EnvmodError as exc:
        findings.append(Finding(ERROR, "python", f"{exe} no longer works: {exc.one_line()}",
                                f"{offer}rebuild the env ({rebuild})", "python-broken"))
        return None
    if info.version != record.python.version:
        same_minor = info.version.split(".")[:2] == record.python.version.split(".")[:2]
        findings.append(Finding(
            WARNING if same_minor else ERROR, "python",
            f"{exe} is now Python {info.version} (the env was made with {record.python.version})",
            ("a bugfix release keeps the ABI; compiled packages should still import, but rebuild to be sure "
             if same_minor else "compiled packages will not import under another minor version; rebuild ")
            + f"({rebuild})", "python-version-changed"))
    elif module_python and not _same_file(module_python, exe):
        findings.append(Finding(
            NOTE, "python", f"{record.python.module} now provides {module_python}; this env keeps using {exe}",
            "nothing to do while the old Python stays installed", "python-module-changed"))
    return info


def _chain(e: LinkEvidence) -> str:
    return f"{e.via} → {e.needs}" if e.via else e.needs


def _now_provides(module: CentralModule | None, needs: str) -> list[str]:
    """Libraries with the same stem (libmpi.so.*) that a module's lib dirs hold now."""
    if module is None:
        return []
    stem = library_stem(needs)
    found: list[str] = []
    for d in module_lib_dirs(module):
        try:
            names = os.listdir(d)
        except OSError:
            continue
        for n in sorted(names):
            if library_stem(n) == stem and re.search(r"\.so\.\d+$", n) and n != needs and n not in found:
                found.append(n)
    return found


# A changed link, as grouped: (code, via, needs, recorded path, recorded provider, path now,
# provider now, SONAME now).
_LinkKey = tuple


def _current_links(scanner: Scanner, path: str) -> dict[tuple, tuple] | None:
    """(via, needs) -> (path, provider, SONAME) of every link of the ELF file at ``path`` as it
    resolves now; None when the file is gone or unreadable."""
    try:
        info = read_elf(path)
        if info is None:
            return None
        return {(edge.via_name, edge.needs): (edge.path, provider, soname)
                for edge, provider, soname in scanner.file_links(info)}
    except (OSError, ElfError):
        return None


def _link_change(e: LinkEvidence, current: tuple, scanner: Scanner) -> str | None:
    """The code of what became of the recorded link ``e`` (None: nothing that matters)."""
    cpath, cprov, csoname = current
    if cprov == MISSING:
        return "library-missing"
    if cprov != e.provider:
        return "library-provider-changed"
    if e.soname and csoname and csoname != e.soname:
        return "library-soname-changed"
    moved = bool(e.path and cpath and not _same_file(cpath, e.path))
    if not moved and cprov in (SYSTEM, ENV):
        return None         # a system or env library in place: its content is not the env's concern
    if e.sha256 and cpath and scanner.sha256(cpath) != e.sha256:
        return "library-changed"
    return "library-moved" if moved else None


def _changed_links(record: EnvRecord, scanner: Scanner, by_file: Mapping[str, list[LinkEvidence]],
                   ) -> tuple[dict[_LinkKey, list[str]], dict[_LinkKey, LinkEvidence], list[str]]:
    """Every recorded link that resolves differently now, grouped by how (key -> env files), the
    evidence behind each group, and the recorded files that are gone or unreadable."""
    groups: dict[_LinkKey, list[str]] = {}
    evidence: dict[_LinkKey, LinkEvidence] = {}
    missing_files: list[str] = []
    for rel, recorded in by_file.items():
        current = _current_links(scanner, os.path.join(record.prefix, rel))
        if current is None:
            missing_files.append(rel)
            continue
        for e in recorded:
            cur = current.get((e.via, e.needs))
            if cur is None:
                continue    # an indirect need whose library is no longer loaded: its own change is reported
            code = _link_change(e, cur, scanner)
            if code is not None:
                key = (code, e.via, e.needs, e.path, e.provider, *cur)
                groups.setdefault(key, []).append(rel)
                evidence[key] = e
    return groups, evidence, missing_files


@dataclass
class _LinkChange:
    """One cause of changed links, as a finding tells it."""

    evidence: LinkEvidence      # the env's direct need, when it is among them
    needs: str
    old_path: str | None
    old_prov: str
    cpath: str | None
    cprov: str
    csoname: str | None
    who: str                    # the env files concerned, shortened
    likewise: str               # the other libraries that changed the same way
    gone: bool                  # the recorded provider is not available now
    rebuild: str                # the command that rebuilds the env

    @property
    def origin(self) -> str:
        return f"from {self.old_prov}" if self.old_prov not in (SYSTEM, ENV, MISSING) else f"({self.old_prov})"

    @property
    def provider_now(self) -> str:
        return {SYSTEM: "a system directory", ENV: "this env"}.get(self.cprov, self.cprov)


def _library_missing(c: _LinkChange, now: Mapping[str, ModuleNow]) -> tuple[str, str, str]:
    detail = f"needed by {c.who}, was {c.old_path} {c.origin}; it no longer resolves{c.likewise}"
    if c.gone:
        detail += f" ({c.old_prov} is not available)"
    return detail, f"the env's compiled code cannot load; rebuild against the site's current modules ({c.rebuild})", \
        ERROR


def _library_provider_changed(c: _LinkChange, now: Mapping[str, ModuleNow]) -> tuple[str, str, str]:
    detail = (f"needed by {c.who}, now comes from {c.provider_now} ({c.cpath}) instead of {c.old_prov} "
              f"({c.old_path}){c.likewise}")
    if c.gone:
        detail += f"; {c.old_prov} is not available"
    alt = _now_provides(now[c.old_prov].module if c.old_prov in now else None, c.needs)
    if alt:
        detail += f"; {c.old_prov} now provides {', '.join(alt)} instead"
    advice = ("the library the code was built against is now found outside its module, so it may "
              f"not match what the module's tools use; rebuild ({c.rebuild})")
    return detail, advice, ERROR


def _library_soname_changed(c: _LinkChange, now: Mapping[str, ModuleNow]) -> tuple[str, str, str]:
    detail = (f"needed by {c.who}, {c.needs} now resolves to {c.cpath} whose SONAME is {c.csoname} "
              f"(was {c.evidence.soname}){c.likewise}")
    return detail, f"a different ABI behind the same name; rebuild ({c.rebuild})", ERROR


def _library_changed(c: _LinkChange, now: Mapping[str, ModuleNow]) -> tuple[str, str, str]:
    moved = not _same_file(c.cpath, c.old_path)
    detail = (f"needed by {c.who}, from {c.old_prov}: the file changed"
              + (f" and moved to {c.cpath} (was {c.old_path})" if moved else f" ({c.cpath})")
              + c.likewise)
    return detail, f"same SONAME, so it should still load; if the code misbehaves, rebuild ({c.rebuild})", WARNING


def _library_moved(c: _LinkChange, now: Mapping[str, ModuleNow]) -> tuple[str, str, str]:
    detail = (f"needed by {c.who}, from {c.old_prov}: now found at {c.cpath} (was {c.old_path}), same file "
              f"content{c.likewise}")
    return detail, "nothing to do", NOTE


# code of a changed link -> (detail, advice, severity) of its finding
_LINK_FINDINGS: Mapping[str, Callable[[_LinkChange, Mapping[str, ModuleNow]], tuple[str, str, str]]] = {
    "library-missing": _library_missing,
    "library-provider-changed": _library_provider_changed,
    "library-soname-changed": _library_soname_changed,
    "library-changed": _library_changed,
    "library-moved": _library_moved,
}


def _link_finding(keys: list[_LinkKey], groups: Mapping[_LinkKey, list[str]],
                  evidence: Mapping[_LinkKey, LinkEvidence], now: Mapping[str, ModuleNow], rebuild: str) -> Finding:
    """One finding for links that changed the same way, named by the first (a direct need)."""
    code, _via, needs, old_path, old_prov, cpath, cprov, csoname = keys[0]
    files = sorted({f for k in keys for f in groups[k]})
    shown = sorted({display_path(f) for f in files})
    also = list(dict.fromkeys(k[2] for k in keys[1:] if k[2] != needs))
    change = _LinkChange(
        evidence=evidence[keys[0]], needs=needs, old_path=old_path, old_prov=old_prov, cpath=cpath, cprov=cprov,
        csoname=csoname, who=shown[0] + (f" and {len(shown) - 1} more" if len(shown) > 1 else ""),
        likewise=f"; likewise {', '.join(also)}" if also else "",
        gone=old_prov in now and not now[old_prov].available, rebuild=rebuild)
    detail, advice, severity = _LINK_FINDINGS[code](change, now)
    return Finding(severity, f"library {_chain(change.evidence)}", detail, advice, code, files)


def _check_links(record: EnvRecord, modules_now: Sequence[CentralModule], python_ok: bool,
                 now: Mapping[str, ModuleNow], findings: list[Finding]) -> dict[str, int]:
    rebuild = REBUILD.format(command=command_for(record), name=record.name)
    scanner = Scanner(modules_now, record.prefix, record.python.executable if python_ok else None)
    by_file: dict[str, list[LinkEvidence]] = {}
    for e in record.links:
        by_file.setdefault(e.file, []).append(e)
    groups, evidence, missing_files = _changed_links(record, scanner, by_file)
    # One finding per cause: the libraries that changed the same way from the same provider (libmpi
    # and the libopen-* it pulls in) are one problem, named by the env's direct need.
    clusters: dict[tuple, list[_LinkKey]] = {}
    for key in groups:
        code, _via, _needs, _old_path, old_prov, _cpath, cprov, _csoname = key
        clusters.setdefault((code, old_prov, cprov if code != "library-moved" else None), []).append(key)
    for keys in clusters.values():
        keys.sort(key=lambda k: (k[1] is not None, ))      # direct needs first
        findings.append(_link_finding(keys, groups, evidence, now, rebuild))
    if missing_files:
        shown = sorted(display_path(f) for f in missing_files)
        findings.append(Finding(
            ERROR, "env files", f"{len(shown)} compiled file(s) recorded in the env are gone or unreadable: "
            + ", ".join(shown[:5]) + (" ..." if len(shown) > 5 else ""),
            f"the env was changed by hand; rebuild it ({rebuild})", "file-missing", sorted(missing_files)))
    return {"files": len(by_file), "links": len(record.links)}


def _python_info_now(record: EnvRecord, info):
    if info is not None:
        return info
    from .discover.pyinfo import PythonInfo

    p = record.python
    return PythonInfo(version=p.version, implementation=p.implementation, executable=p.executable,
                      prefix="", base_prefix="", platform=p.platform, soabi=p.soabi, purelib="", has_pip=False)


def _check_requirements(record: EnvRecord, modules_now: Sequence[CentralModule], pyinfo,
                        findings: list[Finding]) -> None:
    if not record.requirements:
        return
    from packaging.requirements import InvalidRequirement, Requirement

    dirs = [(d, name, distributions_in(d)) for d, name in central_package_dirs(modules_now, pyinfo)]
    rebuild = REBUILD.format(command=command_for(record), name=record.name)
    for r in record.requirements:
        try:
            req = Requirement(r.requires)
        except InvalidRequirement:
            continue
        want = canonical_name(req.name)
        hit = next(((d, name, ds[want]) for d, name, ds in dirs if want in ds), None)
        if hit is None:
            findings.append(Finding(
                ERROR, f"package {req.name}",
                f"required by {r.package} ({r.requires}), was provided by {r.provider} ({r.location}); "
                "no central module provides it now",
                f"install it into the env or rebuild ({rebuild})", "requirement-missing"))
            continue
        d, provider, dist = hit
        if req.specifier and not req.specifier.contains(dist.version, prereleases=True):
            findings.append(Finding(
                ERROR, f"package {req.name}",
                f"required by {r.package} ({r.requires}); {provider} now provides {dist.version}, which does not satisfy it",
                f"rebuild the env so pip installs a matching version into it ({rebuild})", "requirement-unsatisfied"))
        elif provider != r.provider:
            findings.append(Finding(
                WARNING, f"package {req.name}",
                f"required by {r.package}: now provided by {provider} ({dist.path}) instead of {r.provider}",
                f"the env's module loads {r.provider}; rebuild to record the new provider ({rebuild})",
                "requirement-provider-changed"))


def _check_shadowing(record: EnvRecord, modules_now: Sequence[CentralModule], pyinfo,
                     findings: list[Finding]) -> int:
    short = ".".join(record.python.version.split(".")[:2])
    mine: dict[str, Any] = {}
    for d in env_site_packages(record.prefix, short):
        for name, dist in distributions_in(d).items():
            mine.setdefault(name, dist)
    # PYTHONPATH entries come before the env's site-packages on sys.path: later-loaded first.
    seen: set[str] = set()
    for module in reversed(list(modules_now)):
        for entry in module.paths.get("PYTHONPATH", ()):
            for name, dist in distributions_in(entry).items():
                if name in seen or name not in mine:
                    continue
                seen.add(name)
                own = mine[name]
                if own.version == dist.version:
                    continue
                findings.append(Finding(
                    WARNING, f"package {name}",
                    f"{module.name} puts {name} {dist.version} on PYTHONPATH ({entry}), which hides the "
                    f"{name} {own.version} installed in this env",
                    f"'import {name}' gets the module's version; ask your site to move it out of PYTHONPATH, "
                    f"or unset PYTHONPATH entries of {module.name} after loading the env", "package-shadowed"))
    return len(mine)


def _check_packages(record: EnvRecord, modules_now: Sequence[CentralModule], pyinfo,
                    findings: list[Finding]) -> dict[str, int]:
    """The env's Python packages (none shadowed by a central one) and a conda env's conda packages."""
    checked = {"packages": _check_shadowing(record, modules_now, pyinfo, findings)}
    if record.conda is not None:
        checked["conda packages"] = _check_conda(record, findings)
    return checked


def _check_conda(record: EnvRecord, findings: list[Finding]) -> int:
    """A conda env's packages now (its engine's ``installed()``) against those recorded."""
    from pathlib import Path

    from .build.backends.condaenv import engine_for_record

    assert record.conda is not None
    recorded = {p["name"]: f'{p["version"]}={p["build"]}' for p in record.conda.packages}
    engine = engine_for_record(record.conda)
    if engine is None:
        findings.append(Finding(NOTE, "conda packages", f"the engine {record.conda.engine.get('tool')!r} that made "
                                "the env cannot be run, so its conda packages were not checked",
                                "load the module that provides it", "conda-not-checked"))
        return 0
    try:
        now = {p.name: f"{p.version}={p.build}" for p in engine.installed(Path(record.prefix))}
    except EnvmodError as exc:
        findings.append(Finding(WARNING, "conda packages", f"cannot list the env's conda packages: {exc.one_line()}",
                                "load the module that provides conda", "conda-not-checked"))
        return 0
    changed = sorted(n for n in set(recorded) | set(now) if recorded.get(n) != now.get(n))
    if changed:
        detail = "; ".join(f"{n}: recorded {recorded.get(n, 'absent')}, now {now.get(n, 'absent')}" for n in changed)
        findings.append(Finding(ERROR, "conda packages", f"the env's conda packages changed since it was made: {detail}",
                                f"recreate it ({command_for(record)} create {record.name} --backend "
                                f"{record.backend} --force ...)", "conda-packages-changed"))
    return len(recorded)


def _easyconfig_of(record: EnvRecord) -> str | None:
    """The easyconfig EasyBuild keeps in the install dir of an env it built (its UserEnv), or None."""
    from pathlib import Path

    kept = sorted(Path(record.prefix, "easybuild").glob("*.eb"))
    preferred = [p for p in kept if p.stem == record.name]
    return str((preferred or kept)[0]) if kept else None


def rewrite_module_advice(record: EnvRecord, module_type: str) -> str:
    """The command that writes the env's ``module_type`` modulefile again from its record: the
    tool that built the env (EasyBuild writes its own modules), else envmod."""
    import shlex

    easyconfig = _easyconfig_of(record)
    if easyconfig:
        command = REWRITE_EASYBUILD_MODULE.format(easyconfig=shlex.quote(easyconfig))
        return f"EasyBuild built this env: write its module again with '{command}' (same EasyBuild configuration)"
    command = REWRITE_MODULE.format(command=command_for(record), name=record.name)
    if module_type != record.module.type:
        command += f" --module-type {module_type}"
    if _spack_hashes(record):
        return f"write it again from the record: '{command}' (or 'spack {command}')"
    return f"write it again from the record: '{command}'"


def _tool_reads(system: ModuleSystem | None, path: str) -> bool:
    """Whether ``system`` can evaluate the modulefile at ``path`` (Environment Modules reads no Lua)."""
    return system is not None and (system.name == "lmod" or not path.endswith(".lua"))


def _shown_effect(system: ModuleSystem, name: str, path: str,
                  environ: Mapping[str, str]) -> tuple[ModuleEffect | None, str]:
    """What ``module show NAME`` says the modulefile at ``path`` does, or None and the tool's
    complaint. The file is shown from a copy alone on ``MODULEPATH`` (Lmod shows no full path,
    and the Lua and Tcl files of an env may share one directory, where the tool picks one)."""
    import shutil

    from .fsutil import scratch_dir

    with scratch_dir("check") as scratch:
        tree = str(scratch)
        copy = os.path.join(tree, name + (".lua" if path.endswith(".lua") else ""))
        os.makedirs(os.path.dirname(copy), exist_ok=True)
        shutil.copyfile(path, copy)
        try:
            proc = system.run(["show", name], {**environ, "MODULEPATH": tree})
        except OSError as exc:
            raise CannotCheck(f"cannot run {system.name} ({system.command}): {exc.strerror or exc}") from exc
    text = proc.stderr + proc.stdout
    if proc.returncode != 0 or "test 0 = 1" in proc.stdout or re.search(
            r"Module ERROR|Lmod has detected the following error", text):
        return None, _error_message(proc.stderr or proc.stdout)
    effects = system.parse_show(proc.stderr)
    return next(iter(effects.values()), None), _tool_message(text)


def _check_own_modules(record: EnvRecord, system: ModuleSystem | None, environ: Mapping[str, str],
                       findings: list[Finding]) -> int:
    """The env's own modulefiles (``record.module.files``): present, and, where the module tool in
    use can read them, loading this env (``ENVMOD_RECORD`` is this record) and the central modules
    the record names."""
    for module_type, path in sorted(record.module.files.items()):
        what = f"module {record.module.name} ({module_type})"
        advice = rewrite_module_advice(record, module_type)
        if not os.path.isfile(path):
            findings.append(Finding(
                ERROR, what, f"the env's modulefile {path} is gone: 'module load {record.module.name}' "
                "cannot load this env", advice, "own-module-missing"))
            continue
        if system is None or not _tool_reads(system, path):
            continue
        effect, complaint = _shown_effect(system, record.module.name, path, environ)
        if effect is None:
            findings.append(Finding(
                ERROR, what, f"{system.name} cannot read the env's modulefile {path}: {complaint}",
                advice, "own-module-broken"))
            continue
        loads = effect.setenv.get("ENVMOD_RECORD")
        if not loads or not _same_file(loads, str(record.path)):
            findings.append(Finding(
                ERROR, what, f"{path} was not written from this env's record: it loads "
                + (f"the env whose record is {loads}" if loads else "no envmod env (it sets no ENVMOD_RECORD)"),
                advice, "own-module-foreign"))
            continue
        if module_type != record.module.type and _spack_hashes(record):
            continue        # Spack names a spec's Lmod and Tcl modules differently: the record has one set
        missing = [m for m in record.module.depends_on if m not in effect.depends]
        extra = [m for m in effect.depends if m not in record.module.depends_on]
        if missing or extra:
            findings.append(Finding(
                ERROR, what, f"{path} does not load the central modules this env was built against"
                + (f": it lacks {', '.join(missing)}" if missing else "")
                + (f"{';' if missing else ':'} it also loads {', '.join(extra)}" if extra else ""),
                advice, "own-module-stale"))
    return len(record.module.files)


def _spack_hashes(record: EnvRecord) -> bool:
    return any(m.facts.get("spack_hash") for m in record.central_modules)


def _check_spack_builds(record: EnvRecord, installed: Callable[[str], str | None] | None,
                        findings: list[Finding]) -> int:
    """Whether each Spack module the env loads still is the build (DAG hash) it was made with."""
    from .spack.stack import check_spack_modules

    checks = check_spack_modules(record, installed)
    for c in checks:
        if c.status in ("changed", "missing"):
            findings.append(Finding(
                ERROR, f"module {c.name}", c.detail,
                f"compile the env again against the build the module loads now: {REBUILD.format(command=command_for(record), name=record.name)}",
                f"spack-build-{c.status}"))
    return len(checks)


def check_env(record: EnvRecord, module_system: ModuleSystem | None, environ: Mapping[str, str] | None = None,
              *, spack_installed: Callable[[str], str | None] | None = None,
              spack_install_trees: Sequence[str | os.PathLike] = ()) -> CheckReport:
    """Check one env against the live site (see the module docstring). Never raises for a
    problem with the env; a tool that cannot run yields an ``unchecked`` report (exit code 2).

    An env over Spack modules also has each module's DAG hash checked against the module root's
    ``module-index.yaml`` and against the install tree: ``spack_installed(dag_hash)`` (Spack's
    database, from ``spack envmod``) or else the trees the record names plus
    ``spack_install_trees``. Without a module tool only that part can be checked."""
    environ = dict(os.environ if environ is None else environ)
    report = CheckReport(record.name, record.prefix, module_system.name if module_system else None)
    findings = report.findings
    if not os.path.isdir(record.prefix):
        report.unchecked = f"the env's directory {record.prefix} does not exist"
        return report
    if _spack_hashes(record):
        if spack_installed is None:
            from pathlib import Path

            from .spack.stack import installed_in_trees

            spack_installed = installed_in_trees(record, [Path(t) for t in spack_install_trees])
        report.checked["spack builds"] = _check_spack_builds(record, spack_installed, findings)
        if module_system is None:
            findings.append(Finding(
                NOTE, "module system", "no module system is initialised in this shell, so only the Spack "
                "builds were checked, not the env's libraries, Python and packages",
                "initialise Lmod or Environment Modules, then check again", "no-module-system"))
            report.checked["own modules"] = _check_own_modules(record, None, environ, findings)
            return report
    if module_system is None and record.module.depends_on:
        report.unchecked = ("no module system is initialised, so the modules this env loads "
                            f"({', '.join(record.module.depends_on)}) cannot be asked")
        return report
    try:
        if module_system is not None:
            ensure_tool_works(module_system, environ)
        now = _check_modules(record, module_system, environ, findings) if module_system else {}
    except CannotCheck as exc:
        report.unchecked = exc.one_line()
        report.findings.clear()
        return report
    modules_now = [q.module for q in now.values() if q.available and q.module is not None]
    info = _check_python(record, now, findings)
    report.checked["modules"] = len(now)
    report.checked.update(_check_links(record, modules_now, info is not None, now, findings))
    pyinfo = _python_info_now(record, info)
    _check_requirements(record, modules_now, pyinfo, findings)
    report.checked["requirements"] = len(record.requirements)
    report.checked.update(_check_packages(record, modules_now, pyinfo, findings))
    try:
        report.checked["own modules"] = _check_own_modules(record, module_system, environ, findings)
    except CannotCheck as exc:
        report.unchecked = exc.one_line()
        report.findings.clear()
        return report
    if not record.links and next(env_elf_files(record.prefix), None) is not None:
        findings.append(Finding(
            NOTE, "evidence", "the record holds no link evidence (made by an older envmod), so the env's "
            "compiled files were not checked against the libraries they were built with",
            f"rebuild once to record it ({REBUILD.format(command=command_for(record), name=record.name)})", "no-evidence"))
    order = {ERROR: 0, WARNING: 1, NOTE: 2}
    findings.sort(key=lambda f: order.get(f.severity, 3))
    return report


# ---------------------------------------------------------------------------------------------
# human output


def format_report(report: CheckReport) -> str:
    """What ``envmod check NAME`` prints: a verdict line, then each finding with its advice."""
    if report.unchecked:
        return f"{report.env}: could not check: {report.unchecked}"
    counts = report.checked
    scope = (f"{counts.get('modules', 0)} modules, {counts.get('links', 0)} library needs of "
             f"{counts.get('files', 0)} files, {counts.get('requirements', 0)} central requirements")
    problems = report.problems
    head = (f"{report.env}: healthy ({scope})" if not problems else
            f"{report.env}: {len(problems)} problem{'s' if len(problems) != 1 else ''} ({scope})")
    lines = [head]
    for f in report.findings:
        lines.append(f"  {f.severity:7} {f.what}: {f.detail}")
        lines.append(f"  {'':7} → {f.advice}")
    return "\n".join(lines)
