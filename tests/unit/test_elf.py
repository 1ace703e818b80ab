"""Tests for bridge.scan.elf (ELF reader), bridge.scan.loader (loader model) and bridge.scan.ldcache.

The oracles are real: pyelftools and ``readelf -d`` for parsing, ``ldconfig
-p`` for the ld.so.cache, and the dynamic loader itself (``LD_DEBUG=libs``,
``LD_TRACE_LOADED_OBJECTS``, ``ldd``) for resolution, on binaries built with
gcc in tmp_path.  The parsing corpus is the machine's libraries and programs,
the test venv (its compiled extension modules), and every ELF file of the
central site ($ENVMOD_SITE: CPython's lib-dynload, numpy, the OpenMPI/HDF5
links).  A missing pyelftools, readelf or site skips the test with the reason
locally and fails it under ENVMOD_REQUIRE_SITE=1 (CI); tests needing gcc or
ldd are skipped without them.
"""

from __future__ import annotations

import functools
import importlib.machinery
import os
import random
import re
import shutil
import struct
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import pytest
from tests.conftest import require_module, require_site, require_tool, site_dir, skip_or_fail
from tests.unit.ldcache_oracle import flags_description, libcmp

from bridge.scan import elf as E
from bridge.scan import loader as L
from bridge.scan.elf import ElfError, ElfInfo, iter_elf_files, read_elf
from bridge.scan.ldcache import LdCacheError, parse_ldcache, read_ldcache
from bridge.scan.loader import How, Resolver, host_config, parse_ld_library_path, resolve, resolve_tree

IS_LINUX_X86_64 = sys.platform.startswith("linux") and os.uname().machine == "x86_64"
GCC = shutil.which("gcc")
LDD = shutil.which("ldd")
LDCONFIG = shutil.which("ldconfig") or ("/sbin/ldconfig" if os.path.exists("/sbin/ldconfig") else None)

needs_gcc = pytest.mark.skipif(not (GCC and IS_LINUX_X86_64), reason="needs gcc on x86_64 Linux")
needs_ldd = pytest.mark.skipif(not LDD, reason="needs ldd")

# Cap on the system part of the oracle corpus (an even sample) so the test stays in seconds
# on big systems; the venv and the site are always compared whole.
CORPUS_CAP = 4000
PYELFTOOLS = "pyelftools, in the [test] extra: pip install -e '.[test]'"
# What the central site is known to hold (ci/site.sh); the site corpus must include each.
SITE_PARTS = {"CPython's lib-dynload": "/lib/python3.11/lib-dynload/", "numpy": "/site-packages/numpy/",
              "OpenMPI": "/software/openmpi/", "HDF5": "/software/hdf5/"}
EXTENSION_SUFFIXES = tuple(s for s in importlib.machinery.EXTENSION_SUFFIXES if s != ".so")

CLEAN_ENV = {k: v for k, v in os.environ.items()
             if k not in ("LD_LIBRARY_PATH", "LD_PRELOAD", "LD_DEBUG", "LD_TRACE_LOADED_OBJECTS",
                          "LD_AUDIT", "LD_BIND_NOW")}


# ---------------------------------------------------------------------------
# helpers


def _system_roots() -> Tuple[str, ...]:
    roots = []
    multiarch = sysconfig.get_config_var("MULTIARCH")
    for d in ([f"/usr/lib/{multiarch}"] if multiarch else []) + ["/usr/lib64", "/usr/bin"]:
        if os.path.isdir(d) and not os.path.islink(d):
            roots.append(d)
    return tuple(roots)


def _site_packages() -> Tuple[str, ...]:
    roots: List[str] = []
    for key in ("platlib", "purelib"):
        p = sysconfig.get_paths().get(key)
        if p and os.path.isdir(p) and p not in roots:
            roots.append(p)
    return tuple(roots)


@functools.lru_cache(maxsize=None)
def _scan(roots: Tuple[str, ...]) -> Tuple[Tuple[ElfInfo, ...], Tuple[Tuple[str, str], ...]]:
    """Every ELF file iter_elf_files finds under ``roots`` (each path once), and the files it
    could not read, as (path, error)."""
    infos: List[ElfInfo] = []
    errors: List[Tuple[str, str]] = []
    seen = set()
    for root in roots:
        for info in iter_elf_files(root, on_error=lambda p, e: errors.append((p, repr(e)))):
            if info.path not in seen:
                seen.add(info.path)
                infos.append(info)
    return tuple(infos), tuple(errors)


def _even_sample(infos: Sequence[ElfInfo], n: int) -> List[ElfInfo]:
    if len(infos) <= n:
        return list(infos)
    step = len(infos) / n
    return [infos[int(i * step)] for i in range(n)]


def _elf_files_by_find(top: Path) -> Dict[Tuple[int, int], str]:
    """Independently of iter_elf_files: every ELF file find(1) lists under ``top``, and every
    file a symlink there points to (what the tree's users load), keyed by (device, inode)."""
    out = subprocess.run([require_tool("find"), str(top), "(", "-type", "f", "-o", "-type", "l", ")",
                          "-print0"], capture_output=True, check=True).stdout
    found: Dict[Tuple[int, int], str] = {}
    for raw in out.split(b"\0"):
        if not raw:
            continue
        path = os.fsdecode(raw)
        try:
            st = os.stat(path)  # follows a symlink; a dangling one is no file
            if not (os.path.isfile(path) and st.st_size >= 4):
                continue
            with open(path, "rb") as f:
                if f.read(4) != b"\x7fELF":
                    continue
        except OSError:
            continue
        found.setdefault((st.st_dev, st.st_ino), path)
    return found


def _site_corpus() -> List[ElfInfo]:
    require_site()
    site = site_dir()
    infos, errors = _scan((str(site),))
    assert not errors, f"iter_elf_files could not read {len(errors)} site files: {errors[:3]}"
    found = _elf_files_by_find(site)
    got = {(st.st_dev, st.st_ino): i.path for i in infos for st in [os.stat(i.path)]}
    assert len(got) == len(infos), "a site file is in the corpus twice"
    missing = sorted(found[k] for k in found.keys() - got.keys())
    extra = sorted(got[k] for k in got.keys() - found.keys())
    assert not missing and not extra, f"site corpus != find: missing {missing[:5]}, extra {extra[:5]}"
    for what, part in SITE_PARTS.items():
        assert any(part in i.path for i in infos), f"no {what} ELF files ({part}) under {site}"
    return list(infos)


def _venv_corpus() -> List[ElfInfo]:
    """The test venv whole (site-packages' extension modules, bin/), as envmod scans an env."""
    if sys.prefix == sys.base_prefix:
        skip_or_fail(f"the tests do not run in a venv ({sys.executable}): run them with .venv/bin/python")
    infos, errors = _scan((sys.prefix,))
    assert not errors, f"iter_elf_files could not read {len(errors)} venv files: {errors[:3]}"
    ext = [i for i in infos if i.path.endswith(EXTENSION_SUFFIXES)]
    if not ext:
        skip_or_fail(f"the test venv {sys.prefix} holds no compiled extension module ({EXTENSION_SUFFIXES})")
    return list(infos)


