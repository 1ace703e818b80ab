"""ELF file reader: what the dynamic loader needs from one file, and a tree walk.

* `read_elf` parses one file's ELF header, program headers and dynamic
  segment (``DT_NEEDED``, ``DT_SONAME``, ``DT_RPATH``, ``DT_RUNPATH``,
  ``DT_FLAGS_1``) plus ``PT_INTERP``.  It reads only the few hundred bytes it
  needs with ``os.pread``; non-ELF files cost one small read.
* `iter_elf_files` walks a tree and yields an `ElfInfo` per ELF file.

Where the loader would find each needed library is `bridge.scan.loader`'s
job; this module only reads files.
"""

from __future__ import annotations

import os
import stat
import struct
from dataclasses import dataclass
from typing import (
    Callable,
    Dict,
    Iterator,
    List,
    NamedTuple,
    Optional,
    Sequence,
    Set,
    Tuple,
    Union,
)

__all__ = [
    "ElfError",
    "ElfInfo",
    "read_elf",
    "is_elf",
    "iter_elf_files",
]

PathLike = Union[str, "os.PathLike[str]"]

# --------------------------------------------------------------------------
# ELF constants (only the ones we use)

ELFMAG = b"\x7fELF"
ELFCLASS32, ELFCLASS64 = 1, 2
ELFDATA2LSB, ELFDATA2MSB = 1, 2
ET_NAMES = {0: "NONE", 1: "REL", 2: "EXEC", 3: "DYN", 4: "CORE"}
PT_LOAD, PT_DYNAMIC, PT_INTERP = 1, 2, 3
PN_XNUM = 0xFFFF
SHT_DYNAMIC, SHT_NOBITS = 6, 8
DT_NULL, DT_NEEDED, DT_STRTAB, DT_STRSZ = 0, 1, 5, 10
DT_SONAME, DT_RPATH, DT_RUNPATH = 14, 15, 29
DT_FLAGS_1 = 0x6FFFFFFB
DF_1_NODEFLIB = 0x00000800
DF_1_PIE = 0x08000000
ELFOSABI_SYSV, ELFOSABI_GNU = 0, 3
EM_X86_64 = 62

# Header read size: covers the ELF header and, for nearly every file, the
# whole program header table, so most files need exactly two reads (header,
# dynamic segment) plus one for the strings.
_HEAD = 4096
# pread granularity for the dynamic string table: needed names, soname and
# rpath usually sit within a few hundred bytes of each other.
_STR_CHUNK = 512

_O_FLAGS = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)


class ElfError(ValueError):
    """A file has the ELF magic but is truncated or structurally invalid."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass(frozen=True)
class ElfInfo:
    """What the dynamic loader cares about in one ELF file.

    ``rpath``/``runpath`` hold the raw entries (``$ORIGIN`` unexpanded)
    split on ``':'``.  An absent tag is ``()``; a present but empty one is
    ``('',)`` -- the distinction matters because an empty DT_RUNPATH still
    disables DT_RPATH.  If a tag occurs more than once the last one wins,
    as in ld.so.
    """

    path: str
    elf_class: int  # 32 or 64
    endian: str  # "little" or "big"
    machine: int  # e_machine (62 = x86-64, 3 = i386, 183 = aarch64 ...)
    osabi: int  # EI_OSABI (0 = SYSV, 3 = GNU/Linux)
    elf_type: str  # "EXEC", "DYN", "REL", "CORE", "NONE" or "0x...."
    interpreter: Optional[str] = None
    soname: Optional[str] = None
    needed: Tuple[str, ...] = ()
    rpath: Tuple[str, ...] = ()
    runpath: Tuple[str, ...] = ()
    flags_1: int = 0
    #: True when the file has a dynamic section (PT_DYNAMIC); static
    #: executables and object files have none.
    dynamic: bool = False

    @property
    def is_pie(self) -> bool:
        return bool(self.flags_1 & DF_1_PIE)

    @property
    def nodeflib(self) -> bool:
        """DF_1_NODEFLIB: the loader skips ld.so.cache system entries and
        the default directories for this object's dependencies."""
        return bool(self.flags_1 & DF_1_NODEFLIB)


