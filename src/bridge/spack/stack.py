"""The central stack of a Spack site: installed specs and Spack's module names as CentralModules.

Two front ends describe a Spack site, and both end here so they agree to the byte:

* ``spack envmod`` (the Spack extension, ``spack-ext/``) asks Spack itself: its database
  (upstreams included), the active Spack environment, and Spack's module configuration
  (``spack.modules.get_module``, the Lmod layout's unlocked paths);
* the standalone ``envmod`` reads the same facts from plain files with
  :mod:`bridge.spack.tree` (``.spack-db/index.json`` and ``module-index.yaml``), without Spack:
  :func:`describe_loaded_spack_modules`.

Either way a spec becomes a :class:`SpecFacts`, its module a :class:`SpackModule`, and
:func:`central_module` turns the pair into the :class:`~bridge.stack.CentralModule` the create
pipeline uses. This module never imports Spack.

What a CentralModule of a Spack spec holds:

* ``name``/``modulefile``: the module Spack wrote for the module type the env's module is
  written in (Lmod names for a Lua module, Tcl names for a Tcl one);
* ``prefix``: the spec's prefix, except for a parallel HDF5 of a system package, where it is
  the flavour's own root (Debian: ``/usr/lib/x86_64-linux-gnu/hdf5/openmpi``, which holds
  ``include/hdf5.h`` and ``lib/libhdf5.so``) so ``HDF5_DIR={hdf5.prefix}`` builds against it;
* ``paths``: search paths that identify the spec. Externals in a system prefix (``/usr``)
  share ``/usr/bin`` and ``/usr/lib/<multiarch>`` with everything else, so they get their own
  specific directories instead (Debian's ``.../openmpi/lib``, ``.../hdf5/openmpi``); only the
  Python keeps ``/usr/bin``, which is where its interpreter is;
* ``facts``: ``python``/``mpicc``/``parallel`` for the build rules, and the Spack evidence:
  ``spack_hash`` (the full DAG hash, so a check can tell that a module now points at another
  build), ``spack_spec``, ``spack_prefix``, ``spack_external``, ``spack_modules`` (the spec's
  module name, file and MODULEPATH dir for every module type the site writes, so the env's
  module can be rewritten in the other type), ``spack_modulepath`` and
  ``spack_unlocks`` (the Lmod hierarchy), and for system externals ``libraries``: the real
  files behind the specific lib dirs (Debian's ``openmpi/lib/libmpi.so`` is a link to
  ``/usr/lib/x86_64-linux-gnu/libmpi.so.40``), which is what a library scanner resolves to.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from ..discover.hierarchy import (  # noqa: F401 -- re-exported: the Spack extension and tests use them from here
    load_order,
    modulepath_of,
    modulepath_with_record,
    record_modulepaths,
    root_modulepaths,
)
from ..discover.modsys import ModuleSystem
from ..discover.stack import SYSTEM_PREFIXES, CentralModule, CentralStack, spack_module_root
from ..errors import DiscoveryError, PlanError, UsageError
from ..store.record import EnvRecord

#: The three roles a create takes from a Spack site, in the order their modules load.
ROLES = ("python", "mpi", "hdf5")
#: Spack package names of compilers (the kind of a module that unlocks a compiler subtree).
COMPILER_NAMES = frozenset({"gcc", "llvm", "clang", "intel-oneapi-compilers", "intel-oneapi-compilers-classic",
                            "nvhpc", "aocc", "cce", "xl", "fj", "oneapi"})


# --------------------------------------------------------------------------- what front ends give


@dataclass(frozen=True)
class SpecFacts:
    """One installed spec, as Spack's API or the database file describes it."""

    name: str
    version: str
    dag_hash: str
    prefix: str
    external: bool = False
    parallel: bool | None = None       # hdf5: its +mpi variant (None: not an hdf5 or unknown)
    mpi_name: str | None = None        # the spec's MPI dependency (hdf5+mpi -> openmpi), if any
    mpi_hash: str | None = None
    dependency_hashes: tuple[str, ...] = ()   # its whole DAG below it, nearest first (for the hierarchy)

    @property
    def short_spec(self) -> str:
        """``name@version/hash7``: what ``spack find`` shows and ``spack`` accepts back."""
        return f"{self.name}@{self.version}/{self.dag_hash[:7]}"

    def __str__(self) -> str:
        return self.short_spec


@dataclass(frozen=True)
class SpackModule:
    """The module Spack wrote for one spec, in the module type the env's module uses."""

    use_name: str
    path: str
    modulepath: str                                   # the MODULEPATH dir that makes use_name loadable
    unlocks: tuple[str, ...] = ()                     # dirs loading it adds to MODULEPATH (Lmod hierarchy)
    #: every module type the site writes -> {"name", "modulefile", "modulepath"} of this spec's module
    names: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