@pytest.fixture(scope="module", params=["system", "venv", "site"])
def corpus(request) -> List[ElfInfo]:
    """The files the parsing oracles compare: ``system`` (an even sample of the machine's
    libraries and programs), ``venv`` (the test venv, whole), ``site`` ($ENVMOD_SITE, whole)."""
    if request.param == "venv":
        return _venv_corpus()
    if request.param == "site":
        return _site_corpus()
    infos = _even_sample(_scan(_system_roots())[0], CORPUS_CAP)
    if len(infos) < 50:
        pytest.skip(f"corpus too small ({len(infos)} ELF files)")
    return infos


@pytest.fixture(scope="module")
def ldd_corpus() -> List[ElfInfo]:
    """The pool test_tree_matches_ldd_on_system_files samples: the machine's files and the test
    interpreter's site-packages."""
    infos = _even_sample(_scan(_system_roots() + _site_packages())[0], CORPUS_CAP)
    if len(infos) < 50:
        pytest.skip(f"corpus too small ({len(infos)} ELF files)")
    return infos


def _pyelftools_dynamic(path: str):  # noqa: C901  (a test oracle: one walk over every dynamic entry kind)
    """(needed, soname, rpath, runpath) as raw bytes, via pyelftools."""
    from elftools.elf.dynamic import DynamicSection, DynamicSegment
    from elftools.elf.elffile import ELFFile

    with open(path, "rb") as f:
        ef = ELFFile(f)
        hdr = (ef.elfclass, ef.little_endian, ef["e_machine"], ef["e_type"],
               ef["e_ident"]["EI_OSABI"])
        interp = None
        for seg in ef.iter_segments():
            if seg["p_type"] == "PT_INTERP":
                interp = seg.get_interp_name()
                break
        dyn = None
        for sec in ef.iter_sections():
            if isinstance(sec, DynamicSection) and sec["sh_type"] != "SHT_NOBITS":
                dyn = sec
                break
        if dyn is None:  # no section headers: the segment view
            for seg in ef.iter_segments():
                if isinstance(seg, DynamicSegment):
                    dyn = seg
                    break
        needed, soname, rpath, runpath = [], None, None, None
        if dyn is not None:
            for t in dyn.iter_tags():
                tag = t.entry.d_tag
                if tag == "DT_NEEDED":
                    needed.append(t.needed)
                elif tag == "DT_SONAME":
                    soname = t.soname
                elif tag == "DT_RPATH":
                    rpath = t.rpath
                elif tag == "DT_RUNPATH":
                    runpath = t.runpath
    b = lambda s: None if s is None else s.encode("latin-1")  # noqa: E731  pyelftools decodes latin-1
    return hdr, b(interp), (tuple(map(b, needed)), b(soname),
                            tuple(b(rpath).split(b":")) if rpath is not None else (),
                            tuple(b(runpath).split(b":")) if runpath is not None else ())


def _enum(names: Dict[str, int], value) -> int:
    """pyelftools names the values it knows (``EM_X86_64``); the raw number otherwise."""
    return names[value] if isinstance(value, str) else value


def _mine(info: ElfInfo):
    b = lambda s: None if s is None else os.fsencode(s)  # noqa: E731
    return (tuple(map(b, info.needed)), b(info.soname), tuple(map(b, info.rpath)),
            tuple(map(b, info.runpath)))


_READELF_RE = re.compile(r"\((NEEDED|SONAME|RPATH|RUNPATH)\)\s+[^\[]*\[(.*)\]$")


def _readelf_dynamic(paths: Sequence[str]) -> Dict[str, Dict[str, list]]:
    readelf = require_tool("readelf")
    out = subprocess.run([readelf, "-dW", *paths], capture_output=True, check=False).stdout
    res: Dict[str, Dict[str, list]] = {}
    cur = None
    if len(paths) == 1:  # readelf prints no "File:" header for a single file
        cur = res[paths[0]] = {"NEEDED": [], "SONAME": [], "RPATH": [], "RUNPATH": []}
    for raw in out.split(b"\n"):
        line = os.fsdecode(raw)
        if line.startswith("File: "):
            cur = res.setdefault(line[6:], {"NEEDED": [], "SONAME": [], "RPATH": [], "RUNPATH": []})
            continue
        m = _READELF_RE.search(line)
        if m and cur is not None:
            cur[m.group(1)].append(m.group(2))
    return res


def _readelf_matches(info: ElfInfo, r: Dict[str, list]) -> None:
    assert list(info.needed) == r["NEEDED"], info.path
    assert info.soname == (r["SONAME"][-1] if r["SONAME"] else None), info.path
    assert info.rpath == (tuple(r["RPATH"][-1].split(":")) if r["RPATH"] else ()), info.path
    assert info.runpath == (tuple(r["RUNPATH"][-1].split(":")) if r["RUNPATH"] else ()), info.path


def _cc(out: Path, src: str, *args: str, shared: bool = False, m32: bool = False) -> Path:
    c = out.parent / (out.name + ".c")
    c.write_text(src)
    cmd = [GCC, *(["-m32"] if m32 else []), *(["-shared", "-fPIC"] if shared else []),
           "-o", str(out), str(c), *args]
    subprocess.run(cmd, check=True, capture_output=True)
    return out


LIB_SRC = "int f(void){return %d;}\n"
EXE_SRC = "int f(void); int main(void){return f() == 0;}\n"


def _lib(d: Path, name: str = "libf.so", value: int = 1, *args: str) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    return _cc(d / name, LIB_SRC % value, *args, shared=True)


def _dtags(kind: str) -> str:
    return "-Wl,--disable-new-dtags" if kind == "rpath" else "-Wl,--enable-new-dtags"


def _trace(cmd: Sequence[str], env: Optional[Dict[str, str]] = None,
           cwd: Optional[Path] = None) -> Dict[str, Optional[str]]:
    """Parse ldd / LD_TRACE_LOADED_OBJECTS output: {name: path or None}."""
    e = dict(CLEAN_ENV, **(env or {}))
    p = subprocess.run(list(cmd), capture_output=True, env=e, cwd=cwd, check=False)
    out: Dict[str, Optional[str]] = {}
    for raw in p.stdout.split(b"\n"):
        line = os.fsdecode(raw).strip()
        if not line or "linux-vdso" in line or "linux-gate" in line:
            continue
        if " => " in line:
            name, rest = line.split(" => ", 1)
            out[name] = None if rest.startswith("not found") else re.sub(r" \(0x[0-9a-f]+\)$", "", rest)
        elif line.endswith(")") and "(0x" in line:
            path = re.sub(r" \(0x[0-9a-f]+\)$", "", line)
            out[path] = path
    return out


def _exec_trace(exe: Path, env: Optional[Dict[str, str]] = None, cwd: Optional[Path] = None):
    # The kernel runs the program and ld.so prints the link map instead of
    # starting it: "exec" semantics ($ORIGIN from /proc/self/exe).
    return _trace([str(exe)], dict(env or {}, LD_TRACE_LOADED_OBJECTS="1"), cwd)


