"""A static model of glibc's dynamic loader: where each needed library of an ELF file is loaded from.

* `resolve` answers, for one object, where each ``DT_NEEDED`` entry would
  be loaded from and by which rule; `resolve_tree` follows the whole
  dependency graph the way ld.so builds its link map (like ``ldd``, without
  running anything).  A `Resolver` runs many of those with shared caches.
* `host_config` is what the search depends on here: the default
  directories, hwcaps subdirectories and $PLATFORM from ``ld.so --help``,
  $LIB, and the parsed ld.so.cache (`bridge.scan.ldcache`).

The files themselves are read by `bridge.scan.elf`.  The search model
follows glibc 2.36 ``elf/dl-load.c`` (``_dl_map_object``, ``open_path``,
``open_verify``, ``_dl_dst_substitute``) and ``elf/dl-cache.c``.  What it
does not model: secure (setuid) mode, ``LD_PRELOAD``, audit modules,
``dlopen`` namespaces, and ``LD_LIBRARY_PATH`` being ignored for setuid
programs.
"""

from __future__ import annotations

import enum
import os
import re
import struct
import subprocess
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Dict, Iterator, List, Optional, Sequence, Set, Tuple, Union

from .elf import (
    _O_FLAGS,
    ELFCLASS32,
    ELFCLASS64,
    ELFDATA2LSB,
    ELFDATA2MSB,
    ELFMAG,
    ELFOSABI_GNU,
    ELFOSABI_SYSV,
    EM_X86_64,
    ElfError,
    ElfInfo,
    PathLike,
    read_elf,
)
from .ldcache import LdCache, cache_flags_for, host_ldcache

__all__ = [
    "How",
    "Resolution",
    "LoaderConfig",
    "host_config",
    "Resolver",
    "resolve",
    "LoadedObject",
    "LoadResult",
    "resolve_tree",
    "parse_ld_library_path",
    "expand_dst",
]

# --------------------------------------------------------------------------
# Loader configuration


@dataclass(frozen=True)
class LoaderConfig:
    """Facts about the dynamic loader that the search depends on.

    `host_config` discovers them for this machine; tests and callers that
    model another system can build one by hand.
    """

    #: Expansion of ``$LIB`` (Debian: ``lib/x86_64-linux-gnu``; RHEL/SUSE:
    #: ``lib64``).
    lib: str = "lib64"
    #: Expansion of ``$PLATFORM`` (AT_PLATFORM, e.g. ``x86_64``).
    platform: str = "x86_64"
    #: Trusted system directories searched last, in order.
    default_dirs: Tuple[str, ...] = ("/lib64", "/usr/lib64")
    #: Subdirectories tried inside *every* search directory, best first,
    #: each ending in "/" and the last one "" (the directory itself):
    #: ``glibc-hwcaps/x86-64-v3/`` (glibc >= 2.33) and the legacy
    #: ``tls/``, ``x86_64/`` platform directories (glibc < 2.37).
    subdirs: Tuple[str, ...] = ("",)
    #: glibc-hwcaps names the CPU supports, best first (for cache entries).
    glibc_hwcaps: Tuple[str, ...] = ()
    #: Parsed ld.so.cache, or None for "no cache" (ld.so would then go
    #: straight to the default directories).
    ldcache: Optional[LdCache] = None
    #: The loader's own path, used as the interpreter of objects that do
    #: not name one (shared libraries scanned on their own).
    interpreter: Optional[str] = None


_LDSO_BY_MACHINE = {
    (64, EM_X86_64): "/lib64/ld-linux-x86-64.so.2",
    (32, 3): "/lib/ld-linux.so.2",
    (64, 183): "/lib/ld-linux-aarch64.so.1",
    (64, 21): "/lib64/ld64.so.2",
}