_LUA_MODULEPATH = re.compile(r'^\s*prepend_path\(\s*"MODULEPATH"\s*,\s*"([^"]+)"', re.M)
_TCL_MODULEPATH = re.compile(r'^\s*(?:prepend-path\s+MODULEPATH|module\s+use(?:\s+--prepend)?)\s+\{?([^\s}]+)\}?', re.M)


def unlocks_from_modulefile(path: str) -> tuple[str, ...]:
    """The MODULEPATH dirs a Spack modulefile opens unconditionally (an MPI or compiler module
    in an Lmod hierarchy). Read from the file, for modules Spack's layout cannot be asked about
    (upstreams, or no Spack at all)."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ()
    pattern = _LUA_MODULEPATH if path.endswith(".lua") else _TCL_MODULEPATH
    return tuple(dict.fromkeys(pattern.findall(text)))


def is_core_modulepath(modulepath: str, module_root: str) -> bool:
    """Whether ``modulepath`` is a root of the site's tree (``<root>/<arch>/Core`` for Lmod,
    ``<root>/<arch>`` for Tcl) rather than a subtree some other module opens."""
    try:
        rel = Path(modulepath).relative_to(module_root)
    except ValueError:
        return False
    return len(rel.parts) == 1 or (len(rel.parts) == 2 and rel.parts[1] == "Core")


# --------------------------------------------------------------------------- layouts of prefixes


@dataclass(frozen=True)
class Layout:
    """Where one spec's files are: the dirs that identify it, and its real library files."""

    root: str
    bin_dirs: tuple[str, ...] = ()
    lib_dirs: tuple[str, ...] = ()
    include_dirs: tuple[str, ...] = ()
    libraries: tuple[str, ...] = ()


class _Fs:
    """File system probes under a root (``/`` normally; a fake tree in tests)."""

    def __init__(self, sysroot: str = "/") -> None:
        self.sysroot = os.path.abspath(sysroot)

    def real(self, path: str) -> str:
        return path if self.sysroot == "/" else self.sysroot + path

    def unreal(self, path: str) -> str:
        if self.sysroot == "/":
            return path
        return path[len(self.sysroot):] if path.startswith(self.sysroot + "/") else path

    def isdir(self, path: str) -> bool:
        return os.path.isdir(self.real(path))

    def isfile(self, path: str) -> bool:
        return os.path.isfile(self.real(path))

    def executable(self, path: str) -> bool:
        return os.path.isfile(self.real(path)) and os.access(self.real(path), os.X_OK)

    def glob(self, pattern: str) -> list[str]:
        return sorted(self.unreal(p) for p in glob.glob(self.real(pattern)))

    def realpath(self, path: str) -> str:
        return self.unreal(os.path.realpath(self.real(path)))

    def read(self, path: str) -> str | None:
        try:
            with open(self.real(path), encoding="utf-8", errors="replace") as fh:
                return fh.read()
        except OSError:
            return None


def _join(*parts: str) -> str:
    return os.path.normpath(os.path.join(*parts))


def _multiarch_dirs(fs: _Fs, prefix: str) -> list[str]:
    """``<prefix>/lib/<triplet>`` dirs (Debian's multiarch: x86_64-linux-gnu, aarch64-linux-gnu)."""
    return [d for d in fs.glob(_join(prefix, "lib", "*-linux-*")) if fs.isdir(d)]


def _shared_libraries(fs: _Fs, dirs: Iterable[str], pattern: str = "lib*.so*") -> tuple[str, ...]:
    found = []
    for directory in dirs:
        for path in fs.glob(_join(directory, pattern)):
            real = fs.realpath(path)
            if fs.isfile(real) and re.search(r"\.so(\.|$)", os.path.basename(real)):
                found.append(real)
    return tuple(sorted(set(found)))


def _existing(fs: _Fs, dirs: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(d for d in dirs if fs.isdir(d)))