def _ldd(path: Path, env: Optional[Dict[str, str]] = None, cwd: Optional[Path] = None):
    return _trace([LDD, str(path)], env, cwd)


# ---------------------------------------------------------------------------
# read_elf against pyelftools / readelf on the machine's files


def test_corpus_matches_pyelftools(corpus: List[ElfInfo]) -> None:
    require_module("elftools", PYELFTOOLS)
    from elftools.elf.enums import ENUM_E_MACHINE, ENUM_EI_OSABI
    mismatches = []
    for info in corpus:
        hdr, interp, dyn = _pyelftools_dynamic(info.path)
        elfclass, little, machine, etype, osabi = hdr
        mine_hdr = (info.elf_class, info.endian == "little", info.machine, info.osabi, info.elf_type)
        want_hdr = (elfclass, little, _enum(ENUM_E_MACHINE, machine), _enum(ENUM_EI_OSABI, osabi),
                    etype.replace("ET_", ""))
        mine_interp = info.interpreter and os.fsencode(info.interpreter)
        if _mine(info) != dyn or mine_hdr != want_hdr or mine_interp != interp:
            mismatches.append((info.path, (mine_hdr, mine_interp, _mine(info)), (want_hdr, interp, dyn)))
    assert not mismatches, f"{len(mismatches)} of {len(corpus)} differ, e.g. {mismatches[:3]}"


def test_corpus_matches_readelf(corpus: List[ElfInfo]) -> None:
    # The whole corpus: readelf takes well under a second for thousands of files.
    by_path = {i.path: i for i in corpus}
    paths = list(by_path)
    for k in range(0, len(paths), 100):
        got = _readelf_dynamic(paths[k:k + 100])
        for p in paths[k:k + 100]:
            _readelf_matches(by_path[p], got[p])


def test_read_elf_real_executable() -> None:
    info = read_elf(sys.executable)
    assert info is not None
    assert info.elf_class in (32, 64) and info.endian in ("little", "big")
    assert info.elf_type in ("EXEC", "DYN")
    if IS_LINUX_X86_64:
        assert info.machine == 62
        assert info.interpreter and info.interpreter.startswith("/")


# ---------------------------------------------------------------------------
# Non-ELF, truncated, corrupt


@pytest.mark.parametrize("content", [
    b"", b"\x7f", b"\x7fEL", b"#!/bin/sh\necho hi\n", b"PK\x03\x04" + b"\0" * 100,
    b"\x7fELX" + b"\0" * 100, b"!<arch>\n" + b"\0" * 64,
])
def test_non_elf_returns_none(tmp_path: Path, content: bytes) -> None:
    p = tmp_path / "f"
    p.write_bytes(content)
    assert read_elf(p) is None
    assert E.is_elf(p) is False


def _small_real_elf(tmp_path: Path) -> bytes:
    if GCC and IS_LINUX_X86_64:
        lib = _cc(tmp_path / "libt.so", LIB_SRC % 1, "-Wl,-soname,libt.so.1",
                  "-Wl,--enable-new-dtags,-rpath,$ORIGIN/x", "-lm", "-Wl,--no-as-needed",
                  shared=True)
        return lib.read_bytes()
    return craft_elf(64, "little", 62, needed=("libm.so.6",), soname="libt.so.1",
                     runpath="$ORIGIN/x")


def test_truncated_files_raise_elferror(tmp_path: Path) -> None:
    data = _small_real_elf(tmp_path)
    info = read_elf(tmp_path / "libt.so") if (tmp_path / "libt.so").exists() else None
    p = tmp_path / "trunc.so"
    outcomes = {"error": 0, "ok": 0}
    for cut in [4, 5, 16, 17, 40, 52, 63, 64, 100, 200, 600, len(data) // 2, len(data) - 1]:
        p.write_bytes(data[:cut])
        try:
            r = read_elf(p)
        except ElfError as exc:
            assert str(p) in str(exc) and exc.reason
            outcomes["error"] += 1
        else:
            # A cut after everything the scanner reads is fine; it must
            # then agree with the full file.
            assert r is not None
            if info is not None:
                assert (r.needed, r.soname, r.runpath) == (info.needed, info.soname, info.runpath)
            outcomes["ok"] += 1
    assert outcomes["error"] >= 8


def test_fuzzed_headers_never_crash(tmp_path: Path) -> None:
    data = bytearray(_small_real_elf(tmp_path))
    rng = random.Random(1234)
    p = tmp_path / "fuzz.so"
    # Mutate the bytes the scanner actually reads: ELF header, program
    # headers, and the first few KB (dynamic segment, strings).
    hot = min(len(data), 16384)
    for _ in range(400):
        d = bytearray(data)
        for _ in range(rng.randint(1, 6)):
            pos = rng.randrange(0, 64) if rng.random() < 0.4 else rng.randrange(0, hot)
            d[pos] = rng.randrange(256)
        if rng.random() < 0.2:
            d = d[: rng.randrange(1, len(d))]
        p.write_bytes(bytes(d))
        try:
            r = read_elf(p)
        except ElfError:
            continue
        assert r is None or isinstance(r, ElfInfo)


def test_iter_elf_files_reports_and_continues(tmp_path: Path) -> None:
    data = _small_real_elf(tmp_path)
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "a_bad.so").write_bytes(data[:100])
    (tree / "b_good.so").write_bytes(data)
    (tree / "c.txt").write_text("not elf")
    errors: List[Tuple[str, Exception]] = []
    got = [i.path for i in iter_elf_files(tree, on_error=lambda p, e: errors.append((p, e)))]
    assert got == [str(tree / "b_good.so")]
    assert [p for p, _ in errors] == [str(tree / "a_bad.so")]
    assert isinstance(errors[0][1], ElfError)


def test_iter_elf_files_tree_rules(tmp_path: Path) -> None:
    data = _small_real_elf(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "ext.so").write_bytes(data)
    root = tmp_path / "env"
    (root / "lib").mkdir(parents=True)
    (root / "bin").mkdir()
    real = root / "lib" / "libreal.so.1.2"
    real.write_bytes(data)
    os.symlink("libreal.so.1.2", root / "lib" / "libreal.so.1")  # inside: skipped
    os.link(real, root / "lib" / "z_hardlink.so")  # same inode, later in walk order: skipped
    os.symlink("lib", root / "lib64")  # symlinked dir: not followed
    os.symlink(str(outside / "ext.so"), root / "bin" / "python")  # outside: yielded at link
    os.symlink(str(outside / "ext.so"), root / "bin" / "python3")  # same target: once
    os.symlink("nowhere", root / "bin" / "dangling")
    os.mkfifo(root / "bin" / "fifo")  # must not block
    (root / "lib" / "notes.txt").write_text("x" * 100)
    got = [i.path for i in iter_elf_files(root)]
    assert sorted(got) == sorted([str(root / "bin" / "python"), str(real)])
    # A single file as root works too.
    assert [i.path for i in iter_elf_files(real)] == [str(real)]


