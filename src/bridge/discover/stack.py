"""Discovery: the central stack as the user's loaded modules present it.

For every loaded module: its name and modulefile, what it adds to the search paths, the
prefixes it names, and its kind (python, mpi, hdf5, compiler, other). The central Python is the
first ``python3`` that a loaded module puts on ``PATH`` (or the one given with ``--python``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..cache import JsonCache, file_stamp
from ..errors import NoPython
from .modsys import LoadedModule, ModuleEffect, ModuleSystem

# Search paths worth knowing a module adds: they decide where builds and the loader look.
PATH_VARS = ("PATH", "LD_LIBRARY_PATH", "LIBRARY_PATH", "CPATH", "C_INCLUDE_PATH",
             "PKG_CONFIG_PATH", "PYTHONPATH", "CMAKE_PREFIX_PATH", "MANPATH")
# Prefixes that many packages share (a system's): a directory there identifies no module, and a
# library there is no module's by lying under it.
SYSTEM_PREFIXES = ("/", "/usr", "/usr/local")
_PREFIX_VAR = re.compile(r"^(EBROOT\w+|\w+_(ROOT|DIR|HOME|PREFIX))$")


@dataclass(frozen=True)
class CentralModule:
    """One loaded central module and what envmod learned about it."""

    name: str
    modulefile: str
    kind: str = "other"
    prefix: str | None = None
    paths: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    prefixes: Mapping[str, str] = field(default_factory=dict)
    facts: Mapping[str, Any] = field(default_factory=dict)

    @property
    def family(self) -> str:
        return self.name.split("/", 1)[0]

    @property
    def version(self) -> str | None:
        return self.name.split("/", 1)[1] if "/" in self.name else None

    def find_executable(self, exe: str) -> str | None:
        for entry in self.paths.get("PATH", ()):
            candidate = os.path.join(entry, exe)
            if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
                return candidate
        return None


@dataclass(frozen=True)
class CentralStack:
    """The loaded central modules, in load order, and the tool that loaded them."""

    module_system: ModuleSystem | None
    modules: tuple[CentralModule, ...] = ()

    def of_kind(self, kind: str) -> list[CentralModule]:
        return [m for m in self.modules if m.kind == kind]

    def first(self, kind: str) -> CentralModule | None:
        found = self.of_kind(kind)
        return found[0] if found else None

    def owner_of_path(self, path: str, var: str = "PATH") -> CentralModule | None:
        """The loaded module that added ``path``'s directory to ``var``."""
        directory = os.path.normpath(os.path.dirname(path))
        for module in self.modules:
            if any(os.path.normpath(e) == directory for e in module.paths.get(var, ())):
                return module
        return None


def load_kind_table(cache: JsonCache | None = None) -> dict[str, dict]:
    """How a module's kind is recognised (data/kinds.yaml); parsed once per version of the file
    when a ``cache`` is given, so a create does not load a YAML parser for it."""
    path = str(Path(__file__).parent.parent / "data" / "kinds.yaml")

    def parse() -> dict[str, dict]:
        import yaml

        with open(path, encoding="utf-8") as fh:
            return yaml.load(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))

    return (cache or JsonCache(None)).get_or_compute("kinds", ["kinds-1", *file_stamp(path)], parse)


def classify(name: str, paths: Mapping[str, Sequence[str]], table: Mapping[str, dict]) -> str:
    family = name.split("/", 1)[0].lower()
    for kind, rule in table.items():
        if family in [n.lower() for n in rule.get("names", [])]:
            return kind
    for kind, rule in table.items():
        for exe in rule.get("executables", []):
            if any(os.access(os.path.join(d, exe), os.X_OK) for d in paths.get("PATH", ())):
                return kind
    return "other"


def _prefix_of(effect: ModuleEffect, kind: str) -> tuple[str | None, dict[str, str]]:
    """The module's install prefix: a *_ROOT/_DIR/_HOME/EBROOT* it sets, else its bin's parent."""
    named = {k: v for k, v in effect.setenv.items() if _PREFIX_VAR.match(k) and os.path.isdir(v)}
    upper = kind.upper()
    for key in sorted(named, key=lambda k: (not k.startswith("EBROOT"), upper not in k, k)):
        return named[key], named
    for entry in effect.path_entries("PATH"):
        if os.path.basename(entry.rstrip("/")) == "bin":
            return os.path.dirname(entry.rstrip("/")), named
    return None, named


def _hdf5_is_parallel(prefix: str | None, module_paths: Mapping[str, Sequence[str]], env: Mapping[str, str]) -> bool:
    include_dirs = list(module_paths.get("CPATH", ())) + ([os.path.join(prefix, "include")] if prefix else [])
    for inc in include_dirs:
        try:
            with open(os.path.join(inc, "H5pubconf.h"), encoding="utf-8", errors="replace") as fh:
                return "#define H5_HAVE_PARALLEL 1" in fh.read()
        except OSError:
            continue
    if env.get("HDF5_MPI", "").upper() == "ON":
        return True
    return any(os.access(os.path.join(d, "h5pcc"), os.X_OK) for d in module_paths.get("PATH", ()))


