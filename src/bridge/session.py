"""The create pipeline: discover -> plan -> create -> install -> record -> emit.

A :class:`CreateSession` carries one request through the stages, like virtualenv's session.
Everything is built in a staging directory under the env's lock; the env is renamed into place
only when complete, and its modulefile is written last (its text rendered before the rename, so a
broken template fails with nothing in place), so an interrupted or failed create leaves neither
env nor module behind (and with ``--force`` the old env stays usable until then).
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

from .build.backends import get_backend
from .cache import JsonCache
from .config import Settings, check_module_type
from .discover.hierarchy import load_order
from .discover.modsys import ModuleSystem, detect_module_system
from .discover.pyinfo import PythonInfo, interrogate
from .discover.stack import CentralModule, CentralStack, discover_stack, find_central_python, spack_module_root
from .emit.modulefile import module_version, modulefile_path, render_modulefile
from .errors import BuildError, ConfigError, EnvExists, EnvmodError, Interrupted, NoModuleSystem, NoPython, UsageError
from .frontends import user_command
from .fsutil import atomic_write_text
from .progress import Reporter
from .store.names import validate_description, validate_new_env_name
from .store.record import (
    RECORD_FILE,
    EnvRecord,
    ModuleRecord,
    PackageRecord,
    Provenance,
    PythonRecord,
    central_module_records,
    read_record,
    write_record,
)
from .store.root import Store
from .warmup import WarmUp, create_warm_up

if TYPE_CHECKING:
    from .build.backends.base import Backend
    from .build.install import InstallResult
    from .emit.export import ExportedEnv
    from .store.record import SharedRecord


@dataclass
class CreateRequest:
    """What a front end asks to create: the env, its packages, and how to build it."""

    name: str
    packages: Sequence[str] = ()
    requirement_files: Sequence[Path] = ()
    python: str | None = None
    description: str = ""
    module_type: str | None = None
    force: bool = False
    backend: str = "venv"
    module_name: str | None = None     # a front end that names modules itself (EasyBuild) sets it
    use_wheel_cache: bool = True
    keep_loaded: bool = False          # depend on every loaded module, not only on the evidence
    # Recreating an export: it was built against these modules, which must be loaded now.
    from_export: "ExportedEnv | None" = None
    # create --from on another site: KIND -> the module of this site to use (--map KIND=MODULE)
    module_maps: Mapping[str, str] = field(default_factory=dict)
    # Which packages to compile from source against the central stack: None = every package of
    # the rule table; a list = only these (a name the table lacks compiles from source against
    # nothing in particular). EasyBuild's 'compile_against_stack' parameter.
    source_builds: Sequence[str] | None = None
    # Which front end asks (bridge.frontends): the env's help and exports name its command.
    front_end: str = "envmod"
    # A group-shared env (create --shared): its group and maintainer (store/shared.py).
    shared: "SharedRecord | None" = None
    # The conda backends: conda specs (--conda, an environment.yml's dependencies) and channels
    # (an environment.yml's; none: 'conda_channels:' in the config, else conda's own).
    conda_specs: Sequence[str] = ()
    conda_channels: Sequence[str] = ()
    allow_conda_mpi: bool = False      # accept a solution holding a conda MPI (recorded)


@dataclass
class Plan:
    """A request checked against the discovered stack: the Python, the module type, the build rules."""

    request: CreateRequest
    stack: CentralStack
    python: PythonInfo | None          # None until a conda env brings its own (no central Python then)
    python_module: CentralModule | None
    module_type: str
    rules: Mapping = field(default_factory=dict)
    backend: "Backend | None" = None
    created_from: dict | None = None       # create --from: the export and each substitution

    @property
    def interpreter(self) -> PythonInfo:
        """The env's Python as built against: the central one, or a conda env's own once made."""
        if self.python is None:
            raise BuildError("the environment's Python is not known yet")
        return self.python


def microarchitecture(cache: JsonCache) -> str | None:
    """The host's microarchitecture name (archspec), cached per boot: it cannot change before."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as fh:
            boot = fh.read().strip()
    except OSError:
        boot = None

    def detect():
        try:
            import archspec.cpu

            return archspec.cpu.host().name
        except Exception:   # archspec failing must never fail a create
            return None

    return cache.get_or_compute("uarch", ["uarch-1", boot, os.uname().nodename], detect) if boot else detect()