# ---------------------------------------------------------------------------
# Hand-crafted ELF files: both classes, both byte orders


def _align(x: int, a: int) -> int:
    return (x + a - 1) // a * a


def craft_elf(cls: int, endian: str, machine: int, *, needed: Sequence[str] = (),  # noqa: C901
              soname: Optional[str] = None, rpath: Optional[str] = None,
              runpath: Optional[str] = None, interp: Optional[str] = None, etype: int = 3,
              strtab_in_load: bool = True, sections: bool = True, filler: int = 0,
              osabi: int = 0) -> bytes:
    """A minimal but well-formed ELF: PT_LOAD + PT_DYNAMIC (+ PT_INTERP),
    .dynstr/.dynamic/.shstrtab section headers."""
    bo = "<" if endian == "little" else ">"
    ehsize, phent, shent = (52, 32, 40) if cls == 32 else (64, 56, 64)
    vbase = 0x10000
    dynstr = bytearray(b"\0")
    if filler:
        dynstr += b"F" * filler + b"\0"

    def s(x: str) -> int:
        off = len(dynstr)
        dynstr.extend(x.encode() + b"\0")
        return off

    tags = [(1, s(n)) for n in needed]
    if soname is not None:
        tags.append((14, s(soname)))
    if rpath is not None:
        tags.append((15, s(rpath)))
    if runpath is not None:
        tags.append((29, s(runpath)))
    phnum = 2 + (1 if interp else 0)
    off = ehsize + phnum * phent
    interp_b = (interp.encode() + b"\0") if interp else b""
    interp_off = off
    off = _align(off + len(interp_b), 8)
    dynstr_off = off
    off = _align(off + len(dynstr), 8)
    dyn_off = off
    tags += [(5, vbase + dynstr_off), (10, len(dynstr)), (0, 0)]
    de = struct.Struct(bo + ("iI" if cls == 32 else "qQ"))
    dyn = b"".join(de.pack(t, v) for t, v in tags)
    off += len(dyn)
    shstr = b"\0.dynstr\0.dynamic\0.shstrtab\0"
    shstr_off = off
    off = _align(off + len(shstr), 8)
    shoff = off if sections else 0
    shnum = 4 if sections else 0
    total = off + shnum * shent

    ident = b"\x7fELF" + bytes([1 if cls == 32 else 2, 1 if endian == "little" else 2, 1,
                                 osabi, 0]) + b"\0" * 7
    eh = struct.pack(bo + ("HHIIIIIHHHHHH" if cls == 32 else "HHIQQQIHHHHHH"),
                     etype, machine, 1, 0, ehsize, shoff, 0, ehsize, phent, phnum,
                     shent, shnum, 3 if sections else 0)

    def ph(p_type: int, p_off: int, size: int, flags: int = 4, align: int = 1) -> bytes:
        if cls == 32:
            return struct.pack(bo + "8I", p_type, p_off, vbase + p_off, vbase + p_off, size,
                               size, flags, align)
        return struct.pack(bo + "IIQQQQQQ", p_type, flags, p_off, vbase + p_off, vbase + p_off,
                           size, size, align)

    phdrs = b""
    if interp:
        phdrs += ph(3, interp_off, len(interp_b))
    phdrs += ph(1, 0, total if strtab_in_load else dynstr_off, 5, 0x1000)
    phdrs += ph(2, dyn_off, len(dyn), 6, 8)

    def sh(name: int, typ: int, o: int, size: int, link: int = 0, entsize: int = 0,
           addr: bool = True) -> bytes:
        fmt = bo + ("10I" if cls == 32 else "IIQQQQIIQQ")
        return struct.pack(fmt, name, typ, 2 if addr else 0, (vbase + o) if addr else 0, o, size,
                           link, 0, 8 if typ == 6 else 1, entsize)

    shdrs = b""
    if sections:
        shdrs = (b"\0" * shent + sh(1, 3, dynstr_off, len(dynstr))
                 + sh(9, 6, dyn_off, len(dyn), link=1, entsize=de.size)
                 + sh(18, 3, shstr_off, len(shstr), addr=False))
    buf = bytearray(total)
    buf[0:16] = ident
    buf[16:ehsize] = eh
    buf[ehsize:ehsize + len(phdrs)] = phdrs
    buf[interp_off:interp_off + len(interp_b)] = interp_b
    buf[dynstr_off:dynstr_off + len(dynstr)] = dynstr
    buf[dyn_off:dyn_off + len(dyn)] = dyn
    buf[shstr_off:shstr_off + len(shstr)] = shstr
    if sections:
        buf[shoff:shoff + len(shdrs)] = shdrs
    return bytes(buf)


CRAFT_ABIS = [
    pytest.param(32, "little", 3, id="i386"),
    pytest.param(64, "little", 62, id="x86_64"),
    pytest.param(32, "big", 20, id="ppc32-be"),
    pytest.param(64, "big", 21, id="ppc64-be"),
]


@pytest.mark.parametrize("cls,endian,machine", CRAFT_ABIS)
@pytest.mark.parametrize("variant", ["segments", "strtab-outside-load", "no-sections"])
def test_crafted_elf(tmp_path: Path, cls: int, endian: str, machine: int, variant: str) -> None:
    kw = dict(needed=("liba.so.1", "libb.so"), soname="libme.so.3",
              rpath="$ORIGIN/../lib:/opt/x", runpath="${ORIGIN}:/y::", interp="/lib/ld-test.so.1")
    if variant == "strtab-outside-load":
        kw["strtab_in_load"] = False
    if variant == "no-sections":
        kw["sections"] = False
    p = tmp_path / "crafted.so"
    p.write_bytes(craft_elf(cls, endian, machine, **kw))
    info = read_elf(p)
    assert info == ElfInfo(
        path=str(p), elf_class=cls, endian=endian, machine=machine, osabi=0, elf_type="DYN",
        interpreter="/lib/ld-test.so.1", soname="libme.so.3", needed=("liba.so.1", "libb.so"),
        rpath=("$ORIGIN/../lib", "/opt/x"), runpath=("${ORIGIN}", "/y", "", ""), dynamic=True)
    if variant != "no-sections":
        require_module("elftools", PYELFTOOLS)
        assert _pyelftools_dynamic(str(p))[2] == _mine(info)
        _readelf_matches(info, _readelf_dynamic([str(p)])[str(p)])


def test_crafted_unreachable_strtab_raises(tmp_path: Path) -> None:
    p = tmp_path / "x.so"
    p.write_bytes(craft_elf(64, "little", 62, needed=("liba.so",), strtab_in_load=False,
                            sections=False))
    with pytest.raises(ElfError, match="DT_STRTAB"):
        read_elf(p)


def test_crafted_far_and_long_strings(tmp_path: Path) -> None:
    # Strings far into a big string table, one longer than the read chunk.
    long_dir = "/very/" + "long/" * 400 + "dir"
    p = tmp_path / "x.so"
    p.write_bytes(craft_elf(64, "big", 21, needed=("libfar.so",), runpath=long_dir,
                            filler=200_000))
    info = read_elf(p)
    assert info is not None and info.needed == ("libfar.so",) and info.runpath == (long_dir,)


