"""``envmod rebuild``: after the site changed, compile again only what was compiled against it.

The packages rebuilt are those compiled against central modules, plus any package owning a
compiled file whose linked libraries no longer resolve as recorded. They are compiled against
the env's modules as the site defines them *now* (or, with ``from_loaded``, against the modules
loaded in the shell, e.g. a replacement MPI), in a copy of the env; the record, the evidence and
the modulefiles are refreshed, and the copy replaces the env atomically, as a create does.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Mapping

from .build.rules import SourceBuild, canonical_name, load_rules, resolve_rule
from .config import Settings
from .discover.hierarchy import modulepath_with_record
from .discover.modsys import ModuleSystem, detect_module_system
from .discover.pyinfo import interrogate
from .discover.stack import CentralStack, find_central_python
from .errors import PlanError
from .frontends import command_for
from .progress import Reporter
from .scan.evidence import scan_links
from .session import CreateRequest, CreateSession, Plan, read_python_version
from .store.names import validate_env_name
from .store.record import EnvRecord, PythonRecord, central_module_records


def owners_of(prefix: Path, files: set[str]) -> set[str]:
    """Distributions (canonical names) whose RECORD lists any of ``files`` (env-relative)."""
    owners: set[str] = set()
    for record in prefix.glob("lib/python*/site-packages/*.dist-info/RECORD"):
        site = record.parent.parent
        name = record.parent.name.rsplit("-", 1)[0]
        for line in record.read_text(errors="replace").splitlines():
            rel = os.path.relpath(os.path.normpath(site / line.split(",", 1)[0]), prefix)
            if rel in files:
                owners.add(canonical_name(name))
                break
    return owners


def broken_files(record: EnvRecord, now: list) -> set[str]:
    """Env files whose needs no longer resolve to the same SONAME from the same provider."""
    was = {(e.file, e.needs, e.via): (e.provider, e.soname) for e in record.links}
    return {e.file for e in now if e.provider == "missing"
            or was.get((e.file, e.needs, e.via), (e.provider, e.soname)) != (e.provider, e.soname)}


class RebuildSession:
    """Runs one rebuild through the create pipeline's own stages (scan, dependencies, record,
    staging and placing) of a :class:`CreateSession` given the env's stack as it is now: the
    same module ordering, records and atomic replacement as a create, nothing overridden."""

    def __init__(self, name: str, settings: Settings, reporter: Reporter | None = None,
                 environ: Mapping[str, str] | None = None, from_loaded: bool = False) -> None:
        self.name = validate_env_name(name)
        self.settings = settings
        self.from_loaded = from_loaded
        # discovery and the shared stages; its request is replaced by the record's once read
        self.session = CreateSession(CreateRequest(name=self.name), settings, reporter, environ)
        self.reporter = self.session.reporter
        self.environ = self.session.environ

    def run(self) -> EnvRecord:
        session = self.session
        if session.store.exists(self.name):     # a shared env: its maintainer's alone (before its lock, theirs too)
            from .store.shared import refuse_unless_maintainer

            refuse_unless_maintainer(session.store.load(self.name), "rebuild it")
        with session.store.lock(self.name, "rebuilding it"):
            record = session.store.load(self.name)
            if record.conda is not None:
                # A rebuild copies the env into staging; a conda env cannot move (its prefix is in its files).
                raise PlanError(f"{record.name} is a {record.backend} env, which rebuild cannot copy and move",
                                hint=f"recreate it with '{command_for(record)} create {record.name} --backend "
                                f"{record.backend} --force ...'; nothing was changed")
            system, stack = self.stack_now(record)
            return session.stage_and_place(self.name, "rebuild",
                                           lambda staging, final: self._rebuild(record, system, stack, staging, final))

    def stack_now(self, record: EnvRecord) -> tuple[ModuleSystem | None, CentralStack]:
        """The env's central modules as the site defines them now (or the loaded ones)."""
        if self.from_loaded:
            return self.session.discover()
        from .check import query_module
        from .spack.stack import describe_loaded_spack_modules

        system = detect_module_system(self.environ)
        wanted = list(dict.fromkeys([*record.module.depends_on, *(m for p in record.packages for m in p.built_against)]))
        # Spack's module dirs the record names (the site's Core dir, and the Lmod subtrees its
        # modules live in, which only loading their openers would add), should the shell lack them
        self.environ["MODULEPATH"] = modulepath_with_record(record, self.environ.get("MODULEPATH", ""),
                                                            subtrees=True, names=wanted)
        modules = []
        for m in record.central_modules:
            if m.name not in wanted:
                continue
            now = query_module(system, m.name, self.environ)
            if not now.available or now.module is None:
                raise PlanError(f"module {m.name}, which {record.name} was built against, is not available now"
                                f" ({now.message or 'the module tool cannot show it'})",
                                hint=f"load its replacement and run '{command_for(record)} rebuild {record.name} "
                                "--from-loaded'")
            modules.append(now.module)
        stack = CentralStack(system, tuple(modules))
        return system, describe_loaded_spack_modules(stack, self.settings.spack_install_trees)

    def _rebuild(self, record: EnvRecord, system: ModuleSystem | None, stack: CentralStack,
                 staging: Path, final: Path) -> EnvRecord:
        r = self.reporter
        r.step("discover", ", ".join(f"{m.name} ({m.kind})" for m in stack.modules) or "no modules")
        exe, python_module = find_central_python(stack, self.environ, None) if stack.of_kind("python") \
            else (record.python.executable, None)
        python = interrogate(exe, self.session.cache)
        if python.short_version != ".".join(record.python.version.split(".")[:2]):
            raise PlanError(f"{record.name} runs Python {record.python.version} but the site now gives "
                            f"{python.version}: its packages cannot be rebuilt in place",
                            hint=f"recreate it with '{command_for(record)} create {record.name} --force ...'")
        shutil.copytree(final, staging, symlinks=True, dirs_exist_ok=True)
        self._repoint_python(staging, python.executable)
        rules = load_rules(self.settings.build_rules)
        now = scan_links(staging, stack.modules, python.executable, as_prefix=final)
        broken = owners_of(staging, broken_files(record, now))
        compiled = {canonical_name(p.name) for p in record.packages if p.install == "source" and p.built_against}
        targets = [p for p in record.packages if canonical_name(p.name) in compiled | broken]
        r.step("plan", ", ".join(f"{p.name} {p.version}" for p in targets) or "nothing was compiled against the site")
        builds = []
        for p in targets:
            rule = rules.get(canonical_name(p.name))
            build = resolve_rule(rule, stack) if rule else SourceBuild(canonical_name(p.name), (), {})
            builds.append((build, p.version))
        # An env created with --keep-loaded keeps depending on all its modules, not only on
        # those the evidence names.
        request = CreateRequest(name=record.name, keep_loaded=record.module.keep_loaded,
                                front_end=record.created.front_end or "envmod")
        plan = Plan(request, stack, python, python_module, record.module.type, rules)
        from .build.install import PipInstaller
        from .build.wheelcache import WheelCache

        cache = WheelCache(self.settings.wheel_cache_dir, stack.modules, python.executable)
        reused = PipInstaller(staging / "bin" / "python", r, rules, stack, python, cache).rebuild(builds)
        from .build.backends.venv import relocate

        relocate(staging, staging, final)
        version = read_python_version(staging / "bin" / "python")
        links, requirements = self.session.scan(plan, staging, final)
        deps = self.session.dependencies(plan, links, requirements)
        rebuilt = {b.package: b for b, _ in builds}
        for p in record.packages:
            compiled_as = rebuilt.get(canonical_name(p.name))
            if compiled_as is not None:
                p.install, p.built_against, p.build_env = "source", compiled_as.module_names, dict(compiled_as.env)
                p.cached_wheel = reused.get(compiled_as.package)
        record.python = PythonRecord.of(python, version, python_module.name if python_module else record.python.module)
        record.central_modules = central_module_records(stack.modules, keep=record.central_modules)
        record.module.depends_on = [m.name for m in deps]
        record.links, record.requirements = links, requirements
        record.rebuilt.append(self.session.provenance(system))
        return record

    @staticmethod
    def _repoint_python(prefix: Path, executable: str) -> None:
        """A moved central Python (same version): point the venv at where it is now."""
        link = prefix / "bin" / "python"
        if os.path.realpath(link) == os.path.realpath(executable):
            return
        cfg = prefix / "pyvenv.cfg"
        lines = []
        for line in cfg.read_text().splitlines():
            key = line.split("=", 1)[0].strip()
            if key == "home":
                line = f"home = {os.path.dirname(executable)}"
            elif key == "executable":
                line = f"executable = {os.path.realpath(executable)}"
            lines.append(line)
        cfg.write_text("\n".join(lines) + "\n")
        link.unlink()
        os.symlink(executable, link)