def _is_executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def _mpi_compiler(module: CentralModule, setenv: Mapping[str, str]) -> str | None:
    """The MPI module's C compiler wrapper: the ``MPICC`` it sets (a path, or a name on its own
    PATH), else ``mpicc`` on its PATH, else ``bin/mpicc`` under a prefix it names (``MPI_ROOT``
    ...): a module need not put its tools on PATH for envmod to build against it."""
    named = setenv.get("MPICC", "").strip()
    if named:
        found = named if os.path.isabs(named) else module.find_executable(named)
        if found and _is_executable(found):
            return found
    found = module.find_executable("mpicc")
    if found:
        return found
    for prefix in dict.fromkeys(p for p in (module.prefix, *module.prefixes.values()) if p):
        candidate = os.path.join(prefix, "bin", "mpicc")
        if _is_executable(candidate):
            return candidate
    return None


def describe_module(loaded: LoadedModule, effect: ModuleEffect, table: Mapping[str, dict]) -> CentralModule:
    paths = {var: tuple(effect.path_entries(var)) for var in PATH_VARS if effect.path_entries(var)}
    kind = classify(loaded.name, paths, table)
    prefix, prefixes = _prefix_of(effect, kind)
    module = CentralModule(loaded.name, loaded.modulefile, kind, prefix, paths, prefixes)
    facts: dict[str, Any] = {}
    if kind == "mpi":
        facts["mpicc"] = _mpi_compiler(module, effect.setenv)
    elif kind == "hdf5":
        facts["parallel"] = _hdf5_is_parallel(prefix, paths, effect.setenv)
    elif kind == "python":
        facts["python"] = module.find_executable("python3")
    return CentralModule(loaded.name, loaded.modulefile, kind, prefix, paths, prefixes,
                         {k: v for k, v in facts.items() if v is not None})


def discover_stack(module_system: ModuleSystem | None, environ: Mapping[str, str] | None = None,
                   cache: JsonCache | None = None) -> CentralStack:
    """Read every loaded module's effect (one ``module show`` call, cached by modulefile stamps)."""
    environ = os.environ if environ is None else environ
    if module_system is None:
        return CentralStack(None, ())
    loaded = module_system.loaded(environ)
    if not loaded:
        return CentralStack(module_system, ())
    key = ["show-2", module_system.name, module_system.command,
           [[m.name, *file_stamp(m.modulefile)] for m in loaded]]

    def show() -> dict:
        effects = module_system.show([m.name for m in loaded], environ)
        return {path: effect.to_json() for path, effect in effects.items()}

    raw = (cache or JsonCache(None)).get_or_compute("modules", key, show)
    by_real = {os.path.realpath(p): e for p, e in raw.items()}
    table = load_kind_table(cache)
    modules = []
    for m in loaded:
        data = raw.get(m.modulefile) or by_real.get(os.path.realpath(m.modulefile))
        effect = ModuleEffect.from_json(data) if data else ModuleEffect()
        modules.append(describe_module(m, effect, table))
    return CentralStack(module_system, tuple(modules))


def spack_module_root(modulefile: str | None) -> Path | None:
    """The module root above ``modulefile`` that holds Spack's ``module-index.yaml``, if Spack
    wrote it (a few stats: cheap enough to ask of every loaded module)."""
    if not modulefile:
        return None
    return next((parent for parent in Path(modulefile).parents if (parent / "module-index.yaml").is_file()), None)


def find_central_python(stack: CentralStack, environ: Mapping[str, str] | None = None,
                        explicit: str | None = None) -> tuple[str, CentralModule | None]:
    """The central interpreter and the module that provides it (None if no module does)."""
    environ = os.environ if environ is None else environ
    if explicit:
        exe = explicit if os.sep in explicit else _which(explicit, environ.get("PATH", ""))
        if not exe or not os.path.isfile(exe):
            raise NoPython(f"--python {explicit}: no such interpreter")
        exe = os.path.abspath(exe)
        return exe, stack.owner_of_path(exe)
    module_entries = {os.path.normpath(e): m for m in stack.modules for e in m.paths.get("PATH", ())}
    for entry in environ.get("PATH", "").split(":"):
        module = module_entries.get(os.path.normpath(entry)) if entry else None
        if module is None:
            continue
        for exe in ("python3", "python"):
            candidate = os.path.join(entry, exe)
            if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
                return candidate, module
    # A stack described by a front end (Spack, EasyBuild) rather than by PATH names its Python.
    for module in stack.of_kind("python"):
        if module.facts.get("python"):
            return module.facts["python"], module
    loaded = ", ".join(m.name for m in stack.modules) or "none"
    raise NoPython(f"no central Python: none of the loaded modules ({loaded}) puts python3 on PATH",
                   hint="load the site's Python module, or pass --python EXE")


def _which(name: str, path: str) -> str | None:
    for entry in path.split(":"):
        candidate = os.path.join(entry, name)
        if entry and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None