def test_empty_runpath_is_present_not_absent(tmp_path: Path) -> None:
    p = tmp_path / "x.so"
    p.write_bytes(craft_elf(64, "little", 62, needed=("liba.so",), runpath="", rpath="/r"))
    info = read_elf(p)
    assert info is not None and info.runpath == ("",) and info.rpath == ("/r",)
    q = tmp_path / "y.so"
    q.write_bytes(craft_elf(64, "little", 62, needed=("liba.so",), rpath="/r"))
    assert read_elf(q).runpath == ()  # type: ignore[union-attr]


@needs_gcc
def test_real_32bit_objects(tmp_path: Path) -> None:
    # gcc can emit i386 objects without a 32-bit libc when nothing is linked.
    try:
        _cc(tmp_path / "libq.so", LIB_SRC % 1, "-nostdlib", "-Wl,-soname,libq.so.0",
            shared=True, m32=True)
        p = _cc(tmp_path / "libp.so", LIB_SRC % 2, "-nostdlib", "-Wl,-soname,libp.so",
                "-Wl,--disable-new-dtags,-rpath,$ORIGIN/x:/abs", "-Wl,--no-as-needed",
                f"-L{tmp_path}", "-lq", shared=True, m32=True)
    except subprocess.CalledProcessError:
        pytest.skip("gcc -m32 cannot link here")
    info = read_elf(p)
    assert info is not None
    assert (info.elf_class, info.endian, info.machine) == (32, "little", 3)
    assert info.needed == ("libq.so.0",) and info.soname == "libp.so"
    assert info.rpath == ("$ORIGIN/x", "/abs") and info.runpath == ()
    _readelf_matches(info, _readelf_dynamic([str(p)])[str(p)])


# ---------------------------------------------------------------------------
# ld.so.cache


_LDCONFIG_LINE = re.compile(r"^\t(\S+) \((.*?)\) => (.*)$")


def _ldconfig_p(*args: str) -> List[Tuple[str, str, Optional[str], str]]:
    out = subprocess.run([LDCONFIG, "-p", *args], capture_output=True, text=True,
                         check=True, errors="surrogateescape").stdout
    rows = []
    for line in out.splitlines():
        m = _LDCONFIG_LINE.match(line)
        if m:
            desc = m.group(2)
            hw = re.search(r', hwcap: "([^"]*)"', desc)
            base = re.split(r", (?:hwcap|OS ABI):", desc)[0]
            rows.append((m.group(1), base, hw.group(1) if hw else None, m.group(3)))
    return rows


@pytest.mark.skipif(not (LDCONFIG and os.path.exists("/etc/ld.so.cache")),
                    reason="needs ldconfig and /etc/ld.so.cache")
def test_ldcache_matches_ldconfig_p() -> None:
    cache = read_ldcache()
    mine = [(e.name, flags_description(e), e.hwcaps_name, e.path) for e in cache.entries]
    assert mine == _ldconfig_p()
    assert len(mine) > 10


@pytest.mark.skipif(not os.path.exists("/etc/ld.so.cache"), reason="no /etc/ld.so.cache")
def test_ldcache_sorted_by_libcmp() -> None:
    # ldconfig sorts with the same comparison the loader's binary search
    # uses; our libcmp must reproduce that order exactly.
    names = [e.name for e in read_ldcache().entries]
    assert all(libcmp(a, b) >= 0 for a, b in zip(names, names[1:]))
    assert libcmp("libfoo.so.10", "libfoo.so.9") > 0
    assert libcmp("libfoo.so.1", "libfoo.so.1") == 0


@pytest.mark.skipif(not (LDCONFIG and IS_LINUX_X86_64 and GCC), reason="needs ldconfig, gcc")
@pytest.mark.parametrize("fmt", ["new", "compat", "old"])
def test_ldcache_formats_and_hwcaps(tmp_path: Path, fmt: str) -> None:
    lib = tmp_path / "lib"
    for sub in ("", "glibc-hwcaps/x86-64-v2/", "glibc-hwcaps/x86-64-v3/"):
        _lib(lib / sub, "libhw.so.1", 1, "-Wl,-soname,libhw.so.1")
    conf = tmp_path / "ld.so.conf"
    conf.write_text(f"{lib}\n")
    cpath = tmp_path / f"cache.{fmt}"
    r = subprocess.run([LDCONFIG, "-X", "-c", fmt, "-C", str(cpath), "-f", str(conf)],
                       capture_output=True, text=True, check=False)
    if r.returncode != 0 or not cpath.exists():
        pytest.skip(f"ldconfig cannot write a {fmt} cache here: {r.stderr.strip()}")
    cache = read_ldcache(str(cpath))
    assert cache.format == {"new": "new", "compat": "old+new", "old": "old"}[fmt]
    rows = [(e.name, flags_description(e), e.hwcaps_name, e.path) for e in cache.entries]
    assert rows == _ldconfig_p("-C", str(cpath))
    plain = str(lib / "libhw.so.1")
    best = cache.lookup("libhw.so.1", (0x303,), ("x86-64-v4", "x86-64-v3", "x86-64-v2"))
    if fmt == "new":
        assert best == str(lib / "glibc-hwcaps/x86-64-v3/libhw.so.1")
        assert cache.lookup("libhw.so.1", (0x303,), ("x86-64-v2",)) == \
            str(lib / "glibc-hwcaps/x86-64-v2/libhw.so.1")
        assert cache.lookup("libhw.so.1", (0x303,), ()) == plain
    elif fmt == "compat":
        # glibc 2.36 quirk: in the compat layout ldconfig writes hwcaps name
        # offsets relative to the embedded new header, but ld.so (and
        # ldconfig -p) read them relative to the file start, so the names
        # are garbage and only the plain entry is usable.
        assert best == plain
    else:
        # The old layout has no hwcap field at all: the first entry of that
        # name wins, whichever directory it came from.
        assert best == cache.entries[[e.name for e in cache.entries].index("libhw.so.1")].path
    assert cache.lookup("libhw.so.1", (0x0A03,), ()) is None  # other ABI's flags


def test_ldcache_rejects_garbage(tmp_path: Path) -> None:
    with pytest.raises(LdCacheError):
        parse_ldcache(b"not a cache at all")
    with pytest.raises(LdCacheError):
        parse_ldcache(b"glibc-ld.so.cache1.1" + struct.pack("<II", 1000, 0) + b"\0" * 24)


# ---------------------------------------------------------------------------
# Small units of the loader model


def test_parse_ld_library_path() -> None:
    assert parse_ld_library_path(None) == ()
    assert parse_ld_library_path("") == ()
    assert parse_ld_library_path("/a:/b") == ("/a", "/b")
    assert parse_ld_library_path("/a;/b:") == ("/a", "/b", "")  # ';' too, trailing = cwd