def layout_of(spec: SpecFacts, role: str, fs: _Fs | None = None) -> Layout:
    """The dirs and libraries that belong to ``spec`` alone.

    A prefix of its own (anything Spack built, an external in ``/opt/...``) is specific as it
    is. In a system prefix the package's own corner is used: Debian puts OpenMPI's and MPICH's
    link dirs at ``<prefix>/lib/<triplet>/<name>/{lib,include}`` and each HDF5 flavour at
    ``<prefix>/lib/<triplet>/hdf5/<openmpi|mpich|serial>``; the Python's own files are its
    ``bin`` and ``libpython<X.Y>``.
    """
    fs = fs or _Fs()
    prefix = os.path.normpath(spec.prefix)
    if prefix not in SYSTEM_PREFIXES:       # a spec there gets its own specific directories
        return Layout(prefix, _existing(fs, [_join(prefix, "bin")]),
                      _existing(fs, [_join(prefix, "lib"), _join(prefix, "lib64")]),
                      _existing(fs, [_join(prefix, "include")]))
    triplets = _multiarch_dirs(fs, prefix)
    if role == "python":
        mm = ".".join(spec.version.split(".")[:2])
        libs = _shared_libraries(fs, [*triplets, _join(prefix, "lib")], f"libpython{mm}*.so*")
        return Layout(prefix, (_join(prefix, "bin"),), (),
                      _existing(fs, [_join(prefix, "include", f"python{mm}")]), libs)
    if role == "hdf5" or spec.name == "hdf5":
        flavour = (spec.mpi_name or "openmpi") if spec.parallel else "serial"
        for base in triplets:
            root = _join(base, "hdf5", flavour)
            if fs.isfile(_join(root, "include", "hdf5.h")):
                return Layout(root, (), (root,), (_join(root, "include"),), _shared_libraries(fs, [root]))
        dirs = _existing(fs, [*triplets, _join(prefix, "lib64"), _join(prefix, "lib")])
        return Layout(prefix, (), dirs, _existing(fs, [_join(prefix, "include")]),
                      _shared_libraries(fs, dirs, "libhdf5*.so*"))
    for base in triplets:
        own = _join(base, spec.name)
        if fs.isdir(_join(own, "lib")):
            lib = _join(own, "lib")
            return Layout(prefix, (), (lib,), _existing(fs, [_join(own, "include")]), _shared_libraries(fs, [lib]))
    return Layout(prefix)


# --------------------------------------------------------------------------- spec -> CentralModule


def _kind_of(role: str, spec: SpecFacts) -> str:
    if role in ROLES:
        return role
    return "compiler" if spec.name in COMPILER_NAMES else "other"


def _python_executable(spec: SpecFacts, layout: Layout, fs: _Fs) -> str | None:
    mm = ".".join(spec.version.split(".")[:2])
    for directory in layout.bin_dirs or (_join(spec.prefix, "bin"),):
        for exe in (f"python{mm}", "python3", "python"):
            candidate = _join(directory, exe)
            if fs.executable(candidate):
                return candidate
    return None


def _hdf5_parallel(spec: SpecFacts, layout: Layout, fs: _Fs) -> bool:
    if spec.parallel is not None:
        return spec.parallel
    for inc in layout.include_dirs:
        text = fs.read(_join(inc, "H5pubconf.h"))
        if text is not None:
            return "#define H5_HAVE_PARALLEL 1" in text
    return False


def _build_facts(spec: SpecFacts, kind: str, layout: Layout, fs: _Fs) -> dict[str, Any]:
    """What the build rules read of a module of ``kind``: the Python's interpreter, the MPI's
    ``mpicc``, whether the HDF5 is parallel."""
    facts: dict[str, Any] = {}
    if kind == "python":
        exe = _python_executable(spec, layout, fs)
        if exe:
            facts["python"] = exe
    elif kind == "mpi":
        mpicc = _join(spec.prefix, "bin", "mpicc")
        if fs.executable(mpicc):
            facts["mpicc"] = mpicc
    elif kind == "hdf5":
        facts["parallel"] = _hdf5_parallel(spec, layout, fs)
    return facts


def central_module(spec: SpecFacts, module: SpackModule, role: str, *, fs: _Fs | None = None) -> CentralModule:
    """``spec`` and its module as the create pipeline sees a central module."""
    fs = fs or _Fs()
    kind = _kind_of(role, spec)
    layout = layout_of(spec, kind, fs)
    paths = {var: dirs for var, dirs in (("PATH", layout.bin_dirs), ("LIBRARY_PATH", layout.lib_dirs),
                                         ("CPATH", layout.include_dirs)) if dirs}
    facts = _build_facts(spec, kind, layout, fs)
    facts.update({
        "spack_hash": spec.dag_hash,
        "spack_spec": spec.short_spec,
        "spack_prefix": spec.prefix,
        "spack_external": spec.external,
        "spack_modules": {kind: dict(entry) for kind, entry in sorted((module.names or {}).items())},
        "spack_modulepath": module.modulepath,
    })
    if module.unlocks:
        facts["spack_unlocks"] = list(module.unlocks)
    if layout.libraries:
        facts["libraries"] = list(layout.libraries)
    return CentralModule(name=module.use_name, modulefile=module.path, kind=kind, prefix=layout.root,
                         paths=paths, prefixes={}, facts=facts)