def _layouts(fmt32: str, fmt64: str) -> Dict[Tuple[int, str], struct.Struct]:
    """One struct per (ELF class, byte order); pad bytes (``x``) skip the fields we never use,
    so every class unpacks to the same tuple."""
    return {(cls, bo): struct.Struct(bo + fmt) for cls, fmt in ((ELFCLASS32, fmt32), (ELFCLASS64, fmt64))
            for bo in "<>"}


# ELF header after e_ident -> (type, machine, phoff, shoff, phentsize, phnum, shentsize, shnum).
_EHDR = _layouts("HH8xII6xHHHH2x", "HH12xQQ6xHHHH2x")
# Program header -> (type, offset, vaddr, filesz).
_PHDR = _layouts("III4xI12x", "I4xQQ8xQ16x")
# Dynamic entry -> (tag, value).
_DYN = _layouts("iI", "qQ")
# Section header -> (type, offset, size, link, info).
_SHDR = _layouts("4xI8xIIII8x", "4xI16xQQII16x")


def _pread_exact(fd: int, n: int, off: int, path: str, what: str, fsize: int) -> bytes:
    # Check against the file size first: garbage offsets/sizes in a corrupt
    # header must become an ElfError, not a huge allocation or OverflowError.
    if n == 0:
        return b""  # e.g. the emptied PT_DYNAMIC of a separate debug file
    if off + n > fsize:
        raise ElfError(path, f"truncated: {what} at offset {off:#x} (+{n}) is past end of file")
    data = os.pread(fd, n, off)
    if len(data) != n:
        raise ElfError(path, f"truncated: {what} at offset {off:#x} (+{n}) is past end of file")
    return data


def is_elf(path: PathLike) -> bool:
    """True if the file starts with the ELF magic (one 4-byte read)."""
    try:
        with open(path, "rb") as f:
            return f.read(4) == ELFMAG
    except OSError:
        return False


def read_elf(path: PathLike) -> Optional[ElfInfo]:
    """Parse ``path``; None if it is not an ELF file.

    Raises `ElfError` for an ELF file that is truncated or inconsistent,
    and OSError if the file cannot be opened or read.
    """
    spath = os.fspath(path)
    fd = os.open(spath, _O_FLAGS)
    try:
        head = os.read(fd, _HEAD)
        if head[:4] != ELFMAG:
            return None
        return _parse(fd, head, spath)
    finally:
        os.close(fd)


class _File:
    """One open ELF file: its descriptor, its first bytes, its layout (class, byte order), its size."""

    __slots__ = ("fd", "head", "path", "key", "fsize")

    def __init__(self, fd: int, head: bytes, path: str) -> None:
        self.fd, self.head, self.path = fd, head, path
        self.key = _layout_key(head, path)
        self.fsize = os.fstat(fd).st_size

    def read(self, n: int, off: int, what: str) -> bytes:
        return _pread_exact(self.fd, n, off, self.path, what, self.fsize)

    def table(self, off: int, n: int, what: str) -> bytes:
        """``n`` bytes at ``off``: from the bytes already read when they hold them (nearly every
        program header table does), else read."""
        return self.head[off:off + n] if off + n <= len(self.head) else self.read(n, off, what)


def _layout_key(head: bytes, path: str) -> Tuple[int, str]:
    """(EI_CLASS, struct byte-order character) from e_ident, checked."""
    if len(head) < 16:
        raise ElfError(path, "truncated: ELF identification shorter than 16 bytes")
    cls, data = head[4], head[5]
    if cls not in (ELFCLASS32, ELFCLASS64):
        raise ElfError(path, f"invalid EI_CLASS {cls}")
    if data not in (ELFDATA2LSB, ELFDATA2MSB):
        raise ElfError(path, f"invalid EI_DATA {data}")
    return cls, "<" if data == ELFDATA2LSB else ">"