def env_python_version(env_python: Path, central: PythonInfo) -> str:
    """The Python version of a new env, from the env: its interpreter is a link to the central
    one, whose version :func:`interrogate` read (cached by the file's stamp); an interpreter of
    its own (another backend) is asked."""
    if os.path.realpath(env_python) == os.path.realpath(central.executable):
        return central.version
    return read_python_version(env_python)


def read_python_version(python: Path) -> str:
    """The version of the Python ``python`` (an env's interpreter), asked of it."""
    import subprocess

    proc = subprocess.run([str(python), "-I", "-S", "-c",
                           "import sys; print('%d.%d.%d' % sys.version_info[:3], sys.prefix)"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise BuildError(f"the new environment's Python does not start: {proc.stderr.strip()[-200:]}")
    return proc.stdout.split()[0]


class _TerminatedBySignal(BaseException):
    pass


class CreateSession:
    """Runs one create. Front ends that know the central stack another way (Spack's database,
    EasyBuild's dependencies) pass ``stack`` and skip discovery from the loaded modules."""

    def __init__(self, request: CreateRequest, settings: Settings, reporter: Reporter | None = None,
                 environ: Mapping[str, str] | None = None, stack: CentralStack | None = None,
                 module_system: ModuleSystem | None = None) -> None:
        self.request = request
        self._given = (module_system, stack) if stack is not None else None
        self.settings = settings
        self.store = Store(settings)
        self.reporter = reporter or Reporter()
        self.environ = dict(os.environ if environ is None else environ)
        self.cache = JsonCache(settings.cache_dir)
        self._warm_up: WarmUp | None = None
        self._backend: Backend | None = None      # made before plan when the create starts it early

    # ---- stages ------------------------------------------------------------------------
    def discover(self) -> tuple[ModuleSystem | None, CentralStack]:
        if self._given is not None:
            return self._given
        try:
            system: ModuleSystem | None = detect_module_system(self.environ)
        except NoModuleSystem:
            if not (self.request.python and self.request.module_type):
                raise
            system = None
        stack = discover_stack(system, self.environ, self.cache)
        if any(spack_module_root(m.modulefile) for m in stack.modules):
            # Modules Spack wrote get their DAG hashes and specs recorded as 'spack envmod' does.
            from .spack.stack import describe_loaded_spack_modules

            stack = describe_loaded_spack_modules(stack, self.settings.spack_install_trees)
        return system, stack

    def plan(self, system: ModuleSystem | None, stack: CentralStack) -> Plan:
        request = self.request
        validate_description(request.description)
        backend = self._backend or get_backend(request.backend, self.settings)
        if (request.conda_specs or request.conda_channels or request.allow_conda_mpi) and backend.needs_central_python:
            raise UsageError(f"conda packages, channels and --allow-conda-mpi need a conda backend, not {backend.name}",
                             hint="use --backend conda")
        backend.check()     # its tools, before anything is built
        created_from = None
        if request.from_export is not None:
            created_from = self._map_export(request.from_export, stack)
        python, module = self._central_python(stack, backend)
        module_type = check_module_type(request.module_type or self.settings.module_type
                                        or (system.module_type if system else "lmod"))
        rules: Mapping = {}
        if request.packages or request.requirement_files:
            from .build.install import check_requirements, direct_rule_packages
            from .build.rules import load_rules, select_rules

            rules = select_rules(load_rules(self.settings.build_rules), request.source_builds)
            direct_rule_packages(check_requirements(request.packages), rules, stack)
        for path in request.requirement_files:
            if not Path(path).is_file():
                raise UsageError(f"requirements file not found: {path}")
        if request.requirement_files:
            from .build.install import check_requirement_files

            check_requirement_files(request.requirement_files)
        backend.prepare(request, stack, python, self.environ)     # a conda solve: fails before anything is built
        if not backend.needs_central_python:     # a conda env runs its own Python, made at create
            python, module = None, None
        return Plan(request, stack, python, module, module_type, rules, backend, created_from)

    def _map_export(self, exported: "ExportedEnv", stack: CentralStack) -> dict:
        """Each central module the export was built against, mapped to one this site has loaded
        (refused in one line when none fits); what was substituted, for the record."""
        from .discover.mapping import map_export

        mapped = map_export(exported, stack, self.environ, self.request.module_maps, self.cache,
                            self.reporter, self.settings.spack_install_trees)
        return {"export": str(exported.path), "substitutions": [m.to_record() for m in mapped if m.substituted]}

    def _central_python(self, stack: CentralStack, backend: "Backend") -> tuple[PythonInfo | None, CentralModule | None]:
        """The central Python and its module; a backend with a Python of its own (conda) may do
        without (then its only use is to pin the env's Python to the same major.minor)."""
        try:
            exe, module = find_central_python(stack, self.environ, self.request.python)
        except NoPython:
            if backend.needs_central_python:
                raise
            return None, None
        python = interrogate(exe, self.cache)
        if python.is_venv:
            raise UsageError(f"{exe} belongs to a virtual environment ({python.prefix}); "
                             "give the central Python instead")
        return python, module

    def install(self, plan: Plan, python: Path, backend: "Backend | None" = None) -> "InstallResult | None":
        """What was installed (by the backend's installer: pip's, or uv's); None when nothing was asked for."""
        if not (self.request.packages or self.request.requirement_files):
            return None
        from .build.wheelcache import WheelCache

        cache = None
        if self.request.use_wheel_cache:
            cache = WheelCache(self.settings.wheel_cache_dir, plan.stack.modules, plan.interpreter.executable)
        backend = backend or get_backend(self.request.backend, self.settings)
        installer = backend.installer(python, self.reporter, plan.rules, plan.stack, plan.interpreter, cache)
        return installer.install(self.request.packages, self.request.requirement_files)

    def dependencies(self, plan: Plan, links: Sequence, requirements: Sequence,
                     extra: Sequence[CentralModule] = ()) -> list[CentralModule]:
        """The modules the env's module loads: the Python's, plus every module providing a
        library the env links or a Python package an installed package requires (evidence from
        the scan), in load order, with every module that opens the Lmod subtree one of them lives
        in loaded before it (:func:`bridge.hierarchy.load_order`), whichever front end asked.
        ``keep_loaded`` keeps every loaded module instead. ``extra``: what the backend needs (the
        module providing conda), in the stack's order with the rest."""
        needed = self._needed_modules(plan, links, requirements)
        needed += [m for m in extra if m not in needed]
        order = {m.name: i for i, m in enumerate(plan.stack.modules)}
        return load_order(plan.stack, sorted(needed, key=lambda m: order.get(m.name, len(order))))

    @staticmethod
    def _needed_modules(plan: Plan, links: Sequence, requirements: Sequence) -> list[CentralModule]:
        if plan.request.keep_loaded:
            return list(plan.stack.modules)
        if not links and not requirements:     # nothing installed: the Python's module alone
            return [plan.python_module] if plan.python_module else []
        from .scan.evidence import required_modules

        names = required_modules(links, requirements,
                                 plan.python_module.name if plan.python_module else None,
                                 order=[m.name for m in plan.stack.modules])
        by_name = {m.name: m for m in plan.stack.modules}
        return [by_name[n] for n in names if n in by_name]

    def scan(self, plan: Plan, target: Path, final: Path) -> tuple[list, list]:
        """What the env really links, and which central packages its packages require."""
        from .scan.evidence import scan_links, scan_requirements

        links = scan_links(target, plan.stack.modules, plan.interpreter.executable, as_prefix=final)
        requirements = scan_requirements(target, plan.stack.modules, plan.interpreter)
        providers = sorted({f"{e.provider} ({e.soname or e.needs})" for e in links
                            if e.provider not in ("system", "env", "missing") and e.via is None})
        missing = sorted({e.needs for e in links if e.provider == "missing"})
        self.reporter.step("scan", f"{len({e.file for e in links})} compiled files link "
                           + (", ".join(providers) or "no central libraries")
                           + (f"; NOT FOUND: {', '.join(missing)}" if missing else ""))
        return links, requirements

    def make_record(self, plan: Plan, prefix: Path, version: str, installed: "InstallResult | None",
                    deps: list[CentralModule], system: ModuleSystem | None,
                    links: Sequence = (), requirements: Sequence = ()) -> EnvRecord:
        python = plan.interpreter
        return EnvRecord(
            name=self.request.name, backend=self.request.backend, prefix=str(prefix),
            description=self.request.description,
            python=PythonRecord.of(python, version, plan.python_module.name if plan.python_module else None),
            module=ModuleRecord(name=self.request.module_name or f"{self.request.name}/{module_version(version)}",
                                type=plan.module_type,
                                depends_on=[m.name for m in deps], keep_loaded=self.request.keep_loaded),
            created=self.provenance(system, front_end=self.request.front_end),
            central_modules=central_module_records(plan.stack.modules),
            packages=[PackageRecord(name=p.name, version=p.version, install="wheel" if p.from_wheel else "source",
                                    requested=p.requested,
                                    built_against=p.build.module_names if p.build else [],
                                    build_env=dict(p.build.env) if p.build else {},
                                    cached_wheel=p.cached)
                      for p in (installed.packages if installed else [])],
            requested=list(self.request.packages) + [f"-r {p}" for p in self.request.requirement_files],
            links=list(links), requirements=list(requirements), shared=self.request.shared,
            created_from=plan.created_from,
        )

    def provenance(self, system: ModuleSystem | None, front_end: str | None = None) -> Provenance:
        """Who made or rebuilt the env, now, on this host, with which module system and log."""
        return Provenance.now(microarchitecture=microarchitecture(self.cache),
                              module_system=system.name if system else None,
                              log=str(self.reporter.log_path) if self.reporter.log_path else None,
                              front_end=front_end)

    # ---- the whole pipeline ------------------------------------------------------------
    def run(self) -> EnvRecord:
        name = validate_new_env_name(self.request.name)
        previous = signal.getsignal(signal.SIGTERM)

        def on_term(signum, frame):
            raise _TerminatedBySignal()

        try:
            signal.signal(signal.SIGTERM, on_term)
        except ValueError:      # not the main thread: leave signals alone
            previous = None
        try:
            self._refuse_unless_maintainer(name)
            with self.store.lock(name, "creating it"):
                if self.store.exists(name) and not self.request.force:
                    raise EnvExists(f"environment {name!r} already exists at {self.store.env_path(name)}",
                                    hint=f"use --force to replace it, or '{user_command()} remove' it first")
                return self._create(name)
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)

    def _refuse_unless_maintainer(self, name: str) -> None:
        """A group-shared env of that name is replaced by its maintainer alone (asked before its
        lock, which is the maintainer's too)."""
        if self.store.exists(name):
            from .store.shared import refuse_unless_maintainer

            try:
                record = self.store.load(name)
            except EnvmodError:
                return              # an unreadable record: the create's own checks say so
            refuse_unless_maintainer(record, "replace it")

    def _create(self, name: str) -> EnvRecord:
        backend = self._backend = get_backend(self.request.backend, self.settings)
        backend.start_early()       # rattler's worker starts while we plan
        try:
            system, stack = self.discover()
            plan = self.plan(system, stack)
            self.report_plan(system, plan)
            self._warm_up = create_warm_up([plan.module_type], self.settings.templates, self.settings.cache_dir).start()
            return self.stage_and_place(name, "create", lambda staging, final: self.build(plan, staging, final, system),
                                        in_place=plan.backend is not None and plan.backend.builds_in_place)
        finally:
            self._join_warm_up()
            backend.close()

    def _join_warm_up(self) -> None:
        """Wait for the warm-up (bridge.warmup) if one runs; what failed in it goes to the log only."""
        if self._warm_up is not None:
            for failure in self._warm_up.join():
                self.reporter.note(f"warm-up (harmless, done again in its place): {failure}")
            self._warm_up = None

    def report_plan(self, system: ModuleSystem | None, plan: Plan) -> None:
        mods = ", ".join(f"{m.name} ({m.kind})" for m in plan.stack.modules) or "no modules loaded"
        self.reporter.step("discover", f"{system.name if system else 'no module system'}: {mods}")
        if plan.python is None:
            self.reporter.step("python", f"the {plan.request.backend} env's own")
            return
        self.reporter.step("python", f"{plan.python.executable} (Python {plan.python.version})"
                           + (f" from {plan.python_module.name}" if plan.python_module else ""))

    def stage_and_place(self, name: str, action: str, populate: Callable[[Path, Path], EnvRecord],
                        in_place: bool = False) -> EnvRecord:
        """Run ``populate(staging, final)`` in a fresh staging dir, then put the env in place and
        write its modulefiles last; on any failure or interruption nothing is put in place.
        ``in_place`` (a conda env, which cannot move): the staging dir is the env's own build
        directory, its final place, and going live is linking the env's name to it."""
        r = self.reporter
        staging = self.store.new_build(name) if in_place else self.store.new_staging(name)
        final = staging if in_place else self.store.env_path(name)
        unplaced: Path | None = staging      # what to discard: the staging dir until it is put in place
        r.open_log(self.store.log_dir(name) / time.strftime(f"{action}-%Y%m%d-%H%M%S.log"))
        replaced: Path | None = None
        try:
            record = populate(staging, final)
            # Everything that can fail happens before the env goes live: the modulefiles' text is
            # rendered (a broken site template fails here, the old env untouched) and their
            # directories checked; only making and writing them is left for after the rename.
            modulefiles = self._render_modulefiles(record)
            write_record(record, staging)
            if record.shared is not None:     # group-shared: group-readable whatever a tool copied
                from .store.shared import share_env_tree

                share_env_tree(staging, record.shared)
            # The modulefiles' directories are made only after the env goes live: made before, a
            # create killed in between would leave an empty module directory for no env.
            self.store.check_can_make(path.parent for path, _ in modulefiles)
            from .store.shared import shared_file_mode
            # From here on the env goes live: let no signal split putting it and its module in place.
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
            try:
                replaced = self.store.commit_link(name, staging) if in_place else self.store.commit(name, staging)
                unplaced = None
                for path, text in modulefiles:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    atomic_write_text(path, text, 0o644 if record.shared is None else shared_file_mode())
                self._drop_stale_modulefiles(record, replaced)
            finally:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
            r.step("module", f"{record.module.name} ({', '.join(record.module.files)}) needs "
                   f"{', '.join(record.module.depends_on) or 'no central modules'}")
            return record
        except (KeyboardInterrupt, _TerminatedBySignal):
            raise Interrupted(f"{action} of {name!r} interrupted; nothing was put in place",
                              log=str(r.log_path)) from None
        except BuildError as exc:
            if exc.log is None:
                exc.log = str(r.log_path)
            raise
        finally:
            if unplaced is not None:
                self.store.discard(unplaced)
            self.store.discard(replaced)
            r.close_log()

    def _render_modulefiles(self, record: EnvRecord) -> list[tuple[Path, str]]:
        """Each modulefile the record names, as (path, text): rendered before the env is put in
        place, so that a broken template fails the create with nothing changed."""
        try:
            return [(modulefile_path(self.settings.modules_dir, record, module_type),
                     render_modulefile(record, module_type, self.settings.templates, self.settings.cache_dir))
                    for module_type in record.module.files]
        except ConfigError as exc:
            raise ConfigError(exc.message, hint=f"{exc.hint}; nothing was put in place" if exc.hint else
                              "nothing was put in place") from None

    def build(self, plan: Plan, target: Path, final: Path, system: ModuleSystem | None = None) -> EnvRecord:
        """Create the env at ``target`` (to live at ``final``), install, and return its record.

        No lock, no rename, no modulefile: :meth:`run` adds those; EasyBuild builds in place.
        """
        backend = plan.backend or get_backend(self.request.backend, self.settings)
        backend.start_create(plan.python, target, final, self.request.name)   # type: ignore[arg-type]
        try:
            if plan.python is None:      # a conda env: its own Python is the one packages are built for
                plan = replace(plan, python=interrogate(str(backend.python(target)), self.cache))
            version = env_python_version(backend.python(target), plan.interpreter)
            base = plan.python_module.name if plan.python_module else plan.interpreter.executable
            self.reporter.step("create", f"{backend.name} over {base}" if backend.needs_central_python
                               else f"{backend.name} env with its own Python {version}")
            installed = self.install(plan, backend.python(target), backend)
        except BaseException:
            backend.close()          # nothing of the create runs on in an env about to be discarded
            raise
        backend.finish_create()      # (venv's activate scripts, written while pip installed)
        if target != final:
            from .build.backends.venv import relocate

            relocate(target, target, final)
        self._join_warm_up()
        # A conda env holds compiled files of its own (its Python, its packages' libraries) whatever pip added.
        scanned = (installed and installed.packages) or not backend.needs_central_python
        links, requirements = self.scan(plan, target, final) if scanned else ([], [])
        deps = self.dependencies(plan, links, requirements, backend.extra_dependencies(plan.stack))
        record = self.make_record(plan, final, version, installed, deps, system, links, requirements)
        backend.annotate(record)
        module_path = modulefile_path(self.settings.modules_dir, record, plan.module_type)
        record.module.files = {plan.module_type: str(module_path)}
        return record

    def _drop_stale_modulefiles(self, record: EnvRecord, replaced: Path | None) -> None:
        """A replaced env's modulefiles that the new one did not overwrite would load stale text."""
        if replaced is None:
            return
        try:
            old = read_record(replaced / RECORD_FILE)
        except EnvmodError:
            return
        keep = set(record.module.files.values())
        modules_dir = self.settings.modules_dir.resolve()
        for old_path in old.module.files.values():
            path = Path(old_path)
            if old_path not in keep and path.is_file() and modules_dir in path.resolve().parents:
                path.unlink()