@lru_cache(maxsize=None)
def _ldso_help(ldso: str) -> str:
    # glibc >= 2.33 prints its search path and hwcaps choices with --help.
    # This runs the loader binary itself, which loads nothing else.
    try:
        out = subprocess.run([ldso, "--help"], capture_output=True, text=True,
                             timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout


@dataclass
class _LdsoHelp:
    """What ``ld.so --help`` says about the search (glibc >= 2.33)."""

    #: the system search path, in order
    dirs: List[str] = field(default_factory=list)
    #: glibc-hwcaps subdirectories the CPU supports, best first
    hwcaps: List[str] = field(default_factory=list)
    #: AT_PLATFORM, when listed among the legacy subdirectories (glibc < 2.37)
    platform: Optional[str] = None
    #: other legacy hwcap subdirectory names searched, in listed order
    legacy: List[str] = field(default_factory=list)
    #: whether the legacy "tls" subdirectory is searched
    tls: bool = False

    def add(self, section: str, item: str) -> None:
        m = _LDSO_HELP_ITEMS[section].match(item)
        if m is None:
            return
        if section == "dirs":
            self.dirs.append(m.group(1))
        elif section == "hwcaps":
            self.hwcaps.append(m.group(1))
        else:
            self._add_legacy(m.group(1), m.group(2))

    def _add_legacy(self, name: str, note: str) -> None:
        if "searched" not in note:
            return
        if "AT_PLATFORM" in note:
            self.platform = name
        elif name == "tls":
            self.tls = True
        else:
            self.legacy.append(name)


# The headings of ld.so --help's sections we read (lower case), and the item lines in each.
_LDSO_HELP_SECTIONS = (("shared library search path", "dirs"),
                       ("subdirectories of glibc-hwcaps", "hwcaps"),
                       ("legacy hwcap", "legacy"))
_LDSO_HELP_ITEMS = {"dirs": re.compile(r"(\S+) \(system search path\)"),
                    "hwcaps": re.compile(r"(\S+) \(.*searched.*\)"),
                    "legacy": re.compile(r"(\S+) \((.*)\)")}


def _ldso_help_section(heading: str) -> Optional[str]:
    low = heading.lower()
    return next((section for prefix, section in _LDSO_HELP_SECTIONS if low.startswith(prefix)), None)


def _parse_ldso_help(text: str) -> _LdsoHelp:
    parsed = _LdsoHelp()
    section = None
    for line in text.splitlines():
        if not line.startswith(" "):      # a heading; items are indented
            section = _ldso_help_section(line)
        elif section is not None:
            parsed.add(section, line.strip())
    return parsed


def _legacy_subdirs(tls: bool, hwcap_names: Sequence[str], platform: Optional[str]) -> List[str]:
    # glibc < 2.37 (_dl_important_hwcaps) tries every combination of
    # "tls", the platform and the supported hwcap names (in the order
    # ld.so --help lists them), most specific first: with platform
    # haswell and hwcaps avx512_1, x86_64 that is
    # tls/haswell/avx512_1/x86_64, tls/haswell/avx512_1, tls/haswell/x86_64, ...
    items = (["tls"] if tls else []) + ([platform] if platform else []) + list(hwcap_names)
    n = len(items)
    out = []
    for mask in range((1 << n) - 1, -1, -1):
        parts = [items[i] for i in range(n) if mask & (1 << (n - 1 - i))]
        out.append("".join(p + "/" for p in parts))
    return out


@lru_cache(maxsize=8)
def _host_config(elf_class: int, machine: int, use_help: bool) -> LoaderConfig:
    ldso = _LDSO_BY_MACHINE.get((elf_class, machine))
    probed = _parse_ldso_help(_ldso_help(ldso)) if use_help and ldso and os.path.exists(ldso) else _LdsoHelp()
    dirs, hw, legacy, platform, tls = probed.dirs, probed.hwcaps, probed.legacy, probed.platform, probed.tls
    # Legacy platform subdirectories exist only where ld.so lists them
    # (glibc 2.33 - 2.36); 2.37 dropped them.  Older loaders (no --help)
    # have them too, but we cannot ask which, so none are modelled there.
    has_legacy = bool(platform or legacy or tls)
    if not dirs:
        # Pre-2.33 glibc (no --help): Debian-style multiarch if present,
        # else the generic lib64 (or lib for 32-bit) pair.
        triplet = {EM_X86_64: "x86_64-linux-gnu", 183: "aarch64-linux-gnu",
                   3: "i386-linux-gnu"}.get(machine)
        if triplet and os.path.isdir(f"/usr/lib/{triplet}"):
            dirs = [f"/lib/{triplet}", f"/usr/lib/{triplet}", "/lib", "/usr/lib"]
        elif elf_class == 64:
            dirs = ["/lib64", "/usr/lib64"]
        else:
            dirs = ["/lib", "/usr/lib"]
    if platform is None:
        # AT_PLATFORM is the kernel's name for the CPU; an i386 process on
        # an x86_64 kernel sees "i686".
        platform = "i686" if (elf_class, machine) == (32, 3) else os.uname().machine
    cache = host_ldcache()
    lib = _guess_lib(dirs, elf_class)
    subdirs = [f"glibc-hwcaps/{h}/" for h in hw]
    if has_legacy:
        subdirs += _legacy_subdirs(tls, legacy, platform)
    if not subdirs or subdirs[-1] != "":
        subdirs.append("")
    # Duplicates (tls/x86_64 from the hwcap and again from the platform)
    # change nothing about what is found; drop them.
    uniq = list(dict.fromkeys(subdirs))
    return LoaderConfig(lib=lib, platform=platform,
                        default_dirs=tuple(d.rstrip("/") or "/" for d in dirs),
                        subdirs=tuple(uniq), glibc_hwcaps=tuple(hw), ldcache=cache,
                        interpreter=ldso)


def _guess_lib(dirs: Sequence[str], elf_class: int) -> str:
    # $LIB is glibc's configured slibdir relative to the prefix
    # ("lib/x86_64-linux-gnu" on Debian, "lib64" on Red Hat/SUSE).  It is
    # compiled in and not printed anywhere, but slibdir is where libc.so.6
    # lives, so take libc's directory from the first system dir holding it.
    for d in dirs:
        if os.path.exists(os.path.join(d, "libc.so.6")):
            rel = d.rstrip("/")
            for prefix in ("/usr/", "/"):
                if rel.startswith(prefix):
                    return rel[len(prefix):]
    return "lib64" if elf_class == 64 else "lib"


def host_config(elf_class: int = 64, machine: int = EM_X86_64, *, probe_loader: bool = True) -> LoaderConfig:
    """Loader facts for this machine, for objects of the given ABI.

    With ``probe_loader`` the search path and hwcaps subdirectories come from
    ``ld.so --help`` (glibc >= 2.33; it runs only the loader binary, once
    per process), so they match what the loader really does here.
    """
    return _host_config(elf_class, machine, probe_loader)


# --------------------------------------------------------------------------
# Resolution


class How(str, enum.Enum):
    """Which rule produced a `Resolution` (or why it failed)."""

    PATH = "path"  # DT_NEEDED contains '/': used as given
    RPATH = "rpath"
    LD_LIBRARY_PATH = "ld_library_path"
    RUNPATH = "runpath"
    LDCACHE = "ldcache"
    DEFAULT = "default"
    LOADED = "loaded"  # resolve_tree: an already loaded object matched by name/soname/inode
    INTERP = "interp"  # resolve_tree: the program interpreter (ld.so)
    ROOT = "root"  # resolve_tree: the object the walk started from
    NOT_FOUND = "not_found"
    ERROR = "error"  # ld.so would stop with an error (e.g. non-ELF candidate)

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Resolution:
    """Where one DT_NEEDED entry resolves to and why."""

    name: str
    #: The path as the loader would open it (not symlink-resolved), or None.
    path: Optional[str]
    how: How
    #: Path of the object whose RPATH/RUNPATH supplied the directory (the
    #: object itself, one of its loaders, or the executable); None otherwise.
    via: Optional[str] = None
    #: Candidates that existed but were skipped because they are for another
    #: ELF class or machine (the loader silently passes over those).
    skipped: Tuple[str, ...] = ()
    #: For How.ERROR: ld.so's message (``invalid ELF header`` ...).
    error: Optional[str] = None

    @property
    def found(self) -> bool:
        return self.path is not None


_DST_RE = re.compile(r"\$(\{(ORIGIN|PLATFORM|LIB)\}|(ORIGIN|PLATFORM|LIB)(?![A-Za-z0-9_]))")


def expand_dst(s: str, origin: Optional[str], cfg: LoaderConfig) -> Optional[str]:
    """Expand $ORIGIN/$LIB/$PLATFORM (and ${...}) like ``_dl_dst_substitute``.

    Unknown ``$NAME`` sequences stay literal.  Returns None when a known
    token has no value (origin unknown): ld.so then drops the whole entry.
    """
    if "$" not in s:
        return s
    missing = False

    def sub(m: "re.Match[str]") -> str:
        nonlocal missing
        name = m.group(2) or m.group(3)
        if name == "ORIGIN":
            if origin is None:
                missing = True
                return ""
            return origin
        return cfg.platform if name == "PLATFORM" else cfg.lib

    out = _DST_RE.sub(sub, s)
    return None if missing else out


def _search_list(entries: Sequence[str], origin: Optional[str], cfg: LoaderConfig) -> List[str]:
    """fillin_rpath: expand, normalise trailing '/', drop duplicates.

    An empty element means the current directory (the loader's "./" rule
    comes out as a relative path that open() resolves against the cwd).
    """
    out: List[str] = []
    for e in entries:
        if e:
            x = expand_dst(e, origin, cfg)
            if not x:
                continue
            x = x.rstrip("/") + "/" if x.strip("/") else "/"
        else:
            x = ""
        if x not in out:
            out.append(x)
    return out


def parse_ld_library_path(value: Optional[str]) -> Tuple[str, ...]:
    """Split an LD_LIBRARY_PATH value the way ld.so does.

    Both ':' and ';' separate entries, and empty entries (``a::b``, a
    trailing ':') are kept -- they mean the current directory.  An unset or
    empty variable is no path at all.
    """
    if not value:
        return ()
    return tuple(re.split(r"[:;]", value))


# Verdicts of _verify, cached per candidate path.
_OK, _OTHER, _MISSING = "ok", "other", "missing"
_ANY: frozenset = frozenset(["<unlistable>"])


class Resolver:
    """Runs the loader's search with caches shared across many objects.

    Directory listings and candidate checks are cached for the lifetime of
    the instance, so make a new one if the file system changes.  The
    module-level `resolve` / `resolve_tree` make a fresh one per call.
    """

    def __init__(self, config: Optional[LoaderConfig] = None) -> None:
        self._config = config
        self._listing: Dict[str, Optional[frozenset]] = {}
        self._verdict: Dict[Tuple[str, int, str, int], Tuple[str, Optional[str]]] = {}
        self._infos: Dict[str, Optional[ElfInfo]] = {}

    def config_for(self, info: ElfInfo) -> LoaderConfig:
        return self._config if self._config is not None else host_config(info.elf_class, info.machine)

    # -- candidate checks ---------------------------------------------------

    def _names_in(self, d: str) -> Optional[frozenset]:
        """Names in directory d; None if it does not exist, _ANY if unlistable.

        One listdir per directory instead of an open() per candidate (the
        loader's per-directory "nonexisting" cache plays the same role).
        """
        if d not in self._listing:
            try:
                self._listing[d] = frozenset(os.listdir(d or "."))
            except PermissionError:
                # Searchable but unreadable (mode 0711): ld.so can still
                # open files in it, so probe candidates one by one.
                self._listing[d] = _ANY
            except OSError:
                self._listing[d] = None
        return self._listing[d]

    def _verify(self, path: str, want: ElfInfo) -> Tuple[str, Optional[str]]:
        """open_verify: (_OK | _OTHER | _MISSING | "error", message)."""
        key = (path, want.elf_class, want.endian, want.machine)
        v = self._verdict.get(key)
        if v is None:
            v = self._verdict[key] = _open_verify(path, want)
        return v

    def _info(self, path: str) -> Optional[ElfInfo]:
        if path not in self._infos:
            try:
                self._infos[path] = read_elf(path)
            except (OSError, ElfError):
                self._infos[path] = None
        return self._infos[path]

    def _open_path(self, name: str, dirs: Sequence[str], want: ElfInfo, cfg: LoaderConfig,
                   skipped: List[str]) -> Tuple[Optional[str], Optional[str]]:
        """Try name in each dir (with hwcaps subdirs): (path, error)."""
        for d in dirs:
            for sub in cfg.subdirs:
                dd = d + sub
                names = self._names_in(dd.rstrip("/") if dd not in ("", "/") else dd)
                if names is None or (names is not _ANY and name not in names):
                    continue
                cand = dd + name
                verdict, msg = self._verify(cand, want)
                if verdict == _OK:
                    return cand, None
                if verdict == _OTHER:
                    skipped.append(cand)
                elif verdict != _MISSING:
                    return cand, msg
        return None, None

    # -- one object ---------------------------------------------------------

    def resolve(
        self,
        info: ElfInfo,
        *,
        ld_library_path: Union[str, Sequence[str], None] = None,
        loaders: Sequence[ElfInfo] = (),
        executable: Optional[ElfInfo] = None,
        origin: Optional[str] = None,
        explicit_loader: bool = False,
    ) -> Tuple[Resolution, ...]:
        """Resolve every DT_NEEDED entry of ``info``.  See module `resolve`."""
        chain, main, llp, cfg = self._setup(info, ld_library_path, loaders, executable,
                                            origin, explicit_loader)
        return tuple(self._resolve_name(n, chain, main, llp, cfg) for n in info.needed)

    def _setup(self, info: ElfInfo, ld_library_path: Union[str, Sequence[str], None], loaders: Sequence[ElfInfo],
               executable: Optional[ElfInfo], origin: Optional[str], explicit_loader: bool,
               ) -> Tuple[List["_Obj"], "_Obj", List[str], LoaderConfig]:
        main_info = executable if executable is not None else (loaders[-1] if loaders else info)
        # The main program's $ORIGIN comes from /proc/self/exe when the
        # kernel starts it (symlinks resolved), from the command line under
        # an explicit ld.so / ldd.
        main = _Obj(main_info, _origin(main_info.path, not explicit_loader))
        if origin is not None and info is main_info:
            main = _Obj(main_info, origin)
        chain: List[_Obj] = []
        for i, obj in enumerate([info, *loaders]):
            if obj is main_info:
                chain.append(main)
            elif i == 0 and origin is not None:
                chain.append(_Obj(obj, origin))
            else:
                chain.append(_Obj(obj, _origin(obj.path, False)))
        cfg = self.config_for(info)
        return chain, main, self._llp(ld_library_path, main, cfg), cfg

    def _llp(self, ld_library_path: Union[str, Sequence[str], None], main_obj: "_Obj",
             cfg: LoaderConfig) -> List[str]:
        if ld_library_path is None:
            entries: Sequence[str] = ()
        elif isinstance(ld_library_path, str):
            entries = parse_ld_library_path(ld_library_path)
        else:
            entries = list(ld_library_path)
        # $ORIGIN in LD_LIBRARY_PATH is the executable's origin.
        return _search_list(entries, main_obj.origin, cfg)

    def _plan(self, name: str, chain: Sequence["_Obj"], main: "_Obj", llp: Sequence[str],
              cfg: LoaderConfig) -> Iterator[Tuple[How, Optional[str], List[str]]]:
        """The search stages of _dl_map_object for a name without '/'.

        Yields (rule, path of the object supplying the list, directories);
        the ld.so.cache stage has no directories.
        """
        loader = chain[0]
        # 1. DT_RPATH of the loader, of the object that loaded it, and on up,
        #    then the executable's -- all skipped if the loader has a DT_RUNPATH.
        if not loader.info.runpath:
            yield from _rpath_stages(chain, main, cfg)
        # 2. LD_LIBRARY_PATH.
        if llp:
            yield How.LD_LIBRARY_PATH, None, list(llp)
        # 3. DT_RUNPATH, of the loader only: it is never inherited.
        if loader.info.runpath:
            dirs = _search_list_nonempty(loader.info.runpath, loader.origin, cfg)
            if dirs:
                yield How.RUNPATH, loader.info.path, dirs
        # 4. /etc/ld.so.cache.
        if cfg.ldcache is not None:
            yield How.LDCACHE, None, []
        # 5. Trusted default directories, unless the loader says
        #    DF_1_NODEFLIB.
        if not loader.info.nodeflib:
            yield How.DEFAULT, None, [d.rstrip("/") + "/" for d in cfg.default_dirs]

    def _cache_lookup(self, name: str, loader: ElfInfo, cfg: LoaderConfig) -> Optional[str]:
        if cfg.ldcache is None:
            return None
        cached = cfg.ldcache.lookup(name, cache_flags_for(loader.elf_class, loader.machine),
                                    cfg.glibc_hwcaps)
        # DF_1_NODEFLIB also vetoes cache entries that live in the default
        # directories (but not ones elsewhere, e.g. from ld.so.conf.d).
        if cached is not None and loader.nodeflib and any(
                cached.startswith(d.rstrip("/") + "/") for d in cfg.default_dirs):
            return None
        return cached

    def _resolve_name(self, name: str, chain: Sequence["_Obj"], main: "_Obj",
                      llp: Sequence[str], cfg: LoaderConfig) -> Resolution:
        loader = chain[0]
        needed = name  # reported as written in DT_NEEDED
        if "$" in name:
            expanded = expand_dst(name, loader.origin, cfg)
            if not expanded:
                return Resolution(needed, None, How.ERROR, error="empty dynamic string token substitution")
            name = expanded
        if "/" in name:
            return self._resolve_path(needed, name, loader.info)
        skipped: List[str] = []
        for how, via, dirs in self._plan(name, chain, main, llp, cfg):
            if how is How.LDCACHE:
                path, err = self._try_ldcache(name, loader.info, cfg, skipped)
            else:
                path, err = self._open_path(name, dirs, loader.info, cfg, skipped)
            if err is not None:
                # ld.so stops at an existing candidate it cannot use for a
                # reason other than class/machine ("invalid ELF header").
                return Resolution(needed, None, How.ERROR, via=via, skipped=tuple(skipped),
                                  error=f"{path}: {err}")
            if path is not None:
                return Resolution(needed, path, how, via=via, skipped=tuple(skipped))
        return Resolution(needed, None, How.NOT_FOUND, skipped=tuple(skipped))

    def _resolve_path(self, needed: str, path: str, want: ElfInfo) -> Resolution:
        """A needed name with a '/' in it is opened as it is, never searched for."""
        verdict, msg = self._verify(path, want)
        if verdict == _OK:
            return Resolution(needed, path, How.PATH)
        if verdict in (_OTHER, _MISSING):
            return Resolution(needed, None, How.NOT_FOUND, skipped=(path,) if verdict == _OTHER else ())
        return Resolution(needed, None, How.ERROR, error=f"{path}: {msg}")

    def _try_ldcache(self, name: str, want: ElfInfo, cfg: LoaderConfig,
                     skipped: List[str]) -> Tuple[Optional[str], Optional[str]]:
        """The ld.so.cache stage, like _open_path: (path, error)."""
        cached = self._cache_lookup(name, want, cfg)
        if cached is None:
            return None, None
        verdict, msg = self._verify(cached, want)
        if verdict == _OK:
            return cached, None
        if verdict == _OTHER:
            skipped.append(cached)
        elif verdict != _MISSING:
            return cached, msg
        return None, None

    def candidates(
        self,
        info: ElfInfo,
        name: str,
        *,
        ld_library_path: Union[str, Sequence[str], None] = None,
        loaders: Sequence[ElfInfo] = (),
        executable: Optional[ElfInfo] = None,
        origin: Optional[str] = None,
        explicit_loader: bool = False,
    ) -> Tuple[Tuple[How, str], ...]:
        """Every path ld.so would try for ``name`` needed by ``info``, in order.

        This is the ``trying file=`` list of ``LD_DEBUG=libs`` for the first
        lookup in a process (later lookups skip directories already found
        missing, which changes nothing about the result).  The ld.so.cache
        contributes its answer, if any.  Existence is not checked.
        """
        chain, main, llp, cfg = self._setup(info, ld_library_path, loaders, executable,
                                            origin, explicit_loader)
        out: List[Tuple[How, str]] = []
        for how, _via, dirs in self._plan(name, chain, main, llp, cfg):
            if how is How.LDCACHE:
                cached = self._cache_lookup(name, info, cfg)
                if cached is not None:
                    out.append((how, cached))
                continue
            for d in dirs:
                for sub in cfg.subdirs:
                    out.append((how, d + sub + name))
        return tuple(out)

    # -- whole graph --------------------------------------------------------

    def resolve_tree(
        self,
        target: Union[PathLike, ElfInfo],
        *,
        ld_library_path: Union[str, Sequence[str], None] = None,
        executable: Union[PathLike, ElfInfo, None] = None,
        explicit_loader: bool = False,
    ) -> "LoadResult":
        """Build the link map ld.so would build.  See module `resolve_tree`."""
        root = target if isinstance(target, ElfInfo) else read_elf(target)
        if root is None:
            raise ElfError(os.fspath(target), "not an ELF file")  # type: ignore[arg-type]
        exe: Optional[ElfInfo]
        if executable is None or isinstance(executable, ElfInfo):
            exe = executable
        else:
            exe = read_elf(executable)
            if exe is None:
                raise ElfError(os.fspath(executable), "not an ELF file")
        main_info = exe if exe is not None else root
        main = _Obj(main_info, _origin(main_info.path, not explicit_loader))
        cfg = self.config_for(main_info)
        llp = self._llp(ld_library_path, main, cfg)

        walk = _Walk(self, main, llp, cfg)
        walk.add(main, How.ROOT, None, None)
        # ld.so itself is in the link map from the start, under the
        # PT_INTERP name, so "ld-linux-x86-64.so.2" needed by libc matches it
        # by soname instead of being searched for.  A library examined on its
        # own gets the default loader, as under ldd.
        interp = main_info.interpreter or (cfg.interpreter if main_info.needed else None)
        if interp:
            iinfo = self._info(interp)
            if iinfo is not None:
                walk.add(_Obj(iinfo, os.path.dirname(interp)), How.INTERP, None, None, path=interp)
            else:
                interp = None
        if exe is not None and root is not exe and root.path != exe.path:
            # dlopen(target) from the executable: the executable's own
            # dependencies are loaded first, then the target, mapped without
            # a loader (__RTLD_CALLMAP), so its RPATH chain is just itself
            # and then the executable.
            walk.run()
            if walk.links.find(root.path, root.path) is None:
                walk.add(_Obj(root, _origin(root.path, False)), How.ROOT, None, None)
        walk.run()
        return LoadResult(root.path, tuple(walk.objects), tuple(walk.edges), interp)


class _Walk:
    """State of one resolve_tree: _dl_map_object_deps' breadth-first queue."""

    def __init__(self, resolver: Resolver, main: "_Obj", llp: Sequence[str], cfg: LoaderConfig) -> None:
        self.r, self.main, self.llp, self.cfg = resolver, main, llp, cfg
        self.links = _LinkMap()
        self.objects: List[LoadedObject] = []
        self.edges: List[Tuple[str, Resolution]] = []
        self.queue: List[_Node] = []

    def add(self, obj: "_Obj", how: How, loader: Optional["_Node"], name: Optional[str],
            path: Optional[str] = None) -> "_Node":
        node = _Node(obj, path or obj.info.path, loader)
        self.links.add(node, name)
        if how is How.INTERP:
            # ld.so is always mapped, but like ldd we list it only once some
            # object's DT_NEEDED refers to it (rtld_multiple_ref in rtld.c);
            # a tree without libc does not.
            node.unlisted = True
            return node
        self._list(node, how)
        self.queue.append(node)
        return node

    def _list(self, node: "_Node", how: How) -> None:
        self.objects.append(LoadedObject(node.path, node.obj.info, how,
                                         node.loader.path if node.loader else None, node.depth))

    def run(self) -> None:
        r, cfg = self.r, self.cfg
        while self.queue:
            node = self.queue.pop(0)
            chain = node.chain()
            for name in node.obj.info.needed:
                lookup = expand_dst(name, node.obj.origin, cfg) or name if "$" in name else name
                hit = self.links.find(lookup, None)
                if hit is not None:
                    if hit.unlisted:
                        hit.unlisted = False
                        self._list(hit, How.INTERP)
                    self.edges.append((node.path, Resolution(name, hit.path, How.LOADED)))
                    continue
                res = r._resolve_name(name, chain, self.main, self.llp, cfg)
                if res.path is None:
                    self.edges.append((node.path, res))
                    continue
                # The same file under another path (device/inode match):
                # ld.so reuses the loaded object (_dl_map_object_from_fd).
                hit = self.links.find(None, res.path)
                if hit is not None:
                    if hit.unlisted:
                        hit.unlisted = False
                        self._list(hit, How.INTERP)
                    self.links.alias(hit, name)
                    self.edges.append((node.path, Resolution(name, hit.path, How.LOADED,
                                                             skipped=res.skipped)))
                    continue
                info = r._info(res.path)
                if info is None:  # vanished, or corrupt beyond its header
                    self.edges.append((node.path, Resolution(
                        name, None, How.ERROR, error=f"{res.path}: unreadable ELF file")))
                    continue
                self.edges.append((node.path, res))
                self.add(_Obj(info, _origin(res.path, False)), res.how, node, name, path=res.path)


@dataclass(frozen=True)
class _Obj:
    info: ElfInfo
    origin: Optional[str]


class _Node:
    __slots__ = ("obj", "path", "loader", "depth", "names", "ident", "unlisted")

    def __init__(self, obj: "_Obj", path: str, loader: Optional["_Node"]) -> None:
        self.obj, self.path, self.loader = obj, path, loader
        self.unlisted = False
        self.depth: int = 0 if loader is None else loader.depth + 1
        self.names: Set[str] = {path}
        try:
            st = os.stat(path)
            self.ident: Optional[Tuple[int, int]] = (st.st_dev, st.st_ino)
        except OSError:
            self.ident = None

    def chain(self) -> List[_Obj]:
        out: List[_Obj] = []
        n: Optional[_Node] = self
        while n is not None:
            out.append(n.obj)
            n = n.loader
        return out


class _LinkMap:
    """The loaded objects and the names that find them (_dl_name_match_p)."""

    def __init__(self) -> None:
        self.nodes: List[_Node] = []

    def add(self, node: _Node, name: Optional[str]) -> None:
        if name:
            node.names.add(name)
        self.nodes.append(node)

    def alias(self, node: _Node, name: str) -> None:
        node.names.add(name)

    def find(self, name: Optional[str], path: Optional[str]) -> Optional[_Node]:
        if name is not None:
            for n in self.nodes:
                # Matches l_name, any name it was requested by, or its
                # DT_SONAME (which ld.so adds on first match).
                if name in n.names or (n.obj.info.soname is not None and n.obj.info.soname == name):
                    return n
        if path is not None:
            try:
                st = os.stat(path)
            except OSError:
                return None
            ident = (st.st_dev, st.st_ino)
            for n in self.nodes:
                if n.ident == ident:
                    return n
        return None


def _rpath_stages(chain: Sequence["_Obj"], main: "_Obj",
                  cfg: LoaderConfig) -> Iterator[Tuple[How, Optional[str], List[str]]]:
    """The DT_RPATH stages: each object of the loader chain, then the executable if the chain
    did not include it.  An object's own DT_RPATH is void when it has a DT_RUNPATH too
    (get-dynamic-info.h)."""
    did_main = False
    for obj in chain:
        dirs = _rpath_dirs(obj, cfg)
        if dirs:
            yield How.RPATH, obj.info.path, dirs
            did_main |= obj is main
    if not did_main:
        dirs = _rpath_dirs(main, cfg)
        if dirs:
            yield How.RPATH, main.info.path, dirs


def _rpath_dirs(obj: "_Obj", cfg: LoaderConfig) -> List[str]:
    if obj.info.rpath and not obj.info.runpath:
        return _search_list_nonempty(obj.info.rpath, obj.origin, cfg)
    return []


def _search_list_nonempty(entries: Sequence[str], origin: Optional[str], cfg: LoaderConfig) -> List[str]:
    # decompose_rpath ignores a DT_RPATH/DT_RUNPATH that is the empty string
    # (but "a::b" still contains the current directory).
    if len(entries) == 1 and entries[0] == "":
        return []
    return _search_list(entries, origin, cfg)


def _origin(path: str, realpath: bool) -> str:
    # ld.so sets a library's $ORIGIN from the path it opened it under
    # (dl-object.c), without resolving symlinks or "..".  The executable
    # started by the kernel gets the directory of /proc/self/exe, which is
    # symlink-free; an explicit "ld.so prog" (and so ldd) uses the path
    # given on the command line instead.
    if realpath:
        return os.path.dirname(os.path.realpath(path))
    p = path if os.path.isabs(path) else os.path.join(os.getcwd(), path)
    d = os.path.dirname(p)
    return d or "/"


_EXPECT_HDR = {32: 52, 64: 64}


def _open_verify(path: str, want: ElfInfo) -> Tuple[str, Optional[str]]:
    """glibc's open_verify: which candidate files the loader accepts.

    Wrong ELF class or wrong machine: skipped silently (keep searching).
    Anything else wrong with an existing file is fatal for ld.so.
    """
    try:
        fd = os.open(path, _O_FLAGS)
    except OSError:
        # ENOENT, EACCES and friends: the loader moves on.
        return _MISSING, None
    try:
        h = os.read(fd, 64)
    except OSError as exc:
        return "error", f"cannot read file data: {exc.strerror}"
    finally:
        os.close(fd)
    return _ident_verdict(h, want) or _abi_verdict(h) or _header_verdict(h, want)


def _ident_verdict(h: bytes, want: ElfInfo) -> Optional[Tuple[str, Optional[str]]]:
    """open_verify's checks of e_ident's magic, class, byte order and version; None if they pass."""
    if len(h) < _EXPECT_HDR[want.elf_class]:
        return "error", "file too short"
    if h[:4] != ELFMAG:
        return "error", "invalid ELF header"
    if h[4] != (ELFCLASS64 if want.elf_class == 64 else ELFCLASS32):
        return _OTHER, "wrong ELF class"
    if h[5] != (ELFDATA2LSB if want.endian == "little" else ELFDATA2MSB):
        return "error", f"ELF file data encoding not {want.endian}-endian"
    if h[6] != 1:
        return "error", "ELF file version ident does not match current one"
    return None


def _abi_verdict(h: bytes) -> Optional[Tuple[str, Optional[str]]]:
    """open_verify's checks of e_ident's OS ABI, ABI version and padding; None if they pass."""
    osabi, abiver = h[7], h[8]
    if osabi not in (ELFOSABI_SYSV, ELFOSABI_GNU):
        return "error", "ELF file OS ABI invalid"
    if not (abiver == 0 or (osabi == ELFOSABI_GNU and abiver < 4)):
        return "error", "ELF file ABI version invalid"
    if any(h[9:16]):
        return "error", "nonzero padding in e_ident"
    return None


def _header_verdict(h: bytes, want: ElfInfo) -> Tuple[str, Optional[str]]:
    """open_verify's checks of the ELF header proper (version, machine, type, phentsize)."""
    bo = "<" if h[5] == ELFDATA2LSB else ">"
    e_type, e_machine, e_version = struct.unpack_from(bo + "HHI", h, 16)
    if e_version != 1:
        return "error", "ELF file version does not match current one"
    if e_machine != want.machine:
        return _OTHER, "wrong machine"
    if e_type not in (2, 3):
        return "error", "only ET_DYN and ET_EXEC can be loaded"
    phentsize = struct.unpack_from(bo + "H", h, 54 if want.elf_class == 64 else 42)[0]
    if phentsize != (56 if want.elf_class == 64 else 32):
        return "error", "ELF file's phentsize not the expected size"
    return _OK, None


# --------------------------------------------------------------------------
# Transitive result


@dataclass(frozen=True)
class LoadedObject:
    """One object in the modelled link map."""

    #: The path the loader names it by (``ldd``'s right-hand side).
    path: str
    info: ElfInfo
    how: How
    #: Path of the object whose DT_NEEDED first pulled it in (ld.so's
    #: l_loader); None for the root, the executable and the interpreter.
    needed_by: Optional[str]
    depth: int


@dataclass(frozen=True)
class LoadResult:
    """Outcome of `resolve_tree`."""

    root: str
    #: Load order: the main program first, then breadth-first as ld.so maps.
    objects: Tuple[LoadedObject, ...]
    #: Every DT_NEEDED edge: (path of the needing object, its resolution).
    edges: Tuple[Tuple[str, Resolution], ...]
    #: The program interpreter in the link map (PT_INTERP of the main
    #: program, or the default ld.so for a library on its own), whether or
    #: not anything names it in DT_NEEDED.
    interpreter: Optional[str] = None

    @property
    def paths(self) -> frozenset:
        """Resolved files other than the root (and the executable)."""
        return frozenset(o.path for o in self.objects if o.how is not How.ROOT)

    @property
    def missing(self) -> Tuple[Tuple[str, str], ...]:
        """(needing object, name) for every DT_NEEDED not found."""
        return tuple((p, r.name) for p, r in self.edges if r.how is How.NOT_FOUND)

    @property
    def errors(self) -> Tuple[Tuple[str, Resolution], ...]:
        """Edges where ld.so would abort (bad candidate file ...)."""
        return tuple((p, r) for p, r in self.edges if r.how is How.ERROR)

    @property
    def ok(self) -> bool:
        return not self.missing and not self.errors


# --------------------------------------------------------------------------
# Module-level conveniences


def resolve(
    info: ElfInfo,
    *,
    ld_library_path: Union[str, Sequence[str], None] = None,
    loaders: Sequence[ElfInfo] = (),
    executable: Optional[ElfInfo] = None,
    config: Optional[LoaderConfig] = None,
    origin: Optional[str] = None,
    explicit_loader: bool = False,
) -> Tuple[Resolution, ...]:
    """Where each of ``info.needed`` would be loaded from, in order.

    ``ld_library_path``: a string is split like ld.so does (':' and ';',
    empty entries = cwd); a sequence is taken as the list of entries.
    ``loaders``: the chain of objects that loaded ``info`` (nearest first);
    their DT_RPATHs apply when ``info`` has no DT_RUNPATH.
    ``executable``: the main program, whose DT_RPATH is also searched (for
    an extension module: the Python interpreter); defaults to the last
    loader, or ``info`` itself.  ``origin`` overrides ``info``'s $ORIGIN.
    ``explicit_loader``: model ``ld.so prog`` / ``ldd prog`` (the main
    program's $ORIGIN is then the given path's directory, not symlink-
    resolved) instead of running ``prog`` directly.
    ``config``: loader facts; default `host_config` for ``info``'s ABI.
    """
    return Resolver(config).resolve(info, ld_library_path=ld_library_path, loaders=loaders,
                                    executable=executable, origin=origin,
                                    explicit_loader=explicit_loader)


def resolve_tree(
    target: Union[PathLike, ElfInfo],
    *,
    ld_library_path: Union[str, Sequence[str], None] = None,
    executable: Union[PathLike, ElfInfo, None] = None,
    config: Optional[LoaderConfig] = None,
    explicit_loader: bool = False,
) -> LoadResult:
    """The full set of objects ld.so would load for ``target``.

    Models ``_dl_map_object_deps``: breadth-first over DT_NEEDED, each
    object searched with its own RPATH chain/RUNPATH, and a name already
    satisfied by a loaded object (by path, requested name, DT_SONAME, or
    the same file under another path) reusing it.  The interpreter is part
    of the map, so ``ld-linux-x86-64.so.2`` needed by libc is matched to it.

    With ``executable``, ``target`` is treated as dlopen()ed by that
    program (an extension module under ``python``): the executable's tree
    is loaded first and the target's RPATH chain stops at the target.
    ``explicit_loader=True`` models ``ldd``.
    """
    return Resolver(config).resolve_tree(target, ld_library_path=ld_library_path,
                                         executable=executable, explicit_loader=explicit_loader)