class _Header(NamedTuple):
    """The ELF header fields the reader uses."""

    e_type: int
    e_machine: int
    e_phoff: int
    e_shoff: int
    e_phentsize: int
    e_phnum: int
    e_shentsize: int
    e_shnum: int


def _header(f: _File) -> _Header:
    eh = _EHDR[f.key]
    if len(f.head) < 16 + eh.size:
        raise ElfError(f.path, "truncated: ELF header")
    h = _Header(*eh.unpack_from(f.head, 16))
    if h.e_phnum == PN_XNUM:
        # More than 0xfffe headers: the real count lives in section 0.
        h = h._replace(e_phnum=_section0_info(f, h.e_shoff, h.e_shentsize))
    return h


class _Segments:
    """What the program headers say: the PT_LOAD mappings, the first PT_DYNAMIC and the first
    PT_INTERP (the loader uses the first of each; so do we)."""

    __slots__ = ("loads", "dynamic", "interp")

    def __init__(self) -> None:
        self.loads: List[Tuple[int, int, int]] = []  # (vaddr, offset, filesz)
        self.dynamic: Optional[Tuple[int, int]] = None  # (offset, filesz)
        self.interp: Optional[Tuple[int, int]] = None


def _segments(f: _File, h: _Header) -> _Segments:
    segs = _Segments()
    if not (h.e_phnum and h.e_phoff):
        return segs
    ph = _PHDR[f.key]
    if h.e_phentsize < ph.size:
        raise ElfError(f.path, f"e_phentsize {h.e_phentsize} smaller than {ph.size}")
    size = h.e_phnum * h.e_phentsize
    table = f.table(h.e_phoff, size, "program header table")
    loads = segs.loads
    for i in range(0, size, h.e_phentsize):
        p_type, p_offset, p_vaddr, p_filesz = ph.unpack_from(table, i)
        if p_type == PT_LOAD:
            loads.append((p_vaddr, p_offset, p_filesz))
        elif p_type == PT_DYNAMIC and segs.dynamic is None:
            segs.dynamic = (p_offset, p_filesz)
        elif p_type == PT_INTERP and segs.interp is None:
            segs.interp = (p_offset, p_filesz)
    return segs


def _parse(fd: int, head: bytes, path: str) -> ElfInfo:
    f = _File(fd, head, path)
    h = _header(f)
    segs = _segments(f, h)
    interpreter = None
    if segs.interp is not None:
        raw = f.read(segs.interp[1], segs.interp[0], "PT_INTERP")
        interpreter = os.fsdecode(raw.split(b"\0", 1)[0])
    dyn = _dynamic(f, h, segs)
    if dyn is None:
        fields, has_dynamic = _NO_DYNAMIC_FIELDS, bool(segs.dynamic and segs.dynamic[1])
    else:
        # A zero-sized PT_DYNAMIC (separate debug files) is no dynamic section;
        # without PT_DYNAMIC we got here through .dynamic.
        fields, has_dynamic = _dynamic_fields(f, dyn), bool(segs.dynamic[1]) if segs.dynamic is not None else True
    cls, bo = f.key
    return ElfInfo(path=path, elf_class=32 if cls == ELFCLASS32 else 64, endian="little" if bo == "<" else "big",
                   machine=h.e_machine, osabi=head[7], elf_type=ET_NAMES.get(h.e_type, f"{h.e_type:#06x}"),
                   interpreter=interpreter, soname=fields.soname, needed=fields.needed, rpath=fields.rpath,
                   runpath=fields.runpath, flags_1=fields.flags_1, dynamic=has_dynamic)


