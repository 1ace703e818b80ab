"""What the tests compare our ld.so.cache reader with, kept out of the library (nothing in it needs them).

``flags_description`` prints an entry's flags the way ``ldconfig -p`` does, so a parsed cache can be
checked line by line against ldconfig's own listing; ``libcmp`` is glibc's ``_dl_cache_libcmp``, the
order ldconfig sorts the cache in, which the loader's lookup (first plain entry wins) relies on.
"""

from __future__ import annotations

import os

from bridge.scan.ldcache import LdCacheEntry

# ldconfig's FLAG_* masks and arch names (sysdeps/generic/ldconfig.h, elf/ldconfig.c)
FLAG_TYPE_MASK = 0x00FF
FLAG_REQUIRED_MASK = 0xFF00

_FLAG_ARCH_NAMES = {
    0x0100: "SPARC 64-bit",
    0x0200: "IA-64",
    0x0300: "x86-64",
    0x0400: "64bit",  # s390x; ldconfig -p prints "64bit"
    0x0500: "64bit",  # ppc64
    0x0600: "N32",
    0x0700: "64bit",
    0x0800: "x32",
    0x0900: "hard-float",
    0x0A00: "AArch64",
    0x0B00: "soft-float",
    0x0C00: "nan2008",
    0x0D00: "N32,nan2008",
    0x0E00: "64bit,nan2008",
    0x0F00: "soft-float",
    0x1000: "double-float",
}


def flags_description(entry: LdCacheEntry) -> str:
    """The ``libc6,x86-64`` text ``ldconfig -p`` prints for an entry's flags."""
    kind = {0: "libc4", 1: "ELF", 2: "libc5", 3: "libc6"}.get(entry.flags & FLAG_TYPE_MASK, "unknown")
    arch = entry.flags & FLAG_REQUIRED_MASK
    if arch:
        kind += "," + _FLAG_ARCH_NAMES.get(arch, "unknown")
    return kind


def libcmp(a: str, b: str) -> int:
    """glibc's ``_dl_cache_libcmp``: the order the cache is sorted in.

    Digit runs compare numerically and sort *before* any non-digit, so
    ``libfoo.so.10`` comes after ``libfoo.so.9``.  Returns <0, 0 or >0.
    """
    p1, p2 = os.fsencode(a), os.fsencode(b)
    i = j = 0
    n1, n2 = len(p1), len(p2)
    while i < n1:
        c1 = p1[i]
        c2 = p2[j] if j < n2 else 0
        if 48 <= c1 <= 57:
            if 48 <= c2 <= 57:
                v1 = 0
                while i < n1 and 48 <= p1[i] <= 57:
                    v1 = v1 * 10 + p1[i] - 48
                    i += 1
                v2 = 0
                while j < n2 and 48 <= p2[j] <= 57:
                    v2 = v2 * 10 + p2[j] - 48
                    j += 1
                if v1 != v2:
                    return v1 - v2
            else:
                return 1
        elif 48 <= c2 <= 57:
            return -1
        elif c1 != c2:
            return c1 - c2
        else:
            i += 1
            j += 1
    return 0 - (p2[j] if j < n2 else 0)