def build_stack(chosen: Mapping[str, SpecFacts], modules: Mapping[str, SpackModule],
                module_system: ModuleSystem | None = None, extra: Sequence[SpecFacts] = (),
                *, fs: _Fs | None = None) -> CentralStack:
    """A CentralStack of the chosen specs (role -> spec) and the ``extra`` modules that open the
    Lmod subtrees they live in (modules keyed by DAG hash). The Python comes first: the
    pipeline tells its interpreter's module by the first module holding its ``bin``."""
    out: list[CentralModule] = []
    for role in ROLES:
        spec = chosen.get(role)
        if spec is not None:
            out.append(central_module(spec, modules[spec.dag_hash], role, fs=fs))
    for spec in extra:
        if all(m.facts.get("spack_hash") != spec.dag_hash for m in out):
            out.append(central_module(spec, modules[spec.dag_hash], "other", fs=fs))
    return CentralStack(module_system, tuple(out))


# --------------------------------------------------------------------------- choosing specs


def describe(specs: Iterable[SpecFacts]) -> str:
    return ", ".join(f"{s.short_spec}{' (external ' + s.prefix + ')' if s.external else ''}" for s in specs) or "none"


def choose_specs(candidates: Mapping[str, Sequence[SpecFacts]], matching: Mapping[str, Sequence[SpecFacts] | None],
                 requested: Mapping[str, str | None], *, need_libraries: bool, where: str = "installed",
                 option: Callable[[str], str] = lambda role: f"--{role}",
                 needed: Mapping[str, str] | None = None) -> dict[str, SpecFacts]:
    """Pick the Python, MPI and HDF5 of a create.

    ``candidates[role]`` are all specs of that role (``where`` says from where: the installed
    specs, a Spack environment); ``matching[role]`` those that satisfy the user's SPEC, or None
    when none was given; ``requested[role]`` the text given (``none`` leaves the role out).
    One candidate is taken by default; several are an error that lists them, unless nothing
    will be compiled against them (``need_libraries`` false: no packages asked for), in which
    case MPI and HDF5 are left out. An HDF5 built against an MPI decides the MPI, unless the
    MPI was given: an explicit choice always wins (``none`` leaves out the HDF5s built against
    an MPI) or the choice is refused.

    ``needed[role]`` names a requested package that must be compiled against that role
    (``{"mpi": "mpi4py"}``): ``none`` for it is refused at once, and no hint offers it.
    """
    choice = _SpecChoice(candidates, matching, requested, need_libraries, where, option, needed or {})
    choice.refuse_none_for_needed()
    mpi_given = requested.get("mpi") is not None
    mpi = choice.pick("mpi", choice.pool("mpi"), False) if mpi_given else None
    hdf5 = choice.pick("hdf5", choice.hdf5_pool(mpi) if mpi_given else choice.pool("hdf5"), False)
    if hdf5 is not None and hdf5.mpi_hash:
        mpi = choice.mpi_of_hdf5(hdf5, mpi, mpi_given)
    if mpi is None and not mpi_given:
        mpi = choice.pick("mpi", choice.pool("mpi"), False)
    python = choice.pick("python", choice.pool("python"), True)
    assert python is not None
    chosen = {"python": python}
    if mpi is not None:
        chosen["mpi"] = mpi
    if hdf5 is not None:
        chosen["hdf5"] = hdf5
    return chosen