def test_expand_dst_rules() -> None:
    cfg = L.LoaderConfig(lib="LIBX", platform="PLAT")
    x = L.expand_dst
    assert x("$ORIGIN/../lib", "/o", cfg) == "/o/../lib"
    assert x("${ORIGIN}/a:$LIB:${PLATFORM}", "/o", cfg) == "/o/a:LIBX:PLAT"
    assert x("$ORIGINAL/x", "/o", cfg) == "$ORIGINAL/x"  # not a DST: identifier continues
    assert x("$FOO/x", "/o", cfg) == "$FOO/x"
    assert x("$ORIGIN/x", None, cfg) is None  # unknown origin: entry dropped


# ---------------------------------------------------------------------------
# The search order, candidate by candidate, against LD_DEBUG=libs


def _ld_debug_tries(exe: Path, lib: str, env: Dict[str, str], cwd: Optional[Path] = None) -> List[str]:
    e = dict(CLEAN_ENV, LD_DEBUG="libs", **env)
    p = subprocess.run([str(exe)], capture_output=True, env=e, cwd=cwd, check=False)
    tries: List[str] = []
    active = False
    for raw in p.stderr.split(b"\n"):
        line = os.fsdecode(raw)
        if "find library=" in line:
            active = f"find library={lib} " in line
            continue
        if active:
            m = re.search(r"trying file=(.*)$", line)
            if m and m.group(1) not in tries:  # tls/x86_64 appears twice (hwcap + platform)
                tries.append(m.group(1))
    return tries


@needs_gcc
@pytest.mark.parametrize("kind", ["rpath", "runpath"])
def test_search_order_matches_ld_debug(tmp_path: Path, kind: str) -> None:
    cfg = host_config()
    stub = _lib(tmp_path / "stub", "libnope_q7.so")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    paths = "$ORIGIN/r1:${ORIGIN}/r2//:/nonexistent/$LIB/x:/nonexistent/$PLATFORM:$ORIGIN/$FOO"
    exe = _cc(bindir / "prog", EXE_SRC, f"-L{stub.parent}", "-lnope_q7",
              _dtags(kind), f"-Wl,-rpath,{paths}")
    stub.unlink()  # missing everywhere, so the loader tries every candidate
    llp = "/llp1:/llp2;/llp3/"
    tries = _ld_debug_tries(exe, "libnope_q7.so", {"LD_LIBRARY_PATH": llp})
    assert tries, "LD_DEBUG printed nothing"
    info = read_elf(exe)
    assert info is not None
    mine = [p for _h, p in Resolver().candidates(info, "libnope_q7.so", ld_library_path=llp)]
    assert mine == tries
    # And the expansions the loader used are visible in that list.
    assert any(f"/nonexistent/{cfg.lib}/x/" in t for t in tries)
    assert any(f"/nonexistent/{cfg.platform}/" in t for t in tries)


# ---------------------------------------------------------------------------
# Precedence and expansion, checked against the real loader


def _exe(d: Path, libdir: Path, *flags: str, name: str = "prog", src: str = EXE_SRC) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    return _cc(d / name, src, f"-L{libdir}", "-lf", *flags)


@needs_gcc
def test_rpath_beats_ld_library_path(tmp_path: Path) -> None:
    a = _lib(tmp_path / "a").parent
    b = _lib(tmp_path / "b").parent
    exe = _exe(tmp_path / "bin", a, _dtags("rpath"), f"-Wl,-rpath,{a}")
    info = read_elf(exe)
    assert info.rpath == (str(a),) and info.runpath == ()  # type: ignore[union-attr]
    (r, _libc) = resolve(info, ld_library_path=str(b))  # type: ignore[arg-type]
    assert (r.path, r.how, r.via) == (f"{a}/libf.so", How.RPATH, str(exe))
    assert _exec_trace(exe, {"LD_LIBRARY_PATH": str(b)})["libf.so"] == r.path


@needs_gcc
def test_ld_library_path_beats_runpath(tmp_path: Path) -> None:
    a = _lib(tmp_path / "a").parent
    b = _lib(tmp_path / "b").parent
    exe = _exe(tmp_path / "bin", a, _dtags("runpath"), f"-Wl,-rpath,{a}")
    info = read_elf(exe)
    r = resolve(info, ld_library_path=str(b))[0]  # type: ignore[arg-type]
    assert (r.path, r.how) == (f"{b}/libf.so", How.LD_LIBRARY_PATH)
    assert _exec_trace(exe, {"LD_LIBRARY_PATH": str(b)})["libf.so"] == r.path
    r = resolve(info)[0]  # type: ignore[arg-type]
    assert (r.path, r.how, r.via) == (f"{a}/libf.so", How.RUNPATH, str(exe))
    assert _exec_trace(exe)["libf.so"] == r.path


def _chain(tmp_path: Path, exe_kind: str, mid_flags: Sequence[str] = ()) -> Tuple[Path, Path, Path]:
    """prog -> libmid.so -> libleaf.so; libmid in M, libleaf only in L.
    prog carries L then M in its RPATH/RUNPATH; libmid has no search path
    of its own unless mid_flags give it one."""
    L, M = tmp_path / "L", tmp_path / "M"
    _lib(L, "libleaf.so")
    M.mkdir()
    _cc(M / "libmid.so", "int f(void); int mid(void){return f();}\n", f"-L{L}", "-lleaf",
        *mid_flags, shared=True)
    exe = _cc(tmp_path / "prog", "int mid(void); int main(void){return mid() == 0;}\n",
              f"-L{M}", "-lmid", f"-Wl,-rpath-link,{L}", _dtags(exe_kind), f"-Wl,-rpath,{L}:{M}")
    return exe, M / "libmid.so", L / "libleaf.so"


@needs_gcc
def test_rpath_is_inherited_runpath_is_not(tmp_path: Path) -> None:
    exe, mid, leaf = _chain(tmp_path / "rp", "rpath")
    tree = resolve_tree(exe)
    assert {str(mid), str(leaf)} <= tree.paths and tree.ok
    edge = [r for p, r in tree.edges if r.name == "libleaf.so"][0]
    assert (edge.how, edge.via) == (How.RPATH, str(exe))  # the executable's RPATH
    real = _exec_trace(exe)
    assert real["libleaf.so"] == str(leaf) and real["libmid.so"] == str(mid)

    exe, mid, leaf = _chain(tmp_path / "ru", "runpath")
    tree = resolve_tree(exe)
    assert ("%s" % mid, "libleaf.so") in tree.missing
    assert _exec_trace(exe)["libleaf.so"] is None  # ld.so agrees: not found


@needs_gcc
def test_runpath_on_loader_disables_inherited_rpath(tmp_path: Path) -> None:
    # libmid has a RUNPATH (pointing nowhere useful): the executable's
    # RPATH is then not consulted for libmid's dependencies.
    exe, mid, leaf = _chain(tmp_path, "rpath", ["-Wl,--enable-new-dtags,-rpath,/nonexistent"])
    assert read_elf(mid).runpath == ("/nonexistent",)  # type: ignore[union-attr]
    tree = resolve_tree(exe)
    assert (str(mid), "libleaf.so") in tree.missing
    assert _exec_trace(exe)["libleaf.so"] is None


