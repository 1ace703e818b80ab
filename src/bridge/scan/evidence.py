"""The bridge's evidence: which central module each library and package an env uses comes from.

Two scans of a finished env, both read-only and quick:

* `scan_links`: every ELF file in the env is resolved the way the dynamic loader would resolve
  it with the env's modules loaded (their ``LD_LIBRARY_PATH``, later-loaded modules first; the
  file's own RPATH/RUNPATH with ``$ORIGIN``; the ld.so cache; the default directories), shared
  objects as ``dlopen``-ed by the env's Python. Every library needed directly, and every library
  those need in turn, becomes one `LinkEvidence`, attributed to a provider by `Attributor`.
* `scan_requirements`: every distribution installed in the env whose ``Requires-Dist`` is
  satisfied *outside* the env, by a package that a central module puts on the path, becomes one
  `RequirementEvidence`.

`required_modules` turns the evidence into the modules an env's modulefile must load,
`check_declared_modules` holds it against the modules a front end declared (EasyBuild's
dependencies), and `format_evidence` turns it into the lines ``envmod show`` prints.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Mapping, Sequence

from ..build.rules import canonical_name
from ..discover.stack import SYSTEM_PREFIXES, CentralModule
from ..store.record import EnvRecord, LinkEvidence, RequirementEvidence
from .elf import ElfError, ElfInfo, iter_elf_files, read_elf
from .loader import How, LoaderConfig, LoadResult, Resolver, host_config

if TYPE_CHECKING:
    from packaging.requirements import Requirement

SYSTEM = "system"
ENV = "env"
MISSING = "missing"
NOT_MODULES = frozenset({SYSTEM, ENV, MISSING})

# For a module installed into a system prefix (EasyBuild's SystemMPI has EBROOTOPENMPI=/usr, a
# Spack external may have no lib dir of its own), the libraries of its kind are known by name.
# A site can extend this with a `libraries:` list per kind in kinds.yaml.
KIND_LIBRARIES: Mapping[str, tuple[str, ...]] = {
    "mpi": ("libmpi", "libmpi_cxx", "libmpi_mpifh", "libmpi_usempi", "libmpi_usempif08", "libopen-rte",
            "libopen-pal", "liboshmem", "libompitrace", "libmpich", "libmpichcxx", "libmpichfort",
            "libmpicxx", "libmpifort", "libmpl", "libopa", "libpmpi"),
    "hdf5": ("libhdf5",),
    "python": ("libpython",),
}


def _norm(path: str) -> str:
    return os.path.normpath(path) if path else path


def _under(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def library_stem(name: str) -> str:
    """``libmpi.so.40`` -> ``libmpi``; ``libhdf5_openmpi.so.103`` -> ``libhdf5_openmpi``."""
    return re.split(r"\.so(\.|$)", os.path.basename(name), maxsplit=1)[0]


def module_ld_library_path(modules: Sequence[CentralModule]) -> list[str]:
    """``LD_LIBRARY_PATH`` as loading ``modules`` in order leaves it: each module prepends, so the
    last one loaded comes first."""
    entries: list[str] = []
    for module in reversed(list(modules)):
        for entry in module.paths.get("LD_LIBRARY_PATH", ()):
            if entry not in entries:
                entries.append(entry)
    return entries


def module_lib_dirs(module: CentralModule) -> list[str]:
    """The directories a module's libraries live in: its LD_LIBRARY_PATH and LIBRARY_PATH entries,
    and ``lib``/``lib64`` under its prefix and the prefixes it names (EBROOT*, *_ROOT, *_DIR)."""
    dirs: list[str] = []
    for var in ("LD_LIBRARY_PATH", "LIBRARY_PATH"):
        dirs.extend(module.paths.get(var, ()))
    for prefix in [module.prefix, *module.prefixes.values()]:
        if prefix:
            dirs.extend([os.path.join(prefix, "lib"), os.path.join(prefix, "lib64")])
    return list(dict.fromkeys(_norm(d) for d in dirs if d))


def _kind_libraries() -> Mapping[str, tuple[str, ...]]:
    table = dict(KIND_LIBRARIES)
    try:
        from ..discover.stack import load_kind_table

        for kind, rule in load_kind_table().items():
            if isinstance(rule, Mapping) and rule.get("libraries"):
                table[kind] = tuple(table.get(kind, ())) + tuple(rule["libraries"])
    except Exception:     # the table is an optional extension; the built-in names suffice
        pass
    return table


class Attributor:
    """Says which central module (or "env", "system", "missing") provides a library file.

    In order: a file inside the env is the env's; then the longest of the modules' lib dirs and
    prefixes that contains the file (as the loader names it, then its realpath), where system
    directories and prefixes (``/usr``, ``/usr/lib/x86_64-linux-gnu`` ...) never count, so
    modules sharing ``/usr`` are told apart by their specific lib dirs; then the module whose lib
    dirs hold a file with the same realpath (a site wrapping Debian's libraries with symlinks, a
    library found through ld.so.cache); then, for modules installed in a system prefix, the
    library names of their kind or family (``libmpi*`` for an MPI); else "system".
    """

    def __init__(self, modules: Sequence[CentralModule], env_prefix: str | os.PathLike | None = None,
                 config: LoaderConfig | None = None) -> None:
        self.modules = list(modules)
        # Later-loaded modules win ties, as they come first on the loader's path.
        self._preference = list(reversed(self.modules))
        self.env_prefixes: list[str] = []
        if env_prefix is not None:
            p = _norm(os.fspath(env_prefix))
            self.env_prefixes = list(dict.fromkeys([p, os.path.realpath(p)]))
        cfg = config or host_config()
        system = {"/", "/usr", "/usr/local", "/lib", "/lib64", "/lib32", "/usr/lib", "/usr/lib64",
                  "/usr/lib32", "/usr/local/lib", "/usr/local/lib64", "/" + cfg.lib, "/usr/" + cfg.lib,
                  *cfg.default_dirs}
        self.system_dirs = frozenset(_norm(d) for d in system) | frozenset(
            os.path.realpath(d) for d in system if os.path.exists(d))
        claims: list[tuple[str, int]] = []
        self._has_own_dirs: set[int] = set()
        for rank, module in enumerate(self._preference):
            dirs = module_lib_dirs(module)
            prefixes = [p for p in [module.prefix, *module.prefixes.values()] if p]
            for d in dirs + [_norm(p) for p in prefixes]:
                for variant in dict.fromkeys([d, os.path.realpath(d)]):
                    if variant not in self.system_dirs and variant not in SYSTEM_PREFIXES:
                        claims.append((variant, rank))
                        self._has_own_dirs.add(rank)
        # Longest first; for equal dirs the preferred (later-loaded) module first.
        claims.sort(key=lambda c: (-len(c[0]), c[1]))
        self._claims = claims
        self._by_real: dict[str, int] | None = None
        self._kind_names = _kind_libraries()
        self._memo: dict[tuple[str | None, str | None], str] = {}

    # -- pieces ------------------------------------------------------------------------
    def in_env(self, path: str) -> bool:
        return any(_under(path, p) or _under(os.path.realpath(path), p) for p in self.env_prefixes)

    def _by_dir(self, path: str) -> CentralModule | None:
        for directory, rank in self._claims:
            if _under(path, directory):
                return self._preference[rank]
        return None

    def _realpath_index(self) -> dict[str, int]:
        if self._by_real is None:
            index: dict[str, int] = {}
            for rank, module in enumerate(self._preference):
                for d in module_lib_dirs(module):
                    if d in self.system_dirs or os.path.realpath(d) in self.system_dirs:
                        continue
                    try:
                        with os.scandir(d) as it:
                            names = [e.path for e in it if ".so" in e.name]
                    except OSError:
                        continue
                    for p in names:
                        index.setdefault(os.path.realpath(p), rank)
                for lib in module.facts.get("libraries", ()) or ():
                    index.setdefault(os.path.realpath(lib), rank)
            self._by_real = index
        return self._by_real

    def _by_name(self, soname: str | None, path: str) -> CentralModule | None:
        stem = library_stem(soname or path)
        for rank, module in enumerate(self._preference):
            if rank in self._has_own_dirs:
                continue
            family = re.sub(r"[^a-z0-9]", "", module.family.lower())
            names = self._kind_names.get(module.kind, ())
            # libhdf5 claims libhdf5_openmpi and libhdf5_hl, libpython claims libpython3.11, but
            # libmpi does not claim libmpich (listed on its own).
            if any(stem == n or (stem.startswith(n) and stem[len(n)] in "_-.0123456789") for n in names):
                return module
            if family and len(family) > 2 and re.sub(r"[^a-z0-9]", "", stem.lower()) == "lib" + family:
                return module
        return None

    # -- the answer ----------------------------------------------------------------------
    def module_of(self, path: str, soname: str | None = None) -> CentralModule | None:
        """The central module providing ``path``, or None (env, system or unknown)."""
        p = _norm(path)
        real = os.path.realpath(p)
        module = self._by_dir(p) or (self._by_dir(real) if real != p else None)
        if module is None:
            rank = self._realpath_index().get(real)
            if rank is not None:
                module = self._preference[rank]
        if module is None:
            module = self._by_name(soname, p)
        return module

    def provider(self, path: str | None, soname: str | None = None) -> str:
        if not path:
            return MISSING
        key = (path, soname)
        hit = self._memo.get(key)
        if hit is None:
            if self.in_env(_norm(path)):
                hit = ENV
            else:
                module = self.module_of(path, soname)
                hit = module.name if module is not None else SYSTEM
            self._memo[key] = hit
        return hit


# ---------------------------------------------------------------------------------------------
# the link scan


@dataclass(frozen=True)
class _Edge:
    needs: str
    path: str | None
    how: How
    via_path: str | None          # None for a direct need of the env file
    via_name: str | None


def _name_of(info: ElfInfo | None, path: str) -> str:
    return (info.soname if info is not None and info.soname else None) or os.path.basename(path)


def _edges(result: LoadResult) -> Iterator[_Edge]:
    """The DT_NEEDED edges of the root's part of a link map: the root's own needs and those of
    every object it pulled in (not the executable's own tree, which the interpreter brings)."""
    mine = {result.root}
    infos: dict[str, ElfInfo] = {}
    for obj in result.objects:
        infos[obj.path] = obj.info
        if obj.how is not How.ROOT and obj.needed_by in mine:
            mine.add(obj.path)
    for needer, res in result.edges:
        if needer not in mine:
            continue
        direct = needer == result.root
        yield _Edge(res.name, res.path, res.how, None if direct else needer,
                    None if direct else _name_of(infos.get(needer), needer))


class Scanner:
    """Resolves env files with one `Resolver` (its directory and ELF caches serve the whole scan)."""

    def __init__(self, modules: Sequence[CentralModule], env_prefix: str | os.PathLike,
                 python: str | os.PathLike | None = None, *, ld_library_path: Sequence[str] | None = None,
                 config: LoaderConfig | None = None) -> None:
        self.prefix = _norm(os.fspath(env_prefix))
        self.resolver = Resolver(config)
        self.attributor = Attributor(modules, self.prefix, config)
        self.llp = list(ld_library_path) if ld_library_path is not None else module_ld_library_path(modules)
        self.python: ElfInfo | None = None
        if python is not None:
            try:
                self.python = read_elf(python)
            except (OSError, ElfError):
                self.python = None
        self._infos: dict[str, ElfInfo | None] = {}
        self._hashes: dict[str, str | None] = {}

    def _soname(self, path: str, known: Mapping[str, ElfInfo]) -> str | None:
        info = known.get(path)
        if info is None:
            if path not in self._infos:
                try:
                    self._infos[path] = read_elf(path)
                except (OSError, ElfError):
                    self._infos[path] = None
            info = self._infos[path]
        return info.soname if info is not None else None

    def sha256(self, path: str) -> str | None:
        real = os.path.realpath(path)
        if real not in self._hashes:
            try:
                h = hashlib.sha256()
                with open(real, "rb") as fh:
                    for block in iter(lambda: fh.read(1 << 20), b""):
                        h.update(block)
                self._hashes[real] = h.hexdigest()
            except OSError:
                self._hashes[real] = None
        return self._hashes[real]

    def tree(self, info: ElfInfo) -> LoadResult:
        """The link map of one env file: an executable as run, anything else as dlopen()ed by the
        env's Python (an extension module, or a library that extension modules load)."""
        exe = self.python if (self.python is not None and info.interpreter is None
                              and info.elf_type == "DYN") else None
        return self.resolver.resolve_tree(info, ld_library_path=self.llp, executable=exe)

    def file_links(self, info: ElfInfo) -> list[tuple[_Edge, str, str | None]]:
        """(edge, provider, soname) for every need in ``info``'s part of the link map."""
        result = self.tree(info)
        known = {o.path: o.info for o in result.objects}
        out = []
        for edge in _edges(result):
            soname = self._soname(edge.path, known) if edge.path else None
            out.append((edge, self.attributor.provider(edge.path, soname), soname))
        return out


def env_elf_files(prefix: str, on_error: Callable[[str, Exception], None] | None = None) -> Iterator[ElfInfo]:
    for info in iter_elf_files(prefix, on_error):
        # iter_elf_files yields a symlink only when it points outside the env (a venv's
        # bin/python to the central interpreter): not the env's own compiled code.
        if os.path.islink(info.path) or not info.dynamic:
            continue
        yield info


def _rebaser(root: str, final: str) -> Callable[[str | None], str | None]:
    """Maps a path inside the env at ``root`` to the same path under ``final`` (where a staging
    copy will be); paths outside the env stay as they are."""
    def rebase(path: str | None) -> str | None:
        if path is None or final == root:
            return path
        for p in (path, _norm(path)):
            if _under(p, root):
                return final + p[len(root):]
        return path

    return rebase


def _new_indirect(edge: _Edge, provider: str, scanner: Scanner, seen: set[tuple[str | None, str, str | None]],
                  include_system_indirect: bool) -> bool:
    """Whether an indirect need is recorded: the first time it is seen across the env, and not
    between two system libraries unless ``include_system_indirect``."""
    key = (edge.via_path, edge.needs, edge.path)
    if key in seen:
        return False
    seen.add(key)
    return include_system_indirect or provider != SYSTEM or \
        scanner.attributor.provider(edge.via_path, edge.via_name) != SYSTEM


def scan_links(prefix: Path | str, stack_modules: Sequence[CentralModule], python: str | os.PathLike | None = None,
               *, as_prefix: Path | str | None = None, include_system_indirect: bool = False,
               on_error: Callable[[str, Exception], None] | None = None) -> list[LinkEvidence]:
    """Link evidence for every ELF file in the env at ``prefix``.

    ``stack_modules``: the central modules, in load order, whose ``LD_LIBRARY_PATH`` the env runs
    with. ``python``: the central interpreter that loads the env's extension modules (default:
    what ``prefix/bin/python`` points to). ``as_prefix``: the env's final location when scanning
    a staging copy (paths inside the env are recorded under it).

    Direct needs are recorded for every file. Indirect needs (a library needing another) are
    recorded once per (needing library, name, target) across the env, with the first env file
    that pulled them in, and not at all between two system libraries (libz needing libc is no
    evidence about the env) unless ``include_system_indirect``.
    """
    root = _norm(os.fspath(prefix))
    if python is None:
        candidate = os.path.join(root, "bin", "python")
        python = os.path.realpath(candidate) if os.path.exists(candidate) else None
    scanner = Scanner(stack_modules, root, python)
    rebase = _rebaser(root, _norm(os.fspath(as_prefix)) if as_prefix is not None else root)
    out: list[LinkEvidence] = []
    seen_indirect: set[tuple[str | None, str, str | None]] = set()
    for info in env_elf_files(root, on_error):
        rel = os.path.relpath(info.path, root)
        try:
            links = scanner.file_links(info)
        except (OSError, ElfError) as exc:
            if on_error is not None:
                on_error(info.path, exc)
            continue
        for edge, provider, soname in links:
            if edge.via_path is not None and not _new_indirect(edge, provider, scanner, seen_indirect,
                                                               include_system_indirect):
                continue
            sha = scanner.sha256(edge.path) if edge.path and provider not in NOT_MODULES else None
            out.append(LinkEvidence(file=rel, needs=edge.needs, path=rebase(edge.path), provider=provider,
                                    soname=soname, via=edge.via_name, sha256=sha))
    return out


# ---------------------------------------------------------------------------------------------
# the requirement scan


@dataclass(frozen=True)
class Distribution:
    name: str                 # canonical
    version: str
    path: str                 # the .dist-info / .egg-info directory
    requires: tuple[str, ...]


def _parse_metadata(path: str) -> tuple[str, str, list[str]] | None:
    from email.parser import HeaderParser  # here: a scan that reads no METADATA never pays its import

    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            msg = HeaderParser().parse(fh)
    except OSError:
        return None
    name, version = msg.get("Name"), msg.get("Version")
    if not name or not version:
        return None
    return name, version, list(msg.get_all("Requires-Dist") or [])


def _egg_requires(path: str) -> list[str]:
    # requires.txt: unconditional requirements first, then "[extra:marker]" sections.
    out = []
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                line = line.strip()
                if line.startswith("["):
                    break
                if line and not line.startswith("#"):
                    out.append(line)
    except OSError:
        pass
    return out


def distributions_in(directory: str | os.PathLike) -> dict[str, Distribution]:
    """The distributions installed in one site-packages directory (or PYTHONPATH entry)."""
    found: dict[str, Distribution] = {}
    d = os.fspath(directory)
    try:
        entries = sorted(os.scandir(d), key=lambda e: e.name)
    except OSError:
        return found
    for e in entries:
        if e.name.endswith(".dist-info"):
            meta = _parse_metadata(os.path.join(e.path, "METADATA"))
            if meta:
                found.setdefault(canonical_name(meta[0]), Distribution(canonical_name(meta[0]), meta[1], e.path, tuple(meta[2])))
        elif e.name.endswith(".egg-info"):
            info = os.path.join(e.path, "PKG-INFO") if e.is_dir() else e.path
            meta = _parse_metadata(info)
            if meta:
                reqs = meta[2] or (_egg_requires(os.path.join(e.path, "requires.txt")) if e.is_dir() else [])
                found.setdefault(canonical_name(meta[0]), Distribution(canonical_name(meta[0]), meta[1], e.path, tuple(reqs)))
    return found


def marker_environment(python_info) -> dict[str, str]:
    """PEP 508 marker values of the central interpreter (not of the Python running envmod)."""
    version = python_info.version
    platform = getattr(python_info, "platform", "") or ""
    machine = platform.split("-", 1)[1] if "-" in platform else os.uname().machine
    system = platform.split("-", 1)[0] if platform else "linux"
    impl = (getattr(python_info, "implementation", "") or "CPython")
    return {
        "python_version": ".".join(version.split(".")[:2]),
        "python_full_version": version,
        "implementation_name": impl.lower(),
        "implementation_version": version,
        "platform_python_implementation": impl,
        "os_name": "posix",
        "sys_platform": "linux" if system.startswith("linux") else system,
        "platform_system": "Linux" if system.startswith("linux") else system.capitalize(),
        "platform_machine": machine.replace("-", "_"),
        "platform_release": "",
        "platform_version": "",
        "extra": "",
    }


def env_site_packages(prefix: str | os.PathLike, short_version: str | None = None) -> list[str]:
    root = os.fspath(prefix)
    pattern = f"python{short_version}" if short_version else None
    out: list[str] = []
    for lib in ("lib", "lib64"):
        base = os.path.join(root, lib)
        try:
            names = sorted(os.listdir(base))
        except OSError:
            continue
        for n in names:
            if (n == pattern if pattern else n.startswith("python")):
                sp = os.path.join(base, n, "site-packages")
                if os.path.isdir(sp) and os.path.realpath(sp) not in [os.path.realpath(x) for x in out]:
                    out.append(sp)
    return out


def module_python_dirs(module: CentralModule, short_version: str) -> list[str]:
    """Where a module's Python packages are: its PYTHONPATH, then site-packages under its prefixes
    (EasyBuild's EBPYTHONPREFIXES mechanism, a Python module's own site-packages)."""
    dirs = list(module.paths.get("PYTHONPATH", ()))
    for prefix in [module.prefix, *module.prefixes.values()]:
        if prefix and _norm(prefix) not in SYSTEM_PREFIXES:
            for lib in ("lib", "lib64"):
                dirs.append(os.path.join(prefix, lib, f"python{short_version}", "site-packages"))
    return list(dict.fromkeys(_norm(d) for d in dirs))


def _python_module(stack_modules: Sequence[CentralModule], python_info) -> CentralModule | None:
    exe = os.path.realpath(python_info.executable) if python_info is not None else None
    for m in stack_modules:
        if m.kind == "python" and m.prefix and exe and _under(exe, os.path.realpath(m.prefix)):
            return m
    for m in stack_modules:
        if any(_under(python_info.executable, _norm(d)) for d in m.paths.get("PATH", ())):
            return m
    pythons = [m for m in stack_modules if m.kind == "python"]
    return pythons[0] if pythons else None


def central_package_dirs(stack_modules: Sequence[CentralModule], python_info) -> list[tuple[str, str]]:
    """(directory, module name) in the order Python searches them from inside the env, except
    the env's own site-packages: modules' PYTHONPATH (later-loaded first), then site-packages
    under module prefixes, then the central interpreter's own site-packages."""
    short = ".".join(python_info.version.split(".")[:2])
    out: list[tuple[str, str]] = []
    for m in reversed(list(stack_modules)):
        out.extend((_norm(d), m.name) for d in m.paths.get("PYTHONPATH", ()))
    for m in reversed(list(stack_modules)):
        out.extend((d, m.name) for d in module_python_dirs(m, short) if (d, m.name) not in out)
    pymod = _python_module(stack_modules, python_info)
    purelib = getattr(python_info, "purelib", None)
    if pymod is not None and purelib:
        out.append((_norm(purelib), pymod.name))
    seen: set[str] = set()
    unique = []
    for d, name in out:
        real = os.path.realpath(d)
        if real not in seen and os.path.isdir(d):
            seen.add(real)
            unique.append((d, name))
    return unique


def scan_requirements(prefix: Path | str, stack_modules: Sequence[CentralModule], python_info) -> list[RequirementEvidence]:
    """Requirements of the env's distributions that a central module satisfies.

    Requires-Dist entries whose markers do not apply to the central interpreter (extras
    included: an ``extra == ...`` marker never applies) are ignored; a requirement installed in
    the env itself is the env's; one satisfied by a distribution in a central module's path,
    with a matching version, becomes evidence that the env needs that module.
    """
    short = ".".join(python_info.version.split(".")[:2])
    installed: dict[str, Distribution] = {}
    for d in env_site_packages(prefix, short):
        for name, dist in distributions_in(d).items():
            installed.setdefault(name, dist)
    central = [(d, name, distributions_in(d)) for d, name in central_package_dirs(stack_modules, python_info)]
    markers = marker_environment(python_info)
    out: list[RequirementEvidence] = []
    seen: set[tuple[str, str]] = set()
    for dist_name in sorted(installed):
        for text in installed[dist_name].requires:
            req = _applying_requirement(text, markers)
            if req is None:
                continue
            want = canonical_name(req.name)
            if want in installed or (dist_name, want) in seen:
                continue
            hit = _central_distribution(req, want, central)
            if hit is not None:
                seen.add((dist_name, want))
                out.append(RequirementEvidence(package=dist_name, requires=str(req), provider=hit[0],
                                               location=hit[1].path))
    return out


def _applying_requirement(text: str, markers: Mapping[str, str]) -> Requirement | None:
    """The requirement ``text`` when it applies to the central interpreter (None: unreadable, or
    its marker does not apply there)."""
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        req = Requirement(text)
    except InvalidRequirement:
        return None
    try:
        if req.marker is not None and not req.marker.evaluate(dict(markers)):
            return None
    except Exception:       # a marker packaging cannot evaluate: as if it did not apply
        return None
    return req


def _central_distribution(req: Requirement, want: str, central: Sequence[tuple[str, str, Mapping[str, Distribution]]]
                          ) -> tuple[str, Distribution] | None:
    """(module name, distribution) of the central distribution Python imports for ``req``
    (canonical name ``want``) when its version satisfies it."""
    from packaging.version import InvalidVersion

    for _directory, module_name, dists in central:
        found = dists.get(want)
        if found is None:
            continue
        try:
            ok = not req.specifier or req.specifier.contains(found.version, prereleases=True)
        except InvalidVersion:
            ok = False
        # the first distribution of that name on the path is the one imported
        return (module_name, found) if ok else None
    return None


# ---------------------------------------------------------------------------------------------
# modules that are not loaded: EasyBuild install trees


def easybuild_install_roots(modulepath: str | Sequence[str] | None) -> list[str]:
    """The EasyBuild install roots behind ``MODULEPATH`` entries: ``ROOT`` for an entry
    ``ROOT/modules/<class>`` when ``ROOT/software`` exists (EasyBuild installs each module's
    software in ``ROOT/software/<name>/<version>``)."""
    entries = modulepath.split(":") if isinstance(modulepath, str) else list(modulepath or ())
    roots: list[str] = []
    for entry in [e for e in entries if e]:
        parent = os.path.dirname(_norm(entry))
        root = os.path.dirname(parent)
        if os.path.basename(parent) == "modules" and os.path.isdir(os.path.join(root, "software")) \
                and root not in roots:
            roots.append(root)
    return roots


def tree_module(path: str, install_roots: Sequence[str]) -> str | None:
    """``<name>/<version>`` when ``path`` (as the loader names it, or its realpath) lies in
    ``<root>/software/<name>/<version>/`` of one of ``install_roots``: the module that installed
    it, loaded or not."""
    for candidate in dict.fromkeys([_norm(path), os.path.realpath(path)]):
        for root in install_roots:
            software = os.path.join(_norm(root), "software")
            if _under(candidate, software):
                parts = os.path.relpath(candidate, software).split(os.sep)
                if len(parts) >= 3:
                    return f"{parts[0]}/{parts[1]}"
    return None


def attribute_install_trees(links: Iterable[LinkEvidence], install_roots: Sequence[str]) -> list[LinkEvidence]:
    """The links with every library the `Attributor` left to the system, but that lies in an
    install tree, given to the module that installed it. The Attributor knows loaded modules
    only; a library found through an RPATH into a module that is not loaded (and so not among
    what the env's module would load) is then named instead of passing for the system's."""
    out = []
    for e in links:
        owner = tree_module(e.path, install_roots) if e.provider == SYSTEM and e.path else None
        out.append(replace(e, provider=owner) if owner else e)
    return out


# ---------------------------------------------------------------------------------------------
# what the evidence means


def required_modules(links: Iterable[LinkEvidence], requirements: Iterable[RequirementEvidence],
                     python_module_name: str | None, order: Sequence[str] = ()) -> list[str]:
    """The modules an env must load: the Python's module, every module providing a library the
    env links (directly or through other libraries), every module providing a required package.
    Ordered as in ``order`` (the load order); names it does not list follow in first-seen order."""
    wanted: list[str] = []
    if python_module_name:
        wanted.append(python_module_name)
    for e in links:
        if e.provider not in NOT_MODULES and e.provider not in wanted:
            wanted.append(e.provider)
    for r in requirements:
        if r.provider and r.provider not in wanted:
            wanted.append(r.provider)
    position = {name: i for i, name in enumerate(order)}
    return sorted(wanted, key=lambda n: (position.get(n, len(position)), wanted.index(n)))


@dataclass(frozen=True)
class DeclaredCheck:
    """An env's evidence held against the modules a front end declared it depends on."""

    undeclared: Mapping[str, tuple[str, ...]]   # module -> why the env needs it, for modules not declared
    unused: tuple[str, ...]                     # declared modules that nothing in the env uses
    linked: tuple[str, ...]                     # modules providing a library the env loads (any depth)


def check_declared_modules(record: EnvRecord, declared: Sequence[str],
                           install_roots: Sequence[str] = ()) -> DeclaredCheck:
    """Which modules an env uses that are not ``declared``, and which declared ones it does not use.

    A front end whose dependency modules load their own dependencies (EasyBuild's ``depends_on``)
    declares what the env itself uses: its Python's module, every module a package was compiled
    against, every module providing a library an env file needs directly (a library pulled in
    by another module's library is that module's business), every module providing a Python
    package an installed package requires. A module is used if any of these, or any library
    loaded at any depth, is its. ``install_roots``: EasyBuild trees whose unloaded modules count
    too (`attribute_install_trees`)."""
    links = attribute_install_trees(record.links, install_roots)
    why: dict[str, list[str]] = {}

    def note(module: str | None, reason: str) -> None:
        if module and module not in NOT_MODULES:
            why.setdefault(module, [])
            if reason not in why[module]:
                why[module].append(reason)

    note(record.python.module, "the interpreter")
    for pkg in record.packages:
        for module in pkg.built_against:
            note(module, f"{pkg.name} is compiled against it")
    for e in links:
        if e.via is None:
            note(e.provider, f"{display_path(e.file)} needs {e.needs}")
    for r in record.requirements:
        note(r.provider, f"{r.package} requires {r.requires}")
    linked = required_modules(links, (), None)
    used = set(why) | set(linked)
    return DeclaredCheck(undeclared={m: tuple(reasons) for m, reasons in why.items() if m not in declared},
                         unused=tuple(m for m in declared if m not in used), linked=tuple(linked))


_SITE_PACKAGES = re.compile(r"^(?:.*/)?lib(?:64)?/python[^/]+/site-packages/")


def display_path(file: str) -> str:
    """An env file as users think of it: relative to site-packages when inside it."""
    return _SITE_PACKAGES.sub("", file, count=1)


def _provider_text(provider: str, path: str | None) -> str:
    if provider == MISSING:
        return "NOT FOUND"
    if provider == ENV:
        return f"this env ({display_path(path)})" if path else "this env"
    return provider


def format_links(links: Iterable[LinkEvidence], *, include_system: bool = False,
                 env_prefix: str | None = None) -> list[str]:
    """``mpi4py/MPI.cpython-311-x86_64-linux-gnu.so → libmpi.so.40 → openmpi/4.1.4``, one line
    per need (system libraries only with ``include_system``, and always when missing)."""
    lines = []
    hidden: dict[str, None] = {}
    for e in links:
        if e.provider == SYSTEM and not include_system:
            hidden[e.soname or e.needs] = None
            continue
        chain = [display_path(e.file)] + ([e.via] if e.via else []) + [e.needs]
        path = e.path
        if e.provider == ENV and path and env_prefix and _under(_norm(path), _norm(env_prefix)):
            path = os.path.relpath(path, env_prefix)
        lines.append(" → ".join(chain + [_provider_text(e.provider, path)]))
    if hidden:
        names = sorted(hidden)
        more = f" and {len(names) - 6} more" if len(names) > 6 else ""
        lines.append(f"system libraries: {', '.join(names[:6])}{more}")
    return lines


def format_requirements(requirements: Iterable[RequirementEvidence]) -> list[str]:
    """``h5py requires numpy>=1.17.3 → python/3.11 (numpy-2.2.1.dist-info)``."""
    return [f"{r.package} requires {r.requires} → {r.provider} ({os.path.basename(r.location)})"
            for r in requirements]


def format_evidence(links: Iterable[LinkEvidence], requirements: Iterable[RequirementEvidence], *,
                    include_system: bool = False, env_prefix: str | None = None) -> list[str]:
    return format_links(links, include_system=include_system, env_prefix=env_prefix) + \
        format_requirements(requirements)