@dataclass(frozen=True)
class _SpecChoice:
    """The inputs of :func:`choose_specs`, and how it picks each role."""

    candidates: Mapping[str, Sequence[SpecFacts]]
    matching: Mapping[str, Sequence[SpecFacts] | None]
    requested: Mapping[str, str | None]
    need_libraries: bool
    where: str
    option: Callable[[str], str]
    needed: Mapping[str, str]

    def refuse_none_for_needed(self) -> None:
        for role, package in self.needed.items():
            if self.requested.get(role) == "none":
                raise PlanError(f"{self.option(role)} none: {package} must be compiled against an {role.upper()}",
                                hint=f"name one with {self.option(role)} SPEC, or leave {self.option(role)} out")

    def pool(self, role: str) -> list[SpecFacts]:
        """The specs the role may take: those matching the SPEC given, else every candidate."""
        given = self.matching.get(role)
        return list(self.candidates.get(role, ()) if given is None else given)

    def hdf5_pool(self, mpi: SpecFacts | None) -> list[SpecFacts]:
        """The HDF5s left once an MPI was named (or none): those built against another MPI are
        not candidates, unless an HDF5 was named too (then a mismatch is refused later)."""
        pool = self.pool("hdf5")
        if self.requested.get("hdf5") is not None:
            return pool
        narrowed = [h for h in pool if h.mpi_hash in (None, mpi.dag_hash if mpi else None)]
        if mpi is None and not narrowed and pool and "hdf5" in self.needed:
            raise PlanError(f"{self.option('mpi')} none leaves no {self.where} HDF5 for {self.needed['hdf5']}: "
                            f"{describe(pool)} {'is' if len(pool) == 1 else 'are'} built against an MPI",
                            hint=f"leave out {self.option('mpi')} none, or install a serial HDF5 with Spack")
        return narrowed

    def mpi_of_hdf5(self, hdf5: SpecFacts, mpi: SpecFacts | None, mpi_given: bool) -> SpecFacts:
        """The MPI an HDF5 built against one decides: it must be the MPI given, if any."""
        built = f"{hdf5.short_spec} was built against {hdf5.mpi_name}/{(hdf5.mpi_hash or '')[:7]}"
        if mpi is None and mpi_given:
            raise PlanError(f"{built}, which {self.option('mpi')} none leaves out",
                            hint=f"pick a serial HDF5, or leave out {self.option('mpi')} none")
        if mpi is not None and mpi.dag_hash != hdf5.mpi_hash:
            raise PlanError(f"{built}, not {mpi.short_spec}",
                            hint=f"pick an HDF5 built against {mpi.short_spec}, or leave out {self.option('mpi')}")
        if mpi is not None:
            return mpi
        by_hash = {s.dag_hash: s for s in self.candidates.get("mpi", ())}
        found = by_hash.get(hdf5.mpi_hash or "")
        if found is None:
            raise PlanError(f"{built}, which is not among the {self.where} MPI specs "
                            f"({describe(self.candidates.get('mpi', ()))})")
        return found

    def pick(self, role: str, pool: Sequence[SpecFacts], required: bool) -> SpecFacts | None:
        """The spec of ``role`` from ``pool``: the one the SPEC given matches, else the only one."""
        text = self.requested.get(role)
        if text == "none":
            if role == "python":
                raise UsageError(f"{self.option('python')} none: an environment needs a Python")
            return None
        if text is not None:
            return self._pick_named(role, text, list(pool))
        return self._pick_default(role, list(pool), required)

    def _pick_named(self, role: str, text: str, found: list[SpecFacts]) -> SpecFacts:
        option, where = self.option(role), self.where
        if not found:
            raise PlanError(f"{option} {text}: no {where} spec matches",
                            hint=f"{where} {role} specs: {describe(self.candidates.get(role, ()))}")
        if len(found) > 1:
            raise PlanError(f"{option} {text} matches {len(found)} {where} specs: {describe(found)}",
                            hint=f"pick one, e.g. {option} /{found[0].dag_hash[:7]}")
        return found[0]

    def _pick_default(self, role: str, found: list[SpecFacts], required: bool) -> SpecFacts | None:
        option, where = self.option(role), self.where
        if len(found) == 1:
            return found[0]
        if not found:
            if required:
                raise PlanError(f"no {where} {role} spec", hint=f"{where} specs hold no {role}; install one with Spack")
            return None
        if not required and not self.need_libraries:
            return None
        raise PlanError(f"{len(found)} {where} {role} specs: {describe(found)}",
                        hint=f"pick one with {option} SPEC, e.g. {option} /{found[0].dag_hash[:7]}"
                        + ("" if role == "python" or role in self.needed else f", or {option} none"))


def format_spack_builds(record: EnvRecord) -> list[str]:
    """One line per central module of ``record`` that Spack built or registered: its name, spec
    and full DAG hash (what ``envmod show`` prints; ``--json`` has them in the facts)."""
    lines = []
    for module in record.central_modules:
        dag_hash = module.facts.get("spack_hash")
        if not dag_hash:
            continue
        spec = module.facts.get("spack_spec") or dag_hash[:7]
        external = f" (external {module.facts.get('spack_prefix')})" if module.facts.get("spack_external") else ""
        lines.append(f"{module.name}: {spec} {dag_hash}{external}")
    return lines


def requested_from_export(requested: Mapping[str, str | None], spack_hashes: Mapping[str, str]) -> dict[str, str | None]:
    """``requested`` (role -> SPEC) with each role not given taken from an export's DAG hashes
    (``/hash``), so ``spack envmod create --from FILE`` builds against the same specs. An MPI or
    HDF5 the exported env did not load is left out (``none``), as it was; an export without
    Spack hashes (of a site without Spack) leaves the choice as it is."""
    def spec(role: str) -> str | None:
        if requested.get(role) is not None or not spack_hashes:
            return requested.get(role)
        if role in spack_hashes:
            return f"/{spack_hashes[role]}"
        return None if role == "python" else "none"

    return {role: spec(role) for role in ROLES}


def roles_needed(packages: Sequence[str], rules: Mapping[str, Any]) -> dict[str, str]:
    """Role -> the first of ``packages`` (pip requirements) whose build rule compiles it against
    that role (``{"mpi": "mpi4py"}``): the roles ``none`` cannot be chosen for."""
    from ..build.install import check_requirements

    needed: dict[str, str] = {}
    for name in check_requirements(packages):
        rule = rules.get(name)
        for role in (rule.against if rule else ()):
            needed.setdefault(role, name)
    return needed


