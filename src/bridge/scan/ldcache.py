"""Reader for glibc's ``/etc/ld.so.cache``, and the loader's lookup in it.

The dynamic loader consults this cache after RPATH, LD_LIBRARY_PATH and
RUNPATH and before the default directories, so a faithful resolver needs the
same answer ld.so would get.  We parse the file ourselves (no ``ldconfig -p``
subprocess): it is a few hundred kilobytes at most and the format has been
stable since glibc 2.2.

Layouts understood (see glibc's ``sysdeps/generic/dl-cache.h``):

* new format only: ``"glibc-ld.so.cache1.1"`` header, 24-byte entries with an
  hwcap word, string offsets relative to that header (= the file start);
* old format ``"ld.so-1.7.0"`` (12-byte entries, offsets relative to the end
  of the entry table), optionally followed by an embedded new-format table
  (``ldconfig -c compat``), which glibc prefers when present.  In that
  layout glibc (2.33 through 2.42 at least) reads glibc-hwcaps names relative to
  the file start while ldconfig wrote them relative to the new header, so
  those names come out as garbage and such entries are never chosen; we
  read them the same way, to give the loader's answer.

The lookup (``LdCache.lookup``) mirrors glibc 2.36 ``search_cache``:
entries are sorted with ``_dl_cache_libcmp`` (numeric runs compare as
numbers), all entries with the wanted name are examined, entries whose flags
do not match the requesting object's ABI are ignored, glibc-hwcaps entries
(``x86-64-v3`` ...) win by priority when the CPU supports them, and the first
plain entry is taken otherwise.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from functools import lru_cache
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

__all__ = [
    "LD_SO_CACHE",
    "LdCacheEntry",
    "LdCache",
    "LdCacheError",
    "cache_flags_for",
    "host_ldcache",
    "parse_ldcache",
    "read_ldcache",
]

LD_SO_CACHE = "/etc/ld.so.cache"

_OLD_MAGIC = b"ld.so-1.7.0"
_NEW_MAGIC = b"glibc-ld.so.cache1.1"
_OLD_HEADER = 16  # 11-byte magic padded to 12 + uint32 nlibs
_NEW_HEADER = 48
_OLD_ENTRY = 12  # int32 flags, uint32 key, uint32 value
_NEW_ENTRY = 24  # ... + uint32 osversion, uint64 hwcap
_EXT_MAGIC = (-358342284) & 0xFFFFFFFF
_EXT_TAG_GLIBC_HWCAPS = 1

# Bit 62 of the hwcap word marks a glibc-hwcaps entry; its low 32 bits then
# index the glibc-hwcaps name array in the extension section.
_HWCAP_EXTENSION = 1 << 62
_ISA_LEVEL_MASK = (1 << 10) - 1

# ldconfig's FLAG_* values (sysdeps/generic/ldconfig.h).
FLAG_ELF = 0x0001
FLAG_ELF_LIBC6 = 0x0003

# ELF e_machine values needed to pick the cache flags an object's loader
# accepts.
_EM_386 = 3
_EM_PPC64 = 21
_EM_S390 = 22
_EM_X86_64 = 62
_EM_AARCH64 = 183


class LdCacheError(ValueError):
    """The file is not a usable ld.so.cache (bad magic, truncated ...)."""


def cache_flags_for(elf_class: int, machine: int) -> Optional[Tuple[int, ...]]:
    """Cache ``flags`` values the loader for this ABI accepts.

    glibc only ever looks for entries of its own ABI: x86-64 requires
    exactly ``0x303`` (libc6 | x86-64), i386 uses the generic rule (1 or
    3).  Returns None for ABIs we do not model; callers then accept the
    generic values, which is what an unknown port would do.
    """
    if machine == _EM_X86_64:
        return (0x0303,) if elf_class == 64 else (0x0803,)
    if machine == _EM_AARCH64 and elf_class == 64:
        return (0x0A03,)
    if machine == _EM_PPC64 and elf_class == 64:
        return (0x0503,)
    if machine == _EM_S390 and elf_class == 64:
        return (0x0403,)
    if machine == _EM_386 and elf_class == 32:
        return (FLAG_ELF, FLAG_ELF_LIBC6)
    return None


@dataclass(frozen=True)
class LdCacheEntry:
    """One library entry of the cache, in file order."""

    name: str
    path: str
    flags: int
    hwcap: int = 0
    #: glibc-hwcaps subdirectory name (e.g. ``"x86-64-v3"``) for entries
    #: ldconfig found under ``<dir>/glibc-hwcaps/<name>/``; None otherwise.
    hwcaps_name: Optional[str] = None


def _cstr(buf: bytes, off: int) -> Optional[bytes]:
    if off < 0 or off >= len(buf):
        return None
    end = buf.find(b"\0", off)
    if end < 0:
        return None
    return buf[off:end]


class LdCache:
    """A parsed ld.so.cache; ``lookup`` answers like ld.so would."""

    def __init__(
        self,
        entries: Sequence[LdCacheEntry],
        path: Optional[str] = None,
        fmt: str = "new",
        hwcaps_names: Sequence[str] = (),
    ) -> None:
        self.path = path
        self.format = fmt
        self.entries: Tuple[LdCacheEntry, ...] = tuple(entries)
        self.hwcaps_names: Tuple[str, ...] = tuple(hwcaps_names)
        # The loader binary-searches the sorted table and then walks all
        # entries of that name in order; a dict of lists in file order gives
        # the same candidates without depending on the sort being exact.
        self._by_name: Dict[str, List[LdCacheEntry]] = {}
        for e in self.entries:
            self._by_name.setdefault(e.name, []).append(e)

    def __len__(self) -> int:
        return len(self.entries)

    def __repr__(self) -> str:
        return f"LdCache({self.path!r}, {len(self.entries)} entries, {self.format})"

    def candidates(self, name: str) -> Tuple[LdCacheEntry, ...]:
        """All entries named ``name``, in cache order."""
        return tuple(self._by_name.get(name, ()))

    def lookup(
        self,
        name: str,
        accept_flags: Optional[Iterable[int]] = (0x0303,),
        glibc_hwcaps: Sequence[str] = (),
        legacy_hwcap_mask: int = ~0,
    ) -> Optional[str]:
        """Path the loader takes from the cache for ``name``, or None.

        ``accept_flags``: flag values of the requesting ABI (see
        `cache_flags_for`; None means the generic 1/3).  ``glibc_hwcaps``:
        the glibc-hwcaps subdirectory names the CPU supports, best first
        (e.g. ``("x86-64-v4", "x86-64-v3", "x86-64-v2")``); entries for
        other levels are not usable.  ``legacy_hwcap_mask``: legacy hwcap
        bits (platform/TLS subdirectories of glibc < 2.37) the loader would
        accept; entries with other bits are skipped.
        """
        flags_ok = tuple(accept_flags) if accept_flags is not None else (1, 3)
        prio = {n: i + 1 for i, n in enumerate(glibc_hwcaps)}
        best: Optional[LdCacheEntry] = None
        best_prio = 0
        for e in self._by_name.get(name, ()):
            if e.flags not in flags_ok:
                continue
            named = e.hwcaps_name is not None or _is_hwcap_extension(e.hwcap)
            if not named and best is not None:
                # glibc-hwcaps entries sort before plain ones; once a plain
                # entry is reached, a hwcaps match found so far wins.
                break
            if not named and (e.hwcap & ~legacy_hwcap_mask):
                continue
            if named:
                p = prio.get(e.hwcaps_name or "", 0)
                if p == 0:
                    continue
                if best is not None and p >= best_prio:
                    continue
                best_prio = p
            best = e
            if not named:
                break
        return best.path if best is not None else None


def _is_hwcap_extension(hwcap: int) -> bool:
    return ((hwcap >> 32) & ~_ISA_LEVEL_MASK) == (_HWCAP_EXTENSION >> 32)


def read_ldcache(path: str = LD_SO_CACHE) -> LdCache:
    """Parse an ld.so.cache file.  Raises OSError or `LdCacheError`."""
    with open(path, "rb") as f:
        data = f.read()
    return parse_ldcache(data, path=path)


def host_ldcache() -> Optional[LdCache]:
    """This machine's ld.so.cache, parsed once per version of the file; None if there is none
    or it cannot be read (the loader then goes straight to the default directories)."""
    try:
        mtime_ns = os.stat(LD_SO_CACHE).st_mtime_ns
    except OSError:
        return None
    return _cached_ldcache(LD_SO_CACHE, mtime_ns)


@lru_cache(maxsize=8)
def _cached_ldcache(path: str, mtime_ns: int) -> Optional[LdCache]:
    try:
        return read_ldcache(path)
    except (OSError, LdCacheError):
        return None


def parse_ldcache(data: bytes, path: Optional[str] = None) -> LdCache:
    """Parse ld.so.cache contents (either layout, either byte order)."""
    if data.startswith(_NEW_MAGIC):
        return _parse_new(data, 0, path, "new")
    if data.startswith(_OLD_MAGIC):
        if len(data) < _OLD_HEADER:
            raise LdCacheError("truncated old-format header")
        (nlibs,) = struct.unpack_from("<I", data, 12)
        table_end = _OLD_HEADER + nlibs * _OLD_ENTRY
        if table_end > len(data):
            # Could be big-endian; glibc itself only reads native order.
            (nlibs_be,) = struct.unpack_from(">I", data, 12)
            if _OLD_HEADER + nlibs_be * _OLD_ENTRY > len(data):
                raise LdCacheError("old-format entry table runs past end of file")
            nlibs, table_end = nlibs_be, _OLD_HEADER + nlibs_be * _OLD_ENTRY
        # The new table, when present, starts at the next 8-byte boundary
        # after the old one and is what glibc >= 2.2 actually uses.
        new_off = (table_end + 7) & ~7
        if data[new_off : new_off + len(_NEW_MAGIC)] == _NEW_MAGIC:
            return _parse_new(data, new_off, path, "old+new")
        return _parse_old(data, nlibs, path)
    raise LdCacheError("not an ld.so.cache file (bad magic)")


def _parse_old(data: bytes, nlibs: int, path: Optional[str]) -> LdCache:
    strings_base = _OLD_HEADER + nlibs * _OLD_ENTRY
    strings = data[strings_base:]
    out = []
    for i in range(nlibs):
        flags, key, value = struct.unpack_from("<iII", data, _OLD_HEADER + i * _OLD_ENTRY)
        k, v = _cstr(strings, key), _cstr(strings, value)
        if k is None or v is None:
            raise LdCacheError(f"entry {i}: string offset out of range")
        out.append(LdCacheEntry(os.fsdecode(k), os.fsdecode(v), flags))
    return LdCache(out, path=path, fmt="old")


def _parse_new(data: bytes, base: int, path: Optional[str], fmt: str) -> LdCache:
    if len(data) < base + _NEW_HEADER:
        raise LdCacheError("truncated new-format header")
    # Byte 28 of the header records the writer's byte order (2 little,
    # 3 big, 0 unknown); use it so a cache from another host parses too.
    endian_flag = data[base + 28] & 3
    bo = ">" if endian_flag == 3 else "<"
    nlibs, len_strings = struct.unpack_from(bo + "II", data, base + 20)
    (ext_offset,) = struct.unpack_from(bo + "I", data, base + 32)
    entries_off = base + _NEW_HEADER
    if entries_off + nlibs * _NEW_ENTRY > len(data):
        raise LdCacheError("entry table runs past end of file")

    # String offsets in the new format are relative to the start of the new
    # header (which is the start of the file unless the old table precedes
    # it); slice once so lookups stay offset-free.
    strtab = data[base:]
    hwcaps_names = _read_hwcaps_extension(data, ext_offset, bo)

    ent = struct.Struct(bo + "iIIIQ")
    out = []
    for i in range(nlibs):
        flags, key, value, _osv, hwcap = ent.unpack_from(data, entries_off + i * _NEW_ENTRY)
        k, v = _cstr(strtab, key), _cstr(strtab, value)
        if k is None or v is None:
            raise LdCacheError(f"entry {i}: string offset out of range")
        hname = None
        if _is_hwcap_extension(hwcap):
            idx = hwcap & 0xFFFFFFFF
            hname = hwcaps_names[idx] if idx < len(hwcaps_names) else ""
        out.append(LdCacheEntry(os.fsdecode(k), os.fsdecode(v), flags, hwcap, hname))
    return LdCache(out, path=path, fmt=fmt, hwcaps_names=hwcaps_names)


def _read_hwcaps_extension(data: bytes, ext_offset: int, bo: str) -> Tuple[str, ...]:
    # The extension directory is optional (glibc >= 2.32 writes it); any
    # inconsistency just means "no glibc-hwcaps names", as in glibc.  Unlike
    # entry strings, its offsets (and the name indices in it) count from the
    # start of the file even when an old-format table comes first.
    if ext_offset == 0 or ext_offset % 4:
        return ()
    off = ext_offset
    if off + 8 > len(data):
        return ()
    magic, count = struct.unpack_from(bo + "II", data, off)
    if magic != _EXT_MAGIC or off + 8 + count * 16 > len(data):
        return ()
    for i in range(count):
        tag, _flags, s_off, s_size = struct.unpack_from(bo + "IIII", data, off + 8 + i * 16)
        if tag != _EXT_TAG_GLIBC_HWCAPS:
            continue
        if s_size % 4 or s_off + s_size > len(data):
            return ()
        names = []
        for j in range(s_size // 4):
            (stroff,) = struct.unpack_from(bo + "I", data, s_off + j * 4)
            s = _cstr(data, stroff)
            names.append(os.fsdecode(s) if s is not None else "")
        return tuple(names)
    return ()
