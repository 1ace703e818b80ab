"""Re-creating an export on another site: central modules described abstractly, and mapped.

An export names the central modules its env was built against, which another site calls
otherwise (``openmpi/4.1.4`` here, ``OpenMPI/4.1.4`` under EasyBuild, ``openmpi/4.1.4-d2lqwco``
under Spack). So each module is also described by what it is: its kind, package family and
version, an MPI's ABI, whether an HDF5 is parallel (:class:`Description`). The facts come from
the module's own files where they are there (``mpi.h``, ``H5pubconf.h``, the Python itself), else
from its name, with the family table ``data/families.yaml``.

``envmod create NAME --from FILE`` maps each need to a module of this site
(:func:`map_export`): a ``--map KIND=MODULE`` of the user's, else a loaded module of that kind,
else one the module tool can find (``module -t avail``), if compatible (:func:`incompatibility`):

* Python: the same major.minor (pinned packages and their wheels are for that minor version);
* MPI: the same ABI (Open MPI's, or MPICH's, which MVAPICH, Intel MPI and Cray MPICH share) and,
  within one family, the same major version;
* HDF5: the same major.minor, and parallel if the exported one was;
* any other kind: the same name's family and version.

A loaded module of a kind decides for that kind (envmod never swaps what the user loaded): an
incompatible one is refused, naming both sides. A module found but not loaded is not loaded
behind the user's back: envmod runs as a child of the user's shell, whose environment the
create's builds and the user's next commands both use, so it names the ``module load`` to type.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from ..cache import JsonCache, file_stamp
from ..errors import DiscoveryError, PlanError, UsageError
from .modsys import LoadedModule, ModuleSystem
from .stack import (
    SYSTEM_PREFIXES,
    CentralModule,
    CentralStack,
    classify,
    describe_module,
    load_kind_table,
    spack_module_root,
)

if TYPE_CHECKING:
    from ..emit.export import ExportedEnv
    from ..progress import Reporter
    from ..store.record import CentralModuleRecord, EnvRecord

_VERSION = re.compile(r"\d+(?:\.\d+)*")


@dataclass(frozen=True)
class Description:
    """What a central module is, apart from its name (``name`` is this site's name: a hint)."""

    kind: str
    family: str | None = None
    version: str | None = None
    abi: str | None = None             # mpi only
    parallel: bool | None = None       # hdf5 only
    name: str = ""

    def to_export(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "family": self.family, "version": self.version}
        if self.kind == "mpi":
            out["abi"] = self.abi
        if self.kind == "hdf5":
            out["parallel"] = self.parallel
        return out

    def label(self, table: Mapping[str, Any] | None = None) -> str:
        """``Open MPI 4.1.4, openmpi ABI``, ``HDF5 1.10.8, parallel``, ``Python 3.11.2``."""
        entry = (table or load_family_table()).get(self.kind, {}).get(self.family or "", {})
        text = f"{entry.get('label') or self.family or self.kind} {self.version or '(version unknown)'}"
        if self.kind == "mpi":
            text += f", {self.abi or 'unknown'} ABI"
        if self.kind == "hdf5" and self.parallel is not None:
            text += ", parallel" if self.parallel else ", serial"
        return text


def load_family_table(cache: JsonCache | None = None) -> dict[str, dict]:
    """The package families of each kind (data/families.yaml), parsed once per version of the file."""
    path = str(Path(__file__).parent.parent / "data" / "families.yaml")

    def parse() -> dict[str, dict]:
        import yaml

        with open(path, encoding="utf-8") as fh:
            return yaml.safe_load(fh)

    return (cache or JsonCache(None)).get_or_compute("families", ["families-1", *file_stamp(path)], parse)


# ---------------------------------------------------------------------------- facts
def family_by_name(kind: str, name: str, table: Mapping[str, dict]) -> str | None:
    first = name.split("/", 1)[0].lower()
    return next((family for family, entry in table.get(kind, {}).items()
                 if first in [n.lower() for n in entry.get("names", [])]), None)


def version_from_name(name: str) -> str | None:
    """The version a module name carries (``4.1.4`` of ``openmpi/4.1.4-d2lqwco``), if any."""
    if "/" not in name:
        return None
    found = _VERSION.match(name.rsplit("/", 1)[1])
    return found.group(0) if found else None


def major_minor(version: str | None) -> tuple[str, ...]:
    return tuple((version or "").split(".")[:2])


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return None


def _define(text: str, macro: str) -> str | None:
    found = re.search(rf"^\s*#\s*define\s+{macro}\s+\"?([^\"\s]+)\"?", text, re.MULTILINE)
    return found.group(1) if found else None


def mpi_header_facts(include_dirs: Iterable[str], table: Mapping[str, dict]) -> tuple[str | None, str | None]:
    """(family, version) from the first ``mpi.h`` in ``include_dirs``: the macros its family defines."""
    for directory in include_dirs:
        text = _read(os.path.join(directory, "mpi.h"))
        if text is None:
            continue
        if _define(text, "OMPI_MAJOR_VERSION"):
            parts = [_define(text, f"OMPI_{p}_VERSION") or "0" for p in ("MAJOR", "MINOR", "RELEASE")]
            return "openmpi", ".".join(parts)
        for family, entry in table.get("mpi", {}).items():
            macro = entry.get("header")
            if macro and _define(text, macro):
                return family, _define(text, macro)
    return None, None


def hdf5_header_facts(include_dirs: Iterable[str]) -> tuple[str | None, bool | None]:
    """(version, parallel) from the first ``H5pubconf.h`` in ``include_dirs``."""
    for directory in include_dirs:
        text = _read(os.path.join(directory, "H5pubconf.h"))
        if text is not None:
            return _define(text, "H5_VERSION"), _define(text, "H5_HAVE_PARALLEL") == "1"
    return None, None


def _own_dirs(prefix: str | None, sub: str) -> list[str]:
    """``prefix/sub`` when the prefix is the module's own (a system prefix identifies no module)."""
    if not prefix or os.path.normpath(prefix) in SYSTEM_PREFIXES:
        return []
    return [os.path.join(prefix, sub)]


def _family_by_soname(sonames: Iterable[str], table: Mapping[str, dict]) -> str | None:
    names = set(sonames)
    return next((family for family, entry in table.get("mpi", {}).items()
                 if names & set(entry.get("sonames", []))), None)


def _spack_version(facts: Mapping[str, Any]) -> str | None:
    found = re.search(r"@=?(\d+(?:\.\d+)*)", str(facts.get("spack_spec") or ""))
    return found.group(1) if found else None


def _describe(kind: str, name: str, table: Mapping[str, dict], *, include_dirs: Sequence[str],
              sonames: Iterable[str], facts: Mapping[str, Any], python_version: str | None) -> Description:
    """One module's description from what is known of it: its files first, then its name."""
    version = _spack_version(facts) or version_from_name(name)
    family = family_by_name(kind, name, table)
    if kind == "python":
        return Description(kind, family or "cpython", python_version or version, name=name)
    if kind == "mpi":
        header_family, header_version = mpi_header_facts(include_dirs, table)
        family = header_family or family or _family_by_soname(sonames, table)
        abi = table["mpi"].get(family, {}).get("abi") if family else None
        return Description(kind, family, header_version or version, abi=abi, name=name)
    if kind == "hdf5":
        header_version, parallel = hdf5_header_facts(include_dirs)
        if facts.get("parallel") is not None:
            parallel = bool(facts["parallel"])
        return Description(kind, family or "hdf5", header_version or version, parallel=parallel, name=name)
    return Description(kind, name.split("/", 1)[0].lower(), version, name=name)


def describe_recorded(record: "EnvRecord", module: "CentralModuleRecord",
                      table: Mapping[str, dict] | None = None) -> Description:
    """A recorded central module, for an export: the record's facts and link evidence (which
    libmpi soname the env got from it), and its headers if its prefix is still there."""
    table = table or load_family_table()
    sonames = {e.soname for e in record.links if e.provider == module.name and e.soname}
    python_version = record.python.version if record.python.module == module.name else None
    return _describe(module.kind, module.name, table, include_dirs=_own_dirs(module.prefix, "include"),
                     sonames=sonames, facts=module.facts, python_version=python_version)


def describe_central(module: CentralModule, cache: JsonCache | None = None,
                     table: Mapping[str, dict] | None = None) -> Description:
    """A module of this site, loaded or not: its headers, the libmpi its library directories
    hold, its Python asked for its version; cached by its modulefile's stamp."""
    table = table or load_family_table(cache)
    key = ["describe-1", module.name, module.kind, module.prefix, dict(module.paths), dict(module.facts),
           *file_stamp(module.modulefile)]

    def compute() -> dict:
        include_dirs = [*module.paths.get("CPATH", ()), *module.paths.get("C_INCLUDE_PATH", ()),
                        *_own_dirs(module.prefix, "include")]
        lib_dirs = [*module.paths.get("LD_LIBRARY_PATH", ()), *_own_dirs(module.prefix, "lib"),
                    *_own_dirs(module.prefix, "lib64")]
        sonames = [f for d in lib_dirs if os.path.isdir(d) for f in os.listdir(d) if f.startswith("libmpi")]
        python_version = None
        if module.kind == "python" and module.facts.get("python"):
            from .pyinfo import interrogate

            python_version = interrogate(module.facts["python"], cache).version
        found = _describe(module.kind, module.name, table, include_dirs=include_dirs, sonames=sonames,
                          facts=module.facts, python_version=python_version)
        return found.__dict__.copy()

    return Description(**(cache or JsonCache(None)).get_or_compute("describe", key, compute))


# ---------------------------------------------------------------------------- compatibility
def incompatibility(need: Description, have: Description, table: Mapping[str, dict] | None = None) -> str | None:
    """Why the module ``have`` cannot stand in for ``need`` (a phrase naming it and what it is);
    None when it can."""
    table = table or load_family_table()
    why = _why_not(need, have)
    return f"{have.name} is {have.label(table)}: {why}" if why else None


def _why_not(need: Description, have: Description) -> str | None:
    if need.kind != have.kind:
        return f"of kind {have.kind}, not {need.kind}"
    if not have.version and need.kind in ("python", "hdf5"):
        return "its version is unknown"
    if need.kind in ("python", "hdf5") and major_minor(need.version) != major_minor(have.version):
        return "another minor version"
    if need.kind == "hdf5" and need.parallel and not have.parallel:
        return "not a parallel HDF5"
    if need.kind == "mpi":
        if not (need.abi and have.abi) or need.abi != have.abi:
            return "an incompatible MPI family"
        if need.family == have.family and major_minor(need.version)[:1] != major_minor(have.version)[:1]:
            return "another major version"
    if need.kind not in ("python", "mpi", "hdf5") and (need.family, need.version) != (have.family, have.version):
        return "another module"
    return None


# ---------------------------------------------------------------------------- mapping
@dataclass(frozen=True)
class Mapped:
    """One need of the export and the module of this site that meets it."""

    need: Description
    module: str
    how: str            # "loaded", "available" (found, not loaded) or "--map"
    description: Description

    @property
    def substituted(self) -> bool:
        return self.module != self.need.name

    def to_record(self) -> dict[str, str]:
        return {"kind": self.need.kind, "exported": self.need.name, "used": self.module, "how": self.how}


def known_kinds(cache: JsonCache | None = None) -> list[str]:
    return [*load_kind_table(cache), "other"]


def parse_maps(values: Sequence[str], cache: JsonCache | None = None) -> dict[str, str]:
    """``--map KIND=MODULE`` arguments as {kind: module}; a malformed one or an unknown kind is refused."""
    kinds = known_kinds(cache)
    maps: dict[str, str] = {}
    for value in values:
        kind, sep, module = value.partition("=")
        if not sep or not kind.strip() or not module.strip():
            raise UsageError(f"--map {value!r}: expected KIND=MODULE (e.g. mpi=OpenMPI/4.1.4)")
        if kind.strip() not in kinds:
            raise UsageError(f"--map {value!r}: unknown kind {kind.strip()!r}", hint=f"kinds: {', '.join(kinds)}")
        if kind.strip() in maps:
            raise UsageError(f"--map {kind.strip()}= is given twice")
        maps[kind.strip()] = module.strip()
    return maps


def available_modules(system: ModuleSystem, environ: Mapping[str, str] | None = None) -> list[str]:
    """Every module name the module tool can load now (``module -t avail``)."""
    proc = system.run(["-t", "avail"], environ)
    failure = system.failure(proc)
    if failure:
        raise DiscoveryError(f"'module -t avail' failed with {system.name}: {failure}")
    names = []
    for line in proc.stderr.splitlines():
        word = re.sub(r"\((?:[A-Za-z]+|default)\)|<[^>]*>", "", line).strip()
        if word and not word.endswith((":", "/")) and " " not in word:
            names.append(word)
    return list(dict.fromkeys(names))


def show_module(system: ModuleSystem, name: str, environ: Mapping[str, str] | None,
                cache: JsonCache | None, spack_install_trees: Sequence[Path] = ()) -> CentralModule:
    """A module of this site that is not loaded, described as discovery describes loaded ones
    (with its Spack facts when Spack wrote it: its +mpi variant says whether an HDF5 is parallel)."""
    effects = system.show([name], environ)
    if len(effects) != 1:
        raise DiscoveryError(f"'module show {name}' printed no modulefile")
    modulefile, effect = next(iter(effects.items()))
    module = describe_module(LoadedModule(name, modulefile), effect, load_kind_table(cache))
    if spack_module_root(modulefile):
        from ..spack.stack import describe_loaded_spack_modules

        module = describe_loaded_spack_modules(CentralStack(system, (module,)), spack_install_trees).modules[0]
    return module


class ExportMapper:
    """Maps an export's needs to this site's modules (see the module's docstring for the rules)."""

    def __init__(self, exported: "ExportedEnv", stack: CentralStack, environ: Mapping[str, str] | None,
                 maps: Mapping[str, str], cache: JsonCache | None, spack_install_trees: Sequence[Path] = ()) -> None:
        self.spack_install_trees = spack_install_trees
        self.exported = exported
        self.stack = stack
        self.system = stack.module_system
        self.environ = environ
        self.maps = maps
        self.cache = cache
        self.table = load_family_table(cache)
        self._avail: list[str] | None = None

    def run(self) -> list[Mapped]:
        needs = self.exported.needs
        unneeded = sorted(set(self.maps) - {n.kind for n in needs})
        if unneeded:
            raise UsageError(f"--map {unneeded[0]}=...: {self.exported.path} needs no {unneeded[0]} module",
                             hint=f"it needs: {', '.join(n.kind + ' ' + n.name for n in needs) or 'none'}")
        return [self.map_one(need) for need in needs]

    def describe(self, module: CentralModule) -> Description:
        return describe_central(module, self.cache, self.table)

    def map_one(self, need: Description) -> Mapped:
        if need.kind in self.maps:
            return self.by_user(need, self.maps[need.kind])
        loaded = [m for m in self.stack.modules if m.name == need.name] or \
            [m for m in self.stack.modules if m.kind == need.kind]
        if loaded:
            return self.from_loaded(need, loaded)
        return self.from_available(need)

    def by_user(self, need: Description, name: str) -> Mapped:
        module = next((m for m in self.stack.modules if m.name == name), None)
        if module is None:
            if self.system is None:
                raise UsageError(f"--map {need.kind}={name}: no module system to find it with")
            try:
                module = show_module(self.system, name, self.environ, self.cache, self.spack_install_trees)
            except DiscoveryError as exc:
                raise UsageError(f"--map {need.kind}={name}: no such module on this site ({exc.message})") from None
        have = self.describe(module)
        if have.kind != need.kind:
            raise UsageError(f"--map {need.kind}={name}: {name} is of kind {have.kind}, not {need.kind}")
        loaded = any(m.name == module.name for m in self.stack.modules)
        return Mapped(need, module.name, "--map" if loaded else "--map (not loaded)", have)

    def from_loaded(self, need: Description, loaded: list[CentralModule]) -> Mapped:
        reasons = []
        for module in loaded:
            have = self.describe(module)
            reason = incompatibility(need, have, self.table)
            if reason is None:
                return Mapped(need, module.name, "loaded", have)
            reasons.append(reason)
        raise PlanError(f"{self.exported.path} was built against {need.name} ({need.label(self.table)}); "
                        f"the loaded {reasons[0]}", hint=f"load a compatible {need.kind} module, or --map "
                        f"{need.kind}=MODULE")

    def from_available(self, need: Description) -> Mapped:
        candidates, reasons = [], []
        for name in self.candidate_names(need):
            try:
                module = show_module(self.system, name, self.environ, self.cache, self.spack_install_trees)  # type: ignore[arg-type]
            except DiscoveryError:
                continue
            have = self.describe(module)
            reason = incompatibility(need, have, self.table)
            if reason:
                reasons.append(reason)
            else:
                candidates.append(have)
        if not candidates:
            found = f"; {'; '.join(reasons)}" if reasons else ""
            raise PlanError(f"{self.exported.path} was built against {need.name} ({need.label(self.table)}): "
                            f"no compatible {need.kind} module is loaded or available here{found}",
                            hint=f"--map {need.kind}=MODULE names one")
        best = max(candidates, key=lambda d: (d.name == need.name, d.version == need.version,
                                              _version_key(d.version)))
        return Mapped(need, best.name, "available", best)

    def candidate_names(self, need: Description) -> list[str]:
        """Modules the tool can load whose names say they may be of ``need``'s kind."""
        if self.system is None:
            return []
        if self._avail is None:
            self._avail = available_modules(self.system, self.environ)
        kinds = load_kind_table(self.cache)
        wanted = {need.name.split("/", 1)[0].lower()}
        wanted |= {n.lower() for n in kinds.get(need.kind, {}).get("names", [])}
        wanted |= {n.lower() for entry in self.table.get(need.kind, {}).values() for n in entry.get("names", [])}
        return [name for name in self._avail if name.split("/", 1)[0].lower() in wanted]


def _version_key(version: str | None) -> tuple[int, ...]:
    return tuple(int(p) for p in (version or "0").split(".") if p.isdigit())


def map_export(exported: "ExportedEnv", stack: CentralStack, environ: Mapping[str, str] | None,
               maps: Mapping[str, str], cache: JsonCache | None, reporter: "Reporter | None" = None,
               spack_install_trees: Sequence[Path] = ()) -> list[Mapped]:
    """Each need of ``exported`` mapped to a module of this site; every substitution is reported.
    A module mapped to but not loaded is refused in one line naming the ``module load`` to type."""
    mapped = ExportMapper(exported, stack, environ, maps, cache, spack_install_trees).run()
    table = load_family_table(cache)
    for m in mapped:
        if m.substituted and reporter is not None:
            reporter.step("map", f"{m.need.name} -> {m.module} ({m.description.label(table)}; {m.how})")
    to_load = [m.module for m in mapped if m.how in ("available", "--map (not loaded)")]
    if to_load:
        raise PlanError(f"{exported.path} maps to modules of this site that are not loaded: {', '.join(to_load)}",
                        hint=f"module load {' '.join(to_load)}, then run the same command again")
    return mapped


def describe_need(entry: Mapping[str, Any], python_version: str | None, cache: JsonCache | None = None) -> Description:
    """A module entry of an export as a need: its own description, else (an older export) what
    its name and the export's Python version say."""
    name = str(entry["name"])
    kind = str(entry.get("kind") or classify(name, {}, load_kind_table(cache)))
    table = load_family_table(cache)
    guessed = _describe(kind, name, table, include_dirs=(), sonames=(), facts={},
                        python_version=python_version if kind == "python" else None)
    parallel = entry.get("parallel", guessed.parallel)
    return Description(kind, str(entry.get("family") or guessed.family or "") or None,
                       str(entry.get("version") or guessed.version or "") or None,
                       abi=entry.get("abi") or guessed.abi, parallel=bool(parallel) if parallel is not None else None,
                       name=name)