class _DynTags:
    __slots__ = ("needed", "soname", "rpath", "runpath", "strtab", "strsz", "flags_1")

    def __init__(self) -> None:
        self.needed: List[int] = []
        self.soname: Optional[int] = None
        self.rpath: Optional[int] = None
        self.runpath: Optional[int] = None
        self.strtab: Optional[int] = None
        self.strsz: Optional[int] = None
        self.flags_1 = 0

    def wants_strings(self) -> bool:
        return bool(self.needed) or self.soname is not None or \
            self.rpath is not None or self.runpath is not None


# The dynamic tags found, and where their strings are: (tags, file offset of the string table
# or None when no tag needs it, its size or None).
_Dynamic = Tuple[_DynTags, Optional[int], Optional[int]]


def _dynamic(f: _File, h: _Header, segs: _Segments) -> Optional[_Dynamic]:
    """The dynamic tags and their string table: through PT_DYNAMIC and the PT_LOAD mapping the
    loader uses, else through the section headers (as readelf and pyelftools do)."""
    tags = None
    if segs.dynamic is not None:
        tags = _dyn_tags(f.read(segs.dynamic[1], segs.dynamic[0], "PT_DYNAMIC"), _DYN[f.key])
        if not tags.wants_strings():
            return tags, None, None
        strtab_off = _vaddr_to_offset(tags.strtab, segs.loads) if tags.strtab is not None else None
        if strtab_off is not None:
            return tags, strtab_off, tags.strsz
        # DT_STRTAB points outside every PT_LOAD: let the section headers speak.
    if (segs.dynamic is not None or not h.e_phnum) and h.e_shoff:
        found = _dynamic_from_sections(f, h.e_shoff, h.e_shentsize, h.e_shnum)
        if found is not None:
            return found
    if tags is not None and tags.wants_strings():
        raise ElfError(f.path, "DT_STRTAB is in no PT_LOAD segment and no section header "
                               "names the dynamic string table")
    return None


class _DynFields(NamedTuple):
    """The ElfInfo fields the dynamic section gives."""

    soname: Optional[str]
    needed: Tuple[str, ...]
    rpath: Tuple[str, ...]
    runpath: Tuple[str, ...]
    flags_1: int


_NO_DYNAMIC_FIELDS = _DynFields(None, (), (), (), 0)


def _dynamic_fields(f: _File, dyn: _Dynamic) -> _DynFields:
    """The dynamic tags' values, their strings read from the string table."""
    tags, strtab_off, strsz = dyn
    if strtab_off is None:  # _dynamic gives no string table only when no tag needs one
        return _DynFields(None, (), (), (), tags.flags_1)
    string = _StrReader(f.fd, f.path, strtab_off, strsz, f.fsize).get
    return _DynFields(string(tags.soname) if tags.soname is not None else None,
                      tuple(map(string, tags.needed)),
                      _search_path(string, tags.rpath), _search_path(string, tags.runpath), tags.flags_1)


def _search_path(string: Callable[[int], str], off: Optional[int]) -> Tuple[str, ...]:
    """DT_RPATH/DT_RUNPATH split into its entries; () when the tag is absent."""
    return tuple(string(off).split(":")) if off is not None else ()


def _dyn_tags(raw: bytes, ds: struct.Struct) -> _DynTags:
    t = _DynTags()
    usable = len(raw) - len(raw) % ds.size
    # iter_unpack over a memoryview avoids copying the whole segment when
    # DT_NULL comes early (the segment is often padded).  One flat if-chain:
    # this loop runs for every entry of every file scanned.
    for tag, val in ds.iter_unpack(memoryview(raw)[:usable]):
        if tag == DT_NULL:
            break
        if tag == DT_NEEDED:
            t.needed.append(val)
        elif tag == DT_STRTAB:
            t.strtab = val
        elif tag == DT_STRSZ:
            t.strsz = val
        elif tag == DT_SONAME:
            t.soname = val
        elif tag == DT_RPATH:
            t.rpath = val
        elif tag == DT_RUNPATH:
            t.runpath = val
        elif tag == DT_FLAGS_1:
            t.flags_1 = val
    return t