def choose_module_type(explicit: str | None, configured: str | None, system: ModuleSystem | None,
                       enabled: Sequence[str], source: str = "Spack's modules.yaml (modules:default:enable)") -> str:
    """The module type of the env's module, which is also the type whose Spack names it loads:
    ``--module-type``, else envmod's config, else the one of the module system in this shell,
    else the first the site writes. It must be one the site writes."""
    if not enabled:
        raise DiscoveryError(f"this Spack site writes no modules ({source} is empty)",
                             hint="ask your site to enable lmod or tcl modules")
    wanted = explicit or configured
    if wanted:
        if wanted not in enabled:
            raise PlanError(f"the site writes no {wanted} modules with Spack ({source}: {', '.join(enabled)})",
                            hint=f"use --module-type {enabled[0]}")
        return wanted
    if system is not None and system.module_type in enabled:
        return system.module_type
    return enabled[0]


# --------------------------------------------------------------------------- the Lmod hierarchy
# load_order and the MODULEPATH helpers live in the core (bridge.hierarchy), where every
# session orders its modules; imported above so the Spack extension and check find them here.


def _spack_module(central, module_type: str) -> Mapping[str, str] | None:
    entry = (central.facts.get("spack_modules") or {}).get(module_type)
    return entry if isinstance(entry, Mapping) and entry.get("name") else None


def with_module_type(record: EnvRecord, module_type: str) -> EnvRecord:
    """``record`` with its central module names switched to ``module_type``'s Spack names, when the
    record knows them, so ``envmod module NAME --module-type tcl`` writes loadable names."""
    renamed, entries = {}, {}
    for central in record.central_modules:
        entry = _spack_module(central, module_type)
        if entry and entry["name"] != central.name:
            renamed[central.name] = entry["name"]
            entries[central.name] = entry
    if not renamed:
        return record
    record.module.depends_on = [renamed.get(n, n) for n in record.module.depends_on]
    if record.python.module in renamed:
        record.python.module = renamed[record.python.module]
    for central in record.central_modules:
        if central.name in renamed:
            entry = entries[central.name]
            new = entry["name"]
            central.name, central.version = new, new.split("/", 1)[1] if "/" in new else None
            central.modulefile = entry.get("modulefile") or central.modulefile
            if entry.get("modulepath"):
                central.facts["spack_modulepath"] = entry["modulepath"]
    for package in record.packages:
        package.built_against = [renamed.get(n, n) for n in package.built_against]
    for evidence in [*getattr(record, "links", ()), *getattr(record, "requirements", ())]:
        evidence.provider = renamed.get(evidence.provider, evidence.provider)
    return record


# --------------------------------------------------------------------------- without Spack


def spec_facts_from_tree(tree, spec) -> SpecFacts:
    """A :class:`bridge.spacktree.SpackSpec` as :class:`SpecFacts`."""
    mpi = tree.dependency(spec, "mpi") if spec.name != "mpi" else None
    if mpi is not None and mpi.dag_hash == spec.dag_hash:
        mpi = None
    parallel = spec.parameters.get("mpi") if spec.name == "hdf5" else None
    return SpecFacts(name=spec.name, version=spec.version, dag_hash=spec.dag_hash,
                     prefix=str(spec.external_path or spec.prefix), external=spec.external,
                     parallel=parallel if isinstance(parallel, bool) else None,
                     mpi_name=mpi.name if mpi else None, mpi_hash=mpi.dag_hash if mpi else None,
                     dependency_hashes=tuple(s.dag_hash for s in tree.traverse(spec)[1:]))


def _module_of_entry(entry, indexes: Mapping[str, Any]) -> SpackModule:
    """An index entry (:class:`bridge.spacktree.ModuleEntry`) as a SpackModule, with the spec's
    names in every module type ``indexes`` holds."""
    names = {}
    for kind, idx in indexes.items():
        other = idx.module_for(entry.dag_hash)
        if other is not None:
            names[kind] = {"name": other.use_name, "modulefile": str(other.path),
                           "modulepath": modulepath_of(str(other.path), other.use_name)}
    path = str(entry.path)
    return SpackModule(use_name=entry.use_name, path=path, modulepath=modulepath_of(path, entry.use_name),
                       unlocks=unlocks_from_modulefile(path), names=names)


def module_from_index(spec: SpecFacts, module_type: str, indexes: Mapping[str, Any]) -> SpackModule:
    """The module of ``spec`` in ``indexes`` (module type -> :class:`bridge.spacktree.ModuleIndex`)."""
    index = indexes[module_type]
    entry = index.module_for(spec.dag_hash)
    if entry is None:
        raise DiscoveryError(f"Spack wrote no {module_type} module for {spec.short_spec} in {index.root}",
                             hint=f"the site should run 'spack module {module_type} refresh' "
                             "(a plain 'spack install' does not update module-index.yaml)")
    return _module_of_entry(entry, indexes)