@needs_gcc
def test_origin_exec_vs_ldd_through_symlink(tmp_path: Path) -> None:
    # real/bin/prog has RUNPATH $ORIGIN/../lib; other/bin/prog is a symlink
    # to it, and other/lib has a different libf.so.  Executed, $ORIGIN is
    # the symlink-resolved directory; under ldd (explicit ld.so) it is the
    # directory of the path given.
    real_lib = _lib(tmp_path / "real" / "lib", value=1)
    other_lib = _lib(tmp_path / "other" / "lib", value=2)
    exe = _exe(tmp_path / "real" / "bin", real_lib.parent, _dtags("runpath"),
               "-Wl,-rpath,$ORIGIN/../lib")
    (tmp_path / "other" / "bin").mkdir()
    link = tmp_path / "other" / "bin" / "prog"
    os.symlink(os.path.relpath(exe, link.parent), link)

    info = read_elf(link)
    exec_res = resolve(info)[0]  # type: ignore[arg-type]
    ldd_res = resolve(info, explicit_loader=True)[0]  # type: ignore[arg-type]
    assert exec_res.path == f"{exe.parent}/../lib/libf.so"
    assert ldd_res.path == f"{link.parent}/../lib/libf.so"
    assert _exec_trace(link)["libf.so"] == exec_res.path
    if LDD:
        assert _ldd(link)["libf.so"] == ldd_res.path
        assert resolve_tree(link, explicit_loader=True).paths >= {ldd_res.path}
    assert os.path.realpath(exec_res.path) == str(real_lib)
    assert os.path.realpath(ldd_res.path) == str(other_lib)


@needs_gcc
def test_library_origin_is_not_symlink_resolved(tmp_path: Path) -> None:
    # libmid is found through a symlinked directory; its $ORIGIN is that
    # path, so its RUNPATH $ORIGIN/leaf lands next to the link, not the target.
    target = tmp_path / "target"
    _lib(target / "leaf", "libleaf.so", 1)
    _lib(tmp_path / "via" / "leaf", "libleaf.so", 2)
    _cc(target / "libmid.so", "int f(void); int mid(void){return f();}\n",
        f"-L{target / 'leaf'}", "-lleaf", _dtags("runpath"), "-Wl,-rpath,$ORIGIN/leaf",
        shared=True)
    os.symlink(target / "libmid.so", tmp_path / "via" / "libmid.so")
    exe = _cc(tmp_path / "prog", "int mid(void); int main(void){return mid() == 0;}\n",
              f"-L{target}", "-lmid", f"-Wl,-rpath-link,{target / 'leaf'}", _dtags("runpath"),
              f"-Wl,-rpath,{tmp_path / 'via'}")
    tree = resolve_tree(exe)
    want = f"{tmp_path / 'via'}/leaf/libleaf.so"
    assert want in tree.paths
    assert _exec_trace(exe)["libleaf.so"] == want


@needs_gcc
def test_wrong_class_candidate_is_skipped(tmp_path: Path) -> None:
    x32 = tmp_path / "x32"
    x32.mkdir()
    try:
        _cc(x32 / "libf.so", LIB_SRC % 1, "-nostdlib", shared=True, m32=True)
    except subprocess.CalledProcessError:
        pytest.skip("gcc -m32 cannot link here")
    good = _lib(tmp_path / "x64")
    exe = _exe(tmp_path / "bin", good.parent, _dtags("runpath"),
               f"-Wl,-rpath,{x32}:{good.parent}")
    r = resolve(read_elf(exe))[0]  # type: ignore[arg-type]
    assert r.path == f"{good.parent}/libf.so" and r.skipped == (f"{x32}/libf.so",)
    assert _exec_trace(exe)["libf.so"] == r.path


@needs_gcc
@pytest.mark.parametrize("content,message", [
    ("/* GNU ld script */\nINPUT(-lsomething)\n" + " " * 64, "invalid ELF header"),
    ("INPUT(-lx)\n", "file too short"),
])
def test_non_elf_candidate_is_fatal(tmp_path: Path, content: str, message: str) -> None:
    # Unlike a wrong-class library, an existing non-ELF file stops ld.so.
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "libf.so").write_text(content)
    good = _lib(tmp_path / "good")
    exe = _exe(tmp_path / "bin", good.parent, _dtags("runpath"),
               f"-Wl,-rpath,{bad}:{good.parent}")
    r = resolve(read_elf(exe))[0]  # type: ignore[arg-type]
    assert r.how is How.ERROR and r.path is None and r.error == f"{bad}/libf.so: {message}"
    p = subprocess.run([str(exe)], capture_output=True, env=CLEAN_ENV, check=False)
    assert p.returncode != 0 and message.encode() in p.stderr


@needs_gcc
@pytest.mark.parametrize("sub", ["glibc-hwcaps/x86-64-v2/", "x86_64/", "tls/"])
def test_hwcaps_subdirectory_preferred(tmp_path: Path, sub: str) -> None:
    cfg = host_config()
    if sub not in cfg.subdirs:
        pytest.skip(f"this loader does not search {sub}")
    d = tmp_path / "lib"
    _lib(d, value=1)
    _lib(d / sub, value=2)
    exe = _exe(tmp_path / "bin", d, _dtags("runpath"), f"-Wl,-rpath,{d}")
    r = resolve(read_elf(exe))[0]  # type: ignore[arg-type]
    assert r.path == f"{d}/{sub}libf.so"
    assert _exec_trace(exe)["libf.so"] == r.path


@needs_gcc
def test_nodeflib_hides_system_libraries(tmp_path: Path) -> None:
    # libmid (linked -z nodefaultlib: DF_1_NODEFLIB) needs libm.so.6, which lives only in the
    # system directories: ld.so will not look there (nor take the cache
    # entry pointing there) on libmid's behalf.
    M = tmp_path / "M"
    M.mkdir()
    _cc(M / "libmid.so", "double cos(double); int mid(void){return (int)cos(0.0);}\n",
        "-Wl,--no-as-needed", "-lm", "-Wl,-z,nodefaultlib", shared=True)
    assert read_elf(M / "libmid.so").nodeflib  # type: ignore[union-attr]
    exe = _cc(tmp_path / "prog", "int mid(void); int main(void){return mid() != 1;}\n",
              f"-L{M}", "-lmid", _dtags("runpath"), f"-Wl,-rpath,{M}")
    tree = resolve_tree(exe)
    real = _exec_trace(exe)
    # Nothing else in this process needs libm, so it stays missing.
    assert (str(M / "libmid.so"), "libm.so.6") in tree.missing
    assert real.get("libm.so.6") is None