def _vaddr_to_offset(addr: int, loads: Sequence[Tuple[int, int, int]]) -> Optional[int]:
    # DT_STRTAB is a run-time address; the loader finds it in the mapped
    # image, so the file offset is wherever the covering PT_LOAD maps from.
    for vaddr, offset, filesz in loads:
        if vaddr <= addr < vaddr + filesz:
            return addr - vaddr + offset
    return None


class _StrReader:
    """Reads NUL-terminated strings out of the dynamic string table.

    The table can be megabytes (C++ libraries), but the strings we want are
    a handful; read small windows on demand and keep them.
    """

    __slots__ = ("fd", "path", "base", "size", "fsize", "chunks")

    def __init__(self, fd: int, path: str, base: int, size: Optional[int], fsize: int) -> None:
        self.fd, self.path, self.base, self.size, self.fsize = fd, path, base, size, fsize
        self.chunks: List[Tuple[int, bytes]] = []

    def get(self, off: int) -> str:
        if self.size is not None and off >= self.size:
            raise ElfError(self.path, f"string offset {off:#x} beyond DT_STRSZ {self.size:#x}")
        for start, buf in self.chunks:
            if start <= off < start + len(buf):
                end = buf.find(b"\0", off - start)
                if end >= 0:
                    return os.fsdecode(buf[off - start:end])
        return self._read(off)

    def _read(self, off: int) -> str:
        n = _STR_CHUNK
        if self.base + off >= self.fsize:
            raise ElfError(self.path, f"truncated: string at strtab+{off:#x} is past end of file")
        while True:
            buf = os.pread(self.fd, n, self.base + off)
            end = buf.find(b"\0")
            if end >= 0:
                self.chunks.append((off, buf))
                return os.fsdecode(buf[:end])
            if len(buf) < n:
                raise ElfError(self.path, f"truncated: unterminated string at strtab+{off:#x}")
            n *= 4


def _read_shdrs(f: _File, e_shoff: int, e_shentsize: int, count: int) -> List[Tuple[int, int, int, int, int]]:
    """The first ``count`` section headers as (type, offset, size, link, info)."""
    sh = _SHDR[f.key]
    if e_shentsize < sh.size:
        raise ElfError(f.path, f"e_shentsize {e_shentsize} smaller than {sh.size}")
    n = count * e_shentsize
    raw = f.table(e_shoff, n, "section header table")
    return [sh.unpack_from(raw, i) for i in range(0, n, e_shentsize)]


def _section0_info(f: _File, e_shoff: int, e_shentsize: int) -> int:
    if not e_shoff:
        raise ElfError(f.path, "e_phnum is PN_XNUM but there are no section headers")
    return _read_shdrs(f, e_shoff, e_shentsize, 1)[0][4]


def _dynamic_from_sections(f: _File, e_shoff: int, e_shentsize: int, e_shnum: int) -> Optional[_Dynamic]:
    # Fallback when the program headers do not lead to the string table
    # (no PT_LOAD covers DT_STRTAB, or no program headers at all): use
    # .dynamic and the string table its sh_link names, like readelf does.
    if e_shnum == 0:
        e_shnum = _read_shdrs(f, e_shoff, e_shentsize, 1)[0][2]
    if not e_shnum:
        return None
    shdrs = _read_shdrs(f, e_shoff, e_shentsize, e_shnum)
    dynamic = next((s for s in shdrs if s[0] == SHT_DYNAMIC), None)
    if dynamic is None:
        return None
    _type, s_off, s_size, s_link, _info = dynamic
    tags = _dyn_tags(f.read(s_size, s_off, ".dynamic section"), _DYN[f.key])
    if s_link >= len(shdrs) or shdrs[s_link][0] == SHT_NOBITS:
        return (tags, None, None) if not tags.wants_strings() else None
    strtab = shdrs[s_link]
    return tags, strtab[1], strtab[2]


# --------------------------------------------------------------------------
# Tree walk