def openers(spec: SpecFacts, module: SpackModule, module_root: str, others: Iterable[tuple[SpecFacts, SpackModule]]
            ) -> list[SpecFacts]:
    """The specs whose modules must load before ``spec``'s can be found (outermost first):
    those of its DAG that open the subtree its module lives in, and theirs in turn."""
    if is_core_modulepath(module.modulepath, module_root):
        return []
    pool = [(s, m) for s, m in others if s.dag_hash in spec.dependency_hashes]
    for dep, dep_module in pool:
        if os.path.normpath(module.modulepath) in {os.path.normpath(u) for u in dep_module.unlocks}:
            return [*openers(dep, dep_module, module_root, pool), dep]
    return []


# --------------------------------------------------------------------------- checking a record


@dataclass(frozen=True)
class ModuleCheck:
    """What became of one central module an env records, against the live Spack site."""

    name: str
    status: str          # "ok", "changed", "missing", "unknown"
    detail: str
    recorded_hash: str | None = None
    current_hash: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"module": self.name, "status": self.status, "detail": self.detail,
                "recorded_hash": self.recorded_hash, "current_hash": self.current_hash}


def _index_for(modulefile: str, cache: dict) -> Any:
    """The module-index.yaml of the module root that holds ``modulefile`` (searched upwards)."""
    from .tree import ModuleIndex, SpackTreeError

    root = spack_module_root(modulefile)
    if root is not None and root not in cache:
        try:
            cache[root] = ModuleIndex.open(root)
        except SpackTreeError:
            cache[root] = None
    return cache.get(root) if root is not None else None


def check_spack_modules(record: EnvRecord, installed: Callable[[str], str | None] | None) -> list[ModuleCheck]:
    """Whether each central module ``record`` loads still is the Spack build it was made with.

    ``installed(dag_hash)`` returns the spec (``name@version/hash7``) with that hash if it is
    still installed, else None; ``installed=None`` when no install tree can be read (then only
    the module names are checked). Which build a module name points at now comes from the
    ``module-index.yaml`` of the module root the recorded modulefile lives in.
    """
    if installed is None:
        def installed(dag_hash: str) -> str | None:
            return dag_hash[:7]

    out = []
    cache: dict = {}
    for name in record.module.depends_on:
        central = record.central_module(name)
        recorded = (central.facts.get("spack_hash") if central else None)
        if central is None or not recorded:
            out.append(ModuleCheck(name, "unknown", "not recorded as a Spack module"))
            continue
        spec = central.facts.get("spack_spec", recorded[:7])
        index = _index_for(central.modulefile, cache) if central.modulefile else None
        current = None
        if index is not None:
            current = next((e.dag_hash for e in index.entries() if e.use_name == name), None)
        still = installed(recorded)
        if current is not None and current != recorded:
            now = installed(current) or current[:7]
            out.append(ModuleCheck(name, "changed", f"now loads another build: {now} instead of {spec}",
                                   recorded, current))
        elif current is None and not (central.modulefile and os.path.isfile(central.modulefile)):
            out.append(ModuleCheck(name, "missing", f"the module of {spec} is gone"
                                   + ("" if still else " and the spec is no longer installed"), recorded))
        elif not still:
            out.append(ModuleCheck(name, "changed", f"{spec} is no longer installed", recorded, current))
        else:
            out.append(ModuleCheck(name, "ok", spec, recorded, current or recorded))
    return out


# --------------------------------------------------------------------------- loaded Spack modules


def _indexes_beside(index) -> dict[str, Any]:
    """Every module root of the module set ``index`` belongs to (module type -> index): Spack
    keeps one root per type, usually side by side (``.../modules/lmod``, ``.../modules/tcl``)."""
    from .tree import MODULE_INDEX_FILENAME, ModuleIndex, SpackTreeError

    found = {index.kind or "lmod": index}
    for other in sorted(index.root.parent.glob(f"*/{MODULE_INDEX_FILENAME}")):
        try:
            sibling = ModuleIndex.open(other.parent)
        except SpackTreeError:
            continue
        if sibling.kind and sibling.kind not in found:
            found[sibling.kind] = sibling
    return found


def _tree_candidates(module_root: Path, prefix: str | None, configured: Sequence[Path]) -> list[Path]:
    """Where the install tree of a module root may be: the configured trees first, then Spack's
    usual places above the module root (``$SPACK_ROOT/opt/spack`` beside ``share/spack/lmod``,
    a site prefix's ``opt``) and above the module's own prefix."""
    out = list(configured)
    for start in (module_root, Path(prefix) if prefix else None):
        if start is None:
            continue
        for parent in [start, *start.parents]:
            out += [parent, parent / "opt", parent / "opt" / "spack"]
    return list(dict.fromkeys(p for p in out if (p / ".spack-db").is_dir()))