@needs_gcc
def test_empty_ld_library_path_entry_is_cwd(tmp_path: Path) -> None:
    d = _lib(tmp_path / "here").parent
    exe = _exe(tmp_path / "bin", d)
    info = read_elf(exe)
    llp = "/nonexistent:"  # the trailing ':' adds the current directory
    old = os.getcwd()
    try:
        os.chdir(d)
        r = resolve(info, ld_library_path=llp)[0]  # type: ignore[arg-type]
    finally:
        os.chdir(old)
    assert (r.path, r.how) == ("libf.so", How.LD_LIBRARY_PATH)  # relative, as ld.so names it
    assert _exec_trace(exe, {"LD_LIBRARY_PATH": llp}, cwd=d)["libf.so"] == "libf.so"


@needs_gcc
def test_needed_with_origin_and_slash(tmp_path: Path) -> None:
    # A library whose SONAME is "$ORIGIN/libf.so" makes DT_NEEDED a path
    # with a DST: ld.so expands it against the needing object, no search.
    d = tmp_path / "bin"
    _lib(d, "libf.so", 1, "-Wl,-soname,$ORIGIN/libf.so")
    exe = _exe(d, d)
    info = read_elf(exe)
    assert info.needed[0] == "$ORIGIN/libf.so"  # type: ignore[union-attr]
    r = resolve(info)[0]  # type: ignore[arg-type]
    assert (r.name, r.path, r.how) == ("$ORIGIN/libf.so", f"{d}/libf.so", How.PATH)
    assert str(d / "libf.so") in _exec_trace(exe).values()


def _patch_dynamic_tag(path: Path, old_tag: int, new_tag: int, new_val: int) -> None:
    """Rewrite the first dynamic entry with old_tag (64-bit LE file)."""
    data = bytearray(path.read_bytes())
    phoff, = struct.unpack_from("<Q", data, 32)
    phentsize, phnum = struct.unpack_from("<HH", data, 54)
    for i in range(phnum):
        p_type, _flags, p_offset, _va, _pa, p_filesz = struct.unpack_from(
            "<IIQQQQ", data, phoff + i * phentsize)
        if p_type == 2:
            for off in range(p_offset, p_offset + p_filesz, 16):
                tag, _val = struct.unpack_from("<qQ", data, off)
                if tag == old_tag:
                    struct.pack_into("<qQ", data, off, new_tag, new_val)
                    path.write_bytes(bytes(data))
                    return
    raise AssertionError(f"no dynamic tag {old_tag} in {path}")


@needs_gcc
def test_empty_runpath_still_disables_rpath(tmp_path: Path) -> None:
    # An object with DT_RPATH=/a and an empty DT_RUNPATH: the RUNPATH tag's
    # mere presence voids the RPATH, so libf.so is not found.  (ld never
    # writes this; patch DT_DEBUG into a DT_RUNPATH pointing at "".)
    a = _lib(tmp_path / "a").parent
    exe = _exe(tmp_path / "bin", a, _dtags("rpath"), f"-Wl,-rpath,{a}")
    _patch_dynamic_tag(exe, 21, 29, 0)  # DT_DEBUG -> DT_RUNPATH, strtab offset 0 = ""
    info = read_elf(exe)
    assert info.rpath == (str(a),) and info.runpath == ("",)  # type: ignore[union-attr]
    r = resolve(info)[0]  # type: ignore[arg-type]
    assert r.how is How.NOT_FOUND
    assert _exec_trace(exe)["libf.so"] is None


# ---------------------------------------------------------------------------
# Transitive resolution against ldd on real files


def _ldd_sample(corpus: List[ElfInfo]) -> List[ElfInfo]:
    dyn = [i for i in corpus if i.needed and i.elf_class == 64 and i.machine == 62]
    site = [i for i in dyn if "-packages" in i.path]
    other = [i for i in dyn if "-packages" not in i.path]
    pick = lambda xs, n: xs[:: max(1, len(xs) // n)][:n]  # noqa: E731
    # Everything with its own search path, plus a spread of the rest.
    return [i for i in dyn if i.rpath or i.runpath][:40] + pick(site, 30) + pick(other, 50)


@needs_ldd
@pytest.mark.skipif(not IS_LINUX_X86_64, reason="x86_64 Linux only")
def test_tree_matches_ldd_on_system_files(ldd_corpus: List[ElfInfo]) -> None:
    sample = _ldd_sample(ldd_corpus)
    assert len(sample) >= 20
    resolver = Resolver()  # shared caches across the sample
    bad = []
    compared = 0
    for info in sample:
        got = _ldd(Path(info.path))
        if not got:
            continue  # ldd refused (not a dynamic executable etc.)
        compared += 1
        tree = resolver.resolve_tree(info, explicit_loader=True)
        ldd_paths = {p for p in got.values() if p}
        ldd_missing = {n for n, p in got.items() if p is None}
        mine_missing = {n for _p, n in tree.missing}
        if tree.paths != ldd_paths or mine_missing != ldd_missing:
            bad.append((info.path, sorted(tree.paths ^ ldd_paths), mine_missing ^ ldd_missing))
    assert compared >= 20
    assert not bad, f"{len(bad)}/{compared} differ from ldd: {bad[:3]}"


@needs_gcc
def test_tree_with_module_ld_library_path_matches_ldd(tmp_path: Path) -> None:
    # Modules prepend to LD_LIBRARY_PATH; the env's RUNPATH'd binaries and
    # their RPATH-less libraries then split between the two.
    exe, mid, leaf = _chain(tmp_path, "runpath")
    shadow = _lib(tmp_path / "module" / "lib", "libleaf.so", 7).parent
    llp = f"{shadow}:/nonexistent"
    tree = resolve_tree(exe, ld_library_path=llp)
    real = _exec_trace(exe, {"LD_LIBRARY_PATH": llp})
    assert tree.paths == {p for p in real.values() if p}
    assert f"{shadow}/libleaf.so" in tree.paths


@needs_gcc
def test_extension_module_dlopened_by_python(tmp_path: Path) -> None:
    # An extension module is dlopen()ed by the interpreter: model it with
    # executable=sys.executable and compare with what actually gets mapped.
    dep = _lib(tmp_path / "ext.libs", "libdep.so", 5)
    (tmp_path / "pkg").mkdir()
    ext = _cc(tmp_path / "pkg" / "mod.so",
              "int f(void); int mod(void){return f();}\n", f"-L{dep.parent}", "-ldep",
              _dtags("runpath"), "-Wl,-rpath,$ORIGIN/../ext.libs", shared=True)
    tree = resolve_tree(ext, executable=sys.executable)
    assert tree.ok
    assert f"{ext.parent}/../ext.libs/libdep.so" in tree.paths
    code = ("import ctypes,sys; ctypes.CDLL(sys.argv[1]); "
            "print('\\n'.join(sorted({l.split()[-1] for l in open('/proc/self/maps') "
            "if '/' in l.split()[-1]})))")
    p = subprocess.run([sys.executable, "-c", code, str(ext)], capture_output=True, text=True,
                       env=CLEAN_ENV, check=True)
    mapped = set(p.stdout.split())
    mine = {os.path.realpath(x) for x in tree.paths | {tree.root}}
    assert mine <= mapped, mine - mapped