def iter_elf_files(
    root: PathLike,
    on_error: Optional[Callable[[str, Exception], None]] = None,
) -> Iterator[ElfInfo]:
    """Yield an `ElfInfo` for every ELF file under ``root``, each file once.

    * Symlinked directories are not followed (an env's ``lib64 -> lib``
      would otherwise double the work and can loop).
    * Each underlying file (device, inode) is yielded once, at the first
      path met in sorted walk order; hard links and symlinks to it are not
      repeated.
    * A symlink to a file *outside* the tree is yielded at the link's path:
      the env depends on that file (a venv's ``bin/python``), and the link
      path is what the env's users run.  Symlinks whose target is inside the
      tree are skipped, since the target itself is visited.
    * Non-ELF files cost one small read.  Unreadable or corrupt ELF files
      are reported to ``on_error(path, exc)`` (default: ignored) and skipped;
      the walk never stops on them.
    """
    return _TreeWalk(os.fspath(root), on_error).files()


class _TreeWalk:
    """One iter_elf_files walk: the files already read, and where to report errors."""

    def __init__(self, top: str, on_error: Optional[Callable[[str, Exception], None]]) -> None:
        self.top = top
        self.real_top = os.path.realpath(top)
        self.on_error = on_error
        self.seen: Set[Tuple[int, int]] = set()

    def files(self) -> Iterator[ElfInfo]:
        try:
            st = os.stat(self.top)
        except OSError as exc:
            self.report(self.top, exc)
            return
        if stat.S_ISDIR(st.st_mode):
            yield from self._tree()
        elif stat.S_ISREG(st.st_mode):
            info = self.read_once(self.top, st)
            if info is not None:
                yield info

    def report(self, path: str, exc: Exception) -> None:
        if self.on_error is not None:
            self.on_error(path, exc)

    def read_once(self, path: str, st: os.stat_result) -> Optional[ElfInfo]:
        """The file's ElfInfo, unless this (device, inode) was read already or it is no ELF file."""
        ident = (st.st_dev, st.st_ino)
        if ident in self.seen:
            return None
        self.seen.add(ident)
        try:
            return read_elf(path)
        except (ElfError, OSError) as exc:
            self.report(path, exc)
            return None

    def _tree(self) -> Iterator[ElfInfo]:
        stack = [self.top]
        while stack:
            subdirs: List[str] = []
            for entry in self._entries(stack.pop()):
                st = self._file_stat(entry, subdirs)
                if st is None or st.st_size < 4:
                    continue
                info = self.read_once(entry.path, st)
                if info is not None:
                    yield info
            # Reverse so the stack pops subdirectories in sorted order.
            stack.extend(reversed(subdirs))

    def _entries(self, directory: str) -> List[os.DirEntry]:
        try:
            with os.scandir(directory) as it:
                return sorted(it, key=lambda e: e.name)
        except OSError as exc:
            self.report(directory, exc)
            return []

    def _file_stat(self, entry: os.DirEntry, subdirs: List[str]) -> Optional[os.stat_result]:
        """The stat of a file to read at this entry, or None; a directory goes on ``subdirs``."""
        try:
            if entry.is_symlink():
                return self._outside_link_stat(entry)
            if entry.is_file(follow_symlinks=False):
                return entry.stat(follow_symlinks=False)
            if entry.is_dir(follow_symlinks=False):
                subdirs.append(entry.path)
            return None  # a directory; or fifos, sockets, devices: never ELF, and reads may block
        except OSError as exc:
            self.report(entry.path, exc)
            return None

    def _outside_link_stat(self, entry: os.DirEntry) -> Optional[os.stat_result]:
        """A symlink is read only when it leads to a file outside the tree (the tree's own files
        are visited where they are)."""
        if not entry.is_file():  # dangling, or a directory link
            return None
        real = os.path.realpath(entry.path)
        if real == self.real_top or real.startswith(self.real_top.rstrip("/") + "/"):
            return None
        return entry.stat()