def _role_of(tree, spec) -> str:
    if spec.name == "python":
        return "python"
    return next((role for role in ("mpi", "hdf5") if spec.name == role or tree.provides(spec, role)), "other")


def describe_loaded_spack_modules(stack: CentralStack, install_trees: Sequence[Path] = ()) -> CentralStack:
    """``stack`` with every loaded module that Spack wrote described the way ``spack envmod``
    describes it, from Spack's files alone (no Spack run): its DAG hash and its names in every
    module type from the ``module-index.yaml`` of its module root, and when the install tree's
    database is found (``install_trees``, else Spack's usual places) the spec's prefix, its
    specific dirs and libraries (externals in ``/usr``) and its Lmod subtree. A module no index
    lists is kept as discovered."""
    describer = _LoadedDescriber(install_trees)
    return CentralStack(stack.module_system, tuple(describer.describe(m) for m in stack.modules))


class _LoadedDescriber:
    """Describes loaded modules from Spack's files, caching each module root's indexes and each
    install tree it opens across the modules."""

    def __init__(self, install_trees: Sequence[Path]) -> None:
        self.install_trees = install_trees
        self.index_cache: dict = {}
        self.siblings: dict[Path, dict[str, Any]] = {}
        self.trees: dict[Path, Any] = {}

    def describe(self, module: CentralModule) -> CentralModule:
        index = _index_for(module.modulefile, self.index_cache) if module.modulefile else None
        if index is None:
            return module
        real = os.path.realpath(module.modulefile)
        entry = next((e for e in index.entries() if os.path.realpath(e.path) == real), None)
        if entry is None:
            return module
        if index.root not in self.siblings:
            self.siblings[index.root] = _indexes_beside(index)
        indexes = self.siblings[index.root]
        tree = self._tree_holding(entry.dag_hash, index.root, module.prefix)
        if tree is None:
            return _with_index_facts(module, _module_of_entry(entry, indexes), entry.dag_hash)
        spec = tree.get(entry.dag_hash)
        facts = spec_facts_from_tree(tree, spec)
        described = central_module(facts, module_from_index(facts, index.kind or "lmod", indexes),
                                   _role_of(tree, spec))
        return CentralModule(module.name, module.modulefile, described.kind, described.prefix, described.paths,
                             module.prefixes, {**described.facts, "spack_install_tree": str(tree.root)})

    def _tree_holding(self, dag_hash: str, module_root: Path, prefix: str | None) -> Any:
        """The install tree (a :class:`bridge.spacktree.SpackTree`) that holds ``dag_hash``, if
        one is found."""
        from .tree import SpackTree, SpackTreeError

        for root in _tree_candidates(module_root, prefix, self.install_trees):
            if root not in self.trees:
                try:
                    self.trees[root] = SpackTree.open(root)
                except SpackTreeError:
                    self.trees[root] = None
            if self.trees[root] is not None and dag_hash in self.trees[root]:
                return self.trees[root]
        return None


def _with_index_facts(module: CentralModule, spack_module: SpackModule, dag_hash: str) -> CentralModule:
    """``module`` as discovered, with what its module root's index says (no install tree found)."""
    facts = {**module.facts, "spack_hash": dag_hash,
             "spack_modules": {kind: dict(e) for kind, e in sorted(spack_module.names.items())},
             "spack_modulepath": spack_module.modulepath}
    if spack_module.unlocks:
        facts["spack_unlocks"] = list(spack_module.unlocks)
    return CentralModule(module.name, module.modulefile, module.kind, module.prefix, module.paths,
                         module.prefixes, facts)


def installed_in_trees(record: EnvRecord, install_trees: Sequence[Path] = ()) -> Callable[[str], str | None] | None:
    """``installed(dag_hash)`` for :func:`check_spack_modules` without Spack: looks the hash up in
    the install trees the record names (``spack_install_tree``) and in ``install_trees``; None
    when none of them can be read."""
    from .tree import SpackTree, SpackTreeError

    roots = [Path(m.facts["spack_install_tree"]) for m in record.central_modules
             if m.facts.get("spack_install_tree")] + list(install_trees)
    opened = []
    for root in dict.fromkeys(roots):
        try:
            opened.append(SpackTree.open(root))
        except SpackTreeError:
            continue
    if not opened:
        return None

    def installed(dag_hash: str) -> str | None:
        for tree in opened:
            if dag_hash in tree:
                spec = tree.get(dag_hash)
                return f"{spec.name}@{spec.version}/{dag_hash[:7]}"
        return None

    return installed
